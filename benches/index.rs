//! The stable index at scale (SPEC sections 10 and 11).
//!
//! Promotion, the base validation under the promotion lock and the index
//! write included (what `service::verdict::promote` does, without the
//! emails), p50 and p99 over repeated promotions into stable repositories
//! of 10 k versions (the baseline, measured in the same run), the
//! crates.io 2019 graph doubled (~254 k), and 1.7 M synthetic versions.
//! Goals: p99 under 50 ms at 1.7 M; p50 at 1.7 M within 1.5x of p50 at 10 k.
//!
//! Then the most depended-upon package of the crates.io graph obsoleted
//! through `service::obsolete` (pins, emails queued, index documents of
//! every dependent written), on SQLite and, with
//! `HOLDQ_TEST_POSTGRES_URL`, on PostgreSQL, then undone, a few times
//! (`HOLDQ_BENCH_OBSOLESCENCES`, default 5): the median, the fastest and
//! the slowest. Goal: under 2 s.
//!
//! Run: `cargo bench --bench index` (`HOLDQ_BENCH_INDEX=path` for another
//! index; `HOLDQ_BENCH_PROMOTIONS=N`, default 200, 0 for the obsolescence
//! alone; `HOLDQ_LOG=info` for the server's log).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use holdq::domain::PackageName;
use holdq::service::{App, stable};
use support::index_data::{
    Row, deps_of, doubled, index_path, promote, read_crates, seed, synthetic,
};
use support::{ms, percentile};

