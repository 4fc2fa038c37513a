//! Notifications (SPEC section 6): the emails an event deserves, rendered
//! and written to the outbox inside the event's own transaction (one row
//! per recipient, under a unique event key), then delivered by a job that
//! retries with backoff on temporary failures and never sends a delivered
//! email again.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::App;
use crate::db::{self, outbox::NewEmail};
use crate::domain::Manifest;
use crate::domain::check::CheckState;
use crate::domain::delivery::DeliveryState;
use crate::email::{OutgoingEmail, Rendered};

/// Lines of log shown per failing check in a reject email.
const LOG_TAIL_LINES: usize = 40;

/// The longest wait between two attempts at one email.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A check as an email lists it.
#[derive(Clone, Debug, Serialize)]
pub struct CheckLine {
    pub label: String,
    pub state: CheckState,
    pub summary: String,
    pub log_tail: String,
}

/// The context of `upload_accepted` and `upload_rejected`.
#[derive(Clone, Debug, Serialize)]
pub struct VerdictEmail {
    pub package: String,
    pub version: String,
    pub score: f64,
    pub threshold: f64,
    pub checks: Vec<CheckLine>,
    pub failing: Vec<CheckLine>,
    pub failed_required: Vec<String>,
    pub stable_moved: bool,
    /// Uploads ahead of this one (since accepted) that its failing checks
    /// were built against: "lib 1.1.0 (upload 41)".
    pub ahead: Vec<String>,
    /// When the upload was one of a group: every member ("lib 1.1.0 (upload 41)").
    pub group: Vec<String>,
    /// Why an operator cancelled the upload, when one did.
    pub cancelled: Option<String>,
    /// Checks that passed only on a retry.
    pub flaky: Vec<String>,
    pub pins: Vec<String>,
    pub upload_url: String,
    pub server_url: String,
}

/// The context of `dependency_obsoleted`.
#[derive(Clone, Debug, Serialize)]
pub struct DependencyObsoletedEmail {
    pub package: String,
    pub version: String,
    pub dependency: String,
    pub reason: String,
    pub replacement: Option<String>,
    pub pin: String,
    pub server_url: String,
}

/// The context of `dependents_broken`.
#[derive(Clone, Debug, Serialize)]
pub struct DependentsBrokenEmail {
    pub package: String,
    pub version: String,
    pub broken_by: String,
    pub log_tail: String,
    pub upload_url: String,
    pub server_url: String,
}

/// The last `LOG_TAIL_LINES` lines of a log.
pub fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Writes one email per recipient of `rendered` to the outbox, inside the
/// caller's transaction. The event key makes a second write a no-op.
pub async fn queue_emails(
    tx: &mut db::Tx,
    event_key: &str,
    kind: &str,
    upload_id: Option<i64>,
    recipients: &[String],
    rendered: &Rendered,
) -> sqlx::Result<Vec<i64>> {
    let batch = [Batched {
        event_key: event_key.to_owned(),
        recipients: recipients.to_vec(),
        rendered: rendered.clone(),
    }];
    queue_batch(tx, kind, upload_id, &batch).await
}

/// One event's email, for [`queue_batch`].
pub struct Batched {
    pub event_key: String,
    pub recipients: Vec<String>,
    pub rendered: Rendered,
}

/// Writes many events' emails at once (a hundred rows per statement).
pub async fn queue_batch(
    tx: &mut db::Tx,
    kind: &str,
    upload_id: Option<i64>,
    events: &[Batched],
) -> sqlx::Result<Vec<i64>> {
    let keys: Vec<(String, String, &Batched, &String)> = events
        .iter()
        .flat_map(|e| {
            e.recipients.iter().map(move |to| {
                let key = format!("{}:{to}", e.event_key);
                let message_id = format!(
                    "<{}@holdq>",
                    hex::encode(&Sha256::digest(key.as_bytes())[..16])
                );
                (key, message_id, e, to)
            })
        })
        .collect();
    let rows: Vec<NewEmail<'_>> = keys
        .iter()
        .map(|(key, message_id, e, to)| NewEmail {
            event_key: key,
            kind,
            upload_id,
            to_addr: to,
            subject: &e.rendered.subject,
            text_body: &e.rendered.text,
            html_body: &e.rendered.html,
            message_id,
        })
        .collect();
    db::outbox::insert_many(tx, &rows).await
}

