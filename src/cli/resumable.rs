//! `holdq upload` over tus for large files: the upload URL is remembered
//! in the user's state directory (`$HOLDQ_STATE_DIR`, else
//! `$XDG_STATE_HOME/holdq`, else `~/.local/state/holdq`), so a dropped
//! connection is resumed by itself and a command run again continues where
//! the server's offset says. Each chunk carries its sha256, so a chunk cut
//! off is discarded whole by the server and sent again, never half-trusted.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::client::{Client, Receipt};
use crate::domain::tus as protocol;
use crate::service::tus::TusUpload;

/// Files from this size on go over tus.
pub const THRESHOLD: u64 = 8 << 20;

/// Bytes per PATCH: what is sent again, at most, when a connection drops.
pub const CHUNK: u64 = 8 << 20;

/// Attempts in a row that may fail to reach the server before giving up.
const ATTEMPTS: u32 = 8;

/// What is remembered of an unfinished upload.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    url: String,
    file: PathBuf,
    sha256: String,
    length: u64,
    group: Option<i64>,
}

fn state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HOLDQ_STATE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    Some(base.join("holdq"))
}

/// Where the upload of these bytes to this server (in this group) is
/// remembered.
fn record_path(server: &str, sha256: &str, group: Option<i64>) -> Option<PathBuf> {
    let key = Sha256::digest(format!("{server}\n{sha256}\n{group:?}"));
    Some(
        state_dir()?
            .join("uploads")
            .join(format!("{}.json", hex::encode(&key[..16]))),
    )
}

