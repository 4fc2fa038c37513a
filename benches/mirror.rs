//! Mirror latency (SPEC section 10, "Mirrors"): from a promotion on the
//! primary (committed and its document published) to a follower serving
//! the new version in `GET /api/v1/index/{name}`, over `PROMOTIONS`
//! promotions, for two real `holdq serve --mirror-of` processes following
//! the same in-process primary at once:
//!
//! - push: the follower is a `[[mirror.peer]]` of the primary and its own
//!   poll is 10 minutes, so only the push wakes it;
//! - long-poll (the baseline): no push; the follower holds a 30 s
//!   long-poll of the changes feed open.
//!
//! p50 and p99 of each are printed, with the ratio push/long-poll.
//!
//! Run: `cargo bench --bench mirror`.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdq::config::{Config, MirrorPeer};
use holdq::service::App;
use semver::Version;
use sha2::Digest;
use support::index_data::promote;
use support::{ms, percentile};

const PROMOTIONS: usize = 30;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

/// A follower process, killed when dropped.
struct Follower {
    child: Child,
    base: String,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `holdq serve --mirror-of primary` on `port` in `dir`.
async fn follower(dir: &Path, primary: &str, port: u16, poll: &str) -> anyhow::Result<Follower> {
    let config = dir.join("follower.toml");
    std::fs::write(
        &config,
        format!(
            "[mirror]\npoll = \"{poll}\"\n[storage]\nreserve = \"16MiB\"\n[[platform]]\nname = \"test\"\nlocal_workers = 0\n"
        ),
    )?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let child = Command::new(env!("CARGO_BIN_EXE_holdq"))
        .args(["serve", "--mirror-of", primary])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--database-url",
            &format!("sqlite://{}/holdq.db", data.display()),
        ])
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let follower = Follower {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{}/healthz", follower.base))
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "the follower did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(follower)
}

/// Whether the follower at `base` serves `version` of `name`.
async fn serves(http: &reqwest::Client, base: &str, name: &str, version: &str) -> bool {
    let Ok(resp) = http.get(format!("{base}/api/v1/index/{name}")).send().await else {
        return false;
    };
    let Ok(doc) = resp.json::<serde_json::Value>().await else {
        return false;
    };
    doc["versions"]
        .as_array()
        .is_some_and(|vs| vs.iter().any(|v| v["version"] == version))
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let push_port = free_port()?;
    let mut config = Config::for_data_dir(&dir.path().join("primary"));
    config.database_url = format!("sqlite://{}/primary.db", dir.path().display());
    config.storage.reserve = holdq::config::ByteSize(16 << 20);
    config.mirror.peer = vec![MirrorPeer {
        url: format!("http://127.0.0.1:{push_port}"),
    }];
    let app = App::open_with(
        config,
        holdq::sandbox::Sandbox::new(env!("CARGO_BIN_EXE_holdq").into()),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let primary = format!("http://{}", listener.local_addr()?);
    tokio::spawn(holdq::http::serve(listener, app.clone()));

    let names: Vec<String> = (0..PROMOTIONS).map(|i| format!("mirrored{i}")).collect();
    seed_packages(&app, &names).await?;
    let blob = dir.path().join("blob.tar.gz");
    std::fs::write(&blob, support::package("mirrored", "1.0.0", "true", None))?;
    let sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(&blob)?));
    let first = Version::new(1, 0, 0);
    promote(
        &app,
        &names[0],
        &first,
        &Default::default(),
        (&blob, &sha256),
    )
    .await?;

    let (push_dir, poll_dir) = (dir.path().join("push"), dir.path().join("poll"));
    std::fs::create_dir_all(&push_dir)?;
    std::fs::create_dir_all(&poll_dir)?;
    let pushed = follower(&push_dir, &primary, push_port, "10m").await?;
    let polling = follower(&poll_dir, &primary, free_port()?, "30s").await?;
    let http = reqwest::Client::new();
    for f in [&pushed, &polling] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !serves(&http, &f.base, &names[0], "1.0.0").await {
            anyhow::ensure!(Instant::now() < deadline, "{} never caught up", f.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (mut push, mut poll) = (Vec::new(), Vec::new());
    for name in &names {
        let version = Version::new(2, 0, 0);
        promote(&app, name, &version, &Default::default(), (&blob, &sha256)).await?;
        let t = Instant::now();
        let (mut push_at, mut poll_at) = (None, None);
        while push_at.is_none() || poll_at.is_none() {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(120),
                "{name} 2.0.0 not served within 2 minutes (push {push_at:?}, long-poll {poll_at:?})"
            );
            if push_at.is_none() && serves(&http, &pushed.base, name, "2.0.0").await {
                push_at = Some(t.elapsed());
            }
            if poll_at.is_none() && serves(&http, &polling.base, name, "2.0.0").await {
                poll_at = Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        push.extend(push_at);
        poll.extend(poll_at);
    }
    push.sort();
    poll.sort();
    let (push50, push99) = (percentile(&push, 0.5), percentile(&push, 0.99));
    let (poll50, poll99) = (percentile(&poll, 0.5), percentile(&poll, 0.99));
    println!(
        "mirror: promotion to follower serving it, over {PROMOTIONS} promotions: push (poll 10m) p50 {:.1} ms, p99 {:.1} ms; long-poll (30s, no push) p50 {:.1} ms, p99 {:.1} ms; push/long-poll {:.2}x at p50, {:.2}x at p99",
        ms(push50),
        ms(push99),
        ms(poll50),
        ms(poll99),
        push50.as_secs_f64() / poll50.as_secs_f64(),
        push99.as_secs_f64() / poll99.as_secs_f64(),
    );
    Ok(())
}

/// The packages promoted into, as rows without versions yet.
async fn seed_packages(app: &App, names: &[String]) -> anyhow::Result<()> {
    let mut tx = app.db.begin_write().await?;
    for name in names {
        sqlx::query("INSERT INTO packages (name, created_at) VALUES ($1, 0)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
