//! Reading the holding queue: the pending uploads in order with their
//! positions, one upload's status, and a package's upload history.

use serde::{Deserialize, Serialize};

use super::authz::{self, Action, AuthzError, Denied};
use super::format_time;
use super::users::User;
use crate::db::{self, Db, uploads::UploadRow};
use crate::domain::check::{self, CheckKind, CheckState};
use crate::domain::metadata::VerdictSummary;
use crate::domain::{Manifest, UploadState};

/// An upload as the API and the command line show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadView {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub state: UploadState,
    /// 1-based place in the holding queue, while pending.
    pub position: Option<i64>,
    pub sha256: String,
    pub size_bytes: i64,
    pub maintainers: Vec<String>,
    pub superseded_by: Option<i64>,
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The checks, when one upload is shown.
    #[serde(default)]
    pub checks: Vec<CheckView>,
    #[serde(default)]
    pub verdict: Option<VerdictView>,
    /// The emails about this upload and whether they went out.
    #[serde(default)]
    pub emails: Vec<EmailView>,
    /// In the queue listing: what the upload is waiting for.
    #[serde(default)]
    pub waiting_for: Vec<String>,
    /// How often it was rebased (its checks ran again because stable moved).
    #[serde(default)]
    pub rebases: i64,
}

/// One email about an upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmailView {
    pub kind: String,
    /// The recipient: shown to the package's owners and operators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub state: crate::domain::delivery::DeliveryState,
    pub attempts: i64,
    /// The last delivery error (it may name the recipient): for the
    /// package's owners and operators only.
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
}

/// One check of an upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckView {
    pub kind: CheckKind,
    pub platform: String,
    pub state: CheckState,
    pub weight: f64,
    pub required: bool,
    pub attempts: i64,
    pub duration_ms: Option<i64>,
    pub summary: Option<String>,
    /// The tail of the output (capped at `limits.check_output`).
    pub log: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// What the check ran (or runs) against.
    #[serde(default)]
    pub base: Option<crate::domain::integrity::Base>,
    /// Why it waits after an infrastructure error (on its platform's build
    /// check), and when it runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra: Option<InfraView>,
}

/// A check waiting after an infrastructure error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InfraView {
    pub reason: crate::domain::check::InfraReason,
    /// "waiting: infrastructure error on worker W: no space left on device (retry in 40 s)"
    pub line: String,
    pub worker: String,
    /// The error itself (it may name the worker's paths): for the
    /// package's owners and operators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failures in a row, and since when it has waited.
    pub failures: i64,
    pub since: String,
    pub retry_at: String,
}

impl InfraView {
    fn of(wait: &db::checks::InfraWait) -> Self {
        Self {
            reason: wait.reason,
            line: super::faults::waiting_line(wait, db::now_ms()),
            worker: wait.worker.clone(),
            message: Some(wait.message.clone()),
            failures: wait.failures,
            since: format_time(wait.since),
            retry_at: format_time(wait.retry_at),
        }
    }
}

/// The verdict of an upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerdictView {
    pub accepted: bool,
    pub score: f64,
    pub threshold: f64,
    pub stable_moved: bool,
    /// Uploads ahead of it (since accepted) its failing builds ran against.
    #[serde(default)]
    pub ahead: Vec<String>,
    pub failed: Vec<String>,
    /// Checks that passed only on a retry.
    #[serde(default)]
    pub flaky: Vec<String>,
    /// Why an operator cancelled the upload, when one did.
    #[serde(default)]
    pub cancelled: Option<String>,
    pub decided_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no upload {0}")]
    NoSuchUpload(i64),
    #[error("no uploads of a package named {0:?}")]
    NoSuchPackage(String),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<AuthzError> for QueueError {
    fn from(e: AuthzError) -> Self {
        match e {
            AuthzError::Denied(d) => Self::Denied(d),
            AuthzError::Db(e) => Self::Db(e),
        }
    }
}

impl CheckView {
    /// `build@linux-x86_64`, or `resolve`.
    pub fn label(&self) -> String {
        check::label(self.kind, &self.platform)
    }
}

/// The label of a check row (`domain::check::label`).
pub(crate) fn row_label(c: &db::checks::CheckRow) -> String {
    check::label(c.kind, &c.platform)
}

