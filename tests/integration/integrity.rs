//! Stable is only ever a set that was checked together (SPEC section 3,
//! rules 6 and 7): related uploads checked at the same time are checked
//! against each other, rebased when what they assumed did not come true,
//! and promoted only when their bases still hold.

use std::time::Duration;

use serde_json::Value;

use crate::on_both_databases;
use crate::support::archives::{Tar, manifest};
use crate::support::stable::{promote_behind_the_queue, run_checks_undecided};
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_dependent_uploaded_before_a_library_that_breaks_it_gets_the_library_rejected,
    a_dependent_uploaded_after_a_library_that_breaks_it_is_built_against_it_and_rejected,
    a_chain_of_dependent_uploads_is_checked_speculatively_and_promoted_in_order,
    an_unrelated_upload_does_not_wait_for_a_slow_one_ahead,
    an_upload_that_assumed_a_rejected_one_is_rebased_against_stable,
    stable_moved_behind_the_queue_rebases_instead_of_promoting,
    without_speculation_an_upload_waits_for_the_related_uploads_ahead,
    the_checker_finds_the_race_staged_in_the_database,
    a_newer_upload_supersedes_one_being_rebased,
);

/// A library shipping one file per function in `functions`.
fn lib(version: &str, functions: &[&str], build: &str) -> Vec<u8> {
    let top = format!("lib-{version}");
    let text = manifest("lib", version, &[]).replace(
        "command = \"sh build.sh\"",
        &format!("command = \"{build}\""),
    );
    let mut tar = Tar::new()
        .dir(&top)
        .file(&format!("{top}/package.toml"), text.as_bytes());
    for f in functions {
        tar = tar.file(&format!("{top}/{f}"), f.as_bytes());
    }
    tar.gz()
}

/// A package of `name` `version` requiring `deps`, whose build runs
/// `before` and then needs each of `needs` (paths under `$HOLDQ_DEPS`).
fn user_of(
    name: &str,
    version: &str,
    deps: &[(&str, &str)],
    before: &str,
    needs: &[&str],
) -> Vec<u8> {
    let mut build = before.to_owned();
    for n in needs {
        build.push_str(&format!(" && test -f $HOLDQ_DEPS/{n}"));
    }
    crate::support::archives::package_building(name, version, deps, &build, None)
}

async fn spawn(
    db: TestDb,
    workers: u32,
    tweak: impl FnOnce(&mut holdq::config::Config),
) -> TestApp {
    let app = TestApp::spawn_with(db, |c| {
        c.platforms[0].local_workers = workers;
        tweak(c);
    })
    .await;
    app.start_workers().await;
    app
}

async fn accepted(app: &TestApp, token: &str, archive: Vec<u8>) -> i64 {
    let id = app.upload_ok(token, archive).await;
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    id
}

fn check<'a>(upload: &'a Value, kind: &str) -> &'a Value {
    upload["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} check in {upload:#}"))
}

/// No direct dependency edge of stable was left unbuilt.
async fn assert_built_together(app: &TestApp) {
    let report = holdq::service::integrity::invariant_report(&app.app)
        .await
        .unwrap();
    assert!(
        report.violations.is_empty(),
        "edges never built together: {:?}",
        report.violations
    );
    assert!(report.held > 0, "the checker saw no edge at all");
}

/// When the build of `upload_id` started, and when its verdict was given (ms).
async fn build_started_and_decided(app: &TestApp, upload_id: i64) -> (i64, i64) {
    let (started,): (i64,) =
        sqlx::query_as("SELECT started_at FROM checks WHERE upload_id = $1 AND kind = 'build'")
            .bind(upload_id)
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
    let (decided,): (i64,) = sqlx::query_as("SELECT decided_at FROM verdicts WHERE upload_id = $1")
        .bind(upload_id)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    (started, decided)
}

async fn stable_with_lib_and_app(app: &TestApp, ada: &str) {
    accepted(app, ada, lib("1.0.0", &["f", "g"], "true")).await;
    accepted(
        app,
        ada,
        user_of("app", "1.0.0", &[("lib", "^1")], "true", &["lib/f"]),
    )
    .await;
}