/// The maintainers' addresses of a manifest, each once.
pub fn maintainers(manifest: &Manifest) -> Vec<String> {
    let mut out: Vec<String> = manifest.maintainers.iter().map(|m| m.to_string()).collect();
    out.dedup();
    out
}

/// The URL of an upload in the API.
pub fn upload_url(app: &App, upload_id: i64) -> String {
    format!("{}/api/v1/uploads/{upload_id}", app.config.public_url)
}

/// Delivers outbox row `id`: the job's body. Idempotent: a row that is no
/// longer pending (sent, or given up) is left alone.
pub async fn deliver(app: &App, id: i64) -> anyhow::Result<()> {
    let row = {
        let mut conn = app.db.pool().acquire().await?;
        match db::outbox::get(&mut conn, id).await? {
            Some(row)
                if row.state == DeliveryState::Pending && row.next_attempt_at <= db::now_ms() =>
            {
                row
            }
            _ => return Ok(()),
        }
    };
    let email = OutgoingEmail {
        to: row.to_addr.clone(),
        subject: row.subject.clone(),
        text: row.text_body.clone(),
        html: row.html_body.clone(),
        message_id: row.message_id.clone(),
    };
    let result = app.mailer.send(&app.config.mail.from, &email).await;
    let mut conn = app.db.pool().acquire().await?;
    match result {
        Ok(()) => {
            db::outbox::mark_sent(&mut conn, id).await?;
            tracing::info!(email.id = id, email.kind = %row.kind, upload.id = ?row.upload_id, "email sent");
        }
        Err(e) => {
            let wait = backoff(row.attempts + 1);
            let next = db::now_ms() + wait.as_millis() as i64;
            db::outbox::mark_attempt_failed(&mut conn, id, &e.message, e.permanent, next).await?;
            if e.permanent {
                tracing::error!(email.id = id, email.kind = %row.kind, error = %e.message, "email refused for good; not retried");
            } else {
                tracing::warn!(email.id = id, email.kind = %row.kind, error = %e.message, retry_in_ms = wait.as_millis() as u64, "email not delivered; will retry");
            }
        }
    }
    Ok(())
}

/// 1 s, 2 s, 4 s ... up to ten minutes.
fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(0, 16) as u32;
    Duration::from_secs(1u64 << exp.saturating_sub(1)).min(MAX_BACKOFF)
}

/// Pushes a delivery job for every pending email whose attempt is due.
pub async fn push_due(app: &App) -> anyhow::Result<usize> {
    let due = {
        let mut conn = app.db.pool().acquire().await?;
        db::outbox::due(&mut conn).await?
    };
    app.queues.push_emails(&due).await?;
    Ok(due.len())
}

/// Hands freshly committed emails to the mail queue in one batch; a
/// failure here is repaired by the sweep, which pushes every due email.
/// A large batch (an obsolescence with thousands of dependents) is pushed
/// in the background: the rows are durable already, and the caller need
/// not wait for the queue.
pub async fn push_new(app: &App, ids: &[i64]) {
    let batch: Vec<(i64, i64)> = ids.iter().map(|&id| (id, 0)).collect();
    let queues = app.queues.clone();
    let push = async move {
        if let Err(e) = queues.push_emails(&batch).await {
            tracing::warn!(
                emails = batch.len(),
                error = format!("{e:#}"),
                "emails not enqueued yet; the sweep will"
            );
        }
    };
    if ids.len() > 64 {
        tokio::spawn(push);
    } else {
        push.await;
    }
}

