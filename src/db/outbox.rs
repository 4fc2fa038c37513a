//! The email outbox: rows written with the event that causes them, and the
//! state of each delivery.

use sqlx::FromRow;

use super::{Conn, now_ms};
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

/// Queues many emails, a hundred per statement; returns the ids of those
/// whose event key was new.
pub async fn insert_many(conn: &mut Conn, emails: &[NewEmail<'_>]) -> sqlx::Result<Vec<i64>> {
    let now = now_ms();
    let mut ids = Vec::with_capacity(emails.len());
    for chunk in emails.chunks(100) {
        let mut sql = String::from(
            "INSERT INTO outbox (event_key, kind, upload_id, to_addr, subject, text_body, html_body, message_id, \
             state, attempts, next_attempt_at, created_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 9;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 'pending', 0, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 9
            ));
        }
        sql.push_str(" ON CONFLICT (event_key) DO NOTHING RETURNING id");
        let mut query = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            query = query
                .bind(e.event_key)
                .bind(e.kind)
                .bind(e.upload_id)
                .bind(e.to_addr)
                .bind(e.subject)
                .bind(e.text_body)
                .bind(e.html_body)
                .bind(e.message_id)
                .bind(now);
        }
        ids.extend(
            query
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|(id,)| id),
        );
    }
    Ok(ids)
}
