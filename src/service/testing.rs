//! The testing channel (SPEC section 10, "Check states"): when the operator
//! turns it on (`[testing] publish = true`), uploads still being checked
//! whose `validate` and `resolve` checks passed can be listed and
//! downloaded, marked unchecked. They are never in the stable index; an
//! upload leaves the channel when it is rejected, superseded or cancelled
//! (it is no longer pending), and joins stable when accepted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::authz::{self, Action, Denied};
use super::users::User;
use super::{App, format_time};
use crate::db;

/// What every download from the channel says, as the `Holdq-Unchecked`
/// header and on the command line.
pub const UNCHECKED: &str = "not in stable; checks running";

/// One unchecked upload in `GET /api/v1/testing/index`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestingVersion {
    pub name: String,
    pub version: String,
    pub upload: i64,
    pub sha256: String,
    pub size_bytes: i64,
    pub dependencies: BTreeMap<String, String>,
    /// Where to download it (relative to the server).
    pub archive: String,
    pub uploaded_at: String,
}

/// The testing channel: `{"unchecked": "...", "packages": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestingIndex {
    pub unchecked: String,
    pub packages: Vec<TestingVersion>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("this server publishes no testing channel (an operator sets [testing] publish = true)")]
    Off,
    #[error(
        "{name} {version} is not in the testing channel (not pending with validate and resolve passed)"
    )]
    NotFound { name: String, version: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for TestingError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

fn allowed(app: &App, viewer: Option<&User>) -> Result<(), TestingError> {
    authz::authorize(viewer, Action::ReadQueue, None)?;
    if !app.config.testing.publish {
        return Err(TestingError::Off);
    }
    Ok(())
}

fn view(row: db::testing::TestingRow) -> TestingVersion {
    TestingVersion {
        archive: format!("/api/v1/testing/{}/{}/archive", row.name, row.version),
        dependencies: super::index::dependencies_in(&row.manifest),
        uploaded_at: format_time(row.created_at),
        name: row.name,
        version: row.version,
        upload: row.upload_id,
        sha256: row.sha256,
        size_bytes: row.size_bytes,
    }
}

/// The channel as `viewer` may see it.
pub async fn index(app: &App, viewer: Option<&User>) -> Result<TestingIndex, TestingError> {
    allowed(app, viewer)?;
    let mut conn = app.db.pool().acquire().await?;
    let rows = db::testing::all(&mut conn).await?;
    Ok(TestingIndex {
        unchecked: UNCHECKED.to_owned(),
        packages: rows.into_iter().map(view).collect(),
    })
}

/// The archive of `name` `version` in the channel, and what it is.
pub async fn archive(
    app: &App,
    viewer: Option<&User>,
    name: &str,
    version: &str,
) -> Result<(PathBuf, TestingVersion), TestingError> {
    allowed(app, viewer)?;
    let mut conn = app.db.pool().acquire().await?;
    let row = db::testing::find(&mut conn, name, version)
        .await?
        .ok_or_else(|| TestingError::NotFound {
            name: name.to_owned(),
            version: version.to_owned(),
        })?;
    Ok((app.storage.blob_path(&row.sha256), view(row)))
}

/// What the page of an upload in the channel says of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestingBanner {
    /// [`UNCHECKED`].
    pub unchecked: &'static str,
    /// Where to download it (relative to the server; with an API token).
    pub archive: String,
}

/// The banner of upload `id`'s page when it is in the channel (the page
/// is shown to whoever may see the queue, as the channel is).
pub async fn banner(app: &App, id: i64) -> Result<Option<TestingBanner>, sqlx::Error> {
    if !app.config.testing.publish {
        return Ok(None);
    }
    let mut conn = app.db.pool().acquire().await?;
    let row = db::testing::of_upload(&mut conn, id).await?;
    Ok(row.map(|row| TestingBanner {
        unchecked: UNCHECKED,
        archive: view(row).archive,
    }))
}
