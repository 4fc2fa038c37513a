//! Scale-out latencies on PostgreSQL, with a real `holdq serve` process and
//! a real `holdq worker` process that shares no disk with it (its own data
//! directory, archives over HTTP, woken by LISTEN/NOTIFY):
//!
//! - pickup latency: from a check being queued (the operator resumes its
//!   paused platform, which enqueues it) to the build process running on
//!   the worker (the build prints the time it started);
//! - kill latency: from sending a superseding upload to the old build's
//!   process on the worker being gone.
//!
//! Each is measured `TRIALS` times for the remote worker and, as the
//! baseline in the same run, for a worker inside the server process; p50
//! and p99 are printed with the ratio remote/local. Goals: both remote p99
//! under 1 s.
//!
//! Run: `HOLDQ_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
//! cargo bench --bench remote` (without a PostgreSQL URL it says so and
//! measures nothing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use holdq::service::users::Role;
use support::{ms, package, percentile, wait_process};

mod support;

const TRIALS: usize = 60;
const REMOTE: &str = "remote-a";
const LOCAL: &str = "local-a";

fn main() -> anyhow::Result<()> {
    let Some(server_url) = std::env::var("HOLDQ_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("HOLDQ_TEST_POSTGRES_URL"))
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!(
            "remote: set HOLDQ_TEST_POSTGRES_URL to a PostgreSQL server to measure; nothing measured"
        );
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&server_url))
}

