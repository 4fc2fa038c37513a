//! The one sentence at the top of an upload's page: where the upload is
//! and what happens next, in words a maintainer reads without knowing the
//! queue's internals ("building on linux-aarch64; 2 of 5 checks left",
//! "waiting for a worker of linux-riscv64: none is connected"). A pure
//! function of the upload's view and of the workers and paused platforms.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::UploadState;
use crate::domain::check::{CheckKind, CheckState};
use crate::service::queue::{CheckView, UploadView};

/// The workers that serve each platform right now, and how many of them
/// are busy with a check.
#[derive(Clone, Debug, Default)]
pub struct Capacity {
    pub workers: BTreeMap<String, Workers>,
    pub paused: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Workers {
    pub connected: usize,
    pub busy: usize,
}

/// What the upload is doing, as a verb phrase on its platform.
fn doing(check: &CheckView) -> String {
    let on = |verb: &str| format!("{verb} on {}", check.platform);
    match check.kind {
        CheckKind::Validate => "validating its archive".into(),
        CheckKind::Resolve => "resolving its dependencies".into(),
        CheckKind::Build => on("building"),
        CheckKind::Test => on("testing"),
        CheckKind::Revdeps => on("rebuilding its dependents"),
    }
}

/// Why a check that has not started is not running yet.
fn why_waiting(check: &CheckView, capacity: &Capacity) -> String {
    if let Some(why) = check
        .summary
        .as_deref()
        .filter(|s| s.starts_with("waiting for"))
    {
        return why.to_owned();
    }
    if check.platform.is_empty() {
        // validate and resolve run in the server as soon as it starts them.
        return "waiting for the server to start its checks".into();
    }
    if capacity.paused.contains(&check.platform) {
        return format!(
            "waiting: the platform {} is paused by an operator",
            check.platform
        );
    }
    match capacity.workers.get(&check.platform) {
        None | Some(Workers { connected: 0, .. }) => format!(
            "waiting for a worker of {}: none is connected",
            check.platform
        ),
        Some(w) if w.busy >= w.connected => format!(
            "waiting for a worker of {}: all {} are busy",
            check.platform, w.connected
        ),
        Some(_) => format!("waiting for a worker of {} to pick it up", check.platform),
    }
}

fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The sentence for an upload still in the holding queue.
fn pending_line(upload: &UploadView, capacity: &Capacity) -> String {
    let position = upload
        .position
        .map(|p| format!("position {p} in the queue; "))
        .unwrap_or_default();
    let reason_waits = upload
        .reason
        .as_deref()
        .filter(|r| r.starts_with("waiting for"));
    if upload.checks.is_empty() {
        return match reason_waits {
            Some(why) => format!("{position}{why}"),
            None => format!("{position}queued: its checks have not started yet"),
        };
    }
    let total = upload.checks.len();
    let open: Vec<&CheckView> = upload
        .checks
        .iter()
        .filter(|c| !c.state.is_final())
        .collect();
    if open.is_empty() {
        return match reason_waits {
            Some(why) => format!("every check is done; {why} before its verdict"),
            None => "every check is done; its verdict is being given".into(),
        };
    }
    let left = format!("{} of {total} checks left", open.len());
    let running: Vec<String> = open
        .iter()
        .filter(|c| c.state == CheckState::Running)
        .map(|c| doing(c))
        .collect();
    if !running.is_empty() {
        return format!("{}; {left}", and_list(&running));
    }
    // A platform waiting after an infrastructure error says so, with when
    // it tries again.
    if let Some(infra) = open.iter().find_map(|c| c.infra.as_ref()) {
        return format!("{}; {left}", infra.line);
    }
    format!("{}; {left}", why_waiting(open[0], capacity))
}

/// The one sentence saying where `upload` is and what happens next.
pub fn status_line(upload: &UploadView, capacity: &Capacity) -> String {
    match upload.state {
        UploadState::Queued | UploadState::Checking => pending_line(upload, capacity),
        UploadState::Accepted => {
            let score = upload
                .verdict
                .as_ref()
                .map(|v| format!(" (score {:.2}, pass mark {:.2})", v.score, v.threshold))
                .unwrap_or_default();
            format!("accepted: promoted into the stable repository{score}")
        }
        UploadState::Rejected => match &upload.verdict {
            Some(v) if v.cancelled.is_some() => format!(
                "rejected: cancelled by an operator ({})",
                v.cancelled.as_deref().unwrap_or_default()
            ),
            Some(v) if !v.failed.is_empty() => {
                // Name the checks that failed, not those skipped after them.
                let failed: Vec<String> = upload
                    .checks
                    .iter()
                    .filter(|c| c.state == CheckState::Failed)
                    .map(CheckView::label)
                    .collect();
                let named = if failed.is_empty() {
                    &v.failed
                } else {
                    &failed
                };
                format!("rejected: {} failed", and_list(named))
            }
            Some(v) => format!(
                "rejected: score {:.2} is below the pass mark {:.2}",
                v.score, v.threshold
            ),
            None => format!(
                "rejected: {}",
                upload.reason.as_deref().unwrap_or("refused")
            ),
        },
        UploadState::Superseded => match upload.superseded_by {
            Some(by) => format!("superseded by upload {by}: nothing more happens to this one"),
            None => "superseded: nothing more happens to this one".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::queue::VerdictView;

    fn check(kind: CheckKind, platform: &str, state: &str) -> CheckView {
        CheckView {
            kind,
            platform: platform.into(),
            state: CheckState::parse(state).expect("a check state"),
            weight: 1.0,
            required: true,
            attempts: 0,
            duration_ms: None,
            started_at: None,
            summary: None,
            log: None,
            metadata: None,
            base: None,
            infra: None,
        }
    }

    fn upload(state: UploadState, checks: Vec<CheckView>) -> UploadView {
        UploadView {
            id: 7,
            name: "wave".into(),
            version: "1.0.0".into(),
            state,
            position: Some(2),
            sha256: String::new(),
            size_bytes: 0,
            maintainers: vec![],
            superseded_by: None,
            reason: None,
            created_at: String::new(),
            updated_at: String::new(),
            checks,
            verdict: None,
            emails: vec![],
            waiting_for: vec![],
            rebases: 0,
        }
    }

    fn five(build_state: &str) -> Vec<CheckView> {
        vec![
            check(CheckKind::Validate, "", "passed"),
            check(CheckKind::Resolve, "", "passed"),
            check(CheckKind::Build, "linux-aarch64", build_state),
            check(CheckKind::Test, "linux-aarch64", "pending"),
            check(CheckKind::Revdeps, "linux-aarch64", "pending"),
        ]
    }

    #[test]
    fn a_running_build_says_where_and_how_many_checks_are_left() {
        let u = upload(UploadState::Checking, five("running"));
        assert_eq!(
            status_line(&u, &Capacity::default()),
            "building on linux-aarch64; 3 of 5 checks left"
        );
    }

    #[test]
    fn a_waiting_check_says_no_worker_is_connected_busy_or_paused() {
        let u = upload(UploadState::Checking, five("pending"));
        let mut capacity = Capacity::default();
        assert_eq!(
            status_line(&u, &capacity),
            "waiting for a worker of linux-aarch64: none is connected; 3 of 5 checks left"
        );
        capacity.workers.insert(
            "linux-aarch64".into(),
            Workers {
                connected: 2,
                busy: 2,
            },
        );
        assert!(
            status_line(&u, &capacity)
                .starts_with("waiting for a worker of linux-aarch64: all 2 are busy")
        );
        capacity.paused.insert("linux-aarch64".into());
        assert!(status_line(&u, &capacity).contains("linux-aarch64 is paused"));
    }

    #[test]
    fn a_check_waiting_for_an_upload_ahead_says_which() {
        let mut checks = five("pending");
        checks[2].summary = Some("waiting for lib 1.1.0 (upload 41) ahead of it".into());
        let u = upload(UploadState::Checking, checks);
        assert_eq!(
            status_line(&u, &Capacity::default()),
            "waiting for lib 1.1.0 (upload 41) ahead of it; 3 of 5 checks left"
        );
    }

    #[test]
    fn a_rejected_upload_names_its_failed_checks_not_the_skipped_ones() {
        let mut checks = five("failed");
        checks[3].state = CheckState::Skipped;
        checks[4].state = CheckState::Skipped;
        let mut u = upload(UploadState::Rejected, checks);
        u.verdict = Some(VerdictView {
            accepted: false,
            score: 0.4,
            threshold: 1.0,
            stable_moved: false,
            ahead: vec![],
            failed: vec!["build@linux-aarch64".into(), "test@linux-aarch64".into()],
            flaky: vec![],
            cancelled: None,
            decided_at: String::new(),
        });
        assert_eq!(
            status_line(&u, &Capacity::default()),
            "rejected: build@linux-aarch64 failed"
        );
    }

    #[test]
    fn a_queued_upload_without_checks_says_so() {
        let u = upload(UploadState::Queued, vec![]);
        assert_eq!(
            status_line(&u, &Capacity::default()),
            "position 2 in the queue; queued: its checks have not started yet"
        );
    }
}
