//! A raw tus 1.0 client for tests: each request as the protocol writes it,
//! so a test can also send what a correct client never would.

use holdq::domain::tus::encode_metadata;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Answer, TestApp, answer};

/// The two ways an archive can come in, for tests that must hold for both.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    /// `POST /api/v1/uploads`, the whole body at once.
    Post,
    /// tus: created, then sent in chunks of this many bytes.
    Tus(usize),
}

impl Via {
    /// Uploads `body` as `token`, with the whole file's `sha256` when given
    /// (`X-Checksum-Sha256`, or the tus metadata). Queued, the answer is 201
    /// with the upload's `id`; refused, the server's error.
    pub async fn upload(
        self,
        app: &TestApp,
        token: Option<&str>,
        body: Vec<u8>,
        sha256: Option<&str>,
    ) -> Answer {
        match self {
            Via::Post => {
                let mut req = app
                    .http
                    .post(app.url("/api/v1/uploads"))
                    .header("content-type", "application/gzip")
                    .body(body);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                if let Some(sha) = sha256 {
                    req = req.header("x-checksum-sha256", sha);
                }
                answer(req.send().await.expect("the server answers")).await
            }
            Via::Tus(chunk) => {
                let tus = Tus::new(app, token.unwrap_or(""));
                let mut meta = vec![("filename", "upload.tar.gz")];
                if let Some(sha) = sha256 {
                    meta.push(("sha256", sha));
                }
                tus.send_all(&body, &meta, chunk).await
            }
        }
    }
}

/// A tus client of `app` with one token.
pub struct Tus<'a> {
    pub app: &'a TestApp,
    pub token: String,
}

impl<'a> Tus<'a> {
    pub fn new(app: &'a TestApp, token: &str) -> Self {
        Self {
            app,
            token: token.to_owned(),
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            self.app.url(url)
        };
        let req = self
            .app
            .http
            .request(method, url)
            .header("tus-resumable", "1.0.0");
        if self.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.token)
        }
    }

    /// `POST /api/v1/tus/` of `length` bytes with `metadata`.
    pub async fn create(&self, length: u64, metadata: &[(&str, &str)]) -> Response {
        self.request(reqwest::Method::POST, "/api/v1/tus/")
            .header("upload-length", length)
            .header("upload-metadata", encode_metadata(metadata))
            .send()
            .await
            .expect("the server answers")
    }

    /// Creates an upload and returns its URL, asserting 201.
    pub async fn create_ok(&self, length: u64, metadata: &[(&str, &str)]) -> String {
        let resp = self.create(length, metadata).await;
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{:?}",
            resp.text().await
        );
        location(&resp)
    }

    /// `PATCH` of `bytes` at `offset`, with an `Upload-Checksum` when given.
    pub async fn patch(
        &self,
        url: &str,
        offset: u64,
        bytes: Vec<u8>,
        checksum: Option<String>,
    ) -> Response {
        let mut req = self
            .request(reqwest::Method::PATCH, url)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset)
            .body(bytes);
        if let Some(c) = checksum {
            req = req.header("upload-checksum", c);
        }
        req.send().await.expect("the server answers")
    }

    /// `HEAD`: the status and the offset the server holds.
    pub async fn head(&self, url: &str) -> (StatusCode, Option<u64>) {
        let resp = self
            .request(reqwest::Method::HEAD, url)
            .send()
            .await
            .expect("the server answers");
        (resp.status(), header_u64(&resp, "upload-offset"))
    }

    pub async fn delete(&self, url: &str) -> StatusCode {
        self.request(reqwest::Method::DELETE, url)
            .send()
            .await
            .expect("the server answers")
            .status()
    }

    /// Creates and sends `body` in chunks of `chunk` bytes: 201 with the
    /// upload's `id` once queued, or the first refusal.
    pub async fn send_all(&self, body: &[u8], metadata: &[(&str, &str)], chunk: usize) -> Answer {
        let created = self.create(body.len() as u64, metadata).await;
        if created.status() != StatusCode::CREATED {
            return answer(created).await;
        }
        let url = location(&created);
        let mut last = created;
        let mut offset = 0;
        while offset < body.len() {
            let end = (offset + chunk).min(body.len());
            last = self
                .patch(&url, offset as u64, body[offset..end].to_vec(), None)
                .await;
            if last.status() != StatusCode::NO_CONTENT {
                return answer(last).await;
            }
            offset = end;
        }
        match header_u64(&last, "holdq-upload-id") {
            Some(id) => Answer {
                status: StatusCode::CREATED,
                body: json!({ "id": id, "location": url }),
            },
            None => Answer {
                status: last.status(),
                body: Value::String("no Holdq-Upload-Id on the last PATCH".into()),
            },
        }
    }
}

/// The `Location` of a creation, resolved against the request's URL.
pub fn location(resp: &Response) -> String {
    let location = resp
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap();
    resp.url().join(location).unwrap().to_string()
}

pub fn header_u64(resp: &Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `sha256 BASE64` of `bytes`, as `Upload-Checksum` carries it.
pub fn sha256_checksum(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "sha256 {}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
