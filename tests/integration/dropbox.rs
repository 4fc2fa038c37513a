//! The drop box (mmpack): archives, then a manifest, left in a directory
//! become uploads; an incoherent batch is refused with the reason written
//! beside it and nothing uploaded; a kill -9 between the move and the
//! submission uploads the batch exactly once after the restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::process::ServerProcess;
use crate::support::tus::sha256_hex;
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    two_archives_together_become_one_group_and_are_accepted,
    a_hash_mismatch_writes_the_reason_and_uploads_nothing,
    a_listed_file_missing_from_the_drop_box_is_refused,
    an_unknown_uploader_is_refused,
    files_no_manifest_lists_are_left_alone,
    a_manifest_still_being_written_is_waited_for,
    archives_not_together_are_queued_each_on_its_own,
    the_watcher_takes_in_a_manifest_without_a_scan_being_asked,
    a_kill_after_the_move_and_before_submission_uploads_the_batch_once_after_restart,
);

fn archive(name: &str) -> Vec<u8> {
    package_building(name, "1.0.0", &[], "true", None)
}

/// A test app whose drop box is `<tmp>/dropbox`.
async fn with_dropbox(db: TestDb) -> (TestApp, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dropbox = dir.path().join("dropbox");
    let app = TestApp::spawn_in(db, dir, |c| c.dropbox.dir = Some(dropbox.clone())).await;
    std::fs::create_dir_all(&dropbox).unwrap();
    (app, dropbox)
}

/// Writes each archive, then the manifest last by rename, as a writer must.
fn drop_batch(dir: &Path, name: &str, manifest: &str, archives: &[(&str, &[u8])]) {
    for (file, bytes) in archives {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, manifest).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.holdq-manifest"))).unwrap();
}

fn manifest(uploader: &str, together: bool, files: &[(&str, &str)]) -> String {
    let mut text = format!("uploader = \"{uploader}\"\ntogether = {together}\n");
    for (name, sha) in files {
        text.push_str(&format!(
            "[[file]]\nname = \"{name}\"\nsha256 = \"{sha}\"\n"
        ));
    }
    text
}

fn result_of(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.holdq-result.json"))).ok()?;
    Some(serde_json::from_str(&text).expect("a whole JSON result"))
}

async fn scan(app: &TestApp) {
    holdq::service::dropbox::scan(&app.app).await.unwrap();
}

