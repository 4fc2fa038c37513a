//! The inside of the sandbox: `holdq __sandbox`, a hidden subcommand the
//! worker spawns (a fresh single-threaded process, so the namespace set-up
//! never forks a multi-threaded server). It confines itself to a cgroup when
//! the host allows, then runs the command in a hakoniwa container: new
//! user, mount, PID and network namespaces; the host's filesystem visible
//! read-only; a fresh `/tmp` and `/dev`; only the check's own directory
//! writable; resource limits set. Its exit status is the command's.

use std::fs;
use std::path::{Path, PathBuf};

use hakoniwa::{Container, Namespace, Rlimit, Runctl};

/// What `holdq __sandbox` is asked to run.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The only directory the command may write to.
    #[arg(long)]
    pub rw: PathBuf,
    /// Working directory of the command.
    #[arg(long)]
    pub cwd: PathBuf,
    /// Address-space limit per process, in bytes.
    #[arg(long)]
    pub memory: u64,
    /// Most processes at once.
    #[arg(long)]
    pub pids: u64,
    /// `KEY=VALUE` passed into the command's environment.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// The shell command line.
    #[arg(long)]
    pub command: String,
    /// The worker's pid: the sandbox dies with it (a worker killed with
    /// SIGKILL leaves no build running).
    #[arg(long)]
    pub parent: Option<i32>,
}

/// Exit status when the sandbox itself could not be set up.
pub const SETUP_FAILED: i32 = 125;

/// Host directories never bound into the container: kernel interfaces get
/// fresh instances, and `/tmp` is private.
const NOT_BOUND: &[&str] = &["/proc", "/dev", "/sys", "/tmp", "/run", "/var/run"];

/// Runs the command; returns the exit status to exit with.
pub fn exec(args: ExecArgs) -> i32 {
    // Die with the worker; hakoniwa does the same for the container's init,
    // whose death takes its PID namespace with it.
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
        eprintln!("holdq sandbox: cannot tie this process to its worker's life");
        return SETUP_FAILED;
    }
    if let Some(parent) = args.parent
        && nix::unistd::getppid().as_raw() != parent
    {
        // The worker died before the tie was made.
        return SETUP_FAILED;
    }
    let cgroup = Cgroup::enter(args.pids, args.memory);
    let status = match run(&args) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("holdq sandbox: {e}");
            SETUP_FAILED
        }
    };
    if let Some(cgroup) = cgroup {
        cgroup.leave();
    }
    status
}

fn run(args: &ExecArgs) -> Result<i32, String> {
    let mut container = Container::new();
    container
        .unshare(Namespace::Network)
        .unshare(Namespace::Uts);
    container.runctl(Runctl::MountFallback);
    for entry in fs::read_dir("/").map_err(|e| format!("cannot list /: {e}"))? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let shown = path.to_string_lossy().into_owned();
        if NOT_BOUND.contains(&shown.as_str()) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            if let Ok(target) = fs::read_link(&path) {
                container.symlink(&target.to_string_lossy(), &shown);
            }
        } else if kind.is_dir() {
            container.bindmount_ro(&shown, &shown);
        }
    }
    container.tmpfsmount("/tmp").devfsmount("/dev");
    let rw = absolute(&args.rw)?;
    container.bindmount_rw(&rw, &rw);
    container.setrlimit(Rlimit::As, args.memory, args.memory);
    container.setrlimit(Rlimit::Nproc, args.pids, args.pids);
    container.setrlimit(Rlimit::Core, 0, 0);

    let mut command = container.command("/bin/sh");
    command
        .arg("-c")
        .arg(&args.command)
        .current_dir(absolute(&args.cwd)?);
    for pair in &args.env {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
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

fn absolute(path: &Path) -> Result<String, String> {
    fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A cgroup (v1 `pids` and `memory` controllers) holding the sandbox, made
/// when the host lets us: the process limit then holds even for root, which
/// `RLIMIT_NPROC` does not bind.
struct Cgroup {
    dirs: Vec<PathBuf>,
}

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
