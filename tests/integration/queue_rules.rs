//! The rules of the holding queue (SPEC section 3) through the real HTTP API:
//! order and positions, supersession, ownership, immutability.

use reqwest::StatusCode;

use crate::on_both_databases;
use crate::support::archives::{manifest, package, package_with_manifest};
use crate::support::{TestApp, TestDb};

on_both_databases!(
    uploads_join_the_queue_in_arrival_order_with_positions,
    newer_upload_supersedes_queued_upload_and_joins_at_the_back,
    repack_of_the_same_version_supersedes_the_pending_one,
    only_owners_and_operators_may_upload_a_name,
    a_co_owner_may_upload,
    a_stable_version_can_never_be_uploaded_again,
    a_version_lower_than_the_highest_stable_one_is_refused,
    an_upload_can_be_read_back_by_id_and_by_package,
    obsolete_packages_accept_no_uploads,
);

async fn uploads_join_the_queue_in_arrival_order_with_positions(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    let mut ids = Vec::new();
    for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let a = app.upload(Some(&token), package(name, "1.0.0")).await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        assert_eq!(a.body["state"], "queued");
        assert_eq!(a.body["position"], i as i64 + 1);
        assert_eq!(a.body["name"], *name);
        assert_eq!(a.body["version"], "1.0.0");
        assert_eq!(a.body["sha256"].as_str().unwrap().len(), 64);
        ids.push(a.body["id"].as_i64().unwrap());
    }
    let queue = app.queue().await;
    let order: Vec<(i64, i64)> = queue
        .iter()
        .map(|u| (u["id"].as_i64().unwrap(), u["position"].as_i64().unwrap()))
        .collect();
    assert_eq!(order, vec![(ids[0], 1), (ids[1], 2), (ids[2], 3)]);
}

async fn newer_upload_supersedes_queued_upload_and_joins_at_the_back(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    let old = app.upload(Some(&token), package("alpha", "1.0.0")).await;
    let other = app.upload(Some(&token), package("beta", "1.0.0")).await;
    let new = app.upload(Some(&token), package("alpha", "1.1.0")).await;
    assert_eq!(new.status, StatusCode::CREATED, "{:?}", new.body);
    let old_id = old.body["id"].as_i64().unwrap();
    let new_id = new.body["id"].as_i64().unwrap();
    assert_eq!(new.body["superseded"], serde_json::json!([old_id]));
    // beta moved up to the front; the new alpha is behind it.
    assert_eq!(new.body["position"], 2);
    let queue = app.queue().await;
    let names: Vec<&str> = queue.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["beta", "alpha"]);
    assert_eq!(queue[1]["version"], "1.1.0");
    assert_eq!(queue[0]["id"], other.body["id"]);

    let old_now = app
        .get(Some(&token), &format!("/api/v1/uploads/{old_id}"))
        .await;
    assert_eq!(old_now.body["state"], "superseded");
    assert_eq!(old_now.body["superseded_by"], new_id);
    assert_eq!(old_now.body["position"], serde_json::Value::Null);
}

async fn repack_of_the_same_version_supersedes_the_pending_one(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let token = app.user("ada@example.org").await;
    let first = app.upload(Some(&token), package("alpha", "1.0.0")).await;
    let text = manifest("alpha", "1.0.0", &[]).replace("A test package", "Re-packed");
    let second = app
        .upload(Some(&token), package_with_manifest("alpha-1.0.0", &text))
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    assert_ne!(first.body["sha256"], second.body["sha256"]);
    assert_eq!(
        second.body["superseded"],
        serde_json::json!([first.body["id"]])
    );
    let queue = app.queue().await;
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0]["id"], second.body["id"]);
}

