//! Uploading a package into the holding queue (SPEC section 3): receive and
//! inspect the archive, then, in one transaction, apply ownership,
//! obsolescence and immutability, supersede the package's pending upload,
//! and queue the new one at the back.

use std::fmt;

use bytes::Bytes;
use futures::Stream;
use semver::Version;
use serde::Serialize;

use super::App;
use super::authz::{self, Action, Denied};
use super::users::User;
use crate::db::{self, events::NewEvent, uploads::NewUpload};
use crate::domain::{Manifest, PackageState, UploadState};
use crate::storage::archive::ArchiveError;
use crate::storage::receive::{self, ReceiveError};

/// What the uploader is told: the upload's id, state and queue position.
#[derive(Clone, Debug, Serialize)]
pub struct UploadReceipt {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub state: UploadState,
    pub position: i64,
    pub sha256: String,
    pub size_bytes: u64,
    /// Pending uploads of the same package that this one superseded.
    pub superseded: Vec<i64>,
}

/// Why an upload was refused; nothing of it is stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was cut off: {0}")]
    Body(String),
    #[error("X-Checksum-Sha256 must be 64 hexadecimal digits, got {0:?}")]
    BadChecksumHeader(String),
    #[error("sha256 mismatch: the header says {expected}, the body hashes to {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(
        "build.platforms names {platform:?}, which this server does not know (it knows: {known})"
    )]
    UnknownPlatform { platform: String, known: String },
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("{name:?} is obsolete and accepts no new uploads")]
    Obsolete { name: String },
    #[error(
        "{name:?} was removed from the stable repository (obsolete, then unused); its name is retired"
    )]
    Removed { name: String },
    #[error(
        "{name} {version} is already in the stable repository; a stable version can never be uploaded again, even with identical bytes: bump the version"
    )]
    VersionExists { name: String, version: String },
    #[error("{name} {version} is lower than {highest}, the highest stable version")]
    VersionTooLow {
        name: String,
        version: String,
        highest: String,
    },
    #[error("there is no upload group {0}")]
    NoSuchGroup(i64),
    #[error("upload group {id} is {state}: it takes no more uploads")]
    GroupNotOpen {
        id: i64,
        state: crate::domain::upload::GroupState,
    },
    #[error("upload group {id} already holds an upload of {name}; a group holds one per package")]
    GroupHasPackage { id: i64, name: String },
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for UploadError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<db::TransitionError> for UploadError {
    fn from(e: db::TransitionError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<ReceiveError> for UploadError {
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::TooLarge { limit } => Self::TooLarge { limit },
            ReceiveError::Body(m) => Self::Body(m),
            ReceiveError::Io(e) => {
                Self::Internal(anyhow::Error::new(e).context("storing the upload"))
            }
        }
    }
}

/// Receives an archive from `body` and queues it for `user`.
pub async fn upload_package<S, E>(
    app: &App,
    user: &User,
    body: S,
    expected_sha256: Option<&str>,
) -> Result<UploadReceipt, UploadError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    upload_to_group(app, user, body, expected_sha256, None).await
}

/// [`upload_package`] as a member of upload group `group` (SPEC section
/// 3, rule 8): a member refused here refuses the whole group.
pub async fn upload_to_group<S, E>(
    app: &App,
    user: &User,
    body: S,
    expected_sha256: Option<&str>,
    group: Option<i64>,
) -> Result<UploadReceipt, UploadError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let result = receive_and_queue(app, user, body, expected_sha256, group).await;
    if let (Some(group), Err(e)) = (group, &result)
        && !matches!(
            e,
            UploadError::NoSuchGroup(_)
                | UploadError::GroupNotOpen { .. }
                | UploadError::Internal(_)
        )
    {
        super::groups::refuse(app, user, group, &format!("a member was refused: {e}")).await?;
    }
    result
}

