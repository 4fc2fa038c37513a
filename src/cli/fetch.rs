//! `holdq fetch` (SPEC section 10, upm's `copy`): resolves packages against
//! the stable index with the server's resolver (pins honoured), downloads
//! every archive of the closure verified by sha256, unpacks each into
//! `DIR/<name>/` and writes `DIR/resolved.toml`; `--locked` fetches exactly
//! the versions such a file names.
//!
//! The per-package documents are read one by one and may change meanwhile:
//! the first answer's `X-Holdq-Serial` is the serial the view must be at,
//! and a document changed after it (a newer `serial`) means another change
//! landed while reading, so everything is read and resolved again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use super::client::Client;
use crate::domain::PackageName;
use crate::domain::graph::StableRepo;
use crate::service::index::IndexDocument;
use crate::service::stable::IndexVersion;
use crate::service::testing::TestingIndex;

/// What `resolved.toml` holds, and what `--json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The stable serial the closure was resolved at.
    pub serial: i64,
    #[serde(rename = "package")]
    pub packages: Vec<Fetched>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Set when the package is obsolete: why, and what to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obsolete: Option<String>,
    /// Set when it came from the testing channel: the pending upload it is,
    /// whose checks have not all run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked_upload: Option<i64>,
}

/// Which versions a fetch may pick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Channel {
    /// Stable versions only.
    #[default]
    Stable,
    /// Stable plus the testing channel: uploads still being checked whose
    /// validate and resolve passed (each fetched one is warned about).
    Testing,
}

/// One `NAME[@REQ]` of the command line.
#[derive(Clone, Debug)]
pub struct Request {
    pub name: PackageName,
    pub requirement: VersionReq,
}

impl std::str::FromStr for Request {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (name, req) = s.split_once('@').unwrap_or((s, "*"));
        let name = PackageName::parse(name)
            .map_err(|e| anyhow::anyhow!("{s:?}: {name:?} is not a package name: {e}"))?;
        let requirement = VersionReq::parse(req)
            .map_err(|e| anyhow::anyhow!("{s:?}: {req:?} is not a version requirement: {e}"))?;
        Ok(Self { name, requirement })
    }
}

/// How many times the documents are read again when they change meanwhile.
const ATTEMPTS: usize = 5;

