//! Running a check's command in isolation (SPEC section 4): a fresh
//! directory, its own process group and PID namespace, a time limit, a
//! memory limit, a process limit, a disk limit, no network, write access
//! only to its own directory, an allow-listed view of the host and an
//! identity that owns nothing ([`policy`]). The output is kept, capped,
//! tail first. A halted or timed-out run kills its whole process tree.
//!
//! The worker spawns `holdq __sandbox` (see [`exec`]) as a new process
//! group; killing that group kills the container's init, and with it every
//! process in the container's PID namespace.

pub mod disk;
pub mod doctor;
pub mod exec;
pub mod inner;
pub mod policy;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use policy::{Containment, DiskMechanism};

/// Where a check's directory is mounted inside its sandbox: its host path
/// (under the data directory) is not shown.
pub const CHECK_DIR: &str = "/check";

/// `path`, inside the check directory `root`, as the command sees it.
pub fn inside(root: &std::path::Path, path: &std::path::Path) -> PathBuf {
    match path.strip_prefix(root) {
        Ok(rest) => std::path::Path::new(CHECK_DIR).join(rest),
        Err(_) => path.to_owned(),
    }
}

/// How to run one command.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The only writable directory (host path; mounted on [`CHECK_DIR`]);
    /// `cwd`, `HOME` and `tmp` lie inside it.
    pub root: PathBuf,
    /// Mounted on the command's `/tmp`.
    pub tmp: PathBuf,
    pub cwd: PathBuf,
    pub command: String,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_processes: u64,
    /// What the run may write under `root`, `/tmp` included.
    pub disk_bytes: u64,
    /// Extra read-only host paths (a platform's `mounts`).
    pub mounts: Vec<PathBuf>,
    /// Bytes of output kept (the tail).
    pub output_cap: usize,
    /// Where the sandbox assembles its root (the data dir's `sandbox/`).
    pub state_dir: PathBuf,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The command exited with this status (signals as 128 + n).
    Exited(i32),
    /// The time limit struck; the tree was killed.
    TimedOut,
    /// Halted from outside (supersession, cancellation); the tree was killed.
    Halted,
    /// The run filled its disk limit (this many bytes) and failed.
    DiskLimit(u64),
}

#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub ending: Ending,
    /// The last `output_cap` bytes of stdout and stderr, interleaved.
    pub output: String,
    pub duration: Duration,
}

impl RunOutcome {
    pub fn succeeded(&self) -> bool {
        self.ending == Ending::Exited(0)
    }
}

/// Starts sandboxed runs through the `holdq` executable at `exe`.
#[derive(Clone, Debug)]
pub struct Sandbox {
    exe: PathBuf,
    containment: Arc<Containment>,
}

impl Sandbox {
    /// A sandbox that contains as well as this process can on its own;
    /// [`Sandbox::contain`] applies a configuration.
    pub fn new(exe: PathBuf) -> Self {
        Self {
            exe,
            containment: Arc::new(Containment::probe()),
        }
    }

    /// Applies the configuration's containment: refuses mounts that would
    /// show what must stay hidden, decides identity and disk mechanism, and
    /// logs what a check will not be protected from.
    pub fn contain(self, config: &crate::config::Config) -> anyhow::Result<Self> {
        let containment = Containment::for_config(config)?;
        for warning in &containment.warnings {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            containment: Arc::new(containment),
            ..self
        })
    }

    pub fn containment(&self) -> &Containment {
        &self.containment
    }

    /// Whether each check directory must be its own loop-mounted filesystem.
    pub fn loop_disk(&self) -> bool {
        self.containment.disk == DiskMechanism::Loop
    }

    /// The running `holdq` binary.
    pub fn current() -> anyhow::Result<Self> {
        Ok(Self::new(
            std::env::current_exe().context("cannot find the holdq executable")?,
        ))
    }

    /// Runs `spec` to its end, its time limit, or `halt`.
    pub async fn run(
        &self,
        spec: &RunSpec,
        halt: &CancellationToken,
    ) -> anyhow::Result<RunOutcome> {
        if let Some(why) = self.containment.refusal() {
            anyhow::bail!("checks cannot run here: {why}");
        }
        let containment = &self.containment;
        let exec = self.exec_spec(spec);
        std::fs::create_dir_all(&spec.state_dir)
            .with_context(|| format!("cannot create {}", spec.state_dir.display()))?;
        let started = Instant::now();
        let (mut child, mut tail_rx) = self.spawn(&exec).await?;
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        let ending = tokio::select! {
            status = child.wait() => {
                let status = status.context("waiting for the sandbox")?;
                use std::os::unix::process::ExitStatusExt;
                Ending::Exited(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
            }
            _ = tokio::time::sleep(spec.timeout) => Ending::TimedOut,
            _ = halt.cancelled() => Ending::Halted,
            _ = self.watch_disk(spec) => Ending::DiskLimit(spec.disk_bytes),
        };
        let ending = match ending {
            Ending::Exited(code) if code != 0 && self.loop_disk() && disk_full(spec) => {
                Ending::DiskLimit(spec.disk_bytes)
            }
            other => other,
        };
        if ending != Ending::Exited(0) {
            // Whatever is left of the group dies with it, whichever way it ended.
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = child.wait().await;
        }
        if let Some(pid) = group
            && !matches!(ending, Ending::Exited(_))
        {
            // Killed: the sandbox could not clean up after itself.
            let _ = std::fs::remove_dir_all(spec.state_dir.join(format!("run-{pid}")));
            exec::Cgroup::remove_of(pid.as_raw());
            if matches!(containment.identity, policy::Identity::Subordinate { .. }) {
                self.reclaim(exec).await;
            }
        }
        let duration = started.elapsed();
        let mut tail = Tail::new(spec.output_cap);
        while let Some(chunk) = tail_rx.recv().await {
            tail.push(&chunk);
        }
        let mut output = tail.into_string();
        output.push_str(&ending_note(&ending, spec));
        Ok(RunOutcome {
            ending,
            output,
            duration,
        })
    }

    /// What the sandbox process is told of the run.
    fn exec_spec(&self, spec: &RunSpec) -> exec::ExecSpec {
        let containment = &self.containment;
        exec::ExecSpec {
            rw: spec.root.clone(),
            tmp: spec.tmp.clone(),
            cwd: spec.cwd.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            memory: spec.memory_bytes,
            pids: spec.max_processes,
            mounts: spec.mounts.iter().map(|m| policy::absolute(m)).collect(),
            hidden: containment
                .hidden
                .iter()
                .chain(&containment.sockets)
                .cloned()
                .collect(),
            identity: containment.identity.clone(),
            state_dir: spec.state_dir.clone(),
            parent: std::process::id() as i32,
            reclaim: false,
        }
    }

    /// Starts the sandbox process with the run's description on its stdin
    /// (environment values included: nothing of it shows on a command
    /// line); its stdout and stderr arrive on the channel, in chunks.
    async fn spawn(
        &self,
        exec: &exec::ExecSpec,
    ) -> anyhow::Result<(
        tokio::process::Child,
        tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    )> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("__sandbox")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&serde_json::to_vec(exec)?)
            .await
            .context("cannot hand the run to the sandbox")?;
        drop(stdin);
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tail_tx, tail_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        for mut pipe in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let tx = tail_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
        Ok((child, tail_rx))
    }
}

