//! The counts `GET /metrics` exposes, each one small query over our tables.

use super::Conn;

/// Uploads in the holding queue (queued or checking).
pub async fn queue_length(conn: &mut Conn) -> sqlx::Result<i64> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM uploads WHERE state IN ('queued', 'checking')")
            .fetch_one(conn)
            .await?;
    Ok(n)
}

/// Build checks of uploads being checked, per platform: (platform,
/// pending, running).
pub async fn builds_by_platform(conn: &mut Conn) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT c.platform, \
           SUM(CASE WHEN c.state = 'pending' THEN 1 ELSE 0 END), \
           SUM(CASE WHEN c.state = 'running' THEN 1 ELSE 0 END) \
         FROM checks c JOIN uploads u ON u.id = c.upload_id \
         WHERE u.state = 'checking' AND c.platform <> '' AND c.kind = 'build' GROUP BY c.platform",
    )
    .fetch_all(conn)
    .await
}

/// Platforms of uploads being checked that wait after an infrastructure
/// error: (platform, reason, count).
pub async fn infra_waits(conn: &mut Conn) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT c.platform, c.infra_reason, COUNT(*) FROM checks c JOIN uploads u ON u.id = c.upload_id \
         WHERE u.state = 'checking' AND c.infra_reason IS NOT NULL \
         GROUP BY c.platform, c.infra_reason ORDER BY c.platform, c.infra_reason",
    )
    .fetch_all(conn)
    .await
}

/// Verdicts given: (accepted, rejected).
pub async fn verdicts(conn: &mut Conn) -> sqlx::Result<(i64, i64)> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT accepted, COUNT(*) FROM verdicts GROUP BY accepted")
            .fetch_all(conn)
            .await?;
    let count = |accepted| rows.iter().find(|(a, _)| *a == accepted).map_or(0, |r| r.1);
    Ok((count(1), count(0)))
}

/// (kind, duration in ms) of every finished check that took a measured time.
pub async fn check_durations(conn: &mut Conn) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT kind, duration_ms FROM checks \
         WHERE duration_ms IS NOT NULL AND state IN ('passed', 'failed')",
    )
    .fetch_all(conn)
    .await
}

/// Emails in the outbox by state: (state, count).
pub async fn outbox_states(conn: &mut Conn) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        .fetch_all(conn)
        .await
}
