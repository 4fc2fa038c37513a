//! The stable repository as the database holds it: every stable version
//! with its manifest, and the serial that each promotion bumps.

use sqlx::FromRow;

use super::{Conn, now_ms};
use crate::domain::PackageState;

/// One stable version, with its package's name and state.
#[derive(Clone, Debug, FromRow)]
pub struct StableRow {
    pub package_id: i64,
    pub name: String,
    pub package_state: PackageState,
    pub version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub manifest: String,
    pub promoted_at: i64,
}

/// Every stable version, by package name then insertion.
pub async fn all_versions(conn: &mut Conn) -> sqlx::Result<Vec<StableRow>> {
    sqlx::query_as(
        "SELECT v.package_id, p.name, p.state AS package_state, v.version, v.sha256, v.size_bytes, \
         v.manifest, v.promoted_at FROM versions v JOIN packages p ON p.id = v.package_id \
         ORDER BY p.name, v.id",
    )
    .fetch_all(conn)
    .await
}

/// Every stable version without its manifest (which stays empty): what
/// publishing the index reads, the dependencies coming from the model.
pub async fn all_version_heads(conn: &mut Conn) -> sqlx::Result<Vec<StableRow>> {
    sqlx::query_as(
        "SELECT v.package_id, p.name, p.state AS package_state, v.version, v.sha256, v.size_bytes, \
         '' AS manifest, v.promoted_at FROM versions v JOIN packages p ON p.id = v.package_id \
         ORDER BY p.name, v.id",
    )
    .fetch_all(conn)
    .await
}

/// The stable versions of one package.
pub async fn versions_of(conn: &mut Conn, name: &str) -> sqlx::Result<Vec<StableRow>> {
    sqlx::query_as(
        "SELECT v.package_id, p.name, p.state AS package_state, v.version, v.sha256, v.size_bytes, \
         v.manifest, v.promoted_at FROM versions v JOIN packages p ON p.id = v.package_id \
         WHERE p.name = $1 ORDER BY v.id",
    )
    .bind(name)
    .fetch_all(conn)
    .await
}

/// One stable version of a package.
pub async fn version(
    conn: &mut Conn,
    name: &str,
    version: &str,
) -> sqlx::Result<Option<StableRow>> {
    sqlx::query_as(
        "SELECT v.package_id, p.name, p.state AS package_state, v.version, v.sha256, v.size_bytes, \
         v.manifest, v.promoted_at FROM versions v JOIN packages p ON p.id = v.package_id \
         WHERE p.name = $1 AND v.version = $2",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(conn)
    .await
}

pub struct NewVersion<'a> {
    pub package_id: i64,
    pub version: &'a str,
    pub sha256: &'a str,
    pub size_bytes: i64,
    pub manifest: &'a str,
    pub upload_id: i64,
}

pub async fn insert_version(conn: &mut Conn, v: NewVersion<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO versions (package_id, version, sha256, size_bytes, manifest, upload_id, promoted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(v.package_id)
    .bind(v.version)
    .bind(v.sha256)
    .bind(v.size_bytes)
    .bind(v.manifest)
    .bind(v.upload_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn serial(conn: &mut Conn) -> sqlx::Result<i64> {
    let (serial,): (i64,) = sqlx::query_as("SELECT serial FROM stable_state WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok(serial)
}

/// Bumps the serial (taking the row lock on PostgreSQL, which serialises
/// promotions); returns the new serial.
pub async fn bump_serial(conn: &mut Conn) -> sqlx::Result<i64> {
    let (serial,): (i64,) =
        sqlx::query_as("UPDATE stable_state SET serial = serial + 1 WHERE id = 1 RETURNING serial")
            .fetch_one(conn)
            .await?;
    Ok(serial)
}

/// Takes the lock that serialises every change of stable (the serial's
/// row, on PostgreSQL; SQLite's write lock already is one) and returns the
/// serial: what a promotion validates its bases against.
pub async fn lock_serial(conn: &mut Conn, for_update: &str) -> sqlx::Result<i64> {
    let (serial,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT serial FROM stable_state WHERE id = 1{for_update}"
    )))
    .fetch_one(conn)
    .await?;
    Ok(serial)
}