/// Kills the child process when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(server_url: &str) -> anyhow::Result<()> {
    let database_url = fresh_database(server_url).await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    let worker_dir = dir.path().join("worker");
    std::fs::create_dir_all(&worker_dir)?;
    let db = holdq::db::Db::connect(&database_url).await?;
    let (_, operator) =
        holdq::service::users::add_user(&db, "bench@example.org", Role::Operator).await?;
    let (_, farm) = holdq::service::users::add_user(&db, "farm@example.org", Role::Worker).await?;

    let config = dir.path().join("holdq.toml");
    std::fs::write(
        &config,
        format!(
            "[[platform]]\nname = \"{REMOTE}\"\nlocal_workers = 0\n\n\
             [[platform]]\nname = \"{LOCAL}\"\nlocal_workers = 1\n"
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let exe = env!("CARGO_BIN_EXE_holdq");
    let _server = Process(
        Command::new(exe)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["--database-url", &database_url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _worker = Process(
        Command::new(exe)
            .args([
                "worker",
                "--platform",
                REMOTE,
                "--server",
                &base,
                "--token",
                &farm,
            ])
            .arg("--data-dir")
            .arg(&worker_dir)
            .args(["--database-url", &database_url])
            .current_dir(&worker_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let api = Api {
        client,
        base,
        token: operator,
    };

    let mut report = Vec::new();
    for platform in [LOCAL, REMOTE] {
        let pickups = pickup_latencies(&api, &db, platform).await?;
        let kills = kill_latencies(&api, &db, platform).await?;
        report.push((platform, pickups, kills));
    }
    let (_, local_pick, local_kill) = &report[0];
    let (_, remote_pick, remote_kill) = &report[1];
    for (what, local, remote) in [
        ("pickup", local_pick, remote_pick),
        ("kill", local_kill, remote_kill),
    ] {
        let (l50, l99) = (percentile(local, 0.50), percentile(local, 0.99));
        let (r50, r99) = (percentile(remote, 0.50), percentile(remote, 0.99));
        println!(
            "remote: {what} latency remote worker p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {TRIALS} trials (goal p99 < 1000 ms)",
            ms(r50),
            ms(r99),
            ms(*remote.last().unwrap())
        );
        println!(
            "remote: {what} latency in-process worker p50 {:.1} ms, p99 {:.1} ms (baseline)",
            ms(l50),
            ms(l99)
        );
        println!(
            "remote: {what} ratio remote/in-process p50 {:.2}, p99 {:.2}",
            ms(r50) / ms(l50),
            ms(r99) / ms(l99)
        );
    }
    db.close().await;
    Ok(())
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<serde_json::Value> {
        let mut req = self
            .client
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.header("content-type", "application/gzip").body(body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {body}");
        Ok(body)
    }

    async fn upload(&self, archive: Vec<u8>) -> anyhow::Result<i64> {
        Ok(self.post("/uploads", Some(archive)).await?["id"]
            .as_i64()
            .unwrap_or_default())
    }
}

/// Queued to started: the platform is paused while the upload leaves the
/// queue, so its build check waits unqueued; resuming enqueues it, and the
/// build prints the wall-clock time it started.
async fn pickup_latencies(
    api: &Api,
    db: &holdq::db::Db,
    platform: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(TRIALS);
    for trial in 0..TRIALS {
        api.post(&format!("/platforms/{platform}/pause"), None)
            .await?;
        let id = api
            .upload(package(
                &format!("pick-{platform}"),
                &format!("1.0.{trial}"),
                "date +%s%N",
                Some(platform),
            ))
            .await?;
        // Wait until its build check exists, pending.
        wait_for("the build check", || async {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM checks WHERE upload_id = $1 AND kind = 'build' AND state = 'pending'",
            )
            .bind(id)
            .fetch_one(db.pool())
            .await?;
            Ok(n == 1)
        })
        .await?;
        let queued = SystemTime::now();
        api.post(&format!("/platforms/{platform}/resume"), None)
            .await?;
        wait_for("the verdict", || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM verdicts WHERE upload_id = $1")
                .bind(id)
                .fetch_one(db.pool())
                .await?;
            Ok(n == 1)
        })
        .await?;
        let (log,): (Option<String>,) =
            sqlx::query_as("SELECT log FROM checks WHERE upload_id = $1 AND kind = 'build'")
                .bind(id)
                .fetch_one(db.pool())
                .await?;
        let started_ns: u128 = log
            .unwrap_or_default()
            .trim()
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("trial {trial}: the build printed no time"))?;
        let queued_ns = queued.duration_since(SystemTime::UNIX_EPOCH)?.as_nanos();
        out.push(Duration::from_nanos(
            started_ns.saturating_sub(queued_ns) as u64
        ));
    }
    out.sort();
    Ok(out)
}

/// Supersession to death: a build sleeping on the platform's worker, a
/// newer upload of the package, the old process gone.
async fn kill_latencies(
    api: &Api,
    db: &holdq::db::Db,
    platform: &str,
) -> anyhow::Result<Vec<Duration>> {
    let name = format!("victim-{platform}");
    let mut out = Vec::with_capacity(TRIALS);
    for trial in 0..TRIALS {
        let marker = format!(
            "sleep {}",
            500_000 + trial + 1000 * usize::from(platform == REMOTE)
        );
        api.upload(package(
            &name,
            &format!("1.0.{}", 2 * trial),
            &marker,
            Some(platform),
        ))
        .await?;
        anyhow::ensure!(
            wait_process(&marker, true).await,
            "trial {trial}: the build never started"
        );
        let start = Instant::now();
        let newer = api
            .upload(package(
                &name,
                &format!("1.0.{}", 2 * trial + 1),
                "true",
                Some(platform),
            ))
            .await?;
        anyhow::ensure!(
            wait_process(&marker, false).await,
            "trial {trial}: the old build survived"
        );
        out.push(start.elapsed());
        // The next trial starts with an idle worker.
        wait_for("the newer upload's verdict", || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM verdicts WHERE upload_id = $1")
                .bind(newer)
                .fetch_one(db.pool())
                .await?;
            Ok(n == 1)
        })
        .await?;
    }
    out.sort();
    Ok(out)
}

async fn wait_for<F, Fut>(what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await? {
        anyhow::ensure!(Instant::now() < deadline, "{what} never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn fresh_database(server: &str) -> anyhow::Result<String> {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let name = format!("holdq_bench_{:08x}", rand::random::<u32>());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("a database URL ends in /DBNAME"))?;
    Ok(format!("{base}/{name}"))
}
