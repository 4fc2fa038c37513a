//! What the benchmarks share: package archives, process scans, percentiles.

#![allow(dead_code)]

pub mod index_data;

use std::path::Path;
use std::time::Duration;

/// A package whose build runs `build`, on `platform` only when given.
pub fn package(name: &str, version: &str, build: &str, platform: Option<&str>) -> Vec<u8> {
    let mut manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\nmaintainers = [\"Bench <bench@example.org>\"]\n\
         description = \"bench\"\nlicense = \"MIT\"\n\n[build]\ncommand = \"{build}\"\n"
    );
    if let Some(platform) = platform {
        manifest.push_str(&format!("platforms = [\"{platform}\"]\n"));
    }
    archive_of(name, version, &manifest)
}

/// A gzipped tar holding `name-version/package.toml` with `manifest`.
pub fn archive_of(name: &str, version: &str, manifest: &str) -> Vec<u8> {
    use std::io::Write;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        format!("{name}-{version}/package.toml"),
        manifest.as_bytes(),
    )
    .unwrap();
    let bytes = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    gz.finish().unwrap()
}

/// Whether a process whose command line contains `marker` is alive.
pub fn running(marker: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let cmdline = Path::new("/proc").join(e.file_name()).join("cmdline");
        std::fs::read(cmdline)
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .contains(marker)
            })
            .unwrap_or(false)
    })
}

/// Waits up to 30 s, looking every millisecond, until a process whose
/// command line contains `marker` is `alive` (or not); false on time-out.
pub async fn wait_process(marker: &str, alive: bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running(marker) != alive {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Uploads `body` to the server at `base`; its upload id.
pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &[u8],
) -> anyhow::Result<i64> {
    let resp = client
        .post(format!("{base}/api/v1/uploads"))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(body.to_vec())
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == 201,
        "upload refused: {}",
        resp.text().await?
    );
    Ok(resp.json::<serde_json::Value>().await?["id"]
        .as_i64()
        .unwrap_or_default())
}

/// Waits (bounded: 10 min) until no upload is queued or being checked.
pub async fn wait_idle(app: &holdq::service::App) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM uploads WHERE state IN ('queued', 'checking')")
                .fetch_one(app.db.pool())
                .await?;
        if n == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the queue never drained"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
