//! The corpus of bad inputs (SPEC section 2 and 9): each gets the right
//! status and error code, nothing is stored, and the server keeps serving,
//! whichever way the archive came in: each case runs through
//! `POST /api/v1/uploads` (`bad_inputs::post::`) and through tus
//! (`bad_inputs::tus::`, in 64 KiB chunks).

use holdq::config::{ByteSize, Config};
use reqwest::StatusCode;
use tar::EntryType;

use crate::on_both_databases;
use crate::support::archives::{Tar, gzip, manifest, package, package_with_manifest};
use crate::support::tus::Via;
use crate::support::{TestApp, TestDb};

/// Uploads `body` as a fresh user and checks the refusal.
async fn refused_with(
    (db, via): (TestDb, Via),
    tweak: impl FnOnce(&mut Config),
    body: Vec<u8>,
    status: StatusCode,
    code: &str,
) -> String {
    let app = TestApp::spawn_with(db, tweak).await;
    let token = app.user("ada@example.org").await;
    let a = via.upload(&app, Some(&token), body, None).await;
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.code(), code, "{:?}", a.body);
    assert!(!a.message().is_empty());
    app.assert_nothing_stored().await;
    app.assert_serving().await;
    a.message().to_owned()
}

async fn refused(way: (TestDb, Via), body: Vec<u8>, code: &str) -> String {
    refused_with(way, |_| {}, body, StatusCode::BAD_REQUEST, code).await
}

/// The way in of a case: a database, and POST or tus.
type Way = (TestDb, Via);

/// Runs each corpus case `async fn NAME(way: Way)` through both ways in,
/// on both databases.
macro_rules! through_both_ways {
    ($($name:ident),* $(,)?) => {
        mod post {
            $(async fn $name(db: $crate::support::TestDb) {
                super::$name((db, $crate::support::tus::Via::Post)).await
            })*
            $crate::on_both_databases!($($name),*);
        }
        mod tus {
            $(async fn $name(db: $crate::support::TestDb) {
                super::$name((db, $crate::support::tus::Via::Tus(64 << 10))).await
            })*
            $crate::on_both_databases!($($name),*);
        }
    };
}

const TOP: &str = "alpha-1.0.0";

/// A valid package with one more entry added by `extra`.
fn valid_plus(extra: impl FnOnce(Tar) -> Tar) -> Vec<u8> {
    let tar = Tar::new().dir(TOP).file(
        &format!("{TOP}/package.toml"),
        manifest("alpha", "1.0.0", &[]).as_bytes(),
    );
    extra(tar).gz()
}

fn with_manifest(text: &str) -> Vec<u8> {
    package_with_manifest(TOP, text)
}

through_both_ways!(
    parent_dir_path_is_refused,
    parent_dir_inside_the_package_path_is_refused,
    absolute_path_is_refused,
    entry_outside_the_package_dir_is_refused,
    symlink_pointing_outside_is_refused,
    absolute_symlink_is_refused,
    hard_link_pointing_outside_is_refused,
    hard_link_to_another_package_dir_is_refused,
    character_device_is_refused,
    block_device_is_refused,
    fifo_is_refused,
    gzip_bomb_is_refused,
    too_many_entries_are_refused,
    truncated_archive_is_refused,
    not_gzip_is_refused,
    gzip_that_is_not_tar_is_refused,
    empty_body_is_refused,
    missing_manifest_is_refused,
    non_utf8_manifest_is_refused,
    invalid_toml_manifest_is_refused,
    invalid_name_is_refused,
    invalid_version_is_refused,
    invalid_requirement_is_refused,
    missing_maintainers_are_refused,
    directory_manifest_mismatch_is_refused,
    self_dependency_is_refused,
    unknown_platform_is_refused,
    body_over_the_limit_is_refused,
    checksum_mismatch_is_refused,
    missing_token_is_refused,
);

// What only a plain POST can send wrong.
on_both_databases!(
    streamed_body_over_the_limit_is_refused,
    wrong_token_is_refused,
    fifty_concurrent_uploads_of_one_package_leave_the_last_one,
);

async fn parent_dir_path_is_refused(db: Way) {
    let m = refused(db, valid_plus(|t| t.file("../evil", b"x")), "unsafe_path").await;
    assert!(m.contains("../evil"), "{m}");
}

async fn parent_dir_inside_the_package_path_is_refused(db: Way) {
    refused(
        db,
        valid_plus(|t| t.file(&format!("{TOP}/../../etc/cron.d/x"), b"x")),
        "unsafe_path",
    )
    .await;
}

async fn absolute_path_is_refused(db: Way) {
    let m = refused(
        db,
        valid_plus(|t| t.file("/etc/passwd", b"x")),
        "unsafe_path",
    )
    .await;
    assert!(m.contains("absolute"), "{m}");
}

async fn entry_outside_the_package_dir_is_refused(db: Way) {
    refused(
        db,
        valid_plus(|t| t.file("other-1.0.0/file", b"x")),
        "outside_package_dir",
    )
    .await;
}

