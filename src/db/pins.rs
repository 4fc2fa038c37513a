//! Max-version pins recorded on the dependents of obsolete packages, and
//! the obsolescence columns of packages.

use super::{Backend, Conn, now_ms};
use crate::domain::PackageState;

/// A pin as stored: dependent, dependency, highest admitted version, and the
/// dependent's own requirement when it was pinned.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PinRow {
    pub dependent: String,
    pub dependency: String,
    pub max_version: String,
    pub requirement: String,
}

/// Lifts every pin on `dependency_id`; returns how many.
pub async fn delete_on(conn: &mut Conn, dependency_id: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query("DELETE FROM pins WHERE dependency_id = $1")
        .bind(dependency_id)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Removes every pin naming the package, either side.
pub async fn delete_involving(conn: &mut Conn, package_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pins WHERE dependency_id = $1 OR dependent_id = $1")
        .bind(package_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn all(conn: &mut Conn) -> sqlx::Result<Vec<PinRow>> {
    sqlx::query_as(
        "SELECT a.name AS dependent, b.name AS dependency, p.max_version, p.requirement \
         FROM pins p JOIN packages a ON a.id = p.dependent_id JOIN packages b ON b.id = p.dependency_id \
         ORDER BY a.name, b.name",
    )
    .fetch_all(conn)
    .await
}

/// An obsolete (or removed) package's name, state, reason and replacement.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ObsoleteRow {
    pub id: i64,
    pub name: String,
    pub state: PackageState,
    pub obsolete_reason: Option<String>,
    pub replacement: Option<String>,
    pub obsoleted_at: Option<i64>,
}

pub async fn obsolescence(conn: &mut Conn, name: &str) -> sqlx::Result<Option<ObsoleteRow>> {
    sqlx::query_as(
        "SELECT id, name, state, obsolete_reason, replacement, obsoleted_at FROM packages WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

pub async fn obsolete_packages(conn: &mut Conn) -> sqlx::Result<Vec<ObsoleteRow>> {
    sqlx::query_as(
        "SELECT id, name, state, obsolete_reason, replacement, obsoleted_at FROM packages WHERE state = 'obsolete'",
    )
    .fetch_all(conn)
    .await
}

pub async fn set_obsolete(
    conn: &mut Conn,
    package_id: i64,
    reason: &str,
    replacement: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE packages SET state = 'obsolete', obsolete_reason = $1, replacement = $2, obsoleted_at = $3 WHERE id = $4",
    )
    .bind(reason)
    .bind(replacement)
    .bind(now_ms())
    .bind(package_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn clear_obsolete(conn: &mut Conn, package_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE packages SET state = 'active', obsolete_reason = NULL, replacement = NULL, obsoleted_at = NULL WHERE id = $1",
    )
    .bind(package_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a package removed and deletes its stable versions.
pub async fn set_removed(conn: &mut Conn, package_id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE packages SET state = 'removed' WHERE id = $1")
        .bind(package_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM versions WHERE package_id = $1")
        .bind(package_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// One pin to record.
pub struct NewPin<'a> {
    pub dependent_id: i64,
    pub max_version: &'a str,
    pub requirement: &'a str,
}

/// Records many pins on `dependency_id`, thousands in one parameter.
pub async fn insert_many(
    conn: &mut Conn,
    dependency_id: i64,
    pins: &[NewPin<'_>],
) -> sqlx::Result<()> {
    let rows = super::json_rows(
        Backend::of_conn(conn),
        1,
        &[
            ("dependent_id", "BIGINT"),
            ("max_version", "TEXT"),
            ("requirement", "TEXT"),
        ],
    );
    // `WHERE true` tells SQLite's parser the ON CONFLICT is the upsert's.
    let sql = format!(
        "INSERT INTO pins (dependent_id, dependency_id, max_version, requirement, created_at) \
         SELECT r.dependent_id, $2, r.max_version, r.requirement, $3 FROM {rows} AS r WHERE true \
         ON CONFLICT (dependent_id, dependency_id) DO UPDATE SET max_version = excluded.max_version, \
         requirement = excluded.requirement"
    );
    let now = now_ms();
    for chunk in pins.chunks(super::BATCH) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|p| {
                serde_json::json!({
                    "dependent_id": p.dependent_id,
                    "max_version": p.max_version,
                    "requirement": p.requirement,
                })
            })
            .collect();
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(dependency_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    if pins.len() >= FRESH_STATISTICS && Backend::of_conn(conn) == Backend::Postgres {
        // The planner's picture of `pins` is the table before: a first
        // large obsolescence adds thousands of rows to a table its
        // statistics call empty, and the statements after it in this
        // transaction, which read them back, are planned as if it were.
        // ANALYZE counts this transaction's own rows.
        sqlx::query("ANALYZE pins").execute(&mut *conn).await?;
    }
    Ok(())
}

/// Pins recorded at once past which PostgreSQL's statistics of the table
/// are refreshed in the transaction.
const FRESH_STATISTICS: usize = 1000;

/// Ids of the named packages.
pub async fn ids_of(
    conn: &mut Conn,
    names: &[&str],
) -> sqlx::Result<std::collections::HashMap<String, i64>> {
    let sql = "SELECT name, id FROM packages WHERE name IN {names}";
    let rows: Vec<(String, i64)> = super::fetch_for_names(conn, sql, names).await?;
    Ok(rows.into_iter().collect())
}

/// The manifests of the given (package name, version) pairs: (name,
/// version) -> manifest JSON. Only those versions are read, not every
/// version of each package.
pub async fn manifests_of(
    conn: &mut Conn,
    versions: &[(&str, &str)],
) -> sqlx::Result<std::collections::HashMap<(String, String), String>> {
    let wanted = super::json_rows(
        Backend::of_conn(conn),
        1,
        &[("name", "TEXT"), ("version", "TEXT")],
    );
    let sql = format!(
        "SELECT p.name, v.version, v.manifest FROM {wanted} AS w \
         JOIN packages p ON p.name = w.name \
         JOIN versions v ON v.package_id = p.id AND v.version = w.version"
    );
    let rows: Vec<serde_json::Value> = versions
        .iter()
        .map(|(name, version)| serde_json::json!({ "name": name, "version": version }))
        .collect();
    let found: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await?;
    Ok(found
        .into_iter()
        .map(|(name, version, manifest)| ((name, version), manifest))
        .collect())
}

/// The pins on the named dependents' requirements.
pub async fn of_dependents(conn: &mut Conn, names: &[&str]) -> sqlx::Result<Vec<PinRow>> {
    super::fetch_for_names(
        conn,
        "SELECT a.name AS dependent, b.name AS dependency, p.max_version, p.requirement \
         FROM pins p JOIN packages a ON a.id = p.dependent_id JOIN packages b ON b.id = p.dependency_id \
         WHERE a.name IN {names}",
        names,
    )
    .await
}

/// The names of the packages pinned on `dependency_id`.
pub async fn dependents_pinned_on(
    conn: &mut Conn,
    dependency_id: i64,
) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT a.name FROM pins p JOIN packages a ON a.id = p.dependent_id \
         WHERE p.dependency_id = $1 ORDER BY a.name",
    )
    .bind(dependency_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}
