//! The page of one upload: *why is it held*. Built from the upload's view
//! as the API shows it (`service::queue::get_upload`, so the same policy
//! hides logs and recipients), with the sentence of [`super::status`], the
//! check matrix, the score against the pass mark, the failing log tails
//! and a timeline.

use std::collections::BTreeSet;

use serde::Serialize;

use super::status::{self, Capacity, Workers};
use crate::db;
use crate::domain::check::{CheckKind, CheckState};
use crate::domain::metadata::BuildMetadata;
use crate::service::authz::{self, Action, AuthzError, Viewer};
use crate::service::notify::log_tail;
use crate::service::queue::{self, CheckView, QueueError, UploadView};
use crate::service::testing::{self, TestingBanner};
use crate::service::users::User;
use crate::service::{App, format_time, passmark};

/// Everything `/uploads/{id}` shows.
#[derive(Clone, Debug, Serialize)]
pub struct UploadPage {
    pub upload: UploadView,
    /// Where it is and what happens next, in one sentence.
    pub status: String,
    /// Still in the holding queue: the page refreshes itself.
    pub pending: bool,
    /// The viewer sees logs and recipients (owners and operators).
    pub details: bool,
    pub platforms: Vec<String>,
    pub rows: Vec<MatrixRow>,
    pub score: Score,
    pub failing: Vec<LogTail>,
    /// The failed checks an operator may retry (per platform).
    pub failing_labels: Vec<String>,
    pub timeline: Vec<Moment>,
    /// In the testing channel: downloadable, marked unchecked.
    pub testing: Option<TestingBanner>,
}

/// One kind of check across the platforms.
#[derive(Clone, Debug, Serialize)]
pub struct MatrixRow {
    pub kind: CheckKind,
    /// One per column of [`UploadPage::platforms`]; `None`: not run there.
    pub cells: Vec<Option<Cell>>,
    /// `validate` and `resolve` run once, not per platform.
    pub once: Option<Cell>,
}

/// One check in the matrix.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub label: String,
    /// waiting, running, passed, failed, skipped, halted, flaky.
    pub state: String,
    /// "running since 12:00:03", "passed in 1.2 s after 2 attempts".
    pub detail: String,
    pub weight: f64,
    /// Its share of the whole score, in percent.
    pub share_percent: f64,
    pub required: bool,
    /// What it ran against: "stable #12", "stable #12 + upload 41".
    pub base: Option<String>,
    pub summary: Option<String>,
    pub has_log: bool,
}

/// The score so far against the pass mark.
#[derive(Clone, Debug, Serialize)]
pub struct Score {
    pub score: f64,
    pub threshold: f64,
    pub passed_weight: f64,
    pub total_weight: f64,
    /// The best score it can still reach (every open check passing).
    pub reachable: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogTail {
    pub label: String,
    pub tail: String,
}

/// One thing that happened to the upload.
#[derive(Clone, Debug, Serialize)]
pub struct Moment {
    pub at: String,
    pub what: String,
}

/// The page of upload `id` as `viewer` may see it.
pub async fn upload_page(app: &App, viewer: Viewer<'_>, id: i64) -> Result<UploadPage, QueueError> {
    let upload = queue::get_upload(&app.db, viewer, id).await?;
    let details = may_read_details(app, viewer, id).await?;
    let capacity = capacity(app).await?;
    let threshold = match &upload.verdict {
        Some(v) => v.threshold,
        None => {
            passmark::current(app)
                .await
                .map_err(|e| QueueError::Db(sqlx::Error::Protocol(format!("{e:#}"))))?
                .threshold
        }
    };
    let timeline = timeline(app, &upload).await?;
    let testing = testing::banner(app, id).await?;
    let (platforms, rows) = matrix(&upload);
    Ok(UploadPage {
        status: status::status_line(&upload, &capacity),
        pending: upload.state.is_pending(),
        details,
        score: score(&upload.checks, threshold),
        failing: failing_tails(&upload.checks),
        failing_labels: upload
            .checks
            .iter()
            .filter(|c| c.state == CheckState::Failed && !c.platform.is_empty())
            .map(CheckView::label)
            .collect(),
        platforms,
        rows,
        timeline,
        testing,
        upload,
    })
}

/// Whether the viewer may read upload `id`'s logs: the policy's answer.
pub async fn may_read_details(app: &App, viewer: Viewer<'_>, id: i64) -> Result<bool, QueueError> {
    let Some(user) = viewer.user else {
        return Ok(false);
    };
    let mut conn = app.db.pool().acquire().await?;
    let row = db::uploads::get(&mut conn, id)
        .await?
        .ok_or(QueueError::NoSuchUpload(id))?;
    match authz::authorize_on(
        &mut conn,
        user,
        Action::ReadUploadDetails,
        row.package_id,
        &row.name,
    )
    .await
    {
        Ok(()) => Ok(true),
        Err(AuthzError::Denied(_)) => Ok(false),
        Err(AuthzError::Db(e)) => Err(e.into()),
    }
}

/// The workers of each platform and the paused platforms, for the sentence.
pub async fn capacity(app: &App) -> Result<Capacity, sqlx::Error> {
    let mut conn = app.db.pool().acquire().await?;
    let paused: BTreeSet<String> = db::operators::paused_platforms(&mut conn)
        .await?
        .into_iter()
        .collect();
    let mut capacity = Capacity {
        paused,
        ..Capacity::default()
    };
    for w in db::workers::seen_since(&mut conn, db::now_ms() - 60_000).await? {
        let entry: &mut Workers = capacity.workers.entry(w.platform).or_default();
        entry.connected += 1;
        entry.busy += usize::from(w.current_check.is_some());
    }
    Ok(capacity)
}

fn seconds(ms: i64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs((ms / 1000) as u64)).to_string()
    }
}

