//! The package website at scale: server time per page (`/packages`, a
//! page deep in the listing, search by a word and by a prefix, and the
//! page of the most depended-upon package) with the crates.io 2019 index
//! (`../shared/data/crates-index-2019.jsonl.gz`: 25k packages, 127k
//! versions; descriptions made up from a fixed vocabulary, as the index
//! has none) and with a synthetic repository ten times its size, on SQLite.
//! Each figure is the round trip over loopback, against `GET /healthz`
//! (the fixed cost of a request) and, for search, against the same search
//! as a full scan (`LIKE`) without the index, measured in the same run.
//! Goal: every page under 50 ms.
//!
//! Run: `cargo bench --bench web`.

mod support;

use std::io::BufRead;
use std::time::{Duration, Instant};

use support::{ms, percentile};

/// Words the made-up descriptions are drawn from.
const VOCABULARY: &[&str] = &[
    "fast",
    "async",
    "parser",
    "serialization",
    "http",
    "client",
    "server",
    "crypto",
    "hash",
    "image",
    "audio",
    "sound",
    "wave",
    "graph",
    "database",
    "sqlite",
    "postgres",
    "terminal",
    "color",
    "logging",
    "macro",
    "derive",
    "embedded",
    "network",
    "protocol",
    "compression",
    "zip",
    "json",
    "toml",
    "yaml",
    "regex",
    "unicode",
    "time",
    "date",
    "random",
    "numeric",
    "matrix",
    "vector",
    "game",
    "engine",
    "window",
    "gpu",
    "shader",
    "config",
    "cli",
    "test",
];

/// A package of the benchmark: its name and versions (with dependencies).
struct Package {
    name: String,
    versions: Vec<(String, Vec<String>)>,
}

fn description(i: usize) -> String {
    let w = |k: usize| {
        VOCABULARY[(i.wrapping_mul(2654435761).wrapping_add(k * 40503)) % VOCABULARY.len()]
    };
    format!("A {} {} library for {} and {}", w(1), w(2), w(3), w(4))
}

fn read_crates(path: &std::path::Path) -> anyhow::Result<Vec<Package>> {
    #[derive(serde::Deserialize)]
    struct Line {
        name: String,
        vers: String,
        deps: Vec<Dep>,
    }
    #[derive(serde::Deserialize)]
    struct Dep {
        name: String,
        kind: Option<String>,
        package: Option<String>,
    }
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(path)?));
    let mut packages: Vec<Package> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for line in reader.lines() {
        let line: Line = serde_json::from_str(&line?)?;
        let name = line.name.to_lowercase();
        if semver::Version::parse(&line.vers).is_err()
            || holdq::domain::PackageName::parse(&name).is_err()
        {
            continue;
        }
        let deps = line
            .deps
            .into_iter()
            .filter(|d| d.kind.as_deref() != Some("dev"))
            .map(|d| d.package.unwrap_or(d.name).to_lowercase())
            .filter(|d| *d != name)
            .collect();
        let i = *index.entry(name.clone()).or_insert_with(|| {
            packages.push(Package {
                name: name.clone(),
                versions: Vec::new(),
            });
            packages.len() - 1
        });
        packages[i].versions.push((line.vers, deps));
    }
    Ok(packages)
}

/// `n` packages of one version each, with the first ones depended upon.
fn synthetic(n: usize) -> Vec<Package> {
    (0..n)
        .map(|i| Package {
            name: format!("pkg{i:06}"),
            versions: vec![(
                "1.0.0".into(),
                (1..=3)
                    .map(|k| format!("pkg{:06}", (i * k) % 97))
                    .filter(|d| *d != format!("pkg{i:06}"))
                    .collect(),
            )],
        })
        .collect()
}

async fn load(app: &holdq::service::App, packages: &[Package]) -> anyhow::Result<usize> {
    let mut tx = app.db.begin_write().await?;
    let mut versions = 0;
    for (i, p) in packages.iter().enumerate() {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO packages (name, state, created_at) VALUES ($1, 'active', 0) RETURNING id",
        )
        .bind(&p.name)
        .fetch_one(&mut *tx)
        .await?;
        for (version, deps) in &p.versions {
            let deps: std::collections::BTreeMap<&str, &str> =
                deps.iter().map(|d| (d.as_str(), "*")).collect();
            let manifest = serde_json::json!({
                "name": p.name, "version": version,
                "maintainers": [{"name": null, "email": "bench@example.org"}],
                "description": description(i), "license": "MIT", "dependencies": deps,
                "build": {"command": "true", "test": null, "platforms": null},
            });
            let inserted = sqlx::query(
                "INSERT INTO versions (package_id, version, sha256, size_bytes, manifest, promoted_at) \
                 VALUES ($1, $2, '', 0, $3, 0) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(version)
            .bind(manifest.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            versions += inserted as usize;
        }
    }
    tx.commit().await?;
    Ok(versions)
}

/// p50 and p99 of `n` GETs of `path`.
async fn time_get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    n: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = client.get(format!("{base}{path}")).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.bytes().await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// p50 of the search of `/packages?q=WORD` without the index: a scan of
/// every latest version's description, ordered as the search orders
/// (exact name first, then by name), so every row is read.
async fn time_scan(app: &holdq::service::App, word: &str, n: usize) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let _rows: Vec<(String,)> = sqlx::query_as(
            "SELECT p.name FROM packages p \
             JOIN versions v ON v.id = (SELECT MAX(id) FROM versions WHERE package_id = p.id) \
             WHERE json_extract(v.manifest, '$.description') LIKE $1 \
             ORDER BY (p.name = $2) DESC, p.name LIMIT 51",
        )
        .bind(format!("%{word}%"))
        .bind(word)
        .fetch_all(app.db.pool())
        .await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(percentile(&samples, 0.5))
}

