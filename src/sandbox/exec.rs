//! The outside of the sandbox: `holdq __sandbox`, a hidden subcommand the
//! worker spawns (a fresh single-threaded process, so the namespace set-up
//! never forks a multi-threaded server). It reads what to run from its
//! standard input (so no value of the check's environment is on a command
//! line), confines itself to a cgroup when the host allows, and runs the
//! command in a hakoniwa container: new mount, PID, network, IPC and UTS
//! namespaces (and a user namespace unless it runs as root); a root
//! holding only an allow-list (see [`view`]); only the check's directory
//! writable, its `/tmp` inside it. The container runs [`super::inner`],
//! which drops to the check's identity. Its exit status is the command's.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use hakoniwa::{Container, MountOptions, Namespace, Rlimit, Runctl, Stdio};
use serde::{Deserialize, Serialize};

use super::policy::{ETC_SECRETS, Identity, SYSTEM_DIRS};

/// `holdq __sandbox` takes no arguments: its [`ExecSpec`] comes on stdin.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {}

/// What the worker asks the sandbox to run (JSON on its stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The only directory the command may write to.
    pub rw: PathBuf,
    /// Mounted on `/tmp`; inside `rw`, so the disk limit covers it.
    pub tmp: PathBuf,
    pub cwd: PathBuf,
    pub command: String,
    pub env: Vec<(String, String)>,
    /// Address-space limit per process, in bytes.
    pub memory: u64,
    /// Most processes at once.
    pub pids: u64,
    /// Extra read-only host paths (a platform's `mounts`, canonical).
    pub mounts: Vec<PathBuf>,
    /// Paths left out of every view, whatever contains them.
    pub hidden: Vec<PathBuf>,
    pub identity: Identity,
    /// Where the container's root is assembled (`run-PID` under it).
    pub state_dir: PathBuf,
    /// The worker's pid: the sandbox dies with it (a worker killed with
    /// SIGKILL leaves no build running).
    pub parent: i32,
    /// Run nothing: give the directory back to the server's account after
    /// a run that was killed before it could.
    #[serde(default)]
    pub reclaim: bool,
}

/// Exit status when the sandbox itself could not be set up.
pub const SETUP_FAILED: i32 = 125;

/// Where the `holdq` executable is bound inside the container.
pub const INNER_EXE: &str = "/.holdq/holdq";

/// Runs the command; returns the exit status to exit with.
pub fn exec(_args: ExecArgs) -> i32 {
    // Die with the worker; hakoniwa does the same for the container's init,
    // whose death takes its PID namespace with it.
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
        eprintln!("holdq sandbox: cannot tie this process to its worker's life");
        return SETUP_FAILED;
    }
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("holdq sandbox: cannot read the run's description: {e}");
        return SETUP_FAILED;
    }
    let spec: ExecSpec = match serde_json::from_str(&input) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("holdq sandbox: bad run description: {e}");
            return SETUP_FAILED;
        }
    };
    if nix::unistd::getppid().as_raw() != spec.parent {
        // The worker died before the tie was made.
        return SETUP_FAILED;
    }
    let cgroup = Cgroup::enter(spec.pids, spec.memory);
    let root = spec.state_dir.join(format!("run-{}", std::process::id()));
    let status = match run(&spec, &root) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("holdq sandbox: {e}");
            SETUP_FAILED
        }
    };
    let _ = fs::remove_dir_all(&root);
    if let Some(cgroup) = cgroup {
        cgroup.leave();
    }
    status
}

/// The uid and gid the command runs as: as root, host ids that no account
/// has; with a subordinate range, one of its ids, mapped to itself so the
/// number is the same inside and out; with the own uid, the namespace's 0.
fn ids(identity: &Identity) -> Result<(u32, u32), String> {
    let pid = std::process::id();
    match identity {
        Identity::DropFromRoot { base } => {
            let id = base
                .checked_add(pid)
                .ok_or("sandbox.uid_base + pid overflows")?;
            Ok((id, id))
        }
        Identity::Subordinate {
            uid_start,
            gid_start,
            count,
        } => {
            let pick = pid % (*count).max(1);
            Ok((uid_start + pick, gid_start + pick))
        }
        Identity::OwnUid => Ok((0, 0)),
        Identity::Refused(why) => Err(why.clone()),
    }
}

