//! The drop box (mmpack, SPEC section 9): a directory where a build farm
//! leaves archives and then, last and by rename, a `NAME.holdq-manifest`.
//! The manifest and the archives it lists are moved (renamed) into a
//! working directory inside the drop box, checked against the manifest,
//! and submitted through [`upload::upload_file`] (one group when
//! `together`). The outcome is written beside where the manifest was, as
//! `NAME.holdq-result.json`; refused files go to `rejected/`.
//!
//! Crash safety: everything a batch needs is in its working directory
//! (`.holdq-work/NAME-HASH/`) until the outcome is written, and each
//! queued archive is recorded in its upload's own transaction under the
//! manifest's sha256, so a restart resumes each working directory and
//! never queues an archive twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::App;
use super::upload::{self, Origin, UploadError};
use super::users::User;
use crate::db;
use crate::domain::dropbox::{self as rules, DropError, DropManifest, MANIFEST_SUFFIX};
use crate::storage::sync_dir;

/// How long a manifest that is not TOML may still be being written in
/// place before it is refused.
const SETTLE: Duration = Duration::from_secs(60);

/// The outcome of a manifest, as `NAME.holdq-result.json` holds it.
#[derive(Clone, Debug, Serialize)]
pub struct DropResult {
    pub manifest: String,
    pub manifest_sha256: String,
    /// `queued` (every archive is in the holding queue), `partly_refused`
    /// (some archives, not `together`, were refused) or `refused`.
    pub state: &'static str,
    pub reason: Option<String>,
    pub group: Option<i64>,
    pub files: Vec<FileResult>,
}

/// What became of one archive.
#[derive(Clone, Debug, Serialize)]
pub struct FileResult {
    pub file: String,
    pub upload_id: Option<i64>,
    pub package: Option<String>,
    pub version: Option<String>,
    /// The upload's state when the result was written.
    pub state: Option<crate::domain::UploadState>,
    pub error: Option<String>,
}

/// The drop box's directories.
struct DropBox {
    dir: PathBuf,
    work: PathBuf,
    rejected: PathBuf,
}

impl DropBox {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let b = Self {
            dir: dir.to_owned(),
            work: dir.join(".holdq-work"),
            rejected: dir.join("rejected"),
        };
        for d in [&b.work, &b.rejected] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(b)
    }

    fn result_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{}", rules::RESULT_SUFFIX))
    }
}

