//! Inspecting a resumable upload while it grows: a blocking thread reads
//! the file up to the last offset recorded as durable, hashing and
//! inflating as chunks arrive, so the last chunk is answered about as soon
//! as a plain upload would be (one gzip stream cannot be inflated faster
//! than it arrives, but it need not wait for the end either). It only ever
//! reads bytes already checked and synced; when it cannot finish (a
//! restart, a client gone for a while) the caller inspects the whole file
//! in one pass instead, with the same result.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::archive::{self, ArchiveError, ArchiveLimits, ArchiveSummary};

/// How long the thread waits for the next chunk before it gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// What the thread found: the whole file's sha256 and the inspection.
pub type Followed = (String, Result<ArchiveSummary, ArchiveError>);

#[derive(Default)]
struct Progress {
    /// Bytes that may be read.
    durable: u64,
    /// No byte will come after `durable`.
    complete: bool,
    abandoned: bool,
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

/// The inspection of one growing file.
pub struct Follower {
    shared: Shared,
    task: JoinHandle<io::Result<Followed>>,
}

impl Follower {
    /// Starts following `path` from its first byte.
    pub fn start(path: PathBuf, limits: ArchiveLimits) -> io::Result<Self> {
        let file = File::open(path)?;
        let shared: Shared = Arc::default();
        let mut reader = Tail {
            file,
            at: 0,
            hasher: Sha256::new(),
            failed: false,
            shared: shared.clone(),
        };
        let task = tokio::task::spawn_blocking(move || {
            let inspection = archive::inspect(&mut reader, limits);
            // Inspection may stop early (a refusal, the tar's end): the
            // hash still covers every byte.
            io::copy(&mut reader, &mut io::sink())?;
            if reader.failed {
                // What inspection said may be about our own read error.
                return Err(io::Error::other("the follower gave up"));
            }
            Ok((hex::encode(reader.hasher.finalize()), inspection))
        });
        Ok(Self { shared, task })
    }

    /// The bytes up to `durable` are checked and synced: read them.
    pub fn advance(&self, durable: u64) {
        self.update(|p| p.durable = durable);
    }

    /// The file is complete at `length`: what the thread found, or `None`
    /// when it gave up (the caller inspects the file itself).
    pub async fn finish(self, length: u64) -> Option<Followed> {
        self.update(|p| {
            p.durable = length;
            p.complete = true;
        });
        match self.task.await {
            Ok(Ok(followed)) => Some(followed),
            _ => None,
        }
    }

    /// Stops the thread (the upload ended otherwise).
    pub fn abandon(self) {
        self.update(|p| p.abandoned = true);
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        let (lock, wake) = &*self.shared;
        change(&mut lock.lock().expect("follower progress"));
        wake.notify_all();
    }
}

/// A `Read` of the file that waits at the durable offset for more.
struct Tail {
    file: File,
    at: u64,
    hasher: Sha256,
    /// A read failed: nothing this reader produced may be trusted.
    failed: bool,
    shared: Shared,
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("the follower gave up"));
        }
        let read = self.read_durable(buf);
        self.failed = read.is_err();
        read
    }
}

impl Tail {
    fn read_durable(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (lock, wake) = &*self.shared;
        let mut progress = lock.lock().expect("follower progress");
        loop {
            if progress.abandoned {
                return Err(io::Error::other("the upload ended"));
            }
            if self.at < progress.durable {
                break;
            }
            if progress.complete {
                return Ok(0);
            }
            let (next, waited) = wake
                .wait_timeout(progress, PATIENCE)
                .expect("follower progress");
            progress = next;
            if waited.timed_out() && self.at >= progress.durable && !progress.complete {
                return Err(io::Error::other("no chunk arrived in time"));
            }
        }
        let room = (progress.durable - self.at).min(buf.len() as u64) as usize;
        drop(progress);
        let n = self.file.read_at(&mut buf[..room], self.at)?;
        if n == 0 {
            return Err(io::Error::other("the file is shorter than its offset"));
        }
        self.hasher.update(&buf[..n]);
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn limits() -> ArchiveLimits {
        ArchiveLimits {
            unpacked_bytes: 1 << 20,
            entries: 100,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn it_reads_only_what_was_recorded_durable() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"not gzip at all").unwrap();
        let f = Follower::start(file.path().to_owned(), limits()).unwrap();
        f.advance(3);
        // The bytes past 3 are not checked yet (a chunk being written).
        let (sha, inspection) = f.finish(3).await.expect("followed");
        assert_eq!(sha, hex::encode(Sha256::digest(b"not")));
        assert!(matches!(inspection, Err(ArchiveError::NotGzip)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_follower_ends_its_thread_without_a_verdict() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let f = Follower::start(file.path().to_owned(), limits()).unwrap();
        f.update(|p| p.abandoned = true);
        let ended = tokio::time::timeout(Duration::from_secs(30), f.task)
            .await
            .expect("the thread ends")
            .unwrap();
        assert!(
            ended.is_err(),
            "no sha256 or inspection from an abandoned upload"
        );
    }
}
