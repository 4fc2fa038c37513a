//! Check rows: one per (upload, kind, platform), and the verdict of an
//! upload. Our tables, not the job queue, are the truth about checks.

use sqlx::FromRow;

use super::{Backend, Conn, HALT_CHANNEL, from_states, now_ms};
use crate::domain::check::{CheckKind, CheckState, InfraReason};
use crate::domain::word::StateMachine;

#[derive(Clone, Debug, FromRow)]
pub struct CheckRow {
    pub id: i64,
    pub upload_id: i64,
    pub kind: CheckKind,
    pub platform: String,
    pub state: CheckState,
    pub weight: f64,
    pub required: i64,
    pub attempts: i64,
    pub worker: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub summary: Option<String>,
    pub log: Option<String>,
    pub metadata: Option<String>,
    pub start_failures: i64,
    /// What the check's current run ran against (JSON of `domain::integrity::Base`).
    pub base: Option<String>,
    /// After an infrastructure error: when it may run again, why it could
    /// not (an `InfraReason` word), the message, where, since when, and how
    /// many times in a row.
    pub retry_at: Option<i64>,
    pub infra_reason: Option<String>,
    pub infra_message: Option<String>,
    pub infra_worker: Option<String>,
    pub infra_since: Option<i64>,
    pub infra_failures: i64,
}

/// A check waiting after an infrastructure error.
#[derive(Clone, Debug, PartialEq)]
pub struct InfraWait {
    pub reason: InfraReason,
    pub message: String,
    pub worker: String,
    pub since: i64,
    pub retry_at: i64,
    pub failures: i64,
}

impl CheckRow {
    /// Whether (and how) the check waits after an infrastructure error; a
    /// reason this build does not know reads as `internal`.
    pub fn infra(&self) -> Option<InfraWait> {
        let reason = self.infra_reason.as_deref()?;
        Some(InfraWait {
            reason: InfraReason::parse(reason).unwrap_or(InfraReason::Internal),
            message: self.infra_message.clone().unwrap_or_default(),
            worker: self.infra_worker.clone().unwrap_or_default(),
            since: self.infra_since.unwrap_or_default(),
            retry_at: self.retry_at.unwrap_or_default(),
            failures: self.infra_failures,
        })
    }
}

const COLUMNS: &str = "id, upload_id, kind, platform, state, weight, required, attempts, worker, \
     started_at, finished_at, duration_ms, summary, log, metadata, start_failures, base, \
     retry_at, infra_reason, infra_message, infra_worker, infra_since, infra_failures";

pub struct NewCheck<'a> {
    pub upload_id: i64,
    pub kind: CheckKind,
    pub platform: &'a str,
    pub weight: f64,
    pub required: bool,
}

pub async fn insert(conn: &mut Conn, new: NewCheck<'_>) -> sqlx::Result<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO checks (upload_id, kind, platform, state, weight, required) \
         VALUES ($1, $2, $3, 'pending', $4, $5) RETURNING id",
    )
    .bind(new.upload_id)
    .bind(new.kind.as_str())
    .bind(new.platform)
    .bind(new.weight)
    .bind(i64::from(new.required))
    .fetch_one(conn)
    .await?;
    Ok(id)
}

pub async fn get(conn: &mut Conn, id: i64) -> sqlx::Result<Option<CheckRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checks WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn of_upload(conn: &mut Conn, upload_id: i64) -> sqlx::Result<Vec<CheckRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checks WHERE upload_id = $1 ORDER BY id"
    )))
    .bind(upload_id)
    .fetch_all(conn)
    .await
}

/// The checks of every pending upload, without their logs and metadata:
/// what the queue listing needs, in one query.
pub async fn of_pending_uploads(conn: &mut Conn) -> sqlx::Result<Vec<CheckRow>> {
    sqlx::query_as(
        "SELECT c.id, c.upload_id, c.kind, c.platform, c.state, c.weight, c.required, c.attempts, \
         c.worker, c.started_at, c.finished_at, c.duration_ms, c.summary, NULL AS log, NULL AS metadata, \
         c.start_failures, c.base, c.retry_at, c.infra_reason, c.infra_message, c.infra_worker, \
         c.infra_since, c.infra_failures \
         FROM checks c JOIN uploads u ON u.id = c.upload_id \
         WHERE u.state IN ('queued', 'checking') ORDER BY c.id",
    )
    .fetch_all(conn)
    .await
}

