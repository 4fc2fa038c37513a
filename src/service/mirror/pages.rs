//! A follower's package pages (SPEC section 10, "Mirrors"): beside each
//! document the follower keeps the record its primary's pages are built
//! from (`GET /api/v1/packages/{name}/record`: history, description,
//! license, build metadata per version and platform) and what the
//! package's latest version depends on, put in the transaction that puts
//! the documents and the serial. Its package views, pages and listing are
//! answered from these rows, so they stand while the primary is down.
//!
//! Dependents are computed here from the mirrored documents, never taken
//! from a record: a promotion of X that depends on Y changes Y's
//! dependents without touching Y's document, so Y's record would go stale.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::Context;

use super::{Fetched, Follower, blocking, ok};
use crate::db::{self, mirror_pages::PageRow};
use crate::service::App;
use crate::service::index::IndexDocument;
use crate::service::stable::StableError;
use crate::service::web::packages::{PackageRecord, VersionPage, version_pages};

impl Follower {
    /// The primary's record of each fetched package, in the same order
    /// (`None`: the primary has none, the package is not stable there).
    pub(super) async fn records(
        &self,
        fetched: &[Fetched],
    ) -> anyhow::Result<Vec<Option<PackageRecord>>> {
        let mut records = Vec::with_capacity(fetched.len());
        for f in fetched {
            records.push(self.record(&f.name).await?);
        }
        Ok(records)
    }

    async fn record(&self, name: &str) -> anyhow::Result<Option<PackageRecord>> {
        let url = format!("{}/api/v1/packages/{name}/record", self.primary);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("the primary {} does not answer", self.primary))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut record: PackageRecord = ok(resp)
            .await?
            .json()
            .await
            .with_context(|| format!("the record of {name} is unreadable"))?;
        // The follower computes dependents itself (see the module comment).
        record.package.dependents.clear();
        record.package.dependents_count = 0;
        Ok(Some(record))
    }

    /// Fills in what a follower mirrored before it kept records lacks: the
    /// record and dependencies of each document that has no record. (A
    /// record read now may be a step ahead of the document; see [`shown`].)
    pub(super) async fn backfill_pages(&self) -> anyhow::Result<()> {
        let mut after = String::new();
        loop {
            let mut fetched = Vec::new();
            {
                let mut conn = self.app.db.pool().acquire().await?;
                let names = db::mirror_pages::without_page(&mut conn, &after, 100).await?;
                let Some(last) = names.last() else {
                    return Ok(());
                };
                after = last.clone();
                for name in names {
                    if let Some(d) = db::mirror::document(&mut conn, &name).await? {
                        let document = serde_json::from_str(&d.body)?;
                        fetched.push(Fetched {
                            name,
                            document: Some((d.body.into_bytes(), document)),
                        });
                    }
                }
            }
            let records = self.records(&fetched).await?;
            let mut tx = self.app.db.begin_write().await?;
            for (f, record) in fetched.iter().zip(&records) {
                put(&mut tx, f, record.as_ref()).await?;
            }
            tx.commit().await?;
            tracing::info!(
                packages = fetched.len(),
                "mirror filled in the package pages of documents mirrored before"
            );
        }
    }

    /// Deletes the archives of the versions no document names any more
    /// (a version removed from a package that stays). Only after the
    /// documents naming what is kept are committed.
    pub(super) async fn sweep_archives(
        &self,
        kept: Vec<(String, BTreeSet<String>)>,
    ) -> anyhow::Result<()> {
        let store = self.app.stable.clone();
        let removed = blocking(move || {
            let mut removed = Vec::new();
            for (name, versions) in &kept {
                for version in store.remove_archives_except(name, versions)? {
                    removed.push(format!("{name} {version}"));
                }
            }
            Ok(removed)
        })
        .await?;
        if !removed.is_empty() {
            tracing::info!(archives = ?removed, "mirror removed archives no document names");
        }
        Ok(())
    }
}

