//! Upload ingest throughput: how fast the real server takes in one large
//! package archive, as a ratio against the cheapest ingest this machine can
//! do, measured in the same run so the figure does not depend on the host.
//!
//! - Baseline ("no server"): read the archive in 256 KiB chunks, sha256 it
//!   chunk by chunk and write each chunk to a new file, then `sync_data()`
//!   it. That is the floor of any ingest that hashes and durably stores the
//!   bytes, as the server does.
//! - Server: the real holdq server in-process (SQLite, default limits) on
//!   loopback; reqwest streams the archive from disk to
//!   `POST /api/v1/uploads`, timed from the start of the request to the
//!   `201 Created`. Beyond the baseline's work the server crosses HTTP,
//!   inflates and inspects the archive, and runs the queueing transaction.
//!
//! The archive is one valid package, `big-1.0.0/`, whose manifest sits next
//! to 199 MiB of pseudo-random (incompressible) bytes, so the `.tar.gz` is
//! about 210 MiB: under the default upload (256 MiB) and unpacked (512 MiB)
//! limits. Every trial uploads the same bytes; the server supersedes the
//! previous pending upload and still answers 201. One warm-up, then
//! `TRIALS` measured rounds, baseline and server interleaved; the medians
//! are compared. The goal is a server/baseline ratio of at least 0.80.
//!
//! - Inflate only: the archive inflated to its end and nothing else. One
//!   gzip stream cannot be inflated in parallel, so this is the physical
//!   limit of any server that inspects an upload before it answers; the
//!   goal for the plain POST is at least 0.90 of it.
//! - tus: the same archive over `POST /api/v1/tus/` and PATCHes of 64 KiB
//!   and of 8 MiB (each chunk synced and recorded before it is
//!   acknowledged), timed from the creation to the last `204`, which
//!   answers once the upload is inspected and queued; the goal with 8 MiB
//!   chunks is at least 0.80 of the plain POST.
//!
//! Run: `cargo bench --bench ingest` (release build; needs about 1 GiB free
//! in the temporary directory). Per-trial figures go to stderr.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use holdq::config::Config;
use holdq::service::App;
use rand::RngCore;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

const MIB: u64 = 1 << 20;
/// Size of the incompressible data file inside the archive. At its fastest
/// level zlib-rs codes random bytes with fixed Huffman codes rather than
/// storing them, adding ~5.5%: the `.tar.gz` comes to ~210 MiB.
const DATA_BYTES: u64 = 199 * MIB;
/// Read size of the baseline and of the client's file stream.
const CHUNK: usize = 256 * 1024;
/// Measured rounds after the warm-up.
const TRIALS: usize = 3;
/// The tus chunk sizes measured.
const TUS_CHUNKS: [u64; 2] = [64 << 10, 8 << 20];

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("big-1.0.0.tar.gz");
    make_archive(&archive)?;
    let size = std::fs::metadata(&archive)?.len();
    println!("ingest: archive {:.1} MiB", mib(size));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = rt.block_on(Server::start(&dir.path().join("server")))?;

    let copy = dir.path().join("baseline.out");
    let (mut base, mut up, mut full) = (Vec::new(), Vec::new(), Vec::new());
    let (mut inflated, mut tus) = (Vec::new(), [Vec::new(), Vec::new()]);
    for round in 0..=TRIALS {
        let b = baseline(&archive, &copy)?;
        let i = inflate(&archive)?;
        let s = rt.block_on(server.upload(&archive, size))?;
        let t = [
            rt.block_on(server.upload_tus(&archive, size, TUS_CHUNKS[0]))?,
            rt.block_on(server.upload_tus(&archive, size, TUS_CHUNKS[1]))?,
        ];
        let label = if round == 0 { "warm-up" } else { "trial" };
        eprintln!(
            "ingest: {label} {round}: baseline {:.1} MiB/s, inflate {:.1} MiB/s, server {:.1} MiB/s, \
             tus 64 KiB {:.1} MiB/s, tus 8 MiB {:.1} MiB/s",
            rate(size, b),
            rate(size, i),
            rate(size, s),
            rate(size, t[0]),
            rate(size, t[1]),
        );
        if round > 0 {
            base.push(b);
            up.push(s);
            full.push(b + i);
            inflated.push(i);
            for (all, one) in tus.iter_mut().zip(t) {
                all.push(one);
            }
        }
    }

    let (b, s) = (rate(size, median(&mut base)), rate(size, median(&mut up)));
    println!("ingest: baseline read+sha256+write  {b:.1} MiB/s (median of {TRIALS})");
    println!("ingest: server upload over loopback {s:.1} MiB/s (median of {TRIALS})");
    println!("ingest: ratio server/baseline {:.2} (goal >= 0.80)", s / b);
    // Context: no validating ingest can skip inflating the archive. Against
    // the same work done one step after another, the server's pipeline
    // (hash and write on one thread, inflate and inspect on another) shows.
    let f = rate(size, median(&mut full));
    println!("ingest: baseline read+sha256+write, then inflate {f:.1} MiB/s (median of {TRIALS})");
    println!("ingest: ratio server/(baseline+inflate) {:.2}", s / f);
    let i = rate(size, median(&mut inflated));
    println!("ingest: inflate only {i:.1} MiB/s (median of {TRIALS}): the physical limit");
    println!("ingest: ratio server/inflate {:.2} (goal >= 0.90)", s / i);
    for (chunk, samples) in TUS_CHUNKS.iter().zip(&mut tus) {
        let t = rate(size, median(samples));
        let kib = chunk >> 10;
        println!("ingest: tus upload in {kib} KiB chunks {t:.1} MiB/s (median of {TRIALS})");
        let goal = if *chunk == 8 << 20 {
            " (goal >= 0.80)"
        } else {
            ""
        };
        println!("ingest: ratio tus {kib} KiB/server {:.2}{goal}", t / s);
    }
    Ok(())
}

