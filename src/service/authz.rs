//! Who may do what: the one authorization policy. Every endpoint's use case
//! asks [`authorize`] before it acts, and `GET /api/v1/me` answers from it
//! what a token may do; neither the HTTP layer nor the command line decides
//! a role by itself. (`holdq user`, `holdq owner` and `holdq mail` work
//! straight on the server's database and config: whoever may read those is
//! the server's operator.)
//!
//! The rules: the stable repository, health and metrics are public. Any
//! signed-in user (not a worker) sees the holding queue and the state of
//! every upload; check logs and email recipients only the package's owners
//! and operators. Owners (and operators) upload a package, fetch its
//! uploaded archives and obsolete it; whoever first uploads a new name
//! becomes its owner. A worker's token fetches upload archives and nothing
//! more. Operators may do everything.

use serde::{Deserialize, Serialize};

use super::users::User;
use crate::db;

/// Something a user may ask the server to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Health and metrics.
    Monitor,
    /// The stable index, packages, dependents, stable archives.
    ReadStable,
    /// Whose token this is and what it may do.
    ReadAccount,
    /// The holding queue, upload states, platforms, workers, the pass mark.
    ReadQueue,
    /// An upload's check logs and email recipients.
    ReadUploadDetails,
    /// An upload's archive as uploaded (what a remote worker checks).
    FetchUploadArchive,
    /// Upload a package into the holding queue.
    Upload,
    /// Mark a package obsolete.
    Obsolete,
    /// Undo an obsolescence.
    UndoObsolescence,
    /// Change the pass mark, or simulate a change.
    TunePassMark,
    /// Cancel an upload, retry a check.
    ControlQueue,
    /// Pause and resume a platform.
    ControlPlatforms,
    /// Make, read and submit one's own upload groups.
    ManageGroups,
    /// Keep one's own partial uploads (tus): create, append, list, end.
    /// Which package it is shows only once complete, when `Upload` is asked.
    ResumeUploads,
}

impl Action {
    /// Every action, for listing what a token may do.
    pub const ALL: [Action; 14] = [
        Action::Monitor,
        Action::ReadStable,
        Action::ReadAccount,
        Action::ReadQueue,
        Action::ReadUploadDetails,
        Action::FetchUploadArchive,
        Action::Upload,
        Action::Obsolete,
        Action::UndoObsolescence,
        Action::TunePassMark,
        Action::ControlQueue,
        Action::ControlPlatforms,
        Action::ManageGroups,
        Action::ResumeUploads,
    ];

    /// What the action is, as the end of "may ...".
    pub fn describe(self) -> &'static str {
        match self {
            Action::Monitor => "read the server's health and metrics",
            Action::ReadStable => "read the stable repository",
            Action::ReadAccount => "read their account",
            Action::ReadQueue => "read the holding queue",
            Action::ReadUploadDetails => "read its uploads' check logs and email recipients",
            Action::FetchUploadArchive => "fetch its uploaded archives",
            Action::Upload => "upload it",
            Action::Obsolete => "obsolete it",
            Action::UndoObsolescence => "undo an obsolescence",
            Action::TunePassMark => "change or simulate the pass mark",
            Action::ControlQueue => "cancel uploads and retry checks",
            Action::ControlPlatforms => "pause and resume platforms",
            Action::ManageGroups => "make and submit upload groups",
            Action::ResumeUploads => "keep resumable uploads",
        }
    }

    /// Whether the action is about one package (its owners may do it).
    fn is_for_owners(self) -> bool {
        matches!(
            self,
            Action::ReadUploadDetails
                | Action::FetchUploadArchive
                | Action::Upload
                | Action::Obsolete
        )
    }
}

/// The package an action is about, as the policy needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Package<'a> {
    pub name: &'a str,
    /// The user owns it, or it is new (their upload makes them its owner).
    pub owned: bool,
}

