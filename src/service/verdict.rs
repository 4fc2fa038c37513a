//! The verdict (SPEC section 4) and promotion: once every check of an
//! upload is final, score it against the pass mark; accept it into the
//! stable repository, atomically, or reject it. Idempotent: the first
//! caller decides, the others find the upload decided.
//!
//! Promotion order, so that a crash at any instant leaves the old or the new
//! stable repository: (1) the archive is made durable in stable storage;
//! (2) one transaction records the version, the verdict, the new state and
//! a new serial; (3) the index is regenerated beside the old one and renamed
//! over it. A crash after (2) is repaired at start-up by (3).

use std::collections::BTreeMap;

use serde_json::json;

use super::App;
use super::notify::{self, CheckLine, VerdictEmail};
use crate::db::{self, checks::VerdictRow};
use crate::domain::check::{CheckKind, CheckState};
use crate::domain::passmark::CheckRecord;
use crate::domain::{Manifest, PackageState, UploadState};

/// A test-only crash point: `HOLDQ_FAILPOINT=NAME` aborts the process when
/// promotion reaches `NAME`, as a power cut would.
pub fn failpoint(name: &str) {
    if std::env::var("HOLDQ_FAILPOINT").is_ok_and(|f| f == name) {
        eprintln!("holdq: failpoint {name} reached, aborting");
        std::process::abort();
    }
}

