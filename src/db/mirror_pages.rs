//! What a follower's package pages read (SPEC section 10, "Mirrors"): each
//! mirrored package's record as its primary served it, with the columns its
//! listing and search read, and what each package's latest version depends
//! on (so dependents are answered from the follower's own documents).

use sqlx::FromRow;

use super::Conn;
use super::web::ListedRow;

/// A mirrored package's page record and its listing columns.
#[derive(Clone, Debug, FromRow)]
pub struct PageRow {
    pub name: String,
    /// The latest version its document names ('' when it has none).
    pub version: String,
    pub description: String,
    pub state: String,
    /// The record (JSON) as the primary served it.
    pub record: String,
}

pub async fn page(conn: &mut Conn, name: &str) -> sqlx::Result<Option<PageRow>> {
    sqlx::query_as(
        "SELECT name, version, description, state, record FROM mirror_pages WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Sets `name`'s record (`None`: the primary has none any more).
pub async fn put_page(conn: &mut Conn, name: &str, row: Option<&PageRow>) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM mirror_pages WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    if let Some(row) = row {
        sqlx::query(
            "INSERT INTO mirror_pages (name, version, description, state, record) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(&row.version)
        .bind(&row.description)
        .bind(&row.state)
        .bind(&row.record)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Sets what `name`'s latest version depends on (empty: nothing, or it
/// has no document).
pub async fn put_dependencies(
    conn: &mut Conn,
    name: &str,
    depends_on: &[&str],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM mirror_dependencies WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    for dependency in depends_on {
        sqlx::query("INSERT INTO mirror_dependencies (name, depends_on) VALUES ($1, $2)")
            .bind(name)
            .bind(*dependency)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The mirrored packages whose latest version depends on `name`.
pub async fn dependents(conn: &mut Conn, name: &str) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM mirror_dependencies WHERE depends_on = $1 AND name <> $1")
            .bind(name)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Up to `limit` names, after `after`, of mirrored documents that have no
/// record (mirrored before records were).
pub async fn without_page(conn: &mut Conn, after: &str, limit: i64) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT d.name FROM mirror_documents d LEFT JOIN mirror_pages p ON p.name = d.name \
         WHERE p.name IS NULL AND d.name > $1 ORDER BY d.name LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Forgets every record and dependency (before applying a snapshot).
pub async fn clear(conn: &mut Conn) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM mirror_pages")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM mirror_dependencies")
        .execute(conn)
        .await?;
    Ok(())
}

const LISTED: &str = "SELECT p.name, p.version, p.description, p.state FROM mirror_pages p \
     JOIN mirror_documents d ON d.name = p.name";

/// Up to `limit` mirrored packages with a document, by name, after `after`.
pub async fn list(conn: &mut Conn, after: &str, limit: i64) -> sqlx::Result<Vec<ListedRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{LISTED} WHERE p.name > $1 ORDER BY p.name LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Up to `limit` mirrored packages whose name or description holds every
/// word of `words`, from `offset`: the exact name first, then by name. A
/// plain substring match over the mirrored rows (a follower keeps no search
/// index of its own).
pub async fn search(
    conn: &mut Conn,
    words: &[String],
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<ListedRow>> {
    // Words are letters and digits only (the service splits them so), so
    // none holds a LIKE wildcard; each is bound, never spliced.
    let matches: Vec<String> = (0..words.len())
        .map(|i| {
            let n = i + 4;
            format!(
                "(lower(p.name) LIKE '%' || ${n} || '%' OR lower(p.description) LIKE '%' || ${n} || '%')"
            )
        })
        .collect();
    let condition = if matches.is_empty() {
        "1 = 1".to_owned()
    } else {
        matches.join(" AND ")
    };
    let sql = format!(
        "{LISTED} WHERE {condition} \
         ORDER BY CASE WHEN p.name = $1 THEN 0 ELSE 1 END, p.name LIMIT $2 OFFSET $3"
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(words.join("-"))
        .bind(limit)
        .bind(offset);
    for w in words {
        query = query.bind(w.to_lowercase());
    }
    query.fetch_all(conn).await
}

/// How many mirrored packages have a document (stable packages).
pub async fn count(conn: &mut Conn) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mirror_documents")
        .fetch_one(conn)
        .await?;
    Ok(n)
}
