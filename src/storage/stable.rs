//! The stable repository on disk: one archive per version under
//! `stable/archives/NAME/`, one index document per package under
//! `stable/index/NAME.json`, each replaced whole by a rename so a reader
//! sees the old document or the new one, and `stable/index-serial`, the
//! serial through which the documents are written. Archives are made
//! durable before any document that names them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::sync_dir;

/// Documents a write syncs one by one; a larger write (an obsolescence
/// pins thousands of dependents) writes them all and syncs the filesystem
/// once, then renames them all: one journal commit instead of one a file.
const SYNCED_ONE_BY_ONE: usize = 32;

/// Makes every staged document durable before any is renamed.
fn sync_staged(dir: &Path, staged: &[(&String, tempfile::TempPath)]) -> anyhow::Result<()> {
    if staged.len() > SYNCED_ONE_BY_ONE {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let handle =
                fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
            return nix::unistd::syncfs(handle.as_raw_fd())
                .with_context(|| format!("cannot sync the filesystem of {}", dir.display()));
        }
    }
    for (name, path) in staged {
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync the index document of {name}"))?;
    }
    Ok(())
}

/// Puts the file at `new` in the place of `dest` atomically. Where the
/// filesystem can, the two are exchanged and the old document is left at
/// `new` (returns true): freeing a file costs ext4 more than writing one
/// (about 0.1 ms here), which an obsolescence swapping thousands must not
/// wait for. Else, or when `dest` does not exist, a plain rename (false).
fn swap(new: &Path, dest: &Path) -> std::io::Result<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{RenameFlags, renameat2};
        match renameat2(None, new, None, dest, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => return Ok(true),
            // No old document, or a filesystem that cannot exchange.
            Err(Errno::ENOENT | Errno::EINVAL | Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::rename(new, dest).map(|()| false)
}

/// Old documents a write swapped out, under temporary names (which the
/// first publish of the next process sweeps, should a crash leave any).
#[must_use = "the old documents stay on disk until discarded"]
#[derive(Debug)]
pub struct Replaced(Vec<PathBuf>);

impl Replaced {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Deletes them.
    pub fn discard(self) {
        for path in self.0 {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "an old index document was not deleted");
            }
        }
    }

    /// Deletes them now when they are few, else on a thread of their own,
    /// so that nobody waits for it.
    pub fn discard_soon(self) {
        if self.len() <= SYNCED_ONE_BY_ONE {
            return self.discard();
        }
        let spawned = std::thread::Builder::new()
            .name("holdq-index-discard".into())
            .spawn(move || self.discard());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "old index documents left for the next repair");
        }
    }
}

