//! The server's log as an operator reads it: JSON lines on request, and no
//! email address in it, even where a mail server's refusal names one.

use std::time::Duration;

use crate::on_both_databases;
use crate::support::archives::{manifest, package, package_with_manifest};
use crate::support::process::{ServerProcess, upload_to};
use crate::support::smtp::{self, UNKNOWN_RECIPIENT};
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(after_a_full_upload_check_and_verdict_the_servers_log_holds_no_email_address,);

async fn after_a_full_upload_check_and_verdict_the_servers_log_holds_no_email_address(db: TestDb) {
    let (inbox, port) = smtp::start(None);
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let data = app.app.config.data_dir.clone();
    let dir = data.parent().unwrap().to_owned();
    let config = dir.join("holdq-logs.toml");
    std::fs::write(
        &config,
        format!("[mail]\nsmtp_url = \"smtp://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let log = dir.join("server.log");
    let server = ServerProcess::start_logged(
        &data,
        &app.database_url,
        &config,
        &["--log-format", "json"],
        &[("HOLDQ_LOG", "holdq=debug,warn")],
        &log,
    )
    .await;

    // One accepted upload (its emails delivered), one whose second
    // maintainer the mail server refuses for good, naming the address.
    let good = upload_to(&server.base, &ada, package("alpha", "1.0.0")).await;
    let text = manifest("beta", "1.0.0", &[]).replace(
        "maintainers = [\"Ada <ada@example.org>\"]",
        &format!("maintainers = [\"Ada <ada@example.org>\", \"{UNKNOWN_RECIPIENT}\"]"),
    );
    let refused = upload_to(
        &server.base,
        &ada,
        package_with_manifest("beta-1.0.0", &text),
    )
    .await;
    for id in [good, refused] {
        let v = app.wait_for_verdict(id).await;
        assert_eq!(v["state"], "accepted", "{v:#}");
    }
    let settled = wait_until(
        async || app.pending_emails().await == 0,
        Duration::from_secs(60),
    )
    .await;
    assert!(settled.is_some(), "the emails never settled");
    assert_eq!(inbox.messages().len(), 2, "ada's two emails");
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("holdq started"), "{text}");
    assert!(text.contains("email refused for good"), "{text}");
    for line in text.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event["level"].is_string(), "{line}");
    }
    assert!(
        !text.contains("example.org"),
        "an email address in the log:\n{text}"
    );
    assert!(!text.contains('\u{1b}'), "colour codes in a log file");
}
