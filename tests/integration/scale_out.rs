//! Scale-out (SPEC section 10): servers and platform workers as separate
//! processes on one PostgreSQL database, the workers with data directories
//! of their own, fetching archives from a server over HTTP. These run when
//! `HOLDQ_TEST_POSTGRES_URL` is set (always in CI); the archive endpoint's
//! rules run on both databases.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::process::{
    ServerProcess, WorkerProcess, index_is_whole, still_running, try_upload_to, upload_to,
    wait_running,
};
use crate::support::smtp::{self, Inbox};
use crate::support::{TestApp, TestDb, wait_until};

/// A server config with `platforms` checked by workers elsewhere only
/// (`local_workers` each), mail to `smtp_port` when given.
fn server_config(
    dir: &Path,
    platforms: &[&str],
    local_workers: u32,
    smtp_port: Option<u16>,
) -> std::path::PathBuf {
    let mut text = String::new();
    if let Some(port) = smtp_port {
        text.push_str(&format!(
            "[mail]\nsmtp_url = \"smtp://127.0.0.1:{port}\"\n\n"
        ));
    }
    for p in platforms {
        text.push_str(&format!(
            "[[platform]]\nname = \"{p}\"\nlocal_workers = {local_workers}\ntimeout = \"120s\"\n\n"
        ));
    }
    let path = dir.join(format!("holdq-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A test database and this process on it (same platforms, so it may take
/// uploads out of the queue), a server process checking `platforms` only
/// on workers elsewhere, a maintainer's and a worker's token.
struct Cluster {
    app: TestApp,
    ada: String,
    farm: String,
    data: PathBuf,
    config: PathBuf,
    server: ServerProcess,
}

impl Cluster {
    async fn start(db: TestDb, platforms: &[&str], smtp_port: Option<u16>) -> Self {
        let names: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
        let app = TestApp::spawn_with(db, move |c| {
            c.platforms = names.iter().map(|n| crate::support::platform(n)).collect();
        })
        .await;
        let ada = app.user("ada@example.org").await;
        let farm = worker_token(&app).await;
        let data = app.app.config.data_dir.clone();
        let config = server_config(data.parent().unwrap(), platforms, 0, smtp_port);
        let server =
            ServerProcess::start_with_config(&data, &app.database_url, None, Some(&config)).await;
        Self {
            app,
            ada,
            farm,
            data,
            config,
            server,
        }
    }
}

/// A worker for `platform` on "another machine": `dir` is all its own.
fn remote(
    platform: &str,
    server: &ServerProcess,
    farm: &str,
    dir: &Path,
    app: &TestApp,
) -> WorkerProcess {
    WorkerProcess::start_remote(platform, &server.base, farm, dir, &app.database_url)
}

async fn worker_token(app: &TestApp) -> String {
    holdq::service::users::add_user(
        &app.app.db,
        "farm@example.org",
        holdq::service::users::Role::Worker,
    )
    .await
    .expect("a worker account")
    .1
}

fn check<'a>(view: &'a Value, kind: &str, platform: &str) -> &'a Value {
    view["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind && c["platform"] == platform)
        .unwrap_or_else(|| panic!("no {kind}@{platform} in {view:#}"))
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(holdq_postgres), ignore = "needs HOLDQ_TEST_POSTGRES_URL")]
async fn workers_on_other_machines_check_both_platforms_over_http() {
    let db = TestDb::postgres_configured();
    let Cluster {
        app,
        ada,
        farm,
        data,
        server,
        ..
    } = Cluster::start(db, &["linux-a", "linux-b"], None).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _a = remote("linux-a", &server, &farm, dir_a.path(), &app);
    let _b = remote("linux-b", &server, &farm, dir_b.path(), &app);

    let lib = upload_to(
        &server.base,
        &ada,
        package_building(
            "libwave",
            "1.0.0",
            &[],
            "echo wave > $HOLDQ_DESTDIR/wave",
            None,
        ),
    )
    .await;
    let v = app.wait_for_verdict(lib).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    // The dependent's build needs the library, fetched over HTTP as well.
    let synth = upload_to(
        &server.base,
        &ada,
        package_building(
            "synth",
            "1.0.0",
            &[("libwave", "^1")],
            "test -f $HOLDQ_DEPS/libwave/package.toml && grep -q 'libwave = \"1.0.0\"' $HOLDQ_DEPS/resolved.toml",
            None,
        ),
    )
    .await;
    let v = app.wait_for_verdict(synth).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    for platform in ["linux-a", "linux-b"] {
        let build = check(&v, "build", platform);
        assert_eq!(build["state"], "passed", "{build:#}");
    }

    // Each worker holds the archives it fetched, by hash; the upload is
    // downloadable from stable with the same bytes.
    let lib_sha = app.upload_view(lib).await["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let synth_sha = v["sha256"].as_str().unwrap().to_owned();
    for dir in [dir_a.path(), dir_b.path()] {
        let cached = files_in(&dir.join("cache"));
        for sha in [&lib_sha, &synth_sha] {
            assert!(
                cached.contains(&format!("{sha}.tar.gz")),
                "{sha} not in {}: {cached:?}",
                dir.display()
            );
        }
    }
    // No check ran on the server's disk: the work happened in the workers' own directories.
    assert!(
        !data.join("work").exists(),
        "a check ran in the server's data directory"
    );
    assert!(dir_a.path().join("work").exists() && dir_b.path().join("work").exists());
    let (index, whole) = published_index(&app, &data).await;
    assert!(whole, "{index:#}");
    assert_eq!(
        index["packages"]["synth"]["versions"][0]["sha256"],
        synth_sha.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(holdq_postgres), ignore = "needs HOLDQ_TEST_POSTGRES_URL")]
async fn a_superseding_upload_kills_the_build_on_a_remote_worker() {
    let db = TestDb::postgres_configured();
    let Cluster {
        app,
        ada,
        farm,
        server,
        ..
    } = Cluster::start(db, &["linux-a"], None).await;
    let dir = tempfile::tempdir().unwrap();
    let _worker = remote("linux-a", &server, &farm, dir.path(), &app);

    let marker = format!("sleep {}", 700_000 + rand::random::<u32>() % 100_000);
    let old = upload_to(
        &server.base,
        &ada,
        package_building("slow", "1.0.0", &[], &marker, None),
    )
    .await;
    assert!(
        wait_running(&marker, true, Duration::from_secs(60)).await,
        "the old build never started on the remote worker"
    );
    let new = upload_to(
        &server.base,
        &ada,
        package_building("slow", "1.0.1", &[], "true", None),
    )
    .await;
    assert!(
        wait_running(&marker, false, Duration::from_secs(10)).await,
        "the superseded build is still running on the remote worker"
    );
    let v = app.wait_for_verdict(new).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    let old_view = app.upload_view(old).await;
    assert_eq!(old_view["state"], "superseded");
    assert!(old_view["verdict"].is_null(), "{old_view:#}");
}

/// Messages the inbox received for `subject_part`, waiting (bounded) for
/// the first and then until no delivery is left that could send another
/// (no pending email, no open job on the mail queue).
async fn settled_messages(app: &TestApp, inbox: &Inbox, subject_part: &str) -> usize {
    let count = || {
        inbox
            .messages()
            .iter()
            .filter(|m| {
                m.header("Subject")
                    .is_some_and(|s| s.contains(subject_part))
            })
            .count()
    };
    let settled = wait_until(
        async || {
            count() > 0
                && app.pending_emails().await == 0
                && app.open_jobs_in(holdq::jobs::MAIL_QUEUE).await == 0
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(settled.is_some(), "the mail never settled");
    count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(holdq_postgres), ignore = "needs HOLDQ_TEST_POSTGRES_URL")]
async fn a_worker_killed_mid_check_is_replaced_and_the_verdict_is_given_once() {
    let db = TestDb::postgres_configured();
    let (inbox, port) = smtp::start(None);
    let Cluster {
        app,
        ada,
        farm,
        server,
        ..
    } = Cluster::start(db, &["linux-a"], Some(port)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = remote("linux-a", &server, &farm, dir.path(), &app);

    // The first try hangs; any later one passes.
    let marker = format!("sleep {}", 600_000 + rand::random::<u32>() % 100_000);
    let id = upload_to(
        &server.base,
        &ada,
        package_building(
            "victim",
            "1.0.0",
            &[],
            &format!("if [ \"$HOLDQ_TRY\" = 1 ]; then {marker}; fi"),
            None,
        ),
    )
    .await;
    assert!(
        wait_running(&marker, true, Duration::from_secs(60)).await,
        "the build never started"
    );
    first.kill();
    // Its build dies with it.
    assert!(
        wait_running(&marker, false, Duration::from_secs(10)).await,
        "the killed worker's build outlived it"
    );
    assert!(app.upload_view(id).await["verdict"].is_null());

    // A worker started afresh on the same host (a new process, a new name)
    // takes the check over once the old one's heartbeat has lapsed.
    let _second = remote("linux-a", &server, &farm, dir.path(), &app);
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    let build = check(&v, "build", "linux-a");
    assert_eq!(build["state"], "passed", "{build:#}");

    let verdicts: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM verdicts WHERE upload_id = $1")
        .bind(id)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert_eq!(verdicts.0, 1);
    assert_eq!(settled_messages(&app, &inbox, "victim 1.0.0").await, 1);

    // And the new worker keeps taking work.
    let next = upload_to(
        &server.base,
        &ada,
        package_building("victim", "1.0.1", &[], "true", None),
    )
    .await;
    let v = app.wait_for_verdict(next).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    assert!(!still_running(&marker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(holdq_postgres), ignore = "needs HOLDQ_TEST_POSTGRES_URL")]
async fn two_servers_on_one_database_keep_one_upload_per_package_and_a_whole_index() {
    let db = TestDb::postgres_configured();
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let data = app.app.config.data_dir.clone();
    let config = server_config(data.parent().unwrap(), &["linux-a"], 1, None);
    // Both serve from the same (shared) data directory.
    let one = ServerProcess::start_with_config(&data, &app.database_url, None, Some(&config)).await;
    let two = ServerProcess::start_with_config(&data, &app.database_url, None, Some(&config)).await;

    let packages = ["alpha", "beta", "gamma", "delta"];
    let mut uploads = Vec::new();
    for round in 0..3 {
        let mut batch = Vec::new();
        for (i, name) in packages.iter().enumerate() {
            let base = if (i + round) % 2 == 0 {
                &one.base
            } else {
                &two.base
            };
            let body = package_building(name, &format!("1.{round}.0"), &[], "true", None);
            let (base, token) = (base.clone(), ada.clone());
            batch.push(tokio::spawn(async move {
                try_upload_to(&base, &token, body).await
            }));
            // The same package to the other server at the same moment.
            let other = if (i + round) % 2 == 0 {
                &two.base
            } else {
                &one.base
            };
            let body = package_building(name, &format!("1.{round}.1"), &[], "true", None);
            let (other, token) = (other.clone(), ada.clone());
            batch.push(tokio::spawn(async move {
                try_upload_to(&other, &token, body).await
            }));
        }
        for task in batch {
            let (status, body) = task.await.unwrap();
            // A twin accepted before its sibling arrived makes the sibling
            // too low: refused, by rule, and nothing stored.
            if status == StatusCode::CONFLICT && body["error"]["code"] == "version_too_low" {
                continue;
            }
            assert_eq!(status, StatusCode::CREATED, "{body:#}");
            uploads.push(body["id"].as_i64().unwrap());
        }
    }

    // Wait until nothing is pending.
    let pending = async || -> i64 {
        sqlx::query_as::<_, (i64,)>(
            "SELECT COUNT(*) FROM uploads WHERE state IN ('queued', 'checking')",
        )
        .fetch_one(app.app.db.pool())
        .await
        .unwrap()
        .0
    };
    let drained = wait_until(async || pending().await == 0, Duration::from_secs(120)).await;
    assert!(
        drained.is_some(),
        "{} uploads still pending",
        pending().await
    );

    let rows: Vec<(String, i64, String, String)> = sqlx::query_as(
        "SELECT p.name, u.id, u.version, u.state FROM uploads u JOIN packages p ON p.id = u.package_id ORDER BY u.id",
    )
    .fetch_all(app.app.db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), uploads.len());
    for name in packages {
        let of: Vec<_> = rows.iter().filter(|r| r.0 == name).collect();
        let live: Vec<_> = of.iter().filter(|r| r.3 != "superseded").collect();
        // Uploads of one round may be decided before the next arrives: each
        // round ends with one survivor, and the last arrival always survives.
        assert!(!live.is_empty(), "{name}: {of:?}");
        let last = of.iter().map(|r| r.1).max().unwrap();
        assert!(
            live.iter().any(|r| r.1 == last),
            "{name}: the last upload was superseded: {of:?}"
        );
        for r in &live {
            assert_eq!(r.3, "accepted", "{name}: {of:?}");
        }
        // Never two unsuperseded uploads pending at once: the survivors
        // were accepted in increasing version order.
        let mut versions: Vec<semver::Version> =
            live.iter().map(|r| r.2.parse().unwrap()).collect();
        let sorted = {
            let mut v = versions.clone();
            v.sort();
            v
        };
        assert_eq!(versions, sorted, "{name}: {of:?}");
        versions.dedup();
        assert_eq!(versions.len(), live.len());
    }

    // The index on the shared disk is whole and says what the database says.
    let (index, whole) = published_index(&app, &data).await;
    assert!(whole, "{index:#}");
    for name in packages {
        let in_db: Vec<String> = rows
            .iter()
            .filter(|r| r.0 == name && r.3 == "accepted")
            .map(|r| r.2.clone())
            .collect();
        let in_index: Vec<String> = index["packages"][name]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(in_index, in_db, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(holdq_postgres), ignore = "needs HOLDQ_TEST_POSTGRES_URL")]
async fn a_remote_worker_waits_out_a_server_restart_while_fetching() {
    let db = TestDb::postgres_configured();
    let Cluster {
        app,
        ada,
        farm,
        data,
        config,
        mut server,
    } = Cluster::start(db, &["linux-a"], None).await;
    let port = server.port();
    let dir = tempfile::tempdir().unwrap();
    let worker = remote("linux-a", &server, &farm, dir.path(), &app);
    // Once the worker has checked its token and registered, the server goes.
    wait_for_rows(
        &app,
        "SELECT COUNT(*) FROM check_workers WHERE platform = 'linux-a'",
        "the worker never registered",
    )
    .await;
    server.kill();

    // The upload arrives through another server on the same database and
    // leaves the queue; the worker takes the check but cannot download.
    let id = app
        .upload_ok(
            &ada,
            package_building("patient", "1.0.0", &[], "true", None),
        )
        .await;
    holdq::service::checks::start_queued(&app.app)
        .await
        .unwrap();
    wait_for_rows(
        &app,
        "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = 'holdq-checks-linux-a' AND status = 'Running'",
        "the worker never took the check",
    )
    .await;
    wait_until(
        async || worker.log().contains("archive download failed"),
        Duration::from_secs(30),
    )
    .await
    .expect("the worker never tried to download while the server was away");

    // The server comes back at its address: the check completes, accepted.
    let _back =
        ServerProcess::start_on_port(port, &data, &app.database_url, None, Some(&config)).await;
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(holdq_postgres), ignore = "needs HOLDQ_TEST_POSTGRES_URL")]
async fn a_check_whose_worker_cannot_start_it_gets_a_new_job() {
    let db = TestDb::postgres_configured();
    let Cluster {
        app,
        ada,
        farm,
        server,
        ..
    } = Cluster::start(db, &["linux-a"], None).await;
    let dir = tempfile::tempdir().unwrap();
    let _worker = remote("linux-a", &server, &farm, dir.path(), &app);
    wait_for_rows(
        &app,
        "SELECT COUNT(*) FROM check_workers WHERE platform = 'linux-a'",
        "the worker never registered",
    )
    .await;
    // The worker's account loses its right to archives (a misconfigured
    // farm): the server refuses the download, and the check cannot start.
    let set_worker = |on: i64| {
        sqlx::query("UPDATE users SET is_worker = $1 WHERE email = 'farm@example.org'")
            .bind(on)
            .execute(app.app.db.pool())
    };
    set_worker(0).await.unwrap();
    let id = upload_to(
        &server.base,
        &ada,
        package_building("stubborn", "1.0.0", &[], "true", None),
    )
    .await;
    wait_for_rows(
        &app,
        "SELECT COUNT(*) FROM checks WHERE kind = 'build' AND start_failures > 0",
        "the failed start was not recorded",
    )
    .await;
    let build = check(&app.upload_view(id).await, "build", "linux-a").clone();
    assert_eq!(build["state"], "pending", "{build:#}");
    assert!(
        build["summary"].as_str().unwrap().contains("403"),
        "the check says why it waits: {build:#}"
    );
    // An infrastructure error, retried with backoff on any worker.
    assert_eq!(build["infra"]["reason"], "fetch", "{build:#}");
    assert!(
        build["infra"]["line"]
            .as_str()
            .unwrap()
            .contains("(retry in "),
        "{build:#}"
    );

    // Fixed: the sweep gives the check a new job, and it passes.
    set_worker(1).await.unwrap();
    let v = app.wait_for_verdict(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
}

/// The stable index the database serves, and whether it is whole.
async fn published_index(app: &TestApp, data: &Path) -> (Value, bool) {
    index_is_whole(&app.database_url, data).await
}

/// Waits (30 s at most) until the count `sql` selects is not zero.
async fn wait_for_rows(app: &TestApp, sql: &'static str, never: &str) {
    let seen = wait_until(
        async || {
            let (n,): (i64,) = sqlx::query_as(sql)
                .fetch_one(app.app.db.pool())
                .await
                .unwrap();
            n > 0
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(seen.is_some(), "{never}");
}

on_both_databases!(upload_archives_are_for_workers_operators_and_owners,);

async fn upload_archives_are_for_workers_operators_and_owners(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let eve = app.user("eve@example.org").await;
    let farm = worker_token(&app).await;
    let body = package_building("wave", "1.0.0", &[], "true", None);
    let id = app.upload_ok(&ada, body.clone()).await;
    let path = format!("/api/v1/uploads/{id}/archive");
    let fetch = |token: Option<String>| {
        let req = app.http.get(app.url(&path));
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        req.send()
    };
    for (who, token) in [
        ("worker", &farm),
        ("operator", &app.operator),
        ("owner", &ada),
    ] {
        let resp = fetch(Some(token.clone())).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{who}");
        let sha = resp.headers()["x-checksum-sha256"]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(
            bytes.as_ref(),
            body.as_slice(),
            "{who} gets the archive as uploaded"
        );
        assert_eq!(
            sha,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
        );
    }
    let resp = fetch(Some(eve)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = fetch(None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A worker's token reads; it does not upload.
    let a = app
        .upload(
            Some(&farm),
            package_building("sneaky", "1.0.0", &[], "true", None),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), "worker_token", "{:?}", a.body);
}
