//! The stable index as consumers read it (SPEC section 10): one document
//! per package, built from that package's rows only, so a change costs
//! what it touches and not the size of the repository.
//!
//! Each stable change records, in its own transaction, the serial its
//! documents changed at (`index_documents`) and a row of the changes log
//! with their hashes ([`record_change`]); after the commit the documents are
//! written to disk ([`publish`]), which also repairs, at start-up, what a
//! crash between the commit and the files left behind. Readers that need
//! one consistent view read it from one database snapshot ([`stream`]).

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

/// The documents a committed change wrote, to be put on disk.
#[derive(Debug)]
pub struct Pending {
    serial: i64,
    files: Vec<DocumentFile>,
}

/// A document to write (`bytes: None`: to delete), with the archives it
/// names, which must be on disk first.
#[derive(Debug)]
struct DocumentFile {
    name: String,
    bytes: Option<Vec<u8>>,
    archives: Vec<String>,
}

impl From<Built> for DocumentFile {
    fn from(b: Built) -> Self {
        let archives = b
            .document
            .iter()
            .flat_map(|d| d.versions.iter().map(|v| v.archive.clone()))
            .collect();
        Self {
            bytes: b.document.as_ref().map(to_bytes),
            name: b.name,
            archives,
        }
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

/// The documents of `names` as the database holds them: each at the serial
/// it last changed at, or at `at` (a change being recorded).
pub async fn documents(
    conn: &mut Conn,
    names: &[&str],
    at: Option<i64>,
) -> anyhow::Result<Vec<Built>> {
    let heads = db::stable::document_heads(conn, names).await?;
    let lists = db::stable::version_lists(conn, names).await?;
    let pins = db::pins::of_dependents(conn, names).await?;
    let mut versions: BTreeMap<String, Vec<IndexVersion>> = BTreeMap::new();
    for (name, list) in lists {
        let listed: Vec<db::stable::ListedVersion> = serde_json::from_str(&list)
            .with_context(|| format!("the stable versions of {name} are unreadable"))?;
        let list = listed.into_iter().map(|v| version_of(&name, v)).collect();
        versions.insert(name, list);
    }
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
/// Returns the documents to [`publish`] after the commit.
pub async fn record_change(
    tx: &mut db::Tx,
    serial: i64,
    kind: ChangeKind,
    names: &[&str],
) -> anyhow::Result<Pending> {
    let mut names = names.to_vec();
    names.sort_unstable();
    names.dedup();
    let built = documents(tx, &names, Some(serial)).await?;
    let (kept, gone): (Vec<&Built>, Vec<&Built>) = built.iter().partition(|b| b.document.is_some());
    let ids = |list: &[&Built]| -> Vec<i64> { list.iter().filter_map(|b| b.package_id).collect() };
    db::stable::set_documents(tx, serial, &ids(&kept)).await?;
    db::stable::drop_documents(tx, &ids(&gone)).await?;
    let mut files: Vec<DocumentFile> = built.into_iter().map(DocumentFile::from).collect();
    if !kind.adds_versions() {
        // Its documents name only archives that earlier documents named:
        // thousands of pinned dependents are not checked again.
        files.iter_mut().for_each(|f| f.archives.clear());
    }
    let touched: Vec<Touched> = files
        .iter()
        .map(|f| Touched {
            name: f.name.clone(),
            sha256: f.bytes.as_deref().map(sha256_hex),
        })
        .collect();
    db::changes::insert(tx, serial, kind.as_str(), &serde_json::to_string(&touched)?).await?;
    Ok(Pending { serial, files })
}

/// [`record_change`] for a promotion of one upload or of a group.
pub async fn record_promotion(
    tx: &mut db::Tx,
    serial: i64,
    names: impl IntoIterator<Item = &str>,
) -> anyhow::Result<Pending> {
    let names: Vec<&str> = names.into_iter().collect();
    let kind = if names.len() > 1 {
        ChangeKind::GroupPromotion
    } else {
        ChangeKind::Promotion
    };
    record_change(tx, serial, kind, &names).await
}

/// Makes the documents on disk match the database: those of `pending`
/// when it is the one change the disk lacks (the common case, right after
/// its commit), else those of every change since the serial on disk, or
/// all of them when the log no longer reaches that far (first start).
/// Then wakes whoever waits for a change. Returns the serial on disk.
pub async fn publish(app: &App, pending: Option<Pending>) -> anyhow::Result<i64> {
    let published = {
        let _one_writer = app.index_lock.lock().await;
        // Several servers may share one database and one stable directory:
        // on PostgreSQL one index writer at a time across all of them.
        let cross_server = match app.db.backend() {
            db::Backend::Postgres => {
                let mut lock = app.db.pool().begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7263001)")
                    .execute(&mut *lock)
                    .await?;
                Some(lock)
            }
            db::Backend::Sqlite => None,
        };
        let published = publish_locked(app, pending).await;
        if let Some(lock) = cross_server {
            lock.commit().await?;
        }
        published?
    };
    super::changes::announce(app, published).await;
    super::mirror::push(app, published);
    Ok(published)
}

/// Pages of documents read and written at once by a repair.
const PAGE: usize = 1000;

async fn publish_locked(app: &App, pending: Option<Pending>) -> anyhow::Result<i64> {
    let store = app.stable.clone();
    let on_disk = blocking(move || {
        store.sweep_index_once()?;
        store.published_serial()
    })
    .await?;
    if let Some(p) = pending
        && p.serial == on_disk + 1
    {
        write(app, p.serial, p.files, true).await?;
        return Ok(p.serial);
    }
    let mut tx = app.db.begin_read().await?;
    let serial = db::stable::serial(&mut tx).await?;
    if on_disk >= serial {
        return Ok(on_disk);
    }
    let names = match touched_between(&mut tx, on_disk, serial).await? {
        Some(names) => names,
        None => every_document(app, &mut tx).await?,
    };
    let store = app.stable.clone();
    blocking(move || store.sweep_index()).await?;
    for page in names.chunks(PAGE) {
        let page: Vec<&str> = page.iter().map(String::as_str).collect();
        let built = documents(&mut tx, &page, None).await?;
        let files = built.into_iter().map(DocumentFile::from).collect();
        write(app, serial, files, false).await?;
    }
    tx.commit().await?;
    let store = app.stable.clone();
    blocking(move || store.set_published_serial(serial)).await?;
    tracing::info!(
        stable.serial = serial,
        stable.from = on_disk,
        documents = names.len(),
        "stable index repaired"
    );
    Ok(serial)
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

/// Every package with a document in the database or on disk.
async fn every_document(app: &App, conn: &mut Conn) -> anyhow::Result<Vec<String>> {
    let store = app.stable.clone();
    let mut names = blocking(move || store.documented()).await?;
    let mut after = String::new();
    loop {
        let page = db::stable::documented_after(conn, &after, PAGE as i64).await?;
        let Some(last) = page.last() else { break };
        after = last.clone();
        names.extend(page);
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// What `StableStore::write_documents` calls after each rename: the
/// failpoint `index-after-first-document` when a change writes several
/// (the crash tests abort there, leaving some documents new, some old).
pub fn after_each_document(documents: usize) -> impl Fn() {
    move || {
        if documents > 1 {
            super::verdict::failpoint("index-after-first-document");
        }
    }
}

/// Writes documents, after checking that every archive they name is there
/// (a document never names a missing archive); `last` sets the serial on
/// disk afterwards.
async fn write(app: &App, serial: i64, files: Vec<DocumentFile>, last: bool) -> anyhow::Result<()> {
    let store = app.stable.clone();
    blocking(move || {
        for file in &files {
            for rel in &file.archives {
                let path = store.root().join(rel);
                anyhow::ensure!(
                    path.is_file(),
                    "stable archive {} is missing; index not published",
                    path.display()
                );
            }
        }
        let docs: Vec<(String, Option<Vec<u8>>)> =
            files.into_iter().map(|f| (f.name, f.bytes)).collect();
        store
            .write_documents(&docs, &after_each_document(docs.len()))?
            .discard_soon();
        if last {
            store.set_published_serial(serial)?;
            tracing::info!(
                stable.serial = serial,
                documents = docs.len(),
                "stable index published"
            );
        }
        Ok(())
    })
    .await
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .context("index writer panicked")?
}