async fn uploads(app: &TestApp) -> i64 {
    let mut conn = app.app.db.pool().acquire().await.unwrap();
    holdq::db::uploads::count_all(&mut conn).await.unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn two_archives_together_become_one_group_and_are_accepted(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    let (a, b) = (archive("alpha"), archive("beta"));
    let m = manifest(
        "ada@example.org",
        true,
        &[
            ("alpha.tar.gz", &sha256_hex(&a)),
            ("beta.tar.gz", &sha256_hex(&b)),
        ],
    );
    drop_batch(
        &dir,
        "batch",
        &m,
        &[("alpha.tar.gz", &a), ("beta.tar.gz", &b)],
    );
    scan(&app).await;

    let result = result_of(&dir, "batch").expect("a result");
    assert_eq!(result["state"], "queued", "{result:#}");
    let group = result["group"].as_i64().expect("one group");
    let files = result["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let shown = app
        .get(Some(&app.operator), &format!("/api/v1/groups/{group}"))
        .await;
    assert_eq!(shown.body["state"], "submitted", "{:?}", shown.body);
    app.drain().await;
    for f in files {
        let id = f["upload_id"].as_i64().unwrap();
        assert!(
            shown.body["members"]
                .as_array()
                .unwrap()
                .contains(&id.into())
        );
        let view = app.upload_view(id).await;
        assert_eq!(view["state"], "accepted", "{view:#}");
    }
    // The archives are in the blob store; the drop box holds the result.
    assert_eq!(
        names_in(&dir),
        [".holdq-work", "batch.holdq-result.json", "rejected"]
    );
    assert_eq!(names_in(&dir.join(".holdq-work")), [".lock"]);
    assert!(names_in(&dir.join("rejected")).is_empty());
}

async fn a_hash_mismatch_writes_the_reason_and_uploads_nothing(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    let (a, b) = (archive("alpha"), archive("beta"));
    let wrong = sha256_hex(b"not beta");
    let m = manifest(
        "ada@example.org",
        true,
        &[("alpha.tar.gz", &sha256_hex(&a)), ("beta.tar.gz", &wrong)],
    );
    drop_batch(
        &dir,
        "batch",
        &m,
        &[("alpha.tar.gz", &a), ("beta.tar.gz", &b)],
    );
    scan(&app).await;
    let result = result_of(&dir, "batch").expect("a result");
    assert_eq!(result["state"], "refused", "{result:#}");
    let reason = result["reason"].as_str().unwrap();
    assert!(
        reason.contains("beta.tar.gz") && reason.contains(&wrong),
        "{reason}"
    );
    assert_eq!(uploads(&app).await, 0);
    // Refused files are kept, never deleted.
    let rejected = names_in(&dir.join("rejected"));
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        names_in(&dir.join("rejected").join(&rejected[0])),
        ["alpha.tar.gz", "batch.holdq-manifest", "beta.tar.gz"]
    );
}

async fn a_listed_file_missing_from_the_drop_box_is_refused(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    let a = archive("alpha");
    let m = manifest(
        "ada@example.org",
        false,
        &[
            ("alpha.tar.gz", &sha256_hex(&a)),
            ("beta.tar.gz", &sha256_hex(b"x")),
        ],
    );
    drop_batch(&dir, "batch", &m, &[("alpha.tar.gz", &a)]);
    scan(&app).await;
    let result = result_of(&dir, "batch").expect("a result");
    assert_eq!(result["state"], "refused", "{result:#}");
    assert!(
        result["reason"].as_str().unwrap().contains("beta.tar.gz"),
        "{result:#}"
    );
    assert_eq!(uploads(&app).await, 0);
}

async fn an_unknown_uploader_is_refused(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    let a = archive("alpha");
    let m = manifest(
        "mallory@example.org",
        false,
        &[("alpha.tar.gz", &sha256_hex(&a))],
    );
    drop_batch(&dir, "batch", &m, &[("alpha.tar.gz", &a)]);
    scan(&app).await;
    let result = result_of(&dir, "batch").expect("a result");
    assert_eq!(result["state"], "refused", "{result:#}");
    assert!(
        result["reason"]
            .as_str()
            .unwrap()
            .contains("not a registered user"),
        "{result:#}"
    );
    assert_eq!(uploads(&app).await, 0);
}

async fn files_no_manifest_lists_are_left_alone(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    let (a, b) = (archive("alpha"), archive("beta"));
    // beta belongs to a manifest not yet written.
    std::fs::write(dir.join("beta.tar.gz"), &b).unwrap();
    let m = manifest(
        "ada@example.org",
        false,
        &[("alpha.tar.gz", &sha256_hex(&a))],
    );
    drop_batch(&dir, "first", &m, &[("alpha.tar.gz", &a)]);
    scan(&app).await;
    assert_eq!(result_of(&dir, "first").unwrap()["state"], "queued");
    assert!(dir.join("beta.tar.gz").is_file(), "{:?}", names_in(&dir));
    assert_eq!(uploads(&app).await, 1);
}

async fn a_manifest_still_being_written_is_waited_for(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    let a = archive("alpha");
    std::fs::write(dir.join("alpha.tar.gz"), &a).unwrap();
    let path = dir.join("batch.holdq-manifest");
    std::fs::write(&path, "uploader = \"ada@exam").unwrap();
    scan(&app).await;
    assert!(result_of(&dir, "batch").is_none());
    assert!(path.is_file() && dir.join("alpha.tar.gz").is_file());
    let m = manifest(
        "ada@example.org",
        false,
        &[("alpha.tar.gz", &sha256_hex(&a))],
    );
    std::fs::write(&path, m).unwrap();
    scan(&app).await;
    assert_eq!(result_of(&dir, "batch").unwrap()["state"], "queued");
}

async fn archives_not_together_are_queued_each_on_its_own(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    let a = archive("alpha");
    let bad = b"not an archive".to_vec();
    let m = manifest(
        "ada@example.org",
        false,
        &[
            ("alpha.tar.gz", &sha256_hex(&a)),
            ("junk.tar.gz", &sha256_hex(&bad)),
        ],
    );
    drop_batch(
        &dir,
        "batch",
        &m,
        &[("alpha.tar.gz", &a), ("junk.tar.gz", &bad)],
    );
    scan(&app).await;
    let result = result_of(&dir, "batch").unwrap();
    assert_eq!(result["state"], "partly_refused", "{result:#}");
    assert!(result["group"].is_null());
    let files = result["files"].as_array().unwrap();
    assert_eq!(files[0]["state"], "queued", "{result:#}");
    assert!(
        files[1]["error"].as_str().unwrap().contains("gzip"),
        "{result:#}"
    );
    let rejected = names_in(&dir.join("rejected"));
    assert_eq!(
        names_in(&dir.join("rejected").join(&rejected[0])),
        ["batch.holdq-manifest", "junk.tar.gz"]
    );
}

async fn the_watcher_takes_in_a_manifest_without_a_scan_being_asked(db: TestDb) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    app.start_workers().await;
    let a = archive("alpha");
    let m = manifest(
        "ada@example.org",
        false,
        &[("alpha.tar.gz", &sha256_hex(&a))],
    );
    drop_batch(&dir, "batch", &m, &[("alpha.tar.gz", &a)]);
    let result = wait_until(async || result_of(&dir, "batch"), Duration::from_secs(30))
        .await
        .expect("the watcher wrote a result");
    assert_eq!(result["state"], "queued", "{result:#}");
}

