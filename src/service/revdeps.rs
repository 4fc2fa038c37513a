//! The `revdeps` check: the stable packages that depend on an upload,
//! rebuilt against it on the platform, each compared with a build against
//! stable as it is, so that only regressions count.

use anyhow::Context;
use semver::Version;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::App;
use super::build::{Source, Workspace};
use super::checks::{describe, finish, release_of};
use super::stable::with_repo;
use crate::config::PlatformConfig;
use crate::db;
use crate::domain::check::CheckState;
use crate::domain::graph::StableRepo;
use crate::domain::resolve::Resolution;
use crate::domain::{Manifest, PackageName};
use crate::sandbox::{Ending, RunOutcome};

/// Rebuilds the stable dependents of the package whose requirement admits
/// the new version, against it; passes when the fraction that still build
/// reaches `revdeps.min_fraction`. A dependent that already fails against
/// stable is no regression and does not count.
pub async fn run(
    app: &App,
    manifest: &Manifest,
    source: &Source,
    platform: &PlatformConfig,
    check_id: i64,
    halt: &CancellationToken,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let passmark = super::passmark::current(app).await?;
    let max = passmark.revdeps_max_dependents as usize;
    let release = release_of(manifest);
    // Every resolution up front, from one look at stable: each dependent
    // with the upload in place of its package, and as stable is.
    let plan = with_repo(app, |repo| {
        revdep_candidates(repo, &manifest.name, &manifest.version, max)
            .into_iter()
            .map(|(d, v)| {
                let with_new = repo
                    .universe()
                    .resolve_with(&d, &v, (&manifest.name, &release));
                let as_is = repo.resolve(&d, &v);
                (d, v, with_new, as_is)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    let candidates_len = plan.len();
    let (mut ok, mut regressions, mut already_broken) = (0u32, Vec::new(), Vec::new());
    let mut log = String::new();
    let mut results = Vec::new();
    for (dependent, version, with_new, as_is) in &plan {
        let (dependent, version) = (dependent, version);
        let command = dependent_build_command(app, dependent, version).await?;
        let against_new = match with_new {
            Ok(resolution) => {
                let overlay = Some((manifest.name.as_str(), source));
                match build_stable(
                    app, dependent, version, resolution, overlay, platform, &command, halt,
                )
                .await?
                {
                    Some(outcome) => Some(outcome),
                    None => return Ok(()), // halted
                }
            }
            Err(e) => {
                log.push_str(&format!(
                    "== {dependent} {version}: does not resolve with the new version: {e}\n"
                ));
                None
            }
        };
        if against_new.as_ref().is_some_and(RunOutcome::succeeded) {
            ok += 1;
            results.push(
                json!({"name": dependent.as_str(), "version": version.to_string(), "result": "ok"}),
            );
            continue;
        }
        if let Some(o) = &against_new {
            log.push_str(&format!(
                "== {dependent} {version} against the new version: {}\n{}\n",
                describe(o),
                o.output
            ));
        }
        // Does it build against stable as it is? If not, it was broken already.
        let baseline_ok = match as_is {
            Ok(resolution) => match build_stable(
                app, dependent, version, resolution, None, platform, &command, halt,
            )
            .await?
            {
                Some(outcome) => outcome.succeeded(),
                None => return Ok(()), // halted
            },
            Err(_) => false,
        };
        let result = if baseline_ok {
            "regression"
        } else {
            "already broken"
        };
        results.push(
            json!({"name": dependent.as_str(), "version": version.to_string(), "result": result}),
        );
        if baseline_ok {
            regressions.push(format!("{dependent} {version}"));
        } else {
            already_broken.push(format!("{dependent} {version}"));
        }
    }
    let counted = ok as usize + regressions.len();
    let fraction = if counted == 0 {
        1.0
    } else {
        ok as f64 / counted as f64
    };
    let passed = passmark.revdeps_pass(fraction);
    let summary = if candidates_len == 0 {
        "no stable dependents".to_owned()
    } else {
        let mut s = format!(
            "{ok} of {counted} dependents still build ({:.0}%)",
            fraction * 100.0
        );
        if !regressions.is_empty() {
            s.push_str(&format!("; broken: {}", regressions.join(", ")));
        }
        if !already_broken.is_empty() {
            s.push_str(&format!(
                "; already broken, not counted: {}",
                already_broken.join(", ")
            ));
        }
        s
    };
    let state = if passed {
        CheckState::Passed
    } else {
        CheckState::Failed
    };
    finish(
        app,
        check_id,
        state,
        &summary,
        &log,
        started.elapsed(),
        json!({"fraction": fraction, "dependents": results}),
    )
    .await
}

/// Stable dependents whose latest version requires the package in a way
/// that admits `version`, most-depended-upon first, at most `max`.
pub fn revdep_candidates(
    stable: &StableRepo,
    name: &PackageName,
    version: &Version,
    max: usize,
) -> Vec<(PackageName, Version)> {
    let mut admitted: Vec<(usize, PackageName, Version)> = stable
        .dependents(name)
        .into_iter()
        .filter_map(|d| {
            let latest = stable.latest(&d)?;
            let req = latest.dependencies.get(name)?;
            req.matches(version).then(|| {
                (
                    stable.dependents_count(&d),
                    d.clone(),
                    latest.version.clone(),
                )
            })
        })
        .collect();
    admitted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    admitted
        .into_iter()
        .take(max)
        .map(|(_, n, v)| (n, v))
        .collect()
}

/// Builds the stable version `name` `version` against `resolution` (with
/// `overlay` standing in for one package); `None` when halted.
#[allow(clippy::too_many_arguments)]
async fn build_stable(
    app: &App,
    name: &PackageName,
    version: &Version,
    resolution: &Resolution,
    overlay: Option<(&str, &Source)>,
    platform: &PlatformConfig,
    command: &str,
    halt: &CancellationToken,
) -> anyhow::Result<Option<RunOutcome>> {
    let source = Source {
        archive: super::archives::stable_archive(app, name.as_str(), &version.to_string()).await?,
        top: format!("{name}-{version}"),
    };
    let ws = Workspace::prepare(app, platform, source, resolution, overlay).await?;
    let outcome = ws.run(app, platform, command, halt).await?;
    Ok((outcome.ending != Ending::Halted).then_some(outcome))
}

async fn dependent_build_command(
    app: &App,
    name: &PackageName,
    version: &Version,
) -> anyhow::Result<String> {
    let mut conn = app.db.pool().acquire().await?;
    let row = db::stable::version(&mut conn, name.as_str(), &version.to_string())
        .await?
        .with_context(|| format!("{name} {version} vanished from stable"))?;
    let manifest: Manifest = serde_json::from_str(&row.manifest)?;
    Ok(manifest.build.command)
}
