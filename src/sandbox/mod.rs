//! Running a check's command in isolation (SPEC section 4): a fresh
//! directory, its own process group and PID namespace, a time limit, a
//! memory limit, a process limit, no network, and write access only to its
//! own directory. The output is kept, capped, tail first. A halted or
//! timed-out run kills its whole process tree.
//!
//! The worker spawns `holdq __sandbox` (see [`exec`]) as a new process
//! group; killing that group kills the container's init, and with it every
//! process in the container's PID namespace.

pub mod exec;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// How to run one command.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The only writable directory; `cwd` and `HOME` lie inside it.
    pub root: PathBuf,
    pub cwd: PathBuf,
    pub command: String,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_processes: u64,
    /// Bytes of output kept (the tail).
    pub output_cap: usize,
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
}

impl Sandbox {
    pub fn new(exe: PathBuf) -> Self {
        Self { exe }
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
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("__sandbox")
            .arg("--rw")
            .arg(&spec.root)
            .arg("--cwd")
            .arg(&spec.cwd)
            .arg("--memory")
            .arg(spec.memory_bytes.to_string())
            .arg("--pids")
            .arg(spec.max_processes.to_string())
            .arg("--command")
            .arg(&spec.command)
            .arg("--parent")
            .arg(std::process::id().to_string());
        for (key, value) in &spec.env {
            cmd.arg("--env").arg(format!("{key}={value}"));
        }
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tail_tx, mut tail_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
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
        drop(tail_tx);

        let ending = tokio::select! {
            status = child.wait() => {
                let status = status.context("waiting for the sandbox")?;
                use std::os::unix::process::ExitStatusExt;
                Ending::Exited(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
            }
            _ = tokio::time::sleep(spec.timeout) => Ending::TimedOut,
            _ = halt.cancelled() => Ending::Halted,
        };
        if ending != Ending::Exited(0) {
            // Whatever is left of the group dies with it, whichever way it ended.
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = child.wait().await;
        }
        let duration = started.elapsed();

        let mut tail = Tail::new(spec.output_cap);
        while let Some(chunk) = tail_rx.recv().await {
            tail.push(&chunk);
        }
        let mut output = tail.into_string();
        match &ending {
            Ending::TimedOut => output.push_str(&format!(
                "\nholdq: killed at the time limit of {:?}\n",
                spec.timeout
            )),
            Ending::Halted => output.push_str("\nholdq: halted\n"),
            Ending::Exited(_) => {}
        }
        Ok(RunOutcome {
            ending,
            output,
            duration,
        })
    }
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
