//! Mirrors (SPEC section 10, upm's "synchronizing between servers"): a
//! follower (`holdq serve --mirror-of URL`) replicates its primary's stable
//! repository exactly, and a primary tells its `[[mirror.peer]]`s of each
//! new serial.
//!
//! The follower reads the primary's changes feed after its own serial. For
//! each page it reads the documents the changes touched (verified against
//! their `ETag`), downloads every archive they name that it lacks and
//! verifies its sha256, and only then records the documents, the changes
//! and the new serial in one transaction, and writes the documents to disk
//! (Debian's two-stage sync: archives first, index last, so no document it
//! serves names an archive it lacks). With the documents go the records
//! its package pages show ([`pages`]); archives no document names any more
//! are removed after the files. Too far behind (`410`), it starts
//! again from the primary's snapshot. A push only wakes it: it trusts
//! nothing in it and asks its own primary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::App;
use super::changes::ChangesPage;
use super::index::{IndexDocument, sha256_hex, to_bytes};
use super::stable::StableError;
use crate::db;

pub mod pages;

/// The longest a long-poll of the primary is held open.
const LONGEST_POLL: Duration = Duration::from_secs(60);

/// A document read from the primary: its exact bytes and what they say.
struct Fetched {
    name: String,
    document: Option<(Vec<u8>, IndexDocument)>,
}

/// A follower's connection to its primary.
#[derive(Clone, Debug)]
pub struct Follower {
    app: App,
    primary: String,
    http: reqwest::Client,
    /// Woken by a push from the primary.
    pushed: Arc<tokio::sync::Notify>,
}

/// Whether this server is a follower, and of which primary.
pub fn primary_of(app: &App) -> Option<&str> {
    app.config.mirror.of.as_deref()
}

/// What a follower answers to every write.
pub fn read_only_message(primary: &str) -> String {
    format!("this server is a read-only mirror of {primary}; send uploads and changes there")
}

