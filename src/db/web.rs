//! What the web pages keep and search: sign-in sessions (by the sha256 of
//! the cookie's id), and the package search index (`package_search`, kept
//! by triggers on `versions`: SQLite FTS5, PostgreSQL `tsvector`).

use sqlx::FromRow;

use super::users::UserRow;
use super::{Backend, Conn, now_ms};

/// A session's user and the CSRF token its forms carry.
#[derive(Clone, Debug, FromRow)]
pub struct SessionRow {
    pub id: i64,
    pub email: String,
    pub is_operator: i64,
    pub is_worker: i64,
    pub created_at: i64,
    pub csrf: String,
}

impl SessionRow {
    pub fn user(&self) -> UserRow {
        UserRow {
            id: self.id,
            email: self.email.clone(),
            is_operator: self.is_operator,
            is_worker: self.is_worker,
            created_at: self.created_at,
        }
    }
}

/// A new session of `user_id`, signed in with token `token_id`.
pub async fn insert_session(
    conn: &mut Conn,
    id_hash: &str,
    user_id: i64,
    token_id: i64,
    csrf: &str,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO web_sessions (id_hash, user_id, token_id, csrf, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id_hash)
    .bind(user_id)
    .bind(token_id)
    .bind(csrf)
    .bind(now_ms())
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The unexpired session whose id hashes to `id_hash`.
pub async fn find_session(conn: &mut Conn, id_hash: &str) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.is_operator, u.is_worker, u.created_at, s.csrf \
         FROM web_sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id_hash = $1 AND s.expires_at > $2",
    )
    .bind(id_hash)
    .bind(now_ms())
    .fetch_optional(conn)
    .await
}

