//! The verdict (SPEC section 4) and promotion: once every check of an
//! upload is final, score it against the pass mark; accept it into the
//! stable repository, atomically, or reject it. Idempotent: the first
//! caller decides, the others find the upload decided.
//!
//! Promotion order, so that a crash at any instant leaves the old or the new
//! stable repository: (1) the archive is made durable in stable storage;
//! (2) one transaction records the version, the verdict, the new state and
//! a new serial, the promoted packages' index documents and the changes
//! log's row; (3) those documents are written beside the old ones and
//! renamed over them. A crash after (2) is repaired at start-up by (3).

use std::collections::BTreeMap;

use serde_json::json;

use super::App;
use super::integrity;
use super::notify::{self, CheckLine, VerdictEmail};
use super::reject::{Rejection, reject};
use crate::db::{self, checks::CheckRow, checks::VerdictRow, uploads::UploadRow};
use crate::domain::check::{CheckKind, CheckState};
use crate::domain::integrity::Judgement as Settled;
use crate::domain::integrity::PendingRelease;
use crate::domain::metadata::{BuildMetadata, DependentResult, RevdepsMetadata, VerdictSummary};
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

/// One upload being decided, with what deciding it reads.
pub(super) struct Member {
    pub(super) upload: UploadRow,
    pub(super) manifest: Manifest,
    pub(super) checks: Vec<CheckRow>,
}

/// Decides the upload (with its group, when it is in one) if all its checks
/// are final and its bases hold; returns whether it was accepted, or `None`
/// when nothing was decided now (checks left, waiting for uploads ahead,
/// or rebased).
pub async fn decide(app: &App, upload_id: i64) -> anyhow::Result<Option<bool>> {
    // The pass mark in force now: a change made while the upload waited
    // applies. Read before the write transaction, so that a decision holding
    // the write lock needs no second connection for it.
    let passmark = super::passmark::current(app).await?;
    let mut tx = app.db.begin_write().await?;
    let Some(members) = load_unit(app, &mut tx, upload_id).await? else {
        return Ok(None);
    };
    let max_dependents = passmark.revdeps_max_dependents as usize;
    let mut judged = Vec::with_capacity(members.len());
    for m in &members {
        let fellows: Vec<PendingRelease> = members
            .iter()
            .filter(|o| o.upload.id != m.upload.id)
            .map(|o| integrity::pending_release(&o.upload, &o.manifest))
            .collect();
        let judgement = integrity::settle(
            app,
            &mut tx,
            (&m.upload, &m.manifest, &m.checks),
            &fellows,
            max_dependents,
        )
        .await?;
        judged.push(judgement);
    }
    if judged.iter().any(|j| matches!(j, Settled::Wait(_))) {
        for (m, j) in members.iter().zip(&judged) {
            if let Settled::Wait(ahead) = j {
                // Decided when they are (`decide_waiting_on`).
                let line = format!("waiting for {} ahead of it to be decided", ahead.join(", "));
                if m.upload.state_reason.as_deref() != Some(line.as_str()) {
                    db::uploads::set_reason(&mut tx, m.upload.id, Some(&line)).await?;
                }
            }
        }
        tx.commit().await?;
        return Ok(None);
    }
    if judged.iter().any(|j| matches!(j, Settled::Rebase { .. })) {
        let mut builds = Vec::new();
        for (m, j) in members.iter().zip(&judged) {
            if let Settled::Rebase {
                why,
                rerun,
                resolve_again,
            } = j
            {
                let plan = (why.as_str(), rerun.as_slice(), *resolve_again);
                builds.extend(
                    integrity::rebase(app, &mut tx, &m.upload, &m.manifest, &m.checks, plan)
                        .await?,
                );
            }
        }
        tx.commit().await?;
        enqueue_builds(app, builds).await?;
        return Ok(None);
    }
    let mut outcomes = Vec::with_capacity(members.len());
    for (m, j) in members.iter().zip(judged) {
        let Settled::Fresh { ahead } = j else {
            unreachable!("waits and rebases returned above")
        };
        outcomes.push(score(&mut tx, m, &passmark, ahead).await?);
    }
    let accepted = outcomes.iter().all(|o| o.verdict.accepted);
    if accepted {
        promote(app, tx, &members, &outcomes).await?;
    } else {
        let rejection = Rejection::Verdict {
            members: &members,
            outcomes: &outcomes,
        };
        reject(app, tx, rejection).await?;
    }
    for m in &members {
        app.halts.forget(m.upload.id);
        decide_waiting_on(app, m.upload.id).await?;
    }
    Ok(Some(accepted))
}

