//! The testing channel's query: uploads still being checked whose
//! `validate` and `resolve` checks have all passed.

use sqlx::FromRow;

use super::Conn;

/// A pending upload published in the testing channel.
#[derive(Clone, Debug, FromRow)]
pub struct TestingRow {
    pub upload_id: i64,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub manifest: String,
    pub created_at: i64,
}

const SELECT: &str = "SELECT u.id AS upload_id, p.name, u.version, u.sha256, u.size_bytes, \
     u.manifest, u.created_at FROM uploads u JOIN packages p ON p.id = u.package_id \
     WHERE u.state IN ('queued', 'checking') \
     AND EXISTS (SELECT 1 FROM checks c WHERE c.upload_id = u.id AND c.kind = 'validate') \
     AND EXISTS (SELECT 1 FROM checks c WHERE c.upload_id = u.id AND c.kind = 'resolve') \
     AND NOT EXISTS (SELECT 1 FROM checks c WHERE c.upload_id = u.id \
         AND c.kind IN ('validate', 'resolve') AND c.state <> 'passed')";

/// Every upload in the testing channel, by package name.
pub async fn all(conn: &mut Conn) -> sqlx::Result<Vec<TestingRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} ORDER BY p.name, u.id"
    )))
    .fetch_all(conn)
    .await
}

/// Version `version` of `name` when it is in the testing channel.
pub async fn find(conn: &mut Conn, name: &str, version: &str) -> sqlx::Result<Option<TestingRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} AND p.name = $1 AND u.version = $2 ORDER BY u.id DESC"
    )))
    .bind(name)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// Upload `id` when it is in the testing channel.
pub async fn of_upload(conn: &mut Conn, id: i64) -> sqlx::Result<Option<TestingRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} AND u.id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}
