//! The durable job queues (apalis 1.0): one queue per platform on
//! apalis-sqlite or apalis-postgres, beside our own tables. A job carries
//! only the id of a check; our tables hold its state, and the handler
//! re-reads them, so a job delivered twice does no harm.
//!
//! Two sharp edges of apalis are handled here: its SQLite `setup` would
//! switch `synchronous` off, so we run its migrations ourselves on a pool
//! whose every connection gets our pragmas; and it cannot enqueue inside
//! our transaction, so jobs are pushed after the commit with an idempotency
//! key, and a reconcile sweep pushes again what a crash in between lost.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio_util::sync::CancellationToken;

use crate::db::Backend;

/// "Run the checks of platform P for the upload of build check N."
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunCheck {
    pub check_id: i64,
}

/// "Deliver outbox row N."
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendEmail {
    pub outbox_id: i64,
}

/// "Decide upload N": a worker on another machine finished its platform's
/// checks and leaves the verdict (and promotion) to a server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decide {
    pub upload_id: i64,
}

/// The queue emails go through.
pub const MAIL_QUEUE: &str = "holdq-mail";

/// The queue the servers take decisions from.
pub const DECIDE_QUEUE: &str = "holdq-decide";

/// apalis-postgres' trigger announces every inserted job on this channel.
const INSERT_CHANNEL: &str = "apalis::job::insert";

/// A wake-up for the workers of every queue (after a lost notification).
const EVERY_QUEUE: &str = "*";

/// How often a worker tells the queue it is alive; after two missed beats
/// its jobs go back to the queue for another worker.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How often an idle worker looks for work on SQLite, where only a job
/// pushed by its own process wakes it.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often an idle worker looks for work on PostgreSQL, where a
/// notification wakes it whichever process or machine pushed the job; the
/// poll only catches what no notification announced (a job re-enqueued from
/// a lost worker, a notification lost with its connection).
const POLL_INTERVAL_NOTIFIED: Duration = Duration::from_secs(1);

/// The queues of one database, and the signals that reach this process:
/// a pushed job wakes the workers of its queue at once instead of at the
/// next poll (jobs pushed here, and on PostgreSQL jobs pushed anywhere), and
/// a halted upload's id reaches every process running its checks.
#[derive(Clone, Debug)]
pub struct Queues {
    backend: QueueBackend,
    /// The queue a job was pushed to.
    wake: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Uploads whose checks must stop.
    halts: tokio::sync::broadcast::Sender<i64>,
    /// New stable serials.
    stable: tokio::sync::broadcast::Sender<i64>,
}