async fn symlink_pointing_outside_is_refused(db: Way) {
    let m = refused(
        db,
        valid_plus(|t| t.symlink(&format!("{TOP}/link"), "../../etc/passwd")),
        "link_outside_package",
    )
    .await;
    assert!(m.contains("link"), "{m}");
}

async fn absolute_symlink_is_refused(db: Way) {
    refused(
        db,
        valid_plus(|t| t.symlink(&format!("{TOP}/link"), "/etc/shadow")),
        "link_outside_package",
    )
    .await;
}

async fn hard_link_pointing_outside_is_refused(db: Way) {
    refused(
        db,
        valid_plus(|t| t.hardlink(&format!("{TOP}/hard"), "/etc/passwd")),
        "link_outside_package",
    )
    .await;
}

async fn hard_link_to_another_package_dir_is_refused(db: Way) {
    refused(
        db,
        valid_plus(|t| t.hardlink(&format!("{TOP}/hard"), "elsewhere/file")),
        "link_outside_package",
    )
    .await;
}

async fn character_device_is_refused(db: Way) {
    let m = refused(
        db,
        valid_plus(|t| t.special(&format!("{TOP}/null"), EntryType::Char)),
        "special_file",
    )
    .await;
    assert!(m.contains("character device"), "{m}");
}

async fn block_device_is_refused(db: Way) {
    refused(
        db,
        valid_plus(|t| t.special(&format!("{TOP}/sda"), EntryType::Block)),
        "special_file",
    )
    .await;
}

async fn fifo_is_refused(db: Way) {
    refused(
        db,
        valid_plus(|t| t.special(&format!("{TOP}/pipe"), EntryType::Fifo)),
        "special_file",
    )
    .await;
}

async fn gzip_bomb_is_refused(db: Way) {
    let tar = Tar::new().dir(TOP).file(
        &format!("{TOP}/package.toml"),
        manifest("alpha", "1.0.0", &[]).as_bytes(),
    );
    // 64 MiB of zeros compress to about 64 KiB; the limit is 1 MiB.
    let bomb = tar.zeros_gz(&format!("{TOP}/zeros"), 64 << 20);
    assert!(bomb.len() < 1 << 20);
    let m = refused_with(
        db,
        |c| c.limits.unpacked_bytes = ByteSize(1 << 20),
        bomb,
        StatusCode::PAYLOAD_TOO_LARGE,
        "unpacked_too_large",
    )
    .await;
    assert!(m.contains("1048576"), "{m}");
}

async fn too_many_entries_are_refused(db: Way) {
    let body = valid_plus(|mut t| {
        for i in 0..20 {
            t = t.file(&format!("{TOP}/f{i}"), b"x");
        }
        t
    });
    refused_with(
        db,
        |c| c.limits.entries = 10,
        body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_entries",
    )
    .await;
}

async fn truncated_archive_is_refused(db: Way) {
    let mut body = package("alpha", "1.0.0");
    body.truncate(body.len() / 2);
    refused(db, body, "truncated_archive").await;
}

async fn not_gzip_is_refused(db: Way) {
    refused(
        db,
        b"this is plain text, not an archive".to_vec(),
        "not_gzip",
    )
    .await;
}

async fn gzip_that_is_not_tar_is_refused(db: Way) {
    let body = gzip(&b"hello world, this is not a tar stream at all. ".repeat(40));
    refused(db, body, "corrupt_archive").await;
}

async fn empty_body_is_refused(db: Way) {
    refused(db, Vec::new(), "not_gzip").await;
}

async fn missing_manifest_is_refused(db: Way) {
    let body = Tar::new()
        .dir(TOP)
        .file(&format!("{TOP}/build.sh"), b"true")
        .gz();
    let m = refused(db, body, "missing_manifest").await;
    assert!(m.contains("alpha-1.0.0/package.toml"), "{m}");
}

async fn non_utf8_manifest_is_refused(db: Way) {
    let body = Tar::new()
        .dir(TOP)
        .file(
            &format!("{TOP}/package.toml"),
            b"[package]\nname = \"\xff\xfe\"\n",
        )
        .gz();
    let m = refused(db, body, "invalid_manifest").await;
    assert!(m.contains("UTF-8"), "{m}");
}

async fn invalid_toml_manifest_is_refused(db: Way) {
    let m = refused(db, with_manifest("[package\nname = "), "invalid_manifest").await;
    assert!(m.contains("TOML"), "{m}");
}

async fn invalid_name_is_refused(db: Way) {
    let text = manifest("alpha", "1.0.0", &[]).replace("\"alpha\"", "\"Alpha!\"");
    let m = refused(
        db,
        package_with_manifest("Alpha!-1.0.0", &text),
        "invalid_manifest",
    )
    .await;
    assert!(m.contains("package.name"), "{m}");
}

async fn invalid_version_is_refused(db: Way) {
    let text = manifest("alpha", "1.0.0", &[]).replace("\"1.0.0\"", "\"one\"");
    let m = refused(
        db,
        package_with_manifest("alpha-one", &text),
        "invalid_manifest",
    )
    .await;
    assert!(m.contains("package.version"), "{m}");
}