/// The clock time of an RFC 3339 timestamp (`12:00:03`).
fn clock(at: &str) -> &str {
    at.get(11..19).unwrap_or(at)
}

fn cell(c: &CheckView, total_weight: f64, me: i64) -> Cell {
    let flaky = c.kind == CheckKind::Build
        && c.metadata
            .as_ref()
            .and_then(|m| serde_json::from_value::<BuildMetadata>(m.clone()).ok())
            .is_some_and(|m| m.flaky);
    // How the matrix names a state: "waiting" rather than pending.
    let state = match c.state {
        CheckState::Pending => "waiting",
        CheckState::Passed if flaky => "flaky",
        other => other.as_str(),
    };
    let attempts = if c.attempts > 1 {
        format!(" after {} attempts", c.attempts)
    } else {
        String::new()
    };
    let detail = match (state, c.duration_ms) {
        ("running", _) => match &c.started_at {
            Some(at) => format!("running since {}", clock(at)),
            None => "running".into(),
        },
        ("waiting", _) => c.summary.clone().unwrap_or_else(|| "not started".into()),
        (s, Some(ms)) => format!("{s} in {}{attempts}", seconds(ms)),
        (s, None) => format!("{s}{attempts}"),
    };
    let base = c.base.as_ref().map(|b| {
        let ahead: Vec<String> = b
            .assumptions(me)
            .into_iter()
            .map(|u| format!("upload {u}"))
            .collect();
        if ahead.is_empty() {
            format!("stable #{}", b.serial)
        } else {
            format!("stable #{} + {}", b.serial, ahead.join(", "))
        }
    });
    Cell {
        label: c.label(),
        state: state.into(),
        detail,
        weight: c.weight,
        share_percent: if total_weight > 0.0 {
            100.0 * c.weight / total_weight
        } else {
            0.0
        },
        required: c.required,
        base,
        summary: c.summary.clone(),
        has_log: c.log.is_some(),
    }
}

