//! Obsolescence and removal (SPEC section 5): a package is marked obsolete,
//! its dependents get a max-version pin and an email, all in one
//! transaction; it is removed only once nothing depends on it, and removal
//! cascades. An operator can undo an obsolescence before removal.

use super::authz::{self, Action, AuthzError, Denied};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::index::{self, ChangeKind};
use super::notify::{self, DependencyObsoletedEmail};
use super::stable::{self, with_repo};
use super::users::User;
use super::{App, verdict};
use crate::db;
use crate::domain::graph::{Obsolescence, PlannedPin};
use crate::domain::{Manifest, PackageName, PackageState};

/// What an obsolescence did (or, dry, would do).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObsoleteOutcome {
    pub package: String,
    pub reason: String,
    pub replacement: Option<String>,
    pub dry_run: bool,
    /// The highest stable version: every pin's maximum.
    pub max_version: String,
    pub pins: Vec<PlannedPin>,
    /// Emails queued (none on a dry run).
    pub emails: usize,
    /// Packages removed as a consequence (this one, when nothing depends on it).
    pub removed: Vec<String>,
}

/// The stable dependents of a package, as `GET /packages/{name}/dependents`
/// answers them: what an obsolescence would pin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dependents {
    pub package: String,
    /// Whether indirect dependents are listed too.
    pub transitive: bool,
    pub dependents: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObsoleteError {
    #[error("no stable package {0:?}")]
    NoSuchPackage(String),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("a reason is required: say why {0:?} is obsolete")]
    ReasonRequired(String),
    #[error("the replacement {0:?} is not a stable package")]
    BadReplacement(String),
    #[error("a package cannot replace itself")]
    ReplacesItself,
    #[error("{0:?} is obsolete already")]
    AlreadyObsolete(String),
    #[error("{0:?} is not obsolete")]
    NotObsolete(String),
    #[error("{0:?} was removed; there is nothing left to undo")]
    Removed(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ObsoleteError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<AuthzError> for ObsoleteError {
    fn from(e: AuthzError) -> Self {
        match e {
            AuthzError::Denied(d) => Self::Denied(d),
            AuthzError::Db(e) => e.into(),
        }
    }
}

/// Marks `name` obsolete (or, with `dry_run`, shows what that would do).
pub async fn obsolete(
    app: &App,
    user: &User,
    name: &str,
    reason: &str,
    replacement: Option<&str>,
    dry_run: bool,
) -> Result<ObsoleteOutcome, ObsoleteError> {
    let (pname, reason, replacement) = checked_request(name, reason, replacement)?;
    let started = std::time::Instant::now();
    let mut tx = app.db.begin_write().await?;
    let package = db::packages::lock_by_name(&mut tx, name, app.db.for_update())
        .await?
        .ok_or_else(|| ObsoleteError::NoSuchPackage(name.into()))?;
    match package.state {
        PackageState::Obsolete => return Err(ObsoleteError::AlreadyObsolete(name.into())),
        PackageState::Removed => return Err(ObsoleteError::Removed(name.into())),
        PackageState::Active => {}
    }
    authz::authorize_on(&mut tx, user, Action::Obsolete, package.id, name).await?;
    // Taking the serial's row lock first: no promotion can add a dependent
    // between the plan below and the commit.
    let serial = db::stable::bump_serial(&mut tx).await?;
    let (plan, max, replacement_ok) = with_repo(app, |repo| {
        let max = repo.latest(&pname).map(|r| r.version.clone());
        let ok = replacement.as_ref().is_none_or(|r| repo.contains(r));
        (repo.obsolescence_plan(&pname), max, ok)
    })
    .await?;
    let Some(max) = max else {
        return Err(ObsoleteError::NoSuchPackage(name.into()));
    };
    if !replacement_ok {
        return Err(ObsoleteError::BadReplacement(
            replacement.map(String::from).unwrap_or_default(),
        ));
    }
    let mut outcome = ObsoleteOutcome {
        package: name.into(),
        reason: reason.into(),
        replacement: replacement.as_ref().map(|r| r.to_string()),
        dry_run,
        max_version: max.to_string(),
        pins: plan.clone(),
        emails: 0,
        removed: Vec::new(),
    };
    if dry_run {
        tx.rollback().await?;
        return Ok(outcome);
    }
    let planned = started.elapsed();
    let email_ids = record(app, &mut tx, package.id, user, serial, &outcome).await?;
    let recorded = started.elapsed();
    let touched: Vec<&str> = std::iter::once(name)
        .chain(plan.iter().map(|p| p.dependent.as_str()))
        .collect();
    index::record_change(app, &mut tx, serial, ChangeKind::Obsolescence, &touched).await?;
    let documented = started.elapsed();
    verdict::failpoint("obsolete-before-commit");
    tx.commit().await?;
    outcome.emails = email_ids.len();
    let committed = started.elapsed();

    let why = Obsolescence {
        reason: reason.into(),
        replacement,
    };
    stable::apply(app, serial, |repo| {
        repo.set_obsolete(pname.clone(), why);
        for pin in &plan {
            repo.pin(pin.dependent.clone(), pname.clone(), pin.max.clone());
        }
    });
    index::publish(app, serial).await;
    let published = started.elapsed();
    // The emails are in the outbox already: thousands enqueued at once
    // go after the commit, off the transaction.
    notify::push_new(app, &email_ids).await;
    tracing::info!(
        package.name = name,
        pins = plan.len(),
        emails = email_ids.len(),
        stable.serial = serial,
        plan_ms = planned.as_millis() as u64,
        pins_and_emails_ms = (recorded - planned).as_millis() as u64,
        documents_ms = (documented - recorded).as_millis() as u64,
        commit_ms = (committed - documented).as_millis() as u64,
        publish_ms = (published - committed).as_millis() as u64,
        "package obsoleted"
    );
    outcome.removed = remove_unneeded(app).await?;
    Ok(outcome)
}

/// The package's name, the trimmed reason and the replacement of a
/// request, checked before anything is locked.
fn checked_request<'a>(
    name: &str,
    reason: &'a str,
    replacement: Option<&str>,
) -> Result<(PackageName, &'a str, Option<PackageName>), ObsoleteError> {
    let pname = PackageName::parse(name).map_err(|_| ObsoleteError::NoSuchPackage(name.into()))?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ObsoleteError::ReasonRequired(name.into()));
    }
    let replacement = match replacement.map(str::trim).filter(|r| !r.is_empty()) {
        None => None,
        Some(r) if r == name => return Err(ObsoleteError::ReplacesItself),
        Some(r) => {
            Some(PackageName::parse(r).map_err(|_| ObsoleteError::BadReplacement(r.into()))?)
        }
    };
    Ok((pname, reason, replacement))
}

