//! Free space on the data directory's filesystem, against the configured
//! reserve: what an upload may still take, and whether the server is
//! degraded for lack of space.

use std::io;
use std::path::Path;

/// The filesystem holding a directory, as `statvfs` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    /// The reserve the operator keeps free (`[storage] reserve`).
    pub reserve: u64,
}

impl Space {
    /// Measures the filesystem of `dir`.
    pub fn of(dir: &Path, reserve: u64) -> io::Result<Self> {
        let stat = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ per platform
        let available = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        Ok(Self { available, reserve })
    }

    /// Bytes an upload may take without crossing the reserve.
    pub fn room(&self) -> u64 {
        self.available.saturating_sub(self.reserve)
    }

    /// Whether free space is below the reserve.
    pub fn is_low(&self) -> bool {
        self.available < self.reserve
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_out_of_space(e: &io::Error) -> bool {
    // A full quota (EDQUOT) is a full disk to the uploader.
    e.kind() == io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(nix::errno::Errno::EDQUOT as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_lies_above_the_reserve() {
        let s = Space {
            available: 10,
            reserve: 4,
        };
        assert_eq!(s.room(), 6);
        assert!(!s.is_low());
        let full = Space {
            available: 3,
            reserve: 4,
        };
        assert_eq!(full.room(), 0);
        assert!(full.is_low());
    }

    #[test]
    fn enospc_and_edquot_are_out_of_space() {
        assert!(is_out_of_space(&io::Error::from_raw_os_error(
            nix::errno::Errno::ENOSPC as i32
        )));
        assert!(is_out_of_space(&io::Error::from_raw_os_error(
            nix::errno::Errno::EDQUOT as i32
        )));
        assert!(!is_out_of_space(&io::Error::from_raw_os_error(
            nix::errno::Errno::EACCES as i32
        )));
    }

    #[test]
    fn a_real_directory_has_a_measurable_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let s = Space::of(dir.path(), 0).unwrap();
        assert!(s.available > 0);
    }
}
