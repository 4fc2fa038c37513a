//! Server configuration: `holdq.toml`, then `HOLDQ_<KEY>` environment
//! variables for top-level keys, then command-line flags; validated once at
//! start-up into one [`Config`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use std::collections::BTreeMap;

use crate::domain::PackageName;
use crate::domain::check::CheckKind;

/// The configuration every component reads from.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub public_url: String,
    pub limits: Limits,
    pub mail: MailConfig,
    pub passmark: PassMarkConfig,
    pub revdeps: RevdepsConfig,
    pub queue: QueueConfig,
    pub index: IndexConfig,
    pub testing: TestingConfig,
    pub mirror: MirrorConfig,
    pub platforms: Vec<PlatformConfig>,
    pub sandbox: SandboxConfig,
    pub tus: TusConfig,
    pub dropbox: DropboxConfig,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub worker: WorkerConfig,
    pub web: WebConfig,
    /// The file this configuration was read from, hidden from checks.
    pub config_file: Option<PathBuf>,
}

/// Who checks run as (SPEC section 4, "Containment").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Let checks run as the server's own account when no identity that
    /// owns nothing is available (a developer's laptop): every file the
    /// server can read, a check can read. Warned about at every start.
    pub allow_own_uid: bool,
    /// As root, a check runs as host uid `uid_base + pid` of its sandbox
    /// (an uid no file and no account has; unique while it runs).
    pub uid_base: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            allow_own_uid: false,
            uid_base: 2_000_000_000,
        }
    }
}

/// Resumable uploads (tus 1.0, SPEC section 9).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TusConfig {
    /// What one user's unfinished uploads may hold together.
    pub quota: ByteSize,
    /// How long an unfinished upload is kept after its last byte arrived.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
}

impl Default for TusConfig {
    fn default() -> Self {
        Self {
            quota: ByteSize(2 << 30),
            expire_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// How the HTTP server treats its connections (`[server]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// An upload whose body sends nothing for this long is dropped, its
    /// partial file removed (`408 body_timeout`).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Uploads one user may send at once; more get `429 too_many_uploads`.
    pub uploads_per_user: u32,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: u32,
    /// A connection with no traffic either way for this long is closed:
    /// an idle keep-alive connection, or one that never finishes its headers.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_timeout: Duration::from_secs(60),
            uploads_per_user: 4,
            // Under the common limit of 1,024 file descriptors, with room
            // for the database, the blobs and the checks.
            max_connections: 512,
            idle_timeout: Duration::from_secs(75),
        }
    }
}

/// The drop box (mmpack, SPEC section 9): a directory watched for manifests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropboxConfig {
    /// The directory; absent, there is no drop box.
    pub dir: Option<PathBuf>,
    /// How often the directory is scanned when no notification came (a
    /// filesystem without notifications, e.g. NFS, relies on this).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
}

impl Default for DropboxConfig {
    fn default() -> Self {
        Self {
            dir: None,
            poll: Duration::from_secs(5),
        }
    }
}

/// The data directory's disk (`[storage]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Free space kept on the data directory's filesystem: an upload that
    /// would cross it is refused (`507 insufficient_storage`), and
    /// `/healthz` says degraded below it.
    pub reserve: ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            reserve: ByteSize(1 << 30),
        }
    }
}

/// A remote worker's own settings (`[worker]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// A file holding the worker's token (`holdq worker --token-file`),
    /// so the token never appears on a command line.
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub upload_bytes: ByteSize,
    pub unpacked_bytes: ByteSize,
    pub entries: u64,
    /// Output kept per check (the tail).
    pub check_output: ByteSize,
    /// Most processes a check may run at once.
    pub check_processes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            upload_bytes: ByteSize(256 << 20),
            unpacked_bytes: ByteSize(512 << 20),
            entries: 100_000,
            check_output: ByteSize(1 << 20),
            check_processes: 512,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub from: String,
    pub smtp_url: Option<String>,
    pub templates_dir: Option<PathBuf>,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            from: "holdq <holdq@localhost>".into(),
            smtp_url: None,
            templates_dir: None,
        }
    }
}

/// The pass mark as the config file starts it: the threshold, a weight per
/// check kind (multiplied by the platform's weight for per-platform
/// checks), and which kinds are required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassMarkConfig {
    pub threshold: f64,
    pub weights: BTreeMap<CheckKind, f64>,
    pub required: Vec<CheckKind>,
}