/// Records the obsolescence `outcome` plans in `tx`: the package's state,
/// its dependents' pins, their maintainers' emails and the event. Returns
/// the ids of the emails queued.
async fn record(
    app: &App,
    tx: &mut db::Tx,
    package_id: i64,
    user: &User,
    serial: i64,
    outcome: &ObsoleteOutcome,
) -> Result<Vec<i64>, ObsoleteError> {
    let plan = &outcome.pins;
    db::pins::set_obsolete(
        tx,
        package_id,
        &outcome.reason,
        outcome.replacement.as_deref(),
    )
    .await?;
    // Everything the pins and emails need, in a few queries.
    let names: Vec<&str> = plan.iter().map(|p| p.dependent.as_str()).collect();
    let ids = db::pins::ids_of(tx, &names).await?;
    // Only the emailed versions' manifests: their maintainers.
    let versions: Vec<String> = plan.iter().map(|p| p.version.to_string()).collect();
    let wanted: Vec<(&str, &str)> = plan
        .iter()
        .zip(&versions)
        .filter(|(p, _)| !p.dependent_obsolete)
        .map(|(p, v)| (p.dependent.as_str(), v.as_str()))
        .collect();
    let manifests = db::pins::manifests_of(tx, &wanted).await?;
    let (maxes, requirements): (Vec<String>, Vec<String>) = plan
        .iter()
        .map(|p| (p.max.to_string(), p.requirement.to_string()))
        .unzip();
    let mut new_pins = Vec::with_capacity(plan.len());
    let mut emails = Vec::new();
    for (i, pin) in plan.iter().enumerate() {
        let dependent_id = *ids
            .get(pin.dependent.as_str())
            .ok_or_else(|| anyhow::anyhow!("dependent {} vanished", pin.dependent))?;
        new_pins.push(db::pins::NewPin {
            dependent_id,
            max_version: &maxes[i],
            requirement: &requirements[i],
        });
        if pin.dependent_obsolete {
            continue; // maintainers of obsolete packages get no breakage emails
        }
        let manifest: Manifest = manifests
            .get(&(pin.dependent.to_string(), pin.version.to_string()))
            .map(|m| serde_json::from_str(m))
            .transpose()
            .map_err(anyhow::Error::new)?
            .ok_or_else(|| {
                anyhow::anyhow!("{} {} vanished from stable", pin.dependent, pin.version)
            })?;
        emails.push(obsoleted_email(app, outcome, pin, &manifest, serial)?);
    }
    db::pins::insert_many(tx, package_id, &new_pins).await?;
    let email_ids = notify::queue_batch(tx, "dependency_obsoleted", None, &emails).await?;
    db::events::record(
        tx,
        db::events::NewEvent {
            kind: "package.obsoleted",
            package_id: Some(package_id),
            upload_id: None,
            actor_id: Some(user.id),
            detail: json!({ "reason": outcome.reason, "replacement": outcome.replacement, "max_version": outcome.max_version,
                            "pinned": plan.iter().map(|p| p.dependent.as_str()).collect::<Vec<_>>() }),
        },
    )
    .await?;
    Ok(email_ids)
}

