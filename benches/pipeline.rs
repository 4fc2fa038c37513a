//! Speculative checks against the queue ahead (SPEC section 3, rule 7),
//! with the real server, real apalis workers and real sandboxed builds
//! (SQLite, one platform, 10 local workers): 2 chains of 5 dependent
//! uploads (each needs the version the one before it brings), builds that
//! sleep 1 s. Wall time from the first upload to all 10 verdicts with
//! speculation, against the same uploads with speculation off (each waits
//! for the related uploads ahead to be decided), in the same run; the
//! ratio (goal <= 0.35), the rebases, and every verdict checked (all 10
//! accepted in both modes).
//!
//! Run: `cargo bench --bench pipeline`.

use std::time::{Duration, Instant};

use holdq::config::Config;
use holdq::sandbox::Sandbox;
use holdq::service::{App, scheduler};
use support::{upload, wait_idle};
use tokio_util::sync::CancellationToken;

mod support;

const CHAINS: usize = 2;
const LENGTH: usize = 5;
const WORKERS: u32 = 10;
const TRIALS: usize = 3;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for t in 0..TRIALS {
        let (time_on, rebases_on) = trial(true).await?;
        let (time_off, rebases_off) = trial(false).await?;
        println!(
            "pipeline: trial {}: speculation on {:.2} s ({rebases_on} rebases), off {:.2} s ({rebases_off} rebases), ratio {:.2}",
            t + 1,
            time_on.as_secs_f64(),
            time_off.as_secs_f64(),
            time_on.as_secs_f64() / time_off.as_secs_f64()
        );
        on.push((time_on, rebases_on));
        off.push((time_off, rebases_off));
    }
    on.sort();
    off.sort();
    let (median_on, rebases) = on[TRIALS / 2];
    let (median_off, _) = off[TRIALS / 2];
    let total_rebases: i64 = on.iter().map(|(_, r)| r).sum();
    println!(
        "pipeline: {CHAINS} chains of {LENGTH} uploads, builds sleep 1 s, {WORKERS} workers, median of {TRIALS}"
    );
    println!(
        "pipeline: speculation on {:.2} s, off {:.2} s",
        median_on.as_secs_f64(),
        median_off.as_secs_f64()
    );
    println!(
        "pipeline: ratio on/off {:.2} (goal <= 0.35)",
        median_on.as_secs_f64() / median_off.as_secs_f64()
    );
    println!(
        "pipeline: rebases {rebases} in the median run, {total_rebases} over {TRIALS} runs with speculation"
    );
    println!(
        "pipeline: wrong verdicts 0 (all {} accepted in both modes, every run)",
        CHAINS * LENGTH
    );
    Ok(())
}

fn name(chain: usize, i: usize) -> String {
    format!("chain{chain}-p{i}")
}

/// A package `name` `version`, requiring `dependency` when given.
fn package(name: &str, version: &str, dependency: Option<(&str, &str)>, build: &str) -> Vec<u8> {
    let mut manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\nmaintainers = [\"Bench <bench@example.org>\"]\n\
         description = \"bench\"\nlicense = \"MIT\"\n\n"
    );
    if let Some((dep, req)) = dependency {
        manifest.push_str(&format!("[dependencies]\n\"{dep}\" = \"{req}\"\n\n"));
    }
    manifest.push_str(&format!("[build]\ncommand = \"{build}\"\n"));
    support::archive_of(name, version, &manifest)
}

/// One run on a fresh server: the wall time to all verdicts and the rebases.
async fn trial(speculate: bool) -> anyhow::Result<(Duration, i64)> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_data_dir(&dir.path().join("data"));
    config.database_url = format!("sqlite://{}/holdq.db", dir.path().display());
    config.platforms[0].local_workers = WORKERS;
    config.queue.speculate = speculate;
    let sandbox = Sandbox::new(env!("CARGO_BIN_EXE_holdq").into());
    let app = App::open_with(config, sandbox).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(holdq::http::serve(listener, app.clone()));
    scheduler::spawn_scheduler(&app, shutdown.clone());
    scheduler::spawn_workers(
        &app,
        &app.config.platforms[0].clone(),
        WORKERS,
        shutdown.clone(),
    );
    let (_, token) = holdq::service::users::add_user(
        &app.db,
        "bench@example.org",
        holdq::service::users::Role::Operator,
    )
    .await?;
    let client = reqwest::Client::new();

    // Stable: every package at 1.0.0, each requiring the one before it.
    let mut setup = Vec::new();
    for i in 0..LENGTH {
        for chain in 0..CHAINS {
            let dep = (i > 0).then(|| name(chain, i - 1));
            let archive = package(
                &name(chain, i),
                "1.0.0",
                dep.as_deref().map(|d| (d, "^1.0")),
                "true",
            );
            setup.push(upload(&client, &base, &token, &archive).await?);
        }
        // The next one needs this one in stable.
        wait_idle(&app).await?;
    }
    expect_accepted(&app, &setup, "setup").await?;

    // The chains: each 1.1.0 needs the 1.1.0 of the one before it, which
    // only the upload ahead of it brings.
    let archives: Vec<Vec<u8>> = (0..LENGTH)
        .flat_map(|i| (0..CHAINS).map(move |chain| (chain, i)))
        .map(|(chain, i)| {
            let dep = (i > 0).then(|| name(chain, i - 1));
            package(
                &name(chain, i),
                "1.1.0",
                dep.as_deref().map(|d| (d, "^1.1")),
                "sleep 1",
            )
        })
        .collect();
    let start = Instant::now();
    let mut ids = Vec::new();
    for archive in &archives {
        ids.push(upload(&client, &base, &token, archive).await?);
    }
    wait_idle(&app).await?;
    let elapsed = start.elapsed();
    expect_accepted(
        &app,
        &ids,
        if speculate {
            "speculation on"
        } else {
            "speculation off"
        },
    )
    .await?;
    let (rebases,): (Option<i64>,) = sqlx::query_as("SELECT SUM(rebases) FROM uploads")
        .fetch_one(app.db.pool())
        .await?;
    shutdown.cancel();
    server.abort();
    Ok((elapsed, rebases.unwrap_or(0)))
}

/// Fails loudly unless every upload of `ids` was accepted.
async fn expect_accepted(app: &App, ids: &[i64], what: &str) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for id in ids {
        let (name, version, state, reason): (String, String, String, Option<String>) =
            sqlx::query_as(
                "SELECT p.name, u.version, u.state, u.state_reason FROM uploads u \
                 JOIN packages p ON p.id = u.package_id WHERE u.id = $1",
            )
            .bind(id)
            .fetch_one(app.db.pool())
            .await?;
        if state != "accepted" {
            wrong.push(format!("{name} {version}: {state} ({reason:?})"));
        }
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "pipeline ({what}): wrong verdicts: {}",
        wrong.join("; ")
    );
    Ok(())
}
