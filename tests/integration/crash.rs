//! Killing the server in the middle of a promotion (test-only failpoints
//! that abort the process) and restarting it: the stable repository is the
//! old or the new one, never a mixture, and the upload is accepted once.

use std::time::Duration;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::index::{assert_documents_match, assert_log_matches_serial};
use crate::support::process::{ServerProcess, index_is_whole, upload_to};
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_crash_after_the_archive_is_stored_leaves_the_old_stable_and_the_upload_is_accepted_on_restart,
    a_crash_after_the_commit_leaves_the_promotion_with_its_document,
);

/// Sets up a database and data dir (through a `TestApp` that then stops
/// serving) and returns the operator's token with them.
async fn prepared(db: TestDb) -> (TestApp, String) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    (app, token)
}

async fn state_of(app: &TestApp, upload_id: i64) -> String {
    let row: (String,) = sqlx::query_as("SELECT state FROM uploads WHERE id = $1")
        .bind(upload_id)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    row.0
}

async fn count(app: &TestApp, sql: &'static str, upload_id: i64) -> i64 {
    let row: (i64,) = sqlx::query_as(sql)
        .bind(upload_id)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    row.0
}

async fn wait_accepted(app: &TestApp, upload_id: i64) {
    wait_until(
        async || state_of(app, upload_id).await == "accepted",
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|| panic!("upload {upload_id} never accepted"));
}

async fn a_crash_after_the_archive_is_stored_leaves_the_old_stable_and_the_upload_is_accepted_on_restart(
    db: TestDb,
) {
    let (app, token) = prepared(db).await;
    let data = app.app.config.data_dir.clone();
    let url = app.database_url.clone();

    let mut server = ServerProcess::start(&data, &url, Some("promote-after-archive")).await;
    let id = upload_to(
        &server.base,
        &token,
        package_building("alpha", "1.0.0", &[], "true", None),
    )
    .await;
    assert!(
        server.wait_exit(Duration::from_secs(60)).await,
        "the failpoint aborted the server"
    );
    // The old stable repository: no index entry, and the upload not lost.
    let (index, whole) = index_is_whole(&url, &data).await;
    assert!(whole);
    assert!(index["packages"]["alpha"].is_null(), "{index}");
    assert_eq!(state_of(&app, id).await, "checking");

    let _server = ServerProcess::start(&data, &url, None).await;
    wait_accepted(&app, id).await;
    let shown = wait_until(
        async || {
            let (index, whole) = index_is_whole(&url, &data).await;
            assert!(whole, "{index}");
            index["packages"]["alpha"]["versions"][0]["version"] == "1.0.0"
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(
        shown.is_some(),
        "the index never showed alpha: {}",
        index_is_whole(&url, &data).await.0
    );
    assert_documents_match(app.app.db.pool()).await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM verdicts WHERE upload_id = $1",
            id
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM versions WHERE upload_id = $1",
            id
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM events WHERE kind = 'upload.accepted' AND upload_id = $1",
            id
        )
        .await,
        1
    );
}

async fn a_crash_after_the_commit_leaves_the_promotion_with_its_document(db: TestDb) {
    let (app, token) = prepared(db).await;
    let data = app.app.config.data_dir.clone();
    let url = app.database_url.clone();

    let mut server = ServerProcess::start(&data, &url, Some("promote-after-commit")).await;
    let id = upload_to(
        &server.base,
        &token,
        package_building("beta", "1.0.0", &[], "true", None),
    )
    .await;
    assert!(
        server.wait_exit(Duration::from_secs(60)).await,
        "the failpoint aborted the server"
    );
    // Committed with its change and its document (written in the same
    // transaction): nothing is left for a restart to repair.
    assert_eq!(state_of(&app, id).await, "accepted");
    assert_log_matches_serial(app.app.db.pool()).await;
    let (index, whole) = index_is_whole(&url, &data).await;
    assert!(whole, "{index}");
    assert_eq!(
        index["packages"]["beta"]["versions"][0]["version"], "1.0.0",
        "{index}"
    );
    assert_documents_match(app.app.db.pool()).await;

    let server = ServerProcess::start(&data, &url, None).await;
    // What the restarted server serves is that document.
    let served = reqwest::get(format!("{}/api/v1/index/beta", server.base))
        .await
        .unwrap();
    assert_eq!(served.status(), reqwest::StatusCode::OK);
    let served: serde_json::Value = served.json().await.unwrap();
    let (index, whole) = index_is_whole(&url, &data).await;
    assert_eq!(served, index["packages"]["beta"]);
    assert!(whole, "{index}");
    assert_eq!(
        index["packages"]["beta"]["versions"][0]["version"], "1.0.0",
        "{index}"
    );
    assert_eq!(index["serial"], 1);
    assert_documents_match(app.app.db.pool()).await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM versions WHERE upload_id = $1",
            id
        )
        .await,
        1
    );
}
