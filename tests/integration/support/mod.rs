//! `TestApp`: the real server on port 0 with a fresh database (SQLite file
//! or a new PostgreSQL database) and a fresh data directory.

pub mod archives;
pub mod process;
pub mod smtp;
pub mod stable;

use holdq::config::Config;
use holdq::service::App;
use holdq::service::users::Role;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

/// A platform named `name` like the host's, with a 60 s time limit.
pub fn platform(name: &str) -> holdq::config::PlatformConfig {
    holdq::config::PlatformConfig {
        name: holdq::domain::PackageName::parse(name).unwrap(),
        timeout: std::time::Duration::from_secs(60),
        ..holdq::config::PlatformConfig::host()
    }
}

/// Two platforms, `linux-a` and `linux-b`.
pub fn two_platforms(c: &mut Config) {
    c.platforms = vec![platform("linux-a"), platform("linux-b")];
}

/// Which database a test runs on.
#[derive(Clone, Debug)]
pub enum TestDb {
    Sqlite,
    /// The server URL from `HOLDQ_TEST_POSTGRES_URL`; each test makes its
    /// own database there.
    Postgres(String),
}

impl TestDb {
    /// PostgreSQL when `HOLDQ_TEST_POSTGRES_URL` is set.
    pub fn postgres() -> Option<Self> {
        std::env::var("HOLDQ_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(Self::Postgres)
    }

    async fn url(&self, dir: &TempDir) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}/holdq.db", dir.path().display()),
            Self::Postgres(server) => fresh_postgres_database(server).await,
        }
    }
}

/// Runs each named `async fn NAME(db: TestDb)` on SQLite, and on PostgreSQL
/// when it is configured, as `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::TestDb::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match $crate::support::TestDb::postgres() {
                    Some(db) => super::$name(db).await,
                    None => eprintln!("HOLDQ_TEST_POSTGRES_URL is not set: PostgreSQL variant not run"),
                }
            }
        }
    )*};
}

async fn fresh_postgres_database(server: &str) -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let name = format!("holdq_test_{}", hex_id());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server)
        .await
        .expect("HOLDQ_TEST_POSTGRES_URL must reach a PostgreSQL server");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create the test database");
    let (base, _) = server
        .rsplit_once('/')
        .expect("a database URL ends in /DBNAME");
    format!("{base}/{name}")
}

fn hex_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub app: App,
    pub http: reqwest::Client,
    /// A token of an operator made at start.
    pub operator: String,
    /// Holds the data directory (and SQLite file) until the test ends.
    _dir: TempDir,
    pub database_url: String,
}

/// What the server answered: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("<no error message>")
    }
}

