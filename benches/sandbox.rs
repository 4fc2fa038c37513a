//! What containment costs per check, measured in one run: a no-op command
//! (`true`) through the real sandbox, one after another,
//!
//! - in a plain check directory (the allow-listed view, the uid drop, the
//!   directory handed over and back),
//! - in a check directory that is its own loop-mounted ext4 filesystem of
//!   the default 8 GiB (made, formatted, mounted, unmounted per check),
//! - and, with `HOLDQ_BENCH_BEFORE=/path/to/an/older/holdq`, through that
//!   binary's `__sandbox` (the sandbox before issue 13: every top-level
//!   host directory bound read-only, run as the server's uid).
//!
//! Run (as root for the loop mount): `cargo bench --bench sandbox`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdq::sandbox::disk::CheckDir;
use holdq::sandbox::{RunSpec, Sandbox};
use support::{ms, percentile};
use tokio_util::sync::CancellationToken;

mod support;

const RUNS: usize = 40;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

fn spec(root: &Path, state: &Path) -> anyhow::Result<RunSpec> {
    std::fs::create_dir_all(root.join("tmp"))?;
    Ok(RunSpec {
        root: root.to_owned(),
        tmp: root.join("tmp"),
        cwd: root.to_owned(),
        command: "true".into(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        timeout: Duration::from_secs(60),
        memory_bytes: 2 << 30,
        max_processes: 512,
        disk_bytes: 8 << 30,
        mounts: Vec::new(),
        output_cap: 1 << 20,
        state_dir: state.to_owned(),
    })
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("holdq-bench-")
        .tempdir_in("/var/tmp")?;
    let (work, state) = (dir.path().join("work"), dir.path().join("sandbox"));
    let sandbox = Sandbox::new(env!("CARGO_BIN_EXE_holdq").into());
    let never = CancellationToken::new();
    let loop_ok = nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists();

    let mut plain = Vec::new();
    let mut looped = Vec::new();
    let mut mount_only = Vec::new();
    // Interleaved, so both see the same machine load.
    for _ in 0..RUNS {
        let start = Instant::now();
        let check = CheckDir::new(&work, 8 << 30, false)?;
        let outcome = sandbox.run(&spec(check.path(), &state)?, &never).await?;
        anyhow::ensure!(outcome.succeeded(), "plain run failed: {}", outcome.output);
        drop(check);
        plain.push(start.elapsed());
        if loop_ok {
            let start = Instant::now();
            let check = CheckDir::new(&work, 8 << 30, true)?;
            let made = start.elapsed();
            let outcome = sandbox.run(&spec(check.path(), &state)?, &never).await?;
            anyhow::ensure!(outcome.succeeded(), "loop run failed: {}", outcome.output);
            let unmount = Instant::now();
            drop(check);
            mount_only.push(made + unmount.elapsed());
            looped.push(start.elapsed());
        }
    }
    let before = match std::env::var_os("HOLDQ_BENCH_BEFORE") {
        Some(exe) => Some(before(&PathBuf::from(exe), &work).await?),
        None => None,
    };
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        ms(percentile(v, 0.5))
    };
    let plain50 = p50(&mut plain);
    println!("sandbox: no-op check, plain directory: p50 {plain50:.1} ms over {RUNS} runs");
    if loop_ok {
        let loop50 = p50(&mut looped);
        println!(
            "sandbox: no-op check, loop-mounted 8 GiB ext4: p50 {loop50:.1} ms (make + mount + unmount alone p50 {:.1} ms); ratio loop/plain {:.2}",
            p50(&mut mount_only),
            loop50 / plain50
        );
    } else {
        println!("sandbox: loop mount not measured (needs root and /dev/loop-control)");
    }
    if let Some(mut before) = before {
        let before50 = p50(&mut before);
        println!(
            "sandbox: no-op check through the older binary's __sandbox: p50 {before50:.1} ms; ratio plain/before {:.2}",
            plain50 / before50
        );
    }
    Ok(())
}

/// The same no-op through an older `holdq __sandbox`, which took its run
/// on the command line.
async fn before(exe: &Path, work: &Path) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let check = CheckDir::new(work, 8 << 30, false)?;
        let status = tokio::process::Command::new(exe)
            .arg("__sandbox")
            .arg("--rw")
            .arg(check.path())
            .arg("--cwd")
            .arg(check.path())
            .args([
                "--memory",
                "2147483648",
                "--pids",
                "512",
                "--command",
                "true",
            ])
            .arg("--parent")
            .arg(std::process::id().to_string())
            .args(["--env", "PATH=/usr/bin:/bin"])
            .env_clear()
            .status()
            .await?;
        anyhow::ensure!(status.success(), "the older sandbox failed: {status}");
        drop(check);
        times.push(start.elapsed());
    }
    Ok(times)
}
