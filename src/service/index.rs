//! The stable index as consumers read it (SPEC section 10): one document
//! per package, built from that package's rows only, so a change costs
//! what it touches and not the size of the repository.
//!
//! Each stable change writes, in its own transaction, the new documents of
//! the packages it touched (`index_documents`: the bytes, their sha256 and
//! the serial) and a row of the changes log with their hashes
//! ([`record_change`]); after the commit, [`publish`] wakes whoever waits
//! for a change. A document is therefore exactly as old as the database:
//! a crash leaves every document of a change old or every one new, and a
//! reader of one snapshot sees one stable repository
//! ([`super::changes::stream`]).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::stable::{IndexVersion, ObsoleteView};
use super::{App, format_time};
use crate::db::{self, Conn};
use crate::domain::graph::{Obsolescence, StableRepo};
use crate::domain::resolve::Release;
use crate::domain::{PackageName, PackageState};
use crate::storage::stable::StableStore;

/// One package's index document: `GET /api/v1/index/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexDocument {
    pub name: String,
    /// The stable serial at which this document last changed.
    pub serial: i64,
    pub state: PackageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obsolete: Option<ObsoleteView>,
    /// Max-version pins on this package's requirements: dependency ->
    /// "its requirement, <=M".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, String>,
    /// By version, lowest first.
    pub versions: Vec<IndexVersion>,
}

/// A package's document as the database holds it: `None` when the package
/// has none (no stable version, or removed).
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    pub package_id: Option<i64>,
    pub document: Option<IndexDocument>,
}

/// What kind of stable change a row of the changes log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Promotion,
    GroupPromotion,
    Obsolescence,
    Undo,
    Removal,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promotion => "promotion",
            Self::GroupPromotion => "group_promotion",
            Self::Obsolescence => "obsolescence",
            Self::Undo => "undo",
            Self::Removal => "removal",
        }
    }

    /// Whether the change can add a version to the index (and so name an
    /// archive no document named before).
    pub fn adds_versions(self) -> bool {
        matches!(self, Self::Promotion | Self::GroupPromotion)
    }
}

/// A package touched by a change and the sha256 of its new document
/// (`None`: its document went).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub name: String,
    pub sha256: Option<String>,
}

/// The dependencies named by a stored manifest (JSON).
pub fn dependencies_in(manifest: &str) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Dependencies {
        #[serde(default)]
        dependencies: BTreeMap<String, String>,
    }
    serde_json::from_str::<Dependencies>(manifest)
        .map(|m| m.dependencies)
        .unwrap_or_default()
}

fn version_of(name: &str, v: db::stable::ListedVersion) -> IndexVersion {
    IndexVersion {
        archive: StableStore::archive_rel(name, &v.version),
        version: v.version,
        sha256: v.sha256,
        size_bytes: v.size_bytes,
        dependencies: v.dependencies.unwrap_or_default(),
        promoted_at: format_time(v.promoted_at),
    }
}

/// Where [`documents`] takes the packages' versions from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionsFrom {
    /// The `versions` table (and each manifest's dependencies).
    Tables,
    /// The stored documents, where there are any: a change that adds no
    /// version (an obsolescence pinning thousands of dependents) leaves
    /// every version list as it was, and reading it back costs a fraction
    /// of decoding every manifest again.
    StoredDocuments,
}

/// The versions of `names` from the tables, by package.
async fn table_versions(
    conn: &mut Conn,
    names: &[&str],
) -> anyhow::Result<BTreeMap<String, Vec<IndexVersion>>> {
    let mut versions = BTreeMap::new();
    for (name, list) in db::stable::version_lists(conn, names).await? {
        let listed: Vec<db::stable::ListedVersion> = serde_json::from_str(&list)
            .with_context(|| format!("the stable versions of {name} are unreadable"))?;
        let list = listed.into_iter().map(|v| version_of(&name, v)).collect();
        versions.insert(name, list);
    }
    Ok(versions)
}

