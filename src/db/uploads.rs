//! Uploads in the holding queue. Queue order is the upload id: a later
//! upload always has a larger id, so "the back of the queue" needs no
//! separate counter.

use sqlx::FromRow;

use super::{Conn, TransitionError, from_states, now_ms};
use crate::domain::UploadState;
use crate::domain::word::StateMachine;

#[derive(Clone, Debug, FromRow)]
pub struct UploadRow {
    pub id: i64,
    pub package_id: i64,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub manifest: String,
    pub uploader_id: i64,
    pub uploader_email: String,
    pub state: UploadState,
    pub state_reason: Option<String>,
    pub superseded_by: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub rebases: i64,
    /// The upload group it belongs to.
    pub group_id: Option<i64>,
    /// 1 while its group is not yet submitted: it is not in line yet.
    pub in_unsubmitted_group: i64,
}

const SELECT: &str = "SELECT u.id, u.package_id, p.name, u.version, u.sha256, u.size_bytes, \
     u.manifest, u.uploader_id, us.email AS uploader_email, u.state, u.state_reason, \
     u.superseded_by, u.created_at, u.updated_at, u.rebases, u.group_id, \
     CASE WHEN EXISTS (SELECT 1 FROM upload_groups g WHERE g.id = u.group_id \
       AND g.state <> 'submitted') THEN 1 ELSE 0 END AS in_unsubmitted_group \
     FROM uploads u JOIN packages p ON p.id = u.package_id JOIN users us ON us.id = u.uploader_id";

pub struct NewUpload<'a> {
    pub package_id: i64,
    pub version: &'a str,
    pub sha256: &'a str,
    pub size_bytes: i64,
    pub manifest_json: &'a str,
    pub uploader_id: i64,
    pub group_id: Option<i64>,
}

/// Inserts a queued upload at the back of the queue; returns its id.
pub async fn insert(conn: &mut Conn, new: NewUpload<'_>) -> sqlx::Result<i64> {
    let now = now_ms();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO uploads (package_id, version, sha256, size_bytes, manifest, uploader_id, \
         state, created_at, updated_at, group_id) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7, $8) RETURNING id",
    )
    .bind(new.package_id)
    .bind(new.version)
    .bind(new.sha256)
    .bind(new.size_bytes)
    .bind(new.manifest_json)
    .bind(new.uploader_id)
    .bind(now)
    .bind(new.group_id)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// The pending (queued or checking) uploads of a package.
pub async fn pending_of_package(conn: &mut Conn, package_id: i64) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM uploads WHERE package_id = $1 AND state IN ('queued', 'checking') \
         ORDER BY id",
    )
    .bind(package_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Marks pending uploads `superseded` by `by`; returns how many changed.
pub async fn mark_superseded(conn: &mut Conn, ids: &[i64], by: i64) -> sqlx::Result<u64> {
    supersede(conn, ids, Some(by), None).await
}

/// Discards pending uploads (their group was refused, expired or
/// superseded), silently, with the reason.
pub async fn discard(conn: &mut Conn, ids: &[i64], reason: &str) -> sqlx::Result<u64> {
    supersede(conn, ids, None, Some(reason)).await
}

async fn supersede(
    conn: &mut Conn,
    ids: &[i64],
    by: Option<i64>,
    reason: Option<&str>,
) -> sqlx::Result<u64> {
    let mut changed = 0;
    for id in ids {
        changed += sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE uploads SET state = 'superseded', superseded_by = $1, \
             state_reason = COALESCE($2, state_reason), updated_at = $3 \
             WHERE id = $4 AND {}",
            from_states(UploadState::Superseded)
        )))
        .bind(by)
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(changed)
}

pub async fn get(conn: &mut Conn, id: i64) -> sqlx::Result<Option<UploadRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE u.id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The holding queue, front first.
pub async fn pending(conn: &mut Conn) -> sqlx::Result<Vec<UploadRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE u.state IN ('queued', 'checking') ORDER BY u.id"
    )))
    .fetch_all(conn)
    .await
}

