//! `holdq worker` as its own process: a platform whose checks only a
//! separate worker process runs (no local worker in the server).

use std::time::Duration;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::process::{ServerProcess, WorkerProcess};
use crate::support::{TestApp, TestDb};

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

    // With no worker for the platform, the upload waits, checking.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
