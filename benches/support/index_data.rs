//! Package graphs for the benchmarks: the crates.io index of 2019 in the
//! repository (or any index of its format named by `HOLDQ_BENCH_INDEX`), a
//! synthetic graph of any size, and seeding a server's database with one.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use holdq::db;
use holdq::domain::PackageName;
use holdq::domain::integrity::{FutureStable, PendingRelease};
use holdq::domain::resolve::Release;
use holdq::service::{App, index, stable};
use semver::{Version, VersionReq};

/// One version as read from a dataset.
pub struct Row {
    pub name: String,
    pub version: Version,
    pub deps: Vec<(String, VersionReq)>,
}

/// The index the benchmarks read: `HOLDQ_BENCH_INDEX`, else the 2019 file
/// in `benches/data/`.
pub fn index_path() -> PathBuf {
    std::env::var_os("HOLDQ_BENCH_INDEX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("benches/data/crates-index-2019.jsonl.gz")
        })
}

/// Reads an index of crates.io's format, one JSON object per version
/// (gzip-compressed when the file name ends in `.gz`); returns the rows and
/// how many versions and requirements were skipped as unparsable.
pub fn read_crates(path: &std::path::Path) -> anyhow::Result<(Vec<Row>, usize)> {
    #[derive(serde::Deserialize)]
    struct Line {
        name: String,
        vers: String,
        deps: Vec<Dep>,
    }
    #[derive(serde::Deserialize)]
    struct Dep {
        name: String,
        req: String,
        kind: Option<String>,
        package: Option<String>,
    }
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let (mut rows, mut skipped) = (Vec::new(), 0);
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&line)?;
        let Ok(version) = Version::parse(&line.vers) else {
            skipped += 1;
            continue;
        };
        let mut deps = Vec::new();
        for d in line.deps {
            if d.kind.as_deref() == Some("dev") {
                continue; // not needed to build or use the package
            }
            match VersionReq::parse(&d.req) {
                Ok(req) => deps.push((d.package.unwrap_or(d.name).to_lowercase(), req)),
                Err(_) => skipped += 1,
            }
        }
        rows.push(Row {
            name: line.name.to_lowercase(),
            version,
            deps,
        });
    }
    Ok((rows, skipped))
}

/// `packages` packages, `versions` versions in all; each package depends on
/// earlier ones chosen with a Zipf-like skew (a few are depended on by tens
/// of thousands, most by none).
pub fn synthetic(packages: usize, versions: usize) -> Vec<Row> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let per = versions / packages;
    let mut rows = Vec::with_capacity(versions);
    for p in 0..packages {
        let ndeps = (next() % 6) as usize;
        let mut deps = Vec::new();
        for _ in 0..ndeps.min(p) {
            // u in (0,1]; index ~ p * u^3 favours the first packages.
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            let target = ((p as f64) * u * u * u) as usize;
            deps.push((format!("pkg{target}"), VersionReq::parse("^1").unwrap()));
        }
        deps.sort_by(|a, b| a.0.cmp(&b.0));
        deps.dedup_by(|a, b| a.0 == b.0);
        for v in 0..per + usize::from(p < versions % packages) {
            rows.push(Row {
                name: format!("pkg{p}"),
                version: Version::new(1, v as u64, 0),
                deps: deps.clone(),
            });
        }
    }
    rows
}

/// `rows` twice: the second copy's packages (and their requirements)
/// renamed with a `-b` suffix, so the graph doubles with the same shape.
pub fn doubled(rows: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = rows
        .iter()
        .map(|r| Row {
            name: r.name.clone(),
            version: r.version.clone(),
            deps: r.deps.clone(),
        })
        .collect();
    out.extend(rows.iter().map(|r| {
        Row {
            name: format!("{}-b", r.name),
            version: r.version.clone(),
            deps: r
                .deps
                .iter()
                .map(|(d, q)| (format!("{d}-b"), q.clone()))
                .collect(),
        }
    }));
    out
}

/// The manifest a seeded version stores.
pub fn manifest_json(name: &str, version: &Version, deps: &BTreeMap<String, String>) -> String {
    serde_json::json!({
        "name": name, "version": version.to_string(),
        "maintainers": [{"name": null, "email": format!("{name}@example.org")}],
        "description": "", "license": "", "dependencies": deps,
        "build": {"command": "true", "test": null, "platforms": null},
    })
    .to_string()
}

/// A row's requirements as a manifest holds them: valid names only, no
/// self-dependency.
pub fn deps_of(row: &Row) -> BTreeMap<String, String> {
    row.deps
        .iter()
        .filter(|(d, _)| PackageName::parse(d).is_ok() && *d != row.name)
        .map(|(d, r)| (d.clone(), r.to_string()))
        .collect()
}