async fn receive_and_queue<S, E>(
    app: &App,
    user: &User,
    body: S,
    expected_sha256: Option<&str>,
    group: Option<i64>,
) -> Result<UploadReceipt, UploadError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    // Before the body is read: whether this token may upload at all (a
    // new name becomes its uploader's).
    let any_new = Some(authz::Package {
        name: "",
        owned: true,
    });
    authz::authorize(Some(user), Action::Upload, any_new)?;
    let expected = expected_sha256.map(parse_sha256).transpose()?;
    let received = receive::receive(
        body,
        &app.storage.incoming_dir(),
        app.config.limits.upload_bytes.0,
        app.archive_limits(),
    )
    .await?;
    if let Some(expected) = expected
        && expected != received.sha256
    {
        return Err(UploadError::ChecksumMismatch {
            expected,
            actual: received.sha256,
        });
    }
    let summary = received.inspection?;
    check_platforms(app, &summary.manifest)?;

    let receipt = queue_upload(
        app,
        user,
        &summary.manifest,
        (&received.sha256, received.size),
        received.file,
        group,
    )
    .await?;
    tracing::info!(
        upload.id = receipt.id,
        package.name = %receipt.name,
        package.version = %receipt.version,
        upload.position = receipt.position,
        upload.superseded = ?receipt.superseded,
        "upload queued"
    );
    Ok(receipt)
}

fn parse_sha256(header: &str) -> Result<String, UploadError> {
    let hex = header.trim().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(UploadError::BadChecksumHeader(header.to_owned()))
    }
}