async fn invalid_requirement_is_refused(db: Way) {
    let m = refused(
        db,
        with_manifest(&manifest("alpha", "1.0.0", &[("libwave", "about two")])),
        "invalid_manifest",
    )
    .await;
    assert!(m.contains("dependencies.libwave"), "{m}");
}

async fn missing_maintainers_are_refused(db: Way) {
    let text = manifest("alpha", "1.0.0", &[]).replace("[\"Ada <ada@example.org>\"]", "[]");
    let m = refused(db, with_manifest(&text), "invalid_manifest").await;
    assert!(m.contains("maintainer"), "{m}");
}

async fn directory_manifest_mismatch_is_refused(db: Way) {
    let m = refused(
        db,
        package_with_manifest("alpha-2.0.0", &manifest("alpha", "1.0.0", &[])),
        "directory_mismatch",
    )
    .await;
    assert!(
        m.contains("alpha-2.0.0") && m.contains("alpha-1.0.0"),
        "{m}"
    );
}

async fn self_dependency_is_refused(db: Way) {
    let m = refused(
        db,
        with_manifest(&manifest("alpha", "1.0.0", &[("alpha", "^1")])),
        "invalid_manifest",
    )
    .await;
    assert!(m.contains("itself"), "{m}");
}

async fn unknown_platform_is_refused(db: Way) {
    let text = manifest("alpha", "1.0.0", &[]) + "platforms = [\"plan9-mips\"]\n";
    let m = refused(db, with_manifest(&text), "unknown_platform").await;
    assert!(m.contains("plan9-mips"), "{m}");
}

async fn body_over_the_limit_is_refused(db: Way) {
    let big = Tar::new()
        .dir(TOP)
        .file(
            &format!("{TOP}/package.toml"),
            manifest("alpha", "1.0.0", &[]).as_bytes(),
        )
        .file(&format!("{TOP}/data"), &noise(200 << 10))
        .gz();
    refused_with(
        db,
        |c| c.limits.upload_bytes = ByteSize(64 << 10),
        big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
    )
    .await;
}

async fn streamed_body_over_the_limit_is_refused(db: TestDb) {
    // No Content-Length: the server must count as the body streams in.
    let app = TestApp::spawn_with(db, |c| c.limits.upload_bytes = ByteSize(64 << 10)).await;
    let token = app.user("ada@example.org").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(noise(16 << 10))).collect();
    let resp = app
        .http
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&token)
        .header("content-type", "application/gzip")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upload_too_large");
    app.assert_nothing_stored().await;
    app.assert_serving().await;
}

async fn checksum_mismatch_is_refused((db, via): Way) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    let wrong = "0".repeat(64);
    let a = via
        .upload(&app, Some(&token), package("alpha", "1.0.0"), Some(&wrong))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
    assert_eq!(a.code(), "checksum_mismatch");
    app.assert_nothing_stored().await;
    app.assert_serving().await;
}

async fn missing_token_is_refused((db, via): Way) {
    let app = TestApp::spawn(db).await;
    let a = via
        .upload(&app, None, package("alpha", "1.0.0"), None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.code(), "unauthorized");
    assert_eq!(
        app.get(None, "/api/v1/queue").await.status,
        StatusCode::UNAUTHORIZED
    );
    app.assert_nothing_stored().await;
    app.assert_serving().await;
}

async fn wrong_token_is_refused(db: TestDb) {
    let app = TestApp::spawn(db).await;
    for token in [
        "hq_0000000000000000000000000000000000000000000000000000000000000000",
        "not-a-token",
    ] {
        let a = app.upload(Some(token), package("alpha", "1.0.0")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(a.code(), "unauthorized");
        assert!(a.message().contains("not valid"), "{}", a.message());
    }
    app.assert_nothing_stored().await;
    app.assert_serving().await;
}

async fn fifty_concurrent_uploads_of_one_package_leave_the_last_one(db: TestDb) {
    // All fifty at once from one user: above the default cap per user.
    let app = TestApp::spawn_with(db, |c| c.server.uploads_per_user = 50).await;
    let token = app.user("ada@example.org").await;
    let uploads = (0..50).map(|i| {
        let app = &app;
        let token = &token;
        async move {
            app.upload(Some(token), package("alpha", &format!("1.0.{i}")))
                .await
        }
    });
    let answers = futures::future::join_all(uploads).await;
    let mut ids = Vec::new();
    for a in &answers {
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        ids.push(a.body["id"].as_i64().unwrap());
    }
    let last = *ids.iter().max().unwrap();
    let queue = app.queue().await;
    assert_eq!(queue.len(), 1, "exactly one upload of alpha is pending");
    assert_eq!(queue[0]["id"], last, "the survivor is the last to arrive");
    for id in ids.iter().filter(|&&id| id != last) {
        let u = app
            .get(Some(&token), &format!("/api/v1/uploads/{id}"))
            .await;
        assert_eq!(u.body["state"], "superseded", "upload {id}");
    }
    app.assert_serving().await;
}

/// Incompressible bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
