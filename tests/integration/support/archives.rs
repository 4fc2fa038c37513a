//! Archives made by tests: valid packages, and hand-built malformed ones
//! whose headers the `tar` crate would refuse to write (`..`, absolute
//! paths), written byte by byte.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// A valid manifest for `name` `version` with `deps` (name, requirement).
pub fn manifest(name: &str, version: &str, deps: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\nmaintainers = [\"Ada <ada@example.org>\"]\n\
         description = \"A test package\"\nlicense = \"MIT\"\n\n[dependencies]\n"
    );
    for (dep, req) in deps {
        text.push_str(&format!("{dep} = \"{req}\"\n"));
    }
    text.push_str("\n[build]\ncommand = \"sh build.sh\"\n");
    text
}

/// A package whose build (and optional test) run `build` (and `test`).
pub fn package_building(
    name: &str,
    version: &str,
    deps: &[(&str, &str)],
    build: &str,
    test: Option<&str>,
) -> Vec<u8> {
    let mut text = manifest(name, version, deps).replace(
        "command = \"sh build.sh\"",
        &format!("command = {}", toml_string(build)),
    );
    if let Some(test) = test {
        text.push_str(&format!("test = {}\n", toml_string(test)));
    }
    package_with_manifest(&format!("{name}-{version}"), &text)
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A valid package archive.
pub fn package(name: &str, version: &str) -> Vec<u8> {
    package_with_manifest(&format!("{name}-{version}"), &manifest(name, version, &[]))
}

/// An archive with the given top directory and manifest text.
pub fn package_with_manifest(top: &str, manifest: &str) -> Vec<u8> {
    Tar::new()
        .dir(top)
        .file(&format!("{top}/package.toml"), manifest.as_bytes())
        .file(&format!("{top}/build.sh"), b"echo built\n")
        .gz()
}

/// A tar stream built entry by entry, with paths written raw.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(mut self, path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Self {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        write_field(&mut header.as_old_mut().name, path);
        if let Some(target) = link {
            write_field(&mut header.as_old_mut().linkname, target);
        }
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(path, tar::EntryType::Directory, None, &[])
    }

    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, tar::EntryType::Regular, None, data)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path, tar::EntryType::Symlink, Some(target), &[])
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(path, tar::EntryType::Link, Some(target), &[])
    }

    /// A device, fifo or other entry of `kind` with no data.
    pub fn special(self, path: &str, kind: tar::EntryType) -> Self {
        self.entry(path, kind, None, &[])
    }

    /// A header that claims `size` bytes of data, followed by that many
    /// zero bytes streamed into the gzip encoder (a gzip bomb when large).
    pub fn zeros_gz(self, path: &str, size: u64) -> Vec<u8> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(size);
        write_field(&mut header.as_old_mut().name, path);
        header.set_cksum();
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&self.bytes).unwrap();
        gz.write_all(header.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            gz.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        gz.write_all(&[0u8; 1024]).unwrap();
        gz.finish().unwrap()
    }

    /// The plain tar stream with its end-of-archive marker.
    pub fn tar(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }

    /// The tar stream, gzip-compressed.
    pub fn gz(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn write_field(field: &mut [u8], value: &str) {
    assert!(
        value.len() <= field.len(),
        "test path too long for a ustar field"
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}