/// Reads the upload and the members of its group (locking their packages,
/// in name order: promotion and supersession serialise on them); `None`
/// unless every member is being checked and every check is final.
async fn load_unit(
    app: &App,
    tx: &mut db::Tx,
    upload_id: i64,
) -> anyhow::Result<Option<Vec<Member>>> {
    let Some(upload) = db::uploads::get(tx, upload_id).await? else {
        return Ok(None);
    };
    let ids = match upload.group_id {
        Some(group) => db::groups::members(tx, group).await?,
        None => vec![upload_id],
    };
    let mut rows = Vec::new();
    for id in ids {
        rows.extend(db::uploads::get(tx, id).await?);
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    for row in &rows {
        db::packages::lock_by_name(tx, &row.name, app.db.for_update()).await?;
    }
    let mut members = Vec::new();
    for row in rows {
        let upload = db::uploads::get(tx, row.id).await?.expect("still there");
        if upload.state != UploadState::Checking {
            return Ok(None);
        }
        let checks = db::checks::of_upload(tx, upload.id).await?;
        if checks.is_empty() || checks.iter().any(|c| !c.state.is_final()) {
            return Ok(None);
        }
        let manifest: Manifest = serde_json::from_str(&upload.manifest)?;
        members.push(Member {
            upload,
            manifest,
            checks,
        });
    }
    members.sort_by_key(|m| m.upload.id);
    Ok(Some(members))
}

async fn enqueue_builds(app: &App, builds: Vec<(String, i64)>) -> anyhow::Result<()> {
    for (platform, check_id) in builds {
        let (attempts, failures) = {
            let mut conn = app.db.pool().acquire().await?;
            db::checks::get(&mut conn, check_id)
                .await?
                .map_or((0, 0), |c| (c.attempts, c.start_failures))
        };
        super::checks::enqueue_check(app, &platform, check_id, attempts, failures).await?;
    }
    Ok(())
}

/// A member's verdict, recorded.
pub(super) struct Outcome {
    pub(super) verdict: crate::domain::check::Verdict,
    /// Whether stable moved under its failed builds.
    pub(super) stable_moved: bool,
    /// The uploads ahead it was checked with.
    pub(super) ahead: Vec<String>,
}

/// Scores a member against the pass mark and records its verdict (the
/// emails go out with the promotion or the rejection).
async fn score(
    tx: &mut db::Tx,
    m: &Member,
    passmark: &crate::domain::passmark::PassMark,
    ahead: Vec<String>,
) -> anyhow::Result<Outcome> {
    let (upload, checks) = (&m.upload, &m.checks);
    if upload
        .state_reason
        .as_deref()
        .is_some_and(|r| r.starts_with("waiting for"))
    {
        db::uploads::set_reason(tx, upload.id, None).await?; // it waits no more
    }
    let records: Vec<CheckRecord> = checks.iter().map(record_of).collect();
    let verdict = passmark.judge(&records);
    let stable_moved = !verdict.accepted && stable_moved(tx, upload.id, checks).await?;
    let flaky: Vec<String> = records
        .iter()
        .filter(|r| r.flaky)
        .map(|r| crate::domain::check::label(r.kind, &r.platform))
        .collect();
    let summary = VerdictSummary {
        failed: verdict.failed.clone(),
        failed_required: verdict.failed_required.clone(),
        stable_moved,
        ahead: ahead.clone(),
        flaky,
        records: Some(records),
        ..VerdictSummary::default()
    };
    db::checks::insert_verdict(
        tx,
        &VerdictRow {
            upload_id: upload.id,
            accepted: i64::from(verdict.accepted),
            score: verdict.score,
            threshold: verdict.threshold,
            passmark: serde_json::to_string(passmark)?,
            summary: summary.to_json(),
            stable_moved: i64::from(stable_moved),
            decided_at: db::now_ms(),
        },
    )
    .await?;
    Ok(Outcome {
        verdict,
        stable_moved,
        ahead,
    })
}

/// Promotes every member in one transaction under one new serial.
async fn promote(
    app: &App,
    mut tx: db::Tx,
    members: &[Member],
    outcomes: &[Outcome],
) -> anyhow::Result<()> {
    for m in members {
        let upload = &m.upload;
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
                upload_id: upload.id,
            },
        )
        .await?;
    }
    let serial = db::stable::bump_serial(&mut tx).await?;
    let names = members.iter().map(|m| m.upload.name.as_str());
    super::index::record_promotion(app, &mut tx, serial, names).await?;
    let mut emails = Vec::new();
    for (m, o) in members.iter().zip(outcomes) {
        emails.extend(queue_verdict_email(app, &mut tx, m, o).await?);
        db::uploads::transition(
            &mut tx,
            m.upload.id,
            UploadState::Checking,
            UploadState::Accepted,
        )
        .await?;
        emails.extend(queue_broken_dependent_emails(app, &mut tx, &m.upload, &m.checks).await?);
        let detail =
            json!({ "score": o.verdict.score, "serial": serial, "group": m.upload.group_id });
        event(&mut tx, ("upload.accepted", None), &m.upload, detail).await?;
        if members.len() > 1 {
            failpoint("promote-group-member");
        }
    }
    tx.commit().await?;
    failpoint("promote-after-commit");
    for (m, o) in members.iter().zip(outcomes) {
        tracing::info!(upload.id = m.upload.id, package.name = %m.manifest.name, package.version = %m.manifest.version, score = o.verdict.score, stable.serial = serial, "upload accepted and promoted");
    }
    super::stable::apply(app, serial, |repo| {
        for m in members {
            repo.add_release(
                m.manifest.name.clone(),
                super::checks::release_of(&m.manifest),
            );
        }
    });
    super::index::publish(app, serial).await;
    // The email says accepted once the index says so.
    notify::push_new(app, &emails).await;
    // A new version may have dropped a dependency on an obsolete package.
    super::obsolete::remove_unneeded(app).await?;
    Ok(())
}

