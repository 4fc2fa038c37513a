//! Mirrors (SPEC section 10): a real `holdq serve --mirror-of` process on
//! its own SQLite follows a primary that is a real `holdq serve` process
//! too (on SQLite, or on PostgreSQL), through a proxy the test controls.
//! The follower ends equal to the primary, byte for byte, after ten
//! promotions, a group promotion, an obsolescence with pins and a
//! cascading removal; refuses an archive altered in transit; refuses
//! uploads naming the primary; answers while the primary is down; killed
//! mid-sync (at each failpoint, and at a random archive) never serves an
//! entry whose archive it lacks, and catches up; never shows a reader an
//! entry it cannot download; catches up after a push within seconds when
//! its poll is 10 minutes; and starts again from the snapshot when the
//! primary's log was pruned.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::process::{ServerProcess, free_port, index_is_whole, upload_to};
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_follower_ends_equal_to_its_primary_byte_for_byte_and_answers_while_it_is_down,
    a_follower_refuses_an_archive_altered_in_transit_and_fetches_it_again,
    a_push_makes_a_follower_with_a_ten_minute_poll_catch_up,
    a_follower_behind_a_pruned_log_starts_from_the_snapshot,
    a_follower_killed_mid_sync_never_serves_an_entry_it_lacks_and_catches_up,
    a_reader_of_a_syncing_follower_never_sees_an_entry_it_cannot_download,
);

