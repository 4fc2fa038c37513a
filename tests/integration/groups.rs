//! Upload groups (SPEC section 3, rule 8): archives uploaded together are
//! checked against each other and accepted under one serial, or rejected
//! as a whole; a newer upload of a member supersedes the group; a group
//! left open expires; a member refused at upload refuses the group.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::{Tar, manifest, package_building};
use crate::support::process::{ServerProcess, index_is_whole};
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_group_is_checked_together_and_accepted_under_one_serial,
    a_failing_member_rejects_the_whole_group_with_one_email_per_maintainer,
    a_newer_upload_of_a_member_supersedes_the_group_silently,
    a_member_refused_at_upload_refuses_the_group,
    a_group_left_open_expires_and_its_uploads_are_discarded,
    a_crash_in_the_middle_of_a_group_promotion_leaves_all_or_none,
);

/// lib `version` shipping the files `functions`.
fn lib(version: &str, functions: &[&str]) -> Vec<u8> {
    let top = format!("lib-{version}");
    let text =
        manifest("lib", version, &[]).replace("command = \"sh build.sh\"", "command = \"true\"");
    let mut tar = Tar::new()
        .dir(&top)
        .file(&format!("{top}/package.toml"), text.as_bytes());
    for f in functions {
        tar = tar.file(&format!("{top}/{f}"), f.as_bytes());
    }
    tar.gz()
}

/// app `version` on lib `req`, whose build needs lib's file `uses`.
fn app_using(version: &str, req: &str, uses: &str) -> Vec<u8> {
    let build = format!("test -f $HOLDQ_DEPS/lib/{uses}");
    package_building("app", version, &[("lib", req)], &build, None)
}

/// A package with no dependencies whose build passes.
fn plain(name: &str, version: &str) -> Vec<u8> {
    package_building(name, version, &[], "true", None)
}

