//! The queue controls an operator needs on a busy day: cancel an upload,
//! retry a failed check by hand, pause and resume a platform.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::authz::{self, Action, Denied};
use super::notify::{self, VerdictEmail};
use super::users::User;
use super::{App, checks};
use crate::db::{self, checks::VerdictRow};
use crate::domain::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no upload {0}")]
    NoSuchUpload(i64),
    #[error("upload {id} is {state}, not in the holding queue")]
    NotPending { id: i64, state: String },
    #[error(
        "upload {0} is not being checked: only a check of an upload in `checking` can be retried (its verdict is not given yet)"
    )]
    NotChecking(i64),
    #[error("upload {id} has no failed check {label}")]
    NoFailedCheck { id: i64, label: String },
    #[error("say why")]
    WhyRequired,
    #[error("no platform {0:?} in the server's config")]
    NoSuchPlatform(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for OperatorError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// Cancelling and retrying: what the policy says of [`Action::ControlQueue`].
fn operator(user: &User) -> Result<(), OperatorError> {
    Ok(authz::authorize(Some(user), Action::ControlQueue, None)?)
}

/// Cancels a pending upload: its checks halt, it is rejected with the
/// reason, and its maintainers are told.
pub async fn cancel(
    app: &App,
    user: &User,
    upload_id: i64,
    why: &str,
) -> Result<(), OperatorError> {
    operator(user)?;
    let why = why.trim();
    if why.is_empty() {
        return Err(OperatorError::WhyRequired);
    }
    let mut tx = app.db.begin_write().await?;
    let upload = db::uploads::get(&mut tx, upload_id)
        .await?
        .ok_or(OperatorError::NoSuchUpload(upload_id))?;
    db::packages::lock_by_name(&mut tx, &upload.name, app.db.for_update()).await?;
    let moved = db::uploads::transition(&mut tx, upload_id, "checking", "rejected").await?
        || db::uploads::transition(&mut tx, upload_id, "queued", "rejected").await?;
    if !moved {
        return Err(OperatorError::NotPending {
            id: upload_id,
            state: upload.state,
        });
    }
    sqlx::query("UPDATE uploads SET state_reason = $1 WHERE id = $2")
        .bind(format!("cancelled by an operator: {why}"))
        .bind(upload_id)
        .execute(&mut *tx)
        .await?;
    db::checks::halt_upload(&mut tx, app.db.backend(), upload_id).await?;
    // A group is decided as one: cancelling a member ends the others.
    if let Some(group) = upload.group_id {
        let others: Vec<i64> = db::groups::members(&mut tx, group)
            .await?
            .into_iter()
            .filter(|&m| m != upload_id)
            .collect();
        let why = format!("upload {upload_id} of its group was cancelled by an operator");
        db::uploads::discard(&mut tx, &others, &why).await?;
        for &m in &others {
            db::checks::halt_upload(&mut tx, app.db.backend(), m).await?;
        }
    }
    let passmark = super::passmark::current(app).await?;
    db::checks::insert_verdict(
        &mut tx,
        &VerdictRow {
            upload_id,
            accepted: 0,
            score: 0.0,
            threshold: passmark.threshold,
            passmark: serde_json::to_string(&passmark).map_err(anyhow::Error::new)?,
            summary: json!({ "cancelled": why, "by": user.email }).to_string(),
            stable_moved: 0,
            decided_at: db::now_ms(),
        },
    )
    .await?;
    let manifest: Manifest = serde_json::from_str(&upload.manifest).map_err(anyhow::Error::new)?;
    let context = VerdictEmail {
        package: upload.name.clone(),
        version: upload.version.clone(),
        score: 0.0,
        threshold: passmark.threshold,
        checks: Vec::new(),
        failing: Vec::new(),
        failed_required: Vec::new(),
        stable_moved: false,
        ahead: Vec::new(),
        group: Vec::new(),
        cancelled: Some(why.to_owned()),
        flaky: Vec::new(),
        pins: Vec::new(),
        upload_url: notify::upload_url(app, upload_id),
        server_url: app.config.public_url.clone(),
    };
    let rendered = app.templates.render("upload_rejected", &context)?;
    let ids = notify::queue_emails(
        &mut tx,
        &format!("upload-{upload_id}-verdict"),
        "upload_rejected",
        Some(upload_id),
        &notify::maintainers(&manifest),
        &rendered,
    )
    .await?;
    db::events::record(
        &mut tx,
        db::events::NewEvent {
            kind: "upload.cancelled",
            package_id: Some(upload.package_id),
            upload_id: Some(upload_id),
            actor_id: Some(user.id),
            detail: json!({ "why": why }),
        },
    )
    .await?;
    tx.commit().await?;
    app.halts.halt(upload_id);
    notify::push_new(app, &ids).await;
    tracing::info!(upload.id = upload_id, user.id = user.id, "upload cancelled");
    super::verdict::decide_waiting_on(app, upload_id).await?;
    Ok(())
}

/// Runs a failed check of an upload still being checked again (all failed
/// checks when `label` is `None`); one that passes then is marked flaky.
pub async fn retry(
    app: &App,
    user: &User,
    upload_id: i64,
    label: Option<&str>,
) -> Result<Vec<String>, OperatorError> {
    operator(user)?;
    let mut tx = app.db.begin_write().await?;
    let upload = db::uploads::get(&mut tx, upload_id)
        .await?
        .ok_or(OperatorError::NoSuchUpload(upload_id))?;
    if upload.state != "checking" {
        return Err(OperatorError::NotChecking(upload_id));
    }
    let rows = db::checks::of_upload(&mut tx, upload_id).await?;
    let mut failed: Vec<(&db::checks::CheckRow, String)> = Vec::new();
    for c in rows
        .iter()
        .filter(|c| c.state == "failed" && !c.platform.is_empty())
    {
        let of = super::queue::row_label(c)?;
        if label.is_none_or(|l| l == of) {
            failed.push((c, of));
        }
    }
    if failed.is_empty() {
        return Err(OperatorError::NoFailedCheck {
            id: upload_id,
            label: label.unwrap_or("(any)").into(),
        });
    }
    // A platform's checks run as one chain: reset the chain from its build.
    let mut platforms: Vec<&str> = failed.iter().map(|(c, _)| c.platform.as_str()).collect();
    platforms.dedup();
    let mut builds = Vec::new();
    for platform in &platforms {
        for c in rows
            .iter()
            .filter(|c| c.platform == *platform && matches!(c.state.as_str(), "failed" | "skipped"))
        {
            sqlx::query(
                "UPDATE checks SET state = 'pending', summary = 'retried by an operator', log = NULL, \
                 metadata = '{\"manual_retry\":true}' WHERE id = $1",
            )
            .bind(c.id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(b) = rows
            .iter()
            .find(|c| c.platform == *platform && c.kind == "build")
        {
            builds.push((platform.to_string(), b.id, b.attempts, b.start_failures));
        }
    }
    tx.commit().await?;
    for (platform, id, attempts, failures) in &builds {
        checks::enqueue_check(app, platform, *id, *attempts, *failures).await?;
    }
    Ok(failed.into_iter().map(|(_, label)| label).collect())
}

/// The checks an operator's retry runs again, by label.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Retried {
    pub retried: Vec<String>,
}

/// A platform as `holdq platform` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlatformView {
    pub name: String,
    pub paused: bool,
    pub local_workers: u32,
}

pub async fn platforms(app: &App, viewer: &User) -> Result<Vec<PlatformView>, OperatorError> {
    authz::authorize(Some(viewer), Action::ReadQueue, None)?;
    let mut conn = app.db.pool().acquire().await?;
    let mut out = Vec::new();
    for p in &app.config.platforms {
        let (paused, _) = db::operators::platform_state(&mut conn, p.name.as_str()).await?;
        out.push(PlatformView {
            name: p.name.to_string(),
            paused,
            local_workers: p.local_workers,
        });
    }
    Ok(out)
}

/// Pauses (checks wait, nothing is lost) or resumes (every waiting check is
/// pushed again) a platform.
pub async fn set_paused(
    app: &App,
    user: &User,
    name: &str,
    paused: bool,
) -> Result<PlatformView, OperatorError> {
    authz::authorize(Some(user), Action::ControlPlatforms, None)?;
    let platform = app
        .config
        .platform(name)
        .ok_or_else(|| OperatorError::NoSuchPlatform(name.into()))?;
    let generation = {
        let mut conn = app.db.pool().acquire().await?;
        db::operators::set_paused(&mut conn, name, paused).await?
    };
    tracing::info!(
        check.platform = name,
        paused,
        generation,
        user.id = user.id,
        "platform paused or resumed"
    );
    if !paused {
        let pending = {
            let mut conn = app.db.pool().acquire().await?;
            db::checks::unfinished_builds(&mut conn).await?
        };
        for b in pending.iter().filter(|b| b.platform == name) {
            checks::enqueue_check(app, &b.platform, b.id, b.attempts, b.start_failures).await?;
        }
    }
    Ok(PlatformView {
        name: name.into(),
        paused,
        local_workers: platform.local_workers,
    })
}

/// A check worker as `holdq workers` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerView {
    pub name: String,
    pub platform: String,
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    pub last_heartbeat: String,
    pub current_check: Option<i64>,
}

/// Workers that beat in the last minute.
pub async fn workers(app: &App, viewer: &User) -> Result<Vec<WorkerView>, OperatorError> {
    authz::authorize(Some(viewer), Action::ReadQueue, None)?;
    let mut conn = app.db.pool().acquire().await?;
    let rows = db::workers::seen_since(&mut conn, db::now_ms() - 60_000).await?;
    Ok(rows
        .into_iter()
        .map(|w| WorkerView {
            name: w.name,
            platform: w.platform,
            host: w.host,
            pid: w.pid,
            started_at: super::format_time(w.started_at),
            last_heartbeat: super::format_time(w.heartbeat_at),
            current_check: w.current_check,
        })
        .collect())
}
