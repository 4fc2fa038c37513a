//! The command line as a maintainer and an operator use it: the real
//! binary against the real server.

use std::path::Path;
use std::process::Output;

use crate::on_both_databases;
use crate::support::archives::manifest;
use crate::support::{TestApp, TestDb};

on_both_databases!(
    pack_upload_queue_and_status_from_the_command_line,
    user_add_prints_a_token_that_the_server_accepts,
    client_errors_are_one_line_with_a_non_zero_exit,
    mail_test_sends_one_sample_of_each_template,
    upload_together_makes_one_group_accepted_as_one,
);

async fn holdq(app: &TestApp, token: Option<&str>, args: &[&str], cwd: &Path) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_holdq"));
    cmd.args(args)
        .current_dir(cwd)
        .env("HOLDQ_SERVER", &app.base)
        .env("HOLDQ_CLIENT_CONFIG", cwd.join("no-client.toml"))
        .env("HOLDQ_DATABASE_URL", &app.database_url)
        .env_remove("HOLDQ_TOKEN");
    if let Some(t) = token {
        cmd.env("HOLDQ_TOKEN", t);
    }
    cmd.output().await.expect("holdq runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_package(dir: &Path, name: &str, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("package.toml"), manifest(name, version, &[])).unwrap();
    std::fs::write(dir.join("build.sh"), "echo built\n").unwrap();
}

async fn pack_upload_queue_and_status_from_the_command_line(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    let work = tempfile::tempdir().unwrap();
    write_package(&work.path().join("src"), "hello", "1.0.0");

    let packed = holdq(&app, None, &["pack", "src"], work.path()).await;
    assert!(packed.status.success(), "{}", stderr(&packed));
    assert!(work.path().join("hello-1.0.0.tar.gz").is_file());
    assert!(
        stdout(&packed).contains("hello 1.0.0"),
        "{}",
        stdout(&packed)
    );

    let up = holdq(
        &app,
        Some(&token),
        &["upload", "hello-1.0.0.tar.gz", "--json"],
        work.path(),
    )
    .await;
    assert!(up.status.success(), "{}", stderr(&up));
    let receipt: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(receipt["state"], "queued");
    assert_eq!(receipt["position"], 1);
    let id = receipt["id"].as_i64().unwrap();

    let human = holdq(
        &app,
        Some(&token),
        &["upload", "hello-1.0.0.tar.gz"],
        work.path(),
    )
    .await;
    assert!(human.status.success(), "{}", stderr(&human));
    let text = stdout(&human);
    assert!(
        text.contains("position 1") && text.contains(&format!("supersedes upload {id}")),
        "{text}"
    );

    let queue = holdq(&app, Some(&token), &["queue", "--json"], work.path()).await;
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&queue.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "hello");

    let status = holdq(
        &app,
        Some(&token),
        &["status", &id.to_string()],
        work.path(),
    )
    .await;
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("superseded"),
        "{}",
        stdout(&status)
    );
    let by_name = holdq(
        &app,
        Some(&token),
        &["status", "hello", "--json"],
        work.path(),
    )
    .await;
    let shown: serde_json::Value = serde_json::from_slice(&by_name.stdout).unwrap();
    assert_eq!(shown["uploads"].as_array().unwrap().len(), 2);
    assert!(shown["package"].is_null(), "not in stable yet: {shown}");
}

async fn user_add_prints_a_token_that_the_server_accepts(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let work = tempfile::tempdir().unwrap();
    let added = holdq(
        &app,
        None,
        &["user", "add", "carol@example.org"],
        work.path(),
    )
    .await;
    assert!(added.status.success(), "{}", stderr(&added));
    let token = stdout(&added).trim().to_owned();
    assert!(token.starts_with("hq_"), "{token}");
    // Stored hashed: the clear token is nowhere in the database.
    let (clear,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_tokens WHERE token_hash = $1")
        .bind(&token)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert_eq!(clear, 0);
    let queue = holdq(&app, Some(&token), &["queue"], work.path()).await;
    assert!(queue.status.success(), "{}", stderr(&queue));
    assert!(stdout(&queue).contains("empty"), "{}", stdout(&queue));

    let again = holdq(
        &app,
        None,
        &["user", "add", "carol@example.org"],
        work.path(),
    )
    .await;
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
}

async fn client_errors_are_one_line_with_a_non_zero_exit(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("package.toml"),
        manifest("selfish", "1.0.0", &[("selfish", "^1")]),
    )
    .unwrap();

    let pack = holdq(&app, None, &["pack", "src"], work.path()).await;
    assert!(!pack.status.success());
    let err = stderr(&pack);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("itself"), "{err}");

    write_package(&src, "hello", "1.0.0");
    holdq(&app, None, &["pack", "src"], work.path()).await;
    let bad = holdq(
        &app,
        Some("hq_wrong"),
        &["upload", "hello-1.0.0.tar.gz"],
        work.path(),
    )
    .await;
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not valid") && err.contains("401"), "{err}");
}

async fn mail_test_sends_one_sample_of_each_template(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let out = holdq(
        &app,
        None,
        &[
            "mail",
            "test",
            "ops@example.org",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        work.path(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // No SMTP server configured: the samples are .eml files in the outbox.
    let files: Vec<String> = std::fs::read_dir(data.join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len(), holdq::email::KINDS.len());
    assert!(
        files
            .iter()
            .all(|f| f.contains("To: ops@example.org") && f.contains("[sample] [holdq]")),
        "{files:#?}"
    );
}

async fn upload_together_makes_one_group_accepted_as_one(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    let work = tempfile::tempdir().unwrap();
    // base 1.0.0 and its dependent, which needs base ^1.0 (nothing in stable).
    write_package(&work.path().join("a"), "base", "1.0.0");
    let dir = work.path().join("b");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        manifest("top", "1.0.0", &[("base", "^1.0")]),
    )
    .unwrap();
    std::fs::write(
        dir.join("build.sh"),
        "test -f $HOLDQ_DEPS/base/package.toml\n",
    )
    .unwrap();
    for d in ["a", "b"] {
        assert!(
            holdq(&app, None, &["pack", d], work.path())
                .await
                .status
                .success()
        );
    }
    let up = holdq(
        &app,
        Some(&token),
        &[
            "upload",
            "base-1.0.0.tar.gz",
            "top-1.0.0.tar.gz",
            "--together",
        ],
        work.path(),
    )
    .await;
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        stdout(&up).contains("upload group 1: 2 uploads"),
        "{}",
        stdout(&up)
    );
    let (group, members): (i64, i64) =
        sqlx::query_as("SELECT MIN(group_id), COUNT(*) FROM uploads WHERE group_id IS NOT NULL")
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
    assert_eq!((group, members), (1, 2));
    app.drain().await;
    for id in [1, 2] {
        let v = app.upload_view(id).await;
        assert_eq!(v["state"], "accepted", "{v:#}");
    }
}
