//! Where a check finds the archives it unpacks: on this machine's disk for
//! a server and its local workers, or fetched from the server over HTTP
//! (cached and verified by sha256) for a worker that shares no disk with it.

use std::path::PathBuf;

use anyhow::Context;

use super::App;
use crate::db::{self, uploads::UploadRow};

/// The archive of an upload under check.
pub async fn upload_archive(app: &App, row: &UploadRow) -> anyhow::Result<PathBuf> {
    match &app.remote {
        None => Ok(app.storage.blob_path(&row.sha256)),
        Some(remote) => {
            remote
                .fetch(&format!("/api/v1/uploads/{}/archive", row.id), &row.sha256)
                .await
        }
    }
}

/// The archive of stable version `name` `version`.
pub async fn stable_archive(app: &App, name: &str, version: &str) -> anyhow::Result<PathBuf> {
    let Some(remote) = &app.remote else {
        return Ok(app.stable.archive_path(name, version));
    };
    let sha256 = {
        let mut conn = app.db.pool().acquire().await?;
        db::stable::version(&mut conn, name, version)
            .await?
            .map(|v| v.sha256)
            .with_context(|| format!("{name} {version} is not in stable"))?
    };
    remote
        .fetch(
            &format!("/api/v1/packages/{name}/{version}/archive"),
            &sha256,
        )
        .await
}

/// The archive of pending upload `upload_id` (one ahead in the queue that a
/// check's base assumes).
pub async fn pending_archive(app: &App, upload_id: i64) -> anyhow::Result<PathBuf> {
    let row = {
        let mut conn = app.db.pool().acquire().await?;
        db::uploads::get(&mut conn, upload_id)
            .await?
            .with_context(|| format!("upload {upload_id} vanished"))?
    };
    upload_archive(app, &row).await
}
