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

/// Documents written (and files held open) per batch of a write.
const DOCUMENTS_OPEN_AT_ONCE: usize = 256;
/// Threads syncing a batch: the filesystem commits their syncs together.
const SYNC_THREADS: usize = 8;

/// Syncs every staged document, on a few threads when there are many.
fn sync_all(staged: &[(&String, tempfile::NamedTempFile)]) -> anyhow::Result<()> {
    let per = staged.len().div_ceil(SYNC_THREADS).max(8);
    std::thread::scope(|scope| {
        let parts: Vec<_> = staged
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    for (name, tmp) in part {
                        tmp.as_file()
                            .sync_all()
                            .with_context(|| format!("cannot sync the index document of {name}"))?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        parts
            .into_iter()
            .try_for_each(|p| p.join().expect("a sync thread panicked"))
    })
}

#[derive(Clone, Debug)]
pub struct StableStore {
    root: PathBuf,
}

impl StableStore {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let root = data_dir.join("stable");
        fs::create_dir_all(root.join("archives"))
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Self { root })
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
    /// more). Each document is written beside its old one, synced and
    /// renamed over it, so a reader or a crash sees each whole, old or new.
    /// Batched: write a chunk, sync it, rename it (calling `renamed` after
    /// each rename); one directory sync for all.
    pub fn write_documents(
        &self,
        docs: &[(String, Option<Vec<u8>>)],
        renamed: &dyn Fn(),
    ) -> anyhow::Result<()> {
        let dir = self.index_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for chunk in docs.chunks(DOCUMENTS_OPEN_AT_ONCE) {
            let mut staged = Vec::with_capacity(chunk.len());
            for (name, bytes) in chunk {
                if let Some(bytes) = bytes {
                    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)?;
                    tmp.write_all(bytes)
                        .with_context(|| format!("cannot write the index document of {name}"))?;
                    staged.push((name, tmp));
                }
            }
            sync_all(&staged)?;
            for (name, tmp) in staged {
                tmp.persist(self.document_path(name))
                    .map_err(|e| e.error)
                    .with_context(|| format!("cannot replace the index document of {name}"))?;
                renamed();
            }
            for (name, _) in chunk.iter().filter(|(_, b)| b.is_none()) {
                match fs::remove_file(self.document_path(name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("cannot remove the index document of {name}")
                        });
                    }
                }
            }
        }
        sync_dir(&dir)
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

    /// Deletes what a crash in the middle of [`Self::write_documents`] left
    /// (temporary files), and the whole-file index of older releases.
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
