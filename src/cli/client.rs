//! The HTTP client behind the maintainer's commands. Server URL and token
//! come from flags, then `HOLDQ_SERVER`/`HOLDQ_TOKEN`, then the user config
//! file (`$HOLDQ_CLIENT_CONFIG`, else `~/.config/holdq/client.toml`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::ClientArgs;
use crate::service::index::IndexDocument;
use crate::service::obsolete::{Dependents, ObsoleteOutcome};
use crate::service::queue::UploadView;
use crate::service::stable::PackageView;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 1 << 20;

pub struct Client {
    pub(super) base: String,
    pub(super) token: Option<String>,
    pub(super) http: reqwest::Client,
}

/// `client.toml`: `server = "..."`, `token = "..."`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token: Option<String>,
}

/// The receipt of an upload, as the server returns it.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Receipt {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub state: String,
    pub position: i64,
    pub sha256: String,
    #[serde(default)]
    pub superseded: Vec<i64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

fn client_file_path() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("HOLDQ_CLIENT_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("holdq").join("client.toml"))
}

fn read_client_file() -> anyhow::Result<ClientFile> {
    let Some(path) = client_file_path() else {
        return Ok(ClientFile::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("invalid {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientFile::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let file = if args.server.is_none() || args.token.is_none() {
            read_client_file()?
        } else {
            ClientFile::default()
        };
        let base = args
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.into());
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: args.token.clone().or(file.token),
            http: reqwest::Client::builder()
                .user_agent(concat!("holdq/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        self.decode(resp).await
    }

    pub(super) async fn decode<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> anyhow::Result<T> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .context("the server's answer was cut off")?;
        if !status.is_success() {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => bail!(
                    "{} ({}, {})",
                    body.error.message,
                    body.error.code,
                    status.as_u16()
                ),
                Err(_) => bail!("the server answered {status}"),
            }
        }
        serde_json::from_slice(&bytes).context("the server's answer is not the JSON expected")
    }

    pub async fn package(&self, name: &str) -> anyhow::Result<Option<PackageView>> {
        let resp = self
            .request(reqwest::Method::GET, &format!("/packages/{name}"))
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.decode(resp).await.map(Some)
    }

    /// A package's index document and the serial the server's index was at
    /// when it was read (`X-Holdq-Serial`); `None` when there is none.
    pub async fn document(&self, name: &str) -> anyhow::Result<Option<(IndexDocument, i64)>> {
        let resp = self
            .request(reqwest::Method::GET, &format!("/index/{name}"))
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let serial = resp
            .headers()
            .get("x-holdq-serial")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .context("the server sent no X-Holdq-Serial with the index document")?;
        Ok(Some((self.decode(resp).await?, serial)))
    }

    /// Streams the archive at `path` (of package `what`) into `to`; returns
    /// its sha256.
    pub async fn download_archive(
        &self,
        path: &str,
        what: &str,
        to: &Path,
    ) -> anyhow::Result<String> {
        use tokio::io::AsyncWriteExt;
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if !resp.status().is_success() {
            return self
                .decode::<serde_json::Value>(resp)
                .await
                .and_then(|_| bail!("the server sent no archive of {what}"));
        }
        let mut file = tokio::fs::File::create(to)
            .await
            .with_context(|| format!("cannot write {}", to.display()))?;
        let mut hasher = Sha256::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("the archive of {what} was cut off"))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(hex::encode(hasher.finalize()))
    }

    pub async fn dependents(&self, name: &str, transitive: bool) -> anyhow::Result<Dependents> {
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/packages/{name}/dependents?transitive={transitive}"),
        ))
        .await
    }

    pub async fn obsolete(
        &self,
        name: &str,
        reason: &str,
        replacement: Option<&str>,
        dry_run: bool,
    ) -> anyhow::Result<ObsoleteOutcome> {
        let body =
            serde_json::json!({ "reason": reason, "replacement": replacement, "dry_run": dry_run });
        self.send(
            self.request(reqwest::Method::POST, &format!("/packages/{name}/obsolete"))
                .json(&body),
        )
        .await
    }

    pub async fn undo_obsolete(&self, name: &str) -> anyhow::Result<()> {
        let resp = self
            .request(
                reqwest::Method::DELETE,
                &format!("/packages/{name}/obsolete"),
            )
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(());
        }
        self.decode::<serde_json::Value>(resp).await.map(|_| ())
    }

    pub async fn queue(&self, platform: Option<&str>) -> anyhow::Result<Vec<UploadView>> {
        let path = match platform {
            Some(p) => format!("/queue?platform={p}"),
            None => "/queue".into(),
        };
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    /// A GET of an API path, decoded as the view `T` the server answers.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// A POST or PUT of a JSON body, decoded as the view `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send(self.request(method, path).json(&body)).await
    }

    /// A POST of a JSON body whose answer is empty (204) on success.
    pub async fn post_no_content(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(());
        }
        self.decode::<serde_json::Value>(resp).await.map(|_| ())
    }

    pub async fn upload_status(&self, id: i64) -> anyhow::Result<UploadView> {
        self.send(self.request(reqwest::Method::GET, &format!("/uploads/{id}")))
            .await
    }

    pub async fn package_uploads(&self, name: &str) -> anyhow::Result<Vec<UploadView>> {
        self.send(self.request(reqwest::Method::GET, &format!("/uploads?package={name}")))
            .await
    }

    /// Streams `file` to the server with its sha256, showing progress.
    pub async fn upload(&self, file: &Path) -> anyhow::Result<Receipt> {
        self.upload_to(file, None).await
    }

    /// [`Client::upload`] into upload group `group`. Large files go over
    /// tus and resume by themselves (`cli::resumable`).
    pub async fn upload_to(&self, file: &Path, group: Option<i64>) -> anyhow::Result<Receipt> {
        let (sha256, len) = hash_file(file)?;
        let progress = if len >= PROGRESS_MIN_BYTES {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(file.display().to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        if len >= super::resumable::THRESHOLD {
            let result = self
                .upload_resumable(file, (&sha256, len), group, &progress)
                .await;
            progress.finish_and_clear();
            return result.with_context(|| format!("upload of {} refused", file.display()));
        }
        let handle = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let bar = progress.clone();
        let stream =
            tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024).inspect(move |chunk| {
                if let Ok(c) = chunk {
                    bar.inc(c.len() as u64);
                }
            });
        let req = self
            .request(
                reqwest::Method::POST,
                &match group {
                    Some(g) => format!("/uploads?group={g}"),
                    None => "/uploads".to_owned(),
                },
            )
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header("X-Checksum-Sha256", &sha256)
            .body(reqwest::Body::wrap_stream(stream));
        let result = self.send(req).await;
        progress.finish_and_clear();
        result.with_context(|| format!("upload of {} refused", file.display()))
    }
}

fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}
