//! Obsolescence and removal (SPEC section 5) through the API, with real
//! checks: pins, emails, resolution, cascading removal, dry runs, undo, and
//! a crash in the middle.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::{manifest, package_with_manifest};
use crate::support::{Answer, TestApp, TestDb};

on_both_databases!(
    obsoleting_a_package_pins_its_dependents_and_removal_cascades_once_unused,
    a_dry_run_changes_nothing_and_an_undo_restores,
    a_crash_in_the_middle_of_an_obsolescence_leaves_it_not_done,
    a_dependent_broken_by_an_accepted_upload_is_told_unless_obsolete,
);

/// A package maintained by `who` whose build checks nothing.
fn pkg(name: &str, version: &str, deps: &[(&str, &str)], who: &str) -> Vec<u8> {
    let text = manifest(name, version, deps)
        .replace("Ada <ada@example.org>", who)
        .replace("command = \"sh build.sh\"", "command = \"true\"");
    package_with_manifest(&format!("{name}-{version}"), &text)
}

async fn post_obsolete(app: &TestApp, token: &str, name: &str, body: Value) -> Answer {
    let resp = app
        .http
        .post(app.url(&format!("/api/v1/packages/{name}/obsolete")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, body }
}

async fn accept(app: &TestApp, token: &str, body: Vec<u8>) -> i64 {
    let id = app.upload_ok(token, body).await;
    app.drain().await;
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    id
}

async fn emails_of_kind(app: &TestApp, kind: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT to_addr, subject FROM outbox WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(app.app.db.pool())
        .await
        .unwrap()
}

async fn obsoleting_a_package_pins_its_dependents_and_removal_cascades_once_unused(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let op = app.operator.clone();
    accept(&app, &ada, pkg("a", "1.0.0", &[], "Ada <ada@example.org>")).await;
    accept(&app, &ada, pkg("a", "1.1.0", &[], "Ada <ada@example.org>")).await;
    accept(&app, &ada, pkg("e", "1.0.0", &[], "Ada <ada@example.org>")).await;
    accept(
        &app,
        &op,
        pkg("b", "1.0.0", &[("a", "^1")], "Bob <bob@example.org>"),
    )
    .await;
    accept(
        &app,
        &op,
        pkg("c", "1.0.0", &[("a", "^1")], "Carol <carol@example.org>"),
    )
    .await;
    accept(
        &app,
        &op,
        pkg("d", "1.0.0", &[("c", "^1")], "Dan <dan@example.org>"),
    )
    .await;

    // c goes obsolete first; d still needs it, so it stays (pinned).
    let c = post_obsolete(&app, &op, "c", json!({ "reason": "c is finished" })).await;
    assert_eq!(c.status, StatusCode::OK, "{:?}", c.body);
    assert_eq!(c.body["removed"], json!([]));

    let deps = app
        .get(None, "/api/v1/packages/a/dependents?transitive=true")
        .await;
    assert_eq!(deps.body["dependents"], json!(["b", "c", "d"]));

    // A non-owner may not obsolete a; its owner may.
    let carol = app.user("carol@example.org").await;
    let refused = post_obsolete(&app, &carol, "a", json!({ "reason": "mine now" })).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "not_owner")
    );
    let no_reason = post_obsolete(&app, &ada, "a", json!({ "reason": " " })).await;
    assert_eq!(
        (no_reason.status, no_reason.code()),
        (StatusCode::BAD_REQUEST, "reason_required")
    );
    let bad_repl = post_obsolete(
        &app,
        &ada,
        "a",
        json!({ "reason": "old", "replacement": "nowhere" }),
    )
    .await;
    assert_eq!(bad_repl.code(), "bad_replacement");

    let a = post_obsolete(
        &app,
        &ada,
        "a",
        json!({ "reason": "a is old", "replacement": "e" }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let pinned: Vec<&str> = a.body["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["dependent"].as_str().unwrap())
        .collect();
    assert_eq!(pinned, ["b", "c"]);
    assert!(
        a.body["pins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["max"] == "1.1.0")
    );
    assert_eq!(
        a.body["emails"], 1,
        "b's maintainer only; c is obsolete itself"
    );
    let notices = emails_of_kind(&app, "dependency_obsoleted").await;
    let to_a: Vec<&(String, String)> = notices
        .iter()
        .filter(|(_, s)| s.contains("a, a dependency of"))
        .collect();
    assert_eq!(to_a.len(), 1, "{notices:?}");
    assert_eq!(to_a[0].0, "Bob <bob@example.org>");
    assert!(to_a[0].1.contains("a dependency of b"));

    // Shown in the index and the package view.
    let index = app.get(None, "/api/v1/index").await.body;
    assert_eq!(
        index["packages"]["b"]["pins"]["a"], "^1, <=1.1.0",
        "{index:#}"
    );
    assert_eq!(index["packages"]["c"]["pins"]["a"], "^1, <=1.1.0");
    assert_eq!(index["packages"]["a"]["obsolete"]["reason"], "a is old");
    assert_eq!(index["packages"]["a"]["obsolete"]["replacement"], "e");
    let view = app.get(None, "/api/v1/packages/a").await.body;
    assert_eq!(view["state"], "obsolete");
    assert_eq!(view["dependents_count"], 2);

    // Uploads of a are refused; a new dependency on a is refused by resolve.
    let more_a = app
        .upload(Some(&ada), pkg("a", "1.2.0", &[], "Ada <ada@example.org>"))
        .await;
    assert_eq!(more_a.code(), "package_obsolete");
    let f = app
        .upload_ok(
            &op,
            pkg("f", "1.0.0", &[("a", "^1")], "Ada <ada@example.org>"),
        )
        .await;
    app.drain().await;
    let fv = app.upload_view(f).await;
    assert_eq!(fv["state"], "rejected");
    let resolve = fv["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "resolve")
        .unwrap()
        .clone();
    let why = resolve["summary"].as_str().unwrap();
    assert!(
        why.contains("a is obsolete (a is old)") && why.contains("use e instead"),
        "{why}"
    );

    // A dependent may keep the dependency: the pin carries over and is honoured.
    let b11 = accept(
        &app,
        &op,
        pkg("b", "1.1.0", &[("a", "^1")], "Bob <bob@example.org>"),
    )
    .await;
    let bv = app.upload_view(b11).await;
    let build = bv["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "build")
        .unwrap()
        .clone();
    assert_eq!(build["metadata"]["resolved"]["a"], "1.1.0");
    app.drain_emails().await;
    let accepted: Vec<(String, String)> =
        sqlx::query_as("SELECT to_addr, text_body FROM outbox WHERE upload_id = $1")
            .bind(b11)
            .fetch_all(app.app.db.pool())
            .await
            .unwrap();
    assert!(
        accepted[0].1.contains("a ^1, <=1.1.0"),
        "the accept email names the pin: {}",
        accepted[0].1
    );

    // b drops a: a still has c. d drops c: c goes, then a (cascade).
    accept(&app, &op, pkg("b", "2.0.0", &[], "Bob <bob@example.org>")).await;
    assert_eq!(
        app.get(None, "/api/v1/packages/a").await.body["state"],
        "obsolete"
    );
    let archive_a = app.app.stable.archive_path("a", "1.1.0");
    assert!(archive_a.is_file());
    accept(&app, &op, pkg("d", "2.0.0", &[], "Dan <dan@example.org>")).await;
    for gone in ["a", "c"] {
        let view = app
            .get(None, &format!("/api/v1/packages/{gone}"))
            .await
            .body;
        assert_eq!(view["state"], "removed", "{view:#}");
        assert!(view["versions"].as_array().unwrap().is_empty());
        assert!(
            view["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["event"] == "package.removed"),
            "{view:#}"
        );
    }
    assert!(!archive_a.exists(), "archives go with the package");
    assert!(!app.app.stable.archive_path("a", "1.0.0").exists());
    let index = app.get(None, "/api/v1/index").await.body;
    assert!(
        index["packages"]["a"].is_null() && index["packages"]["c"].is_null(),
        "{index:#}"
    );
    assert!(index["packages"]["b"]["pins"].is_null());
    let again = app
        .upload(Some(&ada), pkg("a", "3.0.0", &[], "Ada <ada@example.org>"))
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "package_removed")
    );
    holdq::service::stable::with_repo(&app.app, |repo| repo.check_invariants())
        .await
        .unwrap()
        .unwrap();
}

async fn a_dry_run_changes_nothing_and_an_undo_restores(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    accept(&app, &ada, pkg("a", "1.0.0", &[], "Ada <ada@example.org>")).await;
    accept(
        &app,
        &ada,
        pkg("b", "1.0.0", &[("a", "^1")], "Bob <bob@example.org>"),
    )
    .await;
    let before = app.get(None, "/api/v1/index").await.body;

    let dry = post_obsolete(&app, &ada, "a", json!({ "reason": "old", "dry_run": true })).await;
    assert_eq!(dry.status, StatusCode::OK, "{:?}", dry.body);
    assert_eq!(dry.body["dry_run"], true);
    assert_eq!(dry.body["pins"][0]["dependent"], "b");
    assert_eq!(
        app.get(None, "/api/v1/index").await.body,
        before,
        "a dry run changes nothing"
    );
    assert_eq!(
        app.get(None, "/api/v1/packages/a").await.body["state"],
        "active"
    );
    assert!(
        emails_of_kind(&app, "dependency_obsoleted")
            .await
            .is_empty()
    );

    let done = post_obsolete(&app, &ada, "a", json!({ "reason": "old" })).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(
        app.get(None, "/api/v1/index").await.body["packages"]["b"]["pins"]["a"],
        "^1, <=1.0.0"
    );

    let undo = |token: String| {
        let app = &app;
        async move {
            app.http
                .delete(app.url("/api/v1/packages/a/obsolete"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        undo(ada.clone()).await,
        StatusCode::FORBIDDEN,
        "operators only"
    );
    assert_eq!(undo(app.operator.clone()).await, StatusCode::NO_CONTENT);
    let after = app.get(None, "/api/v1/index").await.body;
    assert_eq!(after["packages"]["a"]["state"], "active");
    assert!(after["packages"]["a"]["obsolete"].is_null());
    assert!(
        after["packages"]["b"]["pins"].is_null(),
        "pins lifted: {after:#}"
    );
    // A new dependent is welcome again.
    accept(
        &app,
        &ada,
        pkg("c", "1.0.0", &[("a", "^1")], "Ada <ada@example.org>"),
    )
    .await;
}

async fn a_crash_in_the_middle_of_an_obsolescence_leaves_it_not_done(db: TestDb) {
    use crate::support::process::{ServerProcess, index_is_whole};
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    accept(&app, &ada, pkg("a", "1.0.0", &[], "Ada <ada@example.org>")).await;
    accept(
        &app,
        &ada,
        pkg("b", "1.0.0", &[("a", "^1")], "Bob <bob@example.org>"),
    )
    .await;
    let data = app.app.config.data_dir.clone();

    let mut server =
        ServerProcess::start(&data, &app.database_url, Some("obsolete-before-commit")).await;
    let result = reqwest::Client::new()
        .post(format!("{}/api/v1/packages/a/obsolete", server.base))
        .bearer_auth(&ada)
        .json(&json!({ "reason": "old" }))
        .send()
        .await;
    assert!(result.is_err() || !result.unwrap().status().is_success());
    assert!(
        server.wait_exit(std::time::Duration::from_secs(30)).await,
        "the failpoint aborted the server"
    );

    let _restarted = ServerProcess::start(&data, &app.database_url, None).await;
    let (state,): (String,) = sqlx::query_as("SELECT state FROM packages WHERE name = 'a'")
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert_eq!(state, "active");
    let (pins,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pins")
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert_eq!(pins, 0);
    assert!(
        emails_of_kind(&app, "dependency_obsoleted")
            .await
            .is_empty()
    );
    let (index, whole) = index_is_whole(&app.database_url, &data).await;
    assert!(whole);
    assert!(index["packages"]["a"]["obsolete"].is_null());
}

async fn a_dependent_broken_by_an_accepted_upload_is_told_unless_obsolete(db: TestDb) {
    use holdq::domain::check::CheckKind;
    // Revdeps weigh nothing: the pass mark lets a breaking version through.
    let app = TestApp::spawn_with(db, |c| {
        c.passmark.weights.insert(CheckKind::Revdeps, 0.0);
    })
    .await;
    let ada = app.user("ada@example.org").await;
    let needs_api = |name: &str, who: &str| {
        let text = manifest(name, "1.0.0", &[("lib", "^1")])
            .replace("Ada <ada@example.org>", who)
            .replace(
                "command = \"sh build.sh\"",
                "command = \"test -f $HOLDQ_DEPS/lib/api\"",
            );
        package_with_manifest(&format!("{name}-1.0.0"), &text)
    };
    let lib = |version: &str, api: bool| {
        let mut tar = crate::support::archives::Tar::new()
            .dir(&format!("lib-{version}"))
            .file(
                &format!("lib-{version}/package.toml"),
                manifest("lib", version, &[])
                    .replace("sh build.sh", "true")
                    .as_bytes(),
            );
        if api {
            tar = tar.file(&format!("lib-{version}/api"), b"1");
        }
        tar.gz()
    };
    accept(&app, &ada, lib("1.0.0", true)).await;
    accept(&app, &ada, needs_api("user", "Uma <uma@example.org>")).await;
    accept(&app, &ada, needs_api("olduser", "Olga <olga@example.org>")).await;
    accept(
        &app,
        &ada,
        pkg(
            "keeper",
            "1.0.0",
            &[("olduser", "^1")],
            "Ada <ada@example.org>",
        ),
    )
    .await;
    let o = post_obsolete(
        &app,
        &ada,
        "olduser",
        json!({ "reason": "replaced by user" }),
    )
    .await;
    assert_eq!(o.status, StatusCode::OK, "{:?}", o.body);

    accept(&app, &ada, lib("1.1.0", false)).await;
    let broken = emails_of_kind(&app, "dependents_broken").await;
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(broken[0].0, "Uma <uma@example.org>");
    assert!(
        broken[0]
            .1
            .contains("user 1.0.0 no longer builds with lib 1.1.0"),
        "{}",
        broken[0].1
    );
}