async fn a_kill_after_the_move_and_before_submission_uploads_the_batch_once_after_restart(
    db: TestDb,
) {
    let (app, dir) = with_dropbox(db).await;
    app.user("ada@example.org").await;
    let data = app.app.config.data_dir.clone();
    let url = app.database_url.clone();
    let config = data.parent().unwrap().join("holdq.toml");
    std::fs::write(
        &config,
        format!("[dropbox]\ndir = \"{}\"\npoll = \"100ms\"\n", dir.display()),
    )
    .unwrap();
    let (a, b) = (archive("alpha"), archive("beta"));
    let m = manifest(
        "ada@example.org",
        true,
        &[
            ("alpha.tar.gz", &sha256_hex(&a)),
            ("beta.tar.gz", &sha256_hex(&b)),
        ],
    );
    // Up first (it aborts at the failpoint), then the batch arrives.
    let mut server =
        ServerProcess::start_with_config(&data, &url, Some("dropbox-after-move"), Some(&config))
            .await;
    drop_batch(
        &dir,
        "batch",
        &m,
        &[("alpha.tar.gz", &a), ("beta.tar.gz", &b)],
    );
    assert!(
        server.wait_exit(Duration::from_secs(60)).await,
        "the failpoint aborted the server"
    );
    assert_eq!(uploads(&app).await, 0, "killed before submission");
    assert_eq!(
        names_in(&dir.join(".holdq-work")).len(),
        2,
        "the batch and the lock"
    );

    let _server = ServerProcess::start_with_config(&data, &url, None, Some(&config)).await;
    let result = wait_until(async || result_of(&dir, "batch"), Duration::from_secs(60))
        .await
        .expect("the batch resumed after the restart");
    assert_eq!(result["state"], "queued", "{result:#}");
    assert_eq!(uploads(&app).await, 2, "exactly one set of uploads");
    // Scanning again (the poll does, every 100 ms) changes nothing.
    scan(&app).await;
    assert_eq!(uploads(&app).await, 2);
}
