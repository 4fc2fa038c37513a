//! Resumable uploads (tus 1.0, SPEC section 9; the tupkg way in): a
//! partial upload lives in its owner's temporary space
//! (`tus/<user>/<id>`) within a quota, grows by PATCH chunks that are
//! checked before they count, survives restarts, and expires. Once its
//! last byte arrives it goes through [`upload::upload_file`], the one path
//! every upload takes into the queue.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::App;
use super::authz::{self, Action, Denied};
use super::upload::{self, Origin, UploadError, UploadReceipt};
use super::users::User;
use crate::db::{self, tus::NewTus, tus::TusRow};
use crate::domain::tus::{Checksum, ChecksumAlgorithm, HeaderError, Metadata};
use crate::storage::follow::Follower;
use crate::storage::receive::{Received, link_into};

/// A partial upload as its owner sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TusUpload {
    pub id: String,
    pub length: u64,
    pub offset: u64,
    pub filename: Option<String>,
    pub group: Option<i64>,
    /// The upload it became, once complete.
    pub upload_id: Option<i64>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub expires_at: i64,
}

impl From<TusRow> for TusUpload {
    fn from(r: TusRow) -> Self {
        Self {
            id: r.id,
            length: r.length as u64,
            offset: r.received as u64,
            filename: r.filename,
            group: r.group_id,
            upload_id: r.upload_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// What a PATCH achieved.
#[derive(Debug)]
pub struct Appended {
    pub upload: TusUpload,
    /// Set when this chunk completed the upload and it was queued.
    pub receipt: Option<UploadReceipt>,
}

#[derive(Debug, thiserror::Error)]
pub enum TusError {
    #[error("there is no such resumable upload")]
    NotFound,
    #[error("this resumable upload expired; start it again")]
    Expired,
    #[error("Upload-Length must be a number of bytes, got {0:?}")]
    BadLength(String),
    #[error("Upload-Offset must be a number of bytes, got {0:?}")]
    BadOffset(String),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("the upload of {length} bytes exceeds the limit of {limit} bytes (Tus-Max-Size)")]
    TooLarge { length: u64, limit: u64 },
    #[error(
        "your unfinished uploads would hold {wanted} bytes, over your quota of {quota} bytes: finish or abort some first"
    )]
    QuotaExceeded { wanted: u64, quota: u64 },
    #[error("Upload-Offset is {sent} but the server holds {held} bytes: resume from {held}")]
    OffsetMismatch { sent: u64, held: u64 },
    #[error("the chunk goes past Upload-Length ({length} bytes)")]
    PastLength { length: u64 },
    #[error("the chunk does not match its Upload-Checksum; it was discarded")]
    ChecksumMismatch,
    #[error("this upload is complete already (it became upload {0})")]
    Complete(i64),
    #[error("another request is writing this upload; retry")]
    Busy,
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The completed upload was refused by the checks every upload passes;
    /// it was deleted.
    #[error(transparent)]
    Refused(UploadError),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for TusError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<io::Error> for TusError {
    fn from(e: io::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("the temporary upload space"))
    }
}

/// Parses a header value that must be a byte count.
pub fn parse_bytes(value: &str, bad: fn(String) -> TusError) -> Result<u64, TusError> {
    value.trim().parse().map_err(|_| bad(value.to_owned()))
}

/// Starts a resumable upload of `length` bytes described by `metadata`
/// (the raw `Upload-Metadata` header). An empty upload is complete at once.
pub async fn create(
    app: &App,
    user: &User,
    length: u64,
    metadata: &str,
) -> Result<Appended, TusError> {
    may_resume(user)?;
    let limit = app.config.limits.upload_bytes.0;
    if length > limit {
        return Err(TusError::TooLarge { length, limit });
    }
    let meta: Metadata = crate::domain::tus::parse_metadata(metadata)?;
    if let Some(group) = meta.group {
        super::groups::show(app, user, group)
            .await
            .map_err(|e| match e {
                super::groups::GroupError::Internal(e) => TusError::Internal(e),
                _ => TusError::Refused(UploadError::NoSuchGroup(group)),
            })?;
    }
    let id = new_id();
    let dir = user_dir(app, user.id);
    std::fs::create_dir_all(&dir)?;
    std::fs::File::create(dir.join(&id))?.sync_all()?;

    let mut tx = app.db.begin_write().await?;
    // Serialises one user's creations, so two at once cannot both pass
    // the quota.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM users WHERE id = $1{}",
        app.db.for_update()
    )))
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?;
    let wanted = db::tus::reserved_by(&mut tx, user.id).await? as u64 + length;
    let quota = app.config.tus.quota.0;
    if wanted > quota {
        drop(tx);
        let _ = std::fs::remove_file(dir.join(&id));
        return Err(TusError::QuotaExceeded { wanted, quota });
    }
    db::tus::insert(
        &mut tx,
        NewTus {
            id: &id,
            owner_id: user.id,
            length: length as i64,
            metadata,
            filename: meta.filename.as_deref(),
            sha256: meta.sha256.as_deref(),
            group_id: meta.group,
            expires_at: expires_from_now(app),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tus.id = %id, tus.length = length, "resumable upload created");

    let row = owned_row(app, user, &id).await?;
    if length == 0 {
        let _guard = lock(&id).await?;
        let receipt = finish(app, user, &row).await?;
        return Ok(Appended {
            upload: row.into(),
            receipt: Some(receipt),
        });
    }
    Ok(Appended {
        upload: row.into(),
        receipt: None,
    })
}