/// Writes `rows` into the server's database as stable (packages, versions,
/// and their index documents' rows at serial 1 without a body yet, with an
/// empty stand-in archive per version of the packages `archives` admits: a
/// promotion checks every archive its document names), as if promoted; returns the
/// package ids. Rows whose package name is invalid are left out. Ends with
/// a `sync`, so that flushing the seed is not the first timed step's cost.
pub async fn seed(
    app: &holdq::service::App,
    rows: &[Row],
    archives: impl Fn(&str) -> bool,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut tx = app.db.begin_write().await?;
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut names: Vec<&str> = rows
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| PackageName::parse(n).is_ok())
        .collect();
    names.sort_unstable();
    names.dedup();
    for chunk in names.chunks(400) {
        let sql = format!(
            "INSERT INTO packages (name, created_at) VALUES {}",
            (1..=chunk.len())
                .map(|i| format!("(${i}, 0)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for n in chunk {
            q = q.bind(*n);
        }
        q.execute(&mut *tx).await?;
    }
    ids.extend(holdq::db::pins::ids_of(&mut tx, &names).await?);
    let valid: Vec<&Row> = rows.iter().filter(|r| ids.contains_key(&r.name)).collect();
    for chunk in valid.chunks(300) {
        let sql = format!(
            "INSERT INTO versions (package_id, version, sha256, size_bytes, manifest, promoted_at) VALUES {} ON CONFLICT DO NOTHING",
            (0..chunk.len())
                .map(|i| format!("(${}, ${}, '', 0, ${}, 0)", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            q = q
                .bind(ids[&row.name])
                .bind(row.version.to_string())
                .bind(manifest_json(&row.name, &row.version, &deps_of(row)));
        }
        q.execute(&mut *tx).await?;
    }
    // Each package's document row at serial 1, its body to be filled in
    // (`service::index::write_unwritten`) or rewritten by a change.
    let all: Vec<i64> = ids.values().copied().collect();
    for chunk in all.chunks(1000) {
        let sql = format!(
            "INSERT INTO index_documents (package_id, serial) VALUES {}",
            (1..=chunk.len())
                .map(|i| format!("(${i}, 1)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
    }
    holdq::db::stable::bump_serial(&mut tx).await?;
    tx.commit().await?;
    for row in valid.iter().filter(|r| archives(&r.name)) {
        let path = app.stable.archive_path(&row.name, &row.version.to_string());
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, b"")?;
    }
    // Statistics, as autovacuum gives a server's tables (this machine's
    // PostgreSQL runs without it): the planner otherwise guesses.
    if app.db.backend() == holdq::db::Backend::Postgres {
        sqlx::query("ANALYZE").execute(app.db.pool()).await?;
    }
    std::process::Command::new("sync").status()?;
    Ok(ids)
}

/// One promotion as `service::verdict::promote` makes it: the archive made
/// durable, the bases validated against stable at the locked serial, the
/// version and its change recorded in one transaction, the model updated,
/// the package's document written. `archive`: the file stored as its
/// archive and the sha256 recorded for it.
pub async fn promote(
    app: &App,
    name: &str,
    version: &Version,
    deps: &BTreeMap<String, String>,
    (blob, sha256): (&Path, &str),
) -> anyhow::Result<()> {
    let pname = PackageName::parse(name)?;
    let dependencies = deps
        .iter()
        .filter_map(|(d, q)| Some((PackageName::parse(d).ok()?, q.parse().ok()?)))
        .collect();
    let release = Release {
        version: version.clone(),
        dependencies,
    };
    let (store, blob_path, n, v) = (
        app.stable.clone(),
        blob.to_owned(),
        name.to_owned(),
        version.to_string(),
    );
    tokio::task::spawn_blocking(move || store.store_archive(&blob_path, &n, &v)).await??;
    let mut tx = app.db.begin_write().await?;
    let package = db::packages::lock_by_name(&mut tx, name, app.db.for_update())
        .await?
        .expect("seeded");
    let serial = db::stable::lock_serial(&mut tx, app.db.for_update()).await?;
    let me = PendingRelease {
        upload_id: 0,
        name: pname.clone(),
        release: release.clone(),
    };
    stable::with_repo_at(app, serial, |repo| {
        let now = FutureStable::new(repo, serial, []);
        let closure = now.resolve_upload(&me).is_ok();
        let dependents = now.dependents_to_rebuild(&me.name, &me.release.version, 100);
        (closure, dependents.0.len())
    })
    .await?;
    sqlx::query("INSERT INTO versions (package_id, version, sha256, size_bytes, manifest, promoted_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(package.id)
        .bind(version.to_string())
        .bind(sha256)
        .bind(std::fs::metadata(blob)?.len() as i64)
        .bind(manifest_json(name, version, deps))
        .bind(db::now_ms())
        .execute(&mut *tx)
        .await?;
    let serial = db::stable::bump_serial(&mut tx).await?;
    index::record_promotion(app, &mut tx, serial, [name]).await?;
    tx.commit().await?;
    stable::apply(app, serial, |repo| repo.add_release(pname, release));
    index::publish(app, serial).await;
    Ok(())
}
