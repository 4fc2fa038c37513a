//! Operators (SPEC section 7): the pass mark tuned at run time, simulate,
//! flaky checks, cancel, pause and resume, the operator-only endpoints,
//! health and metrics.

use std::time::Duration;

use holdq::config::PlatformConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::{Answer, TestApp, TestDb, two_platforms, wait_until};

on_both_databases!(
    lowering_the_threshold_while_an_upload_waits_changes_its_verdict_and_not_given_ones,
    simulate_lists_exactly_the_uploads_that_would_flip_and_changes_nothing,
    a_flaky_build_is_accepted_with_one_retry_and_marked_flaky,
    an_operator_retry_of_a_failed_check_marks_it_flaky_when_it_passes,
    a_paused_platform_holds_its_checks_and_releases_them_on_resume,
    a_cancelled_upload_is_halted_rejected_and_its_maintainers_told,
    non_operators_get_403_on_every_operator_endpoint,
    metrics_parse_and_the_queue_length_matches_the_queue,
);

async fn call(app: &TestApp, token: &str, method: Method, path: &str, body: Value) -> Answer {
    let resp = app
        .http
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

async fn set(app: &TestApp, key: &str, value: &str) {
    let a = call(
        app,
        &app.operator,
        Method::PUT,
        "/api/v1/passmark",
        json!({ "key": key, "value": value, "why": "test" }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
}

const FAILS_ON_B: &str = "test \"$HOLDQ_PLATFORM\" != linux-b";

async fn lowering_the_threshold_while_an_upload_waits_changes_its_verdict_and_not_given_ones(
    db: TestDb,
) {
    let app = TestApp::spawn_with(db, two_platforms).await;
    let ada = app.user("ada@example.org").await;
    let first = app
        .upload_ok(
            &ada,
            package_building("flaky", "1.0.0", &[], FAILS_ON_B, None),
        )
        .await;
    app.drain().await;
    assert_eq!(app.upload_view(first).await["state"], "rejected");

    // The next one waits in the queue while the operator lowers the mark.
    let second = app
        .upload_ok(
            &ada,
            package_building("flaky", "1.0.1", &[], FAILS_ON_B, None),
        )
        .await;
    holdq::service::checks::start_queued(&app.app)
        .await
        .unwrap();
    set(&app, "required.build", "false").await;
    set(&app, "threshold", "0.6").await;
    app.drain().await;
    let v = app.upload_view(second).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    assert!((v["verdict"]["score"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9);
    assert_eq!(
        v["verdict"]["threshold"], 0.6,
        "the verdict records the pass mark it used"
    );
    let (recorded,): (String,) =
        sqlx::query_as("SELECT passmark FROM verdicts WHERE upload_id = $1")
            .bind(second)
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
    let recorded: Value = serde_json::from_str(&recorded).unwrap();
    assert_eq!(recorded["threshold"], 0.6);
    assert!(
        !recorded["required"]
            .as_array()
            .unwrap()
            .contains(&json!("build"))
    );

    // A given verdict never changes.
    set(&app, "threshold", "1").await;
    assert_eq!(app.upload_view(first).await["state"], "rejected");
    assert_eq!(app.upload_view(second).await["state"], "accepted");
    assert_eq!(app.upload_view(second).await["verdict"]["threshold"], 0.6);

    let history = call(
        &app,
        &ada,
        Method::GET,
        "/api/v1/passmark/history",
        Value::Null,
    )
    .await
    .body;
    let keys: Vec<(&str, &str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap(),
                c["old"].as_str().unwrap(),
                c["new"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("required.build", "true", "false"),
            ("threshold", "1", "0.6"),
            ("threshold", "0.6", "1")
        ]
    );
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["by"] == "operator@example.org" && c["why"] == "test")
    );
    let shown = call(&app, &ada, Method::GET, "/api/v1/passmark", Value::Null)
        .await
        .body;
    assert_eq!(shown["threshold"], 1.0);
}

async fn simulate_lists_exactly_the_uploads_that_would_flip_and_changes_nothing(db: TestDb) {
    let app = TestApp::spawn_with(db, two_platforms).await;
    let ada = app.user("ada@example.org").await;
    // Known scores: good 6/6, half 4/6 (fails on b), bad 2/6 (fails everywhere).
    let good = app
        .upload_ok(&ada, package_building("good", "1.0.0", &[], "true", None))
        .await;
    let half = app
        .upload_ok(
            &ada,
            package_building("half", "1.0.0", &[], FAILS_ON_B, None),
        )
        .await;
    let bad = app
        .upload_ok(&ada, package_building("bad", "1.0.0", &[], "false", None))
        .await;
    app.drain().await;
    let before: Vec<Value> =
        futures::future::join_all([good, half, bad].map(|id| app.upload_view(id))).await;

    let simulate = |changes: Value| {
        call(
            &app,
            &app.operator,
            Method::POST,
            "/api/v1/passmark/simulate",
            json!({ "changes": changes }),
        )
    };
    let s = simulate(json!([["required.build", "false"], ["threshold", "0.6"]])).await;
    assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
    assert_eq!(s.body["considered"], 3);
    let flipped: Vec<i64> = s.body["flips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["upload_id"].as_i64().unwrap())
        .collect();
    assert_eq!(flipped, [half]);
    let f = &s.body["flips"][0];
    assert_eq!(
        (f["accepted_before"].clone(), f["accepted_after"].clone()),
        (json!(false), json!(true))
    );

    let s = simulate(json!([["required.build", "false"], ["threshold", "0.3"]])).await;
    let flipped: Vec<i64> = s.body["flips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["upload_id"].as_i64().unwrap())
        .collect();
    assert_eq!(flipped, [half, bad]);
    let s = simulate(json!([["weight.build", "5"]])).await;
    assert!(
        s.body["flips"].as_array().unwrap().is_empty(),
        "builds stay required: {:?}",
        s.body
    );
    let bad_key = simulate(json!([["colour", "red"]])).await;
    assert_eq!(
        (bad_key.status, bad_key.code()),
        (StatusCode::BAD_REQUEST, "invalid_passmark")
    );

    // Nothing changed.
    let after: Vec<Value> =
        futures::future::join_all([good, half, bad].map(|id| app.upload_view(id))).await;
    assert_eq!(before, after);
    assert!(
        call(
            &app,
            &ada,
            Method::GET,
            "/api/v1/passmark/history",
            Value::Null
        )
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty()
    );
}

async fn a_flaky_build_is_accepted_with_one_retry_and_marked_flaky(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.platforms[0].retries = 1).await;
    let ada = app.user("ada@example.org").await;
    // Fails on its first try, passes on the second.
    let id = app
        .upload_ok(
            &ada,
            package_building("wobbly", "1.0.0", &[], "test \"$HOLDQ_TRY\" -ge 2", None),
        )
        .await;
    app.drain().await;
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    let p = PlatformConfig::host().name.to_string();
    assert_eq!(v["verdict"]["flaky"], json!([format!("build@{p}")]));
    let build = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "build")
        .unwrap()
        .clone();
    assert_eq!(build["metadata"]["tries"], 2);
    assert_eq!(build["metadata"]["flaky"], true);
    assert!(
        build["summary"].as_str().unwrap().contains("flaky"),
        "{build:#}"
    );

    // Without retries the same build is rejected.
    let strict = TestApp::spawn(TestDb::Sqlite).await;
    let token = strict.user("ada@example.org").await;
    let id = strict
        .upload_ok(
            &token,
            package_building("wobbly", "1.0.0", &[], "test \"$HOLDQ_TRY\" -ge 2", None),
        )
        .await;
    strict.drain().await;
    assert_eq!(strict.upload_view(id).await["state"], "rejected");
}

async fn an_operator_retry_of_a_failed_check_marks_it_flaky_when_it_passes(db: TestDb) {
    let app = TestApp::spawn_with(db, two_platforms).await;
    let ada = app.user("ada@example.org").await;
    // linux-b is paused, so the upload waits for it after linux-a fails.
    call(
        &app,
        &app.operator,
        Method::POST,
        "/api/v1/platforms/linux-b/pause",
        json!({}),
    )
    .await;
    let build = "test \"$HOLDQ_PLATFORM\" != linux-a || test \"$HOLDQ_TRY\" -ge 2";
    let id = app
        .upload_ok(&ada, package_building("wobbly", "1.0.0", &[], build, None))
        .await;
    app.drain().await;
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "checking");
    let retry = call(
        &app,
        &app.operator,
        Method::POST,
        &format!("/api/v1/uploads/{id}/retry"),
        json!({ "check": "build@linux-a" }),
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(retry.body["retried"], json!(["build@linux-a"]));
    call(
        &app,
        &app.operator,
        Method::POST,
        "/api/v1/platforms/linux-b/resume",
        json!({}),
    )
    .await;
    app.drain().await;
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    assert_eq!(v["verdict"]["flaky"], json!(["build@linux-a"]));
    let again = call(
        &app,
        &app.operator,
        Method::POST,
        &format!("/api/v1/uploads/{id}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "not_pending")
    );
}

async fn a_paused_platform_holds_its_checks_and_releases_them_on_resume(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.start_workers().await;
    let ada = app.user("ada@example.org").await;
    let p = PlatformConfig::host().name.to_string();
    let paused = call(
        &app,
        &app.operator,
        Method::POST,
        &format!("/api/v1/platforms/{p}/pause"),
        json!({}),
    )
    .await;
    assert_eq!(paused.body["paused"], true);
    let id = app
        .upload_ok(
            &ada,
            package_building("patient", "1.0.0", &[], "true", None),
        )
        .await;
    // Started, and after a reconcile sweep (which pushes every pending
    // check a job) still no job on the paused platform's queue: no worker
    // can take the check, however slow.
    app.wait_checking(id).await;
    holdq::service::scheduler::reconcile(&app.app)
        .await
        .unwrap();
    assert_eq!(app.jobs_in(&holdq::jobs::queue_name(&p)).await, 0);
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "checking", "held: {v:#}");
    let queue = app
        .get(Some(&ada), &format!("/api/v1/queue?platform={p}"))
        .await
        .body;
    assert_eq!(queue[0]["id"], id);
    assert!(
        queue[0]["waiting_for"][0]
            .as_str()
            .unwrap()
            .contains("platform paused"),
        "{queue:#}"
    );

    let resumed = call(
        &app,
        &app.operator,
        Method::POST,
        &format!("/api/v1/platforms/{p}/resume"),
        json!({}),
    )
    .await;
    assert_eq!(resumed.body["paused"], false);
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "released: {v:#}");
}

async fn a_cancelled_upload_is_halted_rejected_and_its_maintainers_told(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.start_workers().await;
    let ada = app.user("ada@example.org").await;
    let marker = format!("sleep {}", 500_000 + rand::random::<u32>() % 90_000);
    let id = app
        .upload_ok(&ada, package_building("stuck", "1.0.0", &[], &marker, None))
        .await;
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    wait_until(async || running(), Duration::from_secs(60))
        .await
        .expect("the build never started");
    let no_reason = call(
        &app,
        &app.operator,
        Method::POST,
        &format!("/api/v1/uploads/{id}/cancel"),
        json!({ "why": "" }),
    )
    .await;
    assert_eq!(no_reason.code(), "why_required");
    let c = call(
        &app,
        &app.operator,
        Method::POST,
        &format!("/api/v1/uploads/{id}/cancel"),
        json!({ "why": "stuck for hours" }),
    )
    .await;
    assert_eq!(c.status, StatusCode::NO_CONTENT, "{:?}", c.body);
    wait_until(async || !running(), Duration::from_secs(5))
        .await
        .expect("the build survived the cancel");
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "rejected");
    assert_eq!(v["reason"], "cancelled by an operator: stuck for hours");
    assert_eq!(v["verdict"]["cancelled"], "stuck for hours");
    let (text,): (String,) = sqlx::query_as("SELECT text_body FROM outbox WHERE upload_id = $1")
        .bind(id)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert!(
        text.contains("Cancelled by an operator: stuck for hours"),
        "{text}"
    );
    let again = call(
        &app,
        &app.operator,
        Method::POST,
        &format!("/api/v1/uploads/{id}/cancel"),
        json!({ "why": "x" }),
    )
    .await;
    assert_eq!(again.code(), "not_pending");
}

async fn non_operators_get_403_on_every_operator_endpoint(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(&ada, package_building("mine", "1.0.0", &[], "true", None))
        .await;
    let p = PlatformConfig::host().name.to_string();
    let endpoints = [
        (
            Method::PUT,
            "/api/v1/passmark".to_owned(),
            json!({ "key": "threshold", "value": "0.5", "why": "x" }),
        ),
        (
            Method::POST,
            "/api/v1/passmark/simulate".to_owned(),
            json!({ "changes": [["threshold", "0.5"]] }),
        ),
        (
            Method::POST,
            format!("/api/v1/uploads/{id}/cancel"),
            json!({ "why": "x" }),
        ),
        (
            Method::POST,
            format!("/api/v1/uploads/{id}/retry"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/platforms/{p}/pause"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/platforms/{p}/resume"),
            json!({}),
        ),
        (
            Method::DELETE,
            "/api/v1/packages/mine/obsolete".to_owned(),
            json!({}),
        ),
    ];
    for (method, path, body) in endpoints {
        let a = call(&app, &ada, method.clone(), &path, body).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            a.body
        );
        assert_eq!(a.code(), "not_operator", "{method} {path}");
    }
    assert_eq!(
        app.upload_view(id).await["state"],
        "queued",
        "nothing happened"
    );
}

