//! Mirrors (SPEC section 10): a real `holdq serve --mirror-of` process on
//! its own SQLite follows a primary (the in-process server, on SQLite or
//! PostgreSQL) through a proxy the test controls: it ends equal to the
//! primary, byte for byte, after promotions, a group promotion and an
//! obsolescence with pins; refuses an archive altered in transit; refuses
//! uploads naming the primary; answers while the primary is down; catches
//! up after a push within seconds when its poll is 10 minutes; and starts
//! again from the snapshot when the primary's log was pruned.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::process::ServerProcess;
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_follower_ends_equal_to_its_primary_byte_for_byte_and_answers_while_it_is_down,
    a_follower_refuses_an_archive_altered_in_transit_and_fetches_it_again,
    a_push_makes_a_follower_with_a_ten_minute_poll_catch_up,
    a_follower_behind_a_pruned_log_starts_from_the_snapshot,
);

/// Between the follower and the primary: forwards every request, or
/// answers 503 while `down`, and flips a byte of the next archive while
/// `alter` is set (once).
#[derive(Clone)]
struct Proxy {
    primary: String,
    down: Arc<AtomicBool>,
    alter: Arc<AtomicBool>,
    altered: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(primary: &str) -> (Self, String) {
        let proxy = Self {
            primary: primary.to_owned(),
            down: Arc::default(),
            alter: Arc::default(),
            altered: Arc::default(),
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
    let resp = reqwest::Client::new()
        .request(method, format!("{}{path}", proxy.primary))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = resp.bytes().await.unwrap().to_vec();
    if path.ends_with("/archive") && proxy.alter.swap(false, Ordering::SeqCst) {
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        proxy.altered.store(true, Ordering::SeqCst);
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

async fn accept(app: &TestApp, body: Vec<u8>) {
    let id = app.upload_ok(&app.operator, body).await;
    app.drain().await;
    assert_eq!(app.upload_view(id).await["state"], "accepted");
}

/// Starts a follower of `primary` in `dir` with `[mirror]` settings.
async fn follower(dir: &Path, primary: &str, mirror: &str, port: Option<u16>) -> ServerProcess {
    let config = dir.join("follower.toml");
    std::fs::write(
        &config,
        format!("mirror_of = \"{primary}\"\n[mirror]\n{mirror}\n[[platform]]\nname = \"test\"\nlocal_workers = 0\n"),
    )
    .unwrap();
    let data = dir.join("follower-data");
    let url = format!("sqlite://{}/holdq.db", data.display());
    std::fs::create_dir_all(&data).unwrap();
    let port = port.unwrap_or_else(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    ServerProcess::start_on_port(port, &data, &url, None, Some(&config)).await
}

async fn get(base: &str, path: &str) -> reqwest::Response {
    reqwest::get(format!("{base}{path}")).await.unwrap()
}

async fn serial_of(base: &str) -> i64 {
    let status: Value = get(base, "/api/v1/mirror/status")
        .await
        .json()
        .await
        .unwrap();
    status["serial"].as_i64().unwrap()
}

async fn primary_serial(app: &TestApp) -> i64 {
    let mut conn = app.app.db.pool().acquire().await.unwrap();
    holdq::db::stable::serial(&mut conn).await.unwrap()
}

/// Waits until the follower at `base` is at the primary's serial.
async fn caught_up(app: &TestApp, base: &str, limit: Duration) -> bool {
    let want = primary_serial(app).await;
    wait_until(async || serial_of(base).await == want, limit)
        .await
        .is_some()
}

/// Every document (bytes and ETag) and every archive (bytes) of the
/// primary is the follower's.
async fn assert_equal(primary: &str, follower: &str) {
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
}

async fn a_follower_ends_equal_to_its_primary_byte_for_byte_and_answers_while_it_is_down(
    db: TestDb,
) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(&app.base).await;
    accept(&app, pkg("base", "1.0.0", &[])).await;
    let mirror = follower(dir.path(), &via, "poll = \"2s\"", None).await;
    for i in 1..=9 {
        accept(&app, pkg(&format!("p{i}"), "1.0.0", &[("base", "^1")])).await;
    }
    // A group: two members promoted under one serial.
    let group: Value = app
        .http
        .post(app.url("/api/v1/groups"))
        .bearer_auth(&app.operator)
        .json(&json!({ "expected": null }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let group = group["id"].as_i64().unwrap();
    for body in [pkg("g1", "1.0.0", &[]), pkg("g2", "1.0.0", &[("g1", "^1")])] {
        let r = app
            .http
            .post(app.url(&format!("/api/v1/uploads?group={group}")))
            .bearer_auth(&app.operator)
            .header("content-type", "application/gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let submitted = app
        .http
        .post(app.url(&format!("/api/v1/groups/{group}/submit")))
        .bearer_auth(&app.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::OK);
    app.drain().await;
    // An obsolescence that pins its dependents.
    let obsoleted = app
        .http
        .post(app.url("/api/v1/packages/base/obsolete"))
        .bearer_auth(&app.operator)
        .json(&json!({ "reason": "base is old" }))
        .send()
        .await
        .unwrap();
    assert!(
        obsoleted.status().is_success(),
        "{:?}",
        obsoleted.text().await
    );
    assert!(
        caught_up(&app, &mirror.base, Duration::from_secs(60)).await,
        "the follower caught up"
    );
    assert_equal(&app.base, &mirror.base).await;
    let pinned: Value = get(&mirror.base, "/api/v1/index/p1")
        .await
        .json()
        .await
        .unwrap();
    assert!(pinned["pins"]["base"].is_string(), "{pinned:#}");

    // Writes go to the primary.
    let (status, body) = crate::support::process::try_upload_to(
        &mirror.base,
        &app.operator,
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
    accept(&app, pkg("p10", "1.0.0", &[])).await;
    proxy.down.store(false, Ordering::SeqCst);
    assert!(caught_up(&app, &mirror.base, Duration::from_secs(60)).await);
    assert_equal(&app.base, &mirror.base).await;
    let metrics = get(&mirror.base, "/metrics").await.text().await.unwrap();
    assert!(metrics.contains("holdq_mirror_serial "), "{metrics}");
    assert!(metrics.contains("holdq_mirror_lag_serials 0"), "{metrics}");
}

async fn a_follower_refuses_an_archive_altered_in_transit_and_fetches_it_again(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(&app.base).await;
    proxy.alter.store(true, Ordering::SeqCst);
    accept(&app, pkg("wave", "1.0.0", &[])).await;
    let mirror = follower(
        dir.path(),
        &via,
        "poll = \"1s\"\nmax_backoff = \"1s\"",
        None,
    )
    .await;
    assert!(caught_up(&app, &mirror.base, Duration::from_secs(60)).await);
    assert!(
        proxy.altered.load(Ordering::SeqCst),
        "the proxy altered an archive"
    );
    assert_equal(&app.base, &mirror.base).await;
}

async fn a_push_makes_a_follower_with_a_ten_minute_poll_catch_up(db: TestDb) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn_with(db, |c| {
        c.mirror.peer = vec![holdq::config::MirrorPeer {
            url: format!("http://127.0.0.1:{port}"),
        }];
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    accept(&app, pkg("first", "1.0.0", &[])).await;
    let mirror = follower(dir.path(), &app.base, "poll = \"10m\"", Some(port)).await;
    assert!(
        caught_up(&app, &mirror.base, Duration::from_secs(30)).await,
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
    accept(&app, pkg("second", "1.0.0", &[])).await;
    assert!(
        caught_up(&app, &mirror.base, Duration::from_secs(5)).await,
        "the push made the follower catch up within 5 s"
    );
    assert_equal(&app.base, &mirror.base).await;
}

async fn a_follower_behind_a_pruned_log_starts_from_the_snapshot(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.index.changes_kept = Duration::from_millis(1)).await;
    for name in ["a", "b", "c"] {
        accept(&app, pkg(name, "1.0.0", &[])).await;
    }
    wait_until(
        async || (holdq::service::changes::prune(&app.app).await.unwrap() > 0).then_some(()),
        Duration::from_secs(10),
    )
    .await
    .expect("the log was pruned");
    let dir = tempfile::tempdir().unwrap();
    let mirror = follower(dir.path(), &app.base, "poll = \"1s\"", None).await;
    assert!(caught_up(&app, &mirror.base, Duration::from_secs(60)).await);
    let status: Value = get(&mirror.base, "/api/v1/mirror/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["snapshots"], 1, "{status:#}");
    assert_equal(&app.base, &mirror.base).await;
}

on_both_databases!(
    a_follower_serves_the_package_pages_of_its_primary_and_still_does_while_it_is_down,
    a_follower_lists_a_new_dependent_on_the_page_of_the_package_it_depends_on,
    a_follower_started_from_the_snapshot_serves_the_same_package_pages,
    a_follower_fills_in_the_pages_of_documents_it_mirrored_before_it_kept_them,
);

/// An operator's call on the primary that must succeed.
async fn operator_call(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) {
    let mut request = app
        .http
        .request(method, app.url(path))
        .bearer_auth(&app.operator);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {:?}", r.text().await);
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
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, via) = Proxy::start(&app.base).await;
    let mirror = follower(dir.path(), &via, "poll = \"1s\"", None).await;
    let build = "mkdir -p $HOLDQ_DESTDIR/usr/bin && echo x > $HOLDQ_DESTDIR/usr/bin/wavectl";
    accept(&app, package_building("libwave", "2.1.0", &[], build, None)).await;
    accept(&app, pkg("player", "1.0.0", &[("libwave", "^2.1")])).await;
    accept(&app, pkg("tool", "1.0.0", &[])).await;
    let obsolete = |reason: &str| Some(json!({ "reason": reason }));
    operator_call(
        &app,
        reqwest::Method::POST,
        "/api/v1/packages/libwave/obsolete",
        obsolete("unmaintained upstream"),
    )
    .await;
    operator_call(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/packages/libwave/obsolete",
        None,
    )
    .await;
    operator_call(
        &app,
        reqwest::Method::POST,
        "/api/v1/packages/tool/obsolete",
        obsolete("tool is done"),
    )
    .await;
    // libwave has a dependent: it stays, obsolete, and pins player.
    operator_call(
        &app,
        reqwest::Method::POST,
        "/api/v1/packages/libwave/obsolete",
        obsolete("replaced upstream"),
    )
    .await;
    assert!(
        caught_up(&app, &mirror.base, Duration::from_secs(60)).await,
        "the follower caught up"
    );
    let names = ["libwave", "player", "tool"];
    assert_pages_equal(&app.base, &mirror.base, &names).await;

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
    assert_pages_equal(&app.base, &mirror.base, &names).await;
    assert_equal(&app.base, &mirror.base).await;
}

async fn a_follower_lists_a_new_dependent_on_the_page_of_the_package_it_depends_on(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    accept(&app, pkg("libwave", "1.0.0", &[])).await;
    let mirror = follower(dir.path(), &app.base, "poll = \"1s\"", None).await;
    assert!(caught_up(&app, &mirror.base, Duration::from_secs(60)).await);
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
    accept(&app, pkg("player", "1.0.0", &[("libwave", "^1")])).await;
    assert!(caught_up(&app, &mirror.base, Duration::from_secs(60)).await);
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
    assert_pages_equal(&app.base, &mirror.base, &["libwave", "player"]).await;
}

async fn a_follower_started_from_the_snapshot_serves_the_same_package_pages(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.index.changes_kept = Duration::from_millis(1)).await;
    let build = "mkdir -p $HOLDQ_DESTDIR/usr/bin && echo x > $HOLDQ_DESTDIR/usr/bin/wavectl";
    accept(&app, package_building("libwave", "2.1.0", &[], build, None)).await;
    accept(&app, pkg("player", "1.0.0", &[("libwave", "^2.1")])).await;
    operator_call(
        &app,
        reqwest::Method::POST,
        "/api/v1/packages/libwave/obsolete",
        Some(json!({ "reason": "replaced upstream" })),
    )
    .await;
    wait_until(
        async || (holdq::service::changes::prune(&app.app).await.unwrap() > 0).then_some(()),
        Duration::from_secs(10),
    )
    .await
    .expect("the log was pruned");
    let dir = tempfile::tempdir().unwrap();
    let mirror = follower(dir.path(), &app.base, "poll = \"1s\"", None).await;
    assert!(caught_up(&app, &mirror.base, Duration::from_secs(60)).await);
    let status: Value = get(&mirror.base, "/api/v1/mirror/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["snapshots"], 1, "{status:#}");
    assert_pages_equal(&app.base, &mirror.base, &["libwave", "player"]).await;
    let (_, page) = text_of(&mirror.base, "/packages/libwave").await;
    assert!(page.contains("usr&#x2f;bin&#x2f;wavectl"), "{page}");
    assert!(page.contains("replaced upstream"), "{page}");
    assert!(page.contains("<a href=\"/packages/player\">"), "{page}");
}

async fn a_follower_fills_in_the_pages_of_documents_it_mirrored_before_it_kept_them(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    accept(&app, pkg("libwave", "1.0.0", &[])).await;
    accept(&app, pkg("player", "1.0.0", &[("libwave", "^1")])).await;
    let mut mirror = follower(dir.path(), &app.base, "poll = \"1s\"", None).await;
    assert!(caught_up(&app, &mirror.base, Duration::from_secs(60)).await);
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
    let mirror = follower(dir.path(), &app.base, "poll = \"1s\"", Some(port)).await;
    let filled = wait_until(
        async || {
            let (_, page) = text_of(&mirror.base, "/packages").await;
            page.contains("/packages/libwave\"").then_some(())
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(filled.is_some(), "the listing was filled in");
    assert_pages_equal(&app.base, &mirror.base, &["libwave", "player"]).await;
}