/// Marks a pending (or, after a lost worker, running) check as running
/// under `worker`; false when it is already final.
pub async fn mark_running(conn: &mut Conn, id: i64, worker: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE checks SET state = 'running', worker = $1, attempts = attempts + 1, started_at = $2 \
         WHERE id = $3 AND {}",
        from_states(CheckState::Running)
    )))
    .bind(worker)
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a finished check records.
pub struct Finished<'a> {
    /// A final state.
    pub state: CheckState,
    pub duration_ms: i64,
    pub summary: &'a str,
    pub log: &'a str,
    pub metadata: &'a serde_json::Value,
}

/// Records a final state; false when the check was already final (a
/// duplicate delivery of its job), which leaves the first result standing.
pub async fn finish(conn: &mut Conn, id: i64, f: Finished<'_>) -> sqlx::Result<bool> {
    debug_assert!(f.state.is_final(), "finish records a final state");
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE checks SET state = $1, finished_at = $2, duration_ms = $3, summary = $4, log = $5, \
         metadata = $6 WHERE id = $7 AND {}",
        from_states(f.state)
    )))
    .bind(f.state.as_str())
    .bind(now_ms())
    .bind(f.duration_ms)
    .bind(f.summary)
    .bind(f.log)
    .bind(f.metadata.to_string())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Halts every unfinished check of an upload.
pub async fn halt_upload(conn: &mut Conn, backend: Backend, upload_id: i64) -> sqlx::Result<u64> {
    let halted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE checks SET state = 'halted', finished_at = $1, summary = 'halted: the upload was superseded' \
         WHERE upload_id = $2 AND {}",
        from_states(CheckState::Halted)
    )))
    .bind(now_ms())
    .bind(upload_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if halted > 0 && backend == Backend::Postgres {
        // Delivered at commit to every process listening (their workers
        // kill the runs at once); never if the transaction rolls back.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(HALT_CHANNEL)
            .bind(upload_id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(halted)
}

/// Records what the check's current run runs against.
pub async fn set_base(conn: &mut Conn, id: i64, base: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE checks SET base = $1 WHERE id = $2")
        .bind(base)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Keeps the current run of check `id` in `check_runs` (why it ended:
/// `ended_by`) and makes the check pending again with `summary`: a rebase.
/// False when the check may not run again (it is pending or halted).
pub async fn rerun(conn: &mut Conn, id: i64, ended_by: &str, summary: &str) -> sqlx::Result<bool> {
    let from = from_states(CheckState::Pending);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO check_runs (check_id, upload_id, state, attempts, worker, started_at, finished_at, \
         duration_ms, summary, log, metadata, base, ended_by) \
         SELECT id, upload_id, state, attempts, worker, started_at, finished_at, duration_ms, summary, \
         log, metadata, base, $1 FROM checks WHERE id = $2 AND {from}"
    )))
    .bind(ended_by)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE checks SET state = 'pending', worker = NULL, started_at = NULL, finished_at = NULL, \
         duration_ms = NULL, summary = $1, log = NULL, metadata = NULL, base = NULL \
         WHERE id = $2 AND {from}"
    )))
    .bind(summary)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes a failed or skipped check pending again for an operator's retry
/// (its metadata says so: one that passes then is flaky); false when it
/// may not run again.
pub async fn retry(conn: &mut Conn, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE checks SET state = 'pending', summary = 'retried by an operator', log = NULL, \
         metadata = '{{\"manual_retry\":true}}' WHERE id = $1 AND {}",
        from_states(CheckState::Pending)
    )))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An earlier run of a check, kept when the check ran again.