/// Checks the Prometheus text exposition format line by line; returns the
/// samples by name with labels.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("a metric name");
            let kind = parts.next().expect("a type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("a sample: name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.to_owned(), |n, s| {
                n.strip_suffix(s).map(String::from).unwrap_or(n)
            });
        assert!(
            typed.contains(name) || typed.contains(&family),
            "sample before its TYPE: {line}"
        );
        samples.push((series.to_owned(), value));
    }
    samples
}

async fn metrics_parse_and_the_queue_length_matches_the_queue(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, package_building("done", "1.0.0", &[], "true", None))
        .await;
    app.drain().await;
    app.upload_ok(&ada, package_building("one", "1.0.0", &[], "true", None))
        .await;
    app.upload_ok(&ada, package_building("two", "1.0.0", &[], "true", None))
        .await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_exposition(&text);
    let value = |series: &str| samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
    let queue = app.queue().await;
    assert_eq!(value("holdq_queue_length"), Some(queue.len() as f64));
    assert_eq!(queue.len(), 2);
    assert_eq!(
        value("holdq_verdicts_total{verdict=\"accepted\"}"),
        Some(1.0)
    );
    assert!(
        value("holdq_check_duration_seconds_count{kind=\"build\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value("holdq_email_outbox{state=\"pending\"}").is_some(),
        "{text}"
    );
    let p = PlatformConfig::host().name.to_string();
    assert!(
        value(&format!("holdq_checks_running{{platform=\"{p}\"}}")).is_some(),
        "{text}"
    );
    let free = holdq::storage::space::Space::of(&app.app.config.data_dir, 0)
        .unwrap()
        .available as f64;
    let exposed = value("holdq_data_free_bytes").expect("the data directory's free space");
    assert!(
        (exposed - free).abs() < free * 0.05 + 64e6,
        "{exposed} exposed, {free} measured"
    );
}
