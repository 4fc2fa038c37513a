//! Package archives (SPEC section 2): reading one as a stream through gzip
//! and tar with every refusal rule, and making one from a directory.
//!
//! Inspection never writes an entry anywhere and never trusts a size in a
//! header: it counts the bytes it actually inflates.

use std::io::{self, Read};

use flate2::read::GzDecoder;

use crate::domain::manifest::MAX_MANIFEST_BYTES;
use crate::domain::{Manifest, ManifestError};

/// Limits an archive must stay within.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveLimits {
    /// Sum of the sizes of the entries' contents.
    pub unpacked_bytes: u64,
    pub entries: u64,
}

/// What inspection learned of a valid archive.
#[derive(Clone, Debug)]
pub struct ArchiveSummary {
    pub manifest: Manifest,
    pub entries: u64,
    pub unpacked_bytes: u64,
}

/// Why an archive was refused. Each names the problem and, where there is
/// one, the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the upload is not a gzip file (it does not start with the gzip magic bytes)")]
    NotGzip,
    #[error("the gzip stream is truncated: {0}")]
    Truncated(String),
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    #[error("the archive holds no package directory")]
    Empty,
    #[error("entry {0:?} has an absolute path")]
    AbsolutePath(String),
    #[error("entry {0:?} contains '..'")]
    ParentDir(String),
    #[error("entry {0:?} has a path that is not UTF-8")]
    NonUtf8Path(String),
    #[error("entry {path:?} lies outside the package directory {top:?}/")]
    OutsideTopDir { path: String, top: String },
    #[error("entry {path:?} is a link to {target:?}, outside the package")]
    LinkOutside { path: String, target: String },
    #[error("entry {path:?} is a {kind}; only files, directories and links are allowed")]
    SpecialFile { path: String, kind: &'static str },
    #[error("the unpacked archive exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the archive holds more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the archive has no manifest {0:?}")]
    MissingManifest(String),
    #[error("the archive holds {0:?} twice")]
    DuplicateManifest(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the package directory is {dir:?} but the manifest says {expected:?}")]
    DirMismatch { dir: String, expected: String },
    #[error("cannot read the archive: {0}")]
    Io(String),
}

impl ArchiveError {
    /// A stable, machine-readable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotGzip => "not_gzip",
            Self::Truncated(_) => "truncated_archive",
            Self::Corrupt(_) => "corrupt_archive",
            Self::Empty => "empty_archive",
            Self::AbsolutePath(_) | Self::ParentDir(_) | Self::NonUtf8Path(_) => "unsafe_path",
            Self::OutsideTopDir { .. } => "outside_package_dir",
            Self::LinkOutside { .. } => "link_outside_package",
            Self::SpecialFile { .. } => "special_file",
            Self::TooLarge { .. } => "unpacked_too_large",
            Self::TooManyEntries { .. } => "too_many_entries",
            Self::MissingManifest(_) => "missing_manifest",
            Self::DuplicateManifest(_) => "duplicate_manifest",
            Self::Manifest(_) => "invalid_manifest",
            Self::DirMismatch { .. } => "directory_mismatch",
            Self::Io(_) => "io_error",
        }
    }

    /// Whether the refusal is about size (HTTP 413) rather than content.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::TooManyEntries { .. })
    }
}

/// Reads a whole `.tar.gz` stream and checks it against every rule of SPEC
/// section 2. Reads `reader` to its end, so the gzip trailer is verified.
pub fn inspect(reader: impl Read, limits: ArchiveLimits) -> Result<ArchiveSummary, ArchiveError> {
    let mut reader = reader;
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut reader, &mut magic).map_err(|e| ArchiveError::Io(e.to_string()))?;
    if got < 2 || magic != [0x1f, 0x8b] {
        return Err(ArchiveError::NotGzip);
    }
    let gz = GzDecoder::new(io::Cursor::new(magic).chain(reader));
    // Headers and padding are bounded by the entry limit; anything inflating
    // past this is a bomb whatever its headers claim.
    let cap = limits
        .unpacked_bytes
        .saturating_add(limits.entries.saturating_mul(2048))
        .saturating_add(1 << 20);
    let mut inflated = Inflated {
        inner: gz,
        total: 0,
        cap,
        limit: limits.unpacked_bytes,
        failed: None,
    };
    let result = scan(&mut inflated, limits);
    let summary = result.map_err(|e| inflated.explain(e))?;
    // Past the end-of-archive marker: read to the gzip trailer so a
    // truncated or corrupt file is noticed, still under the cap.
    io::copy(&mut inflated, &mut io::sink())
        .map_err(|e| inflated.explain(ArchiveError::Io(e.to_string())))?;
    Ok(summary)
}