#[derive(Clone, Debug, FromRow)]
pub struct RunRow {
    pub id: i64,
    pub check_id: i64,
    pub state: CheckState,
    pub attempts: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub summary: Option<String>,
    pub base: Option<String>,
    pub ended_by: String,
}

/// The earlier runs of an upload's checks, oldest first (without logs).
pub async fn runs_of_upload(conn: &mut Conn, upload_id: i64) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(
        "SELECT id, check_id, state, attempts, started_at, finished_at, duration_ms, summary, base, \
         ended_by FROM check_runs WHERE upload_id = $1 ORDER BY id",
    )
    .bind(upload_id)
    .fetch_all(conn)
    .await
}

/// How often the upload of check `id` was rebased: part of its job's key.
pub async fn rebases_of_check(conn: &mut Conn, id: i64) -> sqlx::Result<i64> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT u.rebases FROM checks c JOIN uploads u ON u.id = c.upload_id WHERE c.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or(0, |r| r.0))
}

/// The build check of a platform with a check still to run, of an upload
/// being checked: the job of a platform runs its build, test and revdeps.
#[derive(Clone, Debug, FromRow)]
pub struct UnfinishedBuild {
    pub id: i64,
    pub platform: String,
    /// `running` when some check of the platform runs, else `pending`.
    pub state: CheckState,
    pub attempts: i64,
    pub start_failures: i64,
    /// When the running check of the platform started.
    pub started_at: Option<i64>,
    /// When the build itself finished, if it did (its job may still be
    /// between the build and the next check).
    pub build_finished_at: Option<i64>,
    /// When it may run again after an infrastructure error.
    pub retry_at: Option<i64>,
}

/// Build checks of uploads being checked whose platform has a check left:
/// what the reconcile sweep makes sure has a job.
pub async fn unfinished_builds(conn: &mut Conn) -> sqlx::Result<Vec<UnfinishedBuild>> {
    sqlx::query_as(
        "SELECT c.id, c.platform, \
         CASE WHEN EXISTS (SELECT 1 FROM checks r WHERE r.upload_id = c.upload_id \
           AND r.platform = c.platform AND r.state = 'running') THEN 'running' ELSE 'pending' END AS state, \
         c.attempts, c.start_failures, \
         (SELECT MAX(r.started_at) FROM checks r WHERE r.upload_id = c.upload_id \
           AND r.platform = c.platform AND r.state = 'running') AS started_at, \
         CASE WHEN c.state IN ('pending', 'running') THEN NULL ELSE c.finished_at END AS build_finished_at, \
         c.retry_at \
         FROM checks c JOIN uploads u ON u.id = c.upload_id \
         WHERE c.kind = 'build' AND u.state = 'checking' AND EXISTS (SELECT 1 FROM checks o \
           WHERE o.upload_id = c.upload_id AND o.platform = c.platform \
           AND o.state IN ('pending', 'running')) \
         ORDER BY c.id",
    )
    .fetch_all(conn)
    .await
}

/// What an infrastructure error on build check `id`'s platform records.
pub struct InfraFailure<'a> {
    pub reason: InfraReason,
    pub message: &'a str,
    pub worker: &'a str,
    /// The status line shown on the platform's pending checks.
    pub summary: &'a str,
    /// How long until it may run again, given its failures so far
    /// (`domain::check::retry_delay`).
    pub delay: fn(u32) -> std::time::Duration,
}