/// Between the follower and the primary: forwards every request, or
/// answers 503 while `down`, flips a byte of the next archive while
/// `alter` is set (once), holds each archive back `archive_delay_ms`, and
/// counts the archives it passed on.
#[derive(Clone)]
struct Proxy {
    primary: String,
    down: Arc<AtomicBool>,
    alter: Arc<AtomicBool>,
    altered: Arc<AtomicBool>,
    archive_delay_ms: Arc<AtomicU64>,
    archives: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(primary: &str) -> (Self, String) {
        let proxy = Self {
            primary: primary.to_owned(),
            down: Arc::default(),
            alter: Arc::default(),
            altered: Arc::default(),
            archive_delay_ms: Arc::default(),
            archives: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (proxy, base)
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    if proxy.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "primary down").into_response();
    }
    let path = request.uri().path_and_query().unwrap().to_string();
    let method = request.method().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let sent = reqwest::Client::new()
        .request(method, format!("{}{path}", proxy.primary))
        .body(body)
        .send()
        .await;
    let Ok(resp) = sent else {
        return (StatusCode::BAD_GATEWAY, "primary not reached").into_response();
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let Ok(bytes) = resp.bytes().await else {
        return (StatusCode::BAD_GATEWAY, "primary cut off").into_response();
    };
    let mut bytes = bytes.to_vec();
    if path.ends_with("/archive") {
        let delay = proxy.archive_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        proxy.archives.fetch_add(1, Ordering::SeqCst);
        if proxy.alter.swap(false, Ordering::SeqCst) {
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            proxy.altered.store(true, Ordering::SeqCst);
        }
    }
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

fn pkg(name: &str, version: &str, deps: &[(&str, &str)]) -> Vec<u8> {
    package_building(name, version, deps, "true", None)
}

/// The primary: a real `holdq serve` process (two local workers) on the
/// database and data directory a `TestApp` made; the test reads the
/// database through the app and uses its operator's token.
struct Primary {
    app: TestApp,
    server: ServerProcess,
}

impl Primary {
    /// Starts the primary with `config` added to its config file.
    async fn start(db: TestDb, config: &str) -> Self {
        Self::start_with(db, config, |_| {}).await
    }

    /// [`Primary::start`], the test's own app (what the test reads the
    /// database with, and runs maintenance such as pruning through) with
    /// its configuration changed by `tweak` to say the same.
    async fn start_with(
        db: TestDb,
        config: &str,
        tweak: impl FnOnce(&mut holdq::config::Config),
    ) -> Self {
        let app = TestApp::spawn_with(db, tweak).await;
        let data = app.app.config.data_dir.clone();
        let file = data.join("primary.toml");
        let platform = holdq::config::PlatformConfig::host().name;
        std::fs::write(
            &file,
            format!(
                "[storage]\nreserve = \"16MiB\"\n{config}\n[[platform]]\nname = \"{platform}\"\nlocal_workers = 2\n"
            ),
        )
        .unwrap();
        let server =
            ServerProcess::start_with_config(&data, &app.database_url, None, Some(&file)).await;
        Self { app, server }
    }

    /// A primary whose changes log keeps a change for 1 ms: any follower
    /// that starts after its log was pruned has to start from the snapshot.
    async fn keeping_changes_a_moment(db: TestDb) -> Self {
        Self::start_with(db, "[index]\nchanges_kept = \"1ms\"", |c| {
            c.index.changes_kept = Duration::from_millis(1)
        })
        .await
    }

    fn base(&self) -> &str {
        &self.server.base
    }

    /// Uploads every package and waits until all are accepted.
    async fn accept_all(&self, bodies: Vec<Vec<u8>>) {
        let mut ids = Vec::new();
        for body in bodies {
            ids.push(upload_to(self.base(), &self.app.operator, body).await);
        }
        for id in ids {
            self.wait_accepted(id).await;
        }
    }

    async fn accept(&self, body: Vec<u8>) {
        self.accept_all(vec![body]).await;
    }

    async fn wait_accepted(&self, id: i64) {
        let state = wait_until(
            async || {
                let view = self
                    .call(reqwest::Method::GET, &format!("/api/v1/uploads/{id}"), None)
                    .await
                    .1;
                let state = view["state"].as_str().unwrap_or("").to_owned();
                matches!(state.as_str(), "accepted" | "rejected").then_some(view)
            },
            Duration::from_secs(120),
        )
        .await
        .unwrap_or_else(|| panic!("upload {id} got no verdict"));
        assert_eq!(state["state"], "accepted", "{state:#}");
    }

    /// An operator's request to the primary: status and JSON body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base()))
            .bearer_auth(&self.app.operator);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn obsolete(&self, name: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/packages/{name}/obsolete"),
                Some(json!({ "reason": format!("{name} is old") })),
            )
            .await;
        assert!(status.is_success(), "{status} {body:#}");
        body
    }

    async fn serial(&self) -> i64 {
        let mut conn = self.app.app.db.pool().acquire().await.unwrap();
        holdq::db::stable::serial(&mut conn).await.unwrap()
    }
}

/// The follower's config file in `dir`, following `primary` with `[mirror]`
/// settings; its data directory and database URL.
fn follower_config(dir: &Path, primary: &str, mirror: &str) -> (std::path::PathBuf, String) {
    let config = dir.join("follower.toml");
    std::fs::write(
        &config,
        format!("mirror_of = \"{primary}\"\n[mirror]\n{mirror}\n[storage]\nreserve = \"16MiB\"\n[[platform]]\nname = \"test\"\nlocal_workers = 0\n"),
    )
    .unwrap();
    let data = dir.join("follower-data");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}/holdq.db", data.display());
    (data, url)
}

/// Starts a follower of `primary` in `dir` with `[mirror]` settings, on
/// `port` or a free one, with `failpoint` set.
async fn follower_at(
    dir: &Path,
    primary: &str,
    mirror: &str,
    port: Option<u16>,
    failpoint: Option<&str>,
) -> ServerProcess {
    let (data, url) = follower_config(dir, primary, mirror);
    let port = port.unwrap_or_else(free_port);
    ServerProcess::start_on_port(
        port,
        &data,
        &url,
        failpoint,
        Some(&dir.join("follower.toml")),
    )
    .await
}

async fn follower(dir: &Path, primary: &str, mirror: &str) -> ServerProcess {
    follower_at(dir, primary, mirror, None, None).await
}

// One client per thread for every read: a new one per request (what
// `reqwest::get` makes) costs more than the request, and the reader below
// must read often to find a window. Per thread, because a test's runtime
// (and the connections its client pooled) ends with the test.
thread_local! {
    static CLIENT: reqwest::Client = reqwest::Client::new();
}

async fn get(base: &str, path: &str) -> reqwest::Response {
    let client = CLIENT.with(reqwest::Client::clone);
    client.get(format!("{base}{path}")).send().await.unwrap()
}

