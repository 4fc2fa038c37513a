//! The stable repository's archives on disk: one per version under
//! `stable/archives/NAME/`, made durable before the transaction that
//! records the version (and the index document naming it) commits. The
//! index documents themselves are in the database (`service::index`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::sync_dir;

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

    /// The packages with an archive directory.
    pub fn archived_packages(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.root.join("archives");
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes the index files of older releases, whose documents are now
    /// in the database: the per-package `stable/index/`, its serial, and
    /// the whole-file `stable/index.json` before them.
    pub fn remove_legacy_index(&self) -> anyhow::Result<()> {
        let mut removed = false;
        match fs::remove_dir_all(self.root.join("index")) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot remove the old stable/index/"),
        }
        for file in ["index-serial", "index.json"] {
            match fs::remove_file(self.root.join(file)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove the old stable/{file}"));
                }
            }
        }
        if removed {
            sync_dir(&self.root)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_files_of_older_releases_are_removed_and_archives_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StableStore::open(dir.path()).unwrap();
        let blob = dir.path().join("blob");
        fs::write(&blob, b"archive").unwrap();
        store.store_archive(&blob, "a", "1.0.0").unwrap();
        fs::create_dir_all(store.root().join("index")).unwrap();
        fs::write(store.root().join("index/a.json"), b"{}").unwrap();
        fs::write(store.root().join("index-serial"), b"3").unwrap();
        fs::write(store.root().join("index.json"), b"{}").unwrap();
        store.remove_legacy_index().unwrap();
        let left: Vec<String> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["archives"]);
        assert!(store.archive_path("a", "1.0.0").is_file());
        assert_eq!(store.archived_packages().unwrap(), ["a"]);
        store.remove_legacy_index().unwrap();
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
