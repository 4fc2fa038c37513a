//! The real `holdq serve` as a separate process, for tests that kill it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdq"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--database-url", database_url])
            .env_remove("HOLDQ_FAILPOINT")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/healthz", server.base))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Waits (bounded) for the process to end by itself; true when it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The stable index on disk and whether every version it names has its
/// archive, with the recorded sha256.
pub fn index_is_whole(data_dir: &Path) -> (serde_json::Value, bool) {
    use sha2::Digest;
    let stable: PathBuf = data_dir.join("stable");
    let index: serde_json::Value = match std::fs::read(stable.join("index.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("the index is whole JSON"),
        Err(_) => return (serde_json::json!({"serial": 0, "packages": {}}), true),
    };
    let mut whole = true;
    for package in index["packages"].as_object().unwrap().values() {
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
    (index, whole)
}

/// `holdq worker` as a separate process; killed on drop.
pub struct WorkerProcess(Child);

impl WorkerProcess {
    pub fn start(platform: &str, config: &Path, data_dir: &Path, database_url: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_holdq"))
            .args(["worker", "--platform", platform])
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--database-url", database_url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("holdq worker starts");
        Self(child)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
