//! A check's disk limit, which bounds its directory and its `/tmp`
//! together (both live on the same filesystem, so a tmpfs `size=` never
//! charges the memory limit with disk).
//!
//! As root, each check directory is its own ext4 filesystem: a sparse
//! image beside it, formatted without a journal or reserved blocks and
//! loop-mounted `nosuid,nodev` on it; a write past the limit gets ENOSPC,
//! a `fallocate` past it fails whole, and the host's disk sees only what
//! was written. Without root, a watchdog in the worker measures the
//! directory and kills the run past the limit (it cannot stop one large
//! `fallocate` between two looks).
//!
//! Everything here is named after the pid of the process that made it,
//! so a worker's start-up [`sweep`] removes what a killed predecessor left
//! (mounts, images, directories, cgroups) and nothing of a live one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A fresh check directory under `work`, named after this process
/// (`check-PID-...`), on its own filesystem when `loop_disk`; removed (and
/// unmounted) when dropped.
#[derive(Debug)]
pub struct CheckDir {
    // Dropped in this order: unmount, then remove the directory.
    disk: Option<LoopDisk>,
    dir: tempfile::TempDir,
}

impl CheckDir {
    pub fn new(work: &Path, bytes: u64, loop_disk: bool) -> anyhow::Result<Self> {
        fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("check-{}-", std::process::id()))
            .tempdir_in(work)
            .with_context(|| format!("cannot make a check directory in {}", work.display()))?;
        let disk = if loop_disk {
            Some(LoopDisk::mount(dir.path(), bytes)?)
        } else {
            None
        };
        Ok(Self { disk, dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the directory is a filesystem of its own.
    pub fn is_loop_mounted(&self) -> bool {
        self.disk.is_some()
    }
}

/// A loop-mounted filesystem on a check's directory; unmounted and its
/// image removed when dropped.
#[derive(Debug)]
pub struct LoopDisk {
    mount_point: PathBuf,
    image: PathBuf,
}

impl LoopDisk {
    /// Makes a sparse image of `bytes` beside `dir` (an empty directory)
    /// and mounts it there.
    pub fn mount(dir: &Path, bytes: u64) -> anyhow::Result<Self> {
        let image = dir.with_extension("img");
        let file = fs::File::create(&image)
            .with_context(|| format!("cannot create {}", image.display()))?;
        file.set_len(bytes)
            .with_context(|| format!("cannot size {}", image.display()))?;
        drop(file);
        let disk = Self {
            mount_point: dir.to_owned(),
            image,
        };
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
            .args(["-E", "lazy_itable_init=1,nodiscard"])
            .arg(&disk.image))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
            .arg(&disk.image)
            .arg(dir))?;
        let _ = fs::remove_dir(dir.join("lost+found"));
        Ok(disk)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        unmount(&self.mount_point);
        let _ = fs::remove_file(&self.image);
    }
}

/// Detaches the filesystem on `dir` (the loop device goes with it).
fn unmount(dir: &Path) {
    if let Err(e) = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH) {
        tracing::warn!(path = %dir.display(), error = %e, "cannot unmount a check's disk");
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Bytes allocated under `dir` (what a write or `fallocate` took), not
/// following symlinks.
pub fn usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// Bytes still free on the filesystem holding `dir`.
pub fn free(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// The pid a leftover's name says made it: `check-PID-...`, `run-PID`, `holdq-PID`.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name
        .strip_prefix("check-")
        .or_else(|| name.strip_prefix("run-"))
        .or_else(|| name.strip_prefix("holdq-"))?;
    rest.split(['-', '.']).next()?.parse().ok()
}

/// Whether `pid` is alive (a stranger who reused it keeps the leftover
/// until a later sweep: never remove what a live run may use).
fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// What [`sweep`] removed.
#[derive(Debug, Default)]
pub struct Swept {
    pub mounts: usize,
    pub entries: usize,
    pub cgroups: usize,
}

/// Removes the check directories, images, container roots and cgroups
/// whose making process is dead: `work` holds check directories, `state`
/// the sandboxes' roots.
pub fn sweep(work: &Path, state: &Path) -> Swept {
    let mut swept = Swept::default();
    let dead = |name: &str| owner_pid(name).is_some_and(|pid| !alive(pid));
    // Mounts first: what is mounted on a leftover directory.
    if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
        let work = super::policy::absolute(work);
        for line in mounts.lines() {
            let Some(point) = line.split(' ').nth(4) else {
                continue;
            };
            let point = PathBuf::from(point.replace("\\040", " "));
            if point.parent() == Some(work.as_path())
                && point.file_name().and_then(|n| n.to_str()).is_some_and(dead)
            {
                unmount(&point);
                swept.mounts += 1;
            }
        }
    }
    for dir in [work, state] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if removed.is_ok() {
                swept.entries += 1;
            }
        }
    }
    for controller in super::exec::CGROUP_CONTROLLERS {
        let Ok(entries) = fs::read_dir(Path::new("/sys/fs/cgroup").join(controller)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("holdq-") && dead(&name) && fs::remove_dir(entry.path()).is_ok() {
                swept.cgroups += 1;
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_named_after_their_maker() {
        assert_eq!(owner_pid("check-123-abcd"), Some(123));
        assert_eq!(owner_pid("check-123-abcd.img"), Some(123));
        assert_eq!(owner_pid("run-77"), Some(77));
        assert_eq!(owner_pid("holdq-9"), Some(9));
        assert_eq!(owner_pid("something-else"), None);
    }

    #[test]
    fn the_sweep_removes_what_dead_processes_left_and_keeps_the_living() {
        let dir = tempfile::tempdir().unwrap();
        let (work, state) = (dir.path().join("work"), dir.path().join("sandbox"));
        fs::create_dir_all(&work).unwrap();
        fs::create_dir_all(&state).unwrap();
        // A pid far above pid_max is never alive.
        let dead = work.join("check-999999999-x");
        fs::create_dir_all(dead.join("src")).unwrap();
        fs::write(work.join("check-999999999-x.img"), b"").unwrap();
        fs::create_dir_all(state.join("run-999999999")).unwrap();
        let mine = work.join(format!("check-{}-y", std::process::id()));
        fs::create_dir_all(&mine).unwrap();
        let swept = sweep(&work, &state);
        assert_eq!(swept.entries, 3);
        assert!(!dead.exists());
        assert!(mine.exists());
    }
}
