//! The integrity checks (SPEC section 4) with real build processes in the
//! real sandbox: verdicts, pass marks, revdeps, limits, supersession.

use std::time::Duration;

use holdq::config::{ByteSize, PlatformConfig};
use holdq::domain::check::CheckKind;
use serde_json::Value;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::process::{still_running, wait_running};
use crate::support::{TestApp, TestDb, two_platforms, wait_until};

on_both_databases!(
    a_package_with_a_dependency_is_accepted_on_two_platforms_and_downloadable,
    a_build_failing_on_one_platform_is_rejected_at_the_full_pass_mark,
    a_build_failing_on_one_platform_is_accepted_at_a_threshold_its_score_reaches,
    a_library_that_breaks_a_stable_dependent_is_rejected_by_revdeps,
    a_dependent_that_was_already_broken_is_not_counted,
    a_resolve_failure_names_the_missing_dependency,
    a_failure_after_stable_moved_under_the_upload_says_so,
    a_build_that_sleeps_forever_is_killed_at_its_time_limit,
    a_build_cannot_reach_the_network_or_write_outside_its_directory,
    a_fork_bomb_and_a_memory_hog_are_contained,
    a_superseding_upload_kills_the_running_build_of_the_old_one,
);

fn check<'a>(upload: &'a Value, label: &str) -> &'a Value {
    upload["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            let p = c["platform"].as_str().unwrap();
            let l = if p.is_empty() {
                c["kind"].as_str().unwrap().to_owned()
            } else {
                format!("{}@{p}", c["kind"].as_str().unwrap())
            };
            l == label
        })
        .unwrap_or_else(|| panic!("no check {label} in {upload:#}"))
}

async fn a_package_with_a_dependency_is_accepted_on_two_platforms_and_downloadable(db: TestDb) {
    let app = TestApp::spawn_with(db, two_platforms).await;
    app.start_workers().await;
    let ada = app.user("ada@example.org").await;
    let lib = app
        .upload_ok(
            &ada,
            package_building(
                "libwave",
                "1.0.0",
                &[],
                "mkdir -p $HOLDQ_DESTDIR/lib && echo wave > $HOLDQ_DESTDIR/lib/wave",
                Some("true"),
            ),
        )
        .await;
    let v = app.wait_for_verdict(lib).await;
    assert_eq!(v["state"], "accepted", "{v:#}");

    // The dependent sees its dependency unpacked, resolved.toml and its platform.
    let build = "test -f $HOLDQ_DEPS/libwave/package.toml && grep -q 'libwave = \"1.0.0\"' $HOLDQ_DEPS/resolved.toml \
                 && echo $HOLDQ_PLATFORM > $HOLDQ_DESTDIR/platform";
    let app_id = app
        .upload_ok(
            &ada,
            package_building("player", "0.1.0", &[("libwave", "^1")], build, None),
        )
        .await;
    let v = app.wait_for_verdict(app_id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    assert_eq!(v["verdict"]["score"], 1.0);
    for p in ["linux-a", "linux-b"] {
        let b = check(&v, &format!("build@{p}"));
        assert_eq!(b["state"], "passed", "{b:#}");
        assert_eq!(b["metadata"]["files"], serde_json::json!(["platform"]));
        assert_eq!(b["metadata"]["resolved"]["libwave"], "1.0.0");
        assert!(b["metadata"]["installed_bytes"].as_u64().unwrap() > 0);
    }
    // In the stable index (published right after the verdict's commit),
    // with its archive downloadable.
    let index = wait_until(
        async || {
            let index = app.get(None, "/api/v1/index").await.body;
            (index["serial"] == 2).then_some(index)
        },
        Duration::from_secs(10),
    )
    .await
    .expect("the index is published at serial 2");
    assert_eq!(index["serial"], 2);
    assert_eq!(
        index["packages"]["player"]["versions"][0]["dependencies"]["libwave"],
        "^1"
    );
    let archive = app
        .http
        .get(app.url("/api/v1/packages/player/0.1.0/archive"))
        .send()
        .await
        .unwrap();
    assert_eq!(archive.status(), 200);
    let bytes = archive.bytes().await.unwrap();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        v["sha256"].as_str().unwrap()
    );
    let lib_view = app.get(None, "/api/v1/packages/libwave").await.body;
    assert_eq!(lib_view["dependents"], serde_json::json!(["player"]));
    assert_eq!(app.get(None, "/api/v1/packages/ghost").await.status, 404);
}