impl Default for PassMarkConfig {
    fn default() -> Self {
        Self {
            threshold: 1.0,
            weights: BTreeMap::new(),
            required: vec![CheckKind::Validate, CheckKind::Resolve, CheckKind::Build],
        }
    }
}

impl PassMarkConfig {
    /// The weight of a kind of check (1.0 unless configured).
    pub fn weight(&self, kind: CheckKind) -> f64 {
        self.weights.get(&kind).copied().unwrap_or(1.0)
    }

    /// Whether a kind of check must pass; `validate` and `resolve` always must.
    pub fn is_required(&self, kind: CheckKind) -> bool {
        kind.always_required() || self.required.contains(&kind)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevdepsConfig {
    pub min_fraction: f64,
    pub max_dependents: u32,
}

impl Default for RevdepsConfig {
    fn default() -> Self {
        Self {
            min_fraction: 1.0,
            max_dependents: 100,
        }
    }
}

/// The web pages (SPEC section 8a).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The queue and upload states (not logs, not recipients) are shown to
    /// everyone, signed in or not.
    pub public_queue: bool,
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: std::time::Duration,
    /// Files here override the compiled-in page templates by name.
    pub templates_dir: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            public_queue: false,
            session_ttl: std::time::Duration::from_secs(14 * 24 * 3600),
            templates_dir: None,
        }
    }
}

/// The holding queue's integrity rules (SPEC section 3, rules 6 and 7).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Rebases after which an upload's checks wait for the related uploads
    /// ahead of it instead of speculating, so that it always ends.
    pub max_rebases: u32,
    /// Check each upload against stable plus the pending uploads ahead of
    /// it. Off: each waits for the related uploads ahead to be decided.
    pub speculate: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_rebases: 3,
            speculate: true,
        }
    }
}

/// The stable index and its changes log (SPEC section 10).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// How long the changes log keeps a change; a follower further behind
    /// starts again from `GET /api/v1/snapshot`.
    #[serde(with = "humantime_serde")]
    pub changes_kept: Duration,
}

/// The testing channel (SPEC section 10, "Check states").
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Publish uploads still being checked, once `validate` and `resolve`
    /// passed, in the testing channel (`GET /api/v1/testing/index`).
    pub publish: bool,
}

/// Mirrors (SPEC section 10): what a follower follows, and which followers
/// a server tells of each change.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// The primary this server follows (`mirror_of`, `--mirror-of`): set,
    /// the server is a read-only follower.
    #[serde(skip)]
    pub of: Option<String>,
    /// How often a follower asks its primary when no push comes: up to 60s
    /// it holds a long-poll of the changes feed open that long; longer, it
    /// asks once and then waits that long for a push.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// The longest pause between attempts when the primary does not answer.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Followers told at once of every new serial.
    pub peer: Vec<MirrorPeer>,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            of: None,
            poll: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            peer: Vec::new(),
        }
    }
}

/// A follower a primary pushes new serials to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorPeer {
    pub url: String,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            changes_kept: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// One platform that checks run on.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    pub name: PackageName,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default = "one_worker")]
    pub local_workers: u32,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    #[serde(default)]
    pub retries: u32,
    /// Variables of a check's environment: `KEY` passes the worker's
    /// value through, `KEY=VALUE` sets it (e.g. `RUSTUP_TOOLCHAIN=stable`).
    #[serde(default = "default_env")]
    pub env: Vec<String>,
    /// What a check may write: its directory and its `/tmp` together.
    #[serde(default = "default_disk")]
    pub disk: ByteSize,
    /// Extra host paths visible read-only to checks, e.g. a toolchain.
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
}

fn one() -> f64 {
    1.0
}
fn one_worker() -> u32 {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_memory() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_env() -> Vec<String> {
    vec!["PATH".into(), "LANG".into()]
}
fn default_disk() -> ByteSize {
    ByteSize(8 << 30)
}

impl PlatformConfig {
    /// A platform of this name with the default limits, for a worker
    /// whose config does not describe it.
    pub fn named(name: PackageName) -> Self {
        Self {
            name,
            ..Self::host()
        }
    }

    /// The platform of this host, e.g. `linux-x86_64`.
    pub fn host() -> Self {
        let name = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
            .to_lowercase()
            .replace(
                |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "_",
            );
        Self {
            name: PackageName::parse(&name).expect("OS-ARCH is a valid platform name"),
            weight: 1.0,
            local_workers: 1,
            timeout: default_timeout(),
            memory: default_memory(),
            retries: 0,
            env: default_env(),
            disk: default_disk(),
            mounts: Vec::new(),
        }
    }
}

mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| D::Error::custom(format!("{s:?}: {e}")))
    }
}

