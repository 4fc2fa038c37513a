//! Archives fetched from a server over HTTP, for workers on machines that
//! share no disk with it: each file is kept in a cache named by its sha256,
//! downloaded once, and verified before it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// A server's archives, cached on this machine by hash.
#[derive(Clone, Debug)]
pub struct RemoteStore {
    client: reqwest::Client,
    server: String,
    token: String,
    cache: PathBuf,
}

impl RemoteStore {
    /// Archives from `server` (its base URL), authenticated with `token`,
    /// cached in `cache_dir`.
    pub fn new(server: &str, token: &str, cache_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("cannot create {}", cache_dir.display()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            server: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            cache: cache_dir.to_owned(),
        })
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Checks that the server answers and accepts the token: the user it
    /// belongs to, as the server describes them.
    pub async fn whoami(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/api/v1/me", self.server);
        let response = self.get(&url).await?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            anyhow::bail!("the server at {} refused the worker token", self.server);
        }
        if !status.is_success() {
            anyhow::bail!("the server at {} answered {status} to {url}", self.server);
        }
        Ok(response.json().await?)
    }

    async fn get(&self, url: &str) -> anyhow::Result<reqwest::Response> {
        self.client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {} for {url}", self.server))
    }

    /// The path of the archive whose sha256 is `sha256`, downloaded from
    /// `path` (under the server's URL) unless the cache has it. A server
    /// that is away (restarting, overloaded, cut off) is tried again, with
    /// backoff, for up to `RETRY_FOR`; a refusal (4xx) is final.
    pub async fn fetch(&self, path: &str, sha256: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sha256:?} is not a sha256"
        );
        let cached = self.cache.join(format!("{sha256}.tar.gz"));
        if tokio::fs::try_exists(&cached).await.unwrap_or(false) {
            return Ok(cached);
        }
        let url = format!("{}{path}", self.server);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            match self.download(&url, sha256, &cached).await {
                Ok(()) => return Ok(cached),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(e)) if started.elapsed() + pause > RETRY_FOR => {
                    return Err(e.context(format!("gave up after {:?}", started.elapsed())));
                }
                Err(Failure::Transient(e)) => {
                    tracing::warn!(url = %url, error = format!("{e:#}"), retry_in_ms = pause.as_millis() as u64, "archive download failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(15));
                }
            }
        }
    }

    async fn download(&self, url: &str, sha256: &str, cached: &Path) -> Result<(), Failure> {
        let response = self.get(url).await.map_err(Failure::Transient)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let e = anyhow::anyhow!("fetching {url}: the server answered {status}: {body}");
            return Err(
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Failure::Transient(e)
                } else {
                    Failure::Final(e)
                },
            );
        }
        // Into a temporary file beside the cache entry, hashed on the way;
        // renamed into place only when the hash is the expected one.
        let local = |e: std::io::Error| Failure::Final(anyhow::Error::new(e));
        let partial = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&self.cache)
            .map_err(local)?
            .into_temp_path();
        let mut file = tokio::fs::File::create(&partial).await.map_err(local)?;
        let mut hasher = Sha256::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .with_context(|| format!("fetching {url}: cut off"))
                .map_err(Failure::Transient)?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            // Damaged on the way, or a server that is not ours: try again.
            return Err(Failure::Transient(anyhow::anyhow!(
                "fetching {url}: the archive hashes to {actual}, not {sha256}"
            )));
        }
        partial
            .persist(cached)
            .with_context(|| format!("cannot keep {}", cached.display()))
            .map_err(Failure::Final)?;
        Ok(())
    }
}

/// How long a download is tried again while the server is away.
const RETRY_FOR: Duration = Duration::from_secs(300);

enum Failure {
    /// Worth another try: the server may come back.
    Transient(anyhow::Error),
    /// A refusal or a local fault: trying again changes nothing.
    Final(anyhow::Error),
}
