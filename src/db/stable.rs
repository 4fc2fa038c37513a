//! The stable repository as the database holds it: every stable version
//! with its manifest, and the serial that each promotion bumps.

use sqlx::FromRow;

use super::{Backend, Conn, now_ms};
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

/// `$1, $2, ... $n`: the placeholders of an `IN (...)` list.
pub fn marks(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many names one `IN (...)` query binds.
const CHUNK: usize = super::BATCH;

/// One stable version as an index document lists it, read by
/// [`version_lists`].
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ListedVersion {
    pub version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub promoted_at: i64,
    /// From the manifest: name -> requirement.
    #[serde(default)]
    pub dependencies: Option<std::collections::BTreeMap<String, String>>,
}

/// The stable versions of the named packages, one row per package: its
/// name and a JSON array of [`ListedVersion`]s, in no particular order,
/// built by the database (an obsolescence reads the versions of thousands
/// of packages: one row each, and the manifests read where they are, cost
/// a fraction of a row a version decoded by the driver).
pub async fn version_lists(conn: &mut Conn, names: &[&str]) -> sqlx::Result<Vec<(String, String)>> {
    let aggregate = match Backend::of_conn(conn) {
        Backend::Postgres => {
            "json_agg(json_build_object('version', v.version, 'sha256', v.sha256, \
             'size_bytes', v.size_bytes, 'promoted_at', v.promoted_at, \
             'dependencies', v.manifest::json -> 'dependencies'))::text"
        }
        Backend::Sqlite => {
            "json_group_array(json_object('version', v.version, 'sha256', v.sha256, \
             'size_bytes', v.size_bytes, 'promoted_at', v.promoted_at, \
             'dependencies', json(v.manifest -> '$.dependencies')))"
        }
    };
    let sql = format!(
        "SELECT p.name, {aggregate} FROM versions v JOIN packages p ON p.id = v.package_id \
         WHERE p.name IN {{names}} GROUP BY p.name"
    );
    super::fetch_for_names(conn, &sql, names).await
}

/// What a package's index document says besides its versions: its state,
/// why it is obsolete, and the serial its document last changed at (none
/// when it has no document: no stable version, or removed).
#[derive(Clone, Debug, FromRow)]
pub struct DocumentHead {
    pub package_id: i64,
    pub name: String,
    pub state: PackageState,
    pub obsolete_reason: Option<String>,
    pub replacement: Option<String>,
    pub serial: Option<i64>,
}

/// The document heads of the named packages (those that exist).
pub async fn document_heads(conn: &mut Conn, names: &[&str]) -> sqlx::Result<Vec<DocumentHead>> {
    super::fetch_for_names(
        conn,
        "SELECT p.id AS package_id, p.name, p.state, p.obsolete_reason, p.replacement, d.serial \
         FROM packages p LEFT JOIN index_documents d ON d.package_id = p.id \
         WHERE p.name IN {names}",
        names,
    )
    .await
}

/// A package's index document as stored: the serial it last changed at,
/// the sha256 of its bytes (its `ETag`) and the bytes.
#[derive(Clone, Debug, FromRow)]
pub struct StoredDocument {
    pub name: String,
    pub serial: i64,
    pub sha256: String,
    pub body: String,
}

/// A document to store for a package: [`put_documents`].
pub struct NewDocument<'a> {
    pub package_id: i64,
    pub serial: i64,
    pub sha256: &'a str,
    pub body: &'a str,
}

/// Documents per statement of [`put_documents`] (a few megabytes of JSON).
const DOCUMENTS_PER_STATEMENT: usize = 1000;

/// Stores the documents `docs` (in the transaction of the change that
/// made them, so that a reader sees every document of one change or none),
/// a thousand in one JSON parameter.
pub async fn put_documents(conn: &mut Conn, docs: &[NewDocument<'_>]) -> sqlx::Result<()> {
    let rows = super::json_rows(
        Backend::of_conn(conn),
        1,
        &[
            ("package_id", "BIGINT"),
            ("serial", "BIGINT"),
            ("sha256", "TEXT"),
            ("body", "TEXT"),
        ],
    );
    // `WHERE true` tells SQLite's parser the ON CONFLICT is the upsert's.
    let sql = format!(
        "INSERT INTO index_documents (package_id, serial, sha256, body) \
         SELECT r.package_id, r.serial, r.sha256, r.body FROM {rows} AS r WHERE true \
         ON CONFLICT (package_id) DO UPDATE SET serial = excluded.serial, \
         sha256 = excluded.sha256, body = excluded.body"
    );
    for chunk in docs.chunks(DOCUMENTS_PER_STATEMENT) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|d| {
                serde_json::json!({
                    "package_id": d.package_id,
                    "serial": d.serial,
                    "sha256": d.sha256,
                    "body": d.body,
                })
            })
            .collect();
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The stored document of the package `name`.
pub async fn document(conn: &mut Conn, name: &str) -> sqlx::Result<Option<StoredDocument>> {
    sqlx::query_as(
        "SELECT p.name, d.serial, d.sha256, d.body FROM index_documents d \
         JOIN packages p ON p.id = d.package_id WHERE p.name = $1 AND d.body IS NOT NULL",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// The stored document bodies of the named packages (those that have one).
pub async fn bodies_of(conn: &mut Conn, names: &[&str]) -> sqlx::Result<Vec<(String, String)>> {
    super::fetch_for_names(
        conn,
        "SELECT p.name, d.body FROM index_documents d JOIN packages p ON p.id = d.package_id \
         WHERE p.name IN {names} AND d.body IS NOT NULL",
        names,
    )
    .await
}

/// Up to `limit` stored documents by package name, after `after`: how the
/// whole index is read page by page from one snapshot.
pub async fn documents_after(
    conn: &mut Conn,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<StoredDocument>> {
    sqlx::query_as(
        "SELECT p.name, d.serial, d.sha256, d.body FROM index_documents d \
         JOIN packages p ON p.id = d.package_id WHERE p.name > $1 AND d.body IS NOT NULL \
         ORDER BY p.name LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Up to `limit` packages whose document has no body yet (it was a file,
/// before the documents moved into the database), by name.
pub async fn unwritten_documents(conn: &mut Conn, limit: i64) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT p.name FROM index_documents d JOIN packages p ON p.id = d.package_id \
         WHERE d.body IS NULL ORDER BY p.name LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Forgets the documents of `package_ids` (removed packages).
pub async fn drop_documents(conn: &mut Conn, package_ids: &[i64]) -> sqlx::Result<()> {
    for chunk in package_ids.chunks(CHUNK) {
        let sql = format!(
            "DELETE FROM index_documents WHERE package_id IN ({})",
            marks(chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}
