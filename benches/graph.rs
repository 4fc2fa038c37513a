//! The stable dependency graph at scale: the real crates.io graph of 2019
//! (`../shared/data/crates-index-2019.jsonl.gz`, ~127k versions) and a
//! synthetic one of 1.7 million versions with a Zipf-like fan-in. For each:
//! time and memory to load; transitive dependents of the most depended-upon
//! package, against a breadth-first search over a compact adjacency array
//! built from the same data (goal: within 2x); resolving a typical package;
//! obsoleting the most depended-upon package, pins and email rendering
//! included (goal: under 2 s with thousands of dependents). On the real
//! graph the obsolescence also runs through the service, on SQLite.
//!
//! Run: `cargo bench --bench graph`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::BufRead;
use std::time::{Duration, Instant};

use holdq::domain::PackageName;
use holdq::domain::graph::{Obsolescence, StableRepo};
use holdq::domain::resolve::Release;
use holdq::email::Templates;
use holdq::service::notify::DependencyObsoletedEmail;
use semver::{Version, VersionReq};

/// One version as read from a dataset.
struct Row {
    name: String,
    version: Version,
    deps: Vec<(String, VersionReq)>,
}

fn main() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/crates-index-2019.jsonl.gz");
    if path.is_file() {
        let (rows, skipped) = read_crates(&path)?;
        println!(
            "graph: crates.io 2019: {} versions read, {skipped} requirements skipped (legacy syntax the semver crate refuses)",
            rows.len()
        );
        let repo = measure("crates.io 2019", &rows)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(obsolete_through_the_service(&rows, &repo))?;
    } else {
        println!(
            "graph: {} is missing; the crates.io figures are skipped",
            path.display()
        );
    }
    let rows = synthetic(180_000, 1_700_000);
    measure("synthetic 1.7M", &rows)?;
    Ok(())
}

fn read_crates(path: &std::path::Path) -> anyhow::Result<(Vec<Row>, usize)> {
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
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(path)?));
    let (mut rows, mut skipped) = (Vec::new(), 0);
    for line in reader.lines() {
        let line: Line = serde_json::from_str(&line?)?;
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
fn synthetic(packages: usize, versions: usize) -> Vec<Row> {
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

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn measure(label: &str, rows: &[Row]) -> anyhow::Result<StableRepo> {
    let before = rss_kib("VmRSS:");
    let start = Instant::now();
    let mut repo = StableRepo::new();
    for row in rows {
        let Ok(name) = PackageName::parse(&row.name) else {
            continue;
        };
        let dependencies: BTreeMap<PackageName, VersionReq> = row
            .deps
            .iter()
            .filter_map(|(d, r)| {
                PackageName::parse(d)
                    .ok()
                    .filter(|d| *d != name)
                    .map(|d| (d, r.clone()))
            })
            .collect();
        repo.add_release(
            name,
            Release {
                version: row.version.clone(),
                dependencies,
            },
        );
    }
    let load = start.elapsed();
    let after = rss_kib("VmRSS:");
    let packages = repo.package_names().count();
    println!(
        "graph: {label}: load {packages} packages in {:.0} ms, +{} MiB resident (peak {} MiB)",
        ms(load),
        after.saturating_sub(before) / 1024,
        rss_kib("VmHWM:") / 1024
    );

    // The baseline: dependents of each package's latest version as a
    // compact adjacency array (CSR), and a plain breadth-first search.
    let names: Vec<PackageName> = repo.package_names().cloned().collect();
    let index: HashMap<&PackageName, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n, i as u32))
        .collect();
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        for dep in repo
            .latest(n)
            .map(|r| r.dependencies.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if let Some(&j) = index.get(dep) {
                edges.push((j, i as u32)); // dep -> its dependent
            }
        }
    }
    edges.sort_unstable();
    let mut offsets = vec![0u32; names.len() + 1];
    for &(from, _) in &edges {
        offsets[from as usize + 1] += 1;
    }
    for i in 0..names.len() {
        offsets[i + 1] += offsets[i];
    }
    let targets: Vec<u32> = edges.iter().map(|&(_, to)| to).collect();
    let bfs = |start: u32| -> usize {
        let mut seen = vec![false; names.len()];
        seen[start as usize] = true;
        let mut queue = VecDeque::from([start]);
        let mut count = 0;
        while let Some(x) = queue.pop_front() {
            for &y in &targets[offsets[x as usize] as usize..offsets[x as usize + 1] as usize] {
                if !seen[y as usize] {
                    seen[y as usize] = true;
                    count += 1;
                    queue.push_back(y);
                }
            }
        }
        count
    };

    let top = names
        .iter()
        .max_by_key(|n| repo.dependents_count(n))
        .expect("a package")
        .clone();
    let direct = repo.dependents_count(&top);
    // The first walk after a change also freezes the adjacency array.
    let t = Instant::now();
    let first = repo.transitive_dependents(&top).len();
    let cold = t.elapsed();
    let trials = 11;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let mut sizes = (0, 0);
    for _ in 0..trials {
        let t = Instant::now();
        sizes.0 = repo.transitive_dependents(&top).len();
        ours.push(t.elapsed());
        let t = Instant::now();
        sizes.1 = bfs(index[&top]);
        base.push(t.elapsed());
    }
    assert_eq!(sizes.0, sizes.1, "the graph and the baseline agree");
    let (o, b) = (median(&mut ours), median(&mut base));
    assert_eq!(first, sizes.0);
    println!(
        "graph: {label}: transitive dependents of {top} ({direct} direct, {} in all): {:.2} ms vs baseline BFS {:.2} ms, ratio {:.2} (goal <= 2); first walk after a change {:.1} ms",
        sizes.0,
        ms(o),
        ms(b),
        o.as_secs_f64() / b.as_secs_f64(),
        ms(cold)
    );

    // Resolve a typical package: the median by closure size among packages
    // with dependencies, in its latest version.
    let mut with_deps: Vec<&PackageName> = names
        .iter()
        .filter(|n| repo.latest(n).is_some_and(|r| !r.dependencies.is_empty()))
        .collect();
    with_deps.sort_by_key(|n| repo.dependency_closure(n).len());
    // From the median outwards, the first that resolves (the 2019 subset
    // lacks some crates that others name).
    let mid = with_deps.len() / 2;
    let typical = (0..with_deps.len())
        .map(|i| {
            if i % 2 == 0 {
                mid + i / 2
            } else {
                mid.saturating_sub(i / 2 + 1)
            }
        })
        .filter_map(|i| with_deps.get(i))
        .find(|n| repo.resolve(n, &repo.latest(n).unwrap().version).is_ok())
        .copied()
        .unwrap_or(with_deps[mid])
        .clone();
    let version = repo.latest(&typical).unwrap().version.clone();
    let t = Instant::now();
    let resolved = repo.resolve(&typical, &version);
    println!(
        "graph: {label}: resolve {typical} {version}: {} in {:.1} ms",
        match &resolved {
            Ok(r) => format!("{} packages", r.len()),
            Err(_) => "no solution".into(),
        },
        ms(t.elapsed())
    );

    // Obsolete the most depended-upon package: plan, pins, one email each.
    let templates = Templates::new(None);
    let mut copy = repo.clone();
    let t = Instant::now();
    let plan = copy.obsolescence_plan(&top);
    for pin in &plan {
        copy.pin(pin.dependent.clone(), top.clone(), pin.max.clone());
        let ctx = DependencyObsoletedEmail {
            package: pin.dependent.to_string(),
            version: pin.version.to_string(),
            dependency: top.to_string(),
            reason: "benchmark".into(),
            replacement: None,
            pin: format!("{}, <={}", pin.requirement, pin.max),
            server_url: "http://holdq.example".into(),
        };
        std::hint::black_box(templates.render("dependency_obsoleted", &ctx)?);
    }
    copy.set_obsolete(
        top.clone(),
        Obsolescence {
            reason: "benchmark".into(),
            replacement: None,
        },
    );
    println!(
        "graph: {label}: obsolete {top} in memory: {} pins and emails rendered in {:.0} ms",
        plan.len(),
        ms(t.elapsed())
    );
    Ok(repo)
}