/// Records an infrastructure error on the platform of build check `id`:
/// its running checks go back to `pending` (as the state machine allows),
/// the build check counts the failure (a new job key) and waits until its
/// retry time. The build check after the change.
pub async fn record_infra_failure(
    conn: &mut Conn,
    id: i64,
    f: InfraFailure<'_>,
) -> sqlx::Result<Option<CheckRow>> {
    debug_assert!(CheckState::Running.can_become(CheckState::Pending));
    let now = now_ms();
    sqlx::query(
        "UPDATE checks SET state = 'pending', worker = NULL, started_at = NULL \
         WHERE state = 'running' AND (upload_id, platform) = \
         (SELECT upload_id, platform FROM checks WHERE id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let failures: Option<(i64,)> =
        sqlx::query_as("SELECT infra_failures FROM checks WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((failures,)) = failures else {
        return Ok(None);
    };
    let next = u32::try_from(failures + 1).unwrap_or(u32::MAX);
    let retry_at = now + (f.delay)(next).as_millis() as i64;
    sqlx::query(
        "UPDATE checks SET start_failures = start_failures + 1, infra_failures = infra_failures + 1, \
         retry_at = $1, infra_reason = $2, infra_message = $3, infra_worker = $4, \
         infra_since = COALESCE(infra_since, $5) WHERE id = $6",
    )
    .bind(retry_at)
    .bind(f.reason.as_str())
    .bind(f.message)
    .bind(f.worker)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE checks SET summary = $1 WHERE state = 'pending' AND (upload_id, platform) = \
         (SELECT upload_id, platform FROM checks WHERE id = $2)",
    )
    .bind(f.summary)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, id).await
}

/// Forgets the infrastructure error of build check `id` (its chain ran).
pub async fn clear_infra(conn: &mut Conn, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE checks SET retry_at = NULL, infra_reason = NULL, infra_message = NULL, \
         infra_worker = NULL, infra_since = NULL, infra_failures = 0 \
         WHERE id = $1 AND infra_reason IS NOT NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes the checks of `upload_id` that wait after an infrastructure error
/// due now (`holdq retry`); their build check ids.
pub async fn retry_infra_now(conn: &mut Conn, upload_id: i64) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "UPDATE checks SET retry_at = $1, start_failures = start_failures + 1 \
         WHERE upload_id = $2 AND infra_reason IS NOT NULL AND retry_at > $1 RETURNING id",
    )
    .bind(now_ms())
    .bind(upload_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Records that the job of build check `id` found its platform's checks
/// must wait (`why`, shown on the checks still pending): the next job gets
/// a new key.
pub async fn record_wait(conn: &mut Conn, id: i64, why: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE checks SET start_failures = start_failures + 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE checks SET summary = $1 WHERE state = 'pending' AND (upload_id, platform) = \
         (SELECT upload_id, platform FROM checks WHERE id = $2)",
    )
    .bind(why)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Clone, Debug, FromRow)]
pub struct VerdictRow {
    pub upload_id: i64,
    pub accepted: i64,
    pub score: f64,
    pub threshold: f64,
    pub passmark: String,
    pub summary: String,
    pub stable_moved: i64,
    pub decided_at: i64,
}

pub async fn insert_verdict(conn: &mut Conn, v: &VerdictRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO verdicts (upload_id, accepted, score, threshold, passmark, summary, stable_moved, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(v.upload_id)
    .bind(v.accepted)
    .bind(v.score)
    .bind(v.threshold)
    .bind(&v.passmark)
    .bind(&v.summary)
    .bind(v.stable_moved)
    .bind(v.decided_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The verdicts decided since `from` (ms), by upload: (upload id, name,
/// version, accepted, score, summary, decided at).
pub async fn verdicts_since(
    conn: &mut Conn,
    from: i64,
) -> sqlx::Result<Vec<(i64, String, String, i64, f64, String, i64)>> {
    sqlx::query_as(
        "SELECT v.upload_id, p.name, u.version, v.accepted, v.score, v.summary, v.decided_at \
         FROM verdicts v JOIN uploads u ON u.id = v.upload_id JOIN packages p ON p.id = u.package_id \
         WHERE v.decided_at >= $1 ORDER BY v.upload_id",
    )
    .bind(from)
    .fetch_all(conn)
    .await
}

pub async fn verdict(conn: &mut Conn, upload_id: i64) -> sqlx::Result<Option<VerdictRow>> {
    sqlx::query_as(
        "SELECT upload_id, accepted, score, threshold, passmark, summary, stable_moved, decided_at \
         FROM verdicts WHERE upload_id = $1",
    )
    .bind(upload_id)
    .fetch_optional(conn)
    .await
}