/// The email telling the maintainers of `pin`'s dependent that the package
/// it depends on is obsolete, and the pin it got.
fn obsoleted_email(
    app: &App,
    outcome: &ObsoleteOutcome,
    pin: &PlannedPin,
    manifest: &Manifest,
    serial: i64,
) -> anyhow::Result<notify::Batched> {
    let context = DependencyObsoletedEmail {
        package: pin.dependent.to_string(),
        version: pin.version.to_string(),
        dependency: outcome.package.clone(),
        reason: outcome.reason.clone(),
        replacement: outcome.replacement.clone(),
        pin: format!("{}, <={}", pin.requirement, pin.max),
        server_url: app.config.public_url.clone(),
    };
    Ok(notify::Batched {
        event_key: format!("obsolete-{}-{serial}-{}", outcome.package, pin.dependent),
        recipients: notify::maintainers(manifest),
        rendered: app.templates.render("dependency_obsoleted", &context)?,
    })
}

/// Lifts an obsolescence that has not led to removal (operators only).
pub async fn undo(app: &App, user: &User, name: &str) -> Result<(), ObsoleteError> {
    authz::authorize(Some(user), Action::UndoObsolescence, None)?;
    let pname = PackageName::parse(name).map_err(|_| ObsoleteError::NoSuchPackage(name.into()))?;
    let mut tx = app.db.begin_write().await?;
    let package = db::packages::lock_by_name(&mut tx, name, app.db.for_update())
        .await?
        .ok_or_else(|| ObsoleteError::NoSuchPackage(name.into()))?;
    match package.state {
        PackageState::Obsolete => {}
        PackageState::Removed => return Err(ObsoleteError::Removed(name.into())),
        PackageState::Active => return Err(ObsoleteError::NotObsolete(name.into())),
    }
    let serial = db::stable::bump_serial(&mut tx).await?;
    let mut touched = db::pins::dependents_pinned_on(&mut tx, package.id).await?;
    touched.push(name.to_owned());
    db::pins::clear_obsolete(&mut tx, package.id).await?;
    let lifted = db::pins::delete_on(&mut tx, package.id).await?;
    db::events::record(
        &mut tx,
        db::events::NewEvent {
            kind: "package.obsolescence_undone",
            package_id: Some(package.id),
            upload_id: None,
            actor_id: Some(user.id),
            detail: json!({ "pins_lifted": lifted }),
        },
    )
    .await?;
    let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
    index::record_change(app, &mut tx, serial, ChangeKind::Undo, &touched).await?;
    tx.commit().await?;
    stable::apply(app, serial, |repo| {
        repo.clear_obsolete(&pname);
        let dependents: Vec<PackageName> = repo.package_names().cloned().collect();
        for d in dependents {
            repo.unpin(&d, &pname);
        }
    });
    index::publish(app, serial).await;
    tracing::info!(
        package.name = name,
        pins_lifted = lifted,
        "obsolescence undone"
    );
    Ok(())
}

/// Removes every obsolete package nothing depends on, until none is left
/// (removal cascades). Each removal is its own transaction; the index
/// without the package's document is published before its archives are
/// deleted, so the index never names a missing archive.
pub async fn remove_unneeded(app: &App) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    loop {
        let next = with_repo(app, |repo| repo.removable()).await?;
        if next.is_empty() {
            return Ok(removed);
        }
        for name in next {
            let mut tx = app.db.begin_write().await?;
            let Some(package) =
                db::packages::lock_by_name(&mut tx, name.as_str(), app.db.for_update()).await?
            else {
                continue;
            };
            if package.state != PackageState::Obsolete {
                continue;
            }
            let serial = db::stable::bump_serial(&mut tx).await?;
            let versions: Vec<String> = db::stable::versions_of(&mut tx, name.as_str())
                .await?
                .into_iter()
                .map(|v| v.version)
                .collect();
            let mut touched = db::pins::dependents_pinned_on(&mut tx, package.id).await?;
            touched.push(name.to_string());
            db::pins::set_removed(&mut tx, package.id).await?;
            db::pins::delete_involving(&mut tx, package.id).await?;
            db::events::record(
                &mut tx,
                db::events::NewEvent {
                    kind: "package.removed",
                    package_id: Some(package.id),
                    upload_id: None,
                    actor_id: None,
                    detail: json!({ "versions": versions, "reason": "obsolete, and nothing depends on it any more" }),
                },
            )
            .await?;
            let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
            index::record_change(app, &mut tx, serial, ChangeKind::Removal, &touched).await?;
            tx.commit().await?;
            stable::apply(app, serial, |repo| repo.remove_package(&name));
            index::publish(app, serial).await;
            let store = app.stable.clone();
            let n = name.to_string();
            tokio::task::spawn_blocking(move || store.remove_package_archives(&n)).await??;
            tracing::info!(package.name = %name, versions = ?versions, "obsolete package removed");
            removed.push(name.to_string());
        }
    }
}
