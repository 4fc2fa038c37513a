//! Upload groups: several archives uploaded together, queued when the
//! group is submitted, decided as one.

use sqlx::FromRow;

use super::{Conn, TransitionError, now_ms};
use crate::domain::upload::GroupState;
use crate::domain::word::StateMachine;

#[derive(Clone, Debug, FromRow)]
pub struct GroupRow {
    pub id: i64,
    pub owner_id: i64,
    pub expected: Option<i64>,
    pub state: GroupState,
    pub reason: Option<String>,
    pub created_at: i64,
    pub submitted_at: Option<i64>,
}

const COLUMNS: &str = "id, owner_id, expected, state, reason, created_at, submitted_at";

pub async fn insert(conn: &mut Conn, owner_id: i64, expected: Option<i64>) -> sqlx::Result<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO upload_groups (owner_id, expected, state, created_at) \
         VALUES ($1, $2, 'open', $3) RETURNING id",
    )
    .bind(owner_id)
    .bind(expected)
    .bind(now_ms())
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// The group, locked for the rest of the transaction on PostgreSQL.
pub async fn get(conn: &mut Conn, id: i64, for_update: &str) -> sqlx::Result<Option<GroupRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM upload_groups WHERE id = $1{for_update}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Moves the group from `from` to `to` with a reason, as its state machine
/// allows (an error otherwise); false when it was not in `from`.
pub async fn transition(
    conn: &mut Conn,
    id: i64,
    (from, to): (GroupState, GroupState),
    reason: Option<&str>,
) -> Result<bool, TransitionError> {
    from.check_move(to)?;
    let done = sqlx::query(
        "UPDATE upload_groups SET state = $1, reason = $2, \
         submitted_at = CASE WHEN $1 = 'submitted' THEN $3 ELSE submitted_at END \
         WHERE id = $4 AND state = $5",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(now_ms())
    .bind(id)
    .bind(from.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The uploads of the group, oldest first.
pub async fn members(conn: &mut Conn, id: i64) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM uploads WHERE group_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Open groups created before `before` (ms): expired.
pub async fn open_before(conn: &mut Conn, before: i64) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM upload_groups WHERE state = 'open' AND created_at < $1 ORDER BY id",
    )
    .bind(before)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}
