//! Use cases, one function each, each owning its transaction. The HTTP API
//! and the command line both call these; no use case is written twice.

pub mod owners;
pub mod queue;
pub mod upload;
pub mod users;

use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;
use crate::storage::Storage;
use crate::storage::archive::ArchiveLimits;

/// Everything a use case may reach: configuration, database and files.
#[derive(Clone, Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub db: Db,
    pub storage: Storage,
}

impl App {
    /// Opens the database (applying migrations) and the data directory.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        let storage = Storage::open(&config.data_dir)?;
        let db = Db::connect(&config.database_url).await?;
        Ok(Self {
            config: Arc::new(config),
            db,
            storage,
        })
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