async fn serial_of(base: &str) -> i64 {
    let status: Value = get(base, "/api/v1/mirror/status")
        .await
        .json()
        .await
        .unwrap();
    status["serial"].as_i64().unwrap()
}

/// Prunes the primary's log, then starts a follower in `dir`, which must
/// start from the snapshot (once) and catch up.
async fn follower_from_the_snapshot(primary: &Primary, dir: &Path) -> ServerProcess {
    wait_until(
        async || {
            let pruned = holdq::service::changes::prune(&primary.app.app)
                .await
                .unwrap();
            (pruned > 0).then_some(())
        },
        Duration::from_secs(10),
    )
    .await
    .expect("the log was pruned");
    let mirror = follower(dir, primary.base(), "poll = \"1s\"").await;
    assert!(caught_up(primary, &mirror.base, Duration::from_secs(60)).await);
    let status: Value = get(&mirror.base, "/api/v1/mirror/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["snapshots"], 1, "{status:#}");
    mirror
}

/// Waits until the follower at `base` is at the primary's serial.
async fn caught_up(primary: &Primary, base: &str, limit: Duration) -> bool {
    let want = primary.serial().await;
    wait_until(async || serial_of(base).await == want, limit)
        .await
        .is_some()
}

/// Every document (bytes and ETag) and every archive (bytes) of the
/// primary is the follower's, and what the primary no longer has, the
/// follower does not serve either.
async fn assert_equal(primary: &str, follower: &str, gone: &[&str]) {
    let whole: Value = get(primary, "/api/v1/index").await.json().await.unwrap();
    let theirs: Value = get(follower, "/api/v1/index").await.json().await.unwrap();
    assert_eq!(whole, theirs, "the whole index");
    let packages: BTreeMap<String, Value> =
        serde_json::from_value(whole["packages"].clone()).unwrap();
    assert!(!packages.is_empty());
    for (name, doc) in &packages {
        let path = format!("/api/v1/index/{name}");
        let (a, b) = (get(primary, &path).await, get(follower, &path).await);
        assert_eq!(
            (a.status(), b.status()),
            (StatusCode::OK, StatusCode::OK),
            "{path}"
        );
        assert_eq!(a.headers()["etag"], b.headers()["etag"], "{name}");
        assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap(), "{name}");
        for v in doc["versions"].as_array().unwrap() {
            let path = format!(
                "/api/v1/packages/{name}/{}/archive",
                v["version"].as_str().unwrap()
            );
            let (a, b) = (get(primary, &path).await, get(follower, &path).await);
            assert_eq!(b.status(), StatusCode::OK, "{path}");
            assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap(), "{path}");
        }
    }
    for name in gone {
        let doc = get(follower, &format!("/api/v1/index/{name}")).await;
        assert_eq!(doc.status(), StatusCode::NOT_FOUND, "{name} was removed");
        let archive = get(follower, &format!("/api/v1/packages/{name}/1.0.0/archive")).await;
        assert_eq!(archive.status(), StatusCode::NOT_FOUND, "{name}'s archive");
    }
}

/// What a reader of `base` finds wrong: each entry of its whole index
/// whose archive does not download with the sha256 the entry names, while
/// the package's document still names it. Empty: every entry served can
/// be fetched.
async fn unfetchable(base: &str) -> Vec<String> {
    let whole: Value = get(base, "/api/v1/index").await.json().await.unwrap();
    let mut wrong = Vec::new();
    let packages = whole["packages"].as_object().cloned().unwrap_or_default();
    for (name, doc) in packages {
        for v in doc["versions"].as_array().unwrap() {
            let version = v["version"].as_str().unwrap();
            let resp = get(base, &format!("/api/v1/packages/{name}/{version}/archive")).await;
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap();
            let sha = hex::encode(sha2::Sha256::digest(&bytes));
            if (status != StatusCode::OK || v["sha256"] != sha.as_str())
                && still_names(base, &name, version).await
            {
                wrong.push(format!(
                    "{name} {version} at serial {}: {status}",
                    whole["serial"]
                ));
            }
        }
    }
    wrong
}