const FAILS_ON_B: &str = "test \"$HOLDQ_PLATFORM\" != linux-b";

async fn a_build_failing_on_one_platform_is_rejected_at_the_full_pass_mark(db: TestDb) {
    let app = TestApp::spawn_with(db, two_platforms).await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(
            &ada,
            package_building("flaky", "1.0.0", &[], FAILS_ON_B, None),
        )
        .await;
    app.drain().await;
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "rejected", "{v:#}");
    assert_eq!(check(&v, "build@linux-b")["state"], "failed");
    assert_eq!(check(&v, "build@linux-a")["state"], "passed");
    assert_eq!(check(&v, "revdeps@linux-b")["state"], "skipped");
    assert!(
        v["verdict"]["failed"]
            .as_array()
            .unwrap()
            .contains(&"build@linux-b".into())
    );
    assert_eq!(
        app.get(None, "/api/v1/index").await.body["packages"]["flaky"],
        Value::Null
    );
}

async fn a_build_failing_on_one_platform_is_accepted_at_a_threshold_its_score_reaches(db: TestDb) {
    // validate, resolve, build@a, revdeps@a pass; build@b fails, revdeps@b is skipped: 4/6.
    let app = TestApp::spawn_with(db, |c| {
        two_platforms(c);
        c.passmark.required = vec![CheckKind::Validate, CheckKind::Resolve];
        c.passmark.threshold = 4.0 / 6.0;
    })
    .await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(
            &ada,
            package_building("flaky", "1.0.0", &[], FAILS_ON_B, None),
        )
        .await;
    app.drain().await;
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    let score = v["verdict"]["score"].as_f64().unwrap();
    assert!((score - 4.0 / 6.0).abs() < 1e-9, "{score}");
    assert_eq!(
        app.get(None, "/api/v1/index").await.body["packages"]["flaky"]["versions"][0]["version"],
        "1.0.0"
    );
}

/// lib 1.x ships `api-v1`; the dependent's build needs it.
const NEEDS_API_V1: &str = "test -f $HOLDQ_DEPS/lib/api-v1";

async fn a_library_that_breaks_a_stable_dependent_is_rejected_by_revdeps(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, lib_with_api("1.0.0", true)).await;
    app.drain().await;
    app.upload_ok(
        &ada,
        package_building("user", "1.0.0", &[("lib", "^1")], NEEDS_API_V1, None),
    )
    .await;
    app.drain().await;
    let breaking = app.upload_ok(&ada, lib_with_api("1.1.0", false)).await;
    app.drain().await;
    let v = app.upload_view(breaking).await;
    assert_eq!(v["state"], "rejected", "{v:#}");
    let platform = PlatformConfig::host().name.to_string();
    let revdeps = check(&v, &format!("revdeps@{platform}"));
    assert_eq!(revdeps["state"], "failed");
    assert!(
        revdeps["summary"]
            .as_str()
            .unwrap()
            .contains("broken: user 1.0.0"),
        "{revdeps:#}"
    );
    // A version that keeps the API passes.
    let fine = app.upload_ok(&ada, lib_with_api("1.2.0", true)).await;
    app.drain().await;
    assert_eq!(app.upload_view(fine).await["state"], "accepted");
}

fn lib_with_api(version: &str, api: bool) -> Vec<u8> {
    let build = if api { "touch api-v1" } else { "rm -f api-v1" };
    // The file must be in the archive for dependents to see it: make it part of the package.
    let mut tar = crate::support::archives::Tar::new().dir(&format!("lib-{version}"));
    tar = tar.file(
        &format!("lib-{version}/package.toml"),
        crate::support::archives::manifest("lib", version, &[])
            .replace("sh build.sh", build)
            .as_bytes(),
    );
    if api {
        tar = tar.file(&format!("lib-{version}/api-v1"), b"v1");
    }
    tar.gz()
}