impl UploadView {
    fn from_row(row: UploadRow, position: Option<i64>) -> Self {
        let maintainers = serde_json::from_str::<Manifest>(&row.manifest)
            .map(|m| m.maintainers.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        Self {
            id: row.id,
            name: row.name,
            version: row.version,
            state: row.state,
            position,
            sha256: row.sha256,
            size_bytes: row.size_bytes,
            maintainers,
            superseded_by: row.superseded_by,
            reason: row.state_reason,
            created_at: format_time(row.created_at),
            updated_at: format_time(row.updated_at),
            checks: Vec::new(),
            verdict: None,
            emails: Vec::new(),
            waiting_for: Vec::new(),
            rebases: row.rebases,
        }
    }

    /// Takes out what only the package's owners and operators see: check
    /// logs and email recipients (the maintainers, and delivery errors
    /// that may name them).
    fn without_details(mut self) -> Self {
        self.maintainers.clear();
        for c in &mut self.checks {
            c.log = None;
            if let Some(infra) = &mut c.infra {
                infra.message = None;
            }
        }
        for e in &mut self.emails {
            e.to = None;
            e.last_error = None;
        }
        self
    }
}

/// The views of uploads `(package id, view)` as `viewer` may see them:
/// whole for the package's owners and operators, without logs and
/// recipients for anyone else.
async fn as_seen_by(
    db: &Db,
    viewer: &User,
    views: Vec<(i64, UploadView)>,
) -> Result<Vec<UploadView>, QueueError> {
    let mut conn = db.pool().acquire().await?;
    let mut allowed = std::collections::HashMap::new();
    let mut seen = Vec::with_capacity(views.len());
    for (package_id, view) in views {
        let whole = match allowed.get(&package_id) {
            Some(whole) => *whole,
            None => {
                let decision = authz::authorize_on(
                    &mut conn,
                    viewer,
                    Action::ReadUploadDetails,
                    package_id,
                    &view.name,
                )
                .await;
                let whole = match decision {
                    Ok(()) => true,
                    Err(AuthzError::Denied(_)) => false,
                    Err(AuthzError::Db(e)) => return Err(e.into()),
                };
                *allowed.entry(package_id).or_insert(whole)
            }
        };
        seen.push(if whole { view } else { view.without_details() });
    }
    Ok(seen)
}

/// The holding queue, front first, each with its position and what it is
/// waiting for; with `platform`, only the uploads that wait on it.
pub async fn list_queue(
    db: &Db,
    viewer: &User,
    platform: Option<&str>,
) -> Result<Vec<UploadView>, QueueError> {
    authz::authorize(Some(viewer), Action::ReadQueue, None)?;
    let mut tx = db.begin_read().await?;
    let rows = db::uploads::pending(&mut tx).await?;
    let paused = db::operators::paused_platforms(&mut tx).await?;
    let mut by_upload: std::collections::HashMap<i64, Vec<db::checks::CheckRow>> =
        std::collections::HashMap::new();
    for check in db::checks::of_pending_uploads(&mut tx).await? {
        by_upload.entry(check.upload_id).or_default().push(check);
    }
    tx.commit().await?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let checks = by_upload.remove(&row.id).unwrap_or_default();
        let open: Vec<&db::checks::CheckRow> =
            checks.iter().filter(|c| !c.state.is_final()).collect();
        if let Some(p) = platform
            && !checks.is_empty()
            && !open.iter().any(|c| c.platform == p)
        {
            continue;
        }
        // The reason says when it waits for uploads ahead of it.
        let waits = row
            .state_reason
            .clone()
            .filter(|r| r.starts_with("waiting for"))
            .map(|r| r.trim_start_matches("waiting for ").to_owned());
        let waiting_for = if checks.is_empty() {
            vec![waits.unwrap_or_else(|| "its checks to start".to_owned())]
        } else if open.is_empty() {
            // Its bases may wait for uploads ahead of it (the reason says).
            vec![waits.unwrap_or_else(|| "its verdict".to_owned())]
        } else {
            // A platform's infrastructure error is on its build check.
            let infra: std::collections::HashMap<&str, db::checks::InfraWait> = checks
                .iter()
                .filter_map(|c| c.infra().map(|w| (c.platform.as_str(), w)))
                .collect();
            open.iter()
                .map(|c| {
                    let label = row_label(c);
                    let waits = c
                        .summary
                        .as_deref()
                        .filter(|s| s.starts_with("waiting for"));
                    Ok(if c.state == CheckState::Running {
                        format!("{label} (running)")
                    } else if let Some(wait) = infra.get(c.platform.as_str()) {
                        let line = super::faults::waiting_line(wait, db::now_ms());
                        format!("{label} ({line})")
                    } else if let Some(why) = waits {
                        format!("{label} ({why})")
                    } else if paused.contains(&c.platform) {
                        format!("{label} (platform paused)")
                    } else {
                        format!("{label} (waiting for a worker)")
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?
        };
        let package_id = row.package_id;
        let mut view = UploadView::from_row(row, Some(i as i64 + 1));
        view.waiting_for = waiting_for;
        out.push((package_id, view));
    }
    as_seen_by(db, viewer, out).await
}

/// Where an upload's kept archive is, and what it must hash to.
#[derive(Clone, Debug)]
pub struct UploadArchive {
    pub path: std::path::PathBuf,
    pub sha256: String,
    pub name: String,
    pub version: String,
}

/// The kept archive of upload `id`: for the platform workers that check it
/// on other machines, the operators, and the package's owners.
pub async fn upload_archive(
    app: &super::App,
    user: &super::users::User,
    id: i64,
) -> Result<UploadArchive, QueueError> {
    let mut conn = app.db.pool().acquire().await?;
    let row = db::uploads::get(&mut conn, id)
        .await?
        .ok_or(QueueError::NoSuchUpload(id))?;
    authz::authorize_on(
        &mut conn,
        user,
        Action::FetchUploadArchive,
        row.package_id,
        &row.name,
    )
    .await?;
    Ok(UploadArchive {
        path: app.storage.blob_path(&row.sha256),
        sha256: row.sha256,
        name: row.name,
        version: row.version,
    })
}

/// One upload, with its position while it is pending.
pub async fn get_upload(db: &Db, viewer: &User, id: i64) -> Result<UploadView, QueueError> {
    authz::authorize(Some(viewer), Action::ReadQueue, None)?;
    let mut tx = db.begin_read().await?;
    let row = db::uploads::get(&mut tx, id)
        .await?
        .ok_or(QueueError::NoSuchUpload(id))?;
    let position = match row.state {
        s if s.is_pending() => Some(db::uploads::position(&mut tx, id).await?),
        _ => None,
    };
    let checks = db::checks::of_upload(&mut tx, id).await?;
    let verdict = db::checks::verdict(&mut tx, id).await?;
    let emails = db::outbox::of_upload(&mut tx, id).await?;
    tx.commit().await?;
    let package_id = row.package_id;
    let mut view = UploadView::from_row(row, position);
    let infra: std::collections::HashMap<String, InfraView> = checks
        .iter()
        .filter_map(|c| c.infra().map(|w| (c.platform.clone(), InfraView::of(&w))))
        .collect();
    view.checks = checks
        .into_iter()
        .map(|c| {
            Ok(CheckView {
                infra: (c.state == CheckState::Pending)
                    .then(|| infra.get(&c.platform).cloned())
                    .flatten(),
                kind: c.kind,
                platform: c.platform,
                state: c.state,
                weight: c.weight,
                required: c.required != 0,
                attempts: c.attempts,
                duration_ms: c.duration_ms,
                summary: c.summary,
                log: c.log.filter(|l| !l.is_empty()),
                metadata: c.metadata.and_then(|m| serde_json::from_str(&m).ok()),
                base: c.base.and_then(|b| serde_json::from_str(&b).ok()),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    view.verdict = verdict.map(|v| {
        let summary = VerdictSummary::parse(&v.summary);
        VerdictView {
            accepted: v.accepted != 0,
            score: v.score,
            threshold: v.threshold,
            stable_moved: v.stable_moved != 0,
            ahead: summary.ahead,
            failed: summary.failed,
            flaky: summary.flaky,
            cancelled: summary.cancelled,
            decided_at: format_time(v.decided_at),
        }
    });
    view.emails = emails
        .into_iter()
        .map(|e| EmailView {
            kind: e.kind,
            to: Some(e.to_addr),
            state: e.state,
            attempts: e.attempts,
            last_error: e.last_error,
            sent_at: e.sent_at.map(format_time),
        })
        .collect();
    let mut seen = as_seen_by(db, viewer, vec![(package_id, view)]).await?;
    Ok(seen.remove(0))
}

/// The latest uploads of a package, newest first.
pub async fn package_uploads(
    db: &Db,
    viewer: &User,
    name: &str,
    limit: i64,
) -> Result<Vec<UploadView>, QueueError> {
    authz::authorize(Some(viewer), Action::ReadQueue, None)?;
    let mut tx = db.begin_read().await?;
    let rows = db::uploads::of_package(&mut tx, name, limit).await?;
    if rows.is_empty() {
        return Err(QueueError::NoSuchPackage(name.into()));
    }
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let position = match row.state {
            s if s.is_pending() => Some(db::uploads::position(&mut tx, row.id).await?),
            _ => None,
        };
        let package_id = row.package_id;
        views.push((package_id, UploadView::from_row(row, position)));
    }
    tx.commit().await?;
    as_seen_by(db, viewer, views).await
}
