//! `holdq fetch` (SPEC section 10): the real binary against the real
//! server resolves a closure, downloads and unpacks it, writes
//! `resolved.toml`, honours pins, warns on obsolete packages, fetches
//! `--locked` exactly, and refuses an archive whose hash does not match.

use std::path::Path;
use std::process::Output;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::{TestApp, TestDb};

on_both_databases!(
    fetch_unpacks_the_closure_that_resolved_toml_names_and_locked_fetches_it_again,
    fetch_honours_a_pin_and_warns_on_an_obsolete_package,
    fetch_refuses_an_archive_whose_hash_was_altered_and_keeps_nothing_of_it,
);

fn pkg(name: &str, version: &str, deps: &[(&str, &str)]) -> Vec<u8> {
    package_building(name, version, deps, "true", None)
}

async fn accept(app: &TestApp, body: Vec<u8>) {
    let id = app.upload_ok(&app.operator, body).await;
    app.drain().await;
    assert_eq!(app.upload_view(id).await["state"], "accepted");
}

async fn fetch(app: &TestApp, args: &[&str], cwd: &Path) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_holdq"))
        .arg("fetch")
        .args(args)
        .current_dir(cwd)
        .env("HOLDQ_SERVER", &app.base)
        .env("HOLDQ_CLIENT_CONFIG", cwd.join("no-client.toml"))
        .env_remove("HOLDQ_TOKEN")
        .output()
        .await
        .expect("holdq runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `resolved.toml` as (name, version) pairs.
fn resolved(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("resolved.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["version"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// The package directories fetched into `dir`, with the version each
/// one's manifest names.
fn unpacked(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            let manifest = std::fs::read_to_string(entry.path().join("package.toml")).unwrap();
            let value: toml::Value = toml::from_str(&manifest).unwrap();
            let version = value["package"]["version"].as_str().unwrap().to_owned();
            out.push((entry.file_name().to_string_lossy().into_owned(), version));
        }
    }
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn fetch_unpacks_the_closure_that_resolved_toml_names_and_locked_fetches_it_again(
    db: TestDb,
) {
    let app = TestApp::spawn(db).await;
    accept(&app, pkg("base", "1.0.0", &[])).await;
    accept(&app, pkg("lib", "1.0.0", &[("base", "^1")])).await;
    accept(&app, pkg("lib", "1.1.0", &[("base", "^1")])).await;
    accept(&app, pkg("app", "1.0.0", &[("lib", "^1")])).await;
    accept(&app, pkg("unrelated", "1.0.0", &[])).await;
    let work = tempfile::tempdir().unwrap();

    let first = fetch(&app, &["app", "-o", "out", "--json"], work.path()).await;
    assert!(first.status.success(), "{}", stderr(&first));
    let out = work.path().join("out");
    let want = pairs(&[("app", "1.0.0"), ("base", "1.0.0"), ("lib", "1.1.0")]);
    assert_eq!(resolved(&out), want);
    assert_eq!(
        unpacked(&out),
        want,
        "one directory per package of the closure, nothing else"
    );
    let listed: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(listed["package"].as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed["serial"], 5);

    // A newer app: a plain fetch takes it; --locked takes what the file says.
    accept(&app, pkg("app", "1.1.0", &[("lib", "^1")])).await;
    let again = tempfile::tempdir().unwrap();
    let lock = out.join("resolved.toml");
    let locked = fetch(
        &app,
        &["--locked", lock.to_str().unwrap(), "-o", "."],
        again.path(),
    )
    .await;
    assert!(locked.status.success(), "{}", stderr(&locked));
    assert_eq!(unpacked(again.path()), want);
    let newer = fetch(&app, &["app@^1", "base", "-o", "newer"], work.path()).await;
    assert!(newer.status.success(), "{}", stderr(&newer));
    assert_eq!(
        resolved(&work.path().join("newer"))[0],
        ("app".into(), "1.1.0".into())
    );

    let none = fetch(&app, &["nothing-such"], work.path()).await;
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("no stable package"),
        "{}",
        stderr(&none)
    );
    let bad = fetch(&app, &["app@not-a-requirement"], work.path()).await;
    assert!(
        stderr(&bad).contains("not a version requirement"),
        "{}",
        stderr(&bad)
    );
}

async fn fetch_honours_a_pin_and_warns_on_an_obsolete_package(db: TestDb) {
    let app = TestApp::spawn(db).await;
    accept(&app, pkg("lib", "1.0.0", &[])).await;
    accept(&app, pkg("lib", "1.1.0", &[])).await;
    accept(&app, pkg("newlib", "1.0.0", &[])).await;
    accept(&app, pkg("app", "1.0.0", &[("lib", "^1")])).await;
    let r = app
        .http
        .post(app.url("/api/v1/packages/lib/obsolete"))
        .bearer_auth(&app.operator)
        .json(&json!({ "reason": "lib is unmaintained", "replacement": "newlib" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A pin below lib's highest version, as one made before lib 1.1.0 was
    // promoted behind the queue's back would be.
    crate::support::stable::lower_pin(&app, "app", "lib", "1.0.0").await;

    let work = tempfile::tempdir().unwrap();
    let run = fetch(&app, &["app", "-o", "."], work.path()).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        resolved(work.path()),
        pairs(&[("app", "1.0.0"), ("lib", "1.0.0")])
    );
    let warning = stderr(&run);
    assert!(
        warning.contains("warning: lib is obsolete: lib is unmaintained; use newlib instead"),
        "{warning}"
    );
}

async fn fetch_refuses_an_archive_whose_hash_was_altered_and_keeps_nothing_of_it(db: TestDb) {
    let app = TestApp::spawn(db).await;
    accept(&app, pkg("lib", "1.0.0", &[])).await;
    accept(&app, pkg("app", "1.0.0", &[("lib", "^1")])).await;
    let archive = app.app.stable.archive_path("lib", "1.0.0");
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();

    let work = tempfile::tempdir().unwrap();
    let run = fetch(&app, &["app", "-o", "."], work.path()).await;
    assert!(!run.status.success());
    let error = stderr(&run);
    assert!(
        error.contains("lib 1.0.0") && error.contains("refused"),
        "{error}"
    );
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    let left: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "nothing is kept, nothing unpacked: {left:?}"
    );
}
