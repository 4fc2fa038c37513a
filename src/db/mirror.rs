//! A follower's copy of its primary's index (SPEC section 10, "Mirrors"):
//! each package's document byte for byte, and where the follower stands.

use sqlx::FromRow;

use super::{Conn, now_ms};

/// A mirrored index document: the primary's bytes, as it served them.
pub use super::stable::StoredDocument as MirrorDocument;

/// Where the follower stands against its primary.
#[derive(Clone, Debug, FromRow)]
pub struct MirrorState {
    pub primary_url: String,
    pub primary_serial: i64,
    pub synced_at: i64,
    pub snapshots: i64,
}

pub async fn document(conn: &mut Conn, name: &str) -> sqlx::Result<Option<MirrorDocument>> {
    sqlx::query_as("SELECT name, serial, sha256, body FROM mirror_documents WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Up to `limit` documents by name, after `after`.
pub async fn documents_after(
    conn: &mut Conn,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<MirrorDocument>> {
    sqlx::query_as(
        "SELECT name, serial, sha256, body FROM mirror_documents WHERE name > $1 \
         ORDER BY name LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Sets `name`'s document (`None`: it has none any more).
pub async fn put_document(
    conn: &mut Conn,
    name: &str,
    document: Option<(i64, &str, &str)>,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM mirror_documents WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    if let Some((serial, sha256, body)) = document {
        sqlx::query(
            "INSERT INTO mirror_documents (name, serial, sha256, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(serial)
        .bind(sha256)
        .bind(body)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Forgets every document and change (before applying a snapshot).
pub async fn clear(conn: &mut Conn) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM mirror_documents")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM stable_changes")
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the follower's stable serial (the primary's, once applied).
pub async fn set_serial(conn: &mut Conn, serial: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE stable_state SET serial = $1 WHERE id = 1")
        .bind(serial)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn state(conn: &mut Conn) -> sqlx::Result<Option<MirrorState>> {
    sqlx::query_as(
        "SELECT primary_url, primary_serial, synced_at, snapshots FROM mirror_state WHERE id = 1",
    )
    .fetch_optional(conn)
    .await
}

/// Records that `primary_url` answered at `primary_serial` (and a restart
/// from its snapshot when `snapshot`).
pub async fn record_contact(
    conn: &mut Conn,
    primary_url: &str,
    primary_serial: i64,
    snapshot: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO mirror_state (id, primary_url, primary_serial, synced_at, snapshots) \
         VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET primary_url = $1, \
         primary_serial = $2, synced_at = $3, snapshots = mirror_state.snapshots + $4",
    )
    .bind(primary_url)
    .bind(primary_serial)
    .bind(now_ms())
    .bind(i64::from(snapshot))
    .execute(conn)
    .await?;
    Ok(())
}
