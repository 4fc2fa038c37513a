//! The testing channel (SPEC section 10, "Check states"): an upload whose
//! `validate` and `resolve` passed and whose build has not run is listed by
//! `GET /api/v1/testing/index` and downloadable with `Holdq-Unchecked`,
//! never in the stable index, gone once rejected; `holdq fetch --channel
//! testing` fetches it and prints the warning.

use reqwest::StatusCode;
use serde_json::json;
use sha2::Digest;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::{TestApp, TestDb};

on_both_databases!(
    an_upload_still_building_is_in_the_testing_channel_with_the_warning_until_rejected,
    the_testing_channel_is_off_unless_the_operator_turns_it_on,
    fetch_from_the_testing_channel_warns_of_each_unchecked_package,
);

async fn still_building(app: &TestApp, body: Vec<u8>) -> i64 {
    let id = app.upload_ok(&app.operator, body).await;
    holdq::service::checks::start_queued(&app.app)
        .await
        .unwrap();
    let view = app.upload_view(id).await;
    assert_eq!(view["state"], "checking", "{view:#}");
    id
}

async fn an_upload_still_building_is_in_the_testing_channel_with_the_warning_until_rejected(
    db: TestDb,
) {
    let app = TestApp::spawn_with(db, |c| c.testing.publish = true).await;
    let maintainer = app.user("ada@example.org").await;
    let body = package_building("wave", "1.0.0", &[], "true", None);
    let sha = hex::encode(sha2::Sha256::digest(&body));
    let id = still_building(&app, body.clone()).await;

    let channel = app.get(Some(&maintainer), "/api/v1/testing/index").await;
    assert_eq!(channel.status, StatusCode::OK, "{:?}", channel.body);
    let listed = &channel.body["packages"];
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "{:#}",
        channel.body
    );
    assert_eq!(listed[0]["name"], "wave");
    assert_eq!(listed[0]["version"], "1.0.0");
    assert_eq!(listed[0]["upload"], id);
    assert_eq!(listed[0]["sha256"], sha);

    let archive = app.url("/api/v1/testing/wave/1.0.0/archive");
    let got = app
        .http
        .get(&archive)
        .bearer_auth(&maintainer)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let warning = got.headers()["holdq-unchecked"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        warning.starts_with("not in stable; checks running"),
        "{warning}"
    );
    assert!(
        got.headers().get("warning").is_none(),
        "the obsolete Warning header is not sent"
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());

    let anonymous = app.http.get(&archive).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let stable = app.get(None, "/api/v1/index/wave").await;
    assert_eq!(
        stable.status,
        StatusCode::NOT_FOUND,
        "never in stable: {:?}",
        stable.body
    );
    let whole = app.get(None, "/api/v1/index").await;
    assert!(
        whole.body["packages"].get("wave").is_none(),
        "{:#}",
        whole.body
    );

    let cancelled = app
        .http
        .post(app.url(&format!("/api/v1/uploads/{id}/cancel")))
        .bearer_auth(&app.operator)
        .json(&json!({ "why": "not this one" }))
        .send()
        .await
        .unwrap();
    assert!(
        cancelled.status().is_success(),
        "{:?}",
        cancelled.text().await
    );
    assert_eq!(app.upload_view(id).await["state"], "rejected");
    let channel = app.get(Some(&maintainer), "/api/v1/testing/index").await;
    assert_eq!(channel.body["packages"], json!([]), "gone after the reject");
    let gone = app
        .http
        .get(&archive)
        .bearer_auth(&maintainer)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

async fn the_testing_channel_is_off_unless_the_operator_turns_it_on(db: TestDb) {
    let app = TestApp::spawn(db).await;
    still_building(&app, package_building("wave", "1.0.0", &[], "true", None)).await;
    let channel = app.get(Some(&app.operator), "/api/v1/testing/index").await;
    assert_eq!(channel.status, StatusCode::NOT_FOUND);
    assert!(
        channel.message().contains("[testing] publish = true"),
        "{}",
        channel.message()
    );
    let archive = app
        .get(Some(&app.operator), "/api/v1/testing/wave/1.0.0/archive")
        .await;
    assert_eq!(archive.status, StatusCode::NOT_FOUND);
}

async fn fetch(
    app: &TestApp,
    token: &str,
    args: &[&str],
    cwd: &std::path::Path,
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_holdq"))
        .arg("fetch")
        .args(args)
        .current_dir(cwd)
        .env("HOLDQ_SERVER", &app.base)
        .env("HOLDQ_TOKEN", token)
        .env("HOLDQ_CLIENT_CONFIG", cwd.join("no-client.toml"))
        .output()
        .await
        .expect("holdq runs")
}

async fn fetch_from_the_testing_channel_warns_of_each_unchecked_package(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.testing.publish = true).await;
    let lib = app
        .upload_ok(
            &app.operator,
            package_building("lib", "1.0.0", &[], "true", None),
        )
        .await;
    app.drain().await;
    assert_eq!(app.upload_view(lib).await["state"], "accepted");
    let id = still_building(
        &app,
        package_building("app", "1.0.0", &[("lib", "^1")], "true", None),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();

    let stable_only = fetch(&app, &app.operator, &["app", "-o", "out"], dir.path()).await;
    assert!(!stable_only.status.success(), "app is not in stable");

    let out = fetch(
        &app,
        &app.operator,
        &["app", "--channel", "testing", "-o", "out"],
        dir.path(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: app 1.0.0 is unchecked (upload {id} in the testing channel)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("lib 1.0.0 is unchecked"), "{stderr}");
    let resolved = std::fs::read_to_string(dir.path().join("out/resolved.toml")).unwrap();
    assert!(resolved.contains("unchecked_upload"), "{resolved}");
    assert!(dir.path().join("out/app/package.toml").is_file());
    assert!(dir.path().join("out/lib/package.toml").is_file());
}

on_both_databases!(an_upload_in_the_testing_channel_has_a_banner_on_its_page_until_rejected);

async fn an_upload_in_the_testing_channel_has_a_banner_on_its_page_until_rejected(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.testing.publish = true).await;
    let maintainer = app.user("ada@example.org").await;
    let id = still_building(&app, package_building("wave", "1.0.0", &[], "true", None)).await;
    let mut browser = crate::support::web::WebClient::new(&app);
    browser.sign_in(&maintainer).await;
    let page = format!("/uploads/{id}");
    let seen = browser.get(&page).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert!(seen.body.contains("id=\"testing\""), "{}", seen.body);
    assert!(
        seen.body.contains(
            "In the testing channel:</strong> downloadable, not in stable; checks running"
        ),
        "{}",
        seen.body
    );
    assert!(
        seen.body
            .contains("&#x2f;api&#x2f;v1&#x2f;testing&#x2f;wave&#x2f;1.0.0&#x2f;archive")
            || seen.body.contains("/api/v1/testing/wave/1.0.0/archive"),
        "the download link: {}",
        seen.body
    );

    let cancelled = app
        .http
        .post(app.url(&format!("/api/v1/uploads/{id}/cancel")))
        .bearer_auth(&app.operator)
        .json(&json!({ "why": "not this one" }))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success());
    let seen = browser.get(&page).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert!(!seen.body.contains("id=\"testing\""), "{}", seen.body);
}
