//! Tells the tests which outside services this machine has, so that a test
//! needing one runs when it is there and is reported as ignored, with the
//! reason, when it is not (never as passed without running):
//! - `cfg(holdq_postgres)`: `HOLDQ_TEST_POSTGRES_URL` is set (as CI sets it),
//!   and the PostgreSQL variants of the database tests run;
//! - `cfg(holdq_chromium)`: `chromedriver` and `chromium` are installed (on
//!   `PATH`, or named by `HOLDQ_CHROMEDRIVER` and `HOLDQ_CHROMIUM`), and the
//!   browser tests run (`.ci/run` installs both).

use std::path::{Path, PathBuf};

fn main() {
    tuspy();
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=HOLDQ_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=HOLDQ_CHROMEDRIVER");
    println!("cargo::rerun-if-env-changed=HOLDQ_CHROMIUM");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rustc-check-cfg=cfg(holdq_postgres)");
    // Tests that mount a small filesystem (tests/integration/faults_disk.rs)
    // need root; elsewhere they are reported as ignored.
    println!("cargo::rustc-check-cfg=cfg(holdq_root)");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid == Some("0") {
        println!("cargo::rustc-cfg=holdq_root");
    }
    println!("cargo::rustc-check-cfg=cfg(holdq_chromium)");
    if std::env::var("HOLDQ_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=holdq_postgres");
    }
    let driver = program("HOLDQ_CHROMEDRIVER", "chromedriver");
    let browser = program("HOLDQ_CHROMIUM", "chromium");
    if let (Some(driver), Some(browser)) = (&driver, &browser) {
        println!("cargo::rustc-cfg=holdq_chromium");
        println!(
            "cargo::rustc-env=HOLDQ_TEST_CHROMEDRIVER={}",
            driver.display()
        );
        println!("cargo::rustc-env=HOLDQ_TEST_CHROMIUM={}", browser.display());
    }
    // Installing (or removing) them later changes these: look again then.
    for found in [&driver, &browser].into_iter().flatten() {
        println!("cargo::rerun-if-changed={}", found.display());
    }
    if driver.is_none() || browser.is_none() {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            if dir.is_dir() {
                println!("cargo::rerun-if-changed={}", dir.display());
            }
        }
    }
}

/// The executable named by `$var`, or `name` found on `PATH`.
fn program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| is_executable(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `cfg(holdq_tuspy)` when the Python tus client (`tuspy`, module
/// `tusclient`) is importable by `$HOLDQ_TEST_PYTHON` (default `python3`):
/// the real-client test runs; elsewhere it is reported as ignored.
fn tuspy() {
    println!("cargo::rerun-if-env-changed=HOLDQ_TEST_PYTHON");
    println!("cargo::rustc-check-cfg=cfg(holdq_tuspy)");
    let python = std::env::var("HOLDQ_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = std::process::Command::new(python)
        .args(["-c", "import tusclient"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        println!("cargo::rustc-cfg=holdq_tuspy");
    }
}
