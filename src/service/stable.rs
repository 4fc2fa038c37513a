//! The stable repository as this process sees it: the universe resolution
//! works over (kept current from the changes log), and package views. The
//! published index is `service::index`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use semver::Version;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, RwLock};

use super::{App, format_time};
use crate::db::{self, stable::StableRow};
use crate::domain::graph::{Obsolescence, StableRepo};
use crate::domain::resolve::Release;
use crate::domain::{Manifest, PackageName, PackageState};

/// The in-memory stable repository of this process, at a serial.
#[derive(Debug)]
pub struct StableModel {
    pub serial: i64,
    pub repo: StableRepo,
}

/// Shared by every task of the process.
pub type StableCache = Arc<RwLock<Option<StableModel>>>;

/// Builds the repository model from the database rows.
pub fn repo_of(
    rows: &[StableRow],
    pins: &[db::pins::PinRow],
    obsolete: &[db::pins::ObsoleteRow],
) -> StableRepo {
    let mut repo = StableRepo::new();
    for row in rows {
        let (Ok(name), Ok(version), Ok(manifest)) = (
            PackageName::parse(&row.name),
            Version::parse(&row.version),
            serde_json::from_str::<Manifest>(&row.manifest),
        ) else {
            tracing::warn!(package.name = %row.name, package.version = %row.version, "unreadable stable version left out of resolution");
            continue;
        };
        repo.add_release(
            name,
            Release {
                version,
                dependencies: manifest.dependencies,
            },
        );
    }
    for pin in pins {
        if let (Ok(a), Ok(b), Ok(max)) = (
            PackageName::parse(&pin.dependent),
            PackageName::parse(&pin.dependency),
            Version::parse(&pin.max_version),
        ) {
            repo.pin(a, b, max);
        }
    }
    for o in obsolete {
        if let Ok(name) = PackageName::parse(&o.name) {
            let replacement = o
                .replacement
                .as_deref()
                .and_then(|r| PackageName::parse(r).ok());
            repo.set_obsolete(
                name,
                Obsolescence {
                    reason: o.obsolete_reason.clone().unwrap_or_default(),
                    replacement,
                },
            );
        }
    }
    repo
}

/// Runs `f` on the stable repository as the database holds it now: from
/// this process's model when its serial is current, else after rebuilding
/// it (another process changed stable).
pub async fn with_repo<R>(app: &App, f: impl FnOnce(&StableRepo) -> R) -> anyhow::Result<R> {
    with_serial_repo(app, |_, repo| f(repo)).await
}

/// [`with_repo`], with the serial the repository is at.
pub async fn with_serial_repo<R>(
    app: &App,
    f: impl FnOnce(i64, &StableRepo) -> R,
) -> anyhow::Result<R> {
    let serial = {
        let mut conn = app.db.pool().acquire().await?;
        db::stable::serial(&mut conn).await?
    };
    model_run(app, serial, false, f).await
}

/// Runs `f` on the stable repository at exactly `serial`, which the caller
/// holds the promotion lock at (so the database cannot move meanwhile):
/// the model is this process's only when it is at that serial, else it is
/// read again from the database.
pub async fn with_repo_at<R>(
    app: &App,
    serial: i64,
    f: impl FnOnce(&StableRepo) -> R,
) -> anyhow::Result<R> {
    model_run(app, serial, true, |_, repo| f(repo)).await
}

async fn model_run<R>(
    app: &App,
    serial: i64,
    exact: bool,
    f: impl FnOnce(i64, &StableRepo) -> R,
) -> anyhow::Result<R> {
    if model_at(app, serial) || (catch_up(app).await? && model_at(app, serial)) {
        let guard = app.stable_cache.read().expect("stable cache lock");
        if let Some(model) = guard.as_ref().filter(|m| m.serial == serial) {
            return Ok(f(serial, &model.repo));
        }
    }
    let model = load_model(app).await?;
    anyhow::ensure!(
        !exact || model.serial == serial,
        "stable is at serial {}, not at the locked {serial}",
        model.serial
    );
    let mut guard = app.stable_cache.write().expect("stable cache lock");
    let result = f(model.serial, &model.repo);
    if guard.as_ref().is_none_or(|m| m.serial <= model.serial) {
        *guard = Some(model);
    }
    Ok(result)
}