/// Whether `name`'s document at `base` still names `version`: an archive
/// removed with its package after the reader read the index is not one it
/// was wrongly shown.
async fn still_names(base: &str, name: &str, version: &str) -> bool {
    let doc = get(base, &format!("/api/v1/index/{name}")).await;
    if doc.status() == StatusCode::NOT_FOUND {
        return false;
    }
    let doc: Value = doc.json().await.unwrap();
    doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["version"] == version)
}

async fn submit_group(primary: &Primary, bodies: Vec<Vec<u8>>) {
    let (_, group) = primary
        .call(
            reqwest::Method::POST,
            "/api/v1/groups",
            Some(json!({ "expected": null })),
        )
        .await;
    let group = group["id"].as_i64().unwrap();
    let mut ids = Vec::new();
    for body in bodies {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/uploads?group={group}", primary.base()))
            .bearer_auth(&primary.app.operator)
            .header("content-type", "application/gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    let (status, body) = primary
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/groups/{group}/submit"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    for id in ids {
        primary.wait_accepted(id).await;
    }
}

async fn a_follower_ends_equal_to_its_primary_byte_for_byte_and_answers_while_it_is_down(
    db: TestDb,
) {
    let primary = Primary::start(db, "").await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(primary.base()).await;
    primary.accept(pkg("base", "1.0.0", &[])).await;
    let mirror = follower(dir.path(), &via, "poll = \"2s\"").await;
    primary
        .accept_all(
            (1..=9)
                .map(|i| pkg(&format!("p{i}"), "1.0.0", &[("base", "^1")]))
                .collect(),
        )
        .await;
    // A group: two members promoted under one serial.
    submit_group(
        &primary,
        vec![pkg("g1", "1.0.0", &[]), pkg("g2", "1.0.0", &[("g1", "^1")])],
    )
    .await;
    // An obsolescence that pins its dependents.
    primary.obsolete("base").await;
    // A cascading removal: g2 has no dependents and goes at once, and with
    // it g1, whose only dependent it was.
    assert_eq!(primary.obsolete("g1").await["removed"], json!([]));
    let removed = primary.obsolete("g2").await["removed"].clone();
    assert_eq!(removed.as_array().map(Vec::len), Some(2), "{removed}");
    assert!(
        caught_up(&primary, &mirror.base, Duration::from_secs(60)).await,
        "the follower caught up"
    );
    assert_equal(primary.base(), &mirror.base, &["g1", "g2"]).await;
    let pinned: Value = get(&mirror.base, "/api/v1/index/p1")
        .await
        .json()
        .await
        .unwrap();
    assert!(pinned["pins"]["base"].is_string(), "{pinned:#}");

    // Writes go to the primary.
    let (status, body) = crate::support::process::try_upload_to(
        &mirror.base,
        &primary.app.operator,
        pkg("late", "1.0.0", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:#}");
    assert_eq!(body["error"]["code"], "read_only_mirror");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&via),
        "{body:#}"
    );

    // The primary goes down: the follower still serves what it has.
    proxy.down.store(true, Ordering::SeqCst);
    let doc = get(&mirror.base, "/api/v1/index/p9").await;
    assert_eq!(doc.status(), StatusCode::OK);
    let archive = get(&mirror.base, "/api/v1/packages/p9/1.0.0/archive").await;
    assert_eq!(archive.status(), StatusCode::OK);
    let changes = get(&mirror.base, "/api/v1/changes?since=0").await;
    assert_eq!(changes.status(), StatusCode::OK);
    // Back up, it catches up with what happened meanwhile.
    primary.accept(pkg("p10", "1.0.0", &[])).await;
    proxy.down.store(false, Ordering::SeqCst);
    assert!(caught_up(&primary, &mirror.base, Duration::from_secs(60)).await);
    assert_equal(primary.base(), &mirror.base, &["g1", "g2"]).await;
    let metrics = get(&mirror.base, "/metrics").await.text().await.unwrap();
    assert!(metrics.contains("holdq_mirror_serial "), "{metrics}");
    assert!(metrics.contains("holdq_mirror_lag_serials 0"), "{metrics}");
}

async fn a_follower_refuses_an_archive_altered_in_transit_and_fetches_it_again(db: TestDb) {
    let primary = Primary::start(db, "").await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(primary.base()).await;
    proxy.alter.store(true, Ordering::SeqCst);
    primary.accept(pkg("wave", "1.0.0", &[])).await;
    let mirror = follower(dir.path(), &via, "poll = \"1s\"\nmax_backoff = \"1s\"").await;
    assert!(caught_up(&primary, &mirror.base, Duration::from_secs(60)).await);
    assert!(
        proxy.altered.load(Ordering::SeqCst),
        "the proxy altered an archive"
    );
    assert_equal(primary.base(), &mirror.base, &[]).await;
}

async fn a_push_makes_a_follower_with_a_ten_minute_poll_catch_up(db: TestDb) {
    let port = free_port();
    let primary = Primary::start(
        db,
        &format!("[[mirror.peer]]\nurl = \"http://127.0.0.1:{port}\""),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    primary.accept(pkg("first", "1.0.0", &[])).await;
    let mirror = follower_at(
        dir.path(),
        primary.base(),
        "poll = \"10m\"",
        Some(port),
        None,
    )
    .await;
    assert!(
        caught_up(&primary, &mirror.base, Duration::from_secs(30)).await,
        "the first ask"
    );
    // The first ask is answered; the next is 10 minutes away.
    wait_until(
        async || {
            let s: Value = get(&mirror.base, "/api/v1/mirror/status")
                .await
                .json()
                .await
                .unwrap();
            s["last_contact"].is_string().then_some(())
        },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    primary.accept(pkg("second", "1.0.0", &[])).await;
    assert!(
        caught_up(&primary, &mirror.base, Duration::from_secs(5)).await,
        "the push made the follower catch up within 5 s"
    );
    assert_equal(primary.base(), &mirror.base, &[]).await;
}

async fn a_follower_behind_a_pruned_log_starts_from_the_snapshot(db: TestDb) {
    let primary = Primary::keeping_changes_a_moment(db).await;
    primary
        .accept_all(["a", "b", "c"].map(|n| pkg(n, "1.0.0", &[])).to_vec())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mirror = follower_from_the_snapshot(&primary, dir.path()).await;
    assert_equal(primary.base(), &mirror.base, &[]).await;
}

/// Killed by each failpoint of its sync (after the first archive of a
/// page is stored, after the commit), then by SIGKILL after a random
/// number of archives: each time the documents it stores name only
/// archives it has, with
/// their sha256, and what it serves once restarted can all be fetched;
/// in the end it is equal to the primary.
async fn a_follower_killed_mid_sync_never_serves_an_entry_it_lacks_and_catches_up(db: TestDb) {
    let primary = Primary::start(db, "").await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(primary.base()).await;
    let mirror_settings = "poll = \"1s\"\nmax_backoff = \"500ms\"";
    let (data, follower_url) = follower_config(dir.path(), &via, mirror_settings);
    let port = free_port();
    for (round, failpoint) in ["mirror-after-archive", "mirror-after-commit"]
        .into_iter()
        .enumerate()
    {
        primary
            .accept_all(
                (1..=3)
                    .map(|i| pkg(&format!("r{round}x{i}"), "1.0.0", &[]))
                    .collect(),
            )
            .await;
        // The primary looks down until the follower answers, so the
        // failpoint is reached after it came up.
        proxy.down.store(true, Ordering::SeqCst);
        let mut mirror = follower_at(
            dir.path(),
            &via,
            mirror_settings,
            Some(port),
            Some(failpoint),
        )
        .await;
        proxy.down.store(false, Ordering::SeqCst);
        assert!(
            mirror.wait_exit(Duration::from_secs(60)).await,
            "{failpoint} aborted the follower"
        );
        let (index, whole) = index_is_whole(&follower_url, &data).await;
        assert!(whole, "after {failpoint}: {index:#}");
    }
    // SIGKILL after a random number of archives, while they come slowly.
    primary
        .accept_all(
            (1..=6)
                .map(|i| pkg(&format!("k{i}"), "1.0.0", &[]))
                .collect(),
        )
        .await;
    proxy.archive_delay_ms.store(150, Ordering::SeqCst);
    let before = proxy.archives.load(Ordering::SeqCst);
    let after = 1 + std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % 5;
    let mut mirror = follower_at(dir.path(), &via, mirror_settings, Some(port), None).await;
    wait_until(
        async || proxy.archives.load(Ordering::SeqCst) >= before + after,
        Duration::from_secs(60),
    )
    .await
    .expect("archives were fetched");
    mirror.kill();
    let (index, whole) = index_is_whole(&follower_url, &data).await;
    assert!(whole, "killed after {after} archives: {index:#}");
    proxy.archive_delay_ms.store(0, Ordering::SeqCst);

    let mirror = follower_at(dir.path(), &via, mirror_settings, Some(port), None).await;
    assert_eq!(unfetchable(&mirror.base).await, Vec::<String>::new());
    assert!(caught_up(&primary, &mirror.base, Duration::from_secs(60)).await);
    assert_equal(primary.base(), &mirror.base, &[]).await;
}

/// A reader polls the follower's whole index and downloads every archive
/// it names, again and again, while the follower syncs promotions, new
/// versions and an obsolescence (archives held back by the proxy, to
/// widen every window): every entry it is shown downloads, with its
/// sha256.
async fn a_reader_of_a_syncing_follower_never_sees_an_entry_it_cannot_download(db: TestDb) {
    let primary = Primary::start(db, "").await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(primary.base()).await;
    proxy.archive_delay_ms.store(100, Ordering::SeqCst);
    primary.accept(pkg("root", "1.0.0", &[])).await;
    let mirror = follower(dir.path(), &via, "poll = \"1s\"").await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (base, stop) = (mirror.base.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut rounds, mut serials, mut wrong) =
                (0, std::collections::BTreeSet::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                serials.insert(serial_of(&base).await);
                wrong.extend(unfetchable(&base).await);
                rounds += 1;
            }
            (rounds, serials, wrong)
        })
    };
    for i in 1..=4 {
        primary
            .accept_all(vec![
                pkg(&format!("leaf{i}"), "1.0.0", &[("root", "^1")]),
                pkg("root", &format!("1.{i}.0"), &[]),
            ])
            .await;
    }
    primary.obsolete("leaf1").await;
    assert!(caught_up(&primary, &mirror.base, Duration::from_secs(60)).await);
    stop.store(true, Ordering::SeqCst);
    let (rounds, serials, wrong) = reader.await.unwrap();
    assert_eq!(
        wrong,
        Vec::<String>::new(),
        "entries the reader could not download"
    );
    assert!(
        serials.len() >= 3,
        "the reader saw the follower move through {serials:?} in {rounds} rounds"
    );
    assert_equal(primary.base(), &mirror.base, &["leaf1"]).await;
}