async fn new_group(app: &TestApp, token: &str, expected: Option<i64>) -> i64 {
    let r = app
        .http
        .post(app.url("/api/v1/groups"))
        .bearer_auth(token)
        .json(&json!({ "expected": expected }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn upload_in(app: &TestApp, token: &str, group: i64, body: Vec<u8>) -> (StatusCode, Value) {
    let r = app
        .http
        .post(app.url(&format!("/api/v1/uploads?group={group}")))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or_default())
}

async fn member(app: &TestApp, token: &str, group: i64, body: Vec<u8>) -> i64 {
    let (status, body) = upload_in(app, token, group, body).await;
    assert_eq!(status, StatusCode::CREATED, "{body:#}");
    body["id"].as_i64().unwrap()
}

async fn submit(app: &TestApp, token: &str, group: i64) -> Value {
    let r = app
        .http
        .post(app.url(&format!("/api/v1/groups/{group}/submit")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn group_state(app: &TestApp, group: i64) -> String {
    let (state,): (String,) = sqlx::query_as("SELECT state FROM upload_groups WHERE id = $1")
        .bind(group)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    state
}

async fn serial_of_acceptance(app: &TestApp, upload: i64) -> i64 {
    let (detail,): (String,) = sqlx::query_as(
        "SELECT detail FROM events WHERE kind = 'upload.accepted' AND upload_id = $1",
    )
    .bind(upload)
    .fetch_one(app.app.db.pool())
    .await
    .unwrap();
    serde_json::from_str::<Value>(&detail).unwrap()["serial"]
        .as_i64()
        .unwrap()
}

async fn outbox_rows(app: &TestApp, uploads: &[i64]) -> i64 {
    let mut n = 0;
    for &u in uploads {
        let (c,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE upload_id = $1")
            .bind(u)
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
        n += c;
    }
    n
}

async fn a_group_is_checked_together_and_accepted_under_one_serial(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, lib("1.0.0", &["f", "g"])).await;
    app.upload_ok(&ada, app_using("1.0.0", "^1", "f")).await;
    app.drain().await;
    // lib 1.1.0 replaces g by h; app 1.1.0 needs h: only together do they build.
    let group = new_group(&app, &ada, None).await;
    let l = member(&app, &ada, group, lib("1.1.0", &["f", "h"])).await;
    let a = member(&app, &ada, group, app_using("1.1.0", "^1.1", "h")).await;
    // Not queued before the group is submitted.
    app.drain().await;
    assert_eq!(app.upload_view(l).await["state"], "queued");
    let view = submit(&app, &ada, group).await;
    assert_eq!(view["state"], "submitted");
    assert_eq!(view["members"], json!([l, a]));
    app.drain().await;
    let (lv, av) = (app.upload_view(l).await, app.upload_view(a).await);
    assert_eq!(lv["state"], "accepted", "{lv:#}");
    assert_eq!(av["state"], "accepted", "{av:#}");
    let serial = serial_of_acceptance(&app, l).await;
    assert_eq!(serial, serial_of_acceptance(&app, a).await, "one serial");
    let build = av["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "build")
        .unwrap();
    assert_eq!(build["base"]["closure"]["lib"]["source"]["upload"], l);
    let report = holdq::service::integrity::invariant_report(&app.app)
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

async fn a_failing_member_rejects_the_whole_group_with_one_email_per_maintainer(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, lib("1.0.0", &["f"])).await;
    app.drain().await;
    let group = new_group(&app, &ada, Some(2)).await;
    let l = member(&app, &ada, group, lib("1.1.0", &["f"])).await;
    // The expected count reached: submitted by itself.
    let a = member(&app, &ada, group, app_using("1.0.0", "^1", "missing")).await;
    assert_eq!(group_state(&app, group).await, "submitted");
    app.drain().await;
    let (lv, av) = (app.upload_view(l).await, app.upload_view(a).await);
    assert_eq!(lv["state"], "rejected", "{lv:#}");
    assert_eq!(av["state"], "rejected", "{av:#}");
    // lib's own checks passed: it is rejected with its group.
    assert_eq!(lv["verdict"]["failed"], json!([]), "{lv:#}");
    // One email (Ada maintains both), naming app and its failing build.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_key, text_body FROM outbox WHERE upload_id = $1 OR upload_id = $2 ORDER BY id",
    )
    .bind(l)
    .bind(a)
    .fetch_all(app.app.db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (key, mail) = &rows[0];
    assert!(key.starts_with(&format!("group-{group}-verdict")), "{key}");
    assert!(mail.contains("app 1.0.0"), "{mail}");
    assert!(mail.contains("uploaded together with"), "{mail}");
    assert!(mail.contains("build@"), "{mail}");
    let stable = app.get(None, "/api/v1/packages/lib").await.body;
    assert_eq!(
        stable["versions"].as_array().map(Vec::len),
        Some(1),
        "{stable:#}"
    );
}

async fn a_newer_upload_of_a_member_supersedes_the_group_silently(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let group = new_group(&app, &ada, None).await;
    let x = member(&app, &ada, group, plain("x", "1.0.0")).await;
    let y = member(&app, &ada, group, plain("y", "1.0.0")).await;
    submit(&app, &ada, group).await;
    holdq::service::checks::start_queued(&app.app)
        .await
        .unwrap();
    // A newer y outside the group.
    let y2 = app
        .upload_ok(&ada, package_building("y", "1.0.1", &[], "true", None))
        .await;
    for id in [x, y] {
        assert_eq!(app.upload_view(id).await["state"], "superseded");
    }
    assert_eq!(group_state(&app, group).await, "superseded");
    app.drain().await;
    assert_eq!(app.upload_view(y2).await["state"], "accepted");
    assert_eq!(
        outbox_rows(&app, &[x, y]).await,
        0,
        "emails about a superseded group"
    );
}

async fn a_member_refused_at_upload_refuses_the_group(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let group = new_group(&app, &ada, None).await;
    let x = member(&app, &ada, group, plain("x", "1.0.0")).await;
    let (status, body) = upload_in(&app, &ada, group, b"not a gzip stream".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    assert_eq!(group_state(&app, group).await, "refused");
    assert_eq!(app.upload_view(x).await["state"], "superseded");
    // Another user's bad upload does not refuse Ada's group.
    let bob = app.user("bob@example.org").await;
    let other = new_group(&app, &ada, None).await;
    let (status, _) = upload_in(&app, &bob, other, b"junk".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(group_state(&app, other).await, "open");
    // A refused group takes nothing more.
    let (status, body) = upload_in(
        &app,
        &ada,
        group,
        package_building("z", "1.0.0", &[], "true", None),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body:#}");
    assert_eq!(body["error"]["code"], "group_not_open");
}

async fn a_group_left_open_expires_and_its_uploads_are_discarded(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let group = new_group(&app, &ada, None).await;
    let x = member(&app, &ada, group, plain("x", "1.0.0")).await;
    holdq::service::groups::expire(&app.app).await.unwrap();
    assert_eq!(group_state(&app, group).await, "open", "expired too early");
    let day_ago = holdq::db::now_ms() - 25 * 3600 * 1000;
    sqlx::query("UPDATE upload_groups SET created_at = $1 WHERE id = $2")
        .bind(day_ago)
        .bind(group)
        .execute(app.app.db.pool())
        .await
        .unwrap();
    holdq::service::groups::expire(&app.app).await.unwrap();
    assert_eq!(group_state(&app, group).await, "expired");
    let v = app.upload_view(x).await;
    assert_eq!(v["state"], "superseded", "{v:#}");
    assert!(
        v["reason"].as_str().unwrap_or_default().contains("expired"),
        "{v:#}"
    );
    assert!(app.queue().await.is_empty());
}

async fn a_crash_in_the_middle_of_a_group_promotion_leaves_all_or_none(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let (data, url) = (app.app.config.data_dir.clone(), app.database_url.clone());
    let group = new_group(&app, &ada, None).await;
    let x = member(&app, &ada, group, plain("x", "1.0.0")).await;
    let y = member(
        &app,
        &ada,
        group,
        package_building("y", "1.0.0", &[("x", "^1")], "true", None),
    )
    .await;
    submit(&app, &ada, group).await;
    // A server that aborts after promoting the first member, before the commit.
    let mut server = ServerProcess::start(&data, &url, Some("promote-group-member")).await;
    assert!(
        server.wait_exit(Duration::from_secs(60)).await,
        "the failpoint aborted the server"
    );
    let (index, whole) = index_is_whole(&url, &data).await;
    assert!(whole);
    assert!(
        index["packages"]["x"].is_null() && index["packages"]["y"].is_null(),
        "{index}"
    );
    for id in [x, y] {
        assert_eq!(app.upload_view(id).await["state"], "checking");
    }
    let _server = ServerProcess::start(&data, &url, None).await;
    let both = wait_until(
        async || {
            app.upload_view(x).await["state"] == "accepted"
                && app.upload_view(y).await["state"] == "accepted"
        },
        Duration::from_secs(60),
    )
    .await;
    assert!(both.is_some(), "the group was never accepted");
    assert_eq!(
        serial_of_acceptance(&app, x).await,
        serial_of_acceptance(&app, y).await
    );
}
