//! Uploads and the holding queue: `POST /uploads`, `GET /uploads/{id}`,
//! `GET /uploads/{id}/archive`, `GET /uploads?package=NAME`, `GET /queue`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use serde::Deserialize;

use super::auth::{Authenticated, MaybeAuthenticated};
use super::slots::UploadSlots;
use super::{ApiError, Entry, entry};
use crate::service::App;
use crate::service::authz::{Account, Action};
use crate::service::queue::{self, UploadView};
use crate::service::upload::{self, UploadReceipt};

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(
            Method::GET,
            "/api/v1/uploads",
            Action::ReadQueue,
            list_uploads,
        ),
        entry(
            Method::POST,
            "/api/v1/uploads",
            Action::Upload,
            upload_package,
        ),
        entry(
            Method::GET,
            "/api/v1/uploads/{id}",
            Action::ReadQueue,
            show_upload,
        ),
        entry(
            Method::GET,
            "/api/v1/uploads/{id}/archive",
            Action::FetchUploadArchive,
            download_upload_archive,
        ),
        entry(Method::GET, "/api/v1/queue", Action::ReadQueue, show_queue),
        entry(Method::GET, "/api/v1/me", Action::ReadAccount, whoami),
    ]
}

/// `POST /api/v1/uploads`: the archive is the raw body.
/// `?group=ID`: the upload joins that open upload group.
#[derive(Debug, Default, Deserialize)]
struct UploadTo {
    group: Option<i64>,
}

async fn upload_package(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Extension(slots): Extension<UploadSlots>,
    Query(to): Query<UploadTo>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UploadReceipt>), ApiError> {
    let _slot = slots.take(user.id)?;
    let limit = app.config.limits.upload_bytes.0;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        let refused = upload::UploadError::TooLarge { limit };
        if let Some(group) = to.group {
            let why = format!("a member was refused: {refused}");
            crate::service::groups::refuse(&app, &user, group, &why).await?;
        }
        return Err(refused.into());
    }
    if let Some(kind) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        && !matches!(
            kind,
            "application/gzip" | "application/x-gzip" | "application/octet-stream"
        )
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the archive as application/gzip, not {kind}"),
        ));
    }
    // Before a byte is written: refused when it would cross the reserve.
    upload::budget(&app, declared)?;
    let checksum = headers
        .get("x-checksum-sha256")
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let receipt =
        upload::upload_to_group(&app, &user, body.into_data_stream(), checksum, to.group).await?;
    Ok((StatusCode::CREATED, Json(receipt)))
}

async fn show_upload(
    State(app): State<App>,
    MaybeAuthenticated(user): MaybeAuthenticated,
    Path(id): Path<String>,
) -> Result<Json<UploadView>, ApiError> {
    let id = parse_id(&id)?;
    let viewer = super::auth::viewer(&app, user.as_ref());
    Ok(Json(queue::get_upload(&app.db, viewer, id).await?))
}

/// `GET /me`: whose token this is and what the policy lets it do (a
/// worker checks its token at start).
async fn whoami(Authenticated(user): Authenticated) -> Json<Account> {
    Json(Account::of(user))
}

/// `GET /uploads/{id}/archive`: the archive as uploaded, for the platform
/// workers on other machines.
async fn download_upload_archive(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let id = parse_id(&id)?;
    let archive = queue::upload_archive(&app, &user, id).await?;
    super::archive_response(
        &archive.path,
        &format!("{}-{}.tar.gz", archive.name, archive.version),
        Some(&archive.sha256),
    )
    .await
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{id:?} is not an upload id"),
        )
    })
}

#[derive(Deserialize)]
struct ListUploads {
    package: String,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    20
}

async fn list_uploads(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Query(q): Query<ListUploads>,
) -> Result<Json<Vec<UploadView>>, ApiError> {
    Ok(Json(
        queue::package_uploads(&app.db, &user, &q.package, q.limit.clamp(1, 1000)).await?,
    ))
}

#[derive(Deserialize)]
struct QueueQuery {
    platform: Option<String>,
}

async fn show_queue(
    State(app): State<App>,
    MaybeAuthenticated(user): MaybeAuthenticated,
    Query(q): Query<QueueQuery>,
) -> Result<Json<Vec<UploadView>>, ApiError> {
    let viewer = super::auth::viewer(&app, user.as_ref());
    Ok(Json(
        queue::list_queue(&app.db, viewer, q.platform.as_deref()).await?,
    ))
}