/// The real use case on SQLite: the crates.io graph in a database, and the
/// most depended-upon package obsoleted through `service::obsolete`.
async fn obsolete_through_the_service(rows: &[Row], repo: &StableRepo) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = holdq::config::Config::for_data_dir(&dir.path().join("data"));
    config.database_url = format!("sqlite://{}/holdq.db", dir.path().display());
    let app = holdq::service::App::open_with(
        config,
        holdq::sandbox::Sandbox::new(env!("CARGO_BIN_EXE_holdq").into()),
    )
    .await?;
    let (operator, _) = holdq::service::users::add_user(
        &app.db,
        "bench@example.org",
        holdq::service::users::Role::Operator,
    )
    .await?;
    let t = Instant::now();
    let mut tx = app.db.begin_write().await?;
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut loaded = 0;
    for row in rows {
        let Ok(name) = PackageName::parse(&row.name) else {
            continue;
        };
        if !repo.contains(&name) {
            continue;
        }
        let id = match ids.get(&row.name) {
            Some(id) => *id,
            None => {
                holdq::db::packages::insert_if_missing(&mut tx, &row.name).await?;
                let id = holdq::db::packages::find_by_name(&mut tx, &row.name)
                    .await?
                    .expect("inserted")
                    .id;
                ids.insert(row.name.clone(), id);
                id
            }
        };
        let deps: BTreeMap<String, String> = row
            .deps
            .iter()
            .filter(|(d, _)| PackageName::parse(d).is_ok() && *d != row.name)
            .map(|(d, r)| (d.clone(), r.to_string()))
            .collect();
        let manifest = serde_json::json!({
            "name": row.name, "version": row.version.to_string(),
            "maintainers": [{"name": null, "email": format!("{}@example.org", row.name)}],
            "description": "", "license": "", "dependencies": deps,
            "build": {"command": "true", "test": null, "platforms": null},
        });
        sqlx::query("INSERT INTO versions (package_id, version, sha256, size_bytes, manifest, promoted_at) VALUES ($1, $2, '', 0, $3, 0) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(row.version.to_string())
            .bind(manifest.to_string())
            .execute(&mut *tx)
            .await?;
        loaded += 1;
    }
    tx.commit().await?;
    println!(
        "graph: service: {loaded} versions written to SQLite in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Every version's archive, as promotion leaves them (empty stand-ins):
    // the index is never published naming a missing one.
    for row in rows {
        if ids.contains_key(&row.name) {
            let path = app.stable.archive_path(&row.name, &row.version.to_string());
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(path, b"")?;
        }
    }
    holdq::service::stable::with_repo(&app, |_| ()).await?; // the model, as at start-up

    let top = repo
        .package_names()
        .max_by_key(|n| repo.dependents_count(n))
        .expect("a package")
        .clone();
    let user = holdq::service::users::User {
        id: operator.id,
        email: operator.email.clone(),
        is_operator: true,
        is_worker: false,
    };
    let t = Instant::now();
    let outcome =
        holdq::service::obsolete::obsolete(&app, &user, top.as_str(), "benchmark", None, false)
            .await?;
    println!(
        "graph: service: obsolete {top} on SQLite: {} pins, {} emails queued, index republished, in {:.2} s (goal < 2 s)",
        outcome.pins.len(),
        outcome.emails,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