impl Follower {
    pub fn new(app: &App, primary: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            app: app.clone(),
            primary: primary.trim_end_matches('/').to_owned(),
            http,
            pushed: app.mirror_pushed.clone(),
        })
    }

    /// Follows the primary until `shutdown`, retrying with a growing pause
    /// while it does not answer.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = self.backfill_pages().await {
            tracing::warn!(error = %format!("{e:#}"), "the package pages of older mirrored documents were not filled in; the next change to each package fills its page");
        }
        let max = self.app.config.mirror.max_backoff;
        let mut pause = Duration::from_millis(200);
        loop {
            let step = tokio::select! {
                step = self.step() => step,
                _ = shutdown.cancelled() => return,
            };
            match step {
                Ok(()) => pause = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), mirror.primary = %self.primary, retry_in_ms = pause.as_millis() as u64, "mirror sync failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.pushed.notified() => {}
                        _ = shutdown.cancelled() => return,
                    }
                    pause = (pause * 2).min(max);
                }
            }
        }
    }

    /// One ask of the primary, and what it answered applied.
    async fn step(&self) -> anyhow::Result<()> {
        let poll = self.app.config.mirror.poll;
        let since = self.serial().await?;
        let wait = if poll <= LONGEST_POLL {
            poll.as_secs()
        } else {
            0
        };
        let url = format!(
            "{}/api/v1/changes?since={since}&wait={wait}&limit=200",
            self.primary
        );
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(wait) + Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("the primary {} does not answer", self.primary))?;
        if resp.status() == reqwest::StatusCode::GONE {
            tracing::info!(
                mirror.since = since,
                "the primary no longer keeps the changes after this serial; starting again from its snapshot"
            );
            return self.restart_from_snapshot().await;
        }
        let page: ChangesPage = ok(resp).await?.json().await?;
        if page.changes.is_empty() {
            self.record_contact(page.serial, false).await?;
            if poll > LONGEST_POLL {
                let _ = tokio::time::timeout(poll, self.pushed.notified()).await;
            }
            return Ok(());
        }
        self.apply_page(&page).await
    }

    async fn serial(&self) -> anyhow::Result<i64> {
        let mut conn = self.app.db.pool().acquire().await?;
        Ok(db::stable::serial(&mut conn).await?)
    }

    async fn record_contact(&self, primary_serial: i64, snapshot: bool) -> anyhow::Result<()> {
        let mut conn = self.app.db.pool().acquire().await?;
        db::mirror::record_contact(&mut conn, &self.primary, primary_serial, snapshot).await?;
        Ok(())
    }

    /// Applies a page of changes: documents read, archives fetched and
    /// verified, then one transaction (documents, changes and serial), then
    /// the archives no document names any more are deleted.
    async fn apply_page(&self, page: &ChangesPage) -> anyhow::Result<()> {
        let head = page.changes.last().map_or(page.serial, |c| c.serial);
        let names: BTreeSet<&str> = page
            .changes
            .iter()
            .flat_map(|c| c.packages.iter().map(|p| p.name.as_str()))
            .collect();
        let mut fetched = Vec::with_capacity(names.len());
        for name in names {
            fetched.push(self.document(name).await?);
        }
        self.fetch_archives(&fetched).await?;
        let records = self.records(&fetched).await?;
        let mut tx = self.app.db.begin_write().await?;
        for (f, record) in fetched.iter().zip(&records) {
            put(&mut tx, f).await?;
            pages::put(&mut tx, f, record.as_ref()).await?;
        }
        for c in &page.changes {
            let packages = serde_json::to_string(&c.packages)?;
            db::changes::insert(&mut tx, c.serial, &c.kind, &packages).await?;
        }
        db::mirror::set_serial(&mut tx, head).await?;
        db::mirror::record_contact(&mut tx, &self.primary, page.serial, false).await?;
        tx.commit().await?;
        super::verdict::failpoint("mirror-after-commit");
        let kept = pages::kept_versions(&fetched);
        self.after_commit(&fetched, head, false).await?;
        self.sweep_archives(kept).await?;
        tracing::info!(
            stable.serial = head,
            mirror.primary_serial = page.serial,
            "mirror caught up to serial"
        );
        Ok(())
    }

    /// Starts again from the primary's whole index.
    async fn restart_from_snapshot(&self) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct Snapshot {
            serial: i64,
            packages: BTreeMap<String, IndexDocument>,
        }
        let url = format!("{}/api/v1/snapshot", self.primary);
        let resp = self.http.get(&url).send().await?;
        let snapshot: Snapshot = ok(resp)
            .await?
            .json()
            .await
            .context("reading the snapshot")?;
        let fetched: Vec<Fetched> = snapshot
            .packages
            .into_iter()
            .map(|(name, document)| Fetched {
                name,
                document: Some((to_bytes(&document), document)),
            })
            .collect();
        self.fetch_archives(&fetched).await?;
        let records = self.records(&fetched).await?;
        let mut tx = self.app.db.begin_write().await?;
        db::mirror::clear(&mut tx).await?;
        db::mirror_pages::clear(&mut tx).await?;
        for (f, record) in fetched.iter().zip(&records) {
            put(&mut tx, f).await?;
            pages::put(&mut tx, f, record.as_ref()).await?;
        }
        db::mirror::set_serial(&mut tx, snapshot.serial).await?;
        db::mirror::record_contact(&mut tx, &self.primary, snapshot.serial, true).await?;
        tx.commit().await?;
        let kept = pages::kept_versions(&fetched);
        self.after_commit(&fetched, snapshot.serial, true).await?;
        self.sweep_archives(kept).await?;
        tracing::info!(
            stable.serial = snapshot.serial,
            "mirror started again from the primary's snapshot"
        );
        Ok(())
    }

    /// The primary's document of `name`, verified against its `ETag`.
    async fn document(&self, name: &str) -> anyhow::Result<Fetched> {
        let url = format!("{}/api/v1/index/{name}", self.primary);
        let resp = self.http.get(&url).send().await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Fetched {
                name: name.to_owned(),
                document: None,
            });
        }
        let resp = ok(resp).await?;
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let bytes = resp.bytes().await?.to_vec();
        let sha = sha256_hex(&bytes);
        if etag.as_deref() != Some(sha.as_str()) {
            bail!("the document of {name} does not match its ETag (sha256 {sha}); refused");
        }
        let document = serde_json::from_slice(&bytes)
            .with_context(|| format!("the document of {name} is not an index document"))?;
        Ok(Fetched {
            name: name.to_owned(),
            document: Some((bytes, document)),
        })
    }

    /// Downloads every archive the documents name that is not here yet.
    async fn fetch_archives(&self, fetched: &[Fetched]) -> anyhow::Result<()> {
        for f in fetched {
            let Some((_, document)) = &f.document else {
                continue;
            };
            for v in &document.versions {
                if !self.app.stable.archive_path(&f.name, &v.version).is_file() {
                    self.fetch_archive(&f.name, &v.version, &v.sha256).await?;
                }
            }
        }
        Ok(())
    }

    /// Downloads one archive, verifies its sha256, and puts it in place;
    /// one altered in transit is deleted and refused.
    async fn fetch_archive(&self, name: &str, version: &str, sha256: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/packages/{name}/{version}/archive", self.primary);
        let resp = ok(self.http.get(&url).send().await?).await?;
        let partial = tempfile::Builder::new()
            .prefix(".mirror-")
            .tempfile_in(self.app.stable.root())?
            .into_temp_path();
        let mut file = tokio::fs::File::create(&partial).await?;
        let mut hasher = Sha256::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.with_context(|| format!("the archive of {name} {version} was cut off"))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            bail!(
                "the archive of {name} {version} arrived with sha256 {actual}, but the index says {sha256}; refused, will fetch it again"
            );
        }
        let store = self.app.stable.clone();
        let (name, version) = (name.to_owned(), version.to_owned());
        blocking(move || store.store_archive(&partial, &name, &version).map(drop)).await?;
        super::verdict::failpoint("mirror-after-archive");
        Ok(())
    }

    /// After the commit: deletes the archives of the packages whose
    /// document went (`whole`: of every package the documents do not
    /// name), and wakes whoever waits for a change.
    async fn after_commit(
        &self,
        fetched: &[Fetched],
        serial: i64,
        whole: bool,
    ) -> anyhow::Result<()> {
        let mut gone: Vec<String> = fetched
            .iter()
            .filter(|f| f.document.is_none())
            .map(|f| f.name.clone())
            .collect();
        let named: BTreeSet<String> = fetched
            .iter()
            .filter(|f| f.document.is_some())
            .map(|f| f.name.clone())
            .collect();
        let store = self.app.stable.clone();
        blocking(move || {
            if whole {
                let archived = store.archived_packages()?;
                gone.extend(archived.into_iter().filter(|n| !named.contains(n)));
            }
            for name in &gone {
                store.remove_package_archives(name)?;
            }
            Ok(())
        })
        .await?;
        super::changes::announce(&self.app, serial).await;
        Ok(())
    }
}

