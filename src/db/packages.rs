//! Packages, their owners, and their stable versions.

use sqlx::FromRow;

use super::{Conn, now_ms};
use crate::domain::PackageState;

#[derive(Clone, Debug, FromRow)]
pub struct PackageRow {
    pub id: i64,
    pub name: String,
    pub state: PackageState,
    pub created_at: i64,
}

#[derive(Clone, Debug, FromRow)]
pub struct VersionRow {
    pub id: i64,
    pub package_id: i64,
    pub version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub upload_id: Option<i64>,
    pub promoted_at: i64,
}

/// Inserts the package unless it exists; true when this call created it.
pub async fn insert_if_missing(conn: &mut Conn, name: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO packages (name, state, created_at) VALUES ($1, 'active', $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn find_by_name(conn: &mut Conn, name: &str) -> sqlx::Result<Option<PackageRow>> {
    sqlx::query_as("SELECT id, name, state, created_at FROM packages WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Reads the package and, on PostgreSQL, locks its row until the end of the
/// transaction: every change to one package's queue goes through here.
pub async fn lock_by_name(
    conn: &mut Conn,
    name: &str,
    for_update: &str,
) -> sqlx::Result<Option<PackageRow>> {
    let sql =
        format!("SELECT id, name, state, created_at FROM packages WHERE name = $1{for_update}");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await
}

pub async fn is_owner(conn: &mut Conn, package_id: i64, user_id: i64) -> sqlx::Result<bool> {
    let found: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM owners WHERE package_id = $1 AND user_id = $2")
            .bind(package_id)
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// Adds an owner; false when they already were one.
pub async fn add_owner(conn: &mut Conn, package_id: i64, user_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO owners (package_id, user_id, added_at) VALUES ($1, $2, $3) \
         ON CONFLICT (package_id, user_id) DO NOTHING",
    )
    .bind(package_id)
    .bind(user_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes an owner; false when they were not one.
pub async fn remove_owner(conn: &mut Conn, package_id: i64, user_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM owners WHERE package_id = $1 AND user_id = $2")
        .bind(package_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn owner_emails(conn: &mut Conn, package_id: i64) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT u.email FROM owners o JOIN users u ON u.id = o.user_id \
         WHERE o.package_id = $1 ORDER BY u.email",
    )
    .bind(package_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(e,)| e).collect())
}

/// Every stable version of a package, in no particular order (semver
/// ordering happens in Rust).
pub async fn stable_versions(conn: &mut Conn, package_id: i64) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as(
        "SELECT id, package_id, version, sha256, size_bytes, upload_id, promoted_at \
         FROM versions WHERE package_id = $1",
    )
    .bind(package_id)
    .fetch_all(conn)
    .await
}
