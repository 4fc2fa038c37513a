//! Unpacking an archive that inspection already accepted, for a check.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::read::GzDecoder;

/// Unpacks `archive` into `dest` and returns the package directory
/// (`dest/NAME-VERSION`). `tar` refuses to write outside `dest` on its own;
/// inspection has already refused links that point outside.
pub fn unpack(archive: &Path, dest: &Path, top: &str) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let file =
        fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    tar.unpack(dest)
        .with_context(|| format!("cannot unpack {}", archive.display()))?;
    Ok(dest.join(top))
}

/// Size in bytes and sorted list of the files under `dir` (build metadata).
pub fn file_list(dir: &Path) -> anyhow::Result<(u64, Vec<String>)> {
    let mut total = 0;
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                total += entry.metadata()?.len();
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap_or(&entry.path())
                    .to_string_lossy()
                    .into_owned();
                files.push(rel);
            }
        }
    }
    files.sort();
    Ok((total, files))
}
