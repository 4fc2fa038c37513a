//! Connections that send nothing: an upload whose body goes quiet is
//! dropped after `[server] body_timeout` with its partial file removed;
//! one user gets `[server] uploads_per_user` uploads at once; at most
//! `[server] max_connections` connections are served, and one idle both
//! ways for `[server] idle_timeout` is closed. The server keeps serving
//! other clients throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::on_both_databases;
use crate::support::archives::package;
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    an_upload_that_goes_quiet_is_closed_and_its_partial_file_removed,
    the_fifth_upload_of_a_user_is_refused_while_hundreds_of_connections_idle,
    connections_past_the_cap_wait_until_one_is_idle_too_long,
);

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// A connection that sent the headers of a 1 MiB upload and its first
/// 1,000 bytes, then nothing.
async fn idle_upload(app: &TestApp, token: &str) -> TcpStream {
    let addr = addr(app);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/gzip\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[0x1f; 1000]).await.unwrap();
    conn
}

/// A connection that sent half of a request's headers, then nothing.
async fn half_headers(app: &TestApp) -> TcpStream {
    let addr = addr(app);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

/// What the server sent before closing `conn`, within `limit`.
async fn until_closed(mut conn: TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    match tokio::time::timeout(limit, conn.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

/// `/healthz` and a whole upload from another user, on fresh connections.
async fn assert_others_served(app: &TestApp, who: &str, version: &str) {
    app.assert_serving().await;
    let token = app.user(who).await;
    let name = who.split('@').next().unwrap();
    let ok = app.upload(Some(&token), package(name, version)).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
}

async fn an_upload_that_goes_quiet_is_closed_and_its_partial_file_removed(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.server.body_timeout = Duration::from_secs(1)).await;
    let token = app.user("ada@example.org").await;
    let conn = idle_upload(&app, &token).await;
    wait_until(
        async || app.app.storage.count_incoming().unwrap() == 1,
        Duration::from_secs(30),
    )
    .await
    .expect("the upload's partial file appears in incoming/");

    let answer = until_closed(conn, Duration::from_secs(30))
        .await
        .expect("the server closes the quiet upload");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(answer.contains("nothing was received for 1s"), "{answer}");
    app.assert_nothing_stored().await;
    assert_others_served(&app, "bob@example.org", "1.0.0").await;
}

async fn the_fifth_upload_of_a_user_is_refused_while_hundreds_of_connections_idle(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    // Four uploads that send nothing more hold ada's slots.
    let mut quiet = Vec::new();
    for _ in 0..4 {
        quiet.push(idle_upload(&app, &token).await);
    }
    wait_until(
        async || app.app.storage.count_incoming().unwrap() == 4,
        Duration::from_secs(30),
    )
    .await
    .expect("four uploads are in progress");

    // Hundreds more of hers are refused at once, and closed.
    let refused = Arc::new(AtomicUsize::new(0));
    let mut answers = Vec::new();
    for _ in 0..200 {
        let conn = idle_upload(&app, &token).await;
        let refused = refused.clone();
        answers.push(tokio::spawn(async move {
            let answer = until_closed(conn, Duration::from_secs(60)).await;
            if answer.is_some_and(|a| a.starts_with("HTTP/1.1 429")) {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // And hundreds of connections idle before their headers end.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(half_headers(&app).await);
    }
    for answer in answers {
        answer.await.unwrap();
    }
    assert_eq!(refused.load(Ordering::Relaxed), 200);

    let fifth = app.upload(Some(&token), package("alpha", "1.0.0")).await;
    assert_eq!(
        fifth.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        fifth.body
    );
    assert_eq!(fifth.code(), "too_many_uploads");
    assert!(fifth.message().contains("4 uploads"), "{}", fifth.message());
    assert_eq!(app.app.storage.count_incoming().unwrap(), 4);
    assert_others_served(&app, "bob@example.org", "1.0.0").await;

    // Her quiet uploads end: she may upload again.
    drop(quiet);
    let taken = wait_until(
        async || {
            let a = app.upload(Some(&token), package("alpha", "1.0.0")).await;
            (a.status == StatusCode::CREATED).then_some(a)
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(taken.is_some(), "ada's slots were never freed");
    drop(idle);
}

async fn connections_past_the_cap_wait_until_one_is_idle_too_long(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| {
        c.server.max_connections = 8;
        c.server.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(half_headers(&app).await);
    }
    // A ninth client is served once the idle ones are closed, not before:
    // by the time it is answered, they are closed already.
    let served = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the ninth client is served");
    assert_eq!(served.status(), StatusCode::OK);
    let mut first = idle.remove(0);
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(500), first.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the ninth client was served while eight connections were open: {read:?}"
    );
    for conn in idle {
        let answer = until_closed(conn, Duration::from_secs(30))
            .await
            .expect("the idle connection was closed");
        assert!(answer.is_empty(), "no answer to half a request: {answer}");
    }
}
