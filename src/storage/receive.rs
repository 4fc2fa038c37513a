//! Receiving an upload: the body streams to a temporary file in
//! `incoming/` while it is hashed (sha256) and, at the same time, inflated
//! and inspected, so a large archive costs one pass and is never held in
//! memory. Writing and inspecting run on two blocking threads fed by the
//! request; back-pressure comes from their bounded channels.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;

use super::archive::{self, ArchiveError, ArchiveLimits, ArchiveSummary};

/// An upload fully written to disk (and synced), with what inspection said.
pub struct Received {
    pub file: NamedTempFile,
    pub sha256: String,
    pub size: u64,
    pub inspection: Result<ArchiveSummary, ArchiveError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was cut off: {0}")]
    Body(String),
    /// The disk is full, or the upload would cross the free-space reserve.
    #[error("the server is out of storage space")]
    NoSpace,
    #[error("nothing was received for {}", humantime::format_duration(*.0))]
    Idle(Duration),
    #[error("cannot store the upload: {0}")]
    Io(#[from] io::Error),
}

/// Chunks in flight to each thread; bounds memory per upload to a few MiB.
const CHANNEL_DEPTH: usize = 32;

/// Streams `body` into `dir`, refusing it once it passes `max_bytes`.
pub async fn receive<S, E>(
    body: S,
    dir: &Path,
    max_bytes: u64,
    limits: ArchiveLimits,
) -> Result<Received, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let budget = Budget {
        max_bytes,
        room: u64::MAX,
        idle: None,
    };
    receive_within(body, dir, budget, limits).await
}

/// What one upload may take: bytes, disk, and time between two chunks.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The upload size limit ([`ReceiveError::TooLarge`] beyond it).
    pub max_bytes: u64,
    /// Free space above the reserve ([`ReceiveError::NoSpace`] beyond it).
    pub room: u64,
    /// Longest wait for the next chunk ([`ReceiveError::Idle`] beyond it).
    pub idle: Option<Duration>,
}

/// [`receive`] within `budget`: refused once it passes the free space above
/// the reserve or the disk fills, or when the client goes quiet.
pub async fn receive_within<S, E>(
    body: S,
    dir: &Path,
    budget: Budget,
    limits: ArchiveLimits,
) -> Result<Received, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let file = NamedTempFile::new_in(dir).map_err(out_of_space)?;
    pass(body, file, Sink::Write, budget, limits).await
}

/// Hashes and inspects `path`, a complete file already durable (a finished
/// resumable upload, a drop-box archive), in the same single pass as
/// [`receive`]. The file is hard-linked into `dir` (same filesystem), so
/// the result owns a name of its own there: keeping it as a blob leaves
/// `path` in place until its owner removes it, and dropping it removes
/// only the link.
pub async fn received_file(
    path: &Path,
    dir: &Path,
    limits: ArchiveLimits,
) -> Result<Received, ReceiveError> {
    let file = link_into(path, dir)?;
    let reader = tokio::fs::File::open(file.path()).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK);
    let budget = Budget {
        max_bytes: u64::MAX,
        room: u64::MAX,
        idle: None,
    };
    pass(body, file, Sink::HashOnly, budget, limits).await
}

/// A name of its own in `dir` (same filesystem) for the file at `path`:
/// a hard link, removed when dropped, kept as a blob by rename.
pub fn link_into(path: &Path, dir: &Path) -> io::Result<NamedTempFile> {
    tempfile::Builder::new().make_in(dir, |link| {
        std::fs::hard_link(path, link)?;
        std::fs::File::open(link)
    })
}

/// How much of a file on disk is read at a time.
const READ_CHUNK: usize = 1 << 20;

/// What happens to the bytes besides inspection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// Written to the file, which is synced at the end.
    Write,
    /// Already in the file: only hashed.
    HashOnly,
}

/// The one pass over an upload's bytes: hashed (and written, for
/// `Sink::Write`) on one thread while another inflates and inspects them.
async fn pass<S, E>(
    body: S,
    file: NamedTempFile,
    sink: Sink,
    budget: Budget,
    limits: ArchiveLimits,
) -> Result<Received, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let (to_writer, mut writer_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let (to_inspector, inspector_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);

    let writer = tokio::task::spawn_blocking(move || -> io::Result<(NamedTempFile, String)> {
        let mut hasher = Sha256::new();
        let mut out = file.as_file();
        while let Some(chunk) = writer_rx.blocking_recv() {
            hasher.update(&chunk);
            if sink == Sink::Write {
                out.write_all(&chunk)?;
            }
        }
        if sink == Sink::Write {
            out.sync_data()?;
        }
        Ok((file, hex::encode(hasher.finalize())))
    });
    let inspector = tokio::task::spawn_blocking(move || {
        archive::inspect(ChannelReader::new(inspector_rx), limits)
    });

    let (size, refusal) = pump(body, budget, &to_writer, &to_inspector).await;
    drop(to_writer);
    drop(to_inspector);

    // Join both threads even when refusing, so the partial file is gone
    // by the time the refusal is answered.
    let written = writer.await.map_err(io::Error::other)?;
    let inspection = inspector.await.map_err(io::Error::other)?;
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let (file, sha256) = written.map_err(out_of_space)?;
    Ok(Received {
        file,
        sha256,
        size,
        inspection,
    })
}

/// Feeds the body's chunks to both threads until it ends, breaks the
/// budget, or the writer fails: the bytes read, and why it stopped early.
async fn pump<S, E>(
    body: S,
    budget: Budget,
    to_writer: &mpsc::Sender<Bytes>,
    to_inspector: &mpsc::Sender<Bytes>,
) -> (u64, Option<ReceiveError>)
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let mut size = 0u64;
    let mut body = std::pin::pin!(body);
    loop {
        let next = tokio::select! {
            next = next_chunk(&mut body, budget.idle) => next,
            // The writer failed (a full disk): say so now, not when the
            // client sends its next chunk. Its error is collected later.
            () = to_writer.closed() => return (size, None),
        };
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return (size, None),
            Err(refusal) => return (size, Some(refusal)),
        };
        size += chunk.len() as u64;
        if size > budget.max_bytes {
            let limit = budget.max_bytes;
            return (size, Some(ReceiveError::TooLarge { limit }));
        }
        if size > budget.room {
            return (size, Some(ReceiveError::NoSpace));
        }
        if to_writer.send(chunk.clone()).await.is_err() {
            return (size, None);
        }
        // The inspector stops reading once it has refused the archive.
        let _ = to_inspector.send(chunk).await;
    }
}

/// The body's next chunk, waiting at most `idle` for it.
async fn next_chunk<S, E>(
    body: &mut std::pin::Pin<&mut S>,
    idle: Option<Duration>,
) -> Result<Option<Bytes>, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: fmt::Display,
{
    let next = match idle {
        Some(idle) => tokio::time::timeout(idle, body.next())
            .await
            .map_err(|_| ReceiveError::Idle(idle))?,
        None => body.next().await,
    };
    next.transpose()
        .map_err(|e| ReceiveError::Body(e.to_string()))
}

/// A full disk is the uploader's to know about; other I/O errors are not.
fn out_of_space(e: io::Error) -> ReceiveError {
    if super::space::is_out_of_space(&e) {
        ReceiveError::NoSpace
    } else {
        ReceiveError::Io(e)
    }
}

/// A blocking `Read` over chunks arriving on a channel.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