/// Watches the configured drop box (filesystem notifications, and a scan
/// every `dropbox.poll` whatever they say) until `shutdown`.
pub fn spawn(app: &App, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    use notify::Watcher;
    let dir = app.config.dropbox.dir.clone()?;
    let poll = app.config.dropbox.poll;
    let app = app.clone();
    Some(tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.try_send(());
        })
        .and_then(|mut w| {
            let _ = std::fs::create_dir_all(&dir);
            w.watch(&dir, notify::RecursiveMode::NonRecursive)
                .map(|()| w)
        });
        let _watcher = watcher
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no filesystem notifications for the drop box; polling")
            })
            .ok();
        loop {
            if let Err(e) = scan(&app).await {
                tracing::error!(error = format!("{e:#}"), "drop box scan failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = rx.recv() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }))
}

/// One pass over the drop box: first the batches a crash interrupted,
/// then every manifest that arrived. What tests call instead of waiting.
pub async fn scan(app: &App) -> anyhow::Result<()> {
    let Some(dir) = &app.config.dropbox.dir else {
        return Ok(());
    };
    let b = DropBox::open(dir)?;
    // One scanner at a time, also across servers sharing the drop box.
    let lock = std::fs::File::create(b.work.join(".lock"))?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    for work in sorted_entries(&b.work)? {
        if work.is_dir() {
            process(app, &b, &work).await?;
        }
    }
    for path in sorted_entries(&b.dir)? {
        let is_manifest = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(rules::manifest_name)
            .is_some();
        if is_manifest && path.is_file() {
            take_in(app, &b, &path).await?;
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    all.sort();
    Ok(all)
}

/// Moves a manifest and the archives it lists into a working directory
/// of their own, then processes it. A manifest not yet TOML waits.
async fn take_in(app: &App, b: &DropBox, path: &Path) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name = rules::manifest_name(file_name)
        .unwrap_or_default()
        .to_owned();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let hash = hex::encode(Sha256::digest(&bytes));
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| DropError::NotToml("it is not UTF-8".into()))
        .and_then(rules::parse);
    let listed: Vec<String> = match &parsed {
        Ok(m) => m.files.iter().map(|f| f.name.clone()).collect(),
        Err(DropError::NotToml(_)) if !settled(path) => return Ok(()),
        Err(_) => Vec::new(),
    };
    let work = b.work.join(format!("{name}-{}", &hash[..16]));
    std::fs::create_dir_all(&work)?;
    for file in &listed {
        let from = b.dir.join(file);
        if from.is_file() {
            std::fs::rename(&from, work.join(file))
                .with_context(|| format!("moving {} into {}", from.display(), work.display()))?;
        }
    }
    std::fs::rename(path, work.join(file_name))
        .with_context(|| format!("moving {} into {}", path.display(), work.display()))?;
    sync_dir(&work)?;
    sync_dir(&b.dir)?;
    tracing::info!(dropbox.manifest = %name, files = listed.len(), "drop-box manifest taken in");
    super::verdict::failpoint("dropbox-after-move");
    process(app, b, &work).await
}

fn settled(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= SETTLE)
}

/// Checks and submits the batch in `work`, writes its outcome, and clears
/// the working directory (refused files go to `rejected/`).
async fn process(app: &App, b: &DropBox, work: &Path) -> anyhow::Result<()> {
    let Some(manifest_path) = sorted_entries(work)?.into_iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(MANIFEST_SUFFIX))
    }) else {
        // Interrupted before the manifest moved: it is still in the drop
        // box, and taking it in again finds these files here.
        return Ok(());
    };
    let file_name = manifest_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name = rules::manifest_name(file_name)
        .unwrap_or_default()
        .to_owned();
    let bytes = std::fs::read(&manifest_path)?;
    let hash = hex::encode(Sha256::digest(&bytes));
    let mut result = DropResult {
        manifest: file_name.to_owned(),
        manifest_sha256: hash.clone(),
        state: "refused",
        reason: None,
        group: None,
        files: Vec::new(),
    };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| "the manifest is not UTF-8".to_owned())
        .and_then(|t| rules::parse(t).map_err(|e| e.to_string()));
    match parsed {
        Ok(manifest) => submit(app, work, &manifest, &mut result).await?,
        Err(reason) => result.reason = Some(reason),
    }
    write_result(&b.result_path(&name), &result)?;
    finish_work(b, work, &name, &hash, &result)?;
    tracing::info!(
        dropbox.manifest = %name,
        dropbox.state = result.state,
        dropbox.reason = result.reason.as_deref().unwrap_or(""),
        "drop-box manifest processed"
    );
    Ok(())
}

/// Checks the batch against its manifest, then queues what is not queued
/// yet; fills `result`. Only an internal failure is an error (the batch
/// stays for the next scan).
async fn submit(
    app: &App,
    work: &Path,
    manifest: &DropManifest,
    result: &mut DropResult,
) -> anyhow::Result<()> {
    let hash = result.manifest_sha256.clone();
    let Some(user) = super::users::find_by_email(&app.db, &manifest.uploader).await? else {
        result.reason = Some(format!(
            "the uploader {:?} is not a registered user",
            manifest.uploader
        ));
        return Ok(());
    };
    if let Some(reason) = incoherence(app, work, manifest).await? {
        result.reason = Some(reason);
        return Ok(());
    }
    let group = batch_group(app, &user, manifest, &hash).await?;
    result.group = group;
    let done = {
        let mut conn = app.db.pool().acquire().await?;
        db::dropbox::uploads_of(&mut conn, &hash).await?
    };
    let mut refused = 0;
    for f in &manifest.files {
        let mut entry = FileResult {
            file: f.name.clone(),
            upload_id: done.iter().find(|(n, _)| *n == f.name).map(|(_, id)| *id),
            package: None,
            version: None,
            state: None,
            error: None,
        };
        if entry.upload_id.is_none() {
            let origin = Origin::DropBox {
                manifest: &hash,
                file: &f.name,
            };
            let path = work.join(&f.name);
            match upload::upload_file(app, &user, &path, Some(&f.sha256), group, origin).await {
                Ok(receipt) => entry.upload_id = Some(receipt.id),
                Err(UploadError::Internal(e)) => return Err(e),
                Err(e) => {
                    refused += 1;
                    entry.error = Some(e.to_string());
                }
            }
        }
        describe(app, &mut entry).await?;
        result.files.push(entry);
        if refused > 0 && manifest.together {
            break;
        }
    }
    (result.state, result.reason) = match refused {
        0 => ("queued", None),
        _ if manifest.together => (
            "refused",
            Some("a member was refused, and with it the whole group".into()),
        ),
        _ => (
            "partly_refused",
            Some(format!("{refused} archive(s) refused")),
        ),
    };
    Ok(())
}