async fn a_dependent_uploaded_before_a_library_that_breaks_it_gets_the_library_rejected(
    db: TestDb,
) {
    let app = spawn(db, 2, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    stable_with_lib_and_app(&app, &ada).await;
    // app 1.1.0 now uses g and builds slowly; lib 1.1.0 drops g.
    let app11 = app
        .upload_ok(
            &ada,
            user_of("app", "1.1.0", &[("lib", "^1")], "sleep 6", &["lib/g"]),
        )
        .await;
    let lib11 = app.upload_ok(&ada, lib("1.1.0", &["f"], "true")).await;

    let a = app.wait_for_verdict(app11).await;
    let l = app.wait_for_verdict(lib11).await;
    assert_eq!(a["state"], "accepted", "{a:#}");
    assert_eq!(l["state"], "rejected", "{l:#}");
    // lib's revdeps rebuilt the app ahead of it, not only the stable one.
    let revdeps = check(&l, "revdeps");
    assert_eq!(revdeps["state"], "failed", "{revdeps:#}");
    let summary = revdeps["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("app 1.1.0 (upload {app11}, not yet in stable)")),
        "{summary}"
    );
    assert_eq!(
        revdeps["base"]["dependents"][0]["source"]["upload"], app11,
        "{revdeps:#}"
    );
    assert_built_together(&app).await;
}

async fn a_dependent_uploaded_after_a_library_that_breaks_it_is_built_against_it_and_rejected(
    db: TestDb,
) {
    let app = spawn(db, 2, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    stable_with_lib_and_app(&app, &ada).await;
    let lib11 = app.upload_ok(&ada, lib("1.1.0", &["f"], "sleep 4")).await;
    let app11 = app
        .upload_ok(
            &ada,
            user_of("app", "1.1.0", &[("lib", "^1")], "true", &["lib/g"]),
        )
        .await;

    let l = app.wait_for_verdict(lib11).await;
    let a = app.wait_for_verdict(app11).await;
    assert_eq!(l["state"], "accepted", "{l:#}");
    assert_eq!(a["state"], "rejected", "{a:#}");
    let build = check(&a, "build");
    assert_eq!(build["metadata"]["resolved"]["lib"], "1.1.0", "{build:#}");
    // Built against the pending upload, not the stable lib: speculation.
    assert_eq!(
        build["base"]["closure"]["lib"]["source"]["upload"], lib11,
        "{build:#}"
    );
    assert_eq!(
        a["verdict"]["ahead"],
        serde_json::json!([format!("lib 1.1.0 (upload {lib11})")]),
        "{a:#}"
    );
    assert_built_together(&app).await;
}

async fn a_chain_of_dependent_uploads_is_checked_speculatively_and_promoted_in_order(db: TestDb) {
    let app = spawn(db, 3, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    accepted(&app, &ada, user_of("a", "1.0.0", &[], "true", &[])).await;
    // Each needs what the one before it adds, and each build takes two seconds (a margin for a loaded machine: the builds behind must start before the verdict ahead).
    let with_feature = |name: &str, deps: &[(&str, &str)], needs: &[&str]| {
        let mut build = "sleep 2".to_owned();
        for n in needs {
            build.push_str(&format!(" && test -f $HOLDQ_DEPS/{n}"));
        }
        let text = manifest(name, if name == "a" { "1.1.0" } else { "1.0.0" }, deps).replace(
            "command = \"sh build.sh\"",
            &format!("command = \"{build}\""),
        );
        let top = format!("{name}-{}", if name == "a" { "1.1.0" } else { "1.0.0" });
        Tar::new()
            .dir(&top)
            .file(&format!("{top}/package.toml"), text.as_bytes())
            .file(&format!("{top}/feature"), b"new")
            .gz()
    };
    let a = app.upload_ok(&ada, with_feature("a", &[], &[])).await;
    let b = app
        .upload_ok(&ada, with_feature("b", &[("a", "^1.1")], &["a/feature"]))
        .await;
    let c = app
        .upload_ok(
            &ada,
            with_feature(
                "c",
                &[("b", "^1"), ("a", "^1")],
                &["b/feature", "a/feature"],
            ),
        )
        .await;
    for id in [a, b, c] {
        let v = app.wait_for_verdict(id).await;
        assert_eq!(v["state"], "accepted", "{v:#}");
    }
    let (_, a_decided) = build_started_and_decided(&app, a).await;
    let (b_started, b_decided) = build_started_and_decided(&app, b).await;
    let (c_started, c_decided) = build_started_and_decided(&app, c).await;
    assert!(b_started < a_decided, "b's build waited for a's verdict");
    assert!(c_started < a_decided, "c's build waited for a's verdict");
    assert!(
        a_decided <= b_decided && b_decided <= c_decided,
        "promoted out of order"
    );
    let c_view = app.upload_view(c).await;
    let resolved = &check(&c_view, "build")["metadata"]["resolved"];
    assert_eq!(resolved["a"], "1.1.0");
    assert_eq!(resolved["b"], "1.0.0");
    // Promotions in arrival order: increasing serials.
    let serials: Vec<(i64,)> = sqlx::query_as(
        "SELECT upload_id FROM events WHERE kind = 'upload.accepted' AND upload_id >= $1 ORDER BY id",
    )
    .bind(a)
    .fetch_all(app.app.db.pool())
    .await
    .unwrap();
    assert_eq!(serials, vec![(a,), (b,), (c,)]);
    assert_built_together(&app).await;
}

async fn an_unrelated_upload_does_not_wait_for_a_slow_one_ahead(db: TestDb) {
    let app = spawn(db, 2, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    let slow = app
        .upload_ok(&ada, user_of("slow", "1.0.0", &[], "sleep 4", &[]))
        .await;
    let quick = app
        .upload_ok(&ada, user_of("quick", "1.0.0", &[], "true", &[]))
        .await;
    let q = app.wait_for_verdict(quick).await;
    let s = app.wait_for_verdict(slow).await;
    assert_eq!(q["state"], "accepted", "{q:#}");
    assert_eq!(s["state"], "accepted", "{s:#}");
    let (_, quick_decided) = build_started_and_decided(&app, quick).await;
    let (_, slow_decided) = build_started_and_decided(&app, slow).await;
    assert!(quick_decided < slow_decided, "the unrelated upload waited");
}

async fn an_upload_that_assumed_a_rejected_one_is_rebased_against_stable(db: TestDb) {
    let app = spawn(db, 2, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    accepted(&app, &ada, lib("1.0.0", &["f"], "true")).await;
    let bad = app
        .upload_ok(&ada, lib("1.1.0", &["f"], "sleep 2; exit 1"))
        .await;
    let user = app
        .upload_ok(
            &ada,
            user_of("user", "1.0.0", &[("lib", "^1")], "true", &["lib/f"]),
        )
        .await;
    let b = app.wait_for_verdict(bad).await;
    let u = app.wait_for_verdict(user).await;
    assert_eq!(b["state"], "rejected", "{b:#}");
    assert_eq!(u["state"], "accepted", "{u:#}");
    assert_eq!(u["rebases"], 1, "{u:#}");
    assert!(
        u["reason"].as_str().is_some_and(|r| r.contains(&format!(
            "lib 1.1.0 (upload {bad}), ahead of it, was rejected"
        ))),
        "{u:#}"
    );
    let build = check(&u, "build");
    assert_eq!(build["metadata"]["resolved"]["lib"], "1.0.0", "{build:#}");
    assert_eq!(
        build["base"]["closure"]["lib"]["source"], "stable",
        "{build:#}"
    );
    // The run against the rejected upload is kept.
    let (runs,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM check_runs WHERE upload_id = $1 AND ended_by = 'rebase'",
    )
    .bind(user)
    .fetch_one(app.app.db.pool())
    .await
    .unwrap();
    assert!(runs >= 1, "no earlier run kept");
    // One email for the upload: its verdict, not its rebase.
    let (emails,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE upload_id = $1")
        .bind(user)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert_eq!(emails, 1);
    assert_built_together(&app).await;
}

/// Stable lib 1.0.0 (shipping f and g), and user 1.0.0 (needing g) whose
/// checks passed against it, its verdict not yet given.
async fn user_checked_against_lib_1(db: TestDb) -> (TestApp, String, i64) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, lib("1.0.0", &["f", "g"], "true")).await;
    app.drain().await;
    let user = app
        .upload_ok(
            &ada,
            user_of("user", "1.0.0", &[("lib", "^1")], "true", &["lib/g"]),
        )
        .await;
    run_checks_undecided(&app, user).await;
    (app, ada, user)
}

async fn stable_moved_behind_the_queue_rebases_instead_of_promoting(db: TestDb) {
    let (app, ada, user) = user_checked_against_lib_1(db).await;
    // Its checks passed against lib 1.0.0; lib 1.1.0 (without g) reaches
    // stable behind the queue's back before the verdict.
    let lib11 = app.upload_ok(&ada, lib("1.1.0", &["f"], "true")).await;
    promote_behind_the_queue(&app, lib11).await;
    assert_eq!(
        holdq::service::verdict::decide(&app.app, user)
            .await
            .unwrap(),
        None,
        "promoted against a stable it was not checked with"
    );
    let v = app.upload_view(user).await;
    assert_eq!(v["state"], "checking", "{v:#}");
    assert_eq!(v["rebases"], 1, "{v:#}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("rebase 1 of 3") && reason.contains("lib 1.1.0 entered stable"),
        "{reason}"
    );
    app.drain().await;
    let v = app.upload_view(user).await;
    assert_eq!(v["state"], "rejected", "{v:#}");
    assert_eq!(check(&v, "build")["metadata"]["resolved"]["lib"], "1.1.0");
}

async fn without_speculation_an_upload_waits_for_the_related_uploads_ahead(db: TestDb) {
    let app = spawn(db, 2, |c| c.queue.speculate = false).await;
    let ada = app.user("ada@example.org").await;
    accepted(&app, &ada, lib("1.0.0", &["f"], "true")).await;
    let lib11 = app
        .upload_ok(&ada, lib("1.1.0", &["f", "g"], "sleep 2"))
        .await;
    let user = app
        .upload_ok(
            &ada,
            user_of("user", "1.0.0", &[("lib", "^1.1")], "true", &["lib/g"]),
        )
        .await;
    // While lib 1.1.0 is checked, the queue says what user waits for.
    let waiting = format!("lib 1.1.0 (upload {lib11}) ahead of it");
    let says = wait_until(
        async || {
            app.queue().await.iter().any(|u| {
                u["id"] == user
                    && u["waiting_for"].as_array().is_some_and(|w| {
                        w.iter()
                            .any(|l| l.as_str().is_some_and(|l| l.contains(&waiting)))
                    })
            })
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(
        says.is_some(),
        "never said {waiting}: {:#?}",
        app.queue().await
    );
    let l = app.wait_for_verdict(lib11).await;
    let u = app.wait_for_verdict(user).await;
    assert_eq!(l["state"], "accepted", "{l:#}");
    assert_eq!(u["state"], "accepted", "{u:#}");
    let (_, lib_decided) = build_started_and_decided(&app, lib11).await;
    let (user_started, _) = build_started_and_decided(&app, user).await;
    assert!(
        user_started >= lib_decided,
        "user's build started before lib's verdict"
    );
    assert_eq!(
        check(&u, "build")["base"]["closure"]["lib"]["source"],
        "stable"
    );
}

async fn the_checker_finds_the_race_staged_in_the_database(db: TestDb) {
    // The end state of the race: app 1.1.0 built against lib 1.0.0, lib
    // 1.1.0 never built with app 1.1.0, both in stable.
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, lib("1.0.0", &["f", "g"], "true")).await;
    app.upload_ok(
        &ada,
        user_of("app", "1.0.0", &[("lib", "^1")], "true", &["lib/f"]),
    )
    .await;
    app.drain().await;
    let app11 = app
        .upload_ok(
            &ada,
            user_of("app", "1.1.0", &[("lib", "^1")], "true", &["lib/g"]),
        )
        .await;
    let lib11 = app.upload_ok(&ada, lib("1.1.0", &["f"], "true")).await;
    promote_behind_the_queue(&app, app11).await;
    promote_behind_the_queue(&app, lib11).await;
    let report = holdq::service::integrity::invariant_report(&app.app)
        .await
        .unwrap();
    let violations: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    assert_eq!(violations, ["app 1.1.0 -> lib 1.1.0"]);
}

async fn a_newer_upload_supersedes_one_being_rebased(db: TestDb) {
    let (app, ada, user) = user_checked_against_lib_1(db).await;
    let lib11 = app.upload_ok(&ada, lib("1.1.0", &["f", "g"], "true")).await;
    promote_behind_the_queue(&app, lib11).await;
    holdq::service::verdict::decide(&app.app, user)
        .await
        .unwrap();
    assert_eq!(app.upload_view(user).await["rebases"], 1);
    // Rebased and waiting for its checks: a newer upload supersedes it.
    let newer = app
        .upload_ok(
            &ada,
            user_of("user", "1.0.1", &[("lib", "^1")], "true", &["lib/g"]),
        )
        .await;
    let old = app.upload_view(user).await;
    assert_eq!(old["state"], "superseded", "{old:#}");
    assert!(
        old["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] != "pending"),
        "{old:#}"
    );
    app.drain().await;
    assert_eq!(app.upload_view(newer).await["state"], "accepted");
    assert_eq!(app.upload_view(user).await["state"], "superseded");
}