fn remember(path: &Path, r: &Remembered) -> anyhow::Result<()> {
    let dir = path.parent().context("a state file has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn recall(path: &Path) -> Option<Remembered> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}

impl Client {
    fn tus(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, url)
            .header("tus-resumable", protocol::VERSION);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Uploads `file` (of `len` bytes, hashing to `sha256`) over tus,
    /// resuming a remembered upload of the same bytes; into `group` when
    /// given. `bar` shows the bytes the server holds.
    pub async fn upload_resumable(
        &self,
        file: &Path,
        (sha256, len): (&str, u64),
        group: Option<i64>,
        bar: &ProgressBar,
    ) -> anyhow::Result<Receipt> {
        let record = record_path(&self.base, sha256, group);
        let mut url = None;
        if let Some(r) = record.as_deref().and_then(recall) {
            match self.server_offset(&r.url).await? {
                Some(_) => url = Some(r.url),
                None => forget(record.as_deref().unwrap_or(Path::new(""))),
            }
        }
        let url = match url {
            Some(url) => url,
            None => {
                let url = self.create(file, (sha256, len), group).await?;
                if let Some(path) = &record {
                    remember(
                        path,
                        &Remembered {
                            url: url.clone(),
                            file: file.to_owned(),
                            sha256: sha256.to_owned(),
                            length: len,
                            group,
                        },
                    )?;
                }
                url
            }
        };
        let outcome = self.send_from_offset(&url, file, len, bar).await;
        if let (Some(path), Err(e)) = (&record, &outcome)
            && !e.is::<Unreachable>()
        {
            forget(path); // refused: nothing left to resume
        }
        let upload_id = outcome?;
        if let Some(path) = &record {
            forget(path);
        }
        let view = self.upload_status(upload_id).await?;
        Ok(Receipt {
            id: view.id,
            name: view.name,
            version: view.version,
            state: serde_json::to_value(view.state)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            position: view.position.unwrap_or_default(),
            sha256: view.sha256,
            superseded: Vec::new(),
        })
    }

    async fn create(
        &self,
        file: &Path,
        (sha256, len): (&str, u64),
        group: Option<i64>,
    ) -> anyhow::Result<String> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let group = group.map(|g| g.to_string());
        let mut meta = vec![("filename", name.as_str()), ("sha256", sha256)];
        if let Some(g) = &group {
            meta.push(("group", g));
        }
        let creation = format!("{}/api/v1/tus/", self.base);
        let resp = self
            .tus(reqwest::Method::POST, &creation)
            .header("upload-length", len)
            .header("upload-metadata", protocol::encode_metadata(&meta))
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status() != reqwest::StatusCode::CREATED {
            self.decode::<serde_json::Value>(resp).await?;
            bail!("the server did not create the upload");
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("the server gave no Location for the upload")?;
        Ok(resp.url().join(location)?.to_string())
    }

    /// The offset the server holds, or `None` when it no longer knows the
    /// upload (finished, aborted, expired).
    async fn server_offset(&self, url: &str) -> anyhow::Result<Option<u64>> {
        let resp = self
            .tus(reqwest::Method::HEAD, url)
            .send()
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        if matches!(
            resp.status(),
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE
        ) {
            return Ok(None);
        }
        if !resp.status().is_success() {
            bail!("the server answered {} to HEAD {url}", resp.status());
        }
        Ok(resp
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// PATCHes the rest of `file` from the server's offset, chunk by chunk,
    /// asking the offset again after a dropped connection; the id of the
    /// queued upload.
    async fn send_from_offset(
        &self,
        url: &str,
        file: &Path,
        len: u64,
        bar: &ProgressBar,
    ) -> anyhow::Result<i64> {
        let mut failures = 0;
        let mut offset = None;
        loop {
            let at = match offset {
                Some(at) => at,
                None => match self.server_offset(url).await {
                    Ok(Some(at)) => at,
                    Ok(None) => bail!("the server no longer holds the upload {url}"),
                    Err(e) if e.is::<Unreachable>() && failures < ATTEMPTS => {
                        failures += 1;
                        tokio::time::sleep(backoff(failures)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            bar.set_position(at);
            let chunk = read_chunk(file, at, CHUNK.min(len - at))?;
            let sent = chunk.len() as u64;
            match self.patch(url, at, chunk).await {
                Ok(Patched::Queued(id)) => {
                    bar.set_position(len);
                    return Ok(id);
                }
                Ok(Patched::At(next)) => {
                    failures = 0;
                    bar.set_position(next);
                    offset = Some(next);
                    if next == len {
                        bail!("the server holds every byte but did not queue the upload");
                    }
                    debug_assert!(next <= at + sent);
                }
                Err(e) if e.is::<Unreachable>() && failures < ATTEMPTS => {
                    failures += 1;
                    offset = None;
                    tokio::time::sleep(backoff(failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn patch(&self, url: &str, at: u64, chunk: Vec<u8>) -> anyhow::Result<Patched> {
        let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&chunk));
        let resp = self
            .tus(reqwest::Method::PATCH, url)
            .header(reqwest::header::CONTENT_TYPE, protocol::PATCH_CONTENT_TYPE)
            .header("upload-offset", at)
            .header("upload-checksum", format!("sha256 {checksum}"))
            .body(chunk)
            .send()
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            if let Some(id) = header("holdq-upload-id") {
                return Ok(Patched::Queued(id));
            }
            return Ok(Patched::At(
                header("upload-offset").unwrap_or_default() as u64
            ));
        }
        // Lost the race with a dropped request still being read, or the
        // chunk arrived damaged: ask the offset again.
        if matches!(resp.status().as_u16(), 409 | 423 | 460) {
            return Err(Unreachable(format!("the server answered {}", resp.status())).into());
        }
        self.decode::<serde_json::Value>(resp).await?;
        bail!("the server did not take the chunk")
    }

    /// `holdq upload --list`: the unfinished uploads the server holds.
    pub async fn unfinished_uploads(&self) -> anyhow::Result<Vec<TusUpload>> {
        self.get("/tus").await
    }

    /// `holdq upload --abort ID`: ends an unfinished upload.
    pub async fn abort_upload(&self, id: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/tus/{id}", self.base);
        let resp = self
            .tus(reqwest::Method::DELETE, &url)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if !resp.status().is_success() {
            self.decode::<serde_json::Value>(resp).await?;
        }
        forget_url(&url);
        Ok(())
    }
}

/// Forgets the remembered upload at `url`, if any.
fn forget_url(url: &str) {
    let Some(dir) = state_dir().map(|d| d.join("uploads")) else {
        return;
    };
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if recall(&entry.path()).is_some_and(|r| r.url == url) {
            forget(&entry.path());
        }
    }
}

enum Patched {
    At(u64),
    Queued(i64),
}

/// The server could not be reached (or asked for a retry): worth trying again.
#[derive(Debug, thiserror::Error)]
#[error("the connection to the server failed: {0}")]
struct Unreachable(String);

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250 << failures.min(5))
}

fn read_chunk(path: &Path, at: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    file.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 != len {
        bail!("{} changed while it was being uploaded", path.display());
    }
    Ok(buf)
}