on_both_databases!(
    a_follower_serves_the_package_pages_of_its_primary_and_still_does_while_it_is_down,
    a_follower_lists_a_new_dependent_on_the_page_of_the_package_it_depends_on,
    a_follower_started_from_the_snapshot_serves_the_same_package_pages,
    a_follower_fills_in_the_pages_of_documents_it_mirrored_before_it_kept_them,
);

/// An operator's call on the primary that must succeed.
async fn operator_call(
    primary: &Primary,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) {
    let (status, body) = primary.call(method, path, body).await;
    assert!(status.is_success(), "{path}: {status} {body:#}");
}

async fn text_of(base: &str, path: &str) -> (StatusCode, String) {
    let r = get(base, path).await;
    (r.status(), r.text().await.unwrap())
}

/// The follower's package API, dependents, package pages and listing
/// answer what the primary's do, byte for byte (anonymous pages carry
/// nothing of the visitor).
async fn assert_pages_equal(primary: &str, follower: &str, names: &[&str]) {
    let mut paths = vec!["/packages".to_owned()];
    for name in names {
        paths.push(format!("/api/v1/packages/{name}"));
        paths.push(format!("/api/v1/packages/{name}/dependents"));
        paths.push(format!("/packages/{name}"));
    }
    for path in &paths {
        let (ours, theirs) = (text_of(primary, path).await, text_of(follower, path).await);
        // A removed package has no dependents to list, on either.
        if !path.ends_with("/dependents") {
            assert_eq!(ours.0, StatusCode::OK, "{path} on the primary: {}", ours.1);
        }
        assert_eq!(theirs, ours, "{path} on the follower");
    }
}

