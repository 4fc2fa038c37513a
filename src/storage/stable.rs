//! The stable repository on disk: one archive per version under
//! `stable/archives/NAME/`, and `stable/index.json`, replaced whole by a
//! rename so readers see the old index or the new one, never a mixture.
//! Archives are made durable before any index that names them.

use std::fs;
use std::io::Write;
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

    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
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

    /// Deletes every archive of a removed package (after an index without
    /// it is published).
    pub fn remove_package_archives(&self, name: &str) -> anyhow::Result<()> {
        let dir = self.root.join("archives").join(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.root.join("archives")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }

    /// The serial of the index on disk (0 when there is none yet).
    pub fn index_serial(&self) -> anyhow::Result<i64> {
        #[derive(serde::Deserialize)]
        struct Head {
            serial: i64,
        }
        match fs::read(self.index_path()) {
            Ok(bytes) => Ok(serde_json::from_slice::<Head>(&bytes)
                .context("stable/index.json is corrupt")?
                .serial),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).context("cannot read stable/index.json"),
        }
    }

    /// Writes `bytes` beside the index, syncs it, renames it over the index
    /// and syncs the directory: the one step that publishes a new stable
    /// repository.
    pub fn replace_index(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.index_path())
            .map_err(|e| e.error)
            .context("cannot replace stable/index.json")?;
        sync_dir(&self.root)
    }
}
