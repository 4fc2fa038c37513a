//! Integrity checks and the verdict (SPEC section 4): each check has a
//! kind, a platform where it applies, a weight and a `required` flag;
//! score = passed weight / total weight; an upload is accepted when every
//! required check passed and the score reaches the pass mark's threshold.

use serde::{Deserialize, Serialize};

use super::word::{StateMachine, word_enum};

word_enum! {
    "check kind",
    /// What a check verifies.
    #[derive(PartialOrd, Ord)]
    pub enum CheckKind {
        Validate = "validate",
        Resolve = "resolve",
        Build = "build",
        Test = "test",
        Revdeps = "revdeps",
    }
}

impl CheckKind {
    /// Whether the check runs once per platform.
    pub fn per_platform(self) -> bool {
        matches!(self, Self::Build | Self::Test | Self::Revdeps)
    }

    /// `validate`, `resolve` and builds are required unless the pass mark
    /// says otherwise; `validate` and `resolve` always are.
    pub fn always_required(self) -> bool {
        matches!(self, Self::Validate | Self::Resolve)
    }
}

word_enum! {
    "check state",
    /// Where a check stands.
    pub enum CheckState {
        Pending = "pending",
        Running = "running",
        Passed = "passed",
        Failed = "failed",
        /// Not run because a check it needs failed; counts as not passed.
        Skipped = "skipped",
        /// Stopped because its upload was superseded or cancelled.
        Halted = "halted",
    }
}

impl CheckState {
    /// A final state: nothing more will happen to the check.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

impl StateMachine for CheckState {
    const WHOSE: &'static str = "a check";

    fn can_become(self, next: CheckState) -> bool {
        use CheckState::*;
        matches!(
            (self, next),
            (Pending, Running)
                // Its job was delivered again after a lost worker.
                | (Running, Running)
                | (Pending | Running, Passed | Failed | Skipped | Halted)
                // An infrastructure error puts a running check back in line.
                | (Running, Pending)
                // A rebase or an operator's retry runs a finished check again.
                | (Passed | Failed | Skipped, Pending)
        )
    }
}

word_enum! {
    "infrastructure error",
    /// Why a check could not run, for a reason that is not its package's:
    /// it goes back to `pending` and is retried with backoff, and never
    /// counts against the package's score.
    pub enum InfraReason {
        /// No space left on a disk of the worker or the server.
        DiskFull = "disk_full",
        /// The archive (or a dependency's) could not be downloaded.
        Fetch = "fetch",
        /// The workspace could not be unpacked or prepared.
        Unpack = "unpack",
        /// The sandbox could not be set up.
        Sandbox = "sandbox",
        /// The database did not answer.
        Database = "database",
        /// Anything else that went wrong on our side.
        Internal = "internal",
    }
}

impl InfraReason {
    /// How the reason reads in a status line.
    pub fn describe(self) -> &'static str {
        match self {
            Self::DiskFull => "no space left on device",
            Self::Fetch => "cannot download an archive",
            Self::Unpack => "cannot prepare the workspace",
            Self::Sandbox => "cannot set up the sandbox",
            Self::Database => "the database does not answer",
            Self::Internal => "internal error",
        }
    }
}

/// How long a check waits before its `failures`-th retry after an
/// infrastructure error: 1 s, doubling, at most 5 minutes.
pub fn retry_delay(failures: u32) -> std::time::Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    std::time::Duration::from_secs(secs.min(300))
}

/// One check as scoring sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub kind: CheckKind,
    /// Empty for checks that do not run per platform.
    pub platform: String,
    pub weight: f64,
    pub required: bool,
    pub passed: bool,
}

impl CheckResult {
    /// `build@linux-x86_64`, or `resolve`.
    pub fn label(&self) -> String {
        label(self.kind, &self.platform)
    }
}

/// `KIND@PLATFORM`, or `KIND` for checks that are not per platform.
pub fn label(kind: CheckKind, platform: &str) -> String {
    if platform.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}@{platform}")
    }
}

