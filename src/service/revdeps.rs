//! The `revdeps` check: the packages that depend on an upload (in stable
//! and ahead of it in the queue),
//! rebuilt against it on the platform, each compared with a build against
//! stable as it is, so that only regressions count.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::App;
use super::build::{Source, Workspace};
use super::checks::{describe, finish};
use super::integrity::PlannedRebuild;
use crate::config::PlatformConfig;
use crate::db::{self, uploads::UploadRow};
use crate::domain::Manifest;
use crate::domain::check::CheckState;
use crate::domain::integrity::{Closure, Dependent, Source as BaseSource};
use crate::domain::metadata::{DependentResult, RebuiltResult, RevdepsMetadata};
use crate::sandbox::{Ending, RunOutcome};

/// Rebuilds the dependents of the package in the upload's future stable
/// (stable ones, and pending uploads ahead of it) whose requirement admits
/// the new version, against it; passes when the fraction that still build
/// reaches `revdeps.min_fraction`. A dependent that already fails without
/// the upload is no regression and does not count.
pub async fn run(
    app: &App,
    row: &UploadRow,
    manifest: &Manifest,
    source: &Source,
    platform: &PlatformConfig,
    check_id: i64,
    halt: &CancellationToken,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let passmark = super::passmark::current(app).await?;
    let max = passmark.revdeps_max_dependents as usize;
    // Every resolution up front, from one look at the future stable.
    let (base, plan) = super::integrity::revdeps_plan(app, row, manifest, max).await?;
    super::integrity::record_base(app, row.id, check_id, &base).await?;
    let mut tally = Tally::default();
    let mut log = String::new();
    let mut results = Vec::new();
    let upload = (row.id, source);
    for planned in &plan {
        let Some(result) = rebuild(app, upload, planned, platform, halt, &mut log).await? else {
            return Ok(()); // halted
        };
        let d = &planned.dependent;
        tally.add(result, d);
        results.push(RebuiltResult {
            name: d.name.to_string(),
            version: d.version.to_string(),
            source: Some(d.source),
            result,
        });
    }
    let fraction = tally.fraction();
    let state = if passmark.revdeps_pass(fraction) {
        CheckState::Passed
    } else {
        CheckState::Failed
    };
    let metadata = serde_json::to_value(RevdepsMetadata {
        fraction,
        dependents: results,
    })?;
    let summary = tally.summary(plan.len());
    finish(
        app,
        check_id,
        state,
        &summary,
        &log,
        started.elapsed(),
        metadata,
    )
    .await
}

/// Rebuilds one dependent against the upload and, when that fails,
/// without it (a dependent that fails either way was broken already);
/// what failed goes to `log`. `None` when halted.
async fn rebuild(
    app: &App,
    upload: (i64, &Source),
    planned: &PlannedRebuild,
    platform: &PlatformConfig,
    halt: &CancellationToken,
    log: &mut String,
) -> anyhow::Result<Option<DependentResult>> {
    let PlannedRebuild {
        dependent: d,
        with_new,
        as_is,
    } = planned;
    let (dependent, version) = (&d.name, &d.version);
    let built = Built::of(app, d).await?;
    let against_new = match with_new {
        Ok(closure) => match built
            .build(app, closure, Some(upload), platform, halt)
            .await?
        {
            Some(outcome) => Some(outcome),
            None => return Ok(None),
        },
        Err(e) => {
            log.push_str(&format!(
                "== {dependent} {version}: does not resolve with the new version: {e}\n"
            ));
            None
        }
    };
    if against_new.as_ref().is_some_and(RunOutcome::succeeded) {
        return Ok(Some(DependentResult::Ok));
    }
    if let Some(o) = &against_new {
        log.push_str(&format!(
            "== {dependent} {version} against the new version: {}\n{}\n",
            describe(o),
            o.output
        ));
    }
    let baseline_ok = match as_is {
        Ok(closure) => match built.build(app, closure, None, platform, halt).await? {
            Some(outcome) => outcome.succeeded(),
            None => return Ok(None),
        },
        Err(_) => false,
    };
    Ok(Some(if baseline_ok {
        DependentResult::Regression
    } else {
        DependentResult::AlreadyBroken
    }))
}