fn check_platforms(app: &App, manifest: &Manifest) -> Result<(), UploadError> {
    for platform in manifest.build.platforms.iter().flatten() {
        if app.config.platform(platform.as_str()).is_none() {
            let known: Vec<&str> = app
                .config
                .platforms
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            return Err(UploadError::UnknownPlatform {
                platform: platform.to_string(),
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

/// The transaction of SPEC section 3. The archive is moved into the blob
/// store (durably) before the commit, so a committed upload always has its
/// archive; a crash in between leaves an unreferenced blob, never a lost one.
async fn queue_upload(
    app: &App,
    user: &User,
    manifest: &Manifest,
    (sha256, size): (&str, u64),
    file: tempfile::NamedTempFile,
    group: Option<i64>,
) -> Result<UploadReceipt, UploadError> {
    let name = manifest.name.as_str();
    let version = manifest.version.to_string();
    let mut tx = app.db.begin_write().await?;
    let package_id = admit(app, &mut tx, user, manifest, group).await?;

    let manifest_json = serde_json::to_string(manifest).map_err(anyhow::Error::new)?;
    let id = db::uploads::insert(
        &mut tx,
        NewUpload {
            package_id,
            version: &version,
            sha256,
            size_bytes: size as i64,
            manifest_json: &manifest_json,
            uploader_id: user.id,
            group_id: group,
        },
    )
    .await?;
    db::events::record(
        &mut tx,
        NewEvent {
            kind: "upload.queued",
            package_id: Some(package_id),
            upload_id: Some(id),
            actor_id: Some(user.id),
            detail: serde_json::json!({ "version": version, "sha256": sha256 }),
        },
    )
    .await?;
    let superseded = supersede_older(app, &mut tx, user, (package_id, id)).await?;
    if let Some(group) = group {
        super::groups::submit_when_complete(&mut tx, group).await?;
    }

    let storage = app.storage.clone();
    let hash = sha256.to_owned();
    tokio::task::spawn_blocking(move || {
        let (_, path) = file.keep().map_err(|e| anyhow::Error::new(e.error))?;
        storage.keep_blob(&path, &hash).inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })
    })
    .await
    .map_err(anyhow::Error::new)??;

    tx.commit().await?;
    for &old in &superseded {
        app.halts.halt(old);
    }
    app.wake.notify_one();
    // Uploads whose bases assumed a superseded one are rebased (the sweep
    // would do it too, later).
    for &old in &superseded {
        if let Err(e) = super::verdict::decide_waiting_on(app, old).await {
            tracing::warn!(
                upload.id = old,
                error = format!("{e:#}"),
                "uploads waiting on a superseded one not yet rebased"
            );
        }
    }

    let mut conn = app.db.pool().acquire().await?;
    let position = db::uploads::position(&mut conn, id).await?;
    Ok(UploadReceipt {
        id,
        name: name.into(),
        version,
        state: UploadState::Queued,
        position,
        sha256: sha256.into(),
        size_bytes: size,
        superseded,
    })
}

/// Inside the upload's transaction: the package exists (made, and owned by
/// `user`, on a first upload), is active, `user` may upload to it, the
/// version is new, and the group (if any) takes it. The package's id.
async fn admit(
    app: &App,
    tx: &mut db::Tx,
    user: &User,
    manifest: &Manifest,
    group: Option<i64>,
) -> Result<i64, UploadError> {
    let name = manifest.name.as_str();
    let created = db::packages::insert_if_missing(tx, name).await?;
    let package = db::packages::lock_by_name(tx, name, app.db.for_update())
        .await?
        .ok_or_else(|| anyhow::anyhow!("package {name} vanished inside its transaction"))?;
    match package.state {
        PackageState::Obsolete => return Err(UploadError::Obsolete { name: name.into() }),
        PackageState::Removed => return Err(UploadError::Removed { name: name.into() }),
        PackageState::Active => {}
    }
    if created {
        db::packages::add_owner(tx, package.id, user.id).await?;
    } else {
        authz::authorize_on(tx, user, Action::Upload, package.id, name)
            .await
            .map_err(|e| match e {
                authz::AuthzError::Denied(d) => UploadError::Denied(d),
                authz::AuthzError::Db(e) => UploadError::Internal(e.into()),
            })?;
    }
    check_immutability(tx, package.id, manifest).await?;
    if let Some(group) = group {
        super::groups::join(app, tx, user, group, name).await?;
    }
    Ok(package.id)
}

/// Inside the transaction of upload `id`: the older pending uploads of its
/// package leave the queue silently, superseded (their checks halt), with
/// the groups they belonged to. The uploads superseded.
async fn supersede_older(
    app: &App,
    tx: &mut db::Tx,
    user: &User,
    (package_id, id): (i64, i64),
) -> Result<Vec<i64>, UploadError> {
    let mut superseded: Vec<i64> = db::uploads::pending_of_package(tx, package_id)
        .await?
        .into_iter()
        .filter(|&old| old != id)
        .collect();
    db::uploads::mark_superseded(tx, &superseded, id).await?;
    for &old in &superseded {
        db::checks::halt_upload(tx, app.db.backend(), old).await?;
    }
    // Superseding a member of a group supersedes the whole group, silently.
    superseded.extend(super::groups::supersede_groups_of(app, tx, &superseded, id).await?);
    for &old in &superseded {
        db::events::record(
            tx,
            NewEvent {
                kind: "upload.superseded",
                package_id: Some(package_id),
                upload_id: Some(old),
                actor_id: Some(user.id),
                detail: serde_json::json!({ "by": id }),
            },
        )
        .await?;
    }
    Ok(superseded)
}

/// A stable version is never uploaded again, and never undercut.
async fn check_immutability(
    tx: &mut db::Tx,
    package_id: i64,
    manifest: &Manifest,
) -> Result<(), UploadError> {
    let stable = db::packages::stable_versions(tx, package_id).await?;
    let mut highest: Option<Version> = None;
    for row in stable {
        let Ok(v) = Version::parse(&row.version) else {
            continue;
        };
        if v.cmp_precedence(&manifest.version).is_eq() {
            return Err(UploadError::VersionExists {
                name: manifest.name.to_string(),
                version: row.version,
            });
        }
        if highest.as_ref().is_none_or(|h| v > *h) {
            highest = Some(v);
        }
    }
    match highest {
        Some(h) if h > manifest.version => Err(UploadError::VersionTooLow {
            name: manifest.name.to_string(),
            version: manifest.version.to_string(),
            highest: h.to_string(),
        }),
        _ => Ok(()),
    }
}