/// The versions each fetched document names. (A package whose document
/// went loses all its archives with it.)
pub(super) fn kept_versions(fetched: &[Fetched]) -> Vec<(String, BTreeSet<String>)> {
    fetched
        .iter()
        .filter_map(|f| {
            let (_, document) = f.document.as_ref()?;
            let versions = document.versions.iter().map(|v| v.version.clone());
            Some((f.name.clone(), versions.collect()))
        })
        .collect()
}

/// Puts, inside the sync's transaction, what `f`'s latest version depends
/// on and its `record`.
pub(super) async fn put(
    tx: &mut db::Tx,
    f: &Fetched,
    record: Option<&PackageRecord>,
) -> anyhow::Result<()> {
    let document = f.document.as_ref().map(|(_, d)| d);
    let latest = document.and_then(|d| d.versions.last());
    let depends_on: Vec<&str> = latest
        .map(|v| v.dependencies.keys().map(String::as_str).collect())
        .unwrap_or_default();
    db::mirror_pages::put_dependencies(tx, &f.name, &depends_on).await?;
    let row = match record {
        Some(r) => Some(PageRow {
            name: f.name.clone(),
            version: latest.map(|v| v.version.clone()).unwrap_or_default(),
            description: r.description.clone(),
            state: document.map_or(r.package.state, |d| d.state).to_string(),
            record: serde_json::to_string(r)?,
        }),
        None => None,
    };
    db::mirror_pages::put_page(tx, &f.name, row.as_ref()).await?;
    Ok(())
}

fn unreadable(e: serde_json::Error) -> StableError {
    StableError::Internal(anyhow::Error::new(e).context("a mirrored row is unreadable"))
}

/// The record of `name` as this follower shows it.
pub async fn record(app: &App, name: &str) -> Result<PackageRecord, StableError> {
    let mut tx = app.db.begin_read().await?;
    let document = db::mirror::document(&mut tx, name).await?;
    let page = db::mirror_pages::page(&mut tx, name).await?;
    let mut dependents = db::mirror_pages::dependents(&mut tx, name).await?;
    tx.commit().await?;
    let document: Option<IndexDocument> = document
        .map(|d| serde_json::from_str(&d.body))
        .transpose()
        .map_err(unreadable)?;
    let recorded: Option<PackageRecord> = page
        .map(|p| serde_json::from_str(&p.record))
        .transpose()
        .map_err(unreadable)?;
    dependents.sort();
    shown(document, recorded, dependents).ok_or_else(|| StableError::NoSuchPackage(name.into()))
}

/// What a follower shows of a package: its document's versions, state,
/// obsolescence and pins (what it serves); its record's history,
/// description, license and build figures for the versions the document
/// names (a record read a moment after the document may be a step ahead;
/// the next change touching the package brings both level); and the
/// dependents the follower computed. `None` when it has neither.
pub fn shown(
    document: Option<IndexDocument>,
    recorded: Option<PackageRecord>,
    dependents: Vec<String>,
) -> Option<PackageRecord> {
    let mut record = match (recorded, &document) {
        (Some(r), _) => r,
        (None, Some(d)) => PackageRecord {
            package: crate::service::stable::PackageView {
                name: d.name.clone(),
                state: d.state,
                obsolete: None,
                versions: Vec::new(),
                dependents: Vec::new(),
                dependents_count: 0,
                pins: BTreeMap::new(),
                history: Vec::new(),
            },
            description: String::new(),
            license: String::new(),
            versions: Vec::new(),
        },
        (None, None) => return None,
    };
    let mut by_version: BTreeMap<String, VersionPage> = std::mem::take(&mut record.versions)
        .into_iter()
        .map(|v| (v.version.clone(), v))
        .collect();
    let package = &mut record.package;
    match document {
        Some(d) => {
            package.state = d.state;
            package.obsolete = d.obsolete;
            package.pins = d.pins;
            package.versions = d.versions;
        }
        None => {
            package.obsolete = None;
            package.pins = BTreeMap::new();
            package.versions = Vec::new();
        }
    }
    record.versions = version_pages(&package.versions, |version| {
        match by_version.remove(version) {
            Some(v) => {
                let resolved = v
                    .dependencies
                    .into_iter()
                    .filter_map(|d| Some((d.name, d.resolved?)))
                    .collect();
                (v.builds, resolved)
            }
            None => (Vec::new(), BTreeMap::new()),
        }
    });
    package.dependents_count = dependents.len();
    package.dependents = dependents;
    Some(record)
}