/// The versions of `names` as `from` says, by package.
async fn versions_of(
    conn: &mut Conn,
    names: &[&str],
    from: VersionsFrom,
) -> anyhow::Result<BTreeMap<String, Vec<IndexVersion>>> {
    if from == VersionsFrom::Tables {
        return table_versions(conn, names).await;
    }
    #[derive(Deserialize)]
    struct Versions {
        versions: Vec<IndexVersion>,
    }
    let mut versions = BTreeMap::new();
    for (name, body) in db::stable::bodies_of(conn, names).await? {
        let stored: Versions = serde_json::from_str(&body)
            .with_context(|| format!("the stored document of {name} is unreadable"))?;
        versions.insert(name, stored.versions);
    }
    let unstored: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !versions.contains_key(*n))
        .collect();
    if !unstored.is_empty() {
        versions.extend(table_versions(conn, &unstored).await?);
    }
    Ok(versions)
}

/// The documents of `names` as the database holds them: each at the serial
/// it last changed at, or at `at` (a change being recorded).
pub async fn documents(
    conn: &mut Conn,
    names: &[&str],
    at: Option<i64>,
    from: VersionsFrom,
) -> anyhow::Result<Vec<Built>> {
    let heads = db::stable::document_heads(conn, names).await?;
    let mut versions = versions_of(conn, names, from).await?;
    let pins = db::pins::of_dependents(conn, names).await?;
    let mut pinned: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for pin in &pins {
        pinned.entry(&pin.dependent).or_default().insert(
            pin.dependency.clone(),
            format!("{}, <={}", pin.requirement, pin.max_version),
        );
    }
    let mut by_name: BTreeMap<&str, Built> = names
        .iter()
        .map(|&n| {
            let missing = Built {
                name: n.into(),
                package_id: None,
                document: None,
            };
            (n, missing)
        })
        .collect();
    for head in &heads {
        let mut list = versions.remove(head.name.as_str()).unwrap_or_default();
        list.sort_by(
            |a, b| match (Version::parse(&a.version), Version::parse(&b.version)) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.version.cmp(&b.version),
            },
        );
        let document =
            (!list.is_empty() && head.state != PackageState::Removed).then(|| IndexDocument {
                name: head.name.clone(),
                serial: at.or(head.serial).unwrap_or_default(),
                state: head.state,
                obsolete: (head.state == PackageState::Obsolete).then(|| ObsoleteView {
                    reason: head.obsolete_reason.clone().unwrap_or_default(),
                    replacement: head.replacement.clone(),
                }),
                pins: pinned.remove(head.name.as_str()).unwrap_or_default(),
                versions: list,
            });
        if let Some(built) = by_name.get_mut(head.name.as_str()) {
            built.package_id = Some(head.package_id);
            built.document = document;
        }
    }
    Ok(by_name.into_values().collect())
}