/// Every upload of a package, newest first.
pub async fn of_package(conn: &mut Conn, name: &str, limit: i64) -> sqlx::Result<Vec<UploadRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE p.name = $1 ORDER BY u.id DESC LIMIT $2"
    )))
    .bind(name)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// 1-based position of a pending upload in the queue.
pub async fn position(conn: &mut Conn, id: i64) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM uploads WHERE state IN ('queued', 'checking') AND id <= $1",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// Moves an upload from `from` to `to`, as the state machine allows (an
/// error otherwise); false when it was not in `from`.
pub async fn transition(
    conn: &mut Conn,
    id: i64,
    from: UploadState,
    to: UploadState,
) -> Result<bool, TransitionError> {
    from.check_move(to)?;
    let done =
        sqlx::query("UPDATE uploads SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4")
            .bind(to.as_str())
            .bind(now_ms())
            .bind(id)
            .bind(from.as_str())
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the resolution of the upload's closure at queue time or at check time.
pub async fn set_resolution(
    conn: &mut Conn,
    id: i64,
    at_upload: bool,
    json: &str,
) -> sqlx::Result<()> {
    let sql = if at_upload {
        "UPDATE uploads SET resolved_at_upload = $1 WHERE id = $2"
    } else {
        "UPDATE uploads SET resolved = $1 WHERE id = $2"
    };
    sqlx::query(sql).bind(json).bind(id).execute(conn).await?;
    Ok(())
}

pub async fn resolutions(
    conn: &mut Conn,
    id: i64,
) -> sqlx::Result<(Option<String>, Option<String>)> {
    sqlx::query_as("SELECT resolved_at_upload, resolved FROM uploads WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
}

/// Queued uploads, front first.
pub async fn queued_ids(conn: &mut Conn) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> =
        // Members of a group leave the queue once it is submitted.
        sqlx::query_as(
            "SELECT u.id FROM uploads u WHERE u.state = 'queued' AND (u.group_id IS NULL \
             OR EXISTS (SELECT 1 FROM upload_groups g WHERE g.id = u.group_id AND g.state = 'submitted')) \
             ORDER BY u.id",
        )
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Uploads being checked: what the verdict sweep looks at.
pub async fn checking_ids(conn: &mut Conn) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM uploads WHERE state = 'checking' ORDER BY id")
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// How many uploads there are in each state.
pub async fn count_all(conn: &mut Conn) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM uploads")
        .fetch_one(conn)
        .await?;
    Ok(n)
}

/// Counts one more rebase of the upload, with the status line saying why;
/// returns the new count.
pub async fn count_rebase(conn: &mut Conn, id: i64, why: &str) -> sqlx::Result<i64> {
    let (rebases,): (i64,) = sqlx::query_as(
        "UPDATE uploads SET rebases = rebases + 1, state_reason = $1, updated_at = $2 \
         WHERE id = $3 RETURNING rebases",
    )
    .bind(why)
    .bind(now_ms())
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(rebases)
}

/// How often the upload was rebased.
pub async fn rebases(conn: &mut Conn, id: i64) -> sqlx::Result<i64> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT rebases FROM uploads WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map_or(0, |r| r.0))
}

/// Every accepted upload, oldest first.
pub async fn accepted(conn: &mut Conn) -> sqlx::Result<Vec<UploadRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE u.state = 'accepted' ORDER BY u.id"
    )))
    .fetch_all(conn)
    .await
}

/// Sets (or clears) the line that says why the upload stands where it does.
pub async fn set_reason(conn: &mut Conn, id: i64, reason: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("UPDATE uploads SET state_reason = $1 WHERE id = $2")
        .bind(reason)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether an upload being checked was rebased `at_least` times (its checks
/// then wait for the related uploads ahead).
pub async fn any_checking_rebased(conn: &mut Conn, at_least: i64) -> sqlx::Result<bool> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM uploads WHERE state = 'checking' AND rebases >= $1 LIMIT 1")
            .bind(at_least)
            .fetch_optional(conn)
            .await?;
    Ok(row.is_some())
}
