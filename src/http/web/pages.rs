//! The holding queue's pages: `/` and `/queue`, `/uploads/{id}` (why it
//! is held), a check's whole log as text, and `/workers`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Page, PageResult, Visitor, WebError, parse_id, respond};
use crate::http::{Entry, entry};
use crate::service::App;
use crate::service::authz::Action;
use crate::service::operators::{self, PlatformView, WorkerView};
use crate::service::web::{queue_page, upload_page};

pub(super) fn routes() -> Vec<Entry> {
    vec![
        // Public: the queue when the visitor may read it, else a welcome.
        entry(Method::GET, "/", Action::ReadStable, home),
        entry(Method::GET, "/queue", Action::ReadQueue, show_queue),
        entry(Method::GET, "/uploads/{id}", Action::ReadQueue, show_upload),
        entry(
            Method::GET,
            "/uploads/{id}/checks/{check}/log",
            Action::ReadUploadDetails,
            show_check_log,
        ),
        entry(Method::GET, "/workers", Action::ReadQueue, show_workers),
        entry(
            Method::GET,
            "/static/holdq.css",
            Action::ReadStable,
            super::stylesheet,
        ),
    ]
}

#[derive(Debug, Default, Deserialize)]
struct QueueFilter {
    /// `?mine=1`: only the visitor's uploads.
    #[serde(default)]
    mine: Option<String>,
}

async fn queue(app: &App, visitor: &Visitor, filter: &QueueFilter) -> PageResult {
    let mine = filter
        .mine
        .as_deref()
        .is_some_and(|m| !m.is_empty() && m != "0");
    let page = queue_page::queue_page(app, visitor.viewer(app), mine).await?;
    Ok(Page::new("queue.html.j2", "Holding queue", page).render(app, visitor))
}

async fn home(
    State(app): State<App>,
    visitor: Visitor,
    filter: Result<Query<QueueFilter>, QueryRejection>,
) -> Response {
    if visitor
        .viewer(&app)
        .authorize(Action::ReadQueue, None)
        .is_ok()
    {
        return respond(
            &app,
            &visitor,
            queue(&app, &visitor, &filter.map(|q| q.0).unwrap_or_default()).await,
        );
    }
    #[derive(Serialize)]
    struct Welcome {
        welcome: bool,
    }
    Page::new("signin.html.j2", "holdq", Welcome { welcome: true }).render(&app, &visitor)
}

async fn show_queue(
    State(app): State<App>,
    visitor: Visitor,
    filter: Result<Query<QueueFilter>, QueryRejection>,
) -> Response {
    respond(
        &app,
        &visitor,
        queue(&app, &visitor, &filter.map(|q| q.0).unwrap_or_default()).await,
    )
}

async fn show_upload(State(app): State<App>, visitor: Visitor, Path(id): Path<String>) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        let page = upload_page::upload_page(&app, visitor.viewer(&app), id).await?;
        let title = format!("{} {} (upload {id})", page.upload.name, page.upload.version);
        Ok(Page::new("upload.html.j2", title, page).render(&app, &visitor))
    }
    .await;
    respond(&app, &visitor, result)
}

/// `GET /uploads/{id}/checks/{check}/log`: the check's kept log, as text.
async fn show_check_log(
    State(app): State<App>,
    visitor: Visitor,
    Path((id, check)): Path<(String, String)>,
) -> Response {
    let result = async {
        let user = visitor.require_user()?;
        let id = parse_id(&id)?;
        let log = upload_page::check_log(&app, user, id, &check)
            .await?
            .ok_or_else(|| WebError::not_found(format!("upload {id} has no check {check:?}")))?;
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            log,
        )
            .into_response())
    }
    .await;
    respond(&app, &visitor, result)
}

#[derive(Serialize)]
struct WorkersPage {
    platforms: Vec<PlatformRow>,
}

#[derive(Serialize)]
struct PlatformRow {
    platform: PlatformView,
    workers: Vec<WorkerView>,
}

async fn show_workers(State(app): State<App>, visitor: Visitor) -> Response {
    let result = async {
        let user = visitor.require_user()?;
        let mut workers = operators::workers(&app, user).await?;
        let platforms = operators::platforms(&app, user)
            .await?
            .into_iter()
            .map(|platform| {
                let (mine, rest) = workers.drain(..).partition(|w| w.platform == platform.name);
                workers = rest;
                PlatformRow {
                    platform,
                    workers: mine,
                }
            })
            .collect();
        Ok(
            Page::new("workers.html.j2", "Workers", WorkersPage { platforms })
                .render(&app, &visitor),
        )
    }
    .await;
    respond(&app, &visitor, result)
}