/// The dependents that still build, broke, or were broken already.
#[derive(Default)]
struct Tally {
    ok: u32,
    regressions: Vec<String>,
    already_broken: Vec<String>,
}

impl Tally {
    fn add(&mut self, result: DependentResult, d: &Dependent) {
        let (dependent, version) = (&d.name, &d.version);
        let label = match d.source {
            BaseSource::Upload(id) => {
                format!("{dependent} {version} (upload {id}, not yet in stable)")
            }
            BaseSource::Stable => format!("{dependent} {version}"),
        };
        match result {
            DependentResult::Ok => self.ok += 1,
            DependentResult::Regression => self.regressions.push(label),
            DependentResult::AlreadyBroken => self.already_broken.push(label),
        }
    }

    /// The fraction of counted dependents (those not broken already) that
    /// still build; 1 when none counts.
    fn fraction(&self) -> f64 {
        let counted = self.ok as usize + self.regressions.len();
        if counted == 0 {
            1.0
        } else {
            f64::from(self.ok) / counted as f64
        }
    }

    fn summary(&self, candidates: usize) -> String {
        if candidates == 0 {
            return "no stable dependents".to_owned();
        }
        let counted = self.ok as usize + self.regressions.len();
        let mut s = format!(
            "{} of {counted} dependents still build ({:.0}%)",
            self.ok,
            self.fraction() * 100.0
        );
        if !self.regressions.is_empty() {
            s.push_str(&format!("; broken: {}", self.regressions.join(", ")));
        }
        if !self.already_broken.is_empty() {
            s.push_str(&format!(
                "; already broken, not counted: {}",
                self.already_broken.join(", ")
            ));
        }
        s
    }
}

/// A dependent to rebuild: its archive and build command, from stable or
/// from its pending upload.
struct Built {
    source: Source,
    command: String,
}

impl Built {
    async fn of(app: &App, d: &Dependent) -> anyhow::Result<Self> {
        let top = format!("{}-{}", d.name, d.version);
        let (archive, manifest) = match d.source {
            BaseSource::Stable => {
                let mut conn = app.db.pool().acquire().await?;
                let row = db::stable::version(&mut conn, d.name.as_str(), &d.version.to_string())
                    .await?
                    .with_context(|| format!("{} {} vanished from stable", d.name, d.version))?;
                drop(conn);
                let archive =
                    super::archives::stable_archive(app, d.name.as_str(), &d.version.to_string())
                        .await?;
                (archive, row.manifest)
            }
            BaseSource::Upload(id) => {
                let mut conn = app.db.pool().acquire().await?;
                let row = db::uploads::get(&mut conn, id)
                    .await?
                    .with_context(|| format!("upload {id} vanished"))?;
                drop(conn);
                (
                    super::archives::upload_archive(app, &row).await?,
                    row.manifest,
                )
            }
        };
        let manifest: Manifest = serde_json::from_str(&manifest)?;
        Ok(Self {
            source: Source { archive, top },
            command: manifest.build.command,
        })
    }

    /// Builds the dependent against `closure`; `None` when halted.
    async fn build(
        &self,
        app: &App,
        closure: &Closure,
        me: Option<(i64, &Source)>,
        platform: &PlatformConfig,
        halt: &CancellationToken,
    ) -> anyhow::Result<Option<RunOutcome>> {
        let source = Source {
            archive: self.source.archive.clone(),
            top: self.source.top.clone(),
        };
        let ws = Workspace::prepare(app, platform, source, closure, me).await?;
        let outcome = ws.run(app, platform, &self.command, halt).await?;
        Ok((outcome.ending != Ending::Halted).then_some(outcome))
    }
}
