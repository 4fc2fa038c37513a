//! Partial uploads of the tus protocol: how much of each has arrived,
//! whose it is, and which upload it became.

use sqlx::FromRow;

use super::{Conn, now_ms};

#[derive(Clone, Debug, FromRow)]
pub struct TusRow {
    pub id: String,
    pub owner_id: i64,
    pub length: i64,
    pub received: i64,
    pub metadata: String,
    pub filename: Option<String>,
    pub sha256: Option<String>,
    pub group_id: Option<i64>,
    /// The upload it became once complete and queued.
    pub upload_id: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
}

const COLUMNS: &str = "id, owner_id, length, received, metadata, filename, sha256, group_id, \
     upload_id, created_at, expires_at";

pub struct NewTus<'a> {
    pub id: &'a str,
    pub owner_id: i64,
    pub length: i64,
    pub metadata: &'a str,
    pub filename: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub group_id: Option<i64>,
    pub expires_at: i64,
}

pub async fn insert(conn: &mut Conn, new: NewTus<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tus_uploads (id, owner_id, length, received, metadata, filename, sha256, \
         group_id, created_at, expires_at) VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new.id)
    .bind(new.owner_id)
    .bind(new.length)
    .bind(new.metadata)
    .bind(new.filename)
    .bind(new.sha256)
    .bind(new.group_id)
    .bind(now_ms())
    .bind(new.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, id: &str) -> sqlx::Result<Option<TusRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tus_uploads WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The unfinished uploads of `owner_id`, oldest first.
pub async fn unfinished_of(conn: &mut Conn, owner_id: i64) -> sqlx::Result<Vec<TusRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tus_uploads WHERE owner_id = $1 AND upload_id IS NULL \
         ORDER BY created_at"
    )))
    .bind(owner_id)
    .fetch_all(conn)
    .await
}

/// The bytes `owner_id`'s unfinished uploads reserve (their full lengths).
pub async fn reserved_by(conn: &mut Conn, owner_id: i64) -> sqlx::Result<i64> {
    let (n,): (Option<i64>,) = sqlx::query_as(
        "SELECT CAST(SUM(length) AS BIGINT) FROM tus_uploads \
         WHERE owner_id = $1 AND upload_id IS NULL",
    )
    .bind(owner_id)
    .fetch_one(conn)
    .await?;
    Ok(n.unwrap_or(0))
}

/// Records that `received` bytes are durable, if the upload was at `from`.
pub async fn advance(
    conn: &mut Conn,
    id: &str,
    from: i64,
    received: i64,
    expires_at: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE tus_uploads SET received = $1, expires_at = $2 \
         WHERE id = $3 AND received = $4 AND upload_id IS NULL",
    )
    .bind(received)
    .bind(expires_at)
    .bind(id)
    .bind(from)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inside the transaction that queued upload `upload_id`: the partial
/// upload became it. False when it had already become one.
pub async fn mark_queued(conn: &mut Conn, id: &str, upload_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE tus_uploads SET upload_id = $1 WHERE id = $2 AND upload_id IS NULL \
         AND received = length",
    )
    .bind(upload_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM tus_uploads WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The uploads whose time ran out by `now`.
pub async fn expired(conn: &mut Conn, now: i64) -> sqlx::Result<Vec<TusRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tus_uploads WHERE expires_at < $1"
    )))
    .bind(now)
    .fetch_all(conn)
    .await
}

/// The uploads whose bytes all arrived but that were not queued (a crash
/// or a refused connection interrupted the finish).
pub async fn complete_unqueued(conn: &mut Conn) -> sqlx::Result<Vec<TusRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tus_uploads WHERE received = length AND upload_id IS NULL"
    )))
    .fetch_all(conn)
    .await
}
