//! Notifications through a real SMTP server on loopback: one email per
//! maintainer per verdict, none for a superseded upload, the sync advice
//! when stable moved, delivery once after an outage (and a restart),
//! template overrides, and reviewed snapshots of what is sent.

use holdq::config::Config;

use crate::on_both_databases;
use crate::support::archives::{manifest, package_with_manifest};
use crate::support::smtp::{self, Inbox};
use crate::support::{TestApp, TestDb};

on_both_databases!(
    accepted_and_rejected_uploads_email_each_maintainer_once,
    a_superseded_upload_sends_no_email,
    a_reject_after_stable_moved_carries_the_sync_advice,
    an_outage_delays_emails_and_each_is_delivered_once_after_a_restart,
    a_temporary_refusal_is_retried_and_delivered_once,
    a_template_override_changes_the_subject,
    a_permanent_refusal_is_recorded_and_not_retried,
);

/// A package maintained by Ada and Bob whose build runs `build`.
fn package(name: &str, version: &str, build: &str) -> Vec<u8> {
    let text = manifest(name, version, &[])
        .replace(
            "maintainers = [\"Ada <ada@example.org>\"]",
            "maintainers = [\"Ada <ada@example.org>\", \"bob@example.org\"]",
        )
        .replace(
            "command = \"sh build.sh\"",
            &format!("command = \"{build}\""),
        );
    package_with_manifest(&format!("{name}-{version}"), &text)
}

async fn app_with_smtp(db: TestDb, tweak: impl FnOnce(&mut Config)) -> (TestApp, Inbox) {
    let (inbox, port) = smtp::start(None);
    let app = TestApp::spawn_with(db, |c| {
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        tweak(c);
    })
    .await;
    (app, inbox)
}

fn subjects(inbox: &Inbox) -> Vec<String> {
    let mut s: Vec<String> = inbox
        .messages()
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    s.sort();
    s
}

