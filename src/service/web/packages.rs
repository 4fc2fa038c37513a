//! The package website (Morphux): every stable package, listed by name or
//! found by a word of its name or description through the search index,
//! and one package's page with its versions' build metadata, dependencies
//! and what they resolved to, dependents (paged), obsolescence and history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db;
use crate::domain::metadata::BuildMetadata;
use crate::service::stable::{self, IndexVersion, PackageView, StableError};
use crate::service::{App, mirror};

/// Packages shown per page.
pub const PAGE: i64 = 50;

/// One package in the listing.
#[derive(Clone, Debug, Serialize)]
pub struct ListedPackage {
    pub name: String,
    pub version: String,
    pub description: String,
    pub obsolete: bool,
}

/// A page of the listing or of search results.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    pub query: String,
    pub packages: Vec<ListedPackage>,
    /// Stable packages in all.
    pub total: i64,
    /// The listing goes on after this name (`?after=`).
    pub next_after: Option<String>,
    /// Search results go on at this page (`?page=`).
    pub next_page: Option<i64>,
    pub page: i64,
}

/// The words of a search: runs of letters and digits, lowercased (the
/// index splits names at `-` and `_` too). At most eight.
pub fn search_words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .take(8)
        .collect()
}

fn listed(rows: Vec<db::web::ListedRow>) -> Vec<ListedPackage> {
    rows.into_iter()
        .map(|r| ListedPackage {
            obsolete: r.state == "obsolete",
            name: r.name,
            version: r.version,
            description: r.description,
        })
        .collect()
}

/// The packages by name after `after`, or those matching `query` (page
/// `page`, from 1).
pub async fn list_packages(
    app: &App,
    query: &str,
    after: &str,
    page: i64,
) -> Result<Listing, sqlx::Error> {
    let words = search_words(query);
    // Names are made of these; anything else in `after` cannot be one.
    let after: String = after
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    let after = after.as_str();
    let page = page.clamp(1, 10_000);
    let backend = app.db.backend();
    let offset = (page - 1) * PAGE;
    let mut conn = app.db.pool().acquire().await?;
    // A follower lists what it mirrored; it keeps no search index, so its
    // search is a plain match of the words in names and descriptions.
    let (total, mut rows) = if mirror::primary_of(app).is_some() {
        let rows = if words.is_empty() {
            db::mirror_pages::list(&mut conn, after, PAGE + 1).await?
        } else {
            db::mirror_pages::search(&mut conn, &words, offset, PAGE + 1).await?
        };
        (db::mirror_pages::count(&mut conn).await?, rows)
    } else {
        let rows = if words.is_empty() {
            db::web::list_packages(&mut conn, backend, after, PAGE + 1).await?
        } else {
            db::web::search_packages(&mut conn, backend, &words, offset, PAGE + 1).await?
        };
        (db::web::count_packages(&mut conn, backend).await?, rows)
    };
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let packages = listed(rows);
    Ok(Listing {
        query: query.to_owned(),
        next_after: (more && words.is_empty())
            .then(|| packages.last().map(|p| p.name.clone()))
            .flatten(),
        next_page: (more && !words.is_empty()).then_some(page + 1),
        page,
        total,
        packages,
    })
}

/// One stable version with what its builds recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionPage {
    pub version: String,
    pub promoted_at: String,
    pub size_bytes: i64,
    pub dependencies: Vec<Dependency>,
    pub builds: Vec<BuildPage>,
}

/// A dependency and the version its build resolved it to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    pub name: String,
    pub requirement: String,
    pub resolved: Option<String>,
}

/// What one platform's build of a version recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildPage {
    pub platform: String,
    pub duration_ms: u64,
    pub installed_bytes: u64,
    pub files: usize,
    /// Installed files under a `bin/` or `sbin/` directory.
    pub executables: Vec<String>,
}

/// Everything `/packages/{name}` shows.
#[derive(Clone, Debug, Serialize)]
pub struct PackagePage {
    pub package: PackageView,
    pub description: String,
    pub license: String,
    /// Newest first.
    pub versions: Vec<VersionPage>,
    /// This page of the dependents, and where the next starts.
    pub dependents: Vec<String>,
    pub dependents_page: usize,
    pub dependents_pages: usize,
    /// The visitor may obsolete it (set by the page, from the policy).
    pub may_obsolete: bool,
}

/// Dependents shown per page.
pub const DEPENDENTS_PAGE: usize = 100;

fn is_executable(file: &str) -> bool {
    let mut parts = file.rsplit('/');
    let _name = parts.next();
    matches!(parts.next(), Some("bin" | "sbin"))
}

