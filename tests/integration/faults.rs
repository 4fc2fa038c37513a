//! Infrastructure errors (SPEC section 3): a check that cannot run for a
//! reason that is not its package's goes back to pending with the reason,
//! is retried with backoff, and resumes by itself once the cause is gone.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_check_whose_workspace_cannot_be_unpacked_waits_with_backoff_and_resumes,
    an_operator_retry_runs_a_check_waiting_on_infrastructure_at_once,
);

/// The build check of an upload view, once it has one.
fn build_of(view: &Value) -> Option<Value> {
    view["checks"]
        .as_array()?
        .iter()
        .find(|c| c["kind"] == "build")
        .cloned()
}

/// Puts a plain file where the work directory of checks must be: every
/// workspace fails to unpack (as root, `chmod` would not stop it).
fn block_work_dir(app: &TestApp) -> std::path::PathBuf {
    let work = app.app.config.data_dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::write(&work, "not a directory").unwrap();
    work
}

/// The upload's build check once it waits after `failures` or more
/// infrastructure errors.
async fn wait_for_failures(app: &TestApp, id: i64, failures: i64) -> Value {
    wait_until(
        async || {
            let build = build_of(&app.upload_view(id).await)?;
            (build["infra"]["failures"].as_i64() >= Some(failures)).then_some(build)
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|| panic!("upload {id} never failed {failures} times on infrastructure"))
}

async fn a_check_whose_workspace_cannot_be_unpacked_waits_with_backoff_and_resumes(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.start_workers().await;
    let work = block_work_dir(&app);
    let ada = app.user("ada@example.org").await;
    let started = Instant::now();
    let id = app
        .upload_ok(&ada, package_building("sturdy", "1.0.0", &[], "true", None))
        .await;

    let build = wait_for_failures(&app, id, 1).await;
    assert_eq!(build["state"], "pending", "back in line: {build:#}");
    assert_eq!(build["infra"]["reason"], "unpack", "{build:#}");
    let line = build["infra"]["line"].as_str().unwrap();
    assert!(
        line.starts_with("waiting: infrastructure error on worker ")
            && line.contains("cannot prepare the workspace")
            && line.contains("(retry in "),
        "{line}"
    );
    let queue = app.queue().await;
    let waiting = queue[0]["waiting_for"].to_string();
    assert!(
        waiting.contains("infrastructure error") && waiting.contains("retry in"),
        "the queue says why it waits: {waiting}"
    );

    // Backoff, not a hot loop: a third failure comes only after the first
    // two waits (1 s, then 2 s).
    wait_for_failures(&app, id, 3).await;
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "three tries in {:?}: no backoff",
        started.elapsed()
    );
    let view = app.upload_view(id).await;
    assert_eq!(
        view["state"], "checking",
        "never counted against it: {view:#}"
    );
    let build = build_of(&view).unwrap();
    assert!(
        build["infra"]["failures"].as_i64().unwrap() <= 5,
        "a handful of tries in the first seconds: {build:#}"
    );

    // The cause goes away: the check resumes by itself, within one backoff
    // step, and passes; the verdict is given once.
    std::fs::remove_file(&work).unwrap();
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    assert!(build_of(&v).unwrap().get("infra").is_none(), "{v:#}");
    let (verdicts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM verdicts WHERE upload_id = $1")
        .bind(id)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    let (accepted,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM events WHERE upload_id = $1 AND kind = 'upload.accepted'",
    )
    .bind(id)
    .fetch_one(app.app.db.pool())
    .await
    .unwrap();
    assert_eq!((verdicts, accepted), (1, 1));
}

async fn an_operator_retry_runs_a_check_waiting_on_infrastructure_at_once(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.start_workers().await;
    let work = block_work_dir(&app);
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(
            &ada,
            package_building("patient", "1.0.0", &[], "true", None),
        )
        .await;
    // Waits long enough that its next try is seconds away.
    wait_for_failures(&app, id, 4).await;
    std::fs::remove_file(&work).unwrap();
    let retry_at = async || -> Option<i64> {
        sqlx::query_as::<_, (Option<i64>,)>(
            "SELECT retry_at FROM checks WHERE upload_id = $1 AND kind = 'build'",
        )
        .bind(id)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap()
        .0
    };
    let now = || holdq::db::now_ms();
    assert!(
        retry_at().await.unwrap() > now() + 1000,
        "its next try is seconds away"
    );

    let answer = app
        .http
        .post(app.url(&format!("/api/v1/uploads/{id}/retry")))
        .bearer_auth(&app.operator)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert!(status.is_success(), "{status} {body:#}");
    assert!(
        body.to_string().contains("infrastructure error"),
        "the retry names what it restarted: {body:#}"
    );
    assert!(
        retry_at().await.is_none_or(|t| t <= now()),
        "the retry made it due now"
    );
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
}