/// A size in bytes, written in config as `"256MiB"`, `"2GiB"`, `"100kB"` or a
/// plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a size such as \"256MiB\""))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB)"
                ));
            }
        };
        Ok(Self((number * factor as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    /// A file holding the database URL (its password off the config).
    database_url_file: Option<PathBuf>,
    public_url: Option<String>,
    mirror_of: Option<String>,
    #[serde(default)]
    testing: TestingConfig,
    #[serde(default)]
    mirror: MirrorConfig,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    mail: MailConfig,
    #[serde(default)]
    passmark: PassMarkConfig,
    #[serde(default)]
    revdeps: RevdepsConfig,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    index: IndexConfig,
    #[serde(default)]
    platform: Vec<PlatformConfig>,
    #[serde(default)]
    sandbox: SandboxConfig,
    #[serde(default)]
    tus: TusConfig,
    #[serde(default)]
    dropbox: DropboxConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    storage: StorageConfig,
    #[serde(default)]
    worker: WorkerConfig,
    #[serde(default)]
    web: WebConfig,
}

impl fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailConfig")
            .field("from", &self.from)
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("templates_dir", &self.templates_dir)
            .finish()
    }
}

/// Top-level overrides from flags; they win over the environment and the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    /// `--database-url-file`: read the URL from this file.
    pub database_url_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub mirror_of: Option<String>,
}

/// The default file looked for when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "holdq.toml";

impl Config {
    /// Loads `path` (or `./holdq.toml` when it exists), applies `HOLDQ_*`
    /// from `env`, then `flags`, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => Some(read_file(path)?),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                Some(read_file(Path::new(DEFAULT_CONFIG_FILE))?)
            }
            None => None,
        };
        let mut config = Self::from_parts(file.unwrap_or_default(), env, flags)?;
        config.config_file = match path {
            Some(path) => Some(path.to_owned()),
            None => Path::new(DEFAULT_CONFIG_FILE)
                .is_file()
                .then(|| PathBuf::from(DEFAULT_CONFIG_FILE)),
        };
        Ok(config)
    }

    /// Parses a configuration from TOML text, with no environment or flags.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let file: FileConfig = toml::from_str(text).context("invalid configuration")?;
        Self::from_parts(file, |_| None, &Overrides::default())
    }

    /// The embedded defaults, rooted at `data_dir`: what tests start from.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        let flags = Overrides {
            data_dir: Some(data_dir.to_owned()),
            ..Default::default()
        };
        Self::from_parts(FileConfig::default(), |_| None, &flags).expect("defaults are valid")
    }

    fn from_parts(
        file: FileConfig,
        env: impl Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> anyhow::Result<Self> {
        let pick = |flag: &Option<String>, key: &str, file: Option<String>| {
            flag.clone().or_else(|| env(key)).or(file)
        };
        let listen = pick(&flags.listen, "HOLDQ_LISTEN", file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen.parse().with_context(|| {
            format!("listen: {listen:?} is not an address such as 127.0.0.1:8080")
        })?;
        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| env("HOLDQ_DATA_DIR").map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("holdq-data"));
        let database_url = match database_url_from_file(flags, &env, file.database_url_file)? {
            Some(url) => url,
            None => pick(&flags.database_url, "HOLDQ_DATABASE_URL", file.database_url)
                .unwrap_or_else(|| format!("sqlite://{}/holdq.db", data_dir.display())),
        };
        let public_url = pick(&flags.public_url, "HOLDQ_PUBLIC_URL", file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));

        let mut mirror = file.mirror;
        mirror.of = pick(&flags.mirror_of, "HOLDQ_MIRROR_OF", file.mirror_of)
            .map(|url| url.trim_end_matches('/').to_owned());
        let mut mail = file.mail;
        if let Some(url) = env("HOLDQ_SMTP_URL") {
            mail.smtp_url = Some(url);
        }
        let platforms = if file.platform.is_empty() {
            vec![PlatformConfig::host()]
        } else {
            file.platform
        };

        let config = Self {
            listen,
            data_dir,
            database_url,
            public_url: public_url.trim_end_matches('/').to_owned(),
            limits: file.limits,
            mail,
            passmark: file.passmark,
            revdeps: file.revdeps,
            queue: file.queue,
            index: file.index,
            testing: file.testing,
            mirror,
            platforms,
            sandbox: file.sandbox,
            tus: file.tus,
            dropbox: file.dropbox,
            server: file.server,
            storage: file.storage,
            worker: file.worker,
            web: file.web,
            config_file: None,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            bail!(
                "database_url: {} is neither sqlite:// nor postgres://",
                redact_url(&self.database_url)
            );
        }
        if !(0.0..=1.0).contains(&self.passmark.threshold) {
            bail!("passmark.threshold must lie between 0 and 1");
        }
        if self
            .passmark
            .weights
            .values()
            .any(|w| *w < 0.0 || !w.is_finite())
        {
            bail!("passmark.weights must be finite and not negative");
        }
        if !(0.0..=1.0).contains(&self.revdeps.min_fraction) {
            bail!("revdeps.min_fraction must lie between 0 and 1");
        }
        if self.limits.upload_bytes.0 == 0
            || self.limits.unpacked_bytes.0 == 0
            || self.limits.entries == 0
        {
            bail!("limits must be greater than zero");
        }
        if self.tus.quota.0 == 0 || self.tus.expire_after.is_zero() {
            bail!("tus.quota and tus.expire_after must be greater than zero");
        }
        if self.dropbox.poll.is_zero() {
            bail!("dropbox.poll must be greater than zero");
        }
        if self.server.body_timeout.is_zero()
            || self.server.idle_timeout.is_zero()
            || self.server.uploads_per_user == 0
            || self.server.max_connections == 0
        {
            bail!(
                "server.body_timeout, idle_timeout, uploads_per_user and max_connections must be greater than zero"
            );
        }
        for url in self
            .mirror
            .of
            .iter()
            .chain(self.mirror.peer.iter().map(|p| &p.url))
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("mirror: {url:?} is not an http:// or https:// URL");
            }
        }
        if self.mirror.poll < Duration::from_secs(1) || self.mirror.max_backoff.is_zero() {
            bail!("mirror.poll must be at least 1s and mirror.max_backoff more than 0");
        }
        for (i, p) in self.platforms.iter().enumerate() {
            if self.platforms[..i].iter().any(|q| q.name == p.name) {
                bail!("platform {:?} is configured twice", p.name.as_str());
            }
            if p.weight < 0.0 {
                bail!("platform {}: weight must not be negative", p.name);
            }
            if p.disk.0 < 1 << 20 {
                bail!("platform {}: disk must be at least 1MiB", p.name);
            }
        }
        Ok(())
    }

    /// The platform configured under `name`.
    pub fn platform(&self, name: &str) -> Option<&PlatformConfig> {
        self.platforms.iter().find(|p| p.name.as_str() == name)
    }
}