/// Why an action is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("sign in: send `Authorization: Bearer <token>`")]
    SignInRequired,
    #[error("only operators may {}", .0.describe())]
    NotOperator(Action),
    #[error("you do not own {package:?}; only its owners and operators may {}", .action.describe())]
    NotOwner { action: Action, package: String },
    #[error("a worker's token cannot {}; use a maintainer's token", worker_phrase(*.0))]
    WorkerToken(Action),
}

fn worker_phrase(action: Action) -> &'static str {
    match action {
        Action::Upload => "upload packages",
        other => other.describe(),
    }
}

impl Denied {
    /// The code of the API's error answer.
    pub fn code(&self) -> &'static str {
        match self {
            Denied::SignInRequired => "unauthorized",
            Denied::NotOperator(_) => "not_operator",
            Denied::NotOwner { .. } => "not_owner",
            Denied::WorkerToken(_) => "worker_token",
        }
    }
}

/// Whether `user` (`None`: anonymous) may do `action`, on `package` when
/// the action is about one.
pub fn authorize(
    user: Option<&User>,
    action: Action,
    package: Option<Package<'_>>,
) -> Result<(), Denied> {
    if matches!(action, Action::Monitor | Action::ReadStable) {
        return Ok(());
    }
    let user = user.ok_or(Denied::SignInRequired)?;
    if user.is_operator || action == Action::ReadAccount {
        return Ok(());
    }
    if user.is_worker {
        return match action {
            Action::FetchUploadArchive => Ok(()),
            other => Err(Denied::WorkerToken(other)),
        };
    }
    match action {
        Action::ReadQueue | Action::ManageGroups | Action::ResumeUploads => Ok(()),
        a if a.is_for_owners() => match package {
            Some(p) if p.owned => Ok(()),
            p => Err(Denied::NotOwner {
                action: a,
                package: p.map(|p| p.name.to_owned()).unwrap_or_default(),
            }),
        },
        other => Err(Denied::NotOperator(other)),
    }
}

/// Who asks, with what the server's configuration makes public beyond the
/// stable repository (`web.public_queue`): the API and the web pages ask
/// the policy through this when an anonymous reader may be let in.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    pub user: Option<&'a User>,
    /// The queue and upload states (never logs or recipients) are public.
    pub public_queue: bool,
}

impl<'a> Viewer<'a> {
    /// A signed-in user (what the configuration makes public changes
    /// nothing for them).
    pub fn signed_in(user: &'a User) -> Self {
        Self {
            user: Some(user),
            public_queue: false,
        }
    }

    /// [`authorize`], letting anyone read the queue when it is public.
    pub fn authorize(&self, action: Action, package: Option<Package<'_>>) -> Result<(), Denied> {
        if self.user.is_none() && self.public_queue && action == Action::ReadQueue {
            return Ok(());
        }
        authorize(self.user, action, package)
    }
}

/// [`authorize`] for `user` on the existing package `package_id`, looking
/// up whether they own it (only when the answer depends on it).
pub async fn authorize_on(
    conn: &mut db::Conn,
    user: &User,
    action: Action,
    package_id: i64,
    name: &str,
) -> Result<(), AuthzError> {
    let owned = match authorize(Some(user), action, Some(Package { name, owned: false })) {
        Ok(()) => return Ok(()),
        Err(Denied::NotOwner { .. }) => db::packages::is_owner(conn, package_id, user.id).await?,
        Err(denied) => return Err(denied.into()),
    };
    Ok(authorize(
        Some(user),
        action,
        Some(Package { name, owned }),
    )?)
}

/// A refusal, or the database failing while the policy asked it.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A token's account and what the policy lets it do (`GET /api/v1/me`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    #[serde(flatten)]
    pub user: User,
    /// What it may do on any package (or with none).
    pub may: Vec<Action>,
    /// What it may do besides on the packages it owns.
    pub may_on_owned_packages: Vec<Action>,
}