/// Direct (or transitive) dependents of a mirrored package, from the
/// mirrored documents.
pub async fn dependents_of(
    app: &App,
    name: &str,
    transitive: bool,
) -> Result<Vec<String>, StableError> {
    let mut conn = app.db.pool().acquire().await?;
    if db::mirror::document(&mut conn, name).await?.is_none() {
        return Err(StableError::NoSuchPackage(name.into()));
    }
    let mut found = db::mirror_pages::dependents(&mut conn, name).await?;
    if transitive {
        let mut seen: BTreeSet<String> = found.iter().cloned().collect();
        seen.insert(name.to_owned());
        let mut next: VecDeque<String> = found.iter().cloned().collect();
        while let Some(d) = next.pop_front() {
            for dd in db::mirror_pages::dependents(&mut conn, &d).await? {
                if seen.insert(dd.clone()) {
                    found.push(dd.clone());
                    next.push_back(dd);
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PackageState;
    use crate::service::stable::{IndexVersion, PackageView};
    use crate::service::web::packages::{BuildPage, Dependency};

    fn version(v: &str) -> IndexVersion {
        IndexVersion {
            version: v.into(),
            sha256: format!("sha-{v}"),
            size_bytes: 10,
            dependencies: [("lib".to_owned(), "^1".to_owned())].into(),
            archive: format!("archives/app/app-{v}.tar.gz"),
            promoted_at: "2026-12-01T00:00:00Z".into(),
        }
    }

    fn recorded(v: &str) -> VersionPage {
        VersionPage {
            version: v.into(),
            promoted_at: "2026-12-01T00:00:00Z".into(),
            size_bytes: 10,
            dependencies: vec![Dependency {
                name: "lib".into(),
                requirement: "^1".into(),
                resolved: Some("1.4.0".into()),
            }],
            builds: vec![BuildPage {
                platform: "linux".into(),
                duration_ms: 1200,
                installed_bytes: 99,
                files: 3,
                executables: vec!["usr/bin/app".into()],
            }],
        }
    }

    #[test]
    fn a_follower_shows_its_documents_versions_with_the_recorded_builds_and_its_own_dependents() {
        let document = IndexDocument {
            name: "app".into(),
            serial: 4,
            state: PackageState::Active,
            obsolete: None,
            pins: BTreeMap::new(),
            versions: vec![version("1.0.0"), version("1.1.0")],
        };
        let record = PackageRecord {
            package: PackageView {
                name: "app".into(),
                state: PackageState::Active,
                obsolete: None,
                // A step ahead of the document: 1.2.0 is not served yet.
                versions: vec![version("1.0.0"), version("1.1.0"), version("1.2.0")],
                dependents: Vec::new(),
                dependents_count: 0,
                pins: BTreeMap::new(),
                history: Vec::new(),
            },
            description: "An app".into(),
            license: "MIT".into(),
            versions: vec![recorded("1.2.0"), recorded("1.1.0")],
        };
        let page = shown(Some(document), Some(record), vec!["tool".into()]).unwrap();
        let versions: Vec<&str> = page.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["1.1.0", "1.0.0"]);
        assert_eq!(page.versions[0], recorded("1.1.0"));
        assert!(page.versions[1].builds.is_empty());
        assert_eq!(page.versions[1].dependencies[0].resolved, None);
        assert_eq!(page.package.versions.len(), 2);
        assert_eq!(page.package.dependents, ["tool"]);
        assert_eq!(page.package.dependents_count, 1);
        assert_eq!(page.description, "An app");
        assert!(shown(None, None, Vec::new()).is_none());
    }
}
