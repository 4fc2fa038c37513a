//! `holdq worker` as its own process: a platform whose checks only a
//! separate worker process runs (no local worker in the server).

use std::time::Duration;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::process::{ServerProcess, WorkerProcess};
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(a_separate_worker_process_checks_its_platform,);

async fn a_separate_worker_process_checks_its_platform(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    let data = app.app.config.data_dir.clone();
    let config = data.parent().unwrap().join("holdq.toml");
    std::fs::write(
        &config,
        "[[platform]]\nname = \"linux-remote\"\nlocal_workers = 0\ntimeout = \"60s\"\n",
    )
    .unwrap();
    let server =
        ServerProcess::start_with_config(&data, &app.database_url, None, Some(&config)).await;

    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/uploads", server.base))
        .bearer_auth(&token)
        .header("content-type", "application/gzip")
        .body(package_building(
            "remote",
            "1.0.0",
            &[],
            "test \"$HOLDQ_PLATFORM\" = linux-remote",
            None,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    // With no worker for the platform, the upload waits, checking: its
    // check's job is in the platform's queue and nobody takes it.
    app.wait_checking(id).await;
    let queue = holdq::jobs::queue_name("linux-remote");
    wait_until(
        async || app.jobs_in(&queue).await > 0,
        Duration::from_secs(30),
    )
    .await
    .expect("the check's job was pushed");
    assert!(app.upload_view(id).await["verdict"].is_null());

    let _worker = WorkerProcess::start("linux-remote", &config, &data, &app.database_url);
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    let build = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "build")
        .unwrap();
    assert_eq!(build["platform"], "linux-remote");
    assert_eq!(build["state"], "passed");
}

on_both_databases!(running_workers_are_listed_with_their_current_check,);

async fn running_workers_are_listed_with_their_current_check(db: TestDb) {
    let app = TestApp::spawn_with(db, crate::support::two_platforms).await;
    app.start_workers().await;
    let ada = app.user("ada@example.org").await;
    async fn list(app: &TestApp) -> serde_json::Value {
        app.get(Some(&app.operator), "/api/v1/workers").await.body
    }
    // Both platforms' workers register at start.
    let workers = match wait_until(
        async || {
            let w = list(&app).await;
            w.as_array().is_some_and(|a| a.len() == 2).then_some(w)
        },
        Duration::from_secs(10),
    )
    .await
    {
        Some(w) => w,
        None => list(&app).await,
    };
    let platforms: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux-a", "linux-b"], "{workers:#}");
    let pid = i64::from(std::process::id());
    assert!(
        workers
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["pid"] == pid && w["current_check"].is_null())
    );

    // A running build shows as its worker's current check.
    let id = app
        .upload_ok(
            &ada,
            package_building(
                "slow",
                "1.0.0",
                &[],
                "test \"$HOLDQ_PLATFORM\" = linux-b || sleep 2",
                None,
            ),
        )
        .await;
    let busy = wait_until(
        async || {
            list(&app)
                .await
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["platform"] == "linux-a" && !w["current_check"].is_null())
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(
        busy.is_some(),
        "never saw the running check: {:#}",
        list(&app).await
    );
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
}
