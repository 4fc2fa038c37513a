//! `holdq pack`: a valid archive from a directory holding `package.toml`,
//! checked afterwards exactly as the server checks an upload.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::archive::{self, ArchiveLimits, ArchiveSummary};
use crate::domain::Manifest;

/// Directories never packed: version-control metadata.
const SKIPPED: &[&str] = &[".git", ".hg", ".svn"];

/// Packs `dir` into `out` (default `./NAME-VERSION.tar.gz`) and inspects the
/// result; a refused archive is deleted and the refusal returned.
pub fn pack(
    dir: &Path,
    out: Option<&Path>,
    limits: ArchiveLimits,
) -> anyhow::Result<(PathBuf, ArchiveSummary)> {
    let manifest_path = dir.join("package.toml");
    let bytes = fs::read(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = Manifest::from_bytes(&bytes)?;
    let top = manifest.dir_name();
    let out = match out {
        Some(out) if out.is_dir() => out.join(format!("{top}.tar.gz")),
        Some(out) => out.to_owned(),
        None => PathBuf::from(format!("{top}.tar.gz")),
    };
    let out_abs = std::path::absolute(&out).unwrap_or_else(|_| out.clone());

    let file = tempfile::NamedTempFile::new_in(out_abs.parent().unwrap_or(Path::new(".")))
        .context("cannot create the output file")?;
    {
        let gz = GzEncoder::new(BufWriter::new(file.as_file()), Compression::default());
        let mut builder = tar::Builder::new(gz);
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        builder
            .append_dir(&top, dir)
            .with_context(|| format!("cannot add {}", dir.display()))?;
        append_tree(&mut builder, dir, Path::new(&top), &out_abs)?;
        let gz = builder
            .into_inner()
            .context("cannot finish the tar stream")?;
        gz.finish()
            .and_then(|mut w| w.flush())
            .context("cannot finish the gzip stream")?;
    }
    let summary = archive::inspect(io::BufReader::new(file.reopen()?), limits)
        .with_context(|| format!("the archive made from {} would be refused", dir.display()))?;
    file.persist(&out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok((out, summary))
}

/// Adds the entries under `dir` in name order, so the same tree always
/// packs to the same bytes.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    skip: &Path,
) -> anyhow::Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let name = child.file_name();
        if SKIPPED.iter().any(|s| name == *s) || std::path::absolute(&path).is_ok_and(|p| p == skip)
        {
            continue;
        }
        let inner = prefix.join(&name);
        let kind = child.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&inner, &path)?;
            append_tree(builder, &path, &inner, skip)?;
        } else {
            builder
                .append_path_with_name(&path, &inner)
                .with_context(|| format!("cannot add {}", path.display()))?;
        }
    }
    Ok(())
}