async fn put(tx: &mut db::Tx, f: &Fetched) -> anyhow::Result<()> {
    let body = match &f.document {
        Some((bytes, document)) => Some((
            document.serial,
            sha256_hex(bytes),
            String::from_utf8(bytes.clone()).context("a document is not UTF-8")?,
        )),
        None => None,
    };
    let row = body
        .as_ref()
        .map(|(s, sha, b)| (*s, sha.as_str(), b.as_str()));
    db::mirror::put_document(tx, &f.name, row).await?;
    Ok(())
}

/// The response when it succeeded, else an error with what the primary said.
async fn ok(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.unwrap_or_default();
    bail!("the primary answered {status} to {url}: {text}")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// The archive of `name` `version` when the mirrored index names it.
pub async fn archive(app: &App, name: &str, version: &str) -> Result<PathBuf, StableError> {
    let mut conn = app.db.pool().acquire().await?;
    let document = db::mirror::document(&mut conn, name)
        .await?
        .ok_or_else(|| StableError::NoSuchPackage(name.into()))?;
    let document: IndexDocument =
        serde_json::from_str(&document.body).map_err(|e| StableError::Internal(e.into()))?;
    if !document.versions.iter().any(|v| v.version == version) {
        return Err(StableError::NoSuchVersion(name.into(), version.into()));
    }
    Ok(app.stable.archive_path(name, version))
}

/// Tells every configured peer of `serial`, in the background: a small
/// POST, retried with a growing pause, never holding up the caller.
pub fn push(app: &App, serial: i64) {
    for peer in &app.config.mirror.peer {
        let url = format!("{}/api/v1/mirror/notify", peer.url.trim_end_matches('/'));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut pause = Duration::from_millis(200);
            for _ in 0..6 {
                let sent = http
                    .post(&url)
                    .json(&serde_json::json!({ "serial": serial }))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::debug!(status = %r.status(), mirror.peer = %url, "peer refused the push")
                    }
                    Err(e) => tracing::debug!(error = %e, mirror.peer = %url, "peer not reached"),
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            tracing::warn!(mirror.peer = %url, stable.serial = serial, "peer not told of the new serial; it polls");
        });
    }
}

/// Where a server stands as a mirror (`GET /api/v1/mirror/status`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MirrorStatus {
    /// The primary followed; `None`: this server is no follower.
    pub primary: Option<String>,
    /// The stable serial this server serves.
    pub serial: i64,
    /// The primary's serial when it last answered, and when that was.
    pub primary_serial: Option<i64>,
    pub last_contact: Option<String>,
    /// Serials behind the primary as last heard, and seconds since then.
    pub behind: Option<i64>,
    pub seconds_since_contact: Option<f64>,
    /// Restarts from the primary's snapshot.
    pub snapshots: i64,
    /// The followers this server pushes to.
    pub peers: Vec<String>,
}

/// This server's mirror status.
pub async fn status(app: &App) -> anyhow::Result<MirrorStatus> {
    let mut conn = app.db.pool().acquire().await?;
    let serial = db::stable::serial(&mut conn).await?;
    let state = db::mirror::state(&mut conn).await?;
    let now = db::now_ms();
    Ok(MirrorStatus {
        primary: primary_of(app).map(str::to_owned),
        serial,
        primary_serial: state.as_ref().map(|s| s.primary_serial),
        last_contact: state.as_ref().map(|s| super::format_time(s.synced_at)),
        behind: state.as_ref().map(|s| (s.primary_serial - serial).max(0)),
        seconds_since_contact: state
            .as_ref()
            .map(|s| (now - s.synced_at).max(0) as f64 / 1000.0),
        snapshots: state.as_ref().map_or(0, |s| s.snapshots),
        peers: app
            .config
            .mirror
            .peer
            .iter()
            .map(|p| p.url.clone())
            .collect(),
    })
}