/// p50 of the use case behind a listing or search page alone (database
/// and view, no HTTP, no template).
async fn time_service(
    app: &holdq::service::App,
    q: &str,
    after: &str,
    page: i64,
    n: usize,
) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        holdq::service::web::packages::list_packages(app, q, after, page).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(percentile(&samples, 0.5))
}

async fn measure(label: &str, packages: &[Package]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = holdq::config::Config::for_data_dir(&dir.path().join("data"));
    config.database_url = format!("sqlite://{}/holdq.db", dir.path().display());
    let app = holdq::service::App::open_with(
        config,
        holdq::sandbox::Sandbox::new(env!("CARGO_BIN_EXE_holdq").into()),
    )
    .await?;
    let t = Instant::now();
    let versions = load(&app, packages).await?;
    println!(
        "web: {label}: {} packages, {versions} versions written to SQLite (search index by trigger) in {:.1} s",
        packages.len(),
        t.elapsed().as_secs_f64()
    );
    holdq::service::stable::with_repo(&app, |_| ()).await?; // the model, as at start-up
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(holdq::http::serve(listener, app.clone()));
    let client = reqwest::Client::new();

    let mut names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    let middle = names[names.len() / 2];
    let top = holdq::service::stable::with_repo(&app, |repo| {
        repo.package_names()
            .max_by_key(|n| repo.dependents_count(n))
            .map(|n| (n.to_string(), repo.dependents_count(n)))
    })
    .await?
    .expect("a package");
    let n = 40;
    let (health, _) = time_get(&client, &base, "/healthz", n).await?;
    println!(
        "web: {label}: GET /healthz (baseline) p50 {:.2} ms",
        ms(health)
    );
    let pages = [
        ("listing, first page", "/packages".to_owned()),
        (
            "listing, a page in the middle",
            format!("/packages?after={middle}"),
        ),
        ("search by a word", "/packages?q=sound".to_owned()),
        ("search by two prefixes", "/packages?q=ser+pars".to_owned()),
        ("search, page 3", "/packages?q=async&page=3".to_owned()),
        (
            "package page of the most depended-upon",
            format!("/packages/{}", top.0),
        ),
    ];
    for (what, path) in &pages {
        time_get(&client, &base, path, 3).await?; // warm
        let (p50, p99) = time_get(&client, &base, path, n).await?;
        println!(
            "web: {label}: {what} ({path}): p50 {:.2} ms, p99 {:.2} ms, {:.1}x the baseline (goal < 50 ms)",
            ms(p50),
            ms(p99),
            p50.as_secs_f64() / health.as_secs_f64()
        );
    }
    println!(
        "web: {label}: the most depended-upon package, {}, has {} dependents",
        top.0, top.1
    );
    for (what, q, after, page) in [
        ("listing, first page", "", "", 1),
        ("listing, a page in the middle", "", middle, 1),
        ("search by a word", "sound", "", 1),
        ("search, page 3", "async", "", 3),
    ] {
        let alone = time_service(&app, q, after, page, n).await?;
        println!(
            "web: {label}: {what}: the use case alone (database and view) p50 {:.2} ms",
            ms(alone)
        );
    }
    let indexed = time_service(&app, "sound", "", 1, n).await?;
    let scan = time_scan(&app, "sound", 5).await?;
    println!(
        "web: {label}: search by a word through the index {:.2} ms against a LIKE scan of every description {:.2} ms (same order, same page): {:.1}x faster",
        ms(indexed),
        ms(scan),
        scan.as_secs_f64() / indexed.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/crates-index-2019.jsonl.gz");
    if path.is_file() {
        let packages = read_crates(&path)?;
        rt.block_on(measure("crates.io 2019", &packages))?;
    } else {
        println!(
            "web: {} is missing; the crates.io figures are skipped",
            path.display()
        );
    }
    let scale = std::env::var("HOLDQ_BENCH_WEB_PACKAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(250_000);
    rt.block_on(measure(&format!("synthetic {scale}"), &synthetic(scale)))?;
    Ok(())
}
