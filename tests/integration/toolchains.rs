//! Real toolchains still work in the sandbox when a platform names them in
//! `mounts` and `env`: a Rust crate with a build script and a proc-macro
//! crate it depends on by path (the host's rustup toolchain), a C program
//! built with `cc`, a Python package running its tests.

use std::path::PathBuf;
use std::time::Duration;

use holdq::config::{ByteSize, Config, PlatformConfig};
use serde_json::Value;

use crate::on_both_databases;
use crate::support::archives::{Tar, manifest};
use crate::support::{TestApp, TestDb};

on_both_databases!(
    a_rust_crate_with_a_build_script_and_a_proc_macro_builds_offline,
    a_c_program_builds_with_cc,
    a_python_package_runs_its_tests,
);

/// An archive of `files` (path under `NAME-VERSION/`, contents) with a
/// manifest whose build runs `build` and test runs `test`.
fn package(name: &str, build: &str, test: Option<&str>, files: &[(&str, &str)]) -> Vec<u8> {
    let top = format!("{name}-1.0.0");
    let mut text = manifest(name, "1.0.0", &[])
        .replace("command = \"sh build.sh\"", &format!("command = {build:?}"));
    if let Some(test) = test {
        text.push_str(&format!("test = {test:?}\n"));
    }
    let mut dirs: Vec<String> = vec![top.clone()];
    for (path, _) in files {
        let mut dir = std::path::Path::new(path).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(format!("{top}/{}", d.display()));
            dir = d.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut tar = Tar::new();
    for dir in &dirs {
        tar = tar.dir(dir);
    }
    tar = tar.file(&format!("{top}/package.toml"), text.as_bytes());
    for (path, contents) in files {
        tar = tar.file(&format!("{top}/{path}"), contents.as_bytes());
    }
    tar.gz()
}

async fn verdict(app: &TestApp, archive: Vec<u8>) -> Value {
    let ada = app.user("ada@example.org").await;
    let id = app.upload_ok(&ada, archive).await;
    app.drain().await;
    app.upload_view(id).await
}

fn build_log(view: &Value) -> String {
    let label = format!("build@{}", PlatformConfig::host().name);
    view["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "build" || c["kind"] == "test")
        .map(|c| {
            format!(
                "{}@{}: {}\n{}",
                c["kind"].as_str().unwrap(),
                c["platform"].as_str().unwrap(),
                c["summary"],
                c["log"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        + &format!("\n(looked for {label})")
}

/// The host's rustup home (`RUSTUP_HOME`, else `~/.rustup`) and `cargo`'s directory.
fn rustup() -> (PathBuf, PathBuf) {
    let home = PathBuf::from(std::env::var("HOME").expect("HOME"));
    let rustup = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".rustup"));
    let cargo = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo"))
        .join("bin");
    assert!(
        rustup.join("toolchains").is_dir() && cargo.join("cargo").exists(),
        "this test needs a rustup toolchain ({} and {})",
        rustup.display(),
        cargo.display()
    );
    (rustup, cargo)
}

async fn a_rust_crate_with_a_build_script_and_a_proc_macro_builds_offline(db: TestDb) {
    let (rustup, cargo) = rustup();
    let app = TestApp::spawn_with(db, |c: &mut Config| {
        let p = &mut c.platforms[0];
        p.mounts = vec![rustup.clone(), cargo.clone()];
        p.env = vec![
            format!("PATH={}:/usr/bin:/bin", cargo.display()),
            format!("RUSTUP_HOME={}", rustup.display()),
            // A crate's own rust-toolchain.toml must not make rustup install.
            "RUSTUP_TOOLCHAIN=stable".into(),
        ];
        p.memory = ByteSize(8 << 30);
        p.timeout = Duration::from_secs(600);
    })
    .await;
    let view = verdict(
        &app,
        package(
            "rusty",
            "export CARGO_HOME=$HOME/.cargo && cargo build --offline && ./target/debug/rusty | tee $HOLDQ_DESTDIR/said",
            None,
            &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"rusty\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nshout = { path = \"shout\" }\n",
                ),
                (
                    "rust-toolchain.toml",
                    "[toolchain]\nchannel = \"1.60.0\"\n",
                ),
                (
                    "build.rs",
                    "fn main() { println!(\"cargo:rustc-env=BUILT_BY=the-build-script\"); }\n",
                ),
                (
                    "src/main.rs",
                    "fn main() { println!(\"{} {}\", shout::shout!(\"hello\"), env!(\"BUILT_BY\")); }\n",
                ),
                (
                    "shout/Cargo.toml",
                    "[package]\nname = \"shout\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n",
                ),
                (
                    "shout/src/lib.rs",
                    "use proc_macro::TokenStream;\n#[proc_macro]\npub fn shout(input: TokenStream) -> TokenStream {\n    input.to_string().to_uppercase().parse().unwrap()\n}\n",
                ),
            ],
        ),
    )
    .await;
    let log = build_log(&view);
    assert_eq!(view["state"], "accepted", "{log}");
    assert!(log.contains("HELLO the-build-script"), "{log}");
}

async fn a_c_program_builds_with_cc(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let view = verdict(
        &app,
        package(
            "hello-c",
            "cc -Wall -O2 -o hello hello.c && ./hello && install -D hello $HOLDQ_DESTDIR/bin/hello",
            None,
            &[(
                "hello.c",
                "#include <stdio.h>\nint main(void) { printf(\"hello from C %d\\n\", 6 * 7); return 0; }\n",
            )],
        ),
    )
    .await;
    let log = build_log(&view);
    assert_eq!(view["state"], "accepted", "{log}");
    assert!(log.contains("hello from C 42"), "{log}");
}

async fn a_python_package_runs_its_tests(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let view = verdict(
        &app,
        package(
            "pyadd",
            "python3 -m compileall -q pyadd",
            Some("python3 -m unittest discover -v -s tests -t ."),
            &[
                ("pyadd/__init__.py", "def add(a, b):\n    return a + b\n"),
                ("tests/__init__.py", ""),
                (
                    "tests/test_add.py",
                    "import unittest\nimport tempfile\nfrom pyadd import add\n\nclass AddTest(unittest.TestCase):\n    def test_adds(self):\n        self.assertEqual(add(2, 3), 5)\n\n    def test_tmp_is_writable(self):\n        with tempfile.TemporaryFile() as f:\n            f.write(b'x')\n",
                ),
            ],
        ),
    )
    .await;
    let log = build_log(&view);
    assert_eq!(view["state"], "accepted", "{log}");
    assert!(log.contains("Ran 2 tests") && log.contains("OK"), "{log}");
}