/// `holdq fetch`: resolves (or takes `locked`), downloads, unpacks, writes
/// `resolved.toml`; prints what it fetched.
pub async fn fetch(
    client: &Client,
    requests: &[Request],
    locked: Option<&Path>,
    channel: Channel,
    out: &Path,
) -> anyhow::Result<Resolved> {
    let testing = match channel {
        Channel::Stable => None,
        Channel::Testing => Some(client.get::<TestingIndex>("/testing/index").await?),
    };
    let resolved = match locked {
        Some(file) => locked_view(client, file, testing.as_ref()).await?,
        None => consistent_resolution(client, requests, testing.as_ref()).await?,
    };
    for package in &resolved.packages {
        if let Some(why) = &package.obsolete {
            eprintln!("warning: {} is obsolete: {why}", package.name);
        }
        if let Some(upload) = package.unchecked_upload {
            eprintln!(
                "warning: {} {} is unchecked (upload {upload} in the testing channel): {}",
                package.name,
                package.version,
                crate::service::testing::UNCHECKED
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // Every archive verified before any is unpacked: a refusal leaves
    // nothing behind.
    let mut archives = Vec::with_capacity(resolved.packages.len());
    for package in &resolved.packages {
        archives.push(download(client, package, out).await?);
    }
    for (package, archive) in resolved.packages.iter().zip(&archives) {
        unpack_into(archive, package, out)?;
    }
    let text = format!(
        "# Written by `holdq fetch`; `holdq fetch --locked resolved.toml` fetches exactly these.\n{}",
        toml::to_string(&resolved)?
    );
    let path = out.join("resolved.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(resolved)
}

/// The documents read, by package name, and the serial they are all at.
struct View {
    serial: i64,
    documents: BTreeMap<String, IndexDocument>,
    /// The testing channel the documents include, when fetching from it.
    testing: Option<TestingIndex>,
}

/// Reads and resolves until one pass saw no change land meanwhile.
async fn consistent_resolution(
    client: &Client,
    requests: &[Request],
    testing: Option<&TestingIndex>,
) -> anyhow::Result<Resolved> {
    for _ in 0..ATTEMPTS {
        let roots = requests.iter().map(|r| r.name.to_string());
        let Some(view) = read_closure(client, roots, true, testing).await? else {
            continue; // a document changed while reading
        };
        return resolve(&view, requests);
    }
    bail!("the stable index kept changing while it was read ({ATTEMPTS} attempts); try again")
}

/// Reads the documents of `roots` and, with `follow`, of every package any
/// of their versions requires, transitively; `None` when one of them
/// changed after the first was read.
async fn read_closure(
    client: &Client,
    roots: impl Iterator<Item = String>,
    follow: bool,
    testing: Option<&TestingIndex>,
) -> anyhow::Result<Option<View>> {
    let mut queue: VecDeque<String> = roots.collect();
    let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
    let mut documents = BTreeMap::new();
    let mut serial = None;
    while let Some(name) = queue.pop_front() {
        let read = client.document(&name).await?;
        let at = read.as_ref().map(|(_, at)| *at);
        let Some(document) = with_testing(&name, read.map(|(d, _)| d), testing) else {
            if serial.is_none() || documents.is_empty() {
                bail!("no stable package {name:?}");
            }
            return Ok(None); // required, yet gone: removed meanwhile
        };
        if let Some(at) = at
            && document.serial > *serial.get_or_insert(at)
        {
            return Ok(None);
        }
        let deps = document.versions.iter().flat_map(|v| v.dependencies.keys());
        for dep in deps.filter(|_| follow) {
            if seen.insert(dep.clone()) {
                queue.push_back(dep.clone());
            }
        }
        documents.insert(name, document);
    }
    Ok(Some(View {
        serial: serial.unwrap_or_default(),
        documents,
        testing: testing.cloned(),
    }))
}

/// A package's stable document with its versions in the testing channel
/// added (marked by their `archive`, the channel's download path).
fn with_testing(
    name: &str,
    stable: Option<IndexDocument>,
    testing: Option<&TestingIndex>,
) -> Option<IndexDocument> {
    let unchecked: Vec<_> = testing
        .iter()
        .flat_map(|t| t.packages.iter())
        .filter(|p| p.name == name)
        .collect();
    if unchecked.is_empty() {
        return stable;
    }
    let mut document = stable.unwrap_or_else(|| IndexDocument {
        name: name.to_owned(),
        serial: 0,
        state: crate::domain::PackageState::Active,
        obsolete: None,
        pins: BTreeMap::new(),
        versions: Vec::new(),
    });
    for p in unchecked {
        document.versions.retain(|v| v.version != p.version);
        document.versions.push(IndexVersion {
            version: p.version.clone(),
            sha256: p.sha256.clone(),
            size_bytes: p.size_bytes,
            dependencies: p.dependencies.clone(),
            archive: p.archive.clone(),
            promoted_at: String::new(),
        });
    }
    document
        .versions
        .sort_by_cached_key(|v| Version::parse(&v.version).ok());
    Some(document)
}

/// The stable repository the documents describe: releases, pins, obsolete
/// states, as the server's model holds them.
fn repo_of(view: &View) -> anyhow::Result<StableRepo> {
    let mut repo = StableRepo::new();
    for (name, document) in &view.documents {
        crate::service::index::apply_document(&mut repo, name, Some(document))?;
    }
    Ok(repo)
}

/// The highest version of each request matching its requirement, and the
/// closure of each resolved by the server's resolver; one version per
/// package across all of them.
fn resolve(view: &View, requests: &[Request]) -> anyhow::Result<Resolved> {
    let repo = repo_of(view)?;
    let mut chosen: BTreeMap<PackageName, Version> = BTreeMap::new();
    let mut pick = |name: &PackageName, version: &Version, why: &str| -> anyhow::Result<()> {
        match chosen.get(name) {
            Some(other) if other != version => {
                bail!("{name} is needed at {other} and at {version} ({why}); fetch them separately")
            }
            _ => {
                chosen.insert(name.clone(), version.clone());
                Ok(())
            }
        }
    };
    for r in requests {
        let version = repo
            .universe()
            .releases(&r.name)
            .iter()
            .rev()
            .map(|rel| &rel.version)
            .find(|v| r.requirement.matches(v))
            .cloned()
            .with_context(|| {
                format!("no stable version of {} matches {}", r.name, r.requirement)
            })?;
        let closure = repo
            .resolve(&r.name, &version)
            .map_err(|e| anyhow::anyhow!("cannot resolve {} {version}: {e}", r.name))?;
        pick(&r.name, &version, "requested")?;
        for (dep, v) in &closure {
            pick(dep, v, &format!("by {} {version}", r.name))?;
        }
    }
    let packages = chosen
        .into_iter()
        .map(|(name, version)| fetched(view, name.as_str(), &version.to_string()))
        .collect::<anyhow::Result<_>>()?;
    Ok(Resolved {
        serial: view.serial,
        packages,
    })
}

/// A chosen version, with its sha256 and obsolescence from its document.
fn fetched(view: &View, name: &str, version: &str) -> anyhow::Result<Fetched> {
    let document = view
        .documents
        .get(name)
        .with_context(|| format!("no stable package {name:?}"))?;
    let entry = document
        .versions
        .iter()
        .find(|v| v.version == version)
        .with_context(|| format!("{name} {version} is not in stable"))?;
    let obsolete = document.obsolete.as_ref().map(|o| match &o.replacement {
        Some(r) => format!("{}; use {r} instead", o.reason),
        None => o.reason.clone(),
    });
    let unchecked_upload = view
        .testing
        .iter()
        .flat_map(|t| t.packages.iter())
        .find(|p| p.name == name && p.version == version && p.sha256 == entry.sha256)
        .map(|p| p.upload);
    Ok(Fetched {
        name: name.into(),
        version: version.into(),
        sha256: entry.sha256.clone(),
        obsolete,
        unchecked_upload,
    })
}

/// The versions a previous `resolved.toml` names, each still in stable
/// with the same sha256.
async fn locked_view(
    client: &Client,
    file: &Path,
    testing: Option<&TestingIndex>,
) -> anyhow::Result<Resolved> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let lock: Resolved = toml::from_str(&text)
        .with_context(|| format!("{} is not a resolved.toml", file.display()))?;
    for _ in 0..ATTEMPTS {
        let names = lock.packages.iter().map(|p| p.name.clone());
        let Some(view) = read_closure(client, names, false, testing).await? else {
            continue;
        };
        let mut packages = Vec::new();
        for p in &lock.packages {
            let now = fetched(&view, &p.name, &p.version)?;
            if now.sha256 != p.sha256 {
                bail!(
                    "{} {} in stable has sha256 {}, not the {} {} names; refused",
                    p.name,
                    p.version,
                    now.sha256,
                    p.sha256,
                    file.display()
                );
            }
            packages.push(now);
        }
        return Ok(Resolved {
            serial: view.serial,
            packages,
        });
    }
    bail!("the stable index kept changing while it was read ({ATTEMPTS} attempts); try again")
}

/// Downloads a package's archive into `out`, verified: a file whose sha256
/// is not the index's is deleted and refused.
async fn download(
    client: &Client,
    package: &Fetched,
    out: &Path,
) -> anyhow::Result<tempfile::TempPath> {
    let partial = tempfile::Builder::new()
        .prefix(".holdq-fetch-")
        .tempfile_in(out)?
        .into_temp_path();
    let path = match package.unchecked_upload {
        None => format!("/packages/{}/{}/archive", package.name, package.version),
        Some(_) => format!("/testing/{}/{}/archive", package.name, package.version),
    };
    let what = format!("{} {}", package.name, package.version);
    let actual = client.download_archive(&path, &what, &partial).await?;
    if actual != package.sha256 {
        // `partial` is deleted as it drops: nothing of it is kept.
        bail!(
            "the archive of {} {} has sha256 {actual}, but the index says {}; refused",
            package.name,
            package.version,
            package.sha256
        );
    }
    Ok(partial)
}

/// Unpacks a verified archive into `out/<name>/`, replacing what a
/// previous fetch put there.
fn unpack_into(archive: &Path, package: &Fetched, out: &Path) -> anyhow::Result<()> {
    let staging = tempfile::Builder::new()
        .prefix(".holdq-unpack-")
        .tempdir_in(out)?;
    let top = format!("{}-{}", package.name, package.version);
    let unpacked: PathBuf = crate::storage::unpack::unpack(archive, staging.path(), &top)?;
    let dest = out.join(&package.name);
    match std::fs::remove_dir_all(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", dest.display())),
    }
    std::fs::rename(&unpacked, &dest)
        .with_context(|| format!("cannot move {} into place", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::stable::IndexVersion;

    fn doc(
        name: &str,
        versions: &[(&str, &[(&str, &str)])],
        pins: &[(&str, &str)],
    ) -> IndexDocument {
        IndexDocument {
            name: name.into(),
            serial: 1,
            state: crate::domain::PackageState::Active,
            obsolete: None,
            pins: pins
                .iter()
                .map(|(d, p)| (d.to_string(), p.to_string()))
                .collect(),
            versions: versions
                .iter()
                .map(|(v, deps)| IndexVersion {
                    version: v.to_string(),
                    sha256: format!("{name}-{v}"),
                    size_bytes: 0,
                    dependencies: deps
                        .iter()
                        .map(|(d, q)| (d.to_string(), q.to_string()))
                        .collect(),
                    archive: String::new(),
                    promoted_at: String::new(),
                })
                .collect(),
        }
    }

    fn view(docs: Vec<IndexDocument>) -> View {
        View {
            serial: 1,
            documents: docs.into_iter().map(|d| (d.name.clone(), d)).collect(),
            testing: None,
        }
    }

    fn picked(r: &Resolved) -> Vec<(&str, &str)> {
        r.packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect()
    }

    #[test]
    fn a_request_takes_the_highest_matching_version_and_its_closure_honours_pins() {
        let v = view(vec![
            doc(
                "app",
                &[("1.0.0", &[("lib", "^1")]), ("2.0.0", &[("lib", "^1")])],
                &[("lib", "^1, <=1.1.0")],
            ),
            doc(
                "lib",
                &[("1.0.0", &[]), ("1.1.0", &[]), ("1.2.0", &[])],
                &[],
            ),
        ]);
        let all = resolve(&v, &["app".parse().unwrap()]).unwrap();
        assert_eq!(picked(&all), [("app", "2.0.0"), ("lib", "1.1.0")]);
        let old = resolve(&v, &["app@<2".parse().unwrap()]).unwrap();
        assert_eq!(picked(&old), [("app", "1.0.0"), ("lib", "1.1.0")]);
        let lib = resolve(&v, &["lib".parse().unwrap()]).unwrap();
        assert_eq!(picked(&lib), [("lib", "1.2.0")]);
    }

    #[test]
    fn two_requests_needing_two_versions_of_one_package_are_refused() {
        let v = view(vec![doc("lib", &[("1.0.0", &[]), ("2.0.0", &[])], &[])]);
        let err = resolve(&v, &["lib@^1".parse().unwrap(), "lib@^2".parse().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("fetch them separately"), "{err}");
    }

    #[test]
    fn a_bad_request_names_the_problem() {
        let err = "lib@not-a-req".parse::<Request>().unwrap_err();
        assert!(
            err.to_string().contains("not a version requirement"),
            "{err}"
        );
        let err = "Bad Name".parse::<Request>().unwrap_err();
        assert!(err.to_string().contains("not a package name"), "{err}");
    }
}
