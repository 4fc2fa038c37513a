//! The operators' pages and forms: `/passmark` (read by any signed-in
//! user, changed by operators with a reason), retrying a failed check, and
//! pausing or resuming a platform from `/workers`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::forms::{checked_form, see_other};
use super::{Page, PageResult, Visitor, parse_id, respond};
use crate::http::{Entry, entry};
use crate::service::authz::{Action, authorize};
use crate::service::passmark::{self, PassMarkChange};
use crate::service::{App, operators};

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(Method::GET, "/passmark", Action::ReadQueue, show_passmark),
        entry(
            Method::POST,
            "/passmark",
            Action::TunePassMark,
            change_passmark,
        ),
        entry(
            Method::POST,
            "/uploads/{id}/retry",
            Action::ControlQueue,
            retry_checks,
        ),
        entry(
            Method::POST,
            "/platforms/{name}/pause",
            Action::ControlPlatforms,
            pause_platform,
        ),
        entry(
            Method::POST,
            "/platforms/{name}/resume",
            Action::ControlPlatforms,
            resume_platform,
        ),
    ]
}

#[derive(Serialize)]
struct PassMarkPage {
    passmark: crate::domain::passmark::PassMark,
    /// Newest first.
    history: Vec<PassMarkChange>,
}

async fn show_passmark(State(app): State<App>, visitor: Visitor) -> Response {
    let result: PageResult = async {
        let user = visitor.require_user()?;
        let passmark = passmark::show(&app, user).await?;
        let mut history = passmark::history(&app, user).await?;
        history.reverse();
        let page = PassMarkPage { passmark, history };
        Ok(Page::new("passmark.html.j2", "Pass mark", page).render(&app, &visitor))
    }
    .await;
    respond(&app, &visitor, result)
}

#[derive(Deserialize)]
struct ChangeForm {
    key: String,
    value: String,
    why: String,
}

async fn change_passmark(State(app): State<App>, visitor: Visitor, body: Bytes) -> Response {
    let result: PageResult = async {
        let user = visitor.require_user()?;
        authorize(Some(user), Action::TunePassMark, None)?;
        let form: ChangeForm = checked_form(&visitor, &body)?;
        passmark::set(&app, user, form.key.trim(), form.value.trim(), &form.why).await?;
        Ok(see_other("/passmark"))
    }
    .await;
    respond(&app, &visitor, result)
}

#[derive(Deserialize)]
struct RetryForm {
    /// One check (`build@linux-x86_64`), or every failed one when empty.
    #[serde(default)]
    check: String,
}

async fn retry_checks(
    State(app): State<App>,
    visitor: Visitor,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result: PageResult = async {
        let user = visitor.require_user()?;
        authorize(Some(user), Action::ControlQueue, None)?;
        let id = parse_id(&id)?;
        let form: RetryForm = checked_form(&visitor, &body)?;
        let check = Some(form.check.trim()).filter(|c| !c.is_empty());
        operators::retry(&app, user, id, check).await?;
        Ok(see_other(&format!("/uploads/{id}")))
    }
    .await;
    respond(&app, &visitor, result)
}

async fn set_paused(
    app: &App,
    visitor: &Visitor,
    name: &str,
    body: &Bytes,
    paused: bool,
) -> PageResult {
    let user = visitor.require_user()?;
    authorize(Some(user), Action::ControlPlatforms, None)?;
    let _: super::forms::CsrfOnly = checked_form(visitor, body)?;
    operators::set_paused(app, user, name, paused).await?;
    Ok(see_other("/workers"))
}

async fn pause_platform(
    State(app): State<App>,
    visitor: Visitor,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let result = set_paused(&app, &visitor, &name, &body, true).await;
    respond(&app, &visitor, result)
}

async fn resume_platform(
    State(app): State<App>,
    visitor: Visitor,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let result = set_paused(&app, &visitor, &name, &body, false).await;
    respond(&app, &visitor, result)
}