async fn accepted_and_rejected_uploads_email_each_maintainer_once(db: TestDb) {
    let (app, inbox) = app_with_smtp(db, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    let good = app.upload_ok(&ada, package("good", "1.0.0", "true")).await;
    let bad = app
        .upload_ok(
            &ada,
            package("bad", "1.0.0", "echo BUILD-BROKE-HERE; exit 3"),
        )
        .await;
    app.drain().await;
    app.drain_emails().await;
    app.drain_emails().await; // a second pass sends nothing more

    let messages = inbox.messages();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert_eq!(
        subjects(&inbox),
        [
            "[holdq] bad 1.0.0 rejected",
            "[holdq] bad 1.0.0 rejected",
            "[holdq] good 1.0.0 accepted into stable",
            "[holdq] good 1.0.0 accepted into stable",
        ]
    );
    for m in &messages {
        assert!(
            m.header("Message-ID")
                .is_some_and(|id| id.ends_with("@holdq>")),
            "{}",
            m.data
        );
        assert!(m.header("Date").is_some());
        assert!(m.data.contains("multipart/alternative"), "text and HTML");
        assert_eq!(m.from, "holdq@localhost");
    }
    let to_bad: Vec<&smtp::Received> = messages
        .iter()
        .filter(|m| m.data.contains("bad 1.0.0 rejected"))
        .collect();
    let mut recipients: Vec<String> = to_bad.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["ada@example.org", "bob@example.org"]);
    assert!(
        to_bad[0].data.contains("BUILD-BROKE-HERE"),
        "the failing check's log tail: {}",
        to_bad[0].data
    );
    assert!(
        to_bad[0].data.contains("pass mark 1.00"),
        "{}",
        to_bad[0].data
    );

    let shown = app.upload_view(good).await;
    let emails = shown["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 2);
    assert!(
        emails
            .iter()
            .all(|e| e["state"] == "sent" && e["attempts"] == 1),
        "{emails:#?}"
    );
    assert_eq!(
        app.upload_view(bad).await["emails"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

async fn a_superseded_upload_sends_no_email(db: TestDb) {
    let (app, inbox) = app_with_smtp(db, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    let old = app.upload_ok(&ada, package("alpha", "1.0.0", "true")).await;
    let new = app.upload_ok(&ada, package("alpha", "1.0.1", "true")).await;
    app.drain().await;
    app.drain_emails().await;
    assert!(
        app.upload_view(old).await["emails"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.upload_view(new).await["emails"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        subjects(&inbox),
        ["[holdq] alpha 1.0.1 accepted into stable"; 2]
    );
}

async fn a_reject_after_stable_moved_carries_the_sync_advice(db: TestDb) {
    let (app, inbox) = app_with_smtp(db, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    let lib_v1 = crate::support::archives::package_building("lib", "1.0.0", &[], "true", None);
    app.upload_ok(&ada, lib_v1).await;
    app.drain().await;
    // user needs lib's 1.0.0 exactly at build time; it passes against it,
    // then lib 1.1.0 reaches stable behind the queue before its verdict.
    let build = "grep -q 'lib = \"1.0.0\"' $HOLDQ_DEPS/resolved.toml";
    let user = app
        .upload_ok(
            &ada,
            crate::support::archives::package_building(
                "user",
                "1.0.0",
                &[("lib", "^1")],
                build,
                None,
            ),
        )
        .await;
    crate::support::stable::run_checks_undecided(&app, user).await;
    let lib = app
        .upload_ok(
            &ada,
            crate::support::archives::package_building("lib", "1.1.0", &[], "true", None),
        )
        .await;
    crate::support::stable::promote_behind_the_queue(&app, lib).await;
    // Rebased against the new stable (no email for that), then rejected.
    holdq::service::verdict::decide(&app.app, user)
        .await
        .unwrap();
    app.drain().await;
    app.drain_emails().await;
    assert_eq!(app.upload_view(user).await["state"], "rejected");
    let reject = inbox
        .messages()
        .into_iter()
        .find(|m| {
            m.header("Subject")
                .is_some_and(|s| s.contains("user 1.0.0 rejected"))
        })
        .expect("the reject email");
    assert!(
        reject.data.contains("Sync with the stable repository"),
        "{}",
        reject.data
    );
    // The verdict is the only email about user: the rebase sent none.
    let about_user = inbox
        .messages()
        .into_iter()
        .filter(|m| {
            m.header("Subject")
                .is_some_and(|s| s.contains("user 1.0.0"))
        })
        .count();
    assert_eq!(about_user, 1);
}

async fn an_outage_delays_emails_and_each_is_delivered_once_after_a_restart(db: TestDb) {
    // Nothing listens on the port yet: the SMTP server is down.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let app = TestApp::spawn_with(db, |c| {
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}"))
    })
    .await;
    let ada = app.user("ada@example.org").await;
    let id = app.upload_ok(&ada, package("alpha", "1.0.0", "true")).await;
    app.drain().await;
    assert_eq!(
        app.upload_view(id).await["state"],
        "accepted",
        "the verdict does not wait for mail"
    );
    app.drain_emails().await;
    let emails = app.upload_view(id).await["emails"].clone();
    for e in emails.as_array().unwrap() {
        assert_eq!(e["state"], "pending", "{e:#}");
        assert_eq!(e["attempts"], 1);
        assert!(
            e["last_error"].as_str().is_some_and(|m| !m.is_empty()),
            "{e:#}"
        );
    }

    // The mail server comes back; holdq restarts (a new process on the same data).
    let (inbox, _) = smtp::start(Some(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
    ));
    let restarted = holdq::service::App::open_with(
        (*app.app.config).clone(),
        holdq::sandbox::Sandbox::new(env!("CARGO_BIN_EXE_holdq").into()),
    )
    .await
    .unwrap();
    app.make_emails_due().await; // past the first backoff
    crate::support::drain_emails(&restarted).await;
    crate::support::drain_emails(&restarted).await;
    crate::support::drain_emails(&app.app).await;
    assert_eq!(inbox.messages().len(), 2, "each maintainer once");
    let emails = app.upload_view(id).await["emails"].clone();
    assert!(
        emails
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "sent"),
        "{emails:#}"
    );
}

async fn a_temporary_refusal_is_retried_and_delivered_once(db: TestDb) {
    let (app, inbox) = app_with_smtp(db, |_| {}).await;
    inbox.refuse(true);
    let ada = app.user("ada@example.org").await;
    let id = app.upload_ok(&ada, package("alpha", "1.0.0", "true")).await;
    app.drain().await;
    app.drain_emails().await;
    assert!(inbox.messages().is_empty());
    let emails = app.upload_view(id).await["emails"].clone();
    assert!(
        emails
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "pending"),
        "a 451 is not final: {emails:#}"
    );
    inbox.refuse(false);
    app.make_emails_due().await;
    app.drain_emails().await;
    app.drain_emails().await;
    assert_eq!(inbox.messages().len(), 2);
}

async fn a_template_override_changes_the_subject(db: TestDb) {
    let overrides = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(overrides.path().join("upload_accepted")).unwrap();
    std::fs::write(
        overrides.path().join("upload_accepted/subject.txt.j2"),
        "Welcome aboard, {{ package }}!",
    )
    .unwrap();
    let dir = overrides.path().to_owned();
    let (app, inbox) = app_with_smtp(db, move |c| c.mail.templates_dir = Some(dir)).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, package("alpha", "1.0.0", "true")).await;
    app.drain().await;
    app.drain_emails().await;
    assert_eq!(subjects(&inbox), ["Welcome aboard, alpha!"; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_verdict_emails_match_their_reviewed_snapshots() {
    let app = TestApp::spawn(TestDb::Sqlite).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, package("good", "1.0.0", "true")).await;
    app.upload_ok(
        &ada,
        package("bad", "1.0.0", "echo cc: error: wave.c not found; exit 2"),
    )
    .await;
    app.drain().await;
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT kind, subject, text_body, html_body FROM outbox WHERE to_addr = 'Ada <ada@example.org>' ORDER BY id")
            .fetch_all(app.app.db.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"http://127\.0\.0\.1:\d+", "[server]");
    settings.add_filter(r"uploads/\d+", "uploads/[id]");
    settings.add_filter(r"\d+\.\ds", "[secs]");
    settings.add_filter(r"linux-[a-z0-9_]+", "[platform]");
    settings.bind(|| {
        for (kind, subject, text, html) in rows {
            insta::assert_snapshot!(
                format!("{kind}_text"),
                format!("Subject: {subject}\n\n{text}")
            );
            insta::assert_snapshot!(format!("{kind}_html"), html);
        }
    });
}

async fn a_permanent_refusal_is_recorded_and_not_retried(db: TestDb) {
    let (app, inbox) = app_with_smtp(db, |_| {}).await;
    let ada = app.user("ada@example.org").await;
    let text =
        manifest("alpha", "1.0.0", &[]).replace("Ada <ada@example.org>", smtp::UNKNOWN_RECIPIENT);
    let id = app
        .upload_ok(&ada, package_with_manifest("alpha-1.0.0", &text))
        .await;
    app.drain().await;
    app.drain_emails().await;
    app.make_emails_due().await;
    app.drain_emails().await;
    let emails = app.upload_view(id).await["emails"].clone();
    let e = &emails[0];
    assert_eq!(e["state"], "failed", "{emails:#}");
    assert_eq!(e["attempts"], 1, "a permanent error is not retried");
    assert!(e["last_error"].as_str().unwrap().contains("550"), "{e:#}");
    assert!(inbox.messages().is_empty());
}