async fn a_follower_serves_the_package_pages_of_its_primary_and_still_does_while_it_is_down(
    db: TestDb,
) {
    let primary = Primary::start(db, "").await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(primary.base()).await;
    let mirror = follower(dir.path(), &via, "poll = \"1s\"").await;
    let build = "mkdir -p $HOLDQ_DESTDIR/usr/bin && echo x > $HOLDQ_DESTDIR/usr/bin/wavectl";
    primary
        .accept(package_building("libwave", "2.1.0", &[], build, None))
        .await;
    primary
        .accept(pkg("player", "1.0.0", &[("libwave", "^2.1")]))
        .await;
    primary.accept(pkg("tool", "1.0.0", &[])).await;
    let obsolete = |reason: &str| Some(json!({ "reason": reason }));
    operator_call(
        &primary,
        reqwest::Method::POST,
        "/api/v1/packages/libwave/obsolete",
        obsolete("unmaintained upstream"),
    )
    .await;
    operator_call(
        &primary,
        reqwest::Method::DELETE,
        "/api/v1/packages/libwave/obsolete",
        None,
    )
    .await;
    operator_call(
        &primary,
        reqwest::Method::POST,
        "/api/v1/packages/tool/obsolete",
        obsolete("tool is done"),
    )
    .await;
    // libwave has a dependent: it stays, obsolete, and pins player.
    operator_call(
        &primary,
        reqwest::Method::POST,
        "/api/v1/packages/libwave/obsolete",
        obsolete("replaced upstream"),
    )
    .await;
    assert!(
        caught_up(&primary, &mirror.base, Duration::from_secs(60)).await,
        "the follower caught up"
    );
    let names = ["libwave", "player", "tool"];
    assert_pages_equal(primary.base(), &mirror.base, &names).await;

    // What the follower shows is what the primary recorded.
    let view: Value = get(&mirror.base, "/api/v1/packages/libwave")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["dependents"], json!(["player"]), "{view:#}");
    let events: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert!(events.len() >= 3, "obsoleted, undone, obsoleted: {view:#}");
    assert_eq!(view["state"], "obsolete", "{view:#}");
    let player: Value = get(&mirror.base, "/api/v1/packages/player")
        .await
        .json()
        .await
        .unwrap();
    assert!(player["pins"]["libwave"].is_string(), "{player:#}");
    // tool had no dependents: obsoleted, it was removed.
    let tool: Value = get(&mirror.base, "/api/v1/packages/tool")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tool["state"], "removed", "{tool:#}");
    let archive = get(&mirror.base, "/api/v1/packages/tool/1.0.0/archive").await;
    assert_eq!(archive.status(), StatusCode::NOT_FOUND);
    let (_, page) = text_of(&mirror.base, "/packages/libwave").await;
    assert!(
        page.contains("usr&#x2f;bin&#x2f;wavectl"),
        "executables: {page}"
    );
    assert!(page.contains("/packages/player"), "dependents: {page}");
    assert!(page.contains("unmaintained upstream"), "history: {page}");
    assert!(page.contains("id=\"obsolete\""), "the banner: {page}");
    let (_, page) = text_of(&mirror.base, "/packages/player").await;
    assert!(page.contains("→ 2.1.0"), "resolved version: {page}");
    let (_, listing) = text_of(&mirror.base, "/packages").await;
    assert!(listing.contains("/packages/libwave\""), "{listing}");
    assert!(listing.contains("/packages/player\""), "{listing}");
    assert!(!listing.contains("/packages/tool\""), "{listing}");
    let (_, found) = text_of(&mirror.base, "/packages?q=player").await;
    assert!(found.contains("/packages/player\""), "{found}");
    assert!(!found.contains("/packages/libwave\""), "{found}");

    // The primary goes down: the follower's pages stand.
    proxy.down.store(true, Ordering::SeqCst);
    assert_pages_equal(primary.base(), &mirror.base, &names).await;
    assert_equal(primary.base(), &mirror.base, &["tool"]).await;
}

