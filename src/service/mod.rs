//! Use cases, one function each, each owning its transaction. The HTTP API
//! and the command line both call these; no use case is written twice.

pub mod archives;
pub mod authz;
pub mod build;
pub mod changes;
pub mod checks;
pub mod dropbox;
pub mod faults;
pub mod groups;
pub mod index;
pub mod integrity;
pub mod metrics;
pub mod mirror;
pub mod notify;
pub mod obsolete;
pub mod operators;
pub mod owners;
pub mod passmark;
pub mod queue;
mod reject;
pub mod revdeps;
pub mod scheduler;
pub mod server;
pub mod stable;
pub mod testing;
pub mod tus;
pub mod upload;
pub mod users;
pub mod verdict;
pub mod web;

use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;
use crate::email::{Templates, Transport};
use crate::jobs::Queues;
use crate::sandbox::Sandbox;
use crate::storage::Storage;
use crate::storage::archive::ArchiveLimits;
use crate::storage::fetch::RemoteStore;
use crate::storage::stable::StableStore;

/// Everything a use case may reach: configuration, database, job queues,
/// files, the sandbox, and this process's halt signals.
#[derive(Clone, Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub db: Db,
    pub queues: Queues,
    pub storage: Storage,
    pub stable: StableStore,
    pub sandbox: Sandbox,
    pub halts: checks::Halts,
    /// For a worker on a machine that shares no disk with the server: the
    /// server whose archives it fetches. Such a worker records results but
    /// leaves verdicts and promotion to the servers.
    pub remote: Option<Arc<RemoteStore>>,
    pub templates: Arc<Templates>,
    pub mailer: Transport,
    /// Wakes the scheduler when an upload arrives.
    pub wake: Arc<tokio::sync::Notify>,
    /// This process's model of the stable repository.
    pub stable_cache: stable::StableCache,
    /// The serial the stable index was last published at, by this process
    /// or (announced) another: what long-polls of the changes log wait on.
    pub stable_serial: Arc<tokio::sync::watch::Sender<i64>>,
    /// A follower's wake-up: its primary pushed a new serial.
    pub mirror_pushed: Arc<tokio::sync::Notify>,
}

impl App {
    /// Opens the database (applying migrations), the job queues and the
    /// data directory. Checks run through the `holdq` executable `sandbox`.
    pub async fn open_with(config: Config, sandbox: Sandbox) -> anyhow::Result<Self> {
        let sandbox = sandbox.contain(&config)?;
        if let Some(why) = sandbox.containment().refusal()
            && config.platforms.iter().any(|p| p.local_workers > 0)
        {
            anyhow::bail!("cannot run checks: {why}");
        }
        crate::sandbox::sweep(&config.data_dir);
        let storage = Storage::open(&config.data_dir)?;
        let stable = StableStore::open(&config.data_dir)?;
        let db = Db::connect(&config.database_url).await?;
        let queues = Queues::connect(&config.database_url).await?;
        let templates = Arc::new(Templates::new(config.mail.templates_dir.clone()));
        let mailer = Transport::from_config(&config.mail, &config.data_dir)?;
        let halts = checks::Halts::default();
        halts.follow(&queues);
        let app = Self {
            config: Arc::new(config),
            db,
            queues,
            storage,
            stable,
            sandbox,
            halts,
            remote: None,
            templates,
            mailer,
            wake: Arc::new(tokio::sync::Notify::new()),
            stable_cache: Arc::default(),
            stable_serial: Arc::new(tokio::sync::watch::Sender::new(0)),
            mirror_pushed: Arc::new(tokio::sync::Notify::new()),
        };
        changes::follow(&app);
        Ok(app)
    }

    /// [`App::open_with`] the running executable as the sandbox.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        Self::open_with(config, Sandbox::current()?).await
    }

    pub fn archive_limits(&self) -> ArchiveLimits {
        ArchiveLimits {
            unpacked_bytes: self.config.limits.unpacked_bytes.0,
            entries: self.config.limits.entries,
        }
    }
}

/// Formats a stored timestamp (ms since the epoch) as RFC 3339.
pub fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
