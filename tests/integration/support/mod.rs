//! `TestApp`: the real server on port 0 with a fresh database (SQLite file
//! or a new PostgreSQL database) and a fresh data directory.

pub mod archives;
pub mod browser;
pub mod index;
pub mod process;
pub mod smtp;
pub mod stable;
pub mod tus;
pub mod web;

use std::time::Duration;

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

    /// PostgreSQL, for a test that runs only when the tests were built with
    /// `HOLDQ_TEST_POSTGRES_URL` (`cfg(holdq_postgres)`, see `build.rs`).
    pub fn postgres_configured() -> Self {
        Self::postgres().expect(
            "HOLDQ_TEST_POSTGRES_URL was set when the tests were built; set it when running them too",
        )
    }

    async fn url(&self, dir: &TempDir) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}/holdq.db", dir.path().display()),
            Self::Postgres(server) => fresh_postgres_database(server).await,
        }
    }
}

/// Runs each named `async fn NAME(db: TestDb)` on SQLite as `NAME::sqlite`
/// and on PostgreSQL as `NAME::postgres`; the latter is ignored, with the
/// reason, when the tests were built without `HOLDQ_TEST_POSTGRES_URL`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::TestDb::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(holdq_postgres), ignore = "needs HOLDQ_TEST_POSTGRES_URL")]
            async fn postgres() {
                super::$name($crate::support::TestDb::postgres_configured()).await
            }
        }
    )*};
}

/// Polls `condition` every 20 ms until it holds (`true`, or `Some(value)`),
/// for at most `timeout`: what it found, or `None` when time ran out. Tests
/// wait on this instead of sleeping for a guessed while.
pub async fn wait_until<C: Condition>(
    mut condition: impl AsyncFnMut() -> C,
    timeout: Duration,
) -> Option<C::Value> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await.holds() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a [`wait_until`] condition answers: a `bool`, or an `Option` of
/// what it waited for.
pub trait Condition {
    type Value;
    fn holds(self) -> Option<Self::Value>;
}

impl Condition for bool {
    type Value = ();
    fn holds(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Condition for Option<T> {
    type Value = T;
    fn holds(self) -> Option<T> {
        self
    }
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
        // A developer's disk with less than the default 1 GiB free still
        // runs the tests; the free-space tests set their own reserve.
        config.storage.reserve = holdq::config::ByteSize(16 << 20);
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

    /// Starts what `holdq serve` runs beside its API (the start-up
    /// reconcile, scheduler, platform, decide and mail workers) through the
    /// same function; they stop when the test's runtime ends.
    pub async fn start_workers(&self) {
        holdq::service::server::start(&self.app)
            .await
            .expect("the server's background work starts");
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

    /// How many emails wait in the outbox to be delivered.
    pub async fn pending_emails(&self) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            .fetch_one(self.app.db.pool())
            .await
            .unwrap();
        n
    }

    /// Cuts the backoff of every pending email short: they are due now.
    pub async fn make_emails_due(&self) {
        let mut conn = self.app.db.pool().acquire().await.unwrap();
        holdq::db::outbox::make_pending_due(&mut conn)
            .await
            .unwrap();
    }

    /// Waits (bounded) until `upload_id` has a verdict, for tests that run
    /// the real workers; returns the upload as the API shows it.
    pub async fn wait_for_verdict(&self, upload_id: i64) -> Value {
        let path = format!("/api/v1/uploads/{upload_id}");
        let decided = wait_until(
            async || {
                let a = self.get(Some(&self.operator), &path).await;
                (!a.body["verdict"].is_null()).then_some(a.body)
            },
            Duration::from_secs(120),
        )
        .await;
        match decided {
            Some(view) => view,
            None => self.get(Some(&self.operator), &path).await.body,
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

    /// How many jobs (in any state) the job queue `queue` holds.
    pub async fn jobs_in(&self, queue: &str) -> i64 {
        self.count_jobs(queue, "").await
    }

    /// How many jobs of `queue` are still to run or running.
    pub async fn open_jobs_in(&self, queue: &str) -> i64 {
        self.count_jobs(queue, " AND status IN ('Pending', 'Queued', 'Running')")
            .await
    }

    async fn count_jobs(&self, queue: &str, filter: &str) -> i64 {
        let table = match self.app.db.backend() {
            holdq::db::Backend::Sqlite => "Jobs",
            holdq::db::Backend::Postgres => "apalis.jobs",
        };
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE job_type = $1{filter}"
        )))
        .bind(queue)
        .fetch_one(self.app.db.pool())
        .await
        .unwrap();
        n
    }

    /// Waits until the scheduler has taken upload `id` out of the queue:
    /// it is `checking`, with its checks recorded.
    pub async fn wait_checking(&self, id: i64) -> Value {
        wait_until(
            async || {
                let v = self.upload_view(id).await;
                (v["state"] == "checking" && !v["checks"].as_array().is_none_or(Vec::is_empty))
                    .then_some(v)
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|| panic!("upload {id} never started its checks"))
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
        let (partial,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tus_uploads")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(partial, 0, "no resumable upload record");
        assert_eq!(self.tus_files(), 0, "nothing left in tus/");
    }

    /// How many files the users' temporary spaces (`tus/*/`) hold.
    pub fn tus_files(&self) -> usize {
        let Ok(users) = std::fs::read_dir(self.app.storage.tus_dir()) else {
            return 0;
        };
        users
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
            .sum()
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
