//! Upload groups (SPEC section 3, rule 8): archives uploaded together form
//! one unit of the queue. A group is created open, its members join it as
//! they are uploaded, and it is queued when it is submitted (or when the
//! expected number of members arrived). A member refused at upload refuses
//! the group, a group not submitted within a day expires, and a newer
//! upload of any member's package supersedes the whole group; in each case
//! its members are discarded silently. Deciding a group is
//! `verdict::decide_group`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::App;
use super::upload::UploadError;
use super::users::User;
use crate::db;
use crate::domain::upload::GroupState;

/// How long an open group waits to be submitted.
pub const EXPIRES_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A group as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupView {
    pub id: i64,
    pub state: GroupState,
    pub expected: Option<i64>,
    pub reason: Option<String>,
    pub members: Vec<i64>,
    pub created_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("there is no upload group {0}")]
    NoSuchGroup(i64),
    #[error("upload group {id} is {state}; only an open group can be submitted")]
    NotOpen { id: i64, state: GroupState },
    #[error("upload group {0} has no members yet: upload them with ?group={0} first")]
    Empty(i64),
    #[error("a group expects between 1 and 1000 members, not {0}")]
    BadExpected(i64),
    #[error(transparent)]
    Denied(#[from] super::authz::Denied),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for GroupError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<db::TransitionError> for GroupError {
    fn from(e: db::TransitionError) -> Self {
        Self::Internal(e.into())
    }
}

/// Makes an open group owned by `user`, expecting `expected` members when
/// given (it is submitted when the last arrives).
pub async fn create(
    app: &App,
    user: &User,
    expected: Option<i64>,
) -> Result<GroupView, GroupError> {
    super::authz::authorize(Some(user), super::authz::Action::ManageGroups, None)?;
    if let Some(n) = expected
        && !(1..=1000).contains(&n)
    {
        return Err(GroupError::BadExpected(n));
    }
    let mut tx = app.db.begin_write().await?;
    let id = db::groups::insert(&mut tx, user.id, expected).await?;
    tx.commit().await?;
    tracing::info!(group.id = id, user.id = user.id, "upload group created");
    show(app, user, id).await
}

/// The group, for its owner and operators (others are told it does not exist).
pub async fn show(app: &App, user: &User, id: i64) -> Result<GroupView, GroupError> {
    super::authz::authorize(Some(user), super::authz::Action::ManageGroups, None)?;
    let mut conn = app.db.pool().acquire().await?;
    let group = db::groups::get(&mut conn, id, "")
        .await?
        .filter(|g| g.owner_id == user.id || user.is_operator)
        .ok_or(GroupError::NoSuchGroup(id))?;
    let members = db::groups::members(&mut conn, id).await?;
    Ok(GroupView {
        id,
        state: group.state,
        expected: group.expected,
        reason: group.reason,
        members,
        created_at: super::format_time(group.created_at),
    })
}

/// Queues an open group: its members leave the queue together.
pub async fn submit(app: &App, user: &User, id: i64) -> Result<GroupView, GroupError> {
    super::authz::authorize(Some(user), super::authz::Action::ManageGroups, None)?;
    let mut tx = app.db.begin_write().await?;
    let group = db::groups::get(&mut tx, id, app.db.for_update())
        .await?
        .filter(|g| g.owner_id == user.id || user.is_operator)
        .ok_or(GroupError::NoSuchGroup(id))?;
    if group.state != GroupState::Open {
        return Err(GroupError::NotOpen {
            id,
            state: group.state,
        });
    }
    if db::groups::members(&mut tx, id).await?.is_empty() {
        return Err(GroupError::Empty(id));
    }
    db::groups::transition(&mut tx, id, (GroupState::Open, GroupState::Submitted), None).await?;
    tx.commit().await?;
    app.wake.notify_one();
    tracing::info!(group.id = id, "upload group submitted");
    show(app, user, id).await
}

