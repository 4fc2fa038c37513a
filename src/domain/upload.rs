//! The holding-queue state machine of an upload (SPEC section 3):
//! `queued → checking → accepted | rejected`, and `superseded` from
//! `queued` or `checking`.

use super::word::{StateMachine, word_enum};

word_enum! {
    "upload state",
    /// Where an upload stands in the holding queue.
    pub enum UploadState {
        Queued = "queued",
        Checking = "checking",
        Accepted = "accepted",
        Rejected = "rejected",
        Superseded = "superseded",
    }
}

impl UploadState {
    /// Still in the holding queue: waiting for, or under, its checks.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Checking)
    }
}

impl StateMachine for UploadState {
    const WHOSE: &'static str = "an upload";

    fn can_become(self, next: UploadState) -> bool {
        use UploadState::*;
        matches!(
            (self, next),
            (Queued, Checking)
                | (Queued | Checking, Superseded)
                | (Checking, Accepted)
                // Rejected by its verdict, or cancelled (before or during
                // its checks) by an operator.
                | (Queued | Checking, Rejected)
                // An internal error (worker lost) puts a check back in line.
                | (Checking, Queued)
        )
    }
}

word_enum! {
    "group state",
    /// Where an upload group stands: members join it while it is `open`;
    /// once `submitted` its members are in line and decided as one.
    pub enum GroupState {
        Open = "open",
        Submitted = "submitted",
        /// A member was refused at upload: the group is refused whole.
        Refused = "refused",
        /// Not submitted in time.
        Expired = "expired",
        /// A newer upload superseded one of its members.
        Superseded = "superseded",
    }
}

impl StateMachine for GroupState {
    const WHOSE: &'static str = "an upload group";

    fn can_become(self, next: GroupState) -> bool {
        use GroupState::*;
        matches!(
            (self, next),
            (Open, Submitted | Refused | Expired | Superseded) | (Submitted, Superseded)
        )
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
        assert!(!Superseded.can_become(Rejected));
    }

    #[test]
    fn a_forbidden_move_is_named() {
        let err = Accepted.check_move(Checking).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an upload cannot go from accepted to checking"
        );
        assert!(Queued.check_move(Checking).is_ok());
        let into_superseded: Vec<_> = UploadState::sources_of(Superseded).collect();
        assert_eq!(into_superseded, [Queued, Checking]);
    }

    #[test]
    fn an_unknown_state_is_named_not_a_panic() {
        let err = UploadState::try_from("archived".to_owned()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown upload state \"archived\" (written by a newer holdq?)"
        );
    }
}
