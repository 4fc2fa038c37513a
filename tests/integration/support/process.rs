//! The real `holdq serve` as a separate process, for tests that kill it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ServerProcess {
    child: Child,
    pub base: String,
}

impl ServerProcess {
    /// Starts `holdq serve` on a free port with `data_dir` and `database_url`,
    /// and waits until it answers.
    pub async fn start(data_dir: &Path, database_url: &str, failpoint: Option<&str>) -> Self {
        Self::start_with_config(data_dir, database_url, failpoint, None).await
    }

    /// [`ServerProcess::start`] with a config file.
    pub async fn start_with_config(
        data_dir: &Path,
        database_url: &str,
        failpoint: Option<&str>,
        config: Option<&Path>,
    ) -> Self {
        let port = free_port();
        Self::start_on_port(port, data_dir, database_url, failpoint, config).await
    }

    /// [`ServerProcess::start_with_config`] on `port` (a restart at the
    /// same address).
    pub async fn start_on_port(
        port: u16,
        data_dir: &Path,
        database_url: &str,
        failpoint: Option<&str>,
        config: Option<&Path>,
    ) -> Self {
        Self::launch(port, data_dir, database_url, failpoint, config, |cmd| {
            cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
        })
        .await
    }

    /// `holdq serve` with `config` on a free port, with `args` and `env`,
    /// its log (stderr) written to `log`.
    pub async fn start_logged(
        data_dir: &Path,
        database_url: &str,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let port = free_port();
        let file = std::fs::File::create(log).expect("a log file");
        Self::launch(port, data_dir, database_url, None, Some(config), |cmd| {
            cmd.args(args)
                .env_remove("RUST_LOG")
                .env_remove("HOLDQ_LOG")
                .envs(env.iter().copied())
                .stderr(file);
        })
        .await
    }

    async fn launch(
        port: u16,
        data_dir: &Path,
        database_url: &str,
        failpoint: Option<&str>,
        config: Option<&Path>,
        output: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdq"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--database-url", database_url])
            .env_remove("HOLDQ_FAILPOINT")
            .stdout(Stdio::null());
        output(&mut cmd);
        if let Some(f) = failpoint {
            cmd.env("HOLDQ_FAILPOINT", f);
        }
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd.spawn().expect("holdq serve starts");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let health = format!("{}/healthz", server.base);
        super::wait_until(
            async || reqwest::get(&health).await.is_ok(),
            Duration::from_secs(30),
        )
        .await
        .expect("the server did not come up");
        server
    }

    /// Waits (bounded) for the process to end by itself; true when it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        super::wait_until(async || self.child.try_wait().unwrap().is_some(), limit)
            .await
            .is_some()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The stable index the database at `database_url` serves (every
/// package's document, each of which must be whole JSON, and the stable
/// serial) and whether every version it names has its archive under
/// `data_dir`, with the recorded sha256.
pub async fn index_is_whole(database_url: &str, data_dir: &Path) -> (serde_json::Value, bool) {
    use sha2::Digest;
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let (serial,): (i64,) = sqlx::query_as("SELECT serial FROM stable_state WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let documents = super::index::stored_documents(&pool).await;
    pool.close().await;
    let stable: PathBuf = data_dir.join("stable");
    let mut whole = true;
    for package in documents.values() {
        for version in package["versions"].as_array().unwrap() {
            let path = stable.join(version["archive"].as_str().unwrap());
            match std::fs::read(&path) {
                Ok(bytes) => {
                    whole &= hex::encode(sha2::Sha256::digest(&bytes))
                        == version["sha256"].as_str().unwrap()
                }
                Err(_) => whole = false,
            }
        }
    }
    let index = serde_json::json!({ "serial": serial, "packages": documents });
    (index, whole)
}

/// Whether a process whose command line contains `marker` is running.
pub fn still_running(marker: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Waits (bounded) until `running(marker)` is `want`; true when it came.
pub async fn wait_running(marker: &str, want: bool, limit: Duration) -> bool {
    super::wait_until(async || still_running(marker) == want, limit)
        .await
        .is_some()
}

/// `holdq worker` as a separate process; killed (SIGKILL) on drop. Its
/// log goes to a file (shown when the test fails).
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// A worker on "another machine": its own empty data directory, archives
    /// over HTTP from `server` with a worker `token`, no config file.
    pub fn start_remote(
        platform: &str,
        server: &str,
        token: &str,
        data_dir: &Path,
        database_url: &str,
    ) -> Self {
        // The token in the environment, as the README shows, not in `ps`.
        Self::start_remote_with(platform, server, data_dir, database_url, |cmd| {
            cmd.env("HOLDQ_TOKEN", token);
        })
    }

    /// [`WorkerProcess::start_remote`] with its token given by `token`
    /// (a flag, a file, the environment).
    pub fn start_remote_with(
        platform: &str,
        server: &str,
        data_dir: &Path,
        database_url: &str,
        token: impl FnOnce(&mut Command),
    ) -> Self {
        Self::spawn(data_dir, database_url, |cmd| {
            cmd.args(["worker", "--platform", platform, "--server", server])
                .current_dir(data_dir)
                .env_remove("HOLDQ_CONFIG")
                .env_remove("HOLDQ_TOKEN");
            token(cmd);
        })
    }

    /// A worker sharing the server's data directory, with its config.
    pub fn start(platform: &str, config: &Path, data_dir: &Path, database_url: &str) -> Self {
        Self::spawn(data_dir, database_url, |cmd| {
            cmd.args(["worker", "--platform", platform])
                .arg("--config")
                .arg(config);
        })
    }

    fn spawn(data_dir: &Path, database_url: &str, args: impl FnOnce(&mut Command)) -> Self {
        let log = std::env::temp_dir().join(format!(
            "holdq-worker-{}-{:08x}.log",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdq"));
        args(&mut cmd);
        let child = cmd
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--database-url", database_url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a worker log file"))
            .spawn()
            .expect("holdq worker starts");
        Self { child, log }
    }

    /// What the worker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the worker at once (SIGKILL), as a machine cut off would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- worker log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Uploads `body` to the server at `base`: the status and JSON answer.
pub async fn try_upload_to(
    base: &str,
    token: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/uploads"))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// Uploads `body` to the server at `base`, asserting it was queued; its id.
pub async fn upload_to(base: &str, token: &str, body: Vec<u8>) -> i64 {
    let (status, body) = try_upload_to(base, token, body).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body:#}");
    body["id"].as_i64().unwrap()
}
