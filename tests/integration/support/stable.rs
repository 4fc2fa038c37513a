//! Moving stable behind the queue's back, as a server running a release
//! without speculative checks or base validation would: what the promotion
//! rule's safety net is for.

use holdq::db;
use holdq::domain::UploadState;

use super::TestApp;

/// Promotes the queued upload `upload_id` straight into stable: no checks,
/// no bases, a new serial and its change, the index published.
pub async fn promote_behind_the_queue(app: &TestApp, upload_id: i64) {
    let app = &app.app;
    let mut tx = app.db.begin_write().await.unwrap();
    let row = db::uploads::get(&mut tx, upload_id).await.unwrap().unwrap();
    app.stable
        .store_archive(&app.storage.blob_path(&row.sha256), &row.name, &row.version)
        .unwrap();
    // As deciding would: through `checking`, which the state machine asks.
    for (from, to) in [
        (UploadState::Queued, UploadState::Checking),
        (UploadState::Checking, UploadState::Accepted),
    ] {
        assert!(
            db::uploads::transition(&mut tx, upload_id, from, to)
                .await
                .unwrap(),
            "upload {upload_id} is not {from}"
        );
    }
    db::stable::insert_version(
        &mut tx,
        db::stable::NewVersion {
            package_id: row.package_id,
            version: &row.version,
            sha256: &row.sha256,
            size_bytes: row.size_bytes,
            manifest: &row.manifest,
            upload_id,
        },
    )
    .await
    .unwrap();
    let serial = db::stable::bump_serial(&mut tx).await.unwrap();
    holdq::service::index::record_promotion(app, &mut tx, serial, [row.name.as_str()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    holdq::service::index::publish(app, serial).await;
}

/// Takes the queued uploads out of the queue and runs the checks of
/// `upload_id`'s first platform to their end, without deciding it.
pub async fn run_checks_undecided(app: &TestApp, upload_id: i64) {
    holdq::service::checks::start_queued(&app.app)
        .await
        .unwrap();
    let (build,): (i64,) =
        sqlx::query_as("SELECT id FROM checks WHERE upload_id = $1 AND kind = 'build'")
            .bind(upload_id)
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
    holdq::service::checks::run_platform_checks(&app.app, build, "test")
        .await
        .unwrap();
}

/// Lowers the pin of `dependent` on `dependency` to `max` behind the
/// service's back, recorded as a stable change (a new serial, its row of
/// the changes log, the document published).
pub async fn lower_pin(app: &TestApp, dependent: &str, dependency: &str, max: &str) {
    let app = &app.app;
    let mut tx = app.db.begin_write().await.unwrap();
    let changed = sqlx::query(
        "UPDATE pins SET max_version = $1 WHERE dependent_id = (SELECT id FROM packages WHERE name = $2) \
         AND dependency_id = (SELECT id FROM packages WHERE name = $3)",
    )
    .bind(max)
    .bind(dependent)
    .bind(dependency)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        changed.rows_affected(),
        1,
        "{dependent} is pinned on {dependency}"
    );
    let serial = db::stable::bump_serial(&mut tx).await.unwrap();
    let kind = holdq::service::index::ChangeKind::Obsolescence;
    holdq::service::index::record_change(app, &mut tx, serial, kind, &[dependent])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    holdq::service::index::publish(app, serial).await;
}
