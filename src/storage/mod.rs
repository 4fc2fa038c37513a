//! Files on disk under the data directory: uploads as they arrive
//! (`incoming/`) and the archives kept for the holding queue, addressed by
//! their sha256 (`blobs/sha256/`).

pub mod archive;
pub mod fetch;
pub mod follow;
pub mod pack;
pub mod receive;
pub mod space;
pub mod stable;
pub mod unpack;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The data directory's file stores.
#[derive(Clone, Debug)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Opens (creating when missing) the stores under `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let storage = Self {
            root: data_dir.to_owned(),
        };
        for dir in [
            storage.incoming_dir(),
            storage.blob_dir(),
            storage.tus_dir(),
        ] {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(storage)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where uploads are written while they arrive; same filesystem as the
    /// blobs so that keeping one is a rename.
    pub fn incoming_dir(&self) -> PathBuf {
        self.root.join("incoming")
    }

    /// The temporary space of unfinished resumable uploads, one directory
    /// per user (`tus/<user id>/<upload id>`); same filesystem as `incoming/`.
    pub fn tus_dir(&self) -> PathBuf {
        self.root.join("tus")
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The path of the archive with this sha256 (lowercase hex).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blob_dir().join(format!("{sha256}.tar.gz"))
    }

    /// Moves a fully written, already synced file into the blob store under
    /// its hash and makes the rename durable. Idempotent: the same bytes
    /// kept twice are one blob.
    pub fn keep_blob(&self, staged: &Path, sha256: &str) -> anyhow::Result<PathBuf> {
        let dest = self.blob_path(sha256);
        fs::rename(staged, &dest)
            .with_context(|| format!("cannot move the upload into {}", dest.display()))?;
        sync_dir(&self.blob_dir())?;
        Ok(dest)
    }

    /// Free space of the data directory's filesystem against `reserve`.
    pub fn space(&self, reserve: u64) -> std::io::Result<space::Space> {
        space::Space::of(&self.root, reserve)
    }

    /// How many blobs are stored (tests: a refusal stores nothing).
    pub fn count_blobs(&self) -> anyhow::Result<usize> {
        Ok(fs::read_dir(self.blob_dir())?.count())
    }

    /// How many files are sitting in `incoming/` (tests: nothing is left).
    pub fn count_incoming(&self) -> anyhow::Result<usize> {
        Ok(fs::read_dir(self.incoming_dir())?.count())
    }
}

/// Makes a directory's entries (a rename into it) durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}
