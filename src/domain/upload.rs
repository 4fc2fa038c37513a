//! The holding-queue state machine of an upload (SPEC section 3):
//! `queued → checking → accepted | rejected`, and `superseded` from
//! `queued` or `checking`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an upload stands in the holding queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Queued,
    Checking,
    Accepted,
    Rejected,
    Superseded,
}

impl UploadState {
    pub const ALL: [UploadState; 5] = [
        Self::Queued,
        Self::Checking,
        Self::Accepted,
        Self::Rejected,
        Self::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Checking => "checking",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Still in the holding queue: waiting for, or under, its checks.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Checking)
    }

    /// Whether the machine allows going from `self` to `next`.
    pub fn can_become(self, next: UploadState) -> bool {
        use UploadState::*;
        matches!(
            (self, next),
            (Queued, Checking)
                | (Queued | Checking, Superseded)
                | (Checking, Accepted | Rejected)
                // An internal error (worker lost) puts a check back in line.
                | (Checking, Queued)
        )
    }
}

impl fmt::Display for UploadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::UploadState::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in UploadState::ALL {
            assert_eq!(UploadState::parse(state.as_str()), Some(state));
        }
        assert_eq!(UploadState::parse("lost"), None);
    }

    #[test]
    fn only_pending_uploads_can_be_superseded() {
        assert!(Queued.can_become(Superseded));
        assert!(Checking.can_become(Superseded));
        for done in [Accepted, Rejected, Superseded] {
            assert!(!done.can_become(Superseded), "{done}");
            assert!(!done.is_pending());
        }
    }

    #[test]
    fn verdicts_come_only_from_checking() {
        assert!(!Queued.can_become(Accepted));
        assert!(Checking.can_become(Accepted));
        assert!(Checking.can_become(Rejected));
        assert!(!Accepted.can_become(Rejected));
    }
}
