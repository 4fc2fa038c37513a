//! Users and their API tokens (stored as sha256 hashes only).

use sqlx::FromRow;

use super::{Conn, now_ms};

#[derive(Clone, Debug, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub is_operator: i64,
    pub is_worker: i64,
    pub created_at: i64,
}

pub async fn insert_user(
    conn: &mut Conn,
    email: &str,
    operator: bool,
    worker: bool,
) -> sqlx::Result<UserRow> {
    sqlx::query_as(
        "INSERT INTO users (email, is_operator, is_worker, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING id, email, is_operator, is_worker, created_at",
    )
    .bind(email)
    .bind(i64::from(operator))
    .bind(i64::from(worker))
    .bind(now_ms())
    .fetch_one(conn)
    .await
}

pub async fn find_by_email(conn: &mut Conn, email: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(
        "SELECT id, email, is_operator, is_worker, created_at FROM users WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(conn)
    .await
}

pub async fn find_by_id(conn: &mut Conn, id: i64) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as("SELECT id, email, is_operator, is_worker, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn insert_token(conn: &mut Conn, user_id: i64, token_hash: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(token_hash)
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

/// The user a token hash belongs to.
pub async fn find_by_token_hash(
    conn: &mut Conn,
    token_hash: &str,
) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.is_operator, u.is_worker, u.created_at \
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}