/// Makes `repo` hold what `document` says of package `name` (`None`: the
/// package is gone): its releases, the pins on its requirements, its
/// obsolescence. How a process catches its model up from the changes log,
/// and how `holdq fetch` builds the repository it resolves in.
pub fn apply_document(
    repo: &mut StableRepo,
    name: &str,
    document: Option<&IndexDocument>,
) -> anyhow::Result<()> {
    let pname = PackageName::parse(name)?;
    let Some(document) = document else {
        repo.remove_package(&pname);
        return Ok(());
    };
    for v in &document.versions {
        let version = Version::parse(&v.version)?;
        if repo.universe().release(&pname, &version).is_some() {
            continue;
        }
        let dependencies = v
            .dependencies
            .iter()
            .map(|(d, q)| Ok((PackageName::parse(d)?, VersionReq::parse(q)?)))
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("the index entry of {name} {} is unreadable", v.version))?;
        repo.add_release(
            pname.clone(),
            Release {
                version,
                dependencies,
            },
        );
    }
    let mut pins = BTreeMap::new();
    for (dependency, pin) in &document.pins {
        let max = pin.rsplit("<=").next().unwrap_or_default().trim();
        pins.insert(PackageName::parse(dependency)?, Version::parse(max)?);
    }
    let required: BTreeSet<PackageName> = repo
        .universe()
        .releases(&pname)
        .iter()
        .flat_map(|r| r.dependencies.keys().cloned())
        .collect();
    for dependency in required.iter().filter(|d| !pins.contains_key(*d)) {
        repo.unpin(&pname, dependency);
    }
    for (dependency, max) in pins {
        repo.pin(pname.clone(), dependency, max);
    }
    match &document.obsolete {
        Some(o) => {
            let why = Obsolescence {
                reason: o.reason.clone(),
                replacement: o
                    .replacement
                    .as_deref()
                    .and_then(|r| PackageName::parse(r).ok()),
            };
            repo.set_obsolete(pname, why);
        }
        None => repo.clear_obsolete(&pname),
    }
    Ok(())
}