#[derive(Clone, Debug)]
enum QueueBackend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$storage`, the job storage of whichever backend this
/// is, configured by `$configure` from its default config `$config`.
/// apalis' SQLite and PostgreSQL storages share their method names but no
/// trait that covers them all, so one body serves both through a macro.
macro_rules! with_storage {
    ($backend:expr, $job:ty, |$config:ident| $configure:expr, |$storage:ident| $body:expr) => {
        match $backend {
            QueueBackend::Sqlite(pool) => {
                let $config = apalis_sqlite::Config::default();
                #[allow(unused_mut)]
                let mut $storage = SqliteStorage::<$job>::new(pool).with_config($configure);
                $body
            }
            QueueBackend::Postgres(pool) => {
                let $config = apalis_postgres::Config::default();
                #[allow(unused_mut)]
                let mut $storage = PostgresStorage::<$job>::new(pool).with_config($configure);
                $body
            }
        }
    };
}

/// The queue a platform's checks go to.
pub fn queue_name(platform: &str) -> String {
    format!("holdq-checks-{platform}")
}

impl Queues {
    /// Connects to the same database as our tables and applies apalis'
    /// migrations (beside ours: both migrators ignore each other's rows).
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        let backend = match Backend::of_url(database_url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(database_url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .context("cannot open the job queue database")?;
                let mut migrator = SqliteStorage::<()>::migrations();
                migrator.set_ignore_missing(true);
                migrator
                    .run(&pool)
                    .await
                    .context("cannot apply the job queue migrations")?;
                QueueBackend::Sqlite(pool)
            }
            Backend::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect(database_url)
                    .await
                    .context("cannot open the job queue database")?;
                let mut migrator = PostgresStorage::<()>::migrations();
                migrator.set_ignore_missing(true);
                migrator
                    .run(&pool)
                    .await
                    .context("cannot apply the job queue migrations")?;
                QueueBackend::Postgres(pool)
            }
        };
        let (wake, _) = tokio::sync::broadcast::channel(256);
        let (halts, _) = tokio::sync::broadcast::channel(256);
        let (stable, _) = tokio::sync::broadcast::channel(64);
        if let QueueBackend::Postgres(pool) = &backend {
            let senders = Senders {
                wake: wake.clone(),
                halts: halts.clone(),
                stable: stable.clone(),
            };
            spawn_listener(pool.clone(), senders);
        }
        Ok(Self {
            backend,
            wake,
            halts,
            stable,
        })
    }

    /// The stable serials other processes announce (PostgreSQL only).
    pub fn stable_serials(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.stable.subscribe()
    }

    /// The ids of uploads halted by any process (PostgreSQL only; on
    /// SQLite, processes see the upload's state change instead).
    pub fn halted_uploads(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.halts.subscribe()
    }

    /// Checks that the queue's database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match &self.backend {
            QueueBackend::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await.map(|_| ())?
            }
            QueueBackend::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await.map(|_| ())?
            }
        }
        Ok(())
    }

    /// A stream that yields whenever a job is pushed to `queue`.
    fn wake_stream(
        &self,
        queue: &str,
    ) -> std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send + Sync>> {
        let rx = self.wake.subscribe();
        let queue: Arc<str> = queue.into();
        Box::pin(futures::stream::unfold(rx, move |mut rx| {
            let queue = queue.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(q) if *q == *queue || &*q == EVERY_QUEUE => return Some(((), rx)),
                        Ok(_) => continue,
                        // Missed wake-ups: look anyway.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            return Some(((), rx));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        }))
    }

    fn poll_interval(&self) -> Duration {
        match self.backend {
            QueueBackend::Sqlite(_) => POLL_INTERVAL,
            QueueBackend::Postgres(_) => POLL_INTERVAL_NOTIFIED,
        }
    }

    /// Asks a server to decide `upload_id`. Not deduplicated: a second
    /// decision finds the upload decided.
    pub async fn push_decide(&self, upload_id: i64) -> anyhow::Result<()> {
        let key = format!("decide-{upload_id}-{:016x}", rand::random::<u64>());
        self.push(DECIDE_QUEUE, Decide { upload_id }, key)
            .await
            .with_context(|| format!("cannot ask for a decision on upload {upload_id}"))
    }

    /// Enqueues the checks of `check_id` on its platform's queue. The key
    /// makes a second push of the same attempt a no-op.
    /// `generation` counts the platform's resumes: a job pushed while it
    /// was paused was consumed without running, and is pushed again.
    /// `failures` counts the jobs that ended without starting the check:
    /// each gets a successor. `rebases` counts the upload's rebases: each
    /// runs checks again.
    pub async fn push_check(
        &self,
        platform: &str,
        check_id: i64,
        attempt: i64,
        generation: i64,
        failures: i64,
        rebases: i64,
    ) -> anyhow::Result<()> {
        let key = format!("check-{check_id}-{attempt}-g{generation}-f{failures}-r{rebases}");
        self.push(&queue_name(platform), RunCheck { check_id }, key)
            .await
            .with_context(|| format!("cannot enqueue check {check_id}"))
    }

    /// Enqueues the delivery of outbox row `outbox_id`.
    pub async fn push_email(&self, outbox_id: i64, attempt: i64) -> anyhow::Result<()> {
        let key = format!("email-{outbox_id}-{attempt}");
        self.push(MAIL_QUEUE, SendEmail { outbox_id }, key)
            .await
            .with_context(|| format!("cannot enqueue email {outbox_id}"))
    }

    /// Enqueues many deliveries (outbox id, attempt) in one batch; when the
    /// batch is refused (one of them was pushed already) each goes alone.
    pub async fn push_emails(&self, emails: &[(i64, i64)]) -> anyhow::Result<()> {
        if emails.len() <= 1 {
            for &(id, attempt) in emails {
                self.push_email(id, attempt).await?;
            }
            return Ok(());
        }
        // Built up front: a stream over borrowed data trips the compiler's
        // `Send` proof in apalis' generic sink.
        let built: Vec<(i64, String)> = emails
            .iter()
            .map(|&(outbox_id, attempt)| (outbox_id, format!("email-{outbox_id}-{attempt}")))
            .collect();
        let tasks = move || {
            let list: Vec<_> = built
                .iter()
                .cloned()
                .map(|(outbox_id, key)| {
                    TaskBuilder::new(SendEmail { outbox_id })
                        .idempotency_key(key)
                        .build()
                })
                .collect();
            futures::stream::iter(list)
        };
        let batch = with_storage!(
            &self.backend,
            SendEmail,
            |c| c.queue(MAIL_QUEUE),
            |storage| {
                storage
                    .push_all(tasks())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
            }
        );
        let _ = self.wake.send(MAIL_QUEUE.into());
        if batch.is_err() {
            for &(id, attempt) in emails {
                self.push_email(id, attempt).await?;
            }
        }
        Ok(())
    }

    async fn push<J: Job>(&self, queue: &str, job: J, key: String) -> anyhow::Result<()> {
        let task = TaskBuilder::new(job).idempotency_key(key).build();
        let result = with_storage!(&self.backend, J, |c| c.queue(queue), |storage| {
            storage
                .push_task(task)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
        let _ = self.wake.send(queue.into());
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_duplicate(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs one check worker on `platform`'s queue until `shutdown`.
    pub async fn run_check_worker(
        self,
        platform: String,
        name: String,
        handler: Handler<RunCheck>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        self.run_worker(queue_name(&platform), name, handler, shutdown)
            .await
    }

    /// Runs one worker on `queue` (`MAIL_QUEUE`, `DECIDE_QUEUE`, or a
    /// platform's `queue_name`), one job at a time, calling `handler`.
    pub async fn run_worker<J: Job>(
        self,
        queue: String,
        name: String,
        handler: Handler<J>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let stop = async move {
            shutdown.cancelled().await;
            Ok::<(), std::io::Error>(())
        };
        let strategy = Strategy::new()
            .stream(self.wake_stream(&queue))
            .interval(self.poll_interval());
        with_storage!(
            &self.backend,
            J,
            |c| c.queue(&queue).batch_size(1).heartbeat_interval(HEARTBEAT),
            |storage| {
                WorkerBuilder::new(name)
                    .backend(storage.poll_with_strategy(strategy))
                    .concurrency(1)
                    .data(handler)
                    .build(handle::<J>)
                    .run_until(stop)
                    .await?
            }
        );
        Ok(())
    }
}

/// Listens on PostgreSQL for pushed jobs (apalis' trigger) and halted
/// uploads, for as long as the process lives; reconnects when the
/// connection drops, and then wakes every queue, since notifications sent
/// meanwhile are lost.
/// Where the listener passes what it hears.
struct Senders {
    wake: tokio::sync::broadcast::Sender<Arc<str>>,
    halts: tokio::sync::broadcast::Sender<i64>,
    stable: tokio::sync::broadcast::Sender<i64>,
}

fn spawn_listener(pool: PgPool, senders: Senders) {
    let Senders {
        wake,
        halts,
        stable,
    } = senders;
    #[derive(Deserialize)]
    struct Inserted {
        job_type: String,
    }
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let connected = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener
                    .listen_all([
                        INSERT_CHANNEL,
                        crate::db::HALT_CHANNEL,
                        crate::db::STABLE_CHANNEL,
                    ])
                    .await?;
                Ok::<_, sqlx::Error>(listener)
            }
            .await;
            let mut listener = match connected {
                Ok(listener) => listener,
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "cannot listen for job notifications; polling meanwhile");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if failures > 0 {
                tracing::info!("listening for job notifications again");
                failures = 0;
            }
            let _ = wake.send(EVERY_QUEUE.into());
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.channel() == INSERT_CHANNEL => {
                        if let Ok(ev) = serde_json::from_str::<Inserted>(n.payload()) {
                            let _ = wake.send(ev.job_type.into());
                        }
                    }
                    Ok(Some(n)) if n.channel() == crate::db::STABLE_CHANNEL => {
                        if let Ok(serial) = n.payload().parse::<i64>() {
                            let _ = stable.send(serial);
                        }
                    }
                    Ok(Some(n)) => {
                        if let Ok(id) = n.payload().parse::<i64>() {
                            let _ = halts.send(id);
                        }
                    }
                    // The connection dropped: listen again on a new one.
                    Ok(None) | Err(_) => break,
                }
            }
        }
    });
}

/// What a job carries: only ids, serialised as JSON.
pub trait Job:
    Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + Unpin + 'static
{
}
impl<T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + Unpin + 'static> Job for T {}

/// What a worker does with a job: a use case given by the caller, so this
/// layer knows nothing of them. (A named type, not an alias: the compiler
/// cannot prove `Send` for the worker's future through a bare `dyn Fn` in
/// apalis' generic signatures.)
pub struct Handler<J>(pub Arc<dyn Fn(J) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>);

impl<J> Clone for Handler<J> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

async fn handle<J: Job>(job: J, handler: Data<Handler<J>>) -> Result<(), BoxDynError> {
    (handler.0.0)(job)
        .await
        .map_err(|e| -> BoxDynError { e.into() })
}

fn is_duplicate(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_lowercase();
    text.contains("unique") || text.contains("duplicate")
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// A worker name unique to this process: host, pid and a random suffix,
/// so a restarted worker never inherits the locks of its previous life.
pub fn worker_name(platform: &str, index: u32) -> String {
    use rand::Rng;
    let host = host_name();
    let suffix: u32 = rand::rng().random();
    format!(
        "holdq-{host}-{}-{suffix:08x}-{platform}-{index}",
        std::process::id()
    )
}