/// The line holdq adds to a run's output when it ended the run.
fn ending_note(ending: &Ending, spec: &RunSpec) -> String {
    match ending {
        Ending::TimedOut => format!("\nholdq: killed at the time limit of {:?}\n", spec.timeout),
        Ending::Halted => "\nholdq: halted\n".to_owned(),
        Ending::DiskLimit(bytes) => format!(
            "\nholdq: disk limit ({}) reached\n",
            policy::human_size(*bytes)
        ),
        Ending::Exited(_) => String::new(),
    }
}

impl Sandbox {
    /// Gives a killed run's directory back to the server's account, which
    /// cannot otherwise remove what the run's subordinate uid left.
    async fn reclaim(&self, mut exec: exec::ExecSpec) {
        exec.reclaim = true;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("__sandbox")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let Ok(mut child) = cmd.spawn() else {
            return;
        };
        if let (Some(mut stdin), Ok(bytes)) = (child.stdin.take(), serde_json::to_vec(&exec)) {
            let _ = stdin.write_all(&bytes).await;
        }
        match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => {}
            other => tracing::warn!(
                path = %exec.rw.display(),
                outcome = ?other.map(|o| o.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())),
                "cannot take a killed check's directory back"
            ),
        }
    }
}

/// Removes what sandboxes of dead processes left under `data_dir`
/// (mounted check directories, images, container roots) and their cgroups.
pub fn sweep(data_dir: &std::path::Path) {
    let swept = disk::sweep(&data_dir.join("work"), &data_dir.join("sandbox"));
    if swept.mounts + swept.entries + swept.cgroups > 0 {
        tracing::info!(
            mounts = swept.mounts,
            entries = swept.entries,
            cgroups = swept.cgroups,
            "removed what killed sandboxes left"
        );
    }
}

impl Sandbox {
    /// Without a filesystem of its own, a run is measured every quarter
    /// second; this returns once it holds more than its limit. With one,
    /// the filesystem itself says no, and this never returns.
    async fn watch_disk(&self, spec: &RunSpec) {
        if self.loop_disk() {
            return std::future::pending().await;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let root = spec.root.clone();
            let used = tokio::task::spawn_blocking(move || disk::usage(&root))
                .await
                .unwrap_or(0);
            if used > spec.disk_bytes {
                return;
            }
        }
    }
}

/// Whether a run's own filesystem is (all but) full: it failed at its limit.
fn disk_full(spec: &RunSpec) -> bool {
    disk::free(&spec.root).is_some_and(|free| free <= (spec.disk_bytes / 100).max(64 << 10))
}

/// The last `cap` bytes of a stream.
struct Tail {
    cap: usize,
    buf: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            buf: std::collections::VecDeque::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        while self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn into_string(self) -> String {
        let bytes: Vec<u8> = self.buf.into();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.dropped > 0 {
            format!("[{} earlier bytes not kept]\n{text}", self.dropped)
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"abc");
        t.push(b"defg");
        assert_eq!(t.into_string(), "[3 earlier bytes not kept]\ndefg");
    }
}