impl Account {
    /// What the policy lets `user` do.
    pub fn of(user: User) -> Self {
        let allowed = |owned: bool| -> Vec<Action> {
            let package = Some(Package { name: "", owned });
            Action::ALL
                .into_iter()
                .filter(|a| authorize(Some(&user), *a, package).is_ok())
                .collect()
        };
        let may = allowed(false);
        let may_on_owned_packages = allowed(true)
            .into_iter()
            .filter(|a| !may.contains(a))
            .collect();
        Self {
            user,
            may,
            may_on_owned_packages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(is_operator: bool, is_worker: bool) -> User {
        User {
            id: 1,
            email: "someone@example.org".into(),
            is_operator,
            is_worker,
        }
    }

    fn mine() -> Option<Package<'static>> {
        Some(Package {
            name: "wave",
            owned: true,
        })
    }

    fn theirs() -> Option<Package<'static>> {
        Some(Package {
            name: "wave",
            owned: false,
        })
    }

    #[test]
    fn anyone_reads_stable_and_only_signed_in_users_read_the_queue() {
        assert_eq!(authorize(None, Action::ReadStable, None), Ok(()));
        assert_eq!(
            authorize(None, Action::ReadQueue, None),
            Err(Denied::SignInRequired)
        );
        assert_eq!(
            authorize(Some(&user(false, false)), Action::ReadQueue, None),
            Ok(())
        );
    }

    #[test]
    fn logs_and_recipients_are_for_owners_and_operators() {
        let maintainer = user(false, false);
        assert_eq!(
            authorize(Some(&maintainer), Action::ReadUploadDetails, mine()),
            Ok(())
        );
        assert_eq!(
            authorize(Some(&maintainer), Action::ReadUploadDetails, theirs())
                .unwrap_err()
                .code(),
            "not_owner"
        );
        assert_eq!(
            authorize(
                Some(&user(true, false)),
                Action::ReadUploadDetails,
                theirs()
            ),
            Ok(())
        );
    }

    #[test]
    fn a_public_queue_shows_states_to_anyone_but_never_logs() {
        let public = Viewer {
            user: None,
            public_queue: true,
        };
        assert_eq!(public.authorize(Action::ReadQueue, None), Ok(()));
        assert_eq!(
            public.authorize(Action::ReadUploadDetails, theirs()),
            Err(Denied::SignInRequired)
        );
        let private = Viewer {
            public_queue: false,
            ..public
        };
        assert_eq!(
            private.authorize(Action::ReadQueue, None),
            Err(Denied::SignInRequired)
        );
    }

    #[test]
    fn a_worker_fetches_archives_and_nothing_more() {
        let worker = user(false, true);
        let account = Account::of(worker.clone());
        assert_eq!(
            account.may,
            [
                Action::Monitor,
                Action::ReadStable,
                Action::ReadAccount,
                Action::FetchUploadArchive
            ]
        );
        assert!(account.may_on_owned_packages.is_empty());
        assert_eq!(
            authorize(Some(&worker), Action::Upload, mine()),
            Err(Denied::WorkerToken(Action::Upload))
        );
    }

    #[test]
    fn operator_actions_are_refused_to_maintainers_even_on_their_packages() {
        let maintainer = user(false, false);
        for action in [
            Action::UndoObsolescence,
            Action::TunePassMark,
            Action::ControlQueue,
            Action::ControlPlatforms,
        ] {
            assert_eq!(
                authorize(Some(&maintainer), action, mine()),
                Err(Denied::NotOperator(action))
            );
            assert_eq!(authorize(Some(&user(true, false)), action, None), Ok(()));
        }
    }

    #[test]
    fn a_maintainers_account_lists_what_owning_adds() {
        let account = Account::of(user(false, false));
        assert_eq!(
            account.may_on_owned_packages,
            [
                Action::ReadUploadDetails,
                Action::FetchUploadArchive,
                Action::Upload,
                Action::Obsolete
            ]
        );
        assert!(
            Account::of(user(true, false))
                .may_on_owned_packages
                .is_empty()
        );
    }
}
