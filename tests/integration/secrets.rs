//! Secrets off the command line: a remote worker's token from a file or
//! the environment, a warning when it is given as `--token`, and the same
//! for database URLs with passwords.

use std::process::Command;
use std::time::Duration;

use crate::on_both_databases;
use crate::support::process::WorkerProcess;
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_worker_reads_its_token_from_a_file,
    a_worker_reads_its_token_from_the_environment,
    a_token_on_the_command_line_works_with_a_warning,
);

async fn worker_token(app: &TestApp) -> String {
    holdq::service::users::add_user(
        &app.app.db,
        "farm@example.org",
        holdq::service::users::Role::Worker,
    )
    .await
    .expect("a worker account")
    .1
}

/// Starts a remote worker of platform `linux-a` with its token given by
/// `token`, and waits until it has checked the token and registered.
async fn registered_worker(
    app: &TestApp,
    dir: &std::path::Path,
    token: impl FnOnce(&mut Command),
) -> WorkerProcess {
    let worker =
        WorkerProcess::start_remote_with("linux-a", &app.base, dir, &app.database_url, token);
    let registered = wait_until(
        async || {
            let (n,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM check_workers WHERE platform = 'linux-a'")
                    .fetch_one(app.app.db.pool())
                    .await
                    .unwrap();
            n > 0
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(
        registered.is_some(),
        "the worker never registered:\n{}",
        worker.log()
    );
    worker
}

const WARNING: &str = "every user of this machine can read it";

async fn a_worker_reads_its_token_from_a_file(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = worker_token(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let worker = registered_worker(&app, dir.path(), |cmd| {
        cmd.arg("--token-file").arg(&file);
    })
    .await;
    assert!(!worker.log().contains(WARNING), "{}", worker.log());
}

async fn a_worker_reads_its_token_from_the_environment(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = worker_token(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let worker = registered_worker(&app, dir.path(), |cmd| {
        cmd.env("HOLDQ_TOKEN", &token);
    })
    .await;
    assert!(!worker.log().contains(WARNING), "{}", worker.log());
}

async fn a_token_on_the_command_line_works_with_a_warning(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = worker_token(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let worker = registered_worker(&app, dir.path(), |cmd| {
        cmd.args(["--token", &token]);
    })
    .await;
    let log = worker.log();
    assert!(
        log.contains("--token was given on the command line"),
        "{log}"
    );
    assert!(
        log.contains("--token-file"),
        "the warning says what to use: {log}"
    );
    assert!(
        !log.contains(&token),
        "the warning does not repeat the token: {log}"
    );
}

fn holdq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_holdq"))
        .args(args)
        .env_remove("HOLDQ_DATABASE_URL")
        .env_remove("HOLDQ_CONFIG")
        .output()
        .expect("holdq runs")
}

#[test]
fn an_empty_token_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "\n").unwrap();
    let out = holdq(&[
        "worker",
        "--platform",
        "linux-a",
        "--server",
        "http://127.0.0.1:9",
        "--token-file",
        file.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--token-file") && stderr.contains("is empty"),
        "{stderr}"
    );
}

#[test]
fn a_database_url_with_a_password_on_the_command_line_warns_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = holdq(&[
        "user",
        "add",
        "ada@example.org",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        "postgres://holdq:hunter2@127.0.0.1:9/holdq",
        // Refused at start-up, after the warning: no database is tried.
        "--listen",
        "not-an-address",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: --database-url with a password was given on the command line"),
        "{stderr}"
    );
    assert!(stderr.contains("--database-url-file"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_database_url_file_is_read_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/holdq.db", dir.path().display());
    let file = dir.path().join("database-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let out = holdq(&[
        "user",
        "add",
        "ada@example.org",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url-file",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(
        dir.path().join("holdq.db").exists(),
        "the URL in the file was used"
    );
}
