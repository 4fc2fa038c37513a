//! Rejection (SPEC sections 3 and 4): the one way an upload becomes
//! `rejected`, whether its verdict said so or an operator cancelled it.
//! Every rejection moves the upload through the state machine, halts its
//! unfinished checks, records the verdict and the event, and tells the
//! maintainers; a group is rejected whole.

use serde_json::json;

use super::App;
use super::notify::{self, VerdictEmail};
use super::users::User;
use super::verdict::{Member, Outcome, queue_group_reject_email, queue_verdict_email};
use crate::db::{self, checks::VerdictRow, uploads::UploadRow};
use crate::domain::metadata::VerdictSummary;
use crate::domain::passmark::PassMark;
use crate::domain::{Manifest, UploadState};

/// Why uploads are rejected.
pub(super) enum Rejection<'a> {
    /// Their checks did not reach the pass mark (or a required one failed):
    /// one upload, or every member of its group. Their verdicts are
    /// recorded (`verdict::score`).
    Verdict {
        members: &'a [Member],
        outcomes: &'a [Outcome],
    },
    /// An operator cancelled a pending upload (queued or being checked);
    /// the other members of its group are discarded with it.
    Cancelled {
        upload: &'a UploadRow,
        by: &'a User,
        why: &'a str,
        passmark: &'a PassMark,
    },
}

/// Rejects, in `tx`, and commits; false when a cancelled upload was no
/// longer pending (someone decided it first), nothing then being changed.
pub(super) async fn reject(
    app: &App,
    mut tx: db::Tx,
    rejection: Rejection<'_>,
) -> anyhow::Result<bool> {
    let (rejected, emails) = match rejection {
        Rejection::Verdict { members, outcomes } => {
            for (m, o) in members.iter().zip(outcomes) {
                let detail = json!({ "score": o.verdict.score, "failed": o.verdict.failed, "group": m.upload.group_id });
                let event = ("upload.rejected", None);
                if !mark_rejected(app, &mut tx, &m.upload, event, detail).await? {
                    anyhow::bail!("upload {} was decided meanwhile", m.upload.id);
                }
                tracing::info!(upload.id = m.upload.id, package.name = %m.upload.name, score = o.verdict.score, failed = ?o.verdict.failed, "upload rejected");
            }
            let emails = match (members, outcomes) {
                ([m], [o]) if m.upload.group_id.is_none() => {
                    queue_verdict_email(app, &mut tx, m, o).await?
                }
                _ => {
                    let group = members[0]
                        .upload
                        .group_id
                        .expect("several members: a group");
                    queue_group_reject_email(app, &mut tx, group, members, outcomes).await?
                }
            };
            (members.iter().map(|m| m.upload.id).collect(), emails)
        }
        Rejection::Cancelled {
            upload,
            by,
            why,
            passmark,
        } => {
            let event = ("upload.cancelled", Some(by.id));
            if !mark_rejected(app, &mut tx, upload, event, json!({ "why": why })).await? {
                return Ok(false);
            }
            db::uploads::set_reason(
                &mut tx,
                upload.id,
                Some(&format!("cancelled by an operator: {why}")),
            )
            .await?;
            discard_group_of(app, &mut tx, upload).await?;
            record_cancel_verdict(&mut tx, upload.id, by, why, passmark).await?;
            let emails = queue_cancel_email(app, &mut tx, upload, why, passmark).await?;
            tracing::info!(upload.id = upload.id, user.id = by.id, "upload cancelled");
            (vec![upload.id], emails)
        }
    };
    tx.commit().await?;
    for id in rejected {
        app.halts.halt(id);
    }
    notify::push_new(app, &emails).await;
    Ok(true)
}

/// What every rejection does to an upload: it moves from the state it was
/// read in to `rejected` (as the state machine allows), its unfinished
/// checks halt, and the event is recorded. False when it was no longer in
/// that state.
async fn mark_rejected(
    app: &App,
    tx: &mut db::Tx,
    upload: &UploadRow,
    event: (&str, Option<i64>),
    detail: serde_json::Value,
) -> anyhow::Result<bool> {
    if !db::uploads::transition(tx, upload.id, upload.state, UploadState::Rejected).await? {
        return Ok(false);
    }
    db::checks::halt_upload(tx, app.db.backend(), upload.id).await?;
    super::verdict::event(tx, event, upload, detail).await?;
    Ok(true)
}

/// A group is decided as one: cancelling a member ends the others.
async fn discard_group_of(app: &App, tx: &mut db::Tx, upload: &UploadRow) -> anyhow::Result<()> {
    let Some(group) = upload.group_id else {
        return Ok(());
    };
    let others: Vec<i64> = db::groups::members(tx, group)
        .await?
        .into_iter()
        .filter(|&m| m != upload.id)
        .collect();
    let why = format!(
        "upload {} of its group was cancelled by an operator",
        upload.id
    );
    db::uploads::discard(tx, &others, &why).await?;
    for &m in &others {
        db::checks::halt_upload(tx, app.db.backend(), m).await?;
    }
    Ok(())
}

async fn record_cancel_verdict(
    tx: &mut db::Tx,
    upload_id: i64,
    by: &User,
    why: &str,
    passmark: &PassMark,
) -> anyhow::Result<()> {
    db::checks::insert_verdict(
        tx,
        &VerdictRow {
            upload_id,
            accepted: 0,
            score: 0.0,
            threshold: passmark.threshold,
            passmark: serde_json::to_string(passmark)?,
            summary: VerdictSummary {
                cancelled: Some(why.to_owned()),
                by: Some(by.email.clone()),
                ..VerdictSummary::default()
            }
            .to_json(),
            stable_moved: 0,
            decided_at: db::now_ms(),
        },
    )
    .await?;
    Ok(())
}

async fn queue_cancel_email(
    app: &App,
    tx: &mut db::Tx,
    upload: &UploadRow,
    why: &str,
    passmark: &PassMark,
) -> anyhow::Result<Vec<i64>> {
    let manifest: Manifest = serde_json::from_str(&upload.manifest)?;
    let context = VerdictEmail {
        package: upload.name.clone(),
        version: upload.version.clone(),
        score: 0.0,
        threshold: passmark.threshold,
        checks: Vec::new(),
        failing: Vec::new(),
        failed_required: Vec::new(),
        stable_moved: false,
        ahead: Vec::new(),
        group: Vec::new(),
        cancelled: Some(why.to_owned()),
        flaky: Vec::new(),
        pins: Vec::new(),
        upload_url: notify::upload_url(app, upload.id),
        server_url: app.config.public_url.clone(),
    };
    let rendered = app.templates.render("upload_rejected", &context)?;
    Ok(notify::queue_emails(
        tx,
        &format!("upload-{}-verdict", upload.id),
        "upload_rejected",
        Some(upload.id),
        &notify::maintainers(&manifest),
        &rendered,
    )
    .await?)
}