/// Why the working directory does not match the manifest, if it does not:
/// a listed file missing, a sha256 that differs, an archive that is not
/// the package or version listed.
async fn incoherence(
    app: &App,
    work: &Path,
    manifest: &DropManifest,
) -> anyhow::Result<Option<String>> {
    for f in &manifest.files {
        let path = work.join(&f.name);
        if !path.is_file() {
            return Ok(Some(format!(
                "{} is listed in the manifest but is not in the drop box",
                f.name
            )));
        }
        let received = crate::storage::receive::received_file(
            &path,
            &app.storage.incoming_dir(),
            app.archive_limits(),
        )
        .await
        .with_context(|| format!("reading {}", path.display()))?;
        if received.sha256 != f.sha256 {
            return Ok(Some(format!(
                "{}: its sha256 is {}, the manifest says {}",
                f.name, received.sha256, f.sha256
            )));
        }
        let Ok(summary) = received.inspection else {
            continue; // refused with its reason when it is uploaded
        };
        let (name, version) = (&summary.manifest.name, &summary.manifest.version);
        if f.package.as_ref().is_some_and(|p| p != name)
            || f.version.as_ref().is_some_and(|v| v != version)
        {
            return Ok(Some(format!(
                "{} holds {name} {version}, not what the manifest lists",
                f.name
            )));
        }
    }
    Ok(None)
}

/// The batch's record, made once; with its upload group when `together`.
async fn batch_group(
    app: &App,
    user: &User,
    manifest: &DropManifest,
    hash: &str,
) -> anyhow::Result<Option<i64>> {
    let mut tx = app.db.begin_write().await?;
    if let Some(group) = db::dropbox::batch_group(&mut tx, hash).await? {
        return Ok(group);
    }
    let group = if manifest.together {
        let expected = manifest.files.len() as i64;
        Some(db::groups::insert(&mut tx, user.id, Some(expected)).await?)
    } else {
        None
    };
    db::dropbox::insert_batch(&mut tx, hash, &manifest.uploader, group).await?;
    tx.commit().await?;
    Ok(group)
}

/// Fills in the package, version and state of the entry's upload.
async fn describe(app: &App, entry: &mut FileResult) -> anyhow::Result<()> {
    let Some(id) = entry.upload_id else {
        return Ok(());
    };
    let mut conn = app.db.pool().acquire().await?;
    if let Some(u) = db::uploads::get(&mut conn, id).await? {
        entry.package = Some(u.name);
        entry.version = Some(u.version);
        entry.state = Some(u.state);
    }
    Ok(())
}

/// Writes the outcome by rename, so a reader sees all of it or none.
fn write_result(path: &Path, result: &DropResult) -> anyhow::Result<()> {
    let dir = path.parent().context("a result has a directory")?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".holdq-result")
        .tempfile_in(dir)?;
    serde_json::to_writer_pretty(tmp.as_file_mut(), result)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir)
}

/// Clears a processed working directory: what is queued is in the blob
/// store, so it goes; what was refused goes to `rejected/NAME-HASH/`.
fn finish_work(
    b: &DropBox,
    work: &Path,
    name: &str,
    hash: &str,
    result: &DropResult,
) -> anyhow::Result<()> {
    let queued: Vec<&str> = result
        .files
        .iter()
        .filter(|f| f.error.is_none() && f.upload_id.is_some())
        .map(|f| f.file.as_str())
        .collect();
    if result.state != "refused" {
        for file in &queued {
            std::fs::remove_file(work.join(file))?;
        }
    }
    let keep = std::fs::read_dir(work)?
        .flatten()
        .any(|e| !e.file_name().to_string_lossy().ends_with(MANIFEST_SUFFIX));
    if keep || result.state == "refused" {
        let to = b.rejected.join(format!("{name}-{}", &hash[..16]));
        if to.exists() {
            std::fs::remove_dir_all(&to)?;
        }
        std::fs::rename(work, &to)?;
        sync_dir(&b.rejected)?;
    } else {
        std::fs::remove_dir_all(work)?;
    }
    sync_dir(&b.work)
}
