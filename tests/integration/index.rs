//! The per-package stable index and the changes log (SPEC section 10):
//! each document matches the database after every kind of stable change,
//! only touched documents are rewritten, ETag and 304, the changes after a
//! serial (paged, long-polled, 410 once pruned), the streamed snapshot, and
//! a crash in the middle of writing documents.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::index::{assert_documents_match, assert_log_matches_serial, documents_on_disk};
use crate::support::process::{ServerProcess, index_is_whole};
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    every_document_matches_the_database_after_each_kind_of_stable_change,
    a_document_has_an_etag_and_answers_304_to_if_none_match,
    changes_since_a_serial_list_exactly_the_later_ones_in_pages,
    a_long_poll_returns_when_a_promotion_happens,
    a_pruned_log_answers_gone_and_the_snapshot_is_where_to_start_again,
    a_crash_between_two_documents_leaves_each_old_or_new_and_restart_repairs,
    another_server_catches_its_model_up_from_the_changes_log,
    an_obsolescence_of_many_dependents_writes_every_document_in_one_batch,
);

/// A package whose build passes.
fn pkg(name: &str, version: &str, deps: &[(&str, &str)]) -> Vec<u8> {
    package_building(name, version, deps, "true", None)
}

async fn accept(app: &TestApp, token: &str, body: Vec<u8>) -> i64 {
    let id = app.upload_ok(token, body).await;
    app.drain().await;
    assert_eq!(app.upload_view(id).await["state"], "accepted");
    id
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or_default())
}

