//! The per-package stable index and the changes log (SPEC section 10):
//! each document matches the database after every kind of stable change,
//! only touched documents are rewritten, ETag and 304, the changes after a
//! serial (paged, long-polled, 410 once pruned), the streamed snapshot, a
//! crash after a change's documents are written and before its commit,
//! and readers that see every document of a large change or none.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::index::{assert_documents_match, assert_log_matches_serial, stored_documents};
use crate::support::process::{ServerProcess, index_is_whole};
use crate::support::{TestApp, TestDb};

on_both_databases!(
    every_document_matches_the_database_after_each_kind_of_stable_change,
    a_document_has_an_etag_and_answers_304_to_if_none_match,
    changes_since_a_serial_list_exactly_the_later_ones_in_pages,
    a_long_poll_returns_when_a_promotion_happens,
    a_pruned_log_answers_gone_and_the_snapshot_is_where_to_start_again,
    a_crash_before_the_commit_leaves_every_document_old,
    another_server_catches_its_model_up_from_the_changes_log,
    an_obsolescence_of_many_dependents_is_seen_whole_or_not_at_all,
    thousands_of_documents_are_stored_in_batches_and_read_back,
    the_document_files_of_an_older_release_move_into_the_database,
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
    assert_documents_match(app.app.db.pool()).await;
}

