//! The email outbox: rows written with the event that causes them, and the
//! state of each delivery.

use sqlx::FromRow;

use super::{Backend, Conn, now_ms};
use crate::domain::delivery::DeliveryState;

#[derive(Clone, Debug, FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub event_key: String,
    pub kind: String,
    pub upload_id: Option<i64>,
    pub to_addr: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    pub message_id: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const COLUMNS: &str = "id, event_key, kind, upload_id, to_addr, subject, text_body, html_body, message_id, \
     state, attempts, next_attempt_at, last_error, created_at, sent_at";

pub struct NewEmail<'a> {
    pub event_key: &'a str,
    pub kind: &'a str,
    pub upload_id: Option<i64>,
    pub to_addr: &'a str,
    pub subject: &'a str,
    pub text_body: &'a str,
    pub html_body: &'a str,
    pub message_id: &'a str,
}

pub async fn get(conn: &mut Conn, id: i64) -> sqlx::Result<Option<OutboxRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM outbox WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Pending emails whose next attempt is due: (id, attempts).
pub async fn due(conn: &mut Conn) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as(
        "SELECT id, attempts FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id",
    )
    .bind(now_ms())
    .fetch_all(conn)
    .await
}

/// Makes every pending email due now, its backoff cut short (after the
/// cause of its failures was fixed); returns how many.
pub async fn make_pending_due(conn: &mut Conn) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $1 WHERE state = 'pending' AND next_attempt_at > $1",
    )
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a pending email sent; false when it was not pending any more.
pub async fn mark_sent(conn: &mut Conn, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'sent', sent_at = $1, attempts = attempts + 1, last_error = NULL \
         WHERE id = $2 AND state = 'pending'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt: retried at `next_attempt_at`, or given up.
pub async fn mark_attempt_failed(
    conn: &mut Conn,
    id: i64,
    error: &str,
    give_up: bool,
    next_attempt_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
         state = CASE WHEN $3 = 1 THEN 'failed' ELSE state END WHERE id = $4 AND state = 'pending'",
    )
    .bind(error)
    .bind(next_attempt_at)
    .bind(i64::from(give_up))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The emails of an upload, oldest first.
pub async fn of_upload(conn: &mut Conn, upload_id: i64) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM outbox WHERE upload_id = $1 ORDER BY id"
    )))
    .bind(upload_id)
    .fetch_all(conn)
    .await
}

/// Inserts emails (one already there for its event and recipient is kept,
/// not duplicated); returns the ids of those inserted. The rows go as one
/// JSON parameter per thousand, unpacked by the database: an obsolescence
/// queues thousands, and a statement of thousands of parameters costs the
/// driver more than the database takes to insert them.
pub async fn insert_many(conn: &mut Conn, emails: &[NewEmail<'_>]) -> sqlx::Result<Vec<i64>> {
    let rows = super::json_rows(
        Backend::of_conn(conn),
        1,
        &[
            ("event_key", "TEXT"),
            ("kind", "TEXT"),
            ("upload_id", "BIGINT"),
            ("to_addr", "TEXT"),
            ("subject", "TEXT"),
            ("text_body", "TEXT"),
            ("html_body", "TEXT"),
            ("message_id", "TEXT"),
        ],
    );
    // `WHERE true` tells SQLite's parser the ON CONFLICT is the upsert's.
    let sql = format!(
        "INSERT INTO outbox (event_key, kind, upload_id, to_addr, subject, text_body, html_body, \
         message_id, state, attempts, next_attempt_at, created_at) \
         SELECT r.event_key, r.kind, r.upload_id, r.to_addr, r.subject, r.text_body, r.html_body, \
         r.message_id, 'pending', 0, $2, $2 FROM {rows} AS r WHERE true \
         ON CONFLICT (event_key) DO NOTHING RETURNING id"
    );
    let now = now_ms();
    let mut ids = Vec::with_capacity(emails.len());
    for chunk in emails.chunks(1000) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|e| {
                serde_json::json!({
                    "event_key": e.event_key,
                    "kind": e.kind,
                    "upload_id": e.upload_id,
                    "to_addr": e.to_addr,
                    "subject": e.subject,
                    "text_body": e.text_body,
                    "html_body": e.html_body,
                    "message_id": e.message_id,
                })
            })
            .collect();
        let rows: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
        ids.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(ids)
}
