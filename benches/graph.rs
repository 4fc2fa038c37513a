//! The stable dependency graph at scale: the real crates.io graph of 2019
//! (`benches/data/crates-index-2019.jsonl.gz`, ~127k versions, or any index
//! of that format named by `HOLDQ_BENCH_INDEX`) and a
//! synthetic one of 1.7 million versions with a Zipf-like fan-in. For each:
//! time and memory to load; transitive dependents of the most depended-upon
//! package, against a breadth-first search over a compact adjacency array
//! built from the same data (goal: within 2x); resolving a typical package;
//! obsoleting the most depended-upon package, pins and email rendering
//! included (goal: under 2 s with thousands of dependents). The same
//! obsolescence through the service, on SQLite and PostgreSQL, is in the
//! `index` benchmark.
//!
//! Run: `cargo bench --bench graph`.

mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use support::index_data::{Row, index_path, read_crates, synthetic};

use holdq::domain::PackageName;
use holdq::domain::graph::{Obsolescence, StableRepo};
use holdq::domain::resolve::Release;
use holdq::email::Templates;
use holdq::service::notify::DependencyObsoletedEmail;
use semver::VersionReq;

fn main() -> anyhow::Result<()> {
    let path = index_path();
    if path.is_file() {
        let (rows, skipped) = read_crates(&path)?;
        println!(
            "graph: {}: {} versions read, {skipped} requirements skipped (legacy syntax the semver crate refuses)",
            path.display(),
            rows.len()
        );
        measure("crates.io", &rows)?;
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

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