fn run(spec: &ExecSpec, root: &Path) -> Result<i32, String> {
    let (uid, gid) = ids(&spec.identity)?;
    fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let mut container = container_for(&spec.identity)?;
    container.rootdir(root);
    view::system(&mut container, &spec.hidden);
    view::etc(&mut container, &spec.hidden, uid, gid);
    for mount in &spec.mounts {
        view::tree(&mut container, mount, &spec.hidden);
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find holdq: {e}"))?;
    container.bindmount_ro(&exe.to_string_lossy(), INNER_EXE);
    container.devfsmount("/dev");
    // Shared memory for semaphores and the like, writable by the check.
    container.mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MountOptions::NOSUID | MountOptions::NODEV,
        Some("mode=1777,size=64m".into()),
    );
    let rw = absolute(&spec.rw)?;
    container.bindmount_rw(&rw, super::CHECK_DIR);
    container.bindmount_rw(&absolute(&spec.tmp)?, "/tmp");
    container.hostname("holdq-check");
    container.setrlimit(Rlimit::As, spec.memory, spec.memory);
    container.setrlimit(Rlimit::Nproc, spec.pids, spec.pids);
    container.setrlimit(Rlimit::Core, 0, 0);

    let mut command = container.command(INNER_EXE);
    command
        .arg("__sandbox-init")
        .arg("--uid")
        .arg(&uid.to_string())
        .arg("--gid")
        .arg(&gid.to_string())
        .arg("--rw")
        .arg(super::CHECK_DIR)
        .arg("--cwd")
        .arg(&super::inside(Path::new(&rw), Path::new(&absolute(&spec.cwd)?)).to_string_lossy())
        .arg("--command")
        .arg(&spec.command)
        .stdin(Stdio::from(
            fs::File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?,
        ))
        .current_dir("/");
    if spec.identity == Identity::OwnUid {
        command.arg("--no-drop");
    }
    if spec.reclaim {
        command.arg("--reclaim");
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot start the command: {e}"))?;
    if status.exit_code.is_none() {
        // Killed by a signal, or the container failed: say which.
        eprintln!("holdq sandbox: {}", status.reason);
    }
    Ok(status.exit_code.unwrap_or(status.code))
}

/// The namespaces and id maps of an identity.
fn container_for(identity: &Identity) -> Result<Container, String> {
    let mut container = match identity {
        Identity::DropFromRoot { .. } => {
            // Root needs no user namespace: its mounts are privileged (a
            // toolchain under a 0700 home can be bound), and the command
            // gets a real host uid that owns nothing.
            let mut c = Container::empty();
            c.unshare(Namespace::Mount)
                .unshare(Namespace::Pid)
                .procfsmount("/proc");
            c
        }
        Identity::Subordinate {
            uid_start,
            gid_start,
            count,
        } => {
            // The namespace's root is the server's account (it assembles
            // the view); the command's id is the subordinate one.
            let mut c = Container::new();
            let me = nix::unistd::getuid().as_raw();
            let my_gid = nix::unistd::getgid().as_raw();
            // The whole range is mapped, so the namespace's root may also
            // take back what an earlier, killed run left under another id.
            c.uidmaps(&[(0, me, 1), (*uid_start, *uid_start, *count)]);
            c.gidmaps(&[(0, my_gid, 1), (*gid_start, *gid_start, *count)]);
            c.runctl(Runctl::MountFallback);
            c
        }
        Identity::OwnUid => {
            let mut c = Container::new();
            c.uidmap(0).gidmap(0).runctl(Runctl::MountFallback);
            c
        }
        Identity::Refused(why) => return Err(why.clone()),
    };
    container
        .unshare(Namespace::Network)
        .unshare(Namespace::Uts)
        .unshare(Namespace::Ipc);
    Ok(container)
}

fn absolute(path: &Path) -> Result<String, String> {
    fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What a check's filesystem holds, built from an allow-list rather than
/// by masking a view of the host.
mod view {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use hakoniwa::{Container, MountOptions};

    use super::{ETC_SECRETS, SYSTEM_DIRS};

    /// `/usr`, `/bin`, `/lib*`...: those that exist, symlinks kept.
    pub fn system(container: &mut Container, hidden: &[PathBuf]) {
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = fs::read_link(path) {
                        container.symlink(&target.to_string_lossy(), dir);
                    }
                }
                Ok(meta) if meta.is_dir() => tree(container, path, hidden),
                _ => {}
            }
        }
    }

    /// `/etc` as a fresh tmpfs holding one read-only bind per entry that
    /// is world-readable and not a secret, and a `passwd`/`group` naming
    /// the check's own account.
    pub fn etc(container: &mut Container, hidden: &[PathBuf], uid: u32, gid: u32) {
        container.mount(
            "tmpfs",
            "/etc",
            "tmpfs",
            MountOptions::NOSUID | MountOptions::NODEV,
            Some("mode=0755,size=4m".into()),
        );
        let mut skip: Vec<PathBuf> = hidden.to_vec();
        skip.extend(ETC_SECRETS.iter().map(|s| Path::new("/etc").join(s)));
        skip.push("/etc/passwd".into());
        skip.push("/etc/group".into());
        children(container, Path::new("/etc"), &skip, true);
        let account = |file: &str, line: String| {
            let mut text = fs::read_to_string(file).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            text
        };
        if uid != 0 {
            container.file(
                "/etc/passwd",
                &account(
                    "/etc/passwd",
                    format!("holdq-check:x:{uid}:{gid}:holdq check:/nonexistent:/bin/sh\n"),
                ),
            );
            container.file(
                "/etc/group",
                &account("/etc/group", format!("holdq-check:x:{gid}:\n")),
            );
        } else {
            for file in ["/etc/passwd", "/etc/group"] {
                container.file(file, &fs::read_to_string(file).unwrap_or_default());
            }
        }
    }

    /// Binds `dir` read-only, or, when something to leave out lies inside
    /// it, its children one by one.
    pub fn tree(container: &mut Container, dir: &Path, skip: &[PathBuf]) {
        if skip.iter().any(|s| s.starts_with(dir) && s != dir) {
            children(container, dir, skip, false);
        } else if !skip.iter().any(|s| s == dir) {
            let shown = dir.to_string_lossy();
            container.bindmount_ro(&shown, &shown);
        }
    }

    /// One bind or symlink per child of `dir`, except those to skip;
    /// with `public_only`, those not readable by everyone are left out too.
    fn children(container: &mut Container, dir: &Path, skip: &[PathBuf], public_only: bool) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip.contains(&path) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let shown = path.to_string_lossy().into_owned();
            let kind = meta.file_type();
            let mode = meta.permissions().mode();
            if kind.is_symlink() {
                if let Ok(target) = fs::read_link(&path) {
                    container.symlink(&target.to_string_lossy(), &shown);
                }
                continue;
            }
            let public = if kind.is_dir() {
                mode & 0o005 == 0o005
            } else {
                mode & 0o004 == 0o004
            };
            if public_only && !public {
                continue;
            }
            if kind.is_dir() {
                if skip.iter().any(|s| s.starts_with(&path)) {
                    children(container, &path, skip, public_only);
                } else {
                    container.bindmount_ro(&shown, &shown);
                }
            } else if kind.is_file() {
                container.bindmount_ro(&shown, &shown);
            }
            // Sockets, fifos and devices are never bound.
        }
    }
}

