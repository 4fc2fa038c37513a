//! The inside of the sandbox, in two steps run by the `holdq` executable
//! bound into the container.
//!
//! `__sandbox-init` runs privileged inside the namespaces: it hands the
//! check's directory to the check's uid, starts `__sandbox-drop` under that
//! uid and gid (no supplementary groups, no capabilities left), waits for
//! it, kills whatever the command left running, and gives the directory
//! back to the server's account so the server can read and remove it.
//!
//! `__sandbox-drop` is the first program that runs as the check's uid: it
//! ties itself to its parent's life again (`setuid` cleared the tie),
//! refuses to go on if any capability survived, and execs the command.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid};

use super::exec::{INNER_EXE, SETUP_FAILED};

/// `holdq __sandbox-init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    pub uid: u32,
    #[arg(long)]
    pub gid: u32,
    /// The check's directory, handed to the uid for the run.
    #[arg(long)]
    pub rw: PathBuf,
    #[arg(long)]
    pub cwd: PathBuf,
    #[arg(long)]
    pub command: String,
    /// Run as the server's own account (`sandbox.allow_own_uid`).
    #[arg(long)]
    pub no_drop: bool,
    /// Only give the directory back to the server's account.
    #[arg(long)]
    pub reclaim: bool,
}

/// `holdq __sandbox-drop`.
#[derive(Debug, Clone, clap::Args)]
pub struct DropArgs {
    /// The pid of `__sandbox-init`, which must still be alive.
    #[arg(long)]
    pub parent: i32,
    #[arg(long)]
    pub cwd: PathBuf,
    #[arg(long)]
    pub command: String,
}

/// Runs the command as the check's identity; returns its exit status.
pub fn init(args: InitArgs) -> i32 {
    if args.reclaim {
        return match chown_tree(&args.rw, 0, 0) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("holdq sandbox: cannot take the check's directory back: {e}");
                SETUP_FAILED
            }
        };
    }
    let drop = !args.no_drop;
    if drop && let Err(e) = chown_tree(&args.rw, args.uid, args.gid) {
        eprintln!("holdq sandbox: cannot hand the check's directory over: {e}");
        return SETUP_FAILED;
    }
    let mut command = std::process::Command::new(INNER_EXE);
    command
        .arg("__sandbox-drop")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--cwd")
        .arg(&args.cwd)
        .arg("--command")
        .arg(&args.command);
    if drop {
        // std drops the supplementary groups, then sets gid and uid; with
        // no uid 0 left, the kernel clears every capability.
        command.uid(args.uid).gid(args.gid);
    }
    let status = match command.status() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("holdq sandbox: cannot start the command: {e}");
            SETUP_FAILED
        }
    };
    kill_the_rest();
    if drop && let Err(e) = chown_tree(&args.rw, 0, 0) {
        eprintln!("holdq sandbox: cannot take the check's directory back: {e}");
        return SETUP_FAILED;
    }
    status
}

/// Becomes the command, as the check's identity.
pub fn drop_to_command(args: DropArgs) -> i32 {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || nix::unistd::getppid().as_raw() != args.parent
    {
        eprintln!("holdq sandbox: cannot tie the command to its sandbox");
        return SETUP_FAILED;
    }
    if nix::sys::prctl::set_no_new_privs().is_err() {
        eprintln!("holdq sandbox: cannot set no_new_privs");
        return SETUP_FAILED;
    }
    if !Uid::current().is_root() {
        match capabilities_left() {
            Ok(None) => {}
            Ok(Some(left)) => {
                eprintln!(
                    "holdq sandbox: capabilities survived the drop ({left}); refusing to run"
                );
                return SETUP_FAILED;
            }
            Err(e) => {
                eprintln!("holdq sandbox: cannot read this process's capabilities: {e}");
                return SETUP_FAILED;
            }
        }
    }
    let e = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&args.command)
        .current_dir(&args.cwd)
        .exec();
    eprintln!("holdq sandbox: cannot run /bin/sh: {e}");
    SETUP_FAILED
}

/// The first non-empty capability set of this process, if any.
fn capabilities_left() -> std::io::Result<Option<String>> {
    let status = fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .filter(|l| {
            ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|v| !v.trim_start_matches('0').is_empty())
        })
        .map(str::to_owned))
}

/// Kills every process left in this PID namespace but init and us: what
/// the command left behind, so nothing writes while the directory is
/// taken back.
fn kill_the_rest() {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let me = std::process::id().to_string();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let others = fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && n != "1" && *n != me)
                    .count()
            })
            .unwrap_or(0);
        if others == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Gives `dir` and everything in it to `uid`:`gid`, symlinks themselves
/// rather than what they point to.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        nix::unistd::fchownat(
            None,
            &path,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}
