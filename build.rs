//! Tells the tests whether a PostgreSQL server is configured: with
//! `HOLDQ_TEST_POSTGRES_URL` set (as CI sets it) the crate is built with
//! `cfg(holdq_postgres)`, and the PostgreSQL variants of the database tests
//! run; without it they are reported as ignored, with the reason, instead of
//! passing without running. Tests that need another outside service (a
//! browser, a Python client) follow the same pattern with a cfg of their own.

fn main() {
    tuspy();
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=HOLDQ_TEST_POSTGRES_URL");
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
    if std::env::var("HOLDQ_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=holdq_postgres");
    }
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