/// The checks by kind (rows) and platform (columns).
fn matrix(upload: &UploadView) -> (Vec<String>, Vec<MatrixRow>) {
    let total: f64 = upload.checks.iter().map(|c| c.weight).sum();
    let platforms: Vec<String> = upload
        .checks
        .iter()
        .filter(|c| !c.platform.is_empty())
        .map(|c| c.platform.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let kinds: BTreeSet<CheckKind> = upload.checks.iter().map(|c| c.kind).collect();
    let rows = kinds
        .into_iter()
        .map(|kind| {
            let of_kind = |platform: &str| {
                upload
                    .checks
                    .iter()
                    .find(|c| c.kind == kind && c.platform == platform)
                    .map(|c| cell(c, total, upload.id))
            };
            MatrixRow {
                kind,
                cells: platforms.iter().map(|p| of_kind(p)).collect(),
                once: of_kind(""),
            }
        })
        .collect();
    (platforms, rows)
}

fn score(checks: &[CheckView], threshold: f64) -> Score {
    let total_weight: f64 = checks.iter().map(|c| c.weight).sum();
    let passed_weight: f64 = checks
        .iter()
        .filter(|c| c.state == CheckState::Passed)
        .map(|c| c.weight)
        .sum();
    let open_weight: f64 = checks
        .iter()
        .filter(|c| matches!(c.state.as_str(), "pending" | "running"))
        .map(|c| c.weight)
        .sum();
    let ratio = |w: f64| {
        if total_weight > 0.0 {
            w / total_weight
        } else {
            0.0
        }
    };
    Score {
        score: ratio(passed_weight),
        threshold,
        passed_weight,
        total_weight,
        reachable: ratio(passed_weight + open_weight),
    }
}

/// The tails of the failed checks' logs (empty when the viewer may not
/// read logs: the view has none then).
fn failing_tails(checks: &[CheckView]) -> Vec<LogTail> {
    checks
        .iter()
        .filter(|c| c.state == CheckState::Failed)
        .filter_map(|c| {
            c.log.as_deref().map(|log| LogTail {
                label: c.label(),
                tail: log_tail(log),
            })
        })
        .collect()
}

/// What happened to the upload, oldest first: its events, when its checks
/// started, its verdict and promotion.
async fn timeline(app: &App, upload: &UploadView) -> Result<Vec<Moment>, sqlx::Error> {
    let events = {
        let mut conn = app.db.pool().acquire().await?;
        db::events::of_upload(&mut conn, upload.id).await?
    };
    let mut moments: Vec<(String, String)> = Vec::new();
    for (kind, at, detail) in events {
        let detail: serde_json::Value = serde_json::from_str(&detail).unwrap_or_default();
        let what = match kind.as_str() {
            "upload.queued" => "queued".to_owned(),
            "upload.rebased" => match detail["why"].as_str().or(detail["reason"].as_str()) {
                Some(why) => format!("rebased: {why}"),
                None => "rebased: stable moved, its stale checks run again".to_owned(),
            },
            "upload.superseded" => "superseded by a newer upload".to_owned(),
            "upload.accepted" => match detail["serial"].as_i64() {
                Some(serial) => format!("promoted into stable (serial {serial})"),
                None => "promoted into stable".to_owned(),
            },
            // The verdict's line below says it, with the score.
            "upload.rejected" => continue,
            "upload.cancelled" => match detail["why"].as_str() {
                Some(why) => format!("cancelled by an operator: {why}"),
                None => "cancelled by an operator".to_owned(),
            },
            other => other.trim_start_matches("upload.").replace('_', " "),
        };
        moments.push((format_time(at), what));
    }
    if !moments.iter().any(|(_, w)| w == "queued") {
        moments.push((upload.created_at.clone(), "queued".into()));
    }
    if let Some(first) = upload
        .checks
        .iter()
        .filter_map(|c| c.started_at.clone())
        .min()
    {
        moments.push((first, "checks started".into()));
    }
    if let Some(v) = &upload.verdict {
        let verdict = if v.accepted { "accepted" } else { "rejected" };
        moments.push((
            v.decided_at.clone(),
            format!(
                "verdict: {verdict} (score {:.2}, pass mark {:.2})",
                v.score, v.threshold
            ),
        ));
    }
    // RFC 3339 times in UTC sort as text; the sort is stable for ties.
    moments.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(moments
        .into_iter()
        .map(|(at, what)| Moment { at, what })
        .collect())
}

/// The whole kept log of the check `label` (`build@linux-x86_64`) of
/// upload `id`: for the package's owners and operators.
pub async fn check_log(
    app: &App,
    user: &User,
    id: i64,
    label: &str,
) -> Result<Option<String>, QueueError> {
    let mut conn = app.db.pool().acquire().await?;
    let row = db::uploads::get(&mut conn, id)
        .await?
        .ok_or(QueueError::NoSuchUpload(id))?;
    authz::authorize_on(
        &mut conn,
        user,
        Action::ReadUploadDetails,
        row.package_id,
        &row.name,
    )
    .await?;
    for check in db::checks::of_upload(&mut conn, id).await? {
        if queue::row_label(&check) == label {
            return Ok(Some(check.log.unwrap_or_default()));
        }
    }
    Ok(None)
}