/// The database URL named by `--database-url-file`, else
/// `HOLDQ_DATABASE_URL_FILE`, else the file's `database_url_file`: the
/// file's first line (a secret kept out of `ps` and of the config).
fn database_url_from_file(
    flags: &Overrides,
    env: &impl Fn(&str) -> Option<String>,
    from_config: Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    let path = flags
        .database_url_file
        .clone()
        .or_else(|| env("HOLDQ_DATABASE_URL_FILE").map(PathBuf::from))
        .or(from_config);
    path.map(|p| read_secret(&p).context("database_url_file"))
        .transpose()
}

/// The first line of a file holding a secret (a token, a database URL),
/// trimmed; an empty file is an error naming it.
pub fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(secret.to_owned())
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("limits", &self.limits)
            .field("mail", &self.mail)
            .field("passmark", &self.passmark)
            .field("revdeps", &self.revdeps)
            .field("queue", &self.queue)
            .field("index", &self.index)
            .field("testing", &self.testing)
            .field("mirror", &self.mirror)
            .field("platforms", &self.platforms)
            .field("sandbox", &self.sandbox)
            .field("tus", &self.tus)
            .field("dropbox", &self.dropbox)
            .field("server", &self.server)
            .field("storage", &self.storage)
            .field("worker", &self.worker)
            .field("web", &self.web)
            .field("config_file", &self.config_file)
            .finish()
    }
}