fn scan(
    reader: &mut Inflated<impl Read>,
    limits: ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    let mut archive = tar::Archive::new(reader);
    let mut top: Option<String> = None;
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut entries = 0u64;
    let mut unpacked = 0u64;

    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        entries += 1;
        if entries > limits.entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.entries,
            });
        }
        let raw_path = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw_path).map_err(|e| {
            ArchiveError::NonUtf8Path(String::from_utf8_lossy(e.as_bytes()).into_owned())
        })?;
        let parts = components(&path)?;
        let Some(first) = parts.first() else {
            return Err(ArchiveError::AbsolutePath(path));
        };
        match &top {
            None => top = Some(first.to_string()),
            Some(t) if t != first => {
                return Err(ArchiveError::OutsideTopDir {
                    path: path.clone(),
                    top: t.clone(),
                });
            }
            Some(_) => {}
        }
        let kind = entry.header().entry_type();
        check_entry_type(&entry, kind, path.clone(), &parts)?;

        let is_manifest = parts.len() == 2 && parts[1] == "package.toml";
        if is_manifest && kind == tar::EntryType::Regular {
            if manifest_bytes.is_some() {
                return Err(ArchiveError::DuplicateManifest(path));
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(tar_error)?;
            unpacked += bytes.len() as u64;
            manifest_bytes = Some(bytes);
        }
        // Count what is really there, never the header's claim.
        let remaining = limits.unpacked_bytes.saturating_sub(unpacked);
        let read =
            io::copy(&mut (&mut entry).take(remaining + 1), &mut io::sink()).map_err(tar_error)?;
        unpacked += read;
        if unpacked > limits.unpacked_bytes {
            return Err(ArchiveError::TooLarge {
                limit: limits.unpacked_bytes,
            });
        }
    }

    let top = top.ok_or(ArchiveError::Empty)?;
    let manifest_path = format!("{top}/package.toml");
    let bytes = manifest_bytes.ok_or(ArchiveError::MissingManifest(manifest_path))?;
    let manifest = Manifest::from_bytes(&bytes)?;
    if manifest.dir_name() != top {
        return Err(ArchiveError::DirMismatch {
            dir: top,
            expected: manifest.dir_name(),
        });
    }
    Ok(ArchiveSummary {
        manifest,
        entries,
        unpacked_bytes: unpacked,
    })
}

/// Refuses an entry of a type an archive may not hold (devices, fifos,
/// sparse files...), or a link that points outside the package.
fn check_entry_type<R: Read>(
    entry: &tar::Entry<'_, R>,
    kind: tar::EntryType,
    path: String,
    parts: &[&str],
) -> Result<(), ArchiveError> {
    use tar::EntryType as T;
    let first = parts[0];
    match kind {
        T::Regular | T::Directory => {}
        T::Symlink => {
            let target = link_target(entry)?;
            let mut base: Vec<&str> = parts[..parts.len() - 1].to_vec();
            if !stays_inside(&mut base, &target) {
                return Err(ArchiveError::LinkOutside { path, target });
            }
        }
        T::Link => {
            let target = link_target(entry)?;
            let mut base = Vec::new();
            if target.starts_with('/')
                || !stays_inside(&mut base, &target)
                || base.first().copied() != Some(first)
            {
                return Err(ArchiveError::LinkOutside { path, target });
            }
        }
        T::Char => {
            return Err(ArchiveError::SpecialFile {
                path,
                kind: "character device",
            });
        }
        T::Block => {
            return Err(ArchiveError::SpecialFile {
                path,
                kind: "block device",
            });
        }
        T::Fifo => return Err(ArchiveError::SpecialFile { path, kind: "fifo" }),
        T::GNUSparse => {
            return Err(ArchiveError::SpecialFile {
                path,
                kind: "sparse file",
            });
        }
        _ => {
            return Err(ArchiveError::SpecialFile {
                path,
                kind: "entry of an unsupported type",
            });
        }
    }
    Ok(())
}

/// The normal components of an entry path; refuses absolute paths and `..`.
fn components(path: &str) -> Result<Vec<&str>, ArchiveError> {
    if path.starts_with('/') || path.starts_with('\\') || path.contains(":\\") {
        return Err(ArchiveError::AbsolutePath(path.to_owned()));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ArchiveError::ParentDir(path.to_owned())),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArchiveError> {
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| ArchiveError::Corrupt("a link entry has no target".into()))?;
    String::from_utf8(target.into_owned())
        .map_err(|e| ArchiveError::NonUtf8Path(String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Walks `target` from `base` (the link's directory); true when it never
/// climbs above the package directory (`base[0]`).
fn stays_inside<'a>(base: &mut Vec<&'a str>, target: &'a str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let floor = usize::from(!base.is_empty());
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if base.len() <= floor {
                    return false;
                }
                base.pop();
            }
            p => base.push(p),
        }
    }
    true
}

fn tar_error(e: io::Error) -> ArchiveError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Truncated(e.to_string())
    } else {
        ArchiveError::Corrupt(e.to_string())
    }
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The inflated stream: counts every byte, stops at the cap, and remembers
/// whether a failure came from gzip (so it is not blamed on tar).
struct Inflated<R> {
    inner: GzDecoder<R>,
    total: u64,
    cap: u64,
    limit: u64,
    failed: Option<ArchiveError>,
}

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.total += n as u64;
                if self.total > self.cap {
                    self.failed = Some(ArchiveError::TooLarge { limit: self.limit });
                    return Err(io::Error::other("inflated size over the cap"));
                }
                Ok(n)
            }
            Err(e) => {
                self.failed = Some(if e.kind() == io::ErrorKind::UnexpectedEof {
                    ArchiveError::Truncated(e.to_string())
                } else {
                    ArchiveError::Corrupt(format!("bad gzip data: {e}"))
                });
                Err(e)
            }
        }
    }
}

impl<R> Inflated<R> {
    /// The gzip layer's own failure (or the cap) wins over what tar made of it.
    fn explain(&mut self, e: ArchiveError) -> ArchiveError {
        self.failed.take().unwrap_or(e)
    }
}