/// The serial at which a package's stored document was last written.
async fn written_at(app: &TestApp, name: &str) -> i64 {
    let (serial,): (i64,) = sqlx::query_as(
        "SELECT d.serial FROM index_documents d JOIN packages p ON p.id = d.package_id \
         WHERE p.name = $1",
    )
    .bind(name)
    .fetch_one(app.app.db.pool())
    .await
    .unwrap();
    serial
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
    let (a_before, e_before) = (written_at(&app, "a").await, written_at(&app, "e").await);
    accept(&app, &op, pkg("c", "1.0.0", &[("a", "^1")])).await;
    assert_eq!(touched(&last_change(&app).await), ["c"]);
    assert_eq!(
        (written_at(&app, "a").await, written_at(&app, "e").await),
        (a_before, e_before)
    );
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
    assert_eq!(written_at(&app, "e").await, e_before);
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
    let gone = app.get(None, "/api/v1/index/c").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    matches(&app).await;

    // The whole index, streamed, is the stored documents.
    let whole = app.get(None, "/api/v1/index").await.body;
    let stored = stored_documents(app.app.db.pool()).await;
    assert_eq!(whole["packages"], serde_json::to_value(&stored).unwrap());
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

/// Aborted after the obsolescence wrote its documents and before it
/// committed: every document is the old one (they were written in the
/// transaction), the log matches the serial, and the restarted server
/// obsoletes it whole.
async fn a_crash_before_the_commit_leaves_every_document_old(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("a", "1.0.0", &[])).await;
    accept(&app, &op, pkg("b", "1.0.0", &[("a", "^1")])).await;
    accept(&app, &op, pkg("c", "1.0.0", &[("a", "^1")])).await;
    let data = app.app.config.data_dir.clone();
    let before = stored_documents(app.app.db.pool()).await;

    let mut server =
        ServerProcess::start(&data, &app.database_url, Some("obsolete-before-commit")).await;
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

    assert_log_matches_serial(app.app.db.pool()).await;
    let (index, whole) = index_is_whole(&app.database_url, &data).await;
    assert!(whole, "{index}");
    assert_eq!(index["serial"], 3);
    assert_eq!(stored_documents(app.app.db.pool()).await, before);
    matches(&app).await;

    let restarted = ServerProcess::start(&data, &app.database_url, None).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/packages/a/obsolete", restarted.base))
        .bearer_auth(&op)
        .json(&json!({ "reason": "old" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    matches(&app).await;
    let after = stored_documents(app.app.db.pool()).await;
    assert_eq!(after["b"]["pins"]["a"], "^1, <=1.0.0");
    assert_eq!(after["c"]["pins"]["a"], "^1, <=1.0.0");
    assert_eq!(after["a"]["serial"], 4);
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

/// How many of `names` the streamed whole index shows pinned on `a`.
async fn pinned_in_stream(app: &TestApp, names: &[String]) -> (i64, usize) {
    let whole = app.get(None, "/api/v1/index").await.body;
    let pinned = names
        .iter()
        .filter(|d| !whole["packages"][d.as_str()]["pins"]["a"].is_null())
        .count();
    (whole["serial"].as_i64().unwrap(), pinned)
}

/// An obsolescence pinning forty dependents: one change, every document as
/// the tables say, the emails queued; and readers of the whole index while
/// it runs see every dependent pinned or none (one snapshot, one change).
async fn an_obsolescence_of_many_dependents_is_seen_whole_or_not_at_all(db: TestDb) {
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
    let serial_before = last_change(&app).await["serial"].as_i64().unwrap();

    let done = std::sync::atomic::AtomicBool::new(false);
    let reader = async {
        let mut seen = Vec::new();
        // At least one read after the change, whatever the timing.
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            seen.push(pinned_in_stream(&app, &dependents).await);
            if finished {
                return seen;
            }
        }
    };
    let obsoleting = async {
        let body = obsolete(&app, &op, "a", json!({ "reason": "superseded" })).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        body
    };
    let (seen, body) = tokio::join!(reader, obsoleting);
    for (serial, pinned) in &seen {
        let want = if *serial > serial_before { 40 } else { 0 };
        assert_eq!(
            *pinned, want,
            "a reader at serial {serial} saw {pinned} of 40 pinned"
        );
    }
    assert_eq!(seen.last().unwrap(), &(serial_before + 1, 40));
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
    for d in &dependents {
        assert_eq!(
            written_at(&app, d).await,
            serial_before + 1,
            "{d} was rewritten"
        );
    }
    let (queued,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE kind = 'dependency_obsoleted'")
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
    assert_eq!(queued, 40);
}

/// More documents than one statement stores (an obsolescence of a package
/// with thousands of dependents), stored and replaced through the
/// database layer: each one read back as written, none lost at a batch's
/// edge.
async fn thousands_of_documents_are_stored_in_batches_and_read_back(db: TestDb) {
    use holdq::db::stable::{NewDocument, document, documents_after, put_documents};
    let app = TestApp::spawn(db).await;
    let n = 2_345;
    let names: Vec<String> = (0..n).map(|i| format!("p{i:04}")).collect();
    let mut tx = app.app.db.begin_write().await.unwrap();
    let mut ids = Vec::new();
    for name in &names {
        let (id,): (i64,) =
            sqlx::query_as("INSERT INTO packages (name, created_at) VALUES ($1, 0) RETURNING id")
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        ids.push(id);
    }
    for round in 1..=2_i64 {
        let bodies: Vec<(String, String)> = names
            .iter()
            .map(|n| {
                let body = json!({ "name": n, "round": round }).to_string();
                (
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
                    body,
                )
            })
            .collect();
        let docs: Vec<NewDocument> = ids
            .iter()
            .zip(&bodies)
            .map(|(id, (sha256, body))| NewDocument {
                package_id: *id,
                serial: round,
                sha256,
                body,
            })
            .collect();
        put_documents(&mut tx, &docs).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut conn = app.app.db.pool().acquire().await.unwrap();
    let mut read = Vec::new();
    let mut after = String::new();
    loop {
        let page = documents_after(&mut conn, &after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.name.clone();
        read.extend(page);
    }
    assert_eq!(read.len(), n);
    for (d, name) in read.iter().zip(&names) {
        assert_eq!(&d.name, name);
        assert_eq!(d.serial, 2);
        assert_eq!(d.body, json!({ "name": name, "round": 2 }).to_string());
    }
    let one = document(&mut conn, "p1000").await.unwrap().unwrap();
    assert_eq!(one.body, read[1000].body);
    assert!(document(&mut conn, "nope").await.unwrap().is_none());
}

/// A data directory of the release before, whose documents were files
/// (`index_documents` rows without a body, `stable/index/`): the server
/// writes each document from the tables and deletes the files.
async fn the_document_files_of_an_older_release_move_into_the_database(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let op = app.operator.clone();
    accept(&app, &op, pkg("a", "1.0.0", &[])).await;
    accept(&app, &op, pkg("b", "1.0.0", &[("a", "^1")])).await;
    let before = stored_documents(app.app.db.pool()).await;
    sqlx::query("UPDATE index_documents SET body = NULL, sha256 = NULL")
        .execute(app.app.db.pool())
        .await
        .unwrap();
    let stable = app.app.config.data_dir.join("stable");
    std::fs::create_dir_all(stable.join("index")).unwrap();
    std::fs::write(stable.join("index/a.json"), before["a"].to_string()).unwrap();
    std::fs::write(stable.join("index-serial"), "2").unwrap();
    let missing = app.get(None, "/api/v1/index/a").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let written = holdq::service::index::write_unwritten(&app.app)
        .await
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(stored_documents(app.app.db.pool()).await, before);
    matches(&app).await;
    assert!(!stable.join("index").exists() && !stable.join("index-serial").exists());
    assert_eq!(app.get(None, "/api/v1/index/b").await.body, before["b"]);
    let again = holdq::service::index::write_unwritten(&app.app)
        .await
        .unwrap();
    assert_eq!(again, 0);
}