/// Inside an upload's transaction: checks that `user` may add `package` to
/// open group `id`.
pub(super) async fn join(
    app: &App,
    tx: &mut db::Tx,
    user: &User,
    id: i64,
    package: &str,
) -> Result<(), UploadError> {
    let group = db::groups::get(tx, id, app.db.for_update())
        .await?
        .filter(|g| g.owner_id == user.id || user.is_operator)
        .ok_or(UploadError::NoSuchGroup(id))?;
    if group.state != GroupState::Open {
        return Err(UploadError::GroupNotOpen {
            id,
            state: group.state,
        });
    }
    for member in db::groups::members(tx, id).await? {
        if db::uploads::get(tx, member)
            .await?
            .is_some_and(|m| m.name == package)
        {
            return Err(UploadError::GroupHasPackage {
                id,
                name: package.to_owned(),
            });
        }
    }
    Ok(())
}

/// Inside the transaction of an upload that joined group `id`: submits it
/// when its expected number of members is reached.
pub(super) async fn submit_when_complete(
    tx: &mut db::Tx,
    id: i64,
) -> Result<(), db::TransitionError> {
    let Some(group) = db::groups::get(tx, id, "").await? else {
        return Ok(());
    };
    let members = db::groups::members(tx, id).await?.len() as i64;
    if group.expected == Some(members) {
        db::groups::transition(tx, id, (GroupState::Open, GroupState::Submitted), None).await?;
    }
    Ok(())
}

/// Inside the transaction of upload `by`: every group one of `superseded`
/// belonged to is superseded with all its members. Returns the members
/// superseded that way (beyond `superseded` itself).
pub(super) async fn supersede_groups_of(
    app: &App,
    tx: &mut db::Tx,
    superseded: &[i64],
    by: i64,
) -> Result<Vec<i64>, db::TransitionError> {
    let mut more = Vec::new();
    for &old in superseded {
        let Some(group) = db::uploads::get(tx, old).await?.and_then(|u| u.group_id) else {
            continue;
        };
        let why = format!("upload {by} superseded a member of its group {group}");
        for state in [GroupState::Open, GroupState::Submitted] {
            let change = (state, GroupState::Superseded);
            db::groups::transition(tx, group, change, Some(&why)).await?;
        }
        let members: Vec<i64> = db::groups::members(tx, group)
            .await?
            .into_iter()
            .filter(|m| !superseded.contains(m) && !more.contains(m))
            .collect();
        db::uploads::discard(tx, &members, &why).await?;
        for &m in &members {
            db::checks::halt_upload(tx, app.db.backend(), m).await?;
        }
        more.extend(members);
    }
    Ok(more)
}

/// Refuses open group `id` of `user` (a member was refused): its members
/// are discarded. Someone else's group is left alone.
pub async fn refuse(app: &App, user: &User, id: i64, why: &str) -> Result<(), UploadError> {
    end(app, Some(user), id, GroupState::Refused, why).await?;
    Ok(())
}

/// Expires the groups left open for a day (the reconcile sweep's duty).
pub async fn expire(app: &App) -> anyhow::Result<()> {
    let before = db::now_ms() - EXPIRES_AFTER.as_millis() as i64;
    let stale = {
        let mut conn = app.db.pool().acquire().await?;
        db::groups::open_before(&mut conn, before).await?
    };
    for id in stale {
        end(
            app,
            None,
            id,
            GroupState::Expired,
            "it was not submitted within 24 hours",
        )
        .await?;
    }
    Ok(())
}

/// Ends open group `id` in `state`, discarding its members; when `by` is
/// given, only if the group is theirs.
async fn end(
    app: &App,
    by: Option<&User>,
    id: i64,
    state: GroupState,
    why: &str,
) -> anyhow::Result<()> {
    let mut tx = app.db.begin_write().await?;
    let Some(group) = db::groups::get(&mut tx, id, app.db.for_update()).await? else {
        return Ok(());
    };
    if by.is_some_and(|u| u.id != group.owner_id && !u.is_operator) {
        return Ok(());
    }
    if !db::groups::transition(&mut tx, id, (GroupState::Open, state), Some(why)).await? {
        return Ok(());
    }
    let members = db::groups::members(&mut tx, id).await?;
    db::uploads::discard(
        &mut tx,
        &members,
        &format!("its group {id} was {state}: {why}"),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        group.id = id,
        group.state = %state,
        members = members.len(),
        "upload group ended"
    );
    Ok(())
}