async fn a_follower_lists_a_new_dependent_on_the_page_of_the_package_it_depends_on(db: TestDb) {
    let primary = Primary::start(db, "").await;
    let dir = tempfile::tempdir().unwrap();
    primary.accept(pkg("libwave", "1.0.0", &[])).await;
    let mirror = follower(dir.path(), primary.base(), "poll = \"1s\"").await;
    assert!(caught_up(&primary, &mirror.base, Duration::from_secs(60)).await);
    let (_, page) = text_of(&mirror.base, "/packages/libwave").await;
    assert!(
        page.contains("No stable package depends on libwave"),
        "{page}"
    );
    let before: Value = get(&mirror.base, "/api/v1/index/libwave")
        .await
        .json()
        .await
        .unwrap();

    // Promoting player changes libwave's dependents, not its document.
    primary
        .accept(pkg("player", "1.0.0", &[("libwave", "^1")]))
        .await;
    assert!(caught_up(&primary, &mirror.base, Duration::from_secs(60)).await);
    let after: Value = get(&mirror.base, "/api/v1/index/libwave")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before, after, "libwave's document did not change");
    let (_, page) = text_of(&mirror.base, "/packages/libwave").await;
    assert!(page.contains("<a href=\"/packages/player\">"), "{page}");
    let view: Value = get(&mirror.base, "/api/v1/packages/libwave")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["dependents"], json!(["player"]), "{view:#}");
    assert_eq!(view["dependents_count"], 1, "{view:#}");
    assert_pages_equal(primary.base(), &mirror.base, &["libwave", "player"]).await;
}

