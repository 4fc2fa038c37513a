//! The registry of check workers: who serves which platform, alive when.

use sqlx::FromRow;

use super::{Conn, now_ms};

#[derive(Clone, Debug, FromRow)]
pub struct WorkerRow {
    pub name: String,
    pub platform: String,
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub current_check: Option<i64>,
}

pub async fn register(
    conn: &mut Conn,
    name: &str,
    platform: &str,
    host: &str,
    pid: i64,
) -> sqlx::Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO check_workers (name, platform, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
    )
    .bind(name)
    .bind(platform)
    .bind(host)
    .bind(pid)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the check a worker runs now (`None` when idle).
pub async fn set_current(conn: &mut Conn, name: &str, check: Option<i64>) -> sqlx::Result<()> {
    sqlx::query("UPDATE check_workers SET current_check = $1, heartbeat_at = $2 WHERE name = $3")
        .bind(check)
        .bind(now_ms())
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Workers seen since `since` (ms since the epoch), newest first.
pub async fn seen_since(conn: &mut Conn, since: i64) -> sqlx::Result<Vec<WorkerRow>> {
    sqlx::query_as(
        "SELECT name, platform, host, pid, started_at, heartbeat_at, current_check FROM check_workers \
         WHERE heartbeat_at >= $1 ORDER BY platform, name",
    )
    .bind(since)
    .fetch_all(conn)
    .await
}
