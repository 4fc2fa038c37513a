//! A full disk (SPEC section 3: nothing accepted is lost, nothing refused
//! is kept): the data directory on a small tmpfs, mounted by the test as
//! root (the tests are reported ignored otherwise). Uploads that do not
//! fit get `507 insufficient_storage`, before a byte is written when their
//! length is known; `/healthz` says degraded below the reserve; uploads
//! work again once space is freed; stable never holds a half archive.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use holdq::config::ByteSize;
use reqwest::StatusCode;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::archives::package;
use crate::support::{TestApp, TestDb, wait_until};

/// Each test on SQLite and on PostgreSQL, as root only.
macro_rules! as_root_on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(holdq_root), ignore = "mounts a small tmpfs: needs root")]
            async fn sqlite() {
                super::$name($crate::support::TestDb::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(all(holdq_root, holdq_postgres)),
                ignore = "mounts a small tmpfs: needs root and HOLDQ_TEST_POSTGRES_URL"
            )]
            async fn postgres() {
                super::$name($crate::support::TestDb::postgres_configured()).await
            }
        }
    )*};
}

as_root_on_both_databases!(
    an_upload_that_does_not_fit_is_refused_before_a_byte_is_written,
    a_chunked_upload_that_fills_the_disk_half_way_leaves_nothing,
    healthz_says_degraded_below_the_reserve_until_space_is_freed,
);

/// A tmpfs of `size` bytes mounted on `DIR/data`, the test app's data
/// directory (the SQLite file stays outside it, in `DIR`).
struct SmallDisk {
    data: PathBuf,
    root: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &TempDir, size: u64) -> Self {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &data,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .expect("mount a tmpfs (as root)");
        Self {
            data,
            root: dir.path().to_owned(),
        }
    }

    fn filler(&self) -> PathBuf {
        self.data.join("filler")
    }

    /// Writes into `data/filler` until the disk is full.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0x5a; 64 << 10];
        loop {
            if let Err(e) = file.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
                break;
            }
        }
    }

    /// Writes `len` bytes into `data/filler`.
    fn fill_with(&self, len: usize) {
        std::fs::write(self.filler(), vec![0x5a; len]).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn incoming(&self) -> Vec<(PathBuf, u64)> {
        std::fs::read_dir(self.data.join("incoming"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().len())
            })
            .collect()
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.data, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A server whose data directory is a fresh tmpfs of `size` bytes with a
/// free-space reserve of `reserve` bytes; a maintainer's token.
async fn small_server(db: TestDb, size: u64, reserve: u64) -> (TestApp, SmallDisk, String) {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir, size);
    let app = TestApp::spawn_in(db, dir, |c| c.storage.reserve = ByteSize(reserve)).await;
    let token = app.user("ada@example.org").await;
    (app, disk, token)
}

/// Sends only the headers of an upload of `length` bytes and reads the
/// answer: a server that waited for the body would not answer at all.
async fn answer_to_headers_only(app: &TestApp, token: &str, length: u64) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/gzip\r\nContent-Length: {length}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .expect("the server answers without waiting for the body")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn an_upload_that_does_not_fit_is_refused_before_a_byte_is_written(db: TestDb) {
    let (app, disk, token) = small_server(db, 16 << 20, 8 << 20).await;
    let answer = answer_to_headers_only(&app, &token, 10 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");
    assert!(answer.contains("\"insufficient_storage\""), "{answer}");
    assert!(answer.contains("out of storage space"), "{answer}");
    assert!(disk.incoming().is_empty(), "nothing was written");
    app.assert_nothing_stored().await;

    // Without a length: refused once it crosses the reserve.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..9).map(|_| Ok(vec![7u8; 1 << 20])).collect();
    let resp = app
        .http
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&token)
        .header("content-type", "application/gzip")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    app.assert_nothing_stored().await;

    // An upload that fits is taken.
    let ok = app.upload(Some(&token), package("alpha", "1.0.0")).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
}

async fn a_chunked_upload_that_fills_the_disk_half_way_leaves_nothing(db: TestDb) {
    let (app, disk, token) = small_server(db, 16 << 20, 0).await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let request = app
        .http
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&token)
        .header("content-type", "application/gzip")
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let request = tokio::spawn(request);
    tx.unbounded_send(Ok(vec![7u8; 1 << 20])).unwrap();
    wait_until(
        async || disk.incoming().iter().any(|(_, len)| *len >= 1 << 20),
        Duration::from_secs(30),
    )
    .await
    .expect("the first MiB reaches incoming/");

    // The disk fills up under the upload; its next chunk does not fit.
    disk.fill();
    tx.unbounded_send(Ok(vec![7u8; 256 << 10])).unwrap();
    let resp = request.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("out of storage space"),
        "{body}"
    );
    assert!(disk.incoming().is_empty(), "nothing left in incoming/");
    app.assert_nothing_stored().await;
    drop(tx);

    // Space is freed: uploads work again.
    disk.free();
    let ok = app.upload(Some(&token), package("alpha", "1.0.0")).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
}

async fn healthz_says_degraded_below_the_reserve_until_space_is_freed(db: TestDb) {
    let (app, disk, token) = small_server(db, 16 << 20, 4 << 20).await;
    let health = || async {
        let resp = reqwest::get(app.url("/healthz")).await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    };
    assert_eq!(health().await, (StatusCode::OK, "ok\n".to_owned()));

    disk.fill_with(13 << 20);
    let (status, text) = health().await;
    assert_eq!(
        status,
        StatusCode::OK,
        "reads and checks still work: {text}"
    );
    assert!(text.starts_with("degraded:"), "{text}");
    assert!(text.contains(disk.data.to_str().unwrap()), "{text}");
    assert!(text.contains("below the reserve of 4MiB"), "{text}");
    let refused = app.upload(Some(&token), package("alpha", "1.0.0")).await;
    assert_eq!(refused.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(refused.code(), "insufficient_storage");
    app.assert_nothing_stored().await;

    disk.free();
    assert_eq!(health().await, (StatusCode::OK, "ok\n".to_owned()));
    let ok = app.upload(Some(&token), package("alpha", "1.0.0")).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
}

#[test]
#[cfg_attr(not(holdq_root), ignore = "mounts a small tmpfs: needs root")]
fn storing_into_a_full_stable_directory_leaves_no_half_written_archive() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir, 8 << 20);
    let stable = holdq::storage::stable::StableStore::open(&disk.data).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let blob = outside.path().join("alpha.tar.gz");
    let bytes: Vec<u8> = (0..2 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&blob, &bytes).unwrap();

    disk.fill();
    assert!(stable.store_archive(&blob, "alpha", "1.0.0").is_err());
    let dir_of = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let archives = disk.data.join("stable/archives/alpha");
    assert_eq!(
        dir_of(&archives),
        Vec::<PathBuf>::new(),
        "no archive, no temp file"
    );

    disk.free();
    let stored = stable.store_archive(&blob, "alpha", "1.0.0").unwrap();
    assert_eq!(std::fs::read(&stored).unwrap(), bytes, "the whole archive");
    assert_eq!(dir_of(&archives), vec![stored]);
}