/// One email per maintainer of any member of a rejected group: the first
/// member that failed, its failing checks, and the members rejected with it.
pub(super) async fn queue_group_reject_email(
    app: &App,
    tx: &mut db::Tx,
    group: i64,
    members: &[Member],
    outcomes: &[Outcome],
) -> anyhow::Result<Vec<i64>> {
    let (failed, outcome) = members
        .iter()
        .zip(outcomes)
        .find(|(_, o)| !o.verdict.accepted)
        .expect("a rejected group has a failing member");
    let mut context = verdict_context(app, failed, outcome).await?;
    context.group = members
        .iter()
        .map(|m| {
            format!(
                "{} {} (upload {})",
                m.upload.name, m.upload.version, m.upload.id
            )
        })
        .collect();
    let rendered = app.templates.render("upload_rejected", &context)?;
    let mut recipients: Vec<String> = members
        .iter()
        .flat_map(|m| notify::maintainers(&m.manifest))
        .collect();
    recipients.sort();
    recipients.dedup();
    Ok(notify::queue_emails(
        tx,
        &format!("group-{group}-verdict"),
        "upload_rejected",
        Some(failed.upload.id),
        &recipients,
        &rendered,
    )
    .await?)
}

/// Decides the uploads whose bases assumed `upload_id`, now that it is
/// decided (or gone), and gives a new job to checks that waited for it.
pub async fn decide_waiting_on(app: &App, upload_id: i64) -> anyhow::Result<()> {
    let waiting = {
        let mut conn = app.db.pool().acquire().await?;
        db::assumptions::waiting_on(&mut conn, upload_id).await?
    };
    for id in waiting {
        Box::pin(decide(app, id)).await?;
    }
    // Uploads and checks that wait for the related uploads ahead may go:
    // queued ones when the scheduler wakes; checks of uploads past their
    // rebases (or all, without speculation) get a new job now. While
    // everything speculates nothing waits so, and nothing is pushed.
    app.wake.notify_one();
    let max = i64::from(app.config.queue.max_rebases);
    let some_wait = !app.config.queue.speculate || {
        let mut conn = app.db.pool().acquire().await?;
        db::uploads::any_checking_rebased(&mut conn, max).await?
    };
    if some_wait {
        super::scheduler::push_unfinished(app).await?;
    }
    Ok(())
}