/// The partial upload `id` of `user` (HEAD). Someone else's is not found.
pub async fn status(app: &App, user: &User, id: &str) -> Result<TusUpload, TusError> {
    Ok(owned_row(app, user, id).await?.into())
}

/// `user`'s unfinished uploads.
pub async fn list(app: &App, user: &User) -> Result<Vec<TusUpload>, TusError> {
    may_resume(user)?;
    let mut conn = app.db.pool().acquire().await?;
    let now = db::now_ms();
    Ok(db::tus::unfinished_of(&mut conn, user.id)
        .await?
        .into_iter()
        .filter(|r| r.expires_at >= now)
        .map(TusUpload::from)
        .collect())
}

/// Appends `body` at `offset` (PATCH). With a checksum the chunk counts
/// only when it matches; without one, whatever arrived before the client
/// dropped counts. The chunk completing the upload queues it.
pub async fn append<S, E>(
    app: &App,
    user: &User,
    id: &str,
    offset: u64,
    checksum: Option<Checksum>,
    body: S,
) -> Result<Appended, TusError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let _guard = lock(id).await?;
    let row = owned_row(app, user, id).await?;
    if let Some(upload) = row.upload_id {
        return Err(TusError::Complete(upload));
    }
    let held = row.received as u64;
    if offset != held {
        return Err(TusError::OffsetMismatch { sent: offset, held });
    }
    let room = row.length as u64 - held;
    let path = user_dir(app, user.id).join(id);
    if held == 0 {
        follow(app, id, &path);
    }
    let idle = app.config.server.body_timeout;
    let written = write_chunk(path, (held, room), checksum, body, idle).await?;
    let received = held + written.len;
    if written.len > 0
        && !db::tus::advance(
            &mut *app.db.pool().acquire().await?,
            id,
            held as i64,
            received as i64,
            expires_from_now(app),
        )
        .await?
    {
        return Err(TusError::Busy);
    }
    if let Some(f) = FOLLOWERS.lock().expect("tus followers").get(id) {
        f.advance(received);
    }
    written.outcome?;
    let row = owned_row(app, user, id).await?;
    let receipt = if row.received == row.length {
        Some(finish(app, user, &row).await?)
    } else {
        None
    };
    Ok(Appended {
        upload: row.into(),
        receipt,
    })
}

/// Ends a partial upload and deletes its bytes (DELETE).
pub async fn terminate(app: &App, user: &User, id: &str) -> Result<(), TusError> {
    let _guard = lock(id).await?;
    let row = owned_row(app, user, id).await?;
    discard(app, &row).await?;
    tracing::info!(tus.id = %id, "resumable upload terminated");
    Ok(())
}

/// The reconcile sweep's duty: deletes expired partial uploads (and the
/// records of finished ones past their time), and finishes the complete
/// ones a crash left unqueued.
pub async fn sweep(app: &App) -> anyhow::Result<()> {
    let (expired, complete) = {
        let mut conn = app.db.pool().acquire().await?;
        (
            db::tus::expired(&mut conn, db::now_ms()).await?,
            db::tus::complete_unqueued(&mut conn).await?,
        )
    };
    for row in expired {
        let Ok(_guard) = lock(&row.id).await else {
            continue;
        };
        discard(app, &row).await?;
        tracing::info!(tus.id = %row.id, "expired resumable upload removed");
    }
    for row in complete {
        let Some(user) = super::users::find_by_id(&app.db, row.owner_id).await? else {
            continue;
        };
        let Ok(_guard) = lock(&row.id).await else {
            continue;
        };
        // Re-read under the lock: a PATCH may have finished it meanwhile.
        let mut conn = app.db.pool().acquire().await?;
        let Some(row) = db::tus::get(&mut conn, &row.id).await? else {
            continue;
        };
        drop(conn);
        if row.upload_id.is_none() {
            match finish(app, &user, &row).await {
                Ok(_) | Err(TusError::Refused(_)) => {}
                Err(e) => return Err(anyhow::Error::new(e).context("finishing an upload")),
            }
        }
    }
    Ok(())
}

