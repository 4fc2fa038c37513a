//! Infrastructure errors (SPEC section 3): a check that cannot run for a
//! reason that is not its package's (a full disk, a download, unpacking
//! its workspace, the sandbox, the database) goes back to `pending` with
//! the reason, and runs again after a backoff (1 s doubling to 5 min) on
//! any worker of its platform. It never counts against the package.

use std::time::Duration;

use super::App;
use crate::db::{self, checks::CheckRow, checks::InfraFailure};
use crate::domain::check::{self, InfraReason};

/// After this long waiting on infrastructure errors, the log warns.
pub const LONG_WAIT: Duration = Duration::from_secs(15 * 60);

/// A stage of a check's run whose failure is an infrastructure error of
/// that reason: `.context(Stage(InfraReason::Unpack))`.
#[derive(Clone, Copy, Debug)]
pub struct Stage(pub InfraReason);

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.describe())
    }
}

/// Why `e` kept a check from running: a full disk wherever it happened,
/// else the stage it was tagged with, else the database, else internal.
pub fn classify(e: &anyhow::Error) -> InfraReason {
    let disk_full = e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(nix::libc::EDQUOT)
        }) || cause.to_string().contains("No space left on device")
    });
    if disk_full {
        InfraReason::DiskFull
    } else if let Some(stage) = e.downcast_ref::<Stage>() {
        stage.0
    } else if e.chain().any(|cause| cause.is::<sqlx::Error>()) {
        InfraReason::Database
    } else {
        InfraReason::Internal
    }
}

/// What a status line says failed: a full disk as such (its message names
/// only a path), anything else by its message, which begins with the stage
/// that failed.
fn what_failed(reason: InfraReason, message: &str) -> &str {
    match reason {
        InfraReason::DiskFull => reason.describe(),
        _ => message,
    }
}

/// The status line of a check waiting after an infrastructure error.
pub fn waiting_line(wait: &db::checks::InfraWait, now_ms: i64) -> String {
    let what = what_failed(wait.reason, &wait.message);
    let retry = if wait.retry_at > now_ms {
        let secs = (wait.retry_at - now_ms + 999) / 1000;
        format!("retry in {secs} s")
    } else {
        "retrying now".to_owned()
    };
    format!(
        "waiting: infrastructure error on worker {}: {what} ({retry})",
        wait.worker
    )
}

/// Records that the job of build check `check_id` could not run its chain
/// on `worker` because of `e`: its running checks go back to pending, and
/// it gets a new job when its backoff is over. The log has one line per
/// cause and check, and a warning once it has waited [`LONG_WAIT`].
pub async fn record(
    app: &App,
    check_id: i64,
    worker: &str,
    e: &anyhow::Error,
) -> anyhow::Result<()> {
    let reason = classify(e);
    let mut message = format!("{e:#}");
    if message.len() > 500 {
        let cut = message.floor_char_boundary(500);
        message.truncate(cut);
    }
    let what = what_failed(reason, &message);
    let summary = format!("waiting: infrastructure error on worker {worker}: {what}");
    let mut conn = app.db.pool().acquire().await?;
    let Some(before) = db::checks::get(&mut conn, check_id).await? else {
        return Ok(());
    };
    let failure = InfraFailure {
        reason,
        message: &message,
        worker,
        summary: &summary,
        delay: check::retry_delay,
    };
    let Some(after) = db::checks::record_infra_failure(&mut conn, check_id, failure).await? else {
        return Ok(());
    };
    drop(conn);
    log_failure(&before, &after, reason, &message);
    schedule_retry(app, &after);
    Ok(())
}

fn log_failure(before: &CheckRow, after: &CheckRow, reason: InfraReason, message: &str) {
    let Some(wait) = after.infra() else {
        return;
    };
    let retry_in_s = (wait.retry_at - db::now_ms()).max(0) / 1000;
    let same_cause = before
        .infra()
        .is_some_and(|w| w.reason == reason && w.message == message);
    if same_cause {
        tracing::debug!(check.id = after.id, worker = %wait.worker, reason = %reason, failures = wait.failures, retry_in_s, "check still cannot run");
    } else {
        tracing::warn!(check.id = after.id, upload.id = after.upload_id, check.platform = %after.platform, worker = %wait.worker, reason = %reason, error = %message, retry_in_s, "check cannot run (infrastructure error): back to pending, retried with backoff");
    }
    let waited = db::now_ms() - wait.since;
    let long = LONG_WAIT.as_millis() as i64;
    let previous = before.infra().map_or(0, |w| {
        let delay = check::retry_delay(u32::try_from(w.failures).unwrap_or(u32::MAX));
        w.retry_at - delay.as_millis() as i64 - w.since
    });
    if waited >= long && previous < long {
        tracing::warn!(check.id = after.id, upload.id = after.upload_id, check.platform = %after.platform, reason = %reason, waited_s = waited / 1000, "check has waited on infrastructure errors for 15 minutes; once the cause is fixed, `holdq retry` starts it at once");
    }
}

/// Gives build check `build` a new job when its backoff is over (the sweep
/// does it too, should this process stop meanwhile).
pub fn schedule_retry(app: &App, build: &CheckRow) {
    let Some(at) = build.retry_at else {
        return;
    };
    let delay = Duration::from_millis(u64::try_from(at - db::now_ms()).unwrap_or(0));
    let app = app.clone();
    let (platform, id) = (build.platform.clone(), build.id);
    let (attempts, failures) = (build.attempts, build.start_failures);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Err(e) = super::checks::enqueue_check(&app, &platform, id, attempts, failures).await
        {
            tracing::warn!(
                check.id = id,
                error = format!("{e:#}"),
                "retry not enqueued; the sweep will"
            );
        }
    });
}

/// How long a worker whose jobs failed `consecutive` times in a row on
/// infrastructure errors waits before it takes another: nothing after one,
/// then the backoff, at most 30 s.
pub fn worker_pause(consecutive: u32) -> Duration {
    if consecutive < 2 {
        Duration::ZERO
    } else {
        check::retry_delay(consecutive - 1).min(Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_full_disk_is_told_apart_wherever_it_happened() {
        let enospc = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let e = anyhow::Error::new(enospc)
            .context("writing build.sh")
            .context(Stage(InfraReason::Unpack));
        assert_eq!(classify(&e), InfraReason::DiskFull);
        let e = anyhow::anyhow!("bad header").context(Stage(InfraReason::Unpack));
        assert_eq!(classify(&e), InfraReason::Unpack);
        let e: anyhow::Result<()> = Err(sqlx::Error::PoolTimedOut).context("reading the check");
        assert_eq!(classify(&e.unwrap_err()), InfraReason::Database);
        assert_eq!(classify(&anyhow::anyhow!("odd")), InfraReason::Internal);
    }

    #[test]
    fn the_waiting_line_names_worker_reason_and_retry() {
        let wait = db::checks::InfraWait {
            reason: InfraReason::DiskFull,
            message: "No space left on device (os error 28)".into(),
            worker: "w1".into(),
            since: 0,
            retry_at: 40_000,
            failures: 3,
        };
        assert_eq!(
            waiting_line(&wait, 0),
            "waiting: infrastructure error on worker w1: no space left on device (retry in 40 s)"
        );
    }

    #[test]
    fn a_failing_worker_backs_off_from_the_second_failure() {
        let pauses: Vec<u64> = (0..8).map(|n| worker_pause(n).as_secs()).collect();
        assert_eq!(pauses, [0, 0, 1, 2, 4, 8, 16, 30]);
    }
}
