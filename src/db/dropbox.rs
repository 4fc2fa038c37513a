//! Drop-box manifests already taken in, by the sha256 of their bytes, and
//! the uploads each of their archives became.

use super::{Conn, now_ms};

/// Records the batch of manifest `sha256` (once); false when it existed.
pub async fn insert_batch(
    conn: &mut Conn,
    sha256: &str,
    name: &str,
    group_id: Option<i64>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO dropbox_batches (manifest_sha256, name, group_id, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (manifest_sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(name)
    .bind(group_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The upload group of batch `sha256`, when it has one; `None` when there
/// is no such batch.
pub async fn batch_group(conn: &mut Conn, sha256: &str) -> sqlx::Result<Option<Option<i64>>> {
    let row: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT group_id FROM dropbox_batches WHERE manifest_sha256 = $1")
            .bind(sha256)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(g,)| g))
}

/// Inside the transaction that queued `upload_id`: archive `file` of batch
/// `sha256` became it. False when it already had become one.
pub async fn record_upload(
    conn: &mut Conn,
    sha256: &str,
    file: &str,
    upload_id: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO dropbox_uploads (manifest_sha256, file, upload_id) VALUES ($1, $2, $3) \
         ON CONFLICT (manifest_sha256, file) DO NOTHING",
    )
    .bind(sha256)
    .bind(file)
    .bind(upload_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The archives of batch `sha256` queued so far, with their uploads.
pub async fn uploads_of(conn: &mut Conn, sha256: &str) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT file, upload_id FROM dropbox_uploads WHERE manifest_sha256 = $1 ORDER BY file",
    )
    .bind(sha256)
    .fetch_all(conn)
    .await
}