async fn only_owners_and_operators_may_upload_a_name(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let bob = app.user("bob@example.org").await;
    assert_eq!(
        app.upload(Some(&ada), package("alpha", "1.0.0"))
            .await
            .status,
        StatusCode::CREATED
    );

    let refused = app.upload(Some(&bob), package("alpha", "1.1.0")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert_eq!(refused.code(), "not_owner");
    assert!(refused.message().contains("alpha"), "{}", refused.message());
    assert_eq!(
        app.queue().await.len(),
        1,
        "the refused upload did not queue or supersede"
    );

    let by_operator = app
        .upload(Some(&app.operator), package("alpha", "1.2.0"))
        .await;
    assert_eq!(
        by_operator.status,
        StatusCode::CREATED,
        "{:?}",
        by_operator.body
    );
}

async fn a_co_owner_may_upload(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let bob = app.user("bob@example.org").await;
    app.upload(Some(&ada), package("alpha", "1.0.0")).await;
    holdq::service::owners::add_owner(&app.app.db, "alpha", "bob@example.org")
        .await
        .unwrap();
    let a = app.upload(Some(&bob), package("alpha", "1.1.0")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    // The last owner cannot be removed, a co-owner can.
    holdq::service::owners::remove_owner(&app.app.db, "alpha", "bob@example.org")
        .await
        .unwrap();
    let last = holdq::service::owners::remove_owner(&app.app.db, "alpha", "ada@example.org").await;
    assert!(
        matches!(
            last,
            Err(holdq::service::owners::OwnerError::LastOwner { .. })
        ),
        "{last:?}"
    );
    assert_eq!(
        app.upload(Some(&bob), package("alpha", "1.2.0"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

/// Puts `name` `version` into the stable repository as promotion would.
async fn make_stable(app: &TestApp, name: &str, version: &str) {
    let mut conn = app.app.db.pool().acquire().await.unwrap();
    let pkg = holdq::db::packages::find_by_name(&mut conn, name)
        .await
        .unwrap()
        .unwrap();
    sqlx::query(
        "INSERT INTO versions (package_id, version, sha256, size_bytes, manifest, promoted_at) \
         VALUES ($1, $2, 'x', 0, '{}', 0)",
    )
    .bind(pkg.id)
    .bind(version)
    .execute(&mut *conn)
    .await
    .unwrap();
}

async fn a_stable_version_can_never_be_uploaded_again(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let bytes = package("alpha", "1.0.0");
    app.upload(Some(&ada), bytes.clone()).await;
    make_stable(&app, "alpha", "1.0.0").await;
    let again = app.upload(Some(&ada), bytes).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(again.code(), "version_exists");
    assert!(
        again.message().contains("even with identical bytes"),
        "{}",
        again.message()
    );
    // Build metadata does not make a new version.
    let meta = app
        .upload(Some(&ada), package("alpha", "1.0.0+rebuild"))
        .await;
    assert_eq!(meta.code(), "version_exists", "{:?}", meta.body);
}

async fn a_version_lower_than_the_highest_stable_one_is_refused(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload(Some(&ada), package("alpha", "2.0.0")).await;
    make_stable(&app, "alpha", "2.0.0").await;
    let low = app.upload(Some(&ada), package("alpha", "1.9.9")).await;
    assert_eq!(low.status, StatusCode::CONFLICT);
    assert_eq!(low.code(), "version_too_low");
    assert!(low.message().contains("2.0.0"), "{}", low.message());
    let higher = app.upload(Some(&ada), package("alpha", "2.0.1")).await;
    assert_eq!(higher.status, StatusCode::CREATED, "{:?}", higher.body);
}

async fn an_upload_can_be_read_back_by_id_and_by_package(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let a = app.upload(Some(&ada), package("alpha", "1.0.0")).await;
    let id = a.body["id"].as_i64().unwrap();
    let shown = app.get(Some(&ada), &format!("/api/v1/uploads/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["sha256"], a.body["sha256"]);
    assert_eq!(
        shown.body["maintainers"],
        serde_json::json!(["Ada <ada@example.org>"])
    );
    assert_eq!(shown.body["position"], 1);
    let listed = app.get(Some(&ada), "/api/v1/uploads?package=alpha").await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    let missing = app.get(Some(&ada), "/api/v1/uploads/999999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "not_found");
    let bad = app.get(Some(&ada), "/api/v1/uploads/latest").await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let nowhere = app.get(None, "/api/v1/nowhere").await;
    assert_eq!(
        (nowhere.status, nowhere.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // The archive is kept under its hash.
    let blob = app
        .app
        .storage
        .blob_path(a.body["sha256"].as_str().unwrap());
    assert_eq!(std::fs::read(blob).unwrap(), package("alpha", "1.0.0"));
}

async fn obsolete_packages_accept_no_uploads(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload(Some(&ada), package("alpha", "1.0.0")).await;
    sqlx::query("UPDATE packages SET state = 'obsolete' WHERE name = 'alpha'")
        .execute(app.app.db.pool())
        .await
        .unwrap();
    let a = app.upload(Some(&ada), package("alpha", "1.1.0")).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.code(), "package_obsolete");
}