/// The outcome of scoring an upload's checks against a threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub accepted: bool,
    pub score: f64,
    pub threshold: f64,
    /// Labels of required checks that did not pass.
    pub failed_required: Vec<String>,
    /// Labels of every check that did not pass.
    pub failed: Vec<String>,
}

/// Scores `checks` against `threshold`. With no weight at all, the score is 1.
pub fn score(checks: &[CheckResult], threshold: f64) -> Verdict {
    let total: f64 = checks.iter().map(|c| c.weight).sum();
    let passed: f64 = checks.iter().filter(|c| c.passed).map(|c| c.weight).sum();
    let score = if total > 0.0 { passed / total } else { 1.0 };
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(CheckResult::label)
        .collect();
    let failed_required: Vec<String> = checks
        .iter()
        .filter(|c| c.required && !c.passed)
        .map(CheckResult::label)
        .collect();
    // Scores are ratios of sums of floats: allow for rounding at the mark.
    let reaches = score + 1e-9 >= threshold;
    Verdict {
        accepted: failed_required.is_empty() && reaches,
        score,
        threshold,
        failed_required,
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        kind: CheckKind,
        platform: &str,
        weight: f64,
        required: bool,
        passed: bool,
    ) -> CheckResult {
        CheckResult {
            kind,
            platform: platform.into(),
            weight,
            required,
            passed,
        }
    }

    #[test]
    fn everything_passing_scores_one_and_is_accepted() {
        let v = score(
            &[
                check(CheckKind::Validate, "", 1.0, true, true),
                check(CheckKind::Build, "a", 1.0, true, true),
            ],
            1.0,
        );
        assert_eq!(v.score, 1.0);
        assert!(v.accepted);
        assert!(v.failed.is_empty());
    }

    #[test]
    fn a_failed_optional_check_lowers_the_score_against_the_threshold() {
        let checks = [
            check(CheckKind::Validate, "", 1.0, true, true),
            check(CheckKind::Resolve, "", 1.0, true, true),
            check(CheckKind::Build, "a", 1.0, false, true),
            check(CheckKind::Build, "b", 1.0, false, false),
        ];
        let strict = score(&checks, 1.0);
        assert_eq!(strict.score, 0.75);
        assert!(!strict.accepted);
        assert_eq!(strict.failed, ["build@b"]);
        assert!(score(&checks, 0.75).accepted);
    }

    #[test]
    fn a_failed_required_check_rejects_whatever_the_score() {
        let checks = [
            check(CheckKind::Resolve, "", 1.0, true, false),
            check(CheckKind::Build, "a", 100.0, true, true),
        ];
        let v = score(&checks, 0.0);
        assert!(!v.accepted);
        assert_eq!(v.failed_required, ["resolve"]);
    }

    #[test]
    fn states_and_kinds_round_trip() {
        for s in CheckState::ALL {
            assert_eq!(CheckState::parse(s.as_str()), Some(s));
        }
        for k in CheckKind::ALL {
            assert_eq!(CheckKind::parse(k.as_str()), Some(k));
        }
        assert!(CheckState::Halted.is_final());
        assert!(!CheckState::Running.is_final());
    }

    #[test]
    fn infrastructure_retries_back_off_from_a_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX).as_secs(), 300);
        assert_eq!(InfraReason::parse("disk_full"), Some(InfraReason::DiskFull));
    }

    #[test]
    fn finished_checks_run_again_only_through_pending() {
        use CheckState::*;
        assert!(Passed.can_become(Pending), "a rebase");
        assert!(Running.can_become(Pending), "an infrastructure error");
        assert!(!Passed.can_become(Running));
        assert!(!Halted.can_become(Pending), "a halted check stays halted");
        assert!(!Passed.can_become(Failed), "a result stands");
        let into_final: Vec<_> = CheckState::sources_of(Failed).collect();
        assert_eq!(into_final, [Pending, Running]);
    }
}