fn model_at(app: &App, serial: i64) -> bool {
    let guard = app.stable_cache.read().expect("stable cache lock");
    guard.as_ref().is_some_and(|m| m.serial == serial)
}

/// Brings this process's model up to the database's serial from the
/// changes log, reading only the packages the changes since its own
/// serial touched (another process changed stable). False when it cannot:
/// no model yet, or the log no longer reaches back to it.
pub async fn catch_up(app: &App) -> anyhow::Result<bool> {
    let from = {
        let guard = app.stable_cache.read().expect("stable cache lock");
        match guard.as_ref() {
            Some(model) => model.serial,
            None => return Ok(false),
        }
    };
    let mut tx = app.db.begin_read().await?;
    let to = db::stable::serial(&mut tx).await?;
    if to <= from {
        return Ok(to == from);
    }
    let Some(names) = super::index::touched_between(&mut tx, from, to).await? else {
        return Ok(false);
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let built =
        super::index::documents(&mut tx, &names, None, super::index::VersionsFrom::Tables).await?;
    tx.commit().await?;
    let mut guard = app.stable_cache.write().expect("stable cache lock");
    let Some(model) = guard.as_mut().filter(|m| m.serial == from) else {
        return Ok(false); // moved meanwhile: the caller reads it whole
    };
    for b in &built {
        if let Err(e) = super::index::apply_document(&mut model.repo, &b.name, b.document.as_ref())
        {
            *guard = None; // half applied: read it whole next time
            return Err(e);
        }
    }
    model.serial = to;
    tracing::debug!(
        stable.from = from,
        stable.serial = to,
        packages = built.len(),
        "stable model caught up from the changes log"
    );
    Ok(true)
}

/// Reads the whole stable repository from the database (at start, and when
/// another process moved the serial further than the changes log reaches).
async fn load_model(app: &App) -> anyhow::Result<StableModel> {
    let mut tx = app.db.begin_read().await?;
    let serial = db::stable::serial(&mut tx).await?;
    let rows = db::stable::all_versions(&mut tx).await?;
    let pins = db::pins::all(&mut tx).await?;
    let obsolete = db::pins::obsolete_packages(&mut tx).await?;
    tx.commit().await?;
    let repo = tokio::task::spawn_blocking(move || repo_of(&rows, &pins, &obsolete)).await?;
    tracing::debug!(stable.serial = serial, "stable model loaded");
    Ok(StableModel { serial, repo })
}

/// Applies a change this process just committed (at `serial`, coming from
/// `serial - 1`) to its model in place; a model at any other serial is
/// dropped and rebuilt on next use.
pub fn apply(app: &App, serial: i64, change: impl FnOnce(&mut StableRepo)) {
    let mut guard = app.stable_cache.write().expect("stable cache lock");
    match guard.as_mut() {
        Some(model) if model.serial == serial - 1 => {
            change(&mut model.repo);
            model.serial = serial;
        }
        _ => *guard = None,
    }
}

/// One version in the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexVersion {
    pub version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub dependencies: BTreeMap<String, String>,
    pub archive: String,
    pub promoted_at: String,
}

/// Why a package is obsolete, as shown wherever it is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObsoleteView {
    pub reason: String,
    pub replacement: Option<String>,
}

