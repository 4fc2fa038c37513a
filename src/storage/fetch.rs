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
    /// `path` (under the server's URL) unless the cache has it.
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
        let response = self.get(&url).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("fetching {url}: the server answered {status}: {body}");
        }
        // Into a temporary file beside the cache entry, hashed on the way;
        // renamed into place only when the hash is the expected one.
        let partial = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&self.cache)?
            .into_temp_path();
        let mut file = tokio::fs::File::create(&partial).await?;
        let mut hasher = Sha256::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("fetching {url}: cut off"))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            anyhow::bail!("fetching {url}: the archive hashes to {actual}, not {sha256}");
        }
        partial
            .persist(&cached)
            .with_context(|| format!("cannot keep {}", cached.display()))?;
        Ok(cached)
    }
}
