//! The stable repository as consumers see it: the universe resolution
//! works over, the published index (regenerated from the database and
//! swapped in atomically), and package views.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use semver::Version;
use serde::{Deserialize, Serialize};

use super::{App, format_time};
use crate::db::{self, stable::StableRow};
use crate::domain::resolve::{Release, Universe};
use crate::domain::{Manifest, PackageName};
use crate::storage::stable::StableStore;

/// Every stable version, as a resolution universe.
pub fn universe_of(rows: &[StableRow]) -> Universe {
    let mut universe = Universe::new();
    for row in rows {
        let (Ok(name), Ok(version), Ok(manifest)) = (
            PackageName::parse(&row.name),
            Version::parse(&row.version),
            serde_json::from_str::<Manifest>(&row.manifest),
        ) else {
            tracing::warn!(package.name = %row.name, package.version = %row.version, "unreadable stable version left out of resolution");
            continue;
        };
        universe.add(
            name,
            Release {
                version,
                dependencies: manifest.dependencies,
            },
        );
    }
    universe
}

/// Loads the stable universe from the database.
pub async fn load_universe(app: &App) -> anyhow::Result<Universe> {
    let mut conn = app.db.pool().acquire().await?;
    let rows = db::stable::all_versions(&mut conn).await?;
    Ok(universe_of(&rows))
}

/// One version in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexVersion {
    pub version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub dependencies: BTreeMap<String, String>,
    pub archive: String,
    pub promoted_at: String,
}

/// One package in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexPackage {
    pub state: String,
    pub versions: Vec<IndexVersion>,
}

/// `stable/index.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Index {
    pub serial: i64,
    pub packages: BTreeMap<String, IndexPackage>,
}

fn build_index(serial: i64, rows: &[StableRow]) -> Index {
    let mut packages: BTreeMap<String, IndexPackage> = BTreeMap::new();
    for row in rows {
        let dependencies = serde_json::from_str::<Manifest>(&row.manifest)
            .map(|m| {
                m.dependencies
                    .iter()
                    .map(|(n, r)| (n.to_string(), r.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        packages
            .entry(row.name.clone())
            .or_insert_with(|| IndexPackage {
                state: row.package_state.clone(),
                versions: Vec::new(),
            })
            .versions
            .push(IndexVersion {
                version: row.version.clone(),
                sha256: row.sha256.clone(),
                size_bytes: row.size_bytes,
                dependencies,
                archive: StableStore::archive_rel(&row.name, &row.version),
                promoted_at: format_time(row.promoted_at),
            });
    }
    for package in packages.values_mut() {
        package.versions.sort_by(|a, b| {
            match (Version::parse(&a.version), Version::parse(&b.version)) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.version.cmp(&b.version),
            }
        });
    }
    Index { serial, packages }
}

/// Makes `stable/index.json` match the database when it is behind: after
/// each promotion, and at start-up to finish one a crash interrupted.
/// Returns the serial on disk afterwards.
pub async fn publish_index(app: &App) -> anyhow::Result<i64> {
    let _one_writer = app.index_lock.lock().await;
    let mut tx = app.db.begin_read().await?;
    let serial = db::stable::serial(&mut tx).await?;
    let rows = db::stable::all_versions(&mut tx).await?;
    tx.commit().await?;
    let store = app.stable.clone();
    tokio::task::spawn_blocking(move || {
        let on_disk = store.index_serial()?;
        if on_disk >= serial && store.index_path().is_file() {
            return Ok(on_disk);
        }
        // Every archive the new index names must already be durable.
        for row in &rows {
            let path = store.archive_path(&row.name, &row.version);
            anyhow::ensure!(
                path.is_file(),
                "stable archive {} is missing; index not published",
                path.display()
            );
        }
        let index = build_index(serial, &rows);
        store.replace_index(&serde_json::to_vec(&index)?)?;
        tracing::info!(stable.serial = serial, "stable index published");
        Ok(serial)
    })
    .await
    .context("publishing the index")?
}

/// A package as `GET /api/v1/packages/{name}` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackageView {
    pub name: String,
    pub state: String,
    pub versions: Vec<IndexVersion>,
    /// Packages whose latest stable version depends on this one.
    pub dependents: Vec<String>,
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

/// The direct dependents of `name`: packages whose latest version depends on it.
pub fn dependents(universe: &Universe, name: &PackageName) -> Vec<PackageName> {
    let mut out: Vec<PackageName> = universe
        .package_names()
        .filter(|p| *p != name)
        .filter(|p| {
            universe
                .latest(p)
                .is_some_and(|r| r.dependencies.contains_key(name))
        })
        .cloned()
        .collect();
    out.sort();
    out
}

pub async fn package(app: &App, name: &str) -> Result<PackageView, StableError> {
    let mut conn = app.db.pool().acquire().await?;
    let rows = db::stable::versions_of(&mut conn, name).await?;
    let Some(first) = rows.first() else {
        return Err(StableError::NoSuchPackage(name.into()));
    };
    let state = first.package_state.clone();
    let index = build_index(0, &rows);
    let all = db::stable::all_versions(&mut conn).await?;
    let universe = universe_of(&all);
    let dependents = PackageName::parse(name)
        .map(|n| {
            dependents(&universe, &n)
                .into_iter()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(PackageView {
        name: name.into(),
        state,
        versions: index
            .packages
            .into_values()
            .next()
            .map(|p| p.versions)
            .unwrap_or_default(),
        dependents,
    })
}

/// The archive of a stable version.
pub async fn archive(app: &App, name: &str, version: &str) -> Result<PathBuf, StableError> {
    let mut conn = app.db.pool().acquire().await?;
    let rows = db::stable::versions_of(&mut conn, name).await?;
    if rows.is_empty() {
        return Err(StableError::NoSuchPackage(name.into()));
    }
    if !rows.iter().any(|r| r.version == version) {
        return Err(StableError::NoSuchVersion(name.into(), version.into()));
    }
    Ok(app.stable.archive_path(name, version))
}
