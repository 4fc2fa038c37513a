//! Which pending uploads an upload's checks assumed would be accepted (the
//! uploads ahead of it in its bases), so that "who waits on N" is one query.

use super::Conn;

/// Records that `upload_id` assumed each of `assumed` (kept if already there).
pub async fn add(conn: &mut Conn, upload_id: i64, assumed: &[i64]) -> sqlx::Result<()> {
    for &id in assumed {
        sqlx::query(
            "INSERT INTO upload_assumptions (upload_id, assumed_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(upload_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Forgets every assumption of `upload_id` (its bases are being redone).
pub async fn clear(conn: &mut Conn, upload_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM upload_assumptions WHERE upload_id = $1")
        .bind(upload_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The uploads being checked that assumed `assumed_id`.
pub async fn waiting_on(conn: &mut Conn, assumed_id: i64) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT a.upload_id FROM upload_assumptions a JOIN uploads u ON u.id = a.upload_id \
         WHERE a.assumed_id = $1 AND u.state = 'checking' ORDER BY a.upload_id",
    )
    .bind(assumed_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// An upload assumed by another, with where it stands.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Assumed {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub state: crate::domain::UploadState,
}

/// The uploads `upload_id` assumed, with their states.
pub async fn of_upload(conn: &mut Conn, upload_id: i64) -> sqlx::Result<Vec<Assumed>> {
    sqlx::query_as(
        "SELECT u.id, p.name, u.version, u.state FROM upload_assumptions a \
         JOIN uploads u ON u.id = a.assumed_id JOIN packages p ON p.id = u.package_id \
         WHERE a.upload_id = $1 ORDER BY u.id",
    )
    .bind(upload_id)
    .fetch_all(conn)
    .await
}