fn main() -> anyhow::Result<()> {
    // HOLDQ_LOG=info shows the server's log, with the phases of the
    // obsolescence.
    if std::env::var_os("HOLDQ_LOG").is_some() {
        holdq::cli::logging::init(Default::default());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let path = index_path();
    let (crates, skipped) = read_crates(&path)?;
    println!(
        "index: {}: {} versions ({skipped} skipped)",
        path.display(),
        crates.len()
    );
    let trials: usize = std::env::var("HOLDQ_BENCH_PROMOTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let sizes: Vec<(&str, Vec<Row>)> = vec![
        ("synthetic 10k", synthetic(1_000, 10_000)),
        ("crates.io x2", doubled(&crates)),
        ("synthetic 1.7M", synthetic(180_000, 1_700_000)),
    ];
    let mut baseline: Option<(Duration, Duration)> = None;
    // HOLDQ_BENCH_PROMOTIONS=0 measures only the obsolescence.
    for (label, rows) in sizes.into_iter().filter(|_| trials > 0) {
        let (p50, p99) = rt.block_on(promotions(label, &rows, trials))?;
        let (b50, b99) = *baseline.get_or_insert((p50, p99));
        println!(
            "index: promotion into {label} ({} versions): p50 {:.1} ms ({:.2}x the 10k p50), p99 {:.1} ms ({:.2}x the 10k p99)",
            rows.len(),
            ms(p50),
            p50.as_secs_f64() / b50.as_secs_f64(),
            ms(p99),
            p99.as_secs_f64() / b99.as_secs_f64(),
        );
    }
    // Each run's data directory is deleted at the end only: deleting tens of
    // thousands of files slows the filesystem's next writes for a while.
    let _sqlite = rt.block_on(obsolete_top(&crates, None))?;
    if let Some(server) = std::env::var("HOLDQ_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let _postgres = rt.block_on(obsolete_top(&crates, Some(&server)))?;
    } else {
        println!("index: HOLDQ_TEST_POSTGRES_URL unset; the PostgreSQL obsolescence is skipped");
    }
    Ok(())
}

/// A server on a fresh data directory and database (SQLite in `dir`, or a
/// new database on the PostgreSQL `server`).
async fn open(dir: &Path, server: Option<&str>) -> anyhow::Result<App> {
    let mut config = holdq::config::Config::for_data_dir(&dir.join("data"));
    config.database_url = match server {
        None => format!("sqlite://{}/holdq.db", dir.display()),
        Some(server) => {
            use sqlx::{Connection, Executor};
            sqlx::any::install_default_drivers();
            let name = format!(
                "holdq_bench_{}_{}",
                std::process::id(),
                dir.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            );
            let mut conn = sqlx::AnyConnection::connect(server).await?;
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await?;
            let (base, _) = server
                .rsplit_once('/')
                .expect("a database URL ends in /DBNAME");
            format!("{base}/{name}")
        }
    };
    App::open_with(
        config,
        holdq::sandbox::Sandbox::new(env!("CARGO_BIN_EXE_holdq").into()),
    )
    .await
}

/// Drops the database `open` made on the PostgreSQL `server` for `app`.
async fn drop_database(app: App, server: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let name = app
        .config
        .database_url
        .rsplit_once('/')
        .map(|(_, name)| name.to_owned())
        .expect("a database URL ends in /DBNAME");
    app.db.close().await;
    drop(app);
    let mut conn = sqlx::AnyConnection::connect(server).await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await?;
    Ok(())
}

/// Which packages get stand-in archives.
type Archives<'a> = dyn Fn(&str) -> bool + 'a;

/// Seeds `rows` and loads the model, as a server at start-up; says how long.
async fn seeded(
    label: &str,
    dir: &Path,
    rows: &[Row],
    (server, archives): (Option<&str>, &Archives<'_>),
) -> anyhow::Result<(App, HashMap<String, i64>)> {
    let app = open(dir, server).await?;
    let t = Instant::now();
    let ids = seed(&app, rows, archives).await?;
    let seeding = t.elapsed();
    let t = Instant::now();
    stable::with_repo(&app, |_| ()).await?;
    println!(
        "index: {label}: {} versions of {} packages written to the database in {:.1} s, model loaded in {:.1} s",
        rows.len(),
        ids.len(),
        seeding.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    Ok((app, ids))
}

/// `trials` promotions of a new patch version of packages picked across
/// the repository, each with its latest version's requirements.
async fn promotions(
    label: &str,
    rows: &[Row],
    trials: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    // The packages promoted into, spread evenly across the names; only
    // their archives are made (a document names every version's).
    let mut names: Vec<&str> = rows
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| PackageName::parse(n).is_ok())
        .collect();
    names.sort_unstable();
    names.dedup();
    let every = (names.len() / trials).max(1);
    let picked: HashSet<&str> = names.into_iter().step_by(every).take(trials).collect();
    let only_picked = |n: &str| picked.contains(n);
    let (app, _) = seeded(label, dir.path(), rows, (None, &only_picked)).await?;
    // The documents of the seeded packages are not filled in (only those
    // a promotion touches are written).
    let blob = dir.path().join("blob.tar.gz");
    std::fs::write(&blob, vec![7u8; 4096])?;
    let mut latest: BTreeMap<&str, &Row> = BTreeMap::new();
    for row in rows.iter().filter(|r| picked.contains(r.name.as_str())) {
        let newer = latest
            .get(row.name.as_str())
            .is_none_or(|l| l.version < row.version);
        if newer {
            latest.insert(&row.name, row);
        }
    }
    let packages: Vec<&Row> = latest.into_values().collect();
    let mut samples = Vec::with_capacity(trials);
    for (i, row) in packages.iter().enumerate() {
        let mut version = row.version.clone();
        version.patch += 1000 + i as u64;
        version.pre = semver::Prerelease::EMPTY;
        let t = Instant::now();
        promote(&app, &row.name, &version, &deps_of(row), (&blob, "")).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// The most depended-upon package of `rows` obsoleted through the service;
/// returns the data directory, to be deleted later.
async fn obsolete_top(rows: &[Row], server: Option<&str>) -> anyhow::Result<tempfile::TempDir> {
    let backend = if server.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let dir = tempfile::tempdir()?;
    let label = format!("crates.io on {backend}");
    let (app, _) = seeded(&label, dir.path(), rows, (server, &|_| true)).await?;
    let t = Instant::now();
    let written = holdq::service::index::write_unwritten(&app).await?;
    println!(
        "index: {backend}: the whole index ({written} documents) written into the database (first start) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (operator, _) = holdq::service::users::add_user(
        &app.db,
        "bench@example.org",
        holdq::service::users::Role::Operator,
    )
    .await?;
    let user = holdq::service::users::User {
        id: operator.id,
        email: operator.email.clone(),
        is_operator: true,
        is_worker: false,
    };
    let top = stable::with_repo(&app, |repo| {
        repo.package_names()
            .max_by_key(|n| repo.dependents_count(n))
            .expect("a package")
            .clone()
    })
    .await?;
    let trials: usize = std::env::var("HOLDQ_BENCH_OBSOLESCENCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut times = Vec::new();
    for trial in 1..=trials {
        // What the last trial left running (its emails being enqueued) is
        // waited for, and the writes before flushed: the obsolescence pays
        // for its own work only.
        settle(&app).await?;
        nix::unistd::sync();
        let t = Instant::now();
        let outcome =
            holdq::service::obsolete::obsolete(&app, &user, top.as_str(), "benchmark", None, false)
                .await?;
        let obsoleted = t.elapsed();
        println!(
            "index: {backend}: obsolete {top} ({trial}/{trials}): {} pins, {} emails queued, {} index documents written, in {:.2} s",
            outcome.pins.len(),
            outcome.emails,
            outcome.pins.len() + 1,
            obsoleted.as_secs_f64(),
        );
        times.push(obsoleted);
        settle(&app).await?;
        holdq::service::obsolete::undo(&app, &user, top.as_str()).await?;
    }
    times.sort();
    println!(
        "index: {backend}: obsolete {top}: median {:.2} s of {trials} (goal < 2 s), fastest {:.2} s, slowest {:.2} s",
        percentile(&times, 0.5).as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
    );
    if let Some(server) = server {
        drop_database(app, server).await?;
    }
    Ok(dir)
}

/// Waits until the background work of the trials before is done: every
/// email in the outbox has its job.
async fn settle(app: &App) -> anyhow::Result<()> {
    let jobs = match app.db.backend() {
        holdq::db::Backend::Sqlite => "SELECT COUNT(*) FROM Jobs",
        holdq::db::Backend::Postgres => "SELECT COUNT(*) FROM apalis.jobs",
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (queued,): (i64,) = sqlx::query_as(jobs).fetch_one(app.db.pool()).await?;
        let (emails,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
            .fetch_one(app.db.pool())
            .await?;
        if queued >= emails {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the background work of the trial before did not finish: {queued} jobs for {emails} emails"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