async fn a_dependent_that_was_already_broken_is_not_counted(db: TestDb) {
    // Revdeps weigh nothing here, so a breaking library can reach stable.
    let app = TestApp::spawn_with(db, |c| {
        c.passmark.weights.insert(CheckKind::Revdeps, 0.0);
    })
    .await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, lib_with_api("1.0.0", true)).await;
    app.drain().await;
    app.upload_ok(
        &ada,
        package_building("user", "1.0.0", &[("lib", "^1")], NEEDS_API_V1, None),
    )
    .await;
    app.drain().await;
    let breaking = app.upload_ok(&ada, lib_with_api("1.1.0", false)).await;
    app.drain().await;
    let platform = PlatformConfig::host().name.to_string();
    let first = app.upload_view(breaking).await;
    assert_eq!(first["state"], "accepted", "{first:#}");
    assert_eq!(
        check(&first, &format!("revdeps@{platform}"))["state"],
        "failed"
    );

    // Now `user` fails against stable already: no regression for the next one.
    let next = app.upload_ok(&ada, lib_with_api("1.1.1", false)).await;
    app.drain().await;
    let v = app.upload_view(next).await;
    let revdeps = check(&v, &format!("revdeps@{platform}"));
    assert_eq!(revdeps["state"], "passed", "{revdeps:#}");
    assert!(
        revdeps["summary"]
            .as_str()
            .unwrap()
            .contains("already broken, not counted: user 1.0.0"),
        "{revdeps:#}"
    );
}

async fn a_resolve_failure_names_the_missing_dependency(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(
            &ada,
            package_building("lonely", "1.0.0", &[("ghost", "^2")], "true", None),
        )
        .await;
    app.drain().await;
    let v = app.upload_view(id).await;
    assert_eq!(v["state"], "rejected");
    let resolve = check(&v, "resolve");
    assert_eq!(resolve["state"], "failed");
    assert!(
        resolve["summary"].as_str().unwrap().contains("ghost"),
        "{resolve:#}"
    );
}

async fn a_build_that_sleeps_forever_is_killed_at_its_time_limit(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.platforms[0].timeout = Duration::from_secs(2)).await;
    let ada = app.user("ada@example.org").await;
    let marker = format!("sleep {}", 800_000 + rand::random::<u32>() % 100_000);
    let id = app
        .upload_ok(
            &ada,
            package_building(
                "sleepy",
                "1.0.0",
                &[],
                &format!("{marker} & {marker}"),
                None,
            ),
        )
        .await;
    app.drain().await;
    let v = app.upload_view(id).await;
    let build = check(&v, &format!("build@{}", PlatformConfig::host().name));
    assert_eq!(build["state"], "failed");
    assert!(
        build["summary"].as_str().unwrap().contains("time limit"),
        "{build:#}"
    );
    assert!(
        !still_running(&marker),
        "the whole tree is gone, background child included"
    );
    assert_eq!(v["state"], "rejected");
}

async fn a_build_cannot_reach_the_network_or_write_outside_its_directory(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let net = app
        .upload_ok(
            &ada,
            package_building(
                "netty",
                "1.0.0",
                &[],
                &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'"),
                None,
            ),
        )
        .await;
    // The host's filesystem is visible read-only: writing there fails.
    let outside = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/holdq-escape-{}", rand::random::<u32>()));
    let write = app
        .upload_ok(
            &ada,
            package_building(
                "escapee",
                "1.0.0",
                &[],
                &format!("touch {}", outside.display()),
                None,
            ),
        )
        .await;
    let data_file = app.app.config.data_dir.join("holdq-was-here");
    let data = app
        .upload_ok(
            &ada,
            package_building(
                "snoop",
                "1.0.0",
                &[],
                &format!("touch {}", data_file.display()),
                None,
            ),
        )
        .await;
    app.drain().await;
    for id in [net, write] {
        let v = app.upload_view(id).await;
        assert_eq!(v["state"], "rejected", "{v:#}");
    }
    assert!(!outside.exists());
    // Under /tmp the sandbox has a private tmpfs: the write may succeed
    // there, but never reaches the server's data directory.
    let _ = app.upload_view(data).await;
    assert!(!data_file.exists());
    let v = app.upload_view(net).await;
    let log = check(&v, &format!("build@{}", PlatformConfig::host().name))["log"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        log.contains("unreachable") || log.contains("refused") || log.contains("No such"),
        "{log}"
    );
}

