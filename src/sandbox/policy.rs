//! What checks may see and who they run as, decided once at start-up from
//! the configuration (SPEC section 4, "Containment"): the paths hidden
//! whatever the config says, the platforms' `mounts` checked against them,
//! the sockets found in mounts, the identity checks run under and the disk
//! mechanism. `holdq sandbox doctor` prints the same decisions.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The system's program directories, visible read-only to every check
/// (those that exist; a symlink such as `/bin -> usr/bin` stays a symlink).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Host paths no check sees and no `mounts` entry may contain or lie in,
/// besides the server's own files.
/// Home directories are not listed: a toolchain under one (`/root/.rustup`)
/// may be named; the home itself is never shown unless named.
const NEVER_VISIBLE: &[&str] = &[
    "/run", "/var/run", "/var/lib", "/srv", "/proc", "/sys", "/dev",
];

/// Entries of `/etc` left out of a check's `/etc` whatever their mode.
pub const ETC_SECRETS: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "ssh",
    "sudoers",
    "sudoers.d",
    "subuid",
    "subgid",
    "security",
    "ssl/private",
];

/// Who a check's command runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// The server runs as root: the sandbox makes its namespaces and mounts
    /// privileged, then drops to host uid/gid `base + its pid`, which no
    /// account and no file outside the check's directory has.
    DropFromRoot { base: u32 },
    /// The server runs as an ordinary account with a subordinate uid and
    /// gid range (`/etc/subuid`, `/etc/subgid`, `newuidmap`): the command
    /// runs as one uid of that range.
    Subordinate {
        uid_start: u32,
        gid_start: u32,
        count: u32,
    },
    /// `sandbox.allow_own_uid`: the command runs as the server's account.
    OwnUid,
    /// None of the above is possible: checks are refused.
    Refused(String),
}

/// How a check's writes are bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskMechanism {
    /// A sparse ext4 image per check, loop-mounted on its directory (root).
    Loop,
    /// A watchdog measures the check's directory and kills it past the limit.
    Watchdog,
}

/// The decisions, shared by every run.
#[derive(Clone, Debug)]
pub struct Containment {
    pub identity: Identity,
    pub disk: DiskMechanism,
    /// Never visible: the data directory, config file, database, token files.
    pub hidden: Vec<PathBuf>,
    /// Sockets found in the platforms' mounts at start-up: left out of
    /// every check's view, and reported.
    pub sockets: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

impl Containment {
    /// Checks the config's mounts and decides identity and disk mechanism;
    /// a mount that exposes what must stay hidden is an error.
    pub fn for_config(config: &Config) -> anyhow::Result<Self> {
        let hidden = hidden_paths(config);
        let mut warnings = Vec::new();
        let mut sockets = Vec::new();
        for platform in &config.platforms {
            for mount in &platform.mounts {
                let real = check_mount(mount, &hidden)
                    .with_context(|| format!("platform {}: mounts", platform.name))?;
                for socket in find_sockets(&real) {
                    warnings.push(format!(
                        "platform {}: mount {} holds the socket {}; it is left out of checks, and a socket made there later would be reachable if its mode lets the check's uid write it",
                        platform.name,
                        real.display(),
                        socket.display()
                    ));
                    sockets.push(socket);
                }
            }
        }
        let identity = decide_identity(
            &Host::probe(),
            config.sandbox.allow_own_uid,
            config.sandbox.uid_base,
        );
        if identity == Identity::OwnUid {
            warnings.push(
                "sandbox.allow_own_uid: checks run as the server's own account and can read every file it can read".into(),
            );
        }
        let disk = if nix::unistd::geteuid().is_root()
            && Path::new("/dev/loop-control").exists()
            && find_program("mkfs.ext4").is_some()
        {
            DiskMechanism::Loop
        } else {
            DiskMechanism::Watchdog
        };
        Ok(Self {
            identity,
            disk,
            hidden,
            sockets,
            warnings,
        })
    }

