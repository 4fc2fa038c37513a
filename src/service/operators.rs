//! The queue controls an operator needs on a busy day: cancel an upload,
//! retry a failed check by hand, pause and resume a platform.

use serde::{Deserialize, Serialize};

use super::authz::{self, Action, Denied};
use super::reject::{Rejection, reject};
use super::users::User;
use super::{App, checks};
use crate::db;
use crate::domain::UploadState;
use crate::domain::check::{CheckKind, CheckState};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no upload {0}")]
    NoSuchUpload(i64),
    #[error("upload {id} is {state}, not in the holding queue")]
    NotPending { id: i64, state: UploadState },
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
    // Read before the write transaction, as deciding does.
    let passmark = super::passmark::current(app).await?;
    let mut tx = app.db.begin_write().await?;
    let upload = db::uploads::get(&mut tx, upload_id)
        .await?
        .ok_or(OperatorError::NoSuchUpload(upload_id))?;
    db::packages::lock_by_name(&mut tx, &upload.name, app.db.for_update()).await?;
    let upload = db::uploads::get(&mut tx, upload_id)
        .await?
        .ok_or(OperatorError::NoSuchUpload(upload_id))?;
    let not_pending = OperatorError::NotPending {
        id: upload_id,
        state: upload.state,
    };
    if !upload.state.is_pending() {
        return Err(not_pending);
    }
    let rejection = Rejection::Cancelled {
        upload: &upload,
        by: user,
        why,
        passmark: &passmark,
    };
    if !reject(app, tx, rejection).await? {
        return Err(not_pending);
    }
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
    if upload.state != UploadState::Checking {
        return Err(OperatorError::NotChecking(upload_id));
    }
    let rows = db::checks::of_upload(&mut tx, upload_id).await?;
    let mut failed: Vec<(&db::checks::CheckRow, String)> = Vec::new();
    for c in rows
        .iter()
        .filter(|c| c.state == CheckState::Failed && !c.platform.is_empty())
    {
        let of = super::queue::row_label(c);
        if label.is_none_or(|l| l == of) {
            failed.push((c, of));
        }
    }
    // Platforms waiting after an infrastructure error run again at once.
    let waiting: Vec<&db::checks::CheckRow> = rows
        .iter()
        .filter(|c| c.infra().is_some())
        .filter(|c| label.is_none_or(|l| l.ends_with(&format!("@{}", c.platform))))
        .collect();
    if failed.is_empty() && waiting.is_empty() {
        return Err(OperatorError::NoFailedCheck {
            id: upload_id,
            label: label.unwrap_or("(any)").into(),
        });
    }
    let mut retried: Vec<String> = Vec::new();
    if !waiting.is_empty() {
        db::checks::retry_infra_now(&mut tx, upload_id).await?;
        for c in &waiting {
            retried.push(format!(
                "{} (infrastructure error)",
                super::queue::row_label(c)
            ));
        }
    }
    // A platform's checks run as one chain: reset the chain from its build.
    let mut platforms: Vec<&str> = failed.iter().map(|(c, _)| c.platform.as_str()).collect();
    platforms.dedup();
    let mut builds = Vec::new();
    for platform in &platforms {
        for c in rows.iter().filter(|c| {
            c.platform == *platform && matches!(c.state, CheckState::Failed | CheckState::Skipped)
        }) {
            db::checks::retry(&mut tx, c.id).await?;
        }
        if let Some(b) = rows
            .iter()
            .find(|c| c.platform == *platform && c.kind == CheckKind::Build)
        {
            builds.push((platform.to_string(), b.id, b.attempts, b.start_failures));
        }
    }
    tx.commit().await?;
    for (platform, id, attempts, failures) in &builds {
        checks::enqueue_check(app, platform, *id, *attempts, *failures).await?;
    }
    if !waiting.is_empty() {
        let mut conn = app.db.pool().acquire().await?;
        for c in &waiting {
            if let Some(b) = db::checks::get(&mut conn, c.id).await? {
                checks::enqueue_check(app, &b.platform, b.id, b.attempts, b.start_failures).await?;
            }
        }
    }
    retried.extend(failed.into_iter().map(|(_, label)| label));
    Ok(retried)
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