/// The bytes of a document as served and written: its ETag is their sha256.
pub fn to_bytes(document: &IndexDocument) -> Vec<u8> {
    serde_json::to_vec(document).expect("an index document serialises")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Records a stable change at `serial` inside its transaction: the new
/// documents of the packages it touched, and its row of the changes log.
/// A change that adds versions checks first that every archive its
/// documents name is on disk (a document never names a missing archive).
pub async fn record_change(
    app: &App,
    tx: &mut db::Tx,
    serial: i64,
    kind: ChangeKind,
    names: &[&str],
) -> anyhow::Result<()> {
    let mut names = names.to_vec();
    names.sort_unstable();
    names.dedup();
    let from = if kind.adds_versions() {
        VersionsFrom::Tables
    } else {
        VersionsFrom::StoredDocuments
    };
    let built = documents(tx, &names, Some(serial), from).await?;
    if kind.adds_versions() {
        // Only such a change can name an archive no document named before:
        // the thousands of dependents an obsolescence pins are not checked.
        let archives: Vec<String> = built
            .iter()
            .filter_map(|b| b.document.as_ref())
            .flat_map(|d| d.versions.iter().map(|v| v.archive.clone()))
            .collect();
        let store = app.stable.clone();
        blocking(move || {
            for rel in &archives {
                let path = store.root().join(rel);
                anyhow::ensure!(
                    path.is_file(),
                    "stable archive {} is missing; the change is not recorded",
                    path.display()
                );
            }
            Ok(())
        })
        .await?;
    }
    let touched = put(tx, &built, |_| serial).await?;
    db::changes::insert(tx, serial, kind.as_str(), &serde_json::to_string(&touched)?).await?;
    Ok(())
}

/// Stores the documents of `built` (each at the serial `serial_of` says)
/// and forgets those of the packages that have none any more; returns
/// each package with the sha256 of its new document.
async fn put(
    tx: &mut db::Tx,
    built: &[Built],
    serial_of: impl Fn(&IndexDocument) -> i64,
) -> anyhow::Result<Vec<Touched>> {
    let mut bodies = Vec::new();
    let mut gone = Vec::new();
    let mut touched = Vec::with_capacity(built.len());
    for b in built {
        let mut sha256 = None;
        match (&b.document, b.package_id) {
            (Some(document), Some(id)) => {
                let body = String::from_utf8(to_bytes(document)).expect("JSON is UTF-8");
                let sha = sha256_hex(body.as_bytes());
                sha256 = Some(sha.clone());
                bodies.push((id, serial_of(document), sha, body));
            }
            (None, Some(id)) => gone.push(id),
            (_, None) => {}
        }
        touched.push(Touched {
            name: b.name.clone(),
            sha256,
        });
    }
    let docs: Vec<db::stable::NewDocument> = bodies
        .iter()
        .map(|(id, serial, sha256, body)| db::stable::NewDocument {
            package_id: *id,
            serial: *serial,
            sha256,
            body,
        })
        .collect();
    db::stable::put_documents(tx, &docs).await?;
    db::stable::drop_documents(tx, &gone).await?;
    Ok(touched)
}

/// [`record_change`] for a promotion of one upload or of a group.
pub async fn record_promotion(
    app: &App,
    tx: &mut db::Tx,
    serial: i64,
    names: impl IntoIterator<Item = &str>,
) -> anyhow::Result<()> {
    let names: Vec<&str> = names.into_iter().collect();
    let kind = if names.len() > 1 {
        ChangeKind::GroupPromotion
    } else {
        ChangeKind::Promotion
    };
    record_change(app, tx, serial, kind, &names).await
}

/// Tells whoever waits for a change that the one at `serial` is committed
/// (its documents with it): this process's long-polls, the other servers'
/// and the configured mirrors.
pub async fn publish(app: &App, serial: i64) {
    super::changes::announce(app, serial).await;
    super::mirror::push(app, serial);
}

/// Documents written per transaction when filling in old ones.
const PAGE: i64 = 1000;

/// Fills in the documents that have no body yet, from the tables: those
/// of a data directory from before the documents moved into the database,
/// whose files under `stable/index/` are then deleted. Returns how many it
/// wrote; nothing to do costs one indexed query.
pub async fn write_unwritten(app: &App) -> anyhow::Result<usize> {
    let mut written = 0;
    loop {
        let mut tx = app.db.begin_write().await?;
        // The lock every stable change takes: no change commits a newer
        // document between these reads and the write.
        db::stable::lock_serial(&mut tx, app.db.for_update()).await?;
        let names = db::stable::unwritten_documents(&mut tx, PAGE).await?;
        if names.is_empty() {
            tx.commit().await?;
            break;
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let built = documents(&mut tx, &names, None, VersionsFrom::Tables).await?;
        put(&mut tx, &built, |d| d.serial).await?;
        tx.commit().await?;
        written += names.len();
    }
    let store = app.stable.clone();
    blocking(move || store.remove_legacy_index()).await?;
    if written > 0 {
        tracing::info!(
            documents = written,
            "stable index documents written into the database"
        );
    }
    Ok(written)
}

/// The packages the changes after `from` through `to` touched, or `None`
/// when the log does not hold them all (pruned, or older than the log).
pub async fn touched_between(
    conn: &mut Conn,
    from: i64,
    to: i64,
) -> anyhow::Result<Option<Vec<String>>> {
    let changes = db::changes::after(conn, from, to - from).await?;
    let contiguous =
        changes.len() as i64 == to - from && changes.first().is_some_and(|c| c.serial == from + 1);
    if !contiguous {
        return Ok(None);
    }
    let mut names = Vec::new();
    for change in changes {
        let touched: Vec<Touched> = serde_json::from_str(&change.packages)
            .with_context(|| format!("change {} is unreadable", change.serial))?;
        names.extend(touched.into_iter().map(|t| t.name));
    }
    names.sort_unstable();
    names.dedup();
    Ok(Some(names))
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .context("index writer panicked")?
}

/// The stored document of `name` (on a follower, its primary's copy) and
/// the stable serial, read from one snapshot: the document is at most as
/// new as the serial.
pub async fn stored(
    app: &App,
    name: &str,
) -> anyhow::Result<(i64, Option<db::stable::StoredDocument>)> {
    let mut snapshot = app.db.begin_read().await?;
    let serial = db::stable::serial(&mut snapshot).await?;
    let document = if super::mirror::primary_of(app).is_some() {
        db::mirror::document(&mut snapshot, name).await?
    } else {
        db::stable::document(&mut snapshot, name).await?
    };
    snapshot.commit().await?;
    Ok((serial, document))
}
