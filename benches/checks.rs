//! The holding queue under load, with the real server, real apalis workers
//! and real sandboxed processes (SQLite, one platform, one local worker):
//!
//! - kill latency: from sending a superseding upload to the old build's
//!   process being gone, p50 and p99 over `KILL_TRIALS` trials (goal: p99
//!   under 1 s);
//! - queue throughput: uploads per second from upload to verdict with
//!   no-op builds, as a ratio against spawning the same no-op sandboxed
//!   process one after another in the same run (goal: at least 0.5).
//!
//! Run: `cargo bench --bench checks`.

use std::time::Instant;

use holdq::config::Config;
use holdq::sandbox::{RunSpec, Sandbox};
use holdq::service::{App, scheduler};
use support::{ms, package, percentile, upload, wait_idle, wait_process};
use tokio_util::sync::CancellationToken;

mod support;

const KILL_TRIALS: usize = 60;
const THROUGHPUT_UPLOADS: usize = 100;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_data_dir(&dir.path().join("data"));
    config.database_url = format!("sqlite://{}/holdq.db", dir.path().display());
    config.platforms[0].local_workers = 1;
    let sandbox = Sandbox::new(env!("CARGO_BIN_EXE_holdq").into());
    let app = App::open_with(config, sandbox.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(holdq::http::serve(listener, app.clone()));
    let shutdown = CancellationToken::new();
    scheduler::spawn_scheduler(&app, shutdown.clone());
    scheduler::spawn_workers(&app, &app.config.platforms[0].clone(), 1, shutdown.clone());
    let (_, token) = holdq::service::users::add_user(
        &app.db,
        "bench@example.org",
        holdq::service::users::Role::Operator,
    )
    .await?;
    let client = reqwest::Client::new();

    // Kill latency.
    let mut kills = Vec::with_capacity(KILL_TRIALS);
    for trial in 0..KILL_TRIALS {
        let marker = format!("sleep {}", 600_000 + trial);
        upload(
            &client,
            &base,
            &token,
            &package("victim", &format!("1.0.{}", 2 * trial), &marker, None),
        )
        .await?;
        anyhow::ensure!(
            wait_process(&marker, true).await,
            "trial {trial}: the build never started"
        );
        let start = Instant::now();
        upload(
            &client,
            &base,
            &token,
            &package("victim", &format!("1.0.{}", 2 * trial + 1), "true", None),
        )
        .await?;
        anyhow::ensure!(
            wait_process(&marker, false).await,
            "trial {trial}: the old build survived"
        );
        kills.push(start.elapsed());
    }
    kills.sort();
    println!(
        "checks: kill latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {KILL_TRIALS} trials (goal p99 < 1000 ms)",
        ms(percentile(&kills, 0.50)),
        ms(percentile(&kills, 0.99)),
        ms(*kills.last().unwrap())
    );
    wait_idle(&app).await?;

    // Raw cost: the same no-op build, sandboxed, one after another.
    let work = dir.path().join("raw");
    std::fs::create_dir_all(&work)?;
    let platform = &app.config.platforms[0];
    std::fs::create_dir_all(work.join("tmp"))?;
    let spec = RunSpec {
        root: work.clone(),
        tmp: work.join("tmp"),
        cwd: work.clone(),
        command: "true".into(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        timeout: platform.timeout,
        memory_bytes: platform.memory.0,
        max_processes: app.config.limits.check_processes,
        disk_bytes: platform.disk.0,
        mounts: Vec::new(),
        output_cap: 1 << 20,
        state_dir: dir.path().join("sandbox"),
    };
    let never = CancellationToken::new();
    let start = Instant::now();
    for _ in 0..THROUGHPUT_UPLOADS {
        let outcome = sandbox.run(&spec, &never).await?;
        anyhow::ensure!(
            outcome.succeeded(),
            "the raw no-op failed: {}",
            outcome.output
        );
    }
    let raw = THROUGHPUT_UPLOADS as f64 / start.elapsed().as_secs_f64();

    // Queue throughput: distinct packages, no-op builds, upload to verdict.
    let archives: Vec<Vec<u8>> = (0..THROUGHPUT_UPLOADS)
        .map(|i| package(&format!("noop{i}"), "1.0.0", "true", None))
        .collect();
    let start = Instant::now();
    let mut ids = Vec::new();
    for archive in &archives {
        ids.push(upload(&client, &base, &token, archive).await?);
    }
    wait_idle(&app).await?;
    let queue = THROUGHPUT_UPLOADS as f64 / start.elapsed().as_secs_f64();
    let accepted = count_accepted(&app, &ids).await?;
    anyhow::ensure!(
        accepted == ids.len(),
        "only {accepted} of {} accepted",
        ids.len()
    );
    println!("checks: raw sandboxed no-op spawns {raw:.1}/s");
    println!(
        "checks: queue throughput {queue:.1} uploads/s to verdict ({THROUGHPUT_UPLOADS} uploads)"
    );
    println!("checks: ratio queue/raw {:.2} (goal >= 0.50)", queue / raw);
    shutdown.cancel();
    Ok(())
}

async fn count_accepted(app: &App, ids: &[i64]) -> anyhow::Result<usize> {
    let mut n = 0;
    for id in ids {
        let (state,): (String,) = sqlx::query_as("SELECT state FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_one(app.db.pool())
            .await?;
        n += usize::from(state == "accepted");
    }
    Ok(n)
}