/// A cgroup (v1 `pids` and `memory` controllers) holding the sandbox, made
/// when the host lets us: the process limit then holds even for root, which
/// `RLIMIT_NPROC` does not bind. Named `holdq-PID`; a worker's start-up
/// sweep removes those of sandboxes that died without leaving.
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

/// The cgroup controllers a sandbox uses.
pub const CGROUP_CONTROLLERS: &[&str] = &["pids", "memory"];

impl Cgroup {
    fn enter(pids: u64, memory: u64) -> Option<Self> {
        let name = format!("holdq-{}", std::process::id());
        let me = std::process::id().to_string();
        let mut dirs = Vec::new();
        for (controller, file, value) in [
            ("pids", "pids.max", pids.to_string()),
            ("memory", "memory.limit_in_bytes", memory.to_string()),
        ] {
            let dir = Path::new("/sys/fs/cgroup").join(controller).join(&name);
            if fs::create_dir(&dir).is_err() {
                continue;
            }
            if fs::write(dir.join(file), &value).is_ok()
                && fs::write(dir.join("cgroup.procs"), &me).is_ok()
            {
                dirs.push(dir);
            } else {
                let _ = fs::remove_dir(&dir);
            }
        }
        (!dirs.is_empty()).then_some(Self { dirs })
    }

    /// Removes the cgroups of the sandbox `pid`, once it is dead.
    pub fn remove_of(pid: i32) {
        for controller in CGROUP_CONTROLLERS {
            let dir = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(format!("holdq-{pid}"));
            let _ = fs::remove_dir(dir);
        }
    }

    /// Moves back to the parent cgroup and removes ours.
    fn leave(self) {
        let me = std::process::id().to_string();
        for dir in self.dirs {
            if let Some(parent) = dir.parent() {
                let _ = fs::write(parent.join("cgroup.procs"), &me);
            }
            let _ = fs::remove_dir(&dir);
        }
    }
}