    /// A containment for tests of the sandbox alone: as this process can.
    pub fn probe() -> Self {
        let identity = decide_identity(&Host::probe(), false, 2_000_000_000);
        Self {
            identity,
            disk: DiskMechanism::Watchdog,
            hidden: Vec::new(),
            sockets: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Why checks cannot run here, if they cannot.
    pub fn refusal(&self) -> Option<&str> {
        match &self.identity {
            Identity::Refused(why) => Some(why),
            _ => None,
        }
    }
}

/// The server's own files: never visible to a check.
fn hidden_paths(config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config.data_dir.clone()];
    if let Some(file) = &config.config_file {
        paths.push(file.clone());
    }
    if let Some(db) = config
        .database_url
        .strip_prefix("sqlite://")
        .or_else(|| config.database_url.strip_prefix("sqlite:"))
    {
        let db = db.split('?').next().unwrap_or(db);
        if !db.is_empty() && db != ":memory:" {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                paths.push(PathBuf::from(format!("{db}{suffix}")));
            }
        }
    }
    if let Some(token) = std::env::var_os("HOLDQ_CLIENT_CONFIG") {
        paths.push(PathBuf::from(token));
    }
    for base in [
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")),
    ]
    .into_iter()
    .flatten()
    {
        paths.push(base.join("holdq"));
    }
    if let Some(dir) = &config.mail.templates_dir {
        paths.push(dir.clone());
    }
    paths
        .into_iter()
        .map(|p| absolute(&p))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `path` made absolute, with symlinks resolved as far as it exists.
pub fn absolute(path: &Path) -> PathBuf {
    let path = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    if let Ok(real) = fs::canonicalize(&path) {
        return real;
    }
    // Resolve the longest existing ancestor, keep the rest as written.
    let mut rest = Vec::new();
    let mut cur = path.as_path();
    while let Some(parent) = cur.parent() {
        rest.push(cur.file_name().map(PathBuf::from).unwrap_or_default());
        if let Ok(real) = fs::canonicalize(parent) {
            return rest.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        cur = parent;
    }
    path
}

/// A `mounts` entry, canonicalised, or why it may not be mounted.
pub fn check_mount(mount: &Path, hidden: &[PathBuf]) -> anyhow::Result<PathBuf> {
    if !mount.is_absolute() {
        bail!("{} is not an absolute path", mount.display());
    }
    let real = fs::canonicalize(mount)
        .with_context(|| format!("{} cannot be mounted", mount.display()))?;
    let never = NEVER_VISIBLE.iter().map(PathBuf::from);
    for forbidden in hidden.iter().cloned().chain(never) {
        let forbidden_real = absolute(&forbidden);
        for f in [&forbidden, &forbidden_real] {
            if real.starts_with(f) || f.starts_with(&real) {
                bail!(
                    "{} (that is {}) would show {} to checks, which no check may see; name a directory that neither holds it nor lies in it",
                    mount.display(),
                    real.display(),
                    f.display()
                );
            }
        }
    }
    Ok(real)
}

/// Every socket under `dir` (not following symlinks, not crossing into
/// other filesystems' special trees).
pub fn find_sockets(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_socket() {
                found.push(entry.path());
            } else if kind.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// Sockets in the system directories every check sees (rare; a search of
/// `/usr` takes a second or two, so it runs beside start-up, not in it).
pub fn default_sockets() -> Vec<PathBuf> {
    SYSTEM_DIRS
        .iter()
        .map(Path::new)
        .filter(|d| d.is_dir() && !d.is_symlink())
        .flat_map(find_sockets)
        .collect()
}

/// Logs each socket of [`default_sockets`]: a check can connect to it if
/// its mode lets any uid write it.
pub fn warn_default_sockets() {
    for socket in default_sockets() {
        tracing::warn!(
            socket = %socket.display(),
            "a socket in a directory every check sees; a check can connect to it if its mode lets any uid write it"
        );
    }
}

/// `name` on the usual program path.
pub fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// What the host offers for an identity.
#[derive(Debug, Default)]
pub struct Host {
    pub root: bool,
    /// This account's subordinate uid and gid ranges: (uid start, gid start, count).
    pub subordinate: Option<(u32, u32, u32)>,
    pub newuidmap: bool,
    pub user: String,
}

impl Host {
    pub fn probe() -> Self {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        let range = |file: &str| {
            fs::read_to_string(file)
                .ok()
                .and_then(|text| subordinate_range(&text, &user, uid.as_raw()))
        };
        let subordinate = match (range("/etc/subuid"), range("/etc/subgid")) {
            (Some((u, n)), Some((g, m))) => Some((u, g, n.min(m))),
            _ => None,
        };
        Self {
            root: uid.is_root(),
            subordinate,
            newuidmap: find_program("newuidmap").is_some() && find_program("newgidmap").is_some(),
            user,
        }
    }
}

/// The first `start:count` line of `/etc/subuid` text for `user` (by name or uid).
pub fn subordinate_range(text: &str, user: &str, uid: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let who = parts.next()?;
        if who != user && who != uid.to_string() {
            return None;
        }
        let start = parts.next()?.parse().ok()?;
        let count: u32 = parts.next()?.parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

/// The identity checks run under on `host`.
pub fn decide_identity(host: &Host, allow_own_uid: bool, base: u32) -> Identity {
    if host.root {
        return Identity::DropFromRoot { base };
    }
    if let (Some((uid_start, gid_start, count)), true) = (host.subordinate, host.newuidmap) {
        return Identity::Subordinate {
            uid_start,
            gid_start,
            count,
        };
    }
    if allow_own_uid {
        return Identity::OwnUid;
    }
    let missing = match (host.subordinate.is_some(), host.newuidmap) {
        (false, false) => "no subordinate uid range and no newuidmap",
        (false, true) => "no subordinate uid/gid range in /etc/subuid and /etc/subgid",
        _ => "no newuidmap/newgidmap (Debian package uidmap)",
    };
    Identity::Refused(format!(
        "checks would run as the server's own account {:?}, which can read everything the server can: {missing} for it. Run holdq as root, or give {:?} a range (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}) and install uidmap, or set sandbox.allow_own_uid = true on a machine holding nothing to protect",
        host.user, host.user, host.user
    ))
}

/// A size as the summary says it: `8 GiB`.
pub fn human_size(bytes: u64) -> String {
    let shown = crate::config::ByteSize(bytes).to_string();
    match shown.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => format!("{} {}", &shown[..i], &shown[i..]),
        None => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_holding_or_inside_a_hidden_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("srv-data");
        let tool = dir.path().join("tool");
        fs::create_dir_all(data.join("blobs")).unwrap();
        fs::create_dir_all(&tool).unwrap();
        let hidden = vec![data.clone()];
        assert!(check_mount(dir.path(), &hidden).is_err(), "an ancestor");
        assert!(
            check_mount(&data.join("blobs"), &hidden).is_err(),
            "a descendant"
        );
        assert!(check_mount(&data, &hidden).is_err(), "the path itself");
        assert_eq!(
            check_mount(&tool, &hidden).unwrap(),
            fs::canonicalize(&tool).unwrap()
        );
        assert!(check_mount(Path::new("/"), &hidden).is_err());
        assert!(check_mount(Path::new("/run"), &hidden).is_err());
        assert!(check_mount(Path::new("relative"), &hidden).is_err());
    }

    #[test]
    fn a_symlink_to_a_hidden_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(check_mount(&link, &[data]).is_err());
    }

    #[test]
    fn identity_prefers_root_then_a_subordinate_range_and_refuses_the_own_uid_unless_allowed() {
        let root = Host {
            root: true,
            ..Host::default()
        };
        assert_eq!(
            decide_identity(&root, false, 7),
            Identity::DropFromRoot { base: 7 }
        );
        let ranged = Host {
            subordinate: Some((100_000, 100_000, 65_536)),
            newuidmap: true,
            user: "holdq".into(),
            ..Host::default()
        };
        assert!(matches!(
            decide_identity(&ranged, false, 7),
            Identity::Subordinate {
                uid_start: 100_000,
                ..
            }
        ));
        let bare = Host {
            user: "holdq".into(),
            newuidmap: true,
            ..Host::default()
        };
        let Identity::Refused(why) = decide_identity(&bare, false, 7) else {
            panic!("must refuse");
        };
        assert!(why.contains("/etc/subuid"), "{why}");
        assert_eq!(decide_identity(&bare, true, 7), Identity::OwnUid);
    }

    #[test]
    fn subordinate_ranges_are_read_by_name_or_uid() {
        let text = "other:1:2\nholdq:100000:65536\n";
        assert_eq!(subordinate_range(text, "holdq", 5), Some((100_000, 65_536)));
        assert_eq!(subordinate_range("1000:7:9\n", "x", 1000), Some((7, 9)));
        assert_eq!(subordinate_range(text, "nobody", 5), None);
    }

    #[test]
    fn sizes_read_as_the_summary_says_them() {
        assert_eq!(human_size(8 << 30), "8 GiB");
        assert_eq!(human_size(64 << 20), "64 MiB");
    }
}