#[derive(Clone, Debug)]
pub struct StableStore {
    root: PathBuf,
    /// Whether this process swept the index directory yet.
    swept: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StableStore {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let root = data_dir.join("stable");
        fs::create_dir_all(root.join("archives"))
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Self {
            root,
            swept: Default::default(),
        })
    }

    /// The store's directory: what [`Self::archive_rel`] paths are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a stable version's archive lives, relative to the store.
    pub fn archive_rel(name: &str, version: &str) -> String {
        format!("archives/{name}/{name}-{version}.tar.gz")
    }

    pub fn archive_path(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(Self::archive_rel(name, version))
    }

    /// Puts the blob at `blob` into the store as `name` `version`, durably.
    /// Idempotent: an archive already there is kept.
    pub fn store_archive(&self, blob: &Path, name: &str, version: &str) -> anyhow::Result<PathBuf> {
        let dest = self.archive_path(name, version);
        if dest.is_file() {
            return Ok(dest);
        }
        let dir = dest.parent().expect("archives have a directory");
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        {
            let mut src =
                fs::File::open(blob).with_context(|| format!("cannot read {}", blob.display()))?;
            let mut out = tmp.as_file();
            std::io::copy(&mut src, &mut out).context("cannot copy the archive into stable")?;
            out.sync_all()?;
        }
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .context("cannot place the archive in stable")?;
        sync_dir(dir)?;
        sync_dir(&self.root.join("archives"))?;
        Ok(dest)
    }

    /// Deletes every archive of a removed package (after its document is
    /// gone).
    pub fn remove_package_archives(&self, name: &str) -> anyhow::Result<()> {
        let dir = self.root.join("archives").join(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.root.join("archives")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }

    /// Deletes the archives of `name` whose version is not in `kept` (a
    /// follower's, once no document names them); returns their versions.
    pub fn remove_archives_except(
        &self,
        name: &str,
        kept: &std::collections::BTreeSet<String>,
    ) -> anyhow::Result<Vec<String>> {
        let dir = self.root.join("archives").join(name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let prefix = format!("{name}-");
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name();
            // Anything else there (a copy being placed) is not an archive.
            let Some(version) = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|f| f.strip_suffix(".tar.gz"))
            else {
                continue;
            };
            if !kept.contains(version) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                removed.push(version.to_owned());
            }
        }
        if !removed.is_empty() {
            sync_dir(&dir)?;
        }
        removed.sort();
        Ok(removed)
    }

    /// Where the per-package index documents live.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// The index document of a package.
    pub fn document_path(&self, name: &str) -> PathBuf {
        self.index_dir().join(format!("{name}.json"))
    }

    fn published_path(&self) -> PathBuf {
        self.root.join("index-serial")
    }

    /// The serial through which every document on disk is written (0 when
    /// none is yet).
    pub fn published_serial(&self) -> anyhow::Result<i64> {
        match fs::read_to_string(self.published_path()) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{} is corrupt", self.published_path().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).context("cannot read stable/index-serial"),
        }
    }

    /// Replaces the documents of `docs` (`None`: the package has none any
    /// more). Each document is written beside its old one and put in its
    /// place once every new one is durable, so a reader or a crash sees
    /// each whole, old or new. Batched: write all, sync all, swap all
    /// (calling `renamed` after each), one directory sync. Returns the old
    /// documents swapped out, for the caller to [`Replaced::discard`].
    pub fn write_documents(
        &self,
        docs: &[(String, Option<Vec<u8>>)],
        renamed: &dyn Fn(),
    ) -> anyhow::Result<Replaced> {
        let dir = self.index_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut staged = Vec::with_capacity(docs.len());
        for (name, bytes) in docs {
            if let Some(bytes) = bytes {
                let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)?;
                tmp.write_all(bytes)
                    .with_context(|| format!("cannot write the index document of {name}"))?;
                // Closed now: thousands of documents are never open at once.
                staged.push((name, tmp.into_temp_path()));
            }
        }
        sync_staged(&dir, &staged)?;
        let mut replaced = Replaced(Vec::new());
        for (name, path) in staged {
            let path = path
                .keep()
                .with_context(|| format!("cannot keep the index document of {name}"))?;
            if swap(&path, &self.document_path(name))
                .with_context(|| format!("cannot replace the index document of {name}"))?
            {
                replaced.0.push(path);
            }
            renamed();
        }
        for (name, _) in docs.iter().filter(|(_, b)| b.is_none()) {
            match fs::remove_file(self.document_path(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot remove the index document of {name}"));
                }
            }
        }
        sync_dir(&dir)?;
        Ok(replaced)
    }

    /// Records that every document on disk is at `serial` or later: after
    /// the documents of every change through `serial` are written.
    pub fn set_published_serial(&self, serial: i64) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root)?;
        tmp.write_all(serial.to_string().as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.published_path())
            .map_err(|e| e.error)
            .context("cannot replace stable/index-serial")?;
        sync_dir(&self.root)
    }

    /// The names of the packages with a document on disk.
    pub fn documented(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.index_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let file = entry?.file_name();
            let file = file.to_string_lossy();
            if let Some(name) = file.strip_suffix(".json").filter(|n| !n.starts_with('.')) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// [`Self::sweep_index`] the first time a process calls it (by the one
    /// index writer: nothing is being written then), so what a crash left
    /// does not stay.
    pub fn sweep_index_once(&self) -> anyhow::Result<()> {
        if self.swept.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.sweep_index()
    }

    /// Deletes what a crash in the middle of [`Self::write_documents`] left
    /// (temporary files, old documents not yet discarded), and the
    /// whole-file index of older releases.
    pub fn sweep_index(&self) -> anyhow::Result<()> {
        if let Ok(entries) = fs::read_dir(self.index_dir()) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        match fs::remove_file(self.root.join("index.json")) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("cannot remove the old stable/index.json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the index directory holds: name -> bytes, temporary files too.
    fn index_files(store: &StableStore) -> std::collections::BTreeMap<String, Vec<u8>> {
        fs::read_dir(store.index_dir())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, fs::read(e.path()).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_large_write_replaces_every_document_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StableStore::open(dir.path()).unwrap();
        // Past the one-by-one threshold, and more than a process may
        // usually hold open (1,024): the batched path, files closed early.
        let n = 1_500;
        let first: Vec<(String, Option<Vec<u8>>)> = (0..n)
            .map(|i| (format!("p{i}"), Some(format!("old {i}").into_bytes())))
            .collect();
        let replaced = store.write_documents(&first, &|| {}).unwrap();
        assert!(replaced.is_empty(), "nothing was there to replace");
        let renames = std::cell::Cell::new(0);
        let second: Vec<(String, Option<Vec<u8>>)> = (0..n)
            .map(|i| {
                let bytes = (i % 3 != 0).then(|| format!("new {i}").into_bytes());
                (format!("p{i}"), bytes)
            })
            .collect();
        let replaced = store
            .write_documents(&second, &|| renames.set(renames.get() + 1))
            .unwrap();
        // The old versions of the documents kept, swapped out.
        let kept = second.iter().filter(|(_, b)| b.is_some()).count();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert_eq!(replaced.len(), kept);
        replaced.discard();
        let expected: std::collections::BTreeMap<String, Vec<u8>> = second
            .iter()
            .filter_map(|(name, b)| Some((format!("{name}.json"), b.clone()?)))
            .collect();
        assert_eq!(index_files(&store), expected);
        assert_eq!(renames.get(), expected.len());
    }

    #[test]
    fn only_the_archives_of_versions_not_kept_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = StableStore::open(dir.path()).unwrap();
        let blob = dir.path().join("blob");
        fs::write(&blob, b"archive").unwrap();
        for version in ["1.0.0", "1.1.0", "2.0.0"] {
            store.store_archive(&blob, "a-b", version).unwrap();
        }
        // Not an archive of a version: left alone.
        let other = store.root().join("archives/a-b/.tmp-copy");
        fs::write(&other, b"being placed").unwrap();
        let kept = ["1.1.0".to_owned()].into_iter().collect();
        let removed = store.remove_archives_except("a-b", &kept).unwrap();
        assert_eq!(removed, ["1.0.0", "2.0.0"]);
        assert!(store.archive_path("a-b", "1.1.0").is_file());
        assert!(!store.archive_path("a-b", "1.0.0").exists());
        assert!(other.is_file());
        assert!(
            store
                .remove_archives_except("missing", &kept)
                .unwrap()
                .is_empty()
        );
    }
}