/// Writes a valid package archive: `big-1.0.0/`, its manifest, and one
/// file of pseudo-random bytes, through gzip at its fastest level.
fn make_archive(path: &Path) -> io::Result<()> {
    let gz = GzEncoder::new(BufWriter::new(File::create(path)?), Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let manifest = "[package]\nname = \"big\"\nversion = \"1.0.0\"\n\
                    maintainers = [\"Ada <ada@example.org>\"]\n\
                    description = \"A large package for the ingest benchmark\"\n\
                    license = \"MIT\"\n\n[build]\ncommand = \"true\"\n";
    let entries: [(&str, tar::EntryType, u64, Box<dyn Read>); 3] = [
        (
            "big-1.0.0/",
            tar::EntryType::Directory,
            0,
            Box::new(io::empty()),
        ),
        (
            "big-1.0.0/package.toml",
            tar::EntryType::Regular,
            manifest.len() as u64,
            Box::new(manifest.as_bytes()),
        ),
        (
            "big-1.0.0/data.bin",
            tar::EntryType::Regular,
            DATA_BYTES,
            Box::new(Noise(DATA_BYTES)),
        ),
    ];
    for (name, kind, len, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(len);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        tar.append_data(&mut header, name, data)?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// `n` pseudo-random bytes, made as they are read (never all in memory).
struct Noise(u64);

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.0) as usize;
        rand::rng().fill_bytes(&mut buf[..n]);
        self.0 -= n as u64;
        Ok(n)
    }
}

/// The "no server" ingest: read, hash and write in 256 KiB chunks, then
/// sync the copy as the server syncs its upload.
fn baseline(src: &Path, dst: &Path) -> io::Result<Duration> {
    // Remove the previous copy outside the timing, so no trial pays for it.
    let _ = std::fs::remove_file(dst);
    let start = Instant::now();
    let mut input = File::open(src)?;
    let mut output = File::create(dst)?;
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
    }
    output.sync_data()?;
    std::hint::black_box(hasher.finalize());
    Ok(start.elapsed())
}

/// Inflates the archive to its end, as inspection must.
fn inflate(src: &Path) -> io::Result<Duration> {
    let start = Instant::now();
    let mut gz =
        flate2::read::GzDecoder::new(io::BufReader::with_capacity(CHUNK, File::open(src)?));
    io::copy(&mut gz, &mut io::sink())?;
    Ok(start.elapsed())
}

/// The real server, as `tests/integration/support` starts it.
struct Server {
    base: String,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut config = Config::for_data_dir(&dir.join("data"));
        config.listen = "127.0.0.1:0".parse()?;
        let app = App::open(config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(holdq::http::serve(listener, app.clone()));
        let (_, token) = holdq::service::users::add_user(
            &app.db,
            "operator@example.org",
            holdq::service::users::Role::Operator,
        )
        .await?;
        Ok(Self {
            base: format!("http://{addr}"),
            url: format!("http://{addr}/api/v1/uploads"),
            token,
            http: reqwest::Client::new(),
        })
    }

    /// Streams the archive from disk; the time from the request's start to
    /// the 201 (the receipt itself is read afterwards, untimed).
    async fn upload(&self, archive: &Path, size: u64) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let file = tokio::fs::File::open(archive).await?;
        let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, CHUNK));
        let resp = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/gzip")
            .header(CONTENT_LENGTH, size)
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await?;
        let elapsed = start.elapsed();
        let status = resp.status();
        let receipt = resp.text().await?;
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "the server answered {status}: {receipt}"
        );
        Ok(elapsed)
    }
}

impl Server {
    /// Creates a tus upload and PATCHes the archive in `chunk`-byte pieces
    /// read from disk; the time from the creation to the last `204` (which
    /// answers once the upload is inspected and queued).
    async fn upload_tus(&self, archive: &Path, size: u64, chunk: u64) -> anyhow::Result<Duration> {
        use std::io::{Seek, SeekFrom};
        let start = Instant::now();
        let created = self
            .http
            .post(format!("{}/api/v1/tus/", self.base))
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", size)
            .send()
            .await?;
        anyhow::ensure!(created.status() == reqwest::StatusCode::CREATED);
        let location = created.headers()["location"].to_str()?.to_owned();
        let url = format!("{}{location}", self.base);
        let mut file = File::open(archive)?;
        let mut offset = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut buf)?;
            let resp = self
                .http
                .patch(&url)
                .bearer_auth(&self.token)
                .header("tus-resumable", "1.0.0")
                .header(CONTENT_TYPE, "application/offset+octet-stream")
                .header("upload-offset", offset)
                .body(buf)
                .send()
                .await?;
            let status = resp.status();
            anyhow::ensure!(
                status == reqwest::StatusCode::NO_CONTENT,
                "the server answered {status}: {}",
                resp.text().await?
            );
            offset += len;
        }
        Ok(start.elapsed())
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn rate(bytes: u64, took: Duration) -> f64 {
    mib(bytes) / took.as_secs_f64()
}
