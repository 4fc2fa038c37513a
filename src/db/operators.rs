//! Pass-mark changes and platform states.

use sqlx::FromRow;

use super::{Conn, now_ms};

#[derive(Clone, Debug, FromRow)]
pub struct PassMarkChangeRow {
    pub id: i64,
    pub at: i64,
    pub actor: Option<String>,
    pub key: String,
    pub old_value: String,
    pub new_value: String,
    pub why: String,
    pub passmark: String,
}

pub async fn latest_passmark(conn: &mut Conn) -> sqlx::Result<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT passmark FROM passmark_changes ORDER BY id DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(p,)| p))
}

pub struct NewChange<'a> {
    pub actor_id: i64,
    pub key: &'a str,
    pub old_value: &'a str,
    pub new_value: &'a str,
    pub why: &'a str,
    pub passmark: &'a str,
}

pub async fn insert_change(conn: &mut Conn, c: NewChange<'_>) -> sqlx::Result<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO passmark_changes (at, actor_id, key, old_value, new_value, why, passmark) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(now_ms())
    .bind(c.actor_id)
    .bind(c.key)
    .bind(c.old_value)
    .bind(c.new_value)
    .bind(c.why)
    .bind(c.passmark)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

pub async fn history(conn: &mut Conn) -> sqlx::Result<Vec<PassMarkChangeRow>> {
    sqlx::query_as(
        "SELECT c.id, c.at, u.email AS actor, c.key, c.old_value, c.new_value, c.why, c.passmark \
         FROM passmark_changes c LEFT JOIN users u ON u.id = c.actor_id ORDER BY c.id",
    )
    .fetch_all(conn)
    .await
}

/// (paused, generation) of a platform; a platform never paused is (false, 0).
pub async fn platform_state(conn: &mut Conn, name: &str) -> sqlx::Result<(bool, i64)> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT paused, generation FROM platform_state WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(p, g)| (p != 0, g)).unwrap_or((false, 0)))
}

/// Pauses or resumes a platform; a resume starts a new generation (so its
/// checks' jobs are pushed afresh). Returns the new generation.
pub async fn set_paused(conn: &mut Conn, name: &str, paused: bool) -> sqlx::Result<i64> {
    let (generation,): (i64,) = sqlx::query_as(
        "INSERT INTO platform_state (name, paused, generation, changed_at) VALUES ($1, $2, 0, $3) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at, \
         generation = platform_state.generation + CASE WHEN excluded.paused = 0 THEN 1 ELSE 0 END \
         RETURNING generation",
    )
    .bind(name)
    .bind(i64::from(paused))
    .bind(now_ms())
    .fetch_one(conn)
    .await?;
    Ok(generation)
}

pub async fn paused_platforms(conn: &mut Conn) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM platform_state WHERE paused = 1 ORDER BY name")
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}
