//! The changes log: one row per stable change (promotion, obsolescence,
//! undo, removal) with its serial, kind, and the packages whose index
//! documents it changed, written in the change's transaction.

use sqlx::FromRow;

use super::{Conn, now_ms};

/// One change as stored; `packages` is JSON (`[{"name", "sha256"}]`).
#[derive(Clone, Debug, FromRow)]
pub struct ChangeRow {
    pub serial: i64,
    pub kind: String,
    pub packages: String,
    pub at: i64,
}

pub async fn insert(conn: &mut Conn, serial: i64, kind: &str, packages: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO stable_changes (serial, kind, packages, at) VALUES ($1, $2, $3, $4)")
        .bind(serial)
        .bind(kind)
        .bind(packages)
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

/// Up to `limit` changes after serial `since`, in order.
pub async fn after(conn: &mut Conn, since: i64, limit: i64) -> sqlx::Result<Vec<ChangeRow>> {
    sqlx::query_as(
        "SELECT serial, kind, packages, at FROM stable_changes WHERE serial > $1 \
         ORDER BY serial LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The oldest serial the log still holds.
pub async fn oldest(conn: &mut Conn) -> sqlx::Result<Option<i64>> {
    let (oldest,): (Option<i64>,) = sqlx::query_as("SELECT MIN(serial) FROM stable_changes")
        .fetch_one(conn)
        .await?;
    Ok(oldest)
}

/// Deletes the changes recorded before `before_ms`, always keeping the
/// latest; returns how many went.
pub async fn prune(conn: &mut Conn, before_ms: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM stable_changes WHERE at < $1 \
         AND serial < (SELECT MAX(serial) FROM stable_changes)",
    )
    .bind(before_ms)
    .execute(conn)
    .await?
    .rows_affected())
}