/// Decides the upload if all its checks are final; returns whether it was
/// accepted, or `None` when nothing was decided now.
pub async fn decide(app: &App, upload_id: i64) -> anyhow::Result<Option<bool>> {
    let mut tx = app.db.begin_write().await?;
    let Some(upload) = db::uploads::get(&mut tx, upload_id).await? else {
        return Ok(None);
    };
    // Lock the upload's package: promotion and supersession serialise on it.
    db::packages::lock_by_name(&mut tx, &upload.name, app.db.for_update()).await?;
    let upload = db::uploads::get(&mut tx, upload_id)
        .await?
        .expect("still there");
    if upload.state != UploadState::Checking.as_str() {
        return Ok(None);
    }
    let checks = db::checks::of_upload(&mut tx, upload_id).await?;
    if checks.is_empty()
        || checks
            .iter()
            .any(|c| !CheckState::parse(&c.state).is_some_and(CheckState::is_final))
    {
        return Ok(None);
    }
    let records: Vec<CheckRecord> = checks.iter().map(record_of).collect();
    // The pass mark in force now: a change made while the upload waited applies.
    let passmark = super::passmark::current(app).await?;
    let verdict = passmark.judge(&records);
    let stable_moved = !verdict.accepted && stable_moved(&mut tx, upload_id, &checks).await?;
    let flaky: Vec<String> = records
        .iter()
        .filter(|r| r.flaky)
        .map(|r| crate::domain::check::label(r.kind, &r.platform))
        .collect();
    let summary = json!({
        "failed": verdict.failed,
        "failed_required": verdict.failed_required,
        "stable_moved": stable_moved,
        "flaky": flaky,
        "records": records,
    });
    db::checks::insert_verdict(
        &mut tx,
        &VerdictRow {
            upload_id,
            accepted: i64::from(verdict.accepted),
            score: verdict.score,
            threshold: verdict.threshold,
            passmark: serde_json::to_string(&passmark)?,
            summary: summary.to_string(),
            stable_moved: i64::from(stable_moved),
            decided_at: db::now_ms(),
        },
    )
    .await?;

    let manifest: Manifest = serde_json::from_str(&upload.manifest)?;
    let emails = queue_verdict_email(
        app,
        &mut tx,
        &upload,
        &manifest,
        &checks,
        &verdict,
        stable_moved,
    )
    .await?;

    if verdict.accepted {
        let (blob, stable, name, version) = (
            app.storage.blob_path(&upload.sha256),
            app.stable.clone(),
            upload.name.clone(),
            upload.version.clone(),
        );
        tokio::task::spawn_blocking(move || stable.store_archive(&blob, &name, &version)).await??;
        failpoint("promote-after-archive");
        db::stable::insert_version(
            &mut tx,
            db::stable::NewVersion {
                package_id: upload.package_id,
                version: &upload.version,
                sha256: &upload.sha256,
                size_bytes: upload.size_bytes,
                manifest: &upload.manifest,
                upload_id,
            },
        )
        .await?;
        let serial = db::stable::bump_serial(&mut tx).await?;
        db::uploads::transition(&mut tx, upload_id, "checking", "accepted").await?;
        let broken_emails = queue_broken_dependent_emails(app, &mut tx, &upload, &checks).await?;
        event(
            &mut tx,
            "upload.accepted",
            &upload,
            json!({ "score": verdict.score, "serial": serial }),
        )
        .await?;
        tx.commit().await?;
        failpoint("promote-after-commit");
        tracing::info!(upload.id = upload_id, package.name = %manifest.name, package.version = %manifest.version, score = verdict.score, stable.serial = serial, "upload accepted and promoted");
        super::stable::apply(app, serial, |repo| {
            repo.add_release(
                manifest.name.clone(),
                crate::domain::resolve::Release {
                    version: manifest.version.clone(),
                    dependencies: manifest.dependencies.clone(),
                },
            )
        });
        notify::push_new(app, &emails).await;
        notify::push_new(app, &broken_emails).await;
        super::stable::publish_index(app).await?;
        // The new version may have dropped a dependency on an obsolete package.
        super::obsolete::remove_unneeded(app).await?;
    } else {
        db::uploads::transition(&mut tx, upload_id, "checking", "rejected").await?;
        event(
            &mut tx,
            "upload.rejected",
            &upload,
            json!({ "score": verdict.score, "failed": verdict.failed }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(upload.id = upload_id, package.name = %upload.name, score = verdict.score, failed = ?verdict.failed, "upload rejected");
        notify::push_new(app, &emails).await;
    }
    app.halts.forget(upload_id);
    Ok(Some(verdict.accepted))
}

/// What scoring needs of a check row: kind, platform, passed, and for
/// revdeps the fraction (so the pass mark's `min_fraction` decides).
fn record_of(c: &db::checks::CheckRow) -> CheckRecord {
    let metadata: serde_json::Value = c
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let kind = CheckKind::parse(&c.kind).unwrap_or(CheckKind::Build);
    CheckRecord {
        kind,
        platform: c.platform.clone(),
        passed: c.state == CheckState::Passed.as_str(),
        fraction: if kind == CheckKind::Revdeps && c.state != CheckState::Skipped.as_str() {
            metadata["fraction"].as_f64()
        } else {
            None
        },
        flaky: metadata["flaky"].as_bool().unwrap_or(false),
    }
}

/// Renders the verdict email and writes it to the outbox, one row per
/// maintainer, in the verdict's transaction.
async fn queue_verdict_email(
    app: &App,
    tx: &mut db::Tx,
    upload: &db::uploads::UploadRow,
    manifest: &Manifest,
    checks: &[db::checks::CheckRow],
    verdict: &crate::domain::check::Verdict,
    stable_moved: bool,
) -> anyhow::Result<Vec<i64>> {
    let lines: Vec<CheckLine> = checks
        .iter()
        .map(|c| CheckLine {
            label: crate::domain::check::label(
                CheckKind::parse(&c.kind).unwrap_or(CheckKind::Build),
                &c.platform,
            ),
            state: c.state.clone(),
            summary: c.summary.clone().unwrap_or_default(),
            log_tail: notify::log_tail(c.log.as_deref().unwrap_or_default()),
        })
        .collect();
    let failing = lines
        .iter()
        .filter(|c| c.state != CheckState::Passed.as_str())
        .cloned()
        .collect();
    let context = VerdictEmail {
        package: upload.name.clone(),
        version: upload.version.clone(),
        score: verdict.score,
        threshold: verdict.threshold,
        checks: lines,
        failing,
        failed_required: verdict.failed_required.clone(),
        stable_moved,
        cancelled: None,
        flaky: checks
            .iter()
            .filter(|c| {
                c.metadata
                    .as_deref()
                    .is_some_and(|m| m.contains("\"flaky\":true"))
            })
            .map(|c| {
                crate::domain::check::label(
                    CheckKind::parse(&c.kind).unwrap_or(CheckKind::Build),
                    &c.platform,
                )
            })
            .collect(),
        pins: pins_carried_over(app, manifest).await?,
        upload_url: notify::upload_url(app, upload.id),
        server_url: app.config.public_url.clone(),
    };
    let kind = if verdict.accepted {
        "upload_accepted"
    } else {
        "upload_rejected"
    };
    let rendered = app.templates.render(kind, &context)?;
    let recipients = notify::maintainers(manifest);
    Ok(notify::queue_emails(
        tx,
        &format!("upload-{}-verdict", upload.id),
        kind,
        Some(upload.id),
        &recipients,
        &rendered,
    )
    .await?)
}

/// The pins the package's requirements carry: "libwave ^2.1, <=2.3.0".
async fn pins_carried_over(app: &App, manifest: &Manifest) -> anyhow::Result<Vec<String>> {
    super::stable::with_repo(app, |repo| {
        manifest
            .dependencies
            .iter()
            .filter_map(|(dep, req)| {
                repo.pin_of(&manifest.name, dep)
                    .map(|max| format!("{dep} {req}, <={max}"))
            })
            .collect()
    })
    .await
}

/// When the pass mark let through an upload that breaks stable dependents,
/// the maintainers of each broken, non-obsolete dependent are told.
async fn queue_broken_dependent_emails(
    app: &App,
    tx: &mut db::Tx,
    upload: &db::uploads::UploadRow,
    checks: &[db::checks::CheckRow],
) -> anyhow::Result<Vec<i64>> {
    let mut broken: BTreeMap<String, (String, String)> = BTreeMap::new();
    for check in checks
        .iter()
        .filter(|c| c.kind == CheckKind::Revdeps.as_str())
    {
        let metadata: serde_json::Value = check
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        for d in metadata["dependents"].as_array().into_iter().flatten() {
            if d["result"] == "regression"
                && let (Some(name), Some(version)) = (d["name"].as_str(), d["version"].as_str())
            {
                let log = notify::log_tail(check.log.as_deref().unwrap_or_default());
                broken
                    .entry(name.to_owned())
                    .or_insert((version.to_owned(), log));
            }
        }
    }
    let mut ids = Vec::new();
    for (name, (version, log_tail)) in broken {
        let Some(info) = db::pins::obsolescence(tx, &name).await? else {
            continue;
        };
        if info.state != PackageState::Active {
            continue; // maintainers of obsolete packages get no breakage emails
        }
        let rows = db::stable::versions_of(tx, &name).await?;
        let Some(row) = rows.iter().find(|r| r.version == version) else {
            continue;
        };
        let manifest: Manifest = serde_json::from_str(&row.manifest)?;
        let context = notify::DependentsBrokenEmail {
            package: name.clone(),
            version: version.clone(),
            broken_by: format!("{} {}", upload.name, upload.version),
            log_tail,
            upload_url: notify::upload_url(app, upload.id),
            server_url: app.config.public_url.clone(),
        };
        let rendered = app.templates.render("dependents_broken", &context)?;
        let key = format!("upload-{}-broke-{name}", upload.id);
        ids.extend(
            notify::queue_emails(
                tx,
                &key,
                "dependents_broken",
                Some(upload.id),
                &notify::maintainers(&manifest),
                &rendered,
            )
            .await?,
        );
    }
    Ok(ids)
}

async fn event(
    tx: &mut db::Tx,
    kind: &str,
    upload: &db::uploads::UploadRow,
    detail: serde_json::Value,
) -> sqlx::Result<()> {
    db::events::record(
        tx,
        db::events::NewEvent {
            kind,
            package_id: Some(upload.package_id),
            upload_id: Some(upload.id),
            actor_id: None,
            detail,
        },
    )
    .await
}

/// Whether the stable versions of the upload's dependencies changed
/// between its upload and the builds that failed.
async fn stable_moved(
    tx: &mut db::Tx,
    upload_id: i64,
    checks: &[db::checks::CheckRow],
) -> anyhow::Result<bool> {
    let (at_upload, _) = db::uploads::resolutions(tx, upload_id).await?;
    let Some(at_upload) =
        at_upload.and_then(|j| serde_json::from_str::<BTreeMap<String, String>>(&j).ok())
    else {
        return Ok(false);
    };
    Ok(checks
        .iter()
        .filter(|c| c.kind == CheckKind::Build.as_str() && c.state == CheckState::Failed.as_str())
        .filter_map(|c| c.metadata.as_deref())
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .filter_map(|m| {
            serde_json::from_value::<BTreeMap<String, String>>(m["resolved"].clone()).ok()
        })
        .any(|built_against| built_against != at_upload))
}