/// What scoring needs of a check row: kind, platform, passed, and for
/// revdeps the fraction (so the pass mark's `min_fraction` decides).
fn record_of(c: &db::checks::CheckRow) -> CheckRecord {
    let kind = c.kind;
    let metadata = c.metadata.as_deref();
    CheckRecord {
        kind,
        platform: c.platform.clone(),
        passed: c.state == CheckState::Passed,
        // A revdeps check that ran records its fraction; one that did not
        // (skipped, or halted) has none.
        fraction: metadata
            .filter(|_| kind == CheckKind::Revdeps && c.state != CheckState::Skipped)
            .and_then(|m| serde_json::from_str::<RevdepsMetadata>(m).ok())
            .map(|r| r.fraction),
        flaky: kind == CheckKind::Build && BuildMetadata::parse(metadata).flaky,
    }
}

/// What the verdict email of an upload says.
async fn verdict_context(app: &App, m: &Member, o: &Outcome) -> anyhow::Result<VerdictEmail> {
    let (upload, manifest, checks, verdict) = (&m.upload, &m.manifest, &m.checks, &o.verdict);
    let lines: Vec<CheckLine> = checks
        .iter()
        .map(|c| CheckLine {
            label: crate::domain::check::label(c.kind, &c.platform),
            state: c.state,
            summary: c.summary.clone().unwrap_or_default(),
            log_tail: notify::log_tail(c.log.as_deref().unwrap_or_default()),
        })
        .collect();
    let failing = lines
        .iter()
        .filter(|c| c.state != CheckState::Passed)
        .cloned()
        .collect();
    Ok(VerdictEmail {
        package: upload.name.clone(),
        version: upload.version.clone(),
        score: verdict.score,
        threshold: verdict.threshold,
        checks: lines,
        failing,
        failed_required: verdict.failed_required.clone(),
        stable_moved: o.stable_moved,
        ahead: if verdict.accepted {
            Vec::new()
        } else {
            o.ahead.clone()
        },
        group: Vec::new(),
        cancelled: None,
        flaky: checks
            .iter()
            .map(record_of)
            .filter(|r| r.flaky)
            .map(|r| crate::domain::check::label(r.kind, &r.platform))
            .collect(),
        pins: pins_carried_over(app, manifest).await?,
        upload_url: notify::upload_url(app, upload.id),
        server_url: app.config.public_url.clone(),
    })
}

/// Renders the verdict email and writes it to the outbox, one row per
/// maintainer, in the verdict's transaction.
pub(super) async fn queue_verdict_email(
    app: &App,
    tx: &mut db::Tx,
    m: &Member,
    o: &Outcome,
) -> anyhow::Result<Vec<i64>> {
    let (upload, manifest) = (&m.upload, &m.manifest);
    let context = verdict_context(app, m, o).await?;
    let kind = if o.verdict.accepted {
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
    for check in checks.iter().filter(|c| c.kind == CheckKind::Revdeps) {
        let metadata = RevdepsMetadata::parse(check.metadata.as_deref());
        for d in metadata.dependents {
            if d.result == DependentResult::Regression {
                let log = notify::log_tail(check.log.as_deref().unwrap_or_default());
                broken.entry(d.name).or_insert((d.version, log));
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

/// Records an event of the upload (`actor_id`: who caused it, if a user).
pub(super) async fn event(
    tx: &mut db::Tx,
    (kind, actor_id): (&str, Option<i64>),
    upload: &db::uploads::UploadRow,
    detail: serde_json::Value,
) -> sqlx::Result<()> {
    db::events::record(
        tx,
        db::events::NewEvent {
            kind,
            package_id: Some(upload.package_id),
            upload_id: Some(upload.id),
            actor_id,
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
        .filter(|c| c.kind == CheckKind::Build && c.state == CheckState::Failed)
        .filter_map(|c| BuildMetadata::parse(c.metadata.as_deref()).resolved)
        .any(|built_against| built_against != at_upload))
}
