//! The pass mark at run time (SPEC section 7): it starts from the config
//! file, operators change it key by key with a reason, every change is
//! recorded, and a change applies to verdicts not yet given. `simulate`
//! re-scores past verdicts from their recorded check results under a
//! proposed pass mark, changing nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::authz::{self, Action, Denied};
use super::users::User;
use super::{App, format_time};
use crate::config::Config;
use crate::db;
use crate::domain::metadata::VerdictSummary;
use crate::domain::passmark::{PassMark, PassMarkError, PlatformMark};

/// The pass mark the config file describes.
pub fn initial(config: &Config) -> PassMark {
    PassMark {
        threshold: config.passmark.threshold,
        weights: config.passmark.weights.clone(),
        required: config.passmark.required.iter().copied().collect(),
        platforms: config
            .platforms
            .iter()
            .filter(|p| p.weight != 1.0)
            .map(|p| {
                (
                    p.name.to_string(),
                    PlatformMark {
                        weight: Some(p.weight),
                        required: None,
                    },
                )
            })
            .collect(),
        revdeps_min_fraction: config.revdeps.min_fraction,
        revdeps_max_dependents: config.revdeps.max_dependents,
    }
}

/// The pass mark in force: the last change's, or the config's.
pub async fn current(app: &App) -> anyhow::Result<PassMark> {
    let mut conn = app.db.pool().acquire().await?;
    match db::operators::latest_passmark(&mut conn).await? {
        Some(json) => Ok(serde_json::from_str(&json)?),
        None => Ok(initial(&app.config)),
    }
}

/// The pass mark in force, as `viewer` reads it.
pub async fn show(app: &App, viewer: &User) -> Result<PassMark, PassMarkServiceError> {
    authz::authorize(Some(viewer), Action::ReadQueue, None)?;
    Ok(current(app).await?)
}

/// One recorded change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PassMarkChange {
    pub id: i64,
    pub at: String,
    pub by: Option<String>,
    pub key: String,
    pub old: String,
    pub new: String,
    pub why: String,
}

/// A change of the pass mark and the pass mark it made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PassMarkSet {
    pub change: PassMarkChange,
    pub passmark: PassMark,
}

#[derive(Debug, thiserror::Error)]
pub enum PassMarkServiceError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("since: {0:?} is not a duration such as 7d")]
    BadSince(String),
    #[error("say why: every change of the pass mark is recorded with its reason")]
    WhyRequired,
    #[error(transparent)]
    Invalid(#[from] PassMarkError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PassMarkServiceError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// Sets `key` to `value`, recording who, when, old, new and why.
pub async fn set(
    app: &App,
    user: &User,
    key: &str,
    value: &str,
    why: &str,
) -> Result<(PassMarkChange, PassMark), PassMarkServiceError> {
    authz::authorize(Some(user), Action::TunePassMark, None)?;
    if why.trim().is_empty() {
        return Err(PassMarkServiceError::WhyRequired);
    }
    let mut tx = app.db.begin_write().await?;
    let mut mark = match db::operators::latest_passmark(&mut tx).await? {
        Some(json) => serde_json::from_str(&json).map_err(anyhow::Error::new)?,
        None => initial(&app.config),
    };
    let old = mark.set(key, value)?;
    let new = mark.get(key)?;
    let json = serde_json::to_string(&mark).map_err(anyhow::Error::new)?;
    let id = db::operators::insert_change(
        &mut tx,
        db::operators::NewChange {
            actor_id: user.id,
            key,
            old_value: &old,
            new_value: &new,
            why: why.trim(),
            passmark: &json,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(passmark.key = key, passmark.old = %old, passmark.new = %new, user.id = user.id, "pass mark changed");
    // Uploads waiting for their verdict are judged under the new mark.
    app.wake.notify_one();
    Ok((
        PassMarkChange {
            id,
            at: format_time(db::now_ms()),
            by: Some(user.email.clone()),
            key: key.into(),
            old,
            new,
            why: why.trim().into(),
        },
        mark,
    ))
}

/// Every change of the pass mark, as `viewer` reads them.
pub async fn history(
    app: &App,
    viewer: &User,
) -> Result<Vec<PassMarkChange>, PassMarkServiceError> {
    authz::authorize(Some(viewer), Action::ReadQueue, None)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(db::operators::history(&mut conn)
        .await?
        .into_iter()
        .map(|r| PassMarkChange {
            id: r.id,
            at: format_time(r.at),
            by: r.actor,
            key: r.key,
            old: r.old_value,
            new: r.new_value,
            why: r.why,
        })
        .collect())
}

/// An upload whose verdict would change under the proposed pass mark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flip {
    pub upload_id: i64,
    pub name: String,
    pub version: String,
    pub decided_at: String,
    pub accepted_before: bool,
    pub accepted_after: bool,
    pub score_before: f64,
    pub score_after: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Simulation {
    pub proposed: PassMark,
    /// How many past verdicts were re-scored.
    pub considered: usize,
    pub flips: Vec<Flip>,
}

/// Re-scores the verdicts given in the last `since` (e.g. "7d"; all when
/// `None`) under the current pass mark with `changes` applied; changes
/// nothing.
pub async fn simulate(
    app: &App,
    user: &User,
    changes: &[(String, String)],
    since: Option<&str>,
) -> Result<Simulation, PassMarkServiceError> {
    authz::authorize(Some(user), Action::TunePassMark, None)?;
    let since: Option<Duration> = since
        .map(|s| humantime::parse_duration(s).map_err(|_| PassMarkServiceError::BadSince(s.into())))
        .transpose()?;
    let mut proposed = current(app).await?;
    for (key, value) in changes {
        proposed.set(key, value)?;
    }
    let from = since
        .map(|d| db::now_ms() - d.as_millis() as i64)
        .unwrap_or(i64::MIN);
    let rows = {
        let mut conn = app.db.pool().acquire().await?;
        db::checks::verdicts_since(&mut conn, from).await?
    };
    let mut flips = Vec::new();
    let mut considered = 0;
    for (upload_id, name, version, accepted, score, summary, decided_at) in rows {
        let Some(records) = VerdictSummary::parse(&summary).records else {
            continue; // a verdict without recorded results (a cancellation)
        };
        considered += 1;
        let after = proposed.judge(&records);
        if after.accepted != (accepted != 0) {
            flips.push(Flip {
                upload_id,
                name,
                version,
                decided_at: format_time(decided_at),
                accepted_before: accepted != 0,
                accepted_after: after.accepted,
                score_before: score,
                score_after: after.score,
            });
        }
    }
    Ok(Simulation {
        proposed,
        considered,
        flips,
    })
}
