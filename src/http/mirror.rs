//! Mirrors: `POST /mirror/notify` (a primary's push: only a wake-up, its
//! content is not trusted), `GET /mirror/status`, and the refusal of every
//! write on a follower, naming its primary.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Entry, entry};
use crate::service::App;
use crate::service::authz::Action;
use crate::service::mirror::{self, MirrorStatus};

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(Method::POST, NOTIFY_PATH, Action::Monitor, notify_mirror),
        entry(
            Method::GET,
            "/api/v1/mirror/status",
            Action::Monitor,
            show_mirror_status,
        ),
    ]
}

const NOTIFY_PATH: &str = "/api/v1/mirror/notify";

/// The push: wakes the follower, which asks its own primary at once. The
/// body (`{"serial": N}`) is read by no one: a forged push costs one ask.
async fn notify_mirror(State(app): State<App>) -> StatusCode {
    app.mirror_pushed.notify_one();
    StatusCode::ACCEPTED
}

async fn show_mirror_status(State(app): State<App>) -> Result<Json<MirrorStatus>, ApiError> {
    Ok(Json(
        mirror::status(&app).await.map_err(ApiError::internal)?,
    ))
}

/// On a follower, refuses every request that would change something.
pub(super) async fn refuse_writes(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
    let read = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    match mirror::primary_of(&app) {
        Some(primary) if !read && request.uri().path() != NOTIFY_PATH => ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only_mirror",
            mirror::read_only_message(primary),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}