async fn a_fork_bomb_and_a_memory_hog_are_contained(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| {
        c.platforms[0].timeout = Duration::from_secs(5);
        c.platforms[0].memory = ByteSize(256 << 20);
        c.limits.check_processes = 64;
    })
    .await;
    let ada = app.user("ada@example.org").await;
    let bomb = app
        .upload_ok(
            &ada,
            package_building(
                "bomb",
                "1.0.0",
                &[],
                "bomb() { bomb | bomb & }; bomb; sleep 30",
                None,
            ),
        )
        .await;
    let hog = app
        .upload_ok(
            &ada,
            package_building(
                "hog",
                "1.0.0",
                &[],
                "python3 -c 'x = bytearray(1 << 31); print(len(x))'",
                None,
            ),
        )
        .await;
    app.drain().await;
    for id in [bomb, hog] {
        let v = app.upload_view(id).await;
        assert_eq!(v["state"], "rejected", "{v:#}");
    }
    let v = app.upload_view(hog).await;
    let log = check(&v, &format!("build@{}", PlatformConfig::host().name))["log"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        log.contains("MemoryError") || log.contains("Killed") || log.contains("memory"),
        "{log}"
    );
    app.assert_serving().await;
}

async fn a_superseding_upload_kills_the_running_build_of_the_old_one(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.start_workers().await;
    let ada = app.user("ada@example.org").await;
    let marker = format!("sleep {}", 700_000 + rand::random::<u32>() % 100_000);
    let old = app
        .upload_ok(&ada, package_building("slow", "1.0.0", &[], &marker, None))
        .await;
    // Wait until the old build is really running.
    assert!(
        wait_running(&marker, true, Duration::from_secs(60)).await,
        "the build never started"
    );
    let new = app
        .upload_ok(&ada, package_building("slow", "1.0.1", &[], "true", None))
        .await;
    assert!(
        wait_running(&marker, false, Duration::from_secs(5)).await,
        "the old build is still running"
    );
    let v = app.wait_for_verdict(new).await;
    assert_eq!(v["state"], "accepted", "{v:#}");
    let old_view = app.upload_view(old).await;
    assert_eq!(old_view["state"], "superseded");
    assert_eq!(
        old_view["verdict"],
        Value::Null,
        "the superseded upload gets no verdict"
    );
    let build = check(&old_view, &format!("build@{}", PlatformConfig::host().name));
    assert_eq!(build["state"], "halted", "{build:#}");
}

async fn a_failure_after_stable_moved_under_the_upload_says_so(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, lib_with_api("1.0.0", true)).await;
    app.drain().await;
    // `user` is checked while lib 1.0.0 is stable...
    let user = app
        .upload_ok(
            &ada,
            package_building("user", "1.0.0", &[("lib", "^1")], NEEDS_API_V1, None),
        )
        .await;
    crate::support::stable::run_checks_undecided(&app, user).await;
    // ...then lib 1.1.0, which drops the API, reaches stable behind the
    // queue's back before user's verdict: user is rebased, not promoted.
    let lib = app.upload_ok(&ada, lib_with_api("1.1.0", false)).await;
    crate::support::stable::promote_behind_the_queue(&app, lib).await;
    holdq::service::verdict::decide(&app.app, user)
        .await
        .unwrap();
    let v = app.upload_view(user).await;
    assert_eq!(v["state"], "checking", "{v:#}");
    assert_eq!(v["rebases"], 1, "{v:#}");

    app.drain().await;
    let v = app.upload_view(user).await;
    assert_eq!(v["state"], "rejected", "{v:#}");
    assert_eq!(v["verdict"]["stable_moved"], true, "{v:#}");
    let build = check(&v, &format!("build@{}", PlatformConfig::host().name));
    assert_eq!(build["metadata"]["resolved"]["lib"], "1.1.0");

    // A failure with nothing moved says nothing of the kind.
    let plain = app
        .upload_ok(
            &ada,
            package_building("broken", "1.0.0", &[], "false", None),
        )
        .await;
    app.drain().await;
    assert_eq!(
        app.upload_view(plain).await["verdict"]["stable_moved"],
        false
    );
}