/// Queues a complete upload through the one upload path. Refused, it is
/// deleted; queued, its bytes (now a blob) leave the temporary space and
/// its record stays until it expires, so a client that lost the answer
/// learns the upload id from HEAD.
async fn finish(app: &App, user: &User, row: &TusRow) -> Result<UploadReceipt, TusError> {
    let path = user_dir(app, row.owner_id).join(&row.id);
    let (expected, origin) = (row.sha256.as_deref(), Origin::Tus(&row.id));
    let follower = FOLLOWERS.lock().expect("tus followers").remove(&row.id);
    let followed = match follower {
        Some(f) => f.finish(row.length as u64).await,
        None => None,
    };
    let result = match followed {
        Some((sha256, inspection)) => {
            let received = Received {
                file: link_into(&path, &app.storage.incoming_dir())?,
                sha256,
                size: row.length as u64,
                inspection,
            };
            upload::upload_received(app, user, received, expected, row.group_id, origin).await
        }
        None => upload::upload_file(app, user, &path, expected, row.group_id, origin).await,
    };
    match result {
        Ok(receipt) => {
            remove_bytes(&path)?;
            Ok(receipt)
        }
        Err(UploadError::Internal(e)) => Err(TusError::Internal(e)),
        Err(UploadError::AlreadyQueued(_)) => {
            let mut conn = app.db.pool().acquire().await?;
            let upload = db::tus::get(&mut conn, &row.id)
                .await?
                .and_then(|r| r.upload_id);
            Err(TusError::Complete(upload.unwrap_or_default()))
        }
        Err(refused) => {
            discard(app, row).await?;
            tracing::info!(tus.id = %row.id, error = %refused, "completed resumable upload refused");
            Err(TusError::Refused(refused))
        }
    }
}

/// Deletes a partial upload's record and bytes.
async fn discard(app: &App, row: &TusRow) -> Result<(), TusError> {
    if let Some(f) = FOLLOWERS.lock().expect("tus followers").remove(&row.id) {
        f.abandon();
    }
    let mut conn = app.db.pool().acquire().await?;
    db::tus::delete(&mut conn, &row.id).await?;
    remove_bytes(&user_dir(app, row.owner_id).join(&row.id))?;
    Ok(())
}

fn remove_bytes(path: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The row of `user`'s upload `id`; gone, someone else's or expired, it
/// does not exist for them.
async fn owned_row(app: &App, user: &User, id: &str) -> Result<TusRow, TusError> {
    may_resume(user)?;
    let mut conn = app.db.pool().acquire().await?;
    let row = db::tus::get(&mut conn, id)
        .await?
        .filter(|r| r.owner_id == user.id)
        .ok_or(TusError::NotFound)?;
    if row.expires_at < db::now_ms() {
        return Err(TusError::Expired);
    }
    Ok(row)
}

/// Whether `user` may keep partial uploads at all (a worker's token may
/// not); asked before anything else of a request.
pub fn may_resume(user: &User) -> Result<(), TusError> {
    Ok(authz::authorize(Some(user), Action::ResumeUploads, None)?)
}

fn user_dir(app: &App, user_id: i64) -> PathBuf {
    app.storage.tus_dir().join(user_id.to_string())
}

fn expires_from_now(app: &App) -> i64 {
    db::now_ms() + app.config.tus.expire_after.as_millis() as i64
}

fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The inspections following uploads as they grow, in this process.
static FOLLOWERS: LazyLock<Mutex<HashMap<String, Follower>>> = LazyLock::new(Default::default);

/// Starts inspecting upload `id` as its chunks arrive; without it (it
/// could not start, or the process restarted since) the finish inspects
/// the whole file.
fn follow(app: &App, id: &str, path: &std::path::Path) {
    match Follower::start(path.to_owned(), app.archive_limits()) {
        Ok(f) => {
            let old = FOLLOWERS
                .lock()
                .expect("tus followers")
                .insert(id.to_owned(), f);
            if let Some(old) = old {
                old.abandon();
            }
        }
        Err(e) => tracing::warn!(tus.id = %id, error = %e, "upload not inspected as it grows"),
    }
}

/// How long a PATCH waits for another request on the same upload (a
/// client that reconnects while the server still reads its dropped one).
const LOCK_WAIT: Duration = Duration::from_secs(10);

type Locks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// One writer per partial upload in this process; the database's
/// compare-and-set on the offset guards against other processes.
static LOCKS: LazyLock<Locks> = LazyLock::new(Default::default);

struct Guard {
    id: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut locks = LOCKS.lock().expect("tus locks");
        // Only this guard and the map hold it: nobody waits, forget it.
        if locks
            .get(&self.id)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            locks.remove(&self.id);
        }
    }
}

