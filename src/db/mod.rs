//! The database: one pool over SQLite or PostgreSQL (chosen by the URL's
//! scheme), the migrations of each, and the queries the services use, one
//! module per table family. Queries are checked at run time (`query_as`
//! into row structs) and written once with `$N` placeholders, which both
//! backends accept.

pub mod assumptions;
pub mod changes;
pub mod checks;
pub mod dropbox;
pub mod events;
pub mod groups;
pub mod metrics;
pub mod mirror;
pub mod mirror_pages;
pub mod operators;
pub mod outbox;
pub mod packages;
pub mod pins;
pub mod stable;
pub mod testing;
pub mod tus;
pub mod uploads;
pub mod users;
pub mod web;
pub mod words;
pub mod workers;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};

use crate::config::redact_url;
use crate::domain::word::StateMachine;

pub use sqlx::AnyConnection as Conn;
/// The PostgreSQL notification channel on which a halted upload's id is
/// announced to the workers of every process.
pub const HALT_CHANNEL: &str = "holdq_halt";
/// The PostgreSQL notification channel on which each new stable serial is
/// announced (long-polls of the changes log wake on it).
pub const STABLE_CHANNEL: &str = "holdq_stable";

/// Ids in one `IN (...)` list, or rows in one JSON parameter
/// ([`json_rows`]): few statements for thousands of rows, under SQLite's
/// limit of 32,766 parameters and PostgreSQL's of 65,535.
pub const BATCH: usize = 5000;

/// A subquery of the strings of the JSON array bound at `$n`, for
/// `x IN` it: thousands of names in one parameter. A statement of
/// thousands of parameters costs the driver and PostgreSQL's parser and
/// planner more than running it (100 ms for 4,300 names), and a JSON text
/// is one value to bind whatever its length.
pub fn json_strings(backend: Backend, n: usize) -> String {
    match backend {
        // In FROM, not the select list: a function scan keeps its rows
        // for a rescan, where a set-returning select list would parse the
        // JSON again for every row of the other side of a nested loop
        // (3 s for 4,300 pins whose statistics said the table was empty).
        Backend::Postgres => format!("(SELECT w FROM json_array_elements_text(${n}::json) AS w)"),
        Backend::Sqlite => format!("(SELECT value FROM json_each(${n}))"),
    }
}

/// The rows `sql` selects for `names`: `sql` says `IN {names}` where they
/// go, bound as one JSON array ([`json_strings`]).
pub async fn fetch_for_names<T>(conn: &mut Conn, sql: &str, names: &[&str]) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let sql = sql.replace("{names}", &json_strings(Backend::of_conn(conn), 1));
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::to_string(names).expect("names serialise"))
        .fetch_all(conn)
        .await
}

/// A subquery of the rows of the JSON array of objects bound at `$n`,
/// with the columns `columns` (name, PostgreSQL type), to `INSERT ...
/// SELECT` from: thousands of rows in one parameter ([`json_strings`]).
/// SQLite takes each field's JSON type (integers stay integers).
pub fn json_rows(backend: Backend, n: usize, columns: &[(&str, &str)]) -> String {
    match backend {
        Backend::Postgres => {
            let typed: Vec<String> = columns.iter().map(|(c, t)| format!("{c} {t}")).collect();
            format!(
                "(SELECT * FROM json_to_recordset(${n}::json) AS j({}))",
                typed.join(", ")
            )
        }
        Backend::Sqlite => {
            let fields: Vec<String> = columns
                .iter()
                .map(|(c, _)| format!("value ->> '{c}' AS {c}"))
                .collect();
            format!("(SELECT {} FROM json_each(${n}))", fields.join(", "))
        }
    }
}

/// A transaction owned by one use case.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("unsupported database URL {}", redact_url(url))
        }
    }
}

impl Backend {
    /// Which database a connection talks to.
    pub fn of_conn(conn: &Conn) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }
}

/// The shared pool, and which backend it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// How long a SQLite writer waits for another before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

// The job queue's migrations share the migrations table: each set ignores
// the other's rows.
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/sqlite")
};
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

impl Db {
    /// Connects (creating a SQLite file and its directory when missing) and
    /// applies the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .with_context(|| format!("invalid database URL {}", redact_url(&url)))?;
        let pool = AnyPoolOptions::new()
            // SQLite: enough that the writer holding the lock still finds a
            // connection to read with while others queue for it.
            .max_connections(match backend {
                Backend::Sqlite => 32,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Set on every connection: nothing a library left
                        // behind on another connection is relied upon.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "PRAGMA busy_timeout = {}",
                            SQLITE_BUSY_TIMEOUT.as_millis()
                        )))
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to {}", redact_url(&url)))?;
        let db = Self { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .context("cannot apply database migrations")
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`), so two writers queue on the busy
    /// timeout instead of failing when a reader upgrades.
    pub async fn begin_write(&self) -> sqlx::Result<Tx> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Begins a transaction that only reads, from one snapshot: on
    /// PostgreSQL `REPEATABLE READ`, so an upload and its verdict are read
    /// as of the same instant (SQLite's read transactions already are).
    pub async fn begin_read(&self) -> sqlx::Result<Tx> {
        match self.backend {
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> sqlx::Result<()> {
        self.pool.acquire().await?.ping().await
    }

    /// `FOR UPDATE` where the backend has row locks; SQLite's write lock
    /// already serialises writers.
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Adds `mode=rwc` so a missing file is created, and creates its directory.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path != ":memory:"
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create database directory {}", dir.display()))?;
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// Milliseconds since the Unix epoch: how every timestamp is stored.
/// A state change that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// The state machine forbids it.
    #[error(transparent)]
    Forbidden(#[from] crate::domain::word::ForbiddenTransition),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// `state IN ('pending', 'running')`: the states from which the state
/// machine allows going to `to`, as SQL (static words, never user input).
pub fn from_states<S: StateMachine>(to: S) -> String {
    let words: Vec<String> = S::sources_of(to)
        .map(|s| format!("'{}'", s.word()))
        .collect();
    format!("state IN ({})", words.join(", "))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Whether `err` is the violation of the named unique constraint.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            // PostgreSQL names the constraint; SQLite names the columns.
            db.constraint() == Some(constraint) || db.constraint().is_none()
        }
        _ => false,
    }
}