impl TestApp {
    pub async fn spawn(db: TestDb) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    /// Spawns with a configuration changed by `tweak`.
    pub async fn spawn_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::spawn_in(db, dir, tweak).await
    }

    /// Spawns with its data directory (and SQLite file) in `dir`, which
    /// lives until the test ends.
    pub async fn spawn_in(db: TestDb, dir: TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::try_spawn_in(db, dir, tweak)
            .await
            .expect("the app opens")
    }

    /// [`TestApp::spawn_in`], or why the app refused to open.
    pub async fn try_spawn_in(
        db: TestDb,
        dir: TempDir,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let mut config = Config::for_data_dir(&dir.path().join("data"));
        config.database_url = db.url(&dir).await;
        config.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut config);
        let database_url = config.database_url.clone();
        let sandbox = holdq::sandbox::Sandbox::new(env!("CARGO_BIN_EXE_holdq").into());
        let app = App::open_with(config, sandbox).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(holdq::http::serve(listener, app.clone()));
        let (_, operator) =
            holdq::service::users::add_user(&app.db, "operator@example.org", Role::Operator)
                .await
                .expect("an operator");
        Ok(Self {
            base: format!("http://{addr}"),
            app,
            http: reqwest::Client::new(),
            operator,
            _dir: dir,
            database_url,
        })
    }

    /// Starts the scheduler and every platform's local workers, as
    /// `holdq serve` does; they stop when the test's runtime ends.
    pub fn start_workers(&self) {
        let shutdown = tokio_util::sync::CancellationToken::new();
        holdq::service::scheduler::spawn_scheduler(&self.app, shutdown.clone());
        holdq::service::scheduler::spawn_email_worker(&self.app, shutdown.clone());
        for platform in &self.app.config.platforms {
            holdq::service::scheduler::spawn_workers(
                &self.app,
                platform,
                platform.local_workers,
                shutdown.clone(),
            );
        }
        std::mem::forget(shutdown);
    }

    /// Runs every queued upload's checks to their verdict in this task,
    /// calling the worker step directly: no job queue, no sleeping.
    pub async fn drain(&self) {
        use holdq::service::checks;
        checks::start_queued(&self.app)
            .await
            .expect("start queued uploads");
        loop {
            // Checks of a paused platform wait, as they would for a worker.
            let builds = {
                let mut conn = self.app.db.pool().acquire().await.unwrap();
                let paused = holdq::db::operators::paused_platforms(&mut conn)
                    .await
                    .unwrap();
                holdq::db::checks::unfinished_builds(&mut conn)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|b| !paused.contains(&b.platform))
                    .collect::<Vec<_>>()
            };
            if builds.is_empty() {
                break;
            }
            for b in builds {
                checks::run_platform(&self.app, b.id, "test-drain")
                    .await
                    .expect("run the checks");
            }
        }
    }

    /// Delivers every email that is due, in this task (no job queue).
    pub async fn drain_emails(&self) {
        drain_emails(&self.app).await;
    }

    /// Waits (bounded) until `upload_id` has a verdict, for tests that run
    /// the real workers; returns the upload as the API shows it.
    pub async fn wait_for_verdict(&self, upload_id: i64) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let a = self
                .get(
                    Some(&self.operator),
                    &format!("/api/v1/uploads/{upload_id}"),
                )
                .await;
            if !a.body["verdict"].is_null() || std::time::Instant::now() > deadline {
                return a.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Uploads and returns the new upload's id, asserting it was queued.
    pub async fn upload_ok(&self, token: &str, body: Vec<u8>) -> i64 {
        let a = self.upload(Some(token), body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a.body["id"].as_i64().unwrap()
    }

    /// The upload as `GET /api/v1/uploads/{id}` shows it.
    pub async fn upload_view(&self, upload_id: i64) -> Value {
        self.get(
            Some(&self.operator),
            &format!("/api/v1/uploads/{upload_id}"),
        )
        .await
        .body
    }

    /// A new (non-operator) user; returns their token.
    pub async fn user(&self, email: &str) -> String {
        holdq::service::users::add_user(&self.app.db, email, Role::Maintainer)
            .await
            .expect("a user")
            .1
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads raw bytes as an archive with `token`.
    pub async fn upload(&self, token: Option<&str>, body: Vec<u8>) -> Answer {
        let mut req = self
            .http
            .post(self.url("/api/v1/uploads"))
            .header("content-type", "application/gzip")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, token: Option<&str>, path: &str) -> Answer {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.expect("the server answers")).await
    }

    /// The holding queue as `GET /api/v1/queue` shows it.
    pub async fn queue(&self) -> Vec<Value> {
        let a = self.get(Some(&self.operator), "/api/v1/queue").await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        a.body.as_array().expect("a list").clone()
    }

    /// Asserts a refused upload left nothing behind: no row, no blob, no
    /// half-written file, no package.
    pub async fn assert_nothing_stored(&self) {
        let mut conn = self.app.db.pool().acquire().await.unwrap();
        assert_eq!(
            holdq::db::uploads::count_all(&mut conn).await.unwrap(),
            0,
            "no upload row"
        );
        let (packages,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM packages")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(packages, 0, "no package row");
        assert_eq!(self.app.storage.count_blobs().unwrap(), 0, "no blob");
        assert_eq!(
            self.app.storage.count_incoming().unwrap(),
            0,
            "nothing left in incoming/"
        );
    }

    /// Asserts the server still answers requests, on a new connection (one
    /// whose body was refused half-read is closed by design).
    pub async fn assert_serving(&self) {
        let fresh = reqwest::Client::new();
        let health = fresh
            .get(self.url("/healthz"))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(health.status(), StatusCode::OK);
        assert!(
            self.get(Some(&self.operator), "/api/v1/queue")
                .await
                .status
                .is_success()
        );
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let bytes = resp.bytes().await.expect("a whole answer");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer { status, body }
}

/// Delivers every due email of `app`'s outbox, calling the job body directly.
pub async fn drain_emails(app: &App) {
    let due = {
        let mut conn = app.db.pool().acquire().await.unwrap();
        holdq::db::outbox::due(&mut conn).await.unwrap()
    };
    for (id, _) in due {
        holdq::service::notify::deliver(app, id)
            .await
            .expect("deliver");
    }
}
