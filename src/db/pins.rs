//! Max-version pins recorded on the dependents of obsolete packages, and
//! the obsolescence columns of packages.

use super::{Conn, now_ms};
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

/// Records many pins on `dependency_id`, a few hundred per statement.
pub async fn insert_many(
    conn: &mut Conn,
    dependency_id: i64,
    pins: &[NewPin<'_>],
) -> sqlx::Result<()> {
    let now = now_ms();
    for chunk in pins.chunks(super::BATCH / 5) {
        let mut sql = String::from(
            "INSERT INTO pins (dependent_id, dependency_id, max_version, requirement, created_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 5;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            ));
        }
        sql.push_str(
            " ON CONFLICT (dependent_id, dependency_id) DO UPDATE SET max_version = excluded.max_version, \
             requirement = excluded.requirement",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for pin in chunk {
            query = query
                .bind(pin.dependent_id)
                .bind(dependency_id)
                .bind(pin.max_version)
                .bind(pin.requirement)
                .bind(now);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Ids of the named packages, a few hundred names per query.
pub async fn ids_of(
    conn: &mut Conn,
    names: &[&str],
) -> sqlx::Result<std::collections::HashMap<String, i64>> {
    let mut out = std::collections::HashMap::new();
    for chunk in names.chunks(super::BATCH) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT name, id FROM packages WHERE name IN ({})",
            marks.join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
        for name in chunk {
            query = query.bind(*name);
        }
        out.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// The manifests of the given (package name, version) pairs: (name,
/// version) -> manifest JSON. Only those versions are read, not every
/// version of each package.
pub async fn manifests_of(
    conn: &mut Conn,
    versions: &[(&str, &str)],
) -> sqlx::Result<std::collections::HashMap<(String, String), String>> {
    let mut out = std::collections::HashMap::new();
    for chunk in versions.chunks(super::BATCH / 2) {
        let pairs: Vec<String> = (1..=chunk.len())
            .map(|i| format!("(${}, ${})", 2 * i - 1, 2 * i))
            .collect();
        // A VALUES list's columns are column1, column2 on both databases.
        let sql = format!(
            "SELECT p.name, v.version, v.manifest FROM (VALUES {}) AS w \
             JOIN packages p ON p.name = w.column1 \
             JOIN versions v ON v.package_id = p.id AND v.version = w.column2",
            pairs.join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(sql));
        for (name, version) in chunk {
            query = query.bind(*name).bind(*version);
        }
        for (name, version, manifest) in query.fetch_all(&mut *conn).await? {
            out.insert((name, version), manifest);
        }
    }
    Ok(out)
}

/// The pins on the named dependents' requirements.
pub async fn of_dependents(conn: &mut Conn, names: &[&str]) -> sqlx::Result<Vec<PinRow>> {
    let mut out = Vec::new();
    for chunk in names.chunks(super::BATCH) {
        let sql = format!(
            "SELECT a.name AS dependent, b.name AS dependency, p.max_version, p.requirement \
             FROM pins p JOIN packages a ON a.id = p.dependent_id JOIN packages b ON b.id = p.dependency_id \
             WHERE a.name IN ({}) ORDER BY a.name, b.name",
            super::stable::marks(chunk.len())
        );
        let mut query = sqlx::query_as::<_, PinRow>(sqlx::AssertSqlSafe(sql));
        for name in chunk {
            query = query.bind(*name);
        }
        out.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(out)
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
