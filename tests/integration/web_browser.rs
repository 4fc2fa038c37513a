//! The web pages in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`): what a maintainer and an operator do with them.
//! Without Chromium on the machine these are ignored, with the reason
//! (`cfg(holdq_chromium)`, see `build.rs`). Each saves a screenshot.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::TestApp;
use crate::support::TestDb;
use crate::support::archives::{manifest, package_building, package_with_manifest};
use crate::support::browser::Browser;

const LONG: Duration = Duration::from_secs(60);

async fn obsolete(app: &TestApp, name: &str, reason: &str) {
    let resp = app
        .http
        .post(app.url(&format!("/api/v1/packages/{name}/obsolete")))
        .bearer_auth(&app.operator)
        .json(&serde_json::json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(holdq_chromium),
    ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
)]
async fn a_maintainer_finds_an_upload_in_the_queue_and_sees_it_build_then_turn_accepted() {
    // The build waits for a file in a directory the checks see read-only,
    // so the test decides when it ends.
    let gate = tempfile::Builder::new()
        .prefix("holdq-web-gate-")
        .tempdir_in("/opt")
        .unwrap();
    std::fs::set_permissions(gate.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let gate_path = gate.path().to_owned();
    let app = TestApp::spawn_with(TestDb::Sqlite, |c| {
        c.platforms[0].mounts = vec![gate_path.clone()];
    })
    .await;
    app.start_workers().await;
    let ada = app.user("ada@example.org").await;
    let open = gate.path().join("open");
    let build = format!("while [ ! -e {} ]; do sleep 0.05; done", open.display());
    let id = app
        .upload_ok(&ada, package_building("wave", "1.0.0", &[], &build, None))
        .await;

    let browser = Browser::open("upload-builds-then-accepted").await;
    browser.sign_in(&app.base, &ada).await;
    browser.goto(&format!("{}/", app.base)).await;
    browser.wait_for_text("#queue", "wave 1.0.0", LONG).await;
    browser
        .click(&format!("#queue a[href='/uploads/{id}']"))
        .await;
    let building = browser.wait_for_text("#status", "building on", LONG).await;
    assert!(building.contains("checks left"), "{building}");
    browser.screenshot("building").await;

    std::fs::write(&open, "").unwrap();
    // The page refreshes itself: the test never reloads it.
    let accepted = browser.wait_for_text("#status", "accepted", LONG).await;
    assert!(
        accepted.contains("promoted into the stable repository"),
        "{accepted}"
    );
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.path(), format!("/uploads/{id}"));
    let timeline = browser.text("#timeline").await.unwrap();
    assert!(timeline.contains("promoted into stable"), "{timeline}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(holdq_chromium),
    ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
)]
async fn a_rejected_upload_shows_its_owner_the_failing_log_tail_and_the_score_against_the_pass_mark_but_not_another_maintainer()
 {
    let app = TestApp::spawn(TestDb::Sqlite).await;
    let ada = app.user("ada@example.org").await;
    let eve = app.user("eve@example.org").await;
    let build = "echo compiling wave; echo 'error: wave.c:3: missing semicolon' >&2; exit 2";
    let id = app
        .upload_ok(&ada, package_building("wave", "1.0.0", &[], build, None))
        .await;
    app.drain().await;

    let browser = Browser::open("rejected-upload-owner").await;
    browser.sign_in(&app.base, &ada).await;
    browser.goto(&format!("{}/uploads/{id}", app.base)).await;
    let status = browser.text("#status").await.unwrap();
    assert!(status.contains("rejected: build@"), "{status}");
    let failing = browser.text("#failing").await.expect("the failing logs");
    assert!(failing.contains("missing semicolon"), "{failing}");
    let score = browser.text("#score").await.unwrap();
    assert!(score.contains("against the pass mark 1.00"), "{score}");
    assert!(
        score.contains("Score 0.50"),
        "2 of 4 checks passed: {score}"
    );
    browser.close().await;

    let browser = Browser::open("rejected-upload-other-maintainer").await;
    browser.sign_in(&app.base, &eve).await;
    browser.goto(&format!("{}/uploads/{id}", app.base)).await;
    let status = browser.text("#status").await.unwrap();
    assert!(status.contains("rejected: build@"), "{status}");
    assert!(browser.text("#failing").await.is_none(), "no logs for eve");
    let page = browser.client.source().await.unwrap();
    assert!(!page.contains("missing semicolon"), "{page}");
    assert!(!page.contains("ada@example.org"), "{page}");
    assert!(browser.text("#no-logs").await.is_some());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(holdq_chromium),
    ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
)]
async fn an_operator_signs_in_and_cancels_an_upload_through_the_form() {
    let app = TestApp::spawn(TestDb::Sqlite).await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(&ada, package_building("wave", "1.0.0", &[], "true", None))
        .await;

    let browser = Browser::open("operator-cancels").await;
    browser.sign_in(&app.base, &app.operator).await;
    browser.goto(&format!("{}/uploads/{id}", app.base)).await;
    browser
        .fill("#cancel input[name=why]", "the mirror is broken")
        .await;
    browser.click("#cancel button[type=submit]").await;
    let status = browser
        .wait_for_text("#status", "cancelled by an operator", LONG)
        .await;
    assert!(status.contains("the mirror is broken"), "{status}");
    assert_eq!(app.upload_view(id).await["state"], "rejected");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(holdq_chromium),
    ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
)]
async fn the_package_website_searches_descriptions_and_shows_versions_metadata_dependents_and_the_obsolete_banner()
 {
    let app = TestApp::spawn(TestDb::Sqlite).await;
    let build = "mkdir -p $HOLDQ_DESTDIR/usr/bin && echo x > $HOLDQ_DESTDIR/usr/bin/wavectl";
    let lib = package_building("libwave", "2.1.0", &[], build, None);
    app.upload_ok(&app.operator, lib).await;
    app.drain().await;
    let player = manifest("player", "1.0.0", &[("libwave", "^2.1")])
        .replace("A test package", "Plays <b>sound</b> through libwave");
    app.upload_ok(
        &app.operator,
        package_with_manifest("player-1.0.0", &player),
    )
    .await;
    app.drain().await;
    obsolete(&app, "libwave", "superseded by libsound").await;

    let browser = Browser::open("package-website").await;
    browser.goto(&format!("{}/packages", app.base)).await;
    browser.fill("form.search input[name=q]", "plays").await;
    browser.click("form.search button").await;
    let results = browser.wait_for_text("#packages", "player", LONG).await;
    assert!(!results.contains("libwave 2.1.0"), "{results}");
    assert!(
        results.contains("Plays <b>sound</b>"),
        "markup stays text: {results}"
    );
    browser.click("#packages a[href='/packages/player']").await;
    let versions = browser.wait_for_text("#versions", "1.0.0", LONG).await;
    assert!(versions.contains("libwave ^2.1 → 2.1.0"), "{versions}");
    browser.screenshot("player").await;

    browser
        .goto(&format!("{}/packages/libwave", app.base))
        .await;
    let banner = browser
        .text("#obsolete")
        .await
        .expect("the obsolete banner");
    assert!(banner.contains("superseded by libsound"), "{banner}");
    let versions = browser.text("#versions").await.unwrap();
    assert!(
        versions.contains("2.1.0") && versions.contains("usr/bin/wavectl"),
        "{versions}"
    );
    assert!(versions.contains("installed size"), "{versions}");
    let dependents = browser.text("#dependents").await.unwrap();
    assert!(dependents.contains("player"), "{dependents}");
    browser.close().await;
}
