//! The event log: one row per thing that happened, for history and audit.

use super::{Conn, now_ms};

/// Who did what to which package or upload.
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub package_id: Option<i64>,
    pub upload_id: Option<i64>,
    pub actor_id: Option<i64>,
    pub detail: serde_json::Value,
}

pub async fn record(conn: &mut Conn, event: NewEvent<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO events (at, kind, package_id, upload_id, actor_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now_ms())
    .bind(event.kind)
    .bind(event.package_id)
    .bind(event.upload_id)
    .bind(event.actor_id)
    .bind(event.detail.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// The events of one package, oldest first: (kind, at, detail JSON).
pub async fn of_package(
    conn: &mut Conn,
    package_id: i64,
) -> sqlx::Result<Vec<(String, i64, String)>> {
    sqlx::query_as("SELECT kind, at, detail FROM events WHERE package_id = $1 ORDER BY id")
        .bind(package_id)
        .fetch_all(conn)
        .await
}

/// The events of one upload, oldest first: (kind, at, detail JSON).
pub async fn of_upload(
    conn: &mut Conn,
    upload_id: i64,
) -> sqlx::Result<Vec<(String, i64, String)>> {
    sqlx::query_as("SELECT kind, at, detail FROM events WHERE upload_id = $1 ORDER BY id")
        .bind(upload_id)
        .fetch_all(conn)
        .await
}