fn build_page(platform: String, metadata: Option<&str>) -> BuildPage {
    let m = BuildMetadata::parse(metadata);
    BuildPage {
        platform,
        duration_ms: m.duration_ms,
        installed_bytes: m.installed_bytes,
        files: m.files.len(),
        executables: m
            .files
            .iter()
            .filter(|f| is_executable(f))
            .cloned()
            .collect(),
    }
}

/// Everything a package's pages show, as one record: what
/// `GET /api/v1/packages/{name}/record` answers, and what a follower keeps
/// of each package beside its index document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackageRecord {
    pub package: PackageView,
    pub description: String,
    pub license: String,
    /// Newest first.
    pub versions: Vec<VersionPage>,
}

/// The record of package `name`: from the stable tables on a primary, from
/// the mirrored documents and records on a follower.
pub async fn record(app: &App, name: &str) -> Result<PackageRecord, StableError> {
    if mirror::primary_of(app).is_some() {
        return mirror::pages::record(app, name).await;
    }
    let package = stable::package(app, name).await?;
    let (builds, manifest) = {
        let mut conn = app.db.pool().acquire().await?;
        let builds = db::web::version_builds(&mut conn, name).await?;
        let latest = db::stable::versions_of(&mut conn, name).await?.pop();
        (builds, latest.map(|r| r.manifest))
    };
    let manifest: Option<crate::domain::Manifest> =
        manifest.and_then(|m| serde_json::from_str(&m).ok());
    let mut by_version: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for b in builds {
        by_version
            .entry(b.version)
            .or_default()
            .push((b.platform, b.metadata));
    }
    let versions = version_pages(&package.versions, |version| {
        let builds = by_version.remove(version).unwrap_or_default();
        let resolved = builds
            .iter()
            .find_map(|(_, m)| BuildMetadata::parse(m.as_deref()).resolved)
            .unwrap_or_default();
        let builds = builds
            .into_iter()
            .map(|(p, m)| build_page(p, m.as_deref()))
            .collect();
        (builds, resolved)
    });
    Ok(PackageRecord {
        description: manifest
            .as_ref()
            .map(|m| m.description.clone())
            .unwrap_or_default(),
        license: manifest.map(|m| m.license).unwrap_or_default(),
        versions,
        package,
    })
}

/// The pages of `versions` (lowest first), newest first, each with the
/// builds and resolved dependencies `builds_of` finds for it.
pub fn version_pages(
    versions: &[IndexVersion],
    mut builds_of: impl FnMut(&str) -> (Vec<BuildPage>, BTreeMap<String, String>),
) -> Vec<VersionPage> {
    versions
        .iter()
        .rev()
        .map(|v| {
            let (builds, resolved) = builds_of(&v.version);
            VersionPage {
                version: v.version.clone(),
                promoted_at: v.promoted_at.clone(),
                size_bytes: v.size_bytes,
                dependencies: v
                    .dependencies
                    .iter()
                    .map(|(name, req)| Dependency {
                        resolved: resolved.get(name).cloned(),
                        name: name.clone(),
                        requirement: req.clone(),
                    })
                    .collect(),
                builds,
            }
        })
        .collect()
}

/// The page of package `name`, with page `dependents_page` (from 1) of
/// its dependents.
pub async fn package_page(
    app: &App,
    name: &str,
    dependents_page: usize,
) -> Result<PackagePage, StableError> {
    let record = record(app, name).await?;
    let package = record.package;
    let pages = package.dependents.len().div_ceil(DEPENDENTS_PAGE).max(1);
    let page = dependents_page.clamp(1, pages);
    let dependents = package
        .dependents
        .iter()
        .skip((page - 1) * DEPENDENTS_PAGE)
        .take(DEPENDENTS_PAGE)
        .cloned()
        .collect();
    Ok(PackagePage {
        description: record.description,
        license: record.license,
        versions: record.versions,
        dependents,
        dependents_page: page,
        dependents_pages: pages,
        may_obsolete: false,
        package,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_are_letters_and_digits_only() {
        assert_eq!(
            search_words("Sound-goodizer \"OR* x\" ; DROP"),
            ["sound", "goodizer", "or", "x", "drop"]
        );
        assert!(search_words(" -*- ").is_empty());
    }

    #[test]
    fn executables_are_files_in_a_bin_directory() {
        assert!(is_executable("usr/bin/wave"));
        assert!(is_executable("bin/wave"));
        assert!(!is_executable("usr/lib/libwave.so"));
        assert!(!is_executable("bin"));
    }
}
