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
            "/packages/{name}/obsolete",
            Action::Obsolete,
            obsolete_package,
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

#[derive(Deserialize)]
struct ObsoleteForm {
    reason: String,
    #[serde(default)]
    replacement: String,
    /// Absent: a dry run, shown for confirmation; `yes`: do it.
    #[serde(default)]
    confirm: String,
}

/// `POST /packages/{name}/obsolete`: first a dry run (the pins it would
/// place and who would be told) with a confirm button; then the real one.
async fn obsolete_package(
    State(app): State<App>,
    visitor: Visitor,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let result: PageResult = async {
        let user = visitor.require_user()?;
        if !may_obsolete(&app, user, &name).await? {
            // The policy's refusal, with its reason.
            crate::service::authz::authorize(
                Some(user),
                Action::Obsolete,
                Some(crate::service::authz::Package {
                    name: &name,
                    owned: false,
                }),
            )?;
        }
        let form: ObsoleteForm = checked_form(&visitor, &body)?;
        let replacement = Some(form.replacement.trim()).filter(|r| !r.is_empty());
        let dry_run = form.confirm != "yes";
        let outcome = crate::service::obsolete::obsolete(
            &app,
            user,
            &name,
            &form.reason,
            replacement,
            dry_run,
        )
        .await?;
        if !dry_run {
            return Ok(see_other(&format!("/packages/{name}")));
        }
        let title = format!("Obsolete {name}?");
        Ok(Page::new("obsolete.html.j2", title, outcome).render(&app, &visitor))
    }
    .await;
    respond(&app, &visitor, result)
}

/// Whether `user` may obsolete the stable package `name` (its owners and
/// operators may): the policy's answer, `NotFound` for no such package.
pub(super) async fn may_obsolete(
    app: &App,
    user: &crate::service::users::User,
    name: &str,
) -> Result<bool, super::WebError> {
    use crate::service::authz::{AuthzError, authorize_on};
    let internal = |e: sqlx::Error| crate::http::ApiError::internal(e.into());
    let mut conn = app.db.pool().acquire().await.map_err(internal)?;
    let package = crate::db::packages::find_by_name(&mut conn, name)
        .await
        .map_err(internal)?
        .ok_or_else(|| super::WebError::not_found(format!("no stable package {name:?}")))?;
    match authorize_on(&mut conn, user, Action::Obsolete, package.id, name).await {
        Ok(()) => Ok(true),
        Err(AuthzError::Denied(_)) => Ok(false),
        Err(AuthzError::Db(e)) => Err(internal(e).into()),
    }
}