/// Sample contexts, one per kind: what `holdq mail test` sends.
pub fn samples(server_url: &str) -> Vec<(&'static str, serde_json::Value)> {
    let check = |label: &str, state: CheckState, summary: &str, log: &str| CheckLine {
        label: label.into(),
        state,
        summary: summary.into(),
        log_tail: log.into(),
    };
    let verdict = |accepted: bool| VerdictEmail {
        package: "sound-goodizer".into(),
        version: "1.4.0".into(),
        score: if accepted { 1.0 } else { 0.6 },
        threshold: 1.0,
        checks: vec![
            check(
                "validate",
                CheckState::Passed,
                "archive and manifest are valid",
                "",
            ),
            check(
                "build@linux-x86_64",
                if accepted {
                    CheckState::Passed
                } else {
                    CheckState::Failed
                },
                "exited 2 after 1.2s",
                "",
            ),
        ],
        failing: if accepted {
            vec![]
        } else {
            vec![check(
                "build@linux-x86_64",
                CheckState::Failed,
                "exited 2 after 1.2s",
                "cc: error: wave.c: No such file\nmake: *** [all] Error 1",
            )]
        },
        failed_required: if accepted {
            vec![]
        } else {
            vec!["build@linux-x86_64".into()]
        },
        stable_moved: !accepted,
        ahead: Vec::new(),
        group: Vec::new(),
        cancelled: None,
        flaky: Vec::new(),
        pins: if accepted {
            vec!["libwave ^2.1, <= 2.3.0".into()]
        } else {
            vec![]
        },
        upload_url: format!("{server_url}/api/v1/uploads/1"),
        server_url: server_url.into(),
    };
    vec![
        (
            "upload_accepted",
            serde_json::to_value(verdict(true)).expect("serializes"),
        ),
        (
            "upload_rejected",
            serde_json::to_value(verdict(false)).expect("serializes"),
        ),
        (
            "dependency_obsoleted",
            serde_json::to_value(DependencyObsoletedEmail {
                package: "sound-goodizer".into(),
                version: "1.4.0".into(),
                dependency: "libwave".into(),
                reason: "unmaintained since 2024".into(),
                replacement: Some("libwave2".into()),
                pin: "^2.1, <= 2.3.0".into(),
                server_url: server_url.into(),
            })
            .expect("serializes"),
        ),
        (
            "dependents_broken",
            serde_json::to_value(DependentsBrokenEmail {
                package: "sound-goodizer".into(),
                version: "1.4.0".into(),
                broken_by: "libwave 3.0.0".into(),
                log_tail: "error: cannot find wave_open".into(),
                upload_url: format!("{server_url}/api/v1/uploads/2"),
                server_url: server_url.into(),
            })
            .expect("serializes"),
        ),
    ]
}

/// Sends one sample of each template to `to`, straight through the
/// transport (`holdq mail test`).
pub async fn send_samples(app: &App, to: &str) -> anyhow::Result<usize> {
    let mut sent = 0;
    for (kind, ctx) in samples(&app.config.public_url) {
        let rendered = app.templates.render(kind, &ctx)?;
        let email = OutgoingEmail {
            to: to.into(),
            subject: format!("[sample] {}", rendered.subject),
            text: rendered.text,
            html: rendered.html,
            message_id: format!("<sample-{kind}-{}@holdq>", db::now_ms()),
        };
        app.mailer
            .send(&app.config.mail.from, &email)
            .await
            .map_err(|e| anyhow::anyhow!("cannot send the {kind} sample: {}", e.message))?;
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::{KINDS, Templates};

    #[test]
    fn every_kind_renders_its_sample() {
        let t = Templates::new(None);
        let samples = samples("http://holdq.example");
        assert_eq!(samples.len(), KINDS.len());
        for (kind, ctx) in samples {
            let r = t
                .render(kind, &ctx)
                .unwrap_or_else(|e| panic!("{kind}: {e:#}"));
            assert!(r.subject.starts_with("[holdq]"), "{kind}: {}", r.subject);
            assert!(r.text.contains("sound-goodizer"), "{kind}");
            assert!(r.html.contains("</html>"), "{kind}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