/// Obsoletes `name` with `request`; returns the answer, which must be 200.
async fn obsolete(app: &TestApp, token: &str, name: &str, request: Value) -> Value {
    let path = format!("/api/v1/packages/{name}/obsolete");
    let (status, body) = post(app, token, &path, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn matches(app: &TestApp) {
    assert_documents_match(app.app.db.pool(), &app.app.config.data_dir).await;
}

/// The inode of a package's document: a rewrite renames a new file over it.
fn inode(app: &TestApp, name: &str) -> u64 {
    let path = app.app.stable.document_path(name);
    std::fs::metadata(path).unwrap().ino()
}

async fn last_change(app: &TestApp) -> Value {
    let page = app.get(None, "/api/v1/changes?since=0&limit=1000").await;
    page.body["changes"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
}

fn touched(change: &Value) -> Vec<&str> {
    change["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

/// Promotes `a` and `b` as one group.
async fn promote_group(app: &TestApp, token: &str, a: Vec<u8>, b: Vec<u8>) {
    let (status, group) = post(app, token, "/api/v1/groups", json!({ "expected": null })).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group = group["id"].as_i64().unwrap();
    for body in [a, b] {
        let r = app
            .http
            .post(app.url(&format!("/api/v1/uploads?group={group}")))
            .bearer_auth(token)
            .header("content-type", "application/gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (status, _) = post(
        app,
        token,
        &format!("/api/v1/groups/{group}/submit"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.drain().await;
}

async fn every_document_matches_the_database_after_each_kind_of_stable_change(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("a", "1.0.0", &[])).await;
    accept(&app, &op, pkg("a", "1.1.0", &[])).await;
    accept(&app, &op, pkg("e", "1.0.0", &[])).await;
    accept(&app, &op, pkg("b", "1.0.0", &[("a", "^1")])).await;
    matches(&app).await;

    // A promotion rewrites its own package's document only.
    let (a_before, e_before) = (inode(&app, "a"), inode(&app, "e"));
    accept(&app, &op, pkg("c", "1.0.0", &[("a", "^1")])).await;
    assert_eq!(touched(&last_change(&app).await), ["c"]);
    assert_eq!((inode(&app, "a"), inode(&app, "e")), (a_before, e_before));
    matches(&app).await;

    promote_group(
        &app,
        &op,
        pkg("x", "1.0.0", &[]),
        pkg("y", "1.0.0", &[("x", "^1")]),
    )
    .await;
    let group = last_change(&app).await;
    assert_eq!(
        (group["kind"].as_str(), touched(&group)),
        (Some("group_promotion"), vec!["x", "y"])
    );
    matches(&app).await;

    // Obsolescence: the package and its pinned dependents, nothing else.
    obsolete(
        &app,
        &op,
        "a",
        json!({ "reason": "old", "replacement": "e" }),
    )
    .await;
    let change = last_change(&app).await;
    assert_eq!(
        (change["kind"].as_str(), touched(&change)),
        (Some("obsolescence"), vec!["a", "b", "c"])
    );
    assert_eq!(inode(&app, "e"), e_before);
    matches(&app).await;

    let undo = app
        .http
        .delete(app.url("/api/v1/packages/a/obsolete"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(undo.status(), StatusCode::NO_CONTENT);
    let change = last_change(&app).await;
    assert_eq!(
        (change["kind"].as_str(), touched(&change)),
        (Some("undo"), vec!["a", "b", "c"])
    );
    matches(&app).await;

    // Removal cascades: c obsolete, then its only dependent d drops it.
    accept(&app, &op, pkg("d", "1.0.0", &[("c", "^1")])).await;
    let (status, body) = post(
        &app,
        &op,
        "/api/v1/packages/c/obsolete",
        json!({ "reason": "done" }),
    )
    .await;
    assert_eq!(
        (status, &body["removed"]),
        (StatusCode::OK, &json!([])),
        "{body}"
    );
    accept(&app, &op, pkg("d", "1.1.0", &[])).await;
    let removal = last_change(&app).await;
    assert_eq!(removal["kind"], "removal");
    assert_eq!(
        removal["packages"],
        json!([{ "name": "c", "sha256": null }, { "name": "d", "sha256": removal["packages"][1]["sha256"] }])
    );
    assert!(!app.app.stable.document_path("c").exists());
    matches(&app).await;

    // The whole index, streamed, is the documents on disk.
    let whole = app.get(None, "/api/v1/index").await.body;
    let on_disk = documents_on_disk(&app.app.config.data_dir);
    assert_eq!(whole["packages"], serde_json::to_value(&on_disk).unwrap());
    assert_eq!(whole["serial"], removal["serial"]);
}

async fn a_document_has_an_etag_and_answers_304_to_if_none_match(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("lib", "1.0.0", &[])).await;
    let get = |etag: Option<String>| {
        let mut req = app.http.get(app.url("/api/v1/index/lib"));
        if let Some(etag) = etag {
            req = req.header("if-none-match", etag);
        }
        req.send()
    };
    let first = get(None).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let document: Value = first.json().await.unwrap();
    assert_eq!(document["versions"][0]["version"], "1.0.0");
    assert_eq!(
        etag,
        format!(
            "\"{}\"",
            last_change(&app).await["packages"][0]["sha256"]
                .as_str()
                .unwrap()
        )
    );

    let again = get(Some(etag.clone())).await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let weak = get(Some(format!("\"other\", W/{etag}"))).await.unwrap();
    assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);

    accept(&app, &op, pkg("lib", "1.1.0", &[])).await;
    let changed = get(Some(etag.clone())).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let document: Value = changed.json().await.unwrap();
    assert_eq!(document["versions"][1]["version"], "1.1.0");

    let missing = app.get(None, "/api/v1/index/nothing-here").await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

async fn changes_since_a_serial_list_exactly_the_later_ones_in_pages(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    for name in ["p", "q", "r"] {
        accept(&app, &op, pkg(name, "1.0.0", &[])).await;
    }
    let all = app.get(None, "/api/v1/changes?since=0").await.body;
    let serials: Vec<i64> = all["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_i64().unwrap())
        .collect();
    assert_eq!(serials, [1, 2, 3]);
    assert_eq!(
        (all["serial"].as_i64(), all["more"].as_bool()),
        (Some(3), Some(false))
    );
    assert!(
        all["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["kind"] == "promotion")
    );

    let page = app.get(None, "/api/v1/changes?since=1&limit=1").await.body;
    assert_eq!(page["changes"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            page["changes"][0]["serial"].as_i64(),
            page["more"].as_bool()
        ),
        (Some(2), Some(true))
    );
    assert_eq!(touched(&page["changes"][0]), ["q"]);
    let end = app.get(None, "/api/v1/changes?since=3").await.body;
    assert_eq!(end["changes"], json!([]));

    let ahead = app.get(None, "/api/v1/changes?since=9").await;
    assert_eq!(ahead.status, StatusCode::BAD_REQUEST);
    assert!(ahead.message().contains("ahead"), "{}", ahead.message());
    let no_since = app.get(None, "/api/v1/changes").await;
    assert_eq!(no_since.status, StatusCode::BAD_REQUEST);
    assert!(
        no_since.message().contains("since"),
        "{}",
        no_since.message()
    );
    let bad_limit = app.get(None, "/api/v1/changes?since=0&limit=0").await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
}

async fn a_long_poll_returns_when_a_promotion_happens(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("first", "1.0.0", &[])).await;
    let url = app.url("/api/v1/changes?since=1&wait=30");
    let http = app.http.clone();
    let poll = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        (body, started.elapsed())
    });
    accept(&app, &op, pkg("second", "1.0.0", &[])).await;
    let (body, took) = tokio::time::timeout(Duration::from_secs(40), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["changes"][0]["serial"], 2, "{body}");
    assert_eq!(touched(&body["changes"][0]), ["second"]);
    assert!(
        took < Duration::from_secs(30),
        "it returned on the change, not at the deadline"
    );
}

async fn a_pruned_log_answers_gone_and_the_snapshot_is_where_to_start_again(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.index.changes_kept = Duration::ZERO).await;
    let op = app.operator.clone();
    for name in ["p", "q", "r"] {
        accept(&app, &op, pkg(name, "1.0.0", &[])).await;
    }
    // Keeps the latest change, whatever its age.
    wait_pruned(&app).await;
    let gone = app.get(None, "/api/v1/changes?since=0").await;
    assert_eq!((gone.status, gone.code()), (StatusCode::GONE, "gone"));
    assert!(
        gone.message().contains("/api/v1/snapshot"),
        "{}",
        gone.message()
    );
    let kept = app.get(None, "/api/v1/changes?since=2").await;
    assert_eq!(kept.body["changes"][0]["serial"], 3, "{:?}", kept.body);

    let snapshot = app.get(None, "/api/v1/snapshot").await.body;
    assert_eq!(snapshot["serial"], 3);
    let names: Vec<&String> = snapshot["packages"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["p", "q", "r"]);
    assert_eq!(snapshot["packages"]["q"]["serial"], 2);
}

async fn wait_pruned(app: &TestApp) {
    holdq::service::changes::prune(&app.app).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM stable_changes")
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

async fn a_crash_between_two_documents_leaves_each_old_or_new_and_restart_repairs(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("a", "1.0.0", &[])).await;
    accept(&app, &op, pkg("b", "1.0.0", &[("a", "^1")])).await;
    accept(&app, &op, pkg("c", "1.0.0", &[("a", "^1")])).await;
    let data = app.app.config.data_dir.clone();
    let before = documents_on_disk(&data);

    let mut server =
        ServerProcess::start(&data, &app.database_url, Some("index-after-first-document")).await;
    let result = reqwest::Client::new()
        .post(format!("{}/api/v1/packages/a/obsolete", server.base))
        .bearer_auth(&op)
        .json(&json!({ "reason": "old" }))
        .send()
        .await;
    assert!(result.is_err() || !result.unwrap().status().is_success());
    assert!(
        server.wait_exit(Duration::from_secs(30)).await,
        "the failpoint aborted the server"
    );

    // Committed: the log matches the serial. On disk one document is new,
    // the others old, each whole.
    assert_log_matches_serial(app.app.db.pool()).await;
    let (index, whole) = index_is_whole(&data);
    assert!(whole, "{index}");
    assert_eq!(index["serial"], 3, "the disk does not claim the new serial");
    let mut new = 0;
    for (name, document) in documents_on_disk(&data) {
        if document != before[&name] {
            assert_eq!(document["serial"], 4, "{name}: {document}");
            new += 1;
        }
    }
    assert_eq!(new, 1, "the abort came after the first document");

    let _restarted = ServerProcess::start(&data, &app.database_url, None).await;
    matches(&app).await;
    assert_eq!(index_is_whole(&data).0["serial"], 4);
    assert_eq!(documents_on_disk(&data)["b"]["pins"]["a"], "^1, <=1.0.0");
}

/// What a model says of the packages of this test, for comparing two.
fn summary(repo: &holdq::domain::graph::StableRepo) -> Value {
    let name = |n: &str| holdq::domain::PackageName::parse(n).unwrap();
    json!({
        "a_dependents": repo.dependents(&name("a")).iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "a_latest": repo.latest(&name("a")).map(|r| r.version.to_string()),
        "a_obsolete": repo.is_obsolete(&name("a")),
        "b_pin": repo.pin_of(&name("b"), &name("a")).map(|v| v.to_string()),
        "d": repo.contains(&name("d")),
    })
}

async fn another_server_catches_its_model_up_from_the_changes_log(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("a", "1.0.0", &[])).await;
    accept(&app, &op, pkg("b", "1.0.0", &[("a", "^1")])).await;
    let sandbox = || holdq::sandbox::Sandbox::new(env!("CARGO_BIN_EXE_holdq").into());
    let other = holdq::service::App::open_with((*app.app.config).clone(), sandbox())
        .await
        .unwrap();
    holdq::service::stable::with_repo(&other, |_| ())
        .await
        .unwrap();

    // The first server changes stable four times behind the other's back.
    accept(&app, &op, pkg("a", "1.1.0", &[])).await;
    accept(&app, &op, pkg("d", "1.0.0", &[("a", "^1")])).await;
    obsolete(&app, &op, "a", json!({ "reason": "old" })).await;

    assert!(
        holdq::service::stable::catch_up(&other).await.unwrap(),
        "caught up from the log"
    );
    let caught = holdq::service::stable::with_repo(&other, summary)
        .await
        .unwrap();
    let fresh = holdq::service::App::open_with((*app.app.config).clone(), sandbox())
        .await
        .unwrap();
    let loaded = holdq::service::stable::with_repo(&fresh, summary)
        .await
        .unwrap();
    assert_eq!(caught, loaded);
    assert_eq!(
        caught,
        json!({ "a_dependents": ["b", "d"], "a_latest": "1.1.0", "a_obsolete": true, "b_pin": "1.1.0", "d": true })
    );
}

/// The files of the index directory that are not documents (temporary
/// files, old documents swapped out and not yet deleted).
fn leftovers(app: &TestApp) -> Vec<String> {
    std::fs::read_dir(app.app.stable.index_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| !f.ends_with(".json") || f.starts_with('.'))
        .collect()
}

/// An obsolescence pinning more dependents than are synced one by one:
/// the batched write (all written, the filesystem synced once, all
/// swapped in, the old ones deleted in the background), the emails queued
/// in one statement, every document as the tables say.
async fn an_obsolescence_of_many_dependents_writes_every_document_in_one_batch(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("a", "1.0.0", &[])).await;
    let dependents: Vec<String> = (0..40).map(|i| format!("d{i:02}")).collect();
    let mut ids = Vec::new();
    for name in &dependents {
        ids.push(app.upload_ok(&op, pkg(name, "1.0.0", &[("a", "^1")])).await);
    }
    app.drain().await;
    for id in ids {
        assert_eq!(app.upload_view(id).await["state"], "accepted");
    }
    let before: Vec<u64> = dependents.iter().map(|d| inode(&app, d)).collect();

    let body = obsolete(&app, &op, "a", json!({ "reason": "superseded" })).await;
    assert_eq!(body["pins"].as_array().unwrap().len(), 40, "{body}");
    assert_eq!(body["emails"], 40, "{body}");

    let change = last_change(&app).await;
    let mut expected: Vec<&str> = dependents.iter().map(String::as_str).collect();
    expected.insert(0, "a");
    assert_eq!(
        (change["kind"].as_str(), touched(&change)),
        (Some("obsolescence"), expected)
    );
    matches(&app).await;
    let on_disk = documents_on_disk(&app.app.config.data_dir);
    for (d, old) in dependents.iter().zip(before) {
        assert_eq!(on_disk[d]["pins"]["a"], "^1, <=1.0.0", "{d}");
        assert_ne!(inode(&app, d), old, "{d} was rewritten whole");
    }
    let (queued,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE kind = 'dependency_obsoleted'")
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
    assert_eq!(queued, 40);
    let cleaned = wait_until(async || leftovers(&app).is_empty(), Duration::from_secs(30)).await;
    assert!(
        cleaned.is_some(),
        "left in the index: {:?}",
        leftovers(&app)
    );
}