/// Hides the password of a URL such as `postgres://user:secret@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_embedded_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://holdq-data/holdq.db");
        assert_eq!(c.limits.upload_bytes, ByteSize(256 << 20));
        assert_eq!(c.platforms.len(), 1);
        assert_eq!(c.passmark.threshold, 1.0);
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() {
        let file: FileConfig = toml::from_str("listen = \"127.0.0.1:1\"").unwrap();
        let env = |k: &str| (k == "HOLDQ_LISTEN").then(|| "127.0.0.1:2".to_owned());
        let c = Config::from_parts(file, env, &Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 2);
        let flags = Overrides {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let file: FileConfig = toml::from_str("listen = \"127.0.0.1:1\"").unwrap();
        let c = Config::from_parts(file, env, &flags).unwrap();
        assert_eq!(c.listen.port(), 3);
    }

    #[test]
    fn sizes_and_platforms_parse() {
        let c = Config::from_toml(
            "[limits]\nupload_bytes = \"1GiB\"\n[[platform]]\nname = \"linux-aarch64\"\ntimeout = \"90s\"\nmemory = \"512MiB\"\n",
        )
        .unwrap();
        assert_eq!(c.limits.upload_bytes, ByteSize(1 << 30));
        assert_eq!(c.platforms[0].timeout, Duration::from_secs(90));
        assert_eq!(c.platforms[0].memory.to_string(), "512MiB");
    }

    #[test]
    fn platform_disk_mounts_and_sandbox_parse() {
        let c = Config::from_toml(
            "[sandbox]\nallow_own_uid = true\n[[platform]]\nname = \"linux-x86_64\"\ndisk = \"1GiB\"\nmounts = [\"/opt/rust\"]\nenv = [\"PATH\", \"RUSTUP_TOOLCHAIN=stable\"]\n",
        )
        .unwrap();
        assert!(c.sandbox.allow_own_uid);
        assert_eq!(c.platforms[0].disk, ByteSize(1 << 30));
        assert_eq!(c.platforms[0].mounts, vec![PathBuf::from("/opt/rust")]);
        let d = Config::from_toml("").unwrap();
        assert_eq!(d.platforms[0].disk, ByteSize(8 << 30), "8 GiB by default");
        assert!(!d.sandbox.allow_own_uid);
        assert!(Config::from_toml("[[platform]]\nname = \"a\"\ndisk = \"1kB\"").is_err());
    }

    #[test]
    fn bad_values_are_refused_at_start_up() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        assert!(Config::from_toml("[limits]\nupload_bytes = \"lots\"").is_err());
        assert!(Config::from_toml("[passmark]\nthreshold = 1.5").is_err());
        assert!(Config::from_toml("database_url = \"mysql://x\"").is_err());
        assert!(Config::from_toml("[[platform]]\nname=\"a\"\n[[platform]]\nname=\"a\"").is_err());
    }

    #[test]
    fn server_and_storage_keys_parse_with_defaults() {
        let d = Config::from_toml("").unwrap();
        assert_eq!(d.server.body_timeout, Duration::from_secs(60));
        assert_eq!(d.server.uploads_per_user, 4);
        assert_eq!(d.storage.reserve, ByteSize(1 << 30));
        let c = Config::from_toml(
            "[server]\nbody_timeout = \"2s\"\nuploads_per_user = 2\nmax_connections = 10\n[storage]\nreserve = \"64MiB\"\n[worker]\ntoken_file = \"/etc/holdq/token\"\n",
        )
        .unwrap();
        assert_eq!(c.server.body_timeout, Duration::from_secs(2));
        assert_eq!(c.server.max_connections, 10);
        assert_eq!(c.storage.reserve, ByteSize(64 << 20));
        assert_eq!(c.worker.token_file, Some(PathBuf::from("/etc/holdq/token")));
        assert!(Config::from_toml("[server]\nuploads_per_user = 0").is_err());
        assert!(Config::from_toml("[storage]\nreserve = \"lots\"").is_err());
    }

    #[test]
    fn database_url_file_wins_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "postgres://holdq:hunter2@db/holdq\n").unwrap();
        let flags = Overrides {
            database_url_file: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::from_parts(FileConfig::default(), |_| None, &flags).unwrap();
        assert_eq!(c.database_url, "postgres://holdq:hunter2@db/holdq");
        std::fs::write(&path, "\n").unwrap();
        let e = Config::from_parts(FileConfig::default(), |_| None, &flags).unwrap_err();
        assert!(format!("{e:#}").contains("is empty"), "{e:#}");
    }

    #[test]
    fn debug_hides_passwords() {
        let c = Config::from_toml("database_url = \"postgres://holdq:hunter2@db/holdq\"").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://holdq:***@db/holdq"));
    }
}