/// A package as `GET /api/v1/packages/{name}` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackageView {
    pub name: String,
    pub state: PackageState,
    pub obsolete: Option<ObsoleteView>,
    pub versions: Vec<IndexVersion>,
    /// Packages whose latest stable version depends on this one.
    pub dependents: Vec<String>,
    pub dependents_count: usize,
    /// Pins on this package's requirements: dependency -> requirement and maximum.
    pub pins: BTreeMap<String, String>,
    /// What happened to the package: obsoleted, undone, removed, with when.
    pub history: Vec<HistoryEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: String,
    pub event: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StableError {
    #[error("no stable package {0:?}")]
    NoSuchPackage(String),
    #[error("no stable version {1} of {0:?}")]
    NoSuchVersion(String, String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StableError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

pub async fn package(app: &App, name: &str) -> Result<PackageView, StableError> {
    if super::mirror::primary_of(app).is_some() {
        return Ok(super::mirror::pages::record(app, name).await?.package);
    }
    let Ok(pname) = PackageName::parse(name) else {
        return Err(StableError::NoSuchPackage(name.into()));
    };
    let mut tx = app.db.begin_read().await?;
    let Some(info) = db::pins::obsolescence(&mut tx, name).await? else {
        return Err(StableError::NoSuchPackage(name.into()));
    };
    if db::stable::versions_of(&mut tx, name).await?.is_empty()
        && info.state != PackageState::Removed
    {
        return Err(StableError::NoSuchPackage(name.into()));
    }
    let history = db::events::of_package(&mut tx, info.id).await?;
    let entry = super::index::documents(&mut tx, &[name], None, super::index::VersionsFrom::Tables)
        .await?
        .pop()
        .and_then(|b| b.document);
    tx.commit().await?;
    let dependents: Vec<String> = with_repo(app, |repo| repo.dependents(&pname))
        .await?
        .into_iter()
        .map(String::from)
        .collect();
    Ok(PackageView {
        name: name.into(),
        state: info.state,
        obsolete: entry.as_ref().and_then(|e| e.obsolete.clone()),
        pins: entry.as_ref().map(|e| e.pins.clone()).unwrap_or_default(),
        versions: entry.map(|e| e.versions).unwrap_or_default(),
        dependents_count: dependents.len(),
        dependents,
        history: history
            .into_iter()
            .filter(|(kind, _, _)| kind.starts_with("package."))
            .map(|(event, at, detail)| HistoryEntry {
                at: format_time(at),
                event,
                detail: serde_json::from_str(&detail).unwrap_or_default(),
            })
            .collect(),
    })
}

/// Direct (or transitive) dependents of a stable package.
pub async fn dependents_of(
    app: &App,
    name: &str,
    transitive: bool,
) -> Result<Vec<String>, StableError> {
    if super::mirror::primary_of(app).is_some() {
        return super::mirror::pages::dependents_of(app, name, transitive).await;
    }
    let pname = PackageName::parse(name).map_err(|_| StableError::NoSuchPackage(name.into()))?;
    let found = with_repo(app, |repo| {
        repo.contains(&pname).then(|| {
            if transitive {
                let mut all: Vec<PackageName> = repo
                    .transitive_dependents(&pname)
                    .into_iter()
                    .cloned()
                    .collect();
                all.sort();
                all
            } else {
                repo.dependents(&pname)
            }
        })
    })
    .await?;
    found
        .map(|list| list.into_iter().map(String::from).collect())
        .ok_or_else(|| StableError::NoSuchPackage(name.into()))
}

/// The archive of a stable version.
pub async fn archive(app: &App, name: &str, version: &str) -> Result<PathBuf, StableError> {
    if super::mirror::primary_of(app).is_some() {
        return super::mirror::archive(app, name, version).await;
    }
    let mut conn = app.db.pool().acquire().await?;
    if db::stable::version(&mut conn, name, version)
        .await?
        .is_none()
    {
        return Err(
            if db::stable::versions_of(&mut conn, name).await?.is_empty() {
                StableError::NoSuchPackage(name.into())
            } else {
                StableError::NoSuchVersion(name.into(), version.into())
            },
        );
    }
    Ok(app.stable.archive_path(name, version))
}