async fn a_follower_started_from_the_snapshot_serves_the_same_package_pages(db: TestDb) {
    let primary = Primary::keeping_changes_a_moment(db).await;
    let build = "mkdir -p $HOLDQ_DESTDIR/usr/bin && echo x > $HOLDQ_DESTDIR/usr/bin/wavectl";
    primary
        .accept(package_building("libwave", "2.1.0", &[], build, None))
        .await;
    primary
        .accept(pkg("player", "1.0.0", &[("libwave", "^2.1")]))
        .await;
    operator_call(
        &primary,
        reqwest::Method::POST,
        "/api/v1/packages/libwave/obsolete",
        Some(json!({ "reason": "replaced upstream" })),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mirror = follower_from_the_snapshot(&primary, dir.path()).await;
    assert_pages_equal(primary.base(), &mirror.base, &["libwave", "player"]).await;
    let (_, page) = text_of(&mirror.base, "/packages/libwave").await;
    assert!(page.contains("usr&#x2f;bin&#x2f;wavectl"), "{page}");
    assert!(page.contains("replaced upstream"), "{page}");
    assert!(page.contains("<a href=\"/packages/player\">"), "{page}");
}

async fn a_follower_fills_in_the_pages_of_documents_it_mirrored_before_it_kept_them(db: TestDb) {
    let primary = Primary::start(db, "").await;
    let dir = tempfile::tempdir().unwrap();
    primary.accept(pkg("libwave", "1.0.0", &[])).await;
    primary
        .accept(pkg("player", "1.0.0", &[("libwave", "^1")]))
        .await;
    let mut mirror = follower(dir.path(), primary.base(), "poll = \"1s\"").await;
    assert!(caught_up(&primary, &mirror.base, Duration::from_secs(60)).await);
    let port = mirror.port();
    mirror.kill();
    // As a follower mirrored before it kept records: documents only.
    {
        let url = format!(
            "sqlite://{}/holdq.db",
            dir.path().join("follower-data").display()
        );
        let old = holdq::db::Db::connect(&url).await.unwrap();
        for table in ["mirror_pages", "mirror_dependencies"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(old.pool())
                .await
                .unwrap();
        }
        old.pool().close().await;
    }
    let mirror = follower_at(
        dir.path(),
        primary.base(),
        "poll = \"1s\"",
        Some(port),
        None,
    )
    .await;
    let filled = wait_until(
        async || {
            let (_, page) = text_of(&mirror.base, "/packages").await;
            page.contains("/packages/libwave\"").then_some(())
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(filled.is_some(), "the listing was filled in");
    assert_pages_equal(primary.base(), &mirror.base, &["libwave", "player"]).await;
}