pub async fn delete_session(conn: &mut Conn, id_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets the sessions that expired; returns how many.
pub async fn delete_expired_sessions(conn: &mut Conn) -> sqlx::Result<u64> {
    Ok(
        sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// A stable package as the package listing shows it.
#[derive(Clone, Debug, FromRow)]
pub struct ListedRow {
    pub name: String,
    pub version: String,
    pub description: String,
    pub state: String,
}

/// Up to `limit` stable packages by name, from after `after`.
pub async fn list_packages(
    conn: &mut Conn,
    backend: Backend,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<ListedRow>> {
    let sql = match backend {
        // CROSS JOIN keeps SQLite from scanning the whole index first: it
        // walks the names in order and looks each up by rowid.
        Backend::Sqlite => {
            "SELECT s.name, s.version, s.description, p.state FROM packages p \
             CROSS JOIN package_search s ON s.rowid = p.id \
             WHERE p.name > $1 ORDER BY p.name LIMIT $2"
        }
        Backend::Postgres => {
            "SELECT s.name, s.version, s.description, p.state FROM packages p \
             JOIN package_search s ON s.package_id = p.id \
             WHERE p.name > $1 ORDER BY p.name LIMIT $2"
        }
    };
    sqlx::query_as(sql)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Up to `limit` stable packages matching every word of `words` (each a
/// prefix of a word of the name or the description), from `offset`: the
/// exact name first, then the names holding the first word, then by name.
/// (Not by a relevance score: scoring every match of a common word costs
/// what a page may not, at ten times crates.io's size.)
pub async fn search_packages(
    conn: &mut Conn,
    backend: Backend,
    words: &[String],
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<ListedRow>> {
    let exact = words.join("-");
    let first = words.first().cloned().unwrap_or_default();
    let (sql, query) = match backend {
        // Words are made of letters and digits only (see the service), so
        // quoting them is all the escaping either query language needs.
        Backend::Sqlite => (
            "SELECT s.name, s.version, s.description, p.state FROM package_search s \
             JOIN packages p ON p.id = s.rowid \
             WHERE package_search MATCH $1 \
             ORDER BY (s.name = $2) DESC, (instr(s.name, $5) = 0), s.name LIMIT $3 OFFSET $4",
            words
                .iter()
                .map(|w| format!("\"{w}\"*"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Backend::Postgres => (
            "SELECT s.name, s.version, s.description, p.state FROM package_search s \
             JOIN packages p ON p.id = s.package_id \
             WHERE s.document @@ to_tsquery('simple', $1) \
             ORDER BY (s.name = $2) DESC, (strpos(s.name, $5) = 0), s.name LIMIT $3 OFFSET $4",
            words
                .iter()
                .map(|w| format!("{w}:*"))
                .collect::<Vec<_>>()
                .join(" & "),
        ),
    };
    sqlx::query_as(sql)
        .bind(query)
        .bind(exact)
        .bind(limit)
        .bind(offset)
        .bind(first)
        .fetch_all(conn)
        .await
}

/// How many packages are in the search index (stable packages).
pub async fn count_packages(conn: &mut Conn, backend: Backend) -> sqlx::Result<i64> {
    // Counting an FTS5 table reads every document; its content table (a
    // plain table FTS5 keeps beside it, `<name>_content`) has a row each.
    let sql = match backend {
        Backend::Sqlite => "SELECT COUNT(*) FROM package_search_content",
        Backend::Postgres => "SELECT COUNT(*) FROM package_search",
    };
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(conn).await?;
    Ok(n)
}

/// The build checks of a package's stable versions: what their pages show
/// as build metadata.
#[derive(Clone, Debug, FromRow)]
pub struct VersionBuildRow {
    pub version: String,
    pub platform: String,
    pub metadata: Option<String>,
}

pub async fn version_builds(conn: &mut Conn, name: &str) -> sqlx::Result<Vec<VersionBuildRow>> {
    sqlx::query_as(
        "SELECT v.version, c.platform, c.metadata FROM versions v \
         JOIN packages p ON p.id = v.package_id \
         JOIN checks c ON c.upload_id = v.upload_id \
         WHERE p.name = $1 AND c.kind = 'build' ORDER BY v.id, c.platform",
    )
    .bind(name)
    .fetch_all(conn)
    .await
}

/// An upload that got its verdict (or was superseded), for the queue page.
#[derive(Clone, Debug, FromRow)]
pub struct RecentRow {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub state: String,
    pub updated_at: i64,
}

/// The latest decided uploads, newest first; only `uploader`'s when given.
pub async fn recent_verdicts(
    conn: &mut Conn,
    uploader: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<RecentRow>> {
    sqlx::query_as(
        "SELECT u.id, p.name, u.version, u.state, u.updated_at FROM uploads u \
         JOIN packages p ON p.id = u.package_id \
         WHERE u.state IN ('accepted', 'rejected') AND ($1 < 0 OR u.uploader_id = $1) \
         ORDER BY u.updated_at DESC, u.id DESC LIMIT $2",
    )
    .bind(uploader.unwrap_or(-1))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The pending uploads `uploader` sent.
pub async fn pending_of_uploader(conn: &mut Conn, uploader: i64) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM uploads WHERE uploader_id = $1 AND state IN ('queued', 'checking')",
    )
    .bind(uploader)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The id of the token whose hash is `token_hash`.
pub async fn token_id(conn: &mut Conn, token_hash: &str) -> sqlx::Result<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM api_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|(id,)| id))
}

/// One of a user's API tokens (never the token itself: only its hash is kept).
#[derive(Clone, Debug, FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

pub async fn tokens_of(conn: &mut Conn, user_id: i64) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(
        "SELECT id, created_at, last_used_at FROM api_tokens WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Deletes token `id` of `user_id` (its sessions go with it); whether it was theirs.
pub async fn delete_token(conn: &mut Conn, user_id: i64, id: i64) -> sqlx::Result<bool> {
    Ok(
        sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// The names of the packages `user_id` owns.
pub async fn owned_packages(conn: &mut Conn, user_id: i64) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT p.name FROM owners o JOIN packages p ON p.id = o.package_id \
         WHERE o.user_id = $1 ORDER BY p.name",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}