async fn lock(id: &str) -> Result<Guard, TusError> {
    let mutex = LOCKS
        .lock()
        .expect("tus locks")
        .entry(id.to_owned())
        .or_default()
        .clone();
    let held = tokio::time::timeout(LOCK_WAIT, mutex.lock_owned())
        .await
        .map_err(|_| TusError::Busy)?;
    Ok(Guard {
        id: id.to_owned(),
        _held: held,
    })
}

/// What a chunk left: the bytes that now count, and whether it was whole.
struct Written {
    len: u64,
    outcome: Result<(), TusError>,
}

/// Writes `body` at `from` in the upload's file, at most `room` bytes, on a
/// blocking thread fed by a bounded channel. The file is first cut back to
/// `from` (bytes past the recorded offset are leftovers of a crash). A chunk
/// with a checksum counts only if it all arrived and matches: otherwise the
/// file is cut back again, which discards it as staging it apart would,
/// without writing every byte twice. What counts is synced before it is
/// recorded. A body that sends nothing for `idle` is cut there, as a
/// dropped connection is (an upload may pause between requests, not
/// within one).
async fn write_chunk<S, E>(
    path: PathBuf,
    (from, room): (u64, u64),
    checksum: Option<Checksum>,
    body: S,
    idle: std::time::Duration,
) -> Result<Written, TusError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(32);
    let algorithm = checksum.as_ref().map(|c| c.algorithm);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<(std::fs::File, Vec<u8>)> {
        let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.set_len(from)?;
        file.seek(SeekFrom::Start(from))?;
        let mut digest = ChunkDigest::new(algorithm);
        while let Some(chunk) = rx.blocking_recv() {
            digest.update(&chunk);
            file.write_all(&chunk)?;
        }
        Ok((file, digest.finish()))
    });

    let mut len = 0u64;
    let mut cut = None;
    let mut body = std::pin::pin!(body);
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                cut = Some(TusError::Refused(UploadError::Body(e.to_string())));
                break;
            }
            Err(_) => {
                cut = Some(TusError::Refused(UploadError::Idle(idle)));
                break;
            }
        };
        if len + chunk.len() as u64 > room {
            cut = Some(TusError::PastLength {
                length: from + room,
            });
            break;
        }
        len += chunk.len() as u64;
        if tx.send(chunk).await.is_err() {
            break; // the writer failed; its error is collected below
        }
    }
    drop(tx);
    let (file, digest) = writer.await.map_err(io::Error::other)??;

    // A chunk past the length is refused whole: the client is confused.
    let refused = match (&checksum, &cut) {
        (_, Some(TusError::PastLength { .. })) | (Some(_), Some(_)) => true,
        (Some(expected), None) => expected.digest != digest,
        (None, _) => false,
    };
    let len = if refused { 0 } else { len };
    tokio::task::spawn_blocking(move || {
        file.set_len(from + len)?;
        file.sync_data()
    })
    .await
    .map_err(io::Error::other)??;
    let outcome = match cut {
        Some(e) => Err(e),
        None if refused => Err(TusError::ChecksumMismatch),
        None => Ok(()),
    };
    Ok(Written { len, outcome })
}

/// The digest of a chunk in the algorithm its `Upload-Checksum` names.
enum ChunkDigest {
    None,
    Sha1(Sha1),
    Sha256(Sha256),
}

impl ChunkDigest {
    fn new(algorithm: Option<ChecksumAlgorithm>) -> Self {
        match algorithm {
            None => Self::None,
            Some(ChecksumAlgorithm::Sha1) => Self::Sha1(Sha1::new()),
            Some(ChecksumAlgorithm::Sha256) => Self::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::None => {}
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::None => Vec::new(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}
