//! The check chain of an upload (SPEC section 4): `validate` and `resolve`
//! when it leaves the queue, then per platform `build`, `test` and
//! `revdeps` on that platform's workers. Every step re-reads the upload and
//! does nothing once it is no longer being checked.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::App;
use super::build::{Source, Workspace};
use super::faults::Stage;
use crate::config::PlatformConfig;
use crate::db::{self, checks::Finished, checks::NewCheck, uploads::UploadRow};
use crate::domain::check::{CheckKind, CheckState, InfraReason};
use crate::domain::graph::StableRepo;
use crate::domain::integrity::{Base, Closure};
use crate::domain::metadata::BuildMetadata;
use crate::domain::passmark::{CheckInputs, PlannedCheck};
use crate::domain::resolve::Release;
use crate::domain::{Manifest, UploadState};
use crate::sandbox::{Ending, RunOutcome};
use crate::storage::archive;

/// Halt signals of the uploads whose checks run in this process.
#[derive(Clone, Debug, Default)]
pub struct Halts(Arc<Mutex<HashMap<i64, CancellationToken>>>);

impl Halts {
    /// The token that halts `upload_id`'s runs.
    pub fn token(&self, upload_id: i64) -> CancellationToken {
        self.0
            .lock()
            .expect("halts lock")
            .entry(upload_id)
            .or_default()
            .clone()
    }

    /// Halts every run of `upload_id` in this process, at once.
    pub fn halt(&self, upload_id: i64) {
        if let Some(token) = self.0.lock().expect("halts lock").remove(&upload_id) {
            token.cancel();
        }
    }

    pub fn forget(&self, upload_id: i64) {
        self.0.lock().expect("halts lock").remove(&upload_id);
    }

    /// Halts this process's runs of every upload another process halts
    /// (announced by PostgreSQL), for as long as the process lives.
    pub fn follow(&self, queues: &crate::jobs::Queues) {
        let mut halted = queues.halted_uploads();
        let halts = self.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match halted.recv().await {
                    Ok(upload_id) => halts.halt(upload_id),
                    Err(RecvError::Lagged(_)) => continue, // the watchers catch up
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}

/// Takes every queued upload out of the queue, front first.
pub async fn start_queued(app: &App) -> anyhow::Result<usize> {
    let ids = {
        let mut conn = app.db.pool().acquire().await?;
        db::uploads::queued_ids(&mut conn).await?
    };
    let mut started = 0;
    for id in ids {
        if start_upload(app, id).await? {
            started += 1;
        }
    }
    Ok(started)
}

fn parse_manifest(row: &UploadRow) -> anyhow::Result<Manifest> {
    serde_json::from_str(&row.manifest).context("stored manifest")
}

pub(super) fn release_of(manifest: &Manifest) -> Release {
    Release {
        version: manifest.version.clone(),
        dependencies: manifest.dependencies.clone(),
    }
}

/// A dependency on an obsolete package is refused unless the package
/// already had it (its pin carries over).
pub fn refuse_new_obsolete(repo: &StableRepo, manifest: &Manifest) -> Result<(), String> {
    for dep in manifest.dependencies.keys() {
        if let Some(why) = repo.obsolescence(dep)
            && repo.pin_of(&manifest.name, dep).is_none()
        {
            let instead = why
                .replacement
                .as_ref()
                .map(|r| format!("; use {r} instead"))
                .unwrap_or_default();
            return Err(format!(
                "{dep} is obsolete ({}){instead}: a new dependency on an obsolete package is refused",
                why.reason
            ));
        }
    }
    Ok(())
}

/// The platforms an upload is checked on.
fn platforms_of<'a>(app: &'a App, manifest: &Manifest) -> Vec<&'a PlatformConfig> {
    app.config
        .platforms
        .iter()
        .filter(|p| {
            manifest
                .build
                .platforms
                .as_ref()
                .is_none_or(|list| list.contains(&p.name))
        })
        .collect()
}

/// Moves one upload from `queued` to `checking`: runs `validate` and
/// `resolve`, creates the per-platform checks and enqueues them. False when
/// the upload was no longer queued.
pub async fn start_upload(app: &App, upload_id: i64) -> anyhow::Result<bool> {
    let row = {
        let mut conn = app.db.pool().acquire().await?;
        match db::uploads::get(&mut conn, upload_id).await? {
            Some(row) if row.state == UploadState::Queued => row,
            _ => return Ok(false),
        }
    };
    let manifest = parse_manifest(&row)?;
    // Without speculation, it leaves the queue only once the related
    // uploads ahead of it are decided.
    let blockers = super::integrity::blockers(app, &row, &manifest).await?;
    if !blockers.is_empty() {
        let line = format!("waiting for {} ahead of it", blockers.join(", "));
        if row.state_reason.as_deref() != Some(line.as_str()) {
            let mut conn = app.db.pool().acquire().await?;
            db::uploads::set_reason(&mut conn, upload_id, Some(&line)).await?;
        }
        return Ok(false);
    }
    let validate = validate_kept_archive(app, &row).await?;
    // resolve: against its future stable (stable plus the uploads ahead).
    let (resolve_base, resolution) = super::integrity::closure_base(app, &row, &manifest).await?;
    let platforms: Vec<&str> = platforms_of(app, &manifest)
        .into_iter()
        .map(|p| p.name.as_str())
        .collect();
    let plan = super::passmark::current(app).await?.plan(CheckInputs {
        validate,
        resolve: resolution.clone().map(|()| resolve_base.closure.len()),
        platforms: &platforms,
        has_test: manifest.build.test.is_some(),
    });

    let mut tx = app.db.begin_write().await?;
    // Serialise with supersession and promotion of the same package (they
    // lock it first too): without it, two servers' transactions can take
    // the upload's row and its checks in opposite orders and deadlock.
    db::packages::lock_by_name(&mut tx, &row.name, app.db.for_update()).await?;
    let (queued, checking) = (UploadState::Queued, UploadState::Checking);
    if !db::uploads::transition(&mut tx, upload_id, queued, checking).await? {
        return Ok(false);
    }
    if row.state_reason.is_some() {
        db::uploads::set_reason(&mut tx, upload_id, None).await?; // it waits no more
    }
    if resolution.is_ok() {
        let json = resolution_json(&resolve_base.closure);
        db::uploads::set_resolution(&mut tx, upload_id, true, &json).await?;
    }
    let mut builds = Vec::new();
    for check in &plan {
        let id = record_planned(&mut tx, upload_id, check).await?;
        match check.kind {
            CheckKind::Resolve => {
                db::checks::set_base(&mut tx, id, &serde_json::to_string(&resolve_base)?).await?;
            }
            CheckKind::Build if check.state == CheckState::Pending => {
                builds.push((check.platform.clone(), id));
            }
            _ => {}
        }
    }
    let assumed: Vec<i64> = resolve_base.assumptions(upload_id).into_iter().collect();
    db::assumptions::add(&mut tx, upload_id, &assumed).await?;
    tx.commit().await?;
    tracing::info!(upload.id = upload_id, package.name = %manifest.name, checks.platforms = builds.len(), "checks started");

    if builds.is_empty() {
        super::verdict::decide(app, upload_id).await?;
    }
    for (platform, check_id) in builds {
        enqueue_check(app, &platform, check_id, 0, 0).await?;
    }
    Ok(true)
}

/// `validate`: the kept archive still has its hash and obeys section 2;
/// the error says why not.
async fn validate_kept_archive(app: &App, row: &UploadRow) -> anyhow::Result<Result<(), String>> {
    let blob = app.storage.blob_path(&row.sha256);
    let limits = app.archive_limits();
    let expected = row.sha256.clone();
    Ok(tokio::task::spawn_blocking(move || -> Result<(), String> {
        let file =
            std::fs::File::open(&blob).map_err(|e| format!("the archive is missing: {e}"))?;
        let mut hashing = HashingReader::new(std::io::BufReader::new(file));
        archive::inspect(&mut hashing, limits).map_err(|e| e.to_string())?;
        let actual = hex::encode(hashing.hasher.finalize());
        if actual != expected {
            return Err(format!(
                "the kept archive hashes to {actual}, not {expected}"
            ));
        }
        Ok(())
    })
    .await?)
}

/// Inserts a check of the plan (final ones with their result); its id.
async fn record_planned(
    tx: &mut db::Tx,
    upload_id: i64,
    check: &PlannedCheck,
) -> anyhow::Result<i64> {
    let new = NewCheck {
        upload_id,
        kind: check.kind,
        platform: &check.platform,
        weight: check.weight,
        required: check.required,
    };
    let id = db::checks::insert(tx, new).await?;
    if check.state.is_final() {
        let result = Finished {
            state: check.state,
            duration_ms: 0,
            summary: &check.summary,
            log: "",
            metadata: &json!({}),
        };
        db::checks::finish(tx, id, result).await?;
    }
    Ok(id)
}

/// Pushes the job of a build check unless its platform is paused (a resume
/// pushes every pending check of the platform). `attempts` and `failures`
/// (jobs that ended without starting it) are the check's, part of the job's
/// key: a check gets a new job exactly when one of them moved.
pub async fn enqueue_check(
    app: &App,
    platform: &str,
    check_id: i64,
    attempts: i64,
    failures: i64,
) -> anyhow::Result<()> {
    let (paused, generation, rebases) = {
        let mut conn = app.db.pool().acquire().await?;
        let (paused, generation) = db::operators::platform_state(&mut conn, platform).await?;
        let rebases = db::checks::rebases_of_check(&mut conn, check_id).await?;
        (paused, generation, rebases)
    };
    if paused {
        return Ok(());
    }
    app.queues
        .push_check(platform, check_id, attempts, generation, failures, rebases)
        .await
}

fn resolution_json(r: &Closure) -> String {
    serde_json::to_string(&resolution_of(r)).expect("a map of strings serializes")
}

/// Runs the checks of one platform for the upload of build check
/// `check_id` (build, then test, then revdeps), then decides the upload
/// or asks a server to. Idempotent.
pub async fn run_platform(app: &App, check_id: i64, worker: &str) -> anyhow::Result<()> {
    let Some(upload_id) = run_platform_checks(app, check_id, worker).await? else {
        return Ok(());
    };
    {
        let mut conn = app.db.pool().acquire().await?;
        db::checks::clear_infra(&mut conn, check_id).await?; // its chain ran
    }
    if app.remote.is_some() {
        // No stable storage here to promote into: a server decides. This
        // process runs one platform, so the upload's runs here are over.
        app.halts.forget(upload_id);
        app.queues.push_decide(upload_id).await?;
    } else {
        super::verdict::decide(app, upload_id).await?;
    }
    Ok(())
}

/// The checks of [`run_platform`] without the decision (a worker step
/// tests call); the upload's id when they ran to their end.
pub async fn run_platform_checks(
    app: &App,
    check_id: i64,
    worker: &str,
) -> anyhow::Result<Option<i64>> {
    let mut conn = app.db.pool().acquire().await?;
    let Some(build) = db::checks::get(&mut conn, check_id).await? else {
        return Ok(None);
    };
    let upload_id = build.upload_id;
    let Some(row) = db::uploads::get(&mut conn, upload_id).await? else {
        return Ok(None);
    };
    drop(conn);
    if row.state != UploadState::Checking {
        return Ok(None); // superseded or already decided: no side effect
    }
    {
        let mut conn = app.db.pool().acquire().await?;
        if db::operators::platform_state(&mut conn, &build.platform)
            .await?
            .0
        {
            return Ok(None); // paused: the check waits; resume pushes it again
        }
    }
    let Some(platform) = app.config.platform(&build.platform).cloned() else {
        anyhow::bail!(
            "check {check_id} is for platform {:?}, which this worker's config lacks",
            build.platform
        );
    };
    let manifest = parse_manifest(&row)?;
    let halt = app.halts.token(upload_id);
    let watcher = watch_upload(app.clone(), upload_id, halt.clone());
    let result = run_chain(app, &row, &manifest, &platform, worker, &halt).await;
    watcher.abort();
    result?;
    Ok(Some(upload_id))
}

/// Halts the runs of `upload_id` when it stops being checked, for workers in
/// other processes than the one that superseded it. On PostgreSQL the halt
/// arrives as a notification first; this look at the upload's state is the
/// fallback (and the only way on SQLite).
fn watch_upload(app: App, upload_id: i64, halt: CancellationToken) -> tokio::task::JoinHandle<()> {
    let every = match app.db.backend() {
        db::Backend::Sqlite => Duration::from_millis(200),
        db::Backend::Postgres => Duration::from_secs(1),
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = halt.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Ok(mut conn) = app.db.pool().acquire().await else {
                continue;
            };
            if let Ok(Some(row)) = db::uploads::get(&mut conn, upload_id).await
                && row.state != UploadState::Checking
            {
                halt.cancel();
                return;
            }
        }
    })
}

/// The checks of one platform of an upload, by kind.
async fn platform_checks(
    app: &App,
    upload_id: i64,
    platform: &str,
) -> anyhow::Result<HashMap<CheckKind, db::checks::CheckRow>> {
    let mut conn = app.db.pool().acquire().await?;
    Ok(db::checks::of_upload(&mut conn, upload_id)
        .await?
        .into_iter()
        .filter(|c| c.platform == platform)
        .map(|c| (c.kind, c))
        .collect())
}

/// Records a check's result unless the upload was halted meanwhile.
pub(super) async fn finish(
    app: &App,
    check_id: i64,
    state: CheckState,
    summary: &str,
    log: &str,
    duration: Duration,
    metadata: serde_json::Value,
) -> anyhow::Result<()> {
    let mut conn = app.db.pool().acquire().await?;
    db::checks::finish(
        &mut conn,
        check_id,
        Finished {
            state,
            duration_ms: duration.as_millis() as i64,
            summary,
            log,
            metadata: &metadata,
        },
    )
    .await?;
    Ok(())
}

pub(super) fn describe(outcome: &RunOutcome) -> String {
    match &outcome.ending {
        Ending::Exited(0) => format!("exited 0 in {:.1}s", outcome.duration.as_secs_f64()),
        Ending::Exited(code) => {
            format!("exited {code} after {:.1}s", outcome.duration.as_secs_f64())
        }
        Ending::TimedOut => format!(
            "killed at the time limit after {:.1}s",
            outcome.duration.as_secs_f64()
        ),
        Ending::Halted => "halted".into(),
        Ending::DiskLimit(bytes) => format!(
            "disk limit ({}) reached after {:.1}s",
            crate::sandbox::policy::human_size(*bytes),
            outcome.duration.as_secs_f64()
        ),
    }
}

pub(super) fn state_of(outcome: &RunOutcome) -> CheckState {
    if outcome.succeeded() {
        CheckState::Passed
    } else {
        CheckState::Failed
    }
}

async fn run_chain(
    app: &App,
    row: &UploadRow,
    manifest: &Manifest,
    platform: &PlatformConfig,
    worker: &str,
    halt: &CancellationToken,
) -> anyhow::Result<()> {
    let mut checks = platform_checks(app, row.id, platform.name.as_str()).await?;
    let Some(build) = checks.remove(&CheckKind::Build) else {
        return Ok(());
    };
    let test = checks.remove(&CheckKind::Test);
    let revdeps = checks.remove(&CheckKind::Revdeps);
    let left = [Some(&build), test.as_ref(), revdeps.as_ref()];
    if waits_for_uploads_ahead(app, row, manifest, build.id, left).await? {
        return Ok(());
    }
    let chain = Chain {
        app,
        row,
        manifest,
        platform,
        worker,
        halt,
        source: Source {
            archive: super::archives::upload_archive(app, row)
                .await
                .context(Stage(InfraReason::Fetch))?,
            top: manifest.dir_name(),
        },
    };
    let build_passed = if build.state.is_final() {
        build.state == CheckState::Passed
    } else {
        let Some(built) = chain.build(&build).await? else {
            return Ok(()); // halted, or another worker has it
        };
        if let (Some(test), Some(command), Some(ws)) = (&test, &manifest.build.test, &built.ws)
            && !test.state.is_final()
            && built.passed
            && !chain.test(test, command, ws, &built.base).await?
        {
            return Ok(());
        }
        built.passed
    };
    if !build_passed {
        return skip_rest(app, test.as_ref(), revdeps.as_ref()).await;
    }
    if let Some(revdeps) = &revdeps
        && !revdeps.state.is_final()
    {
        if !mark_running(app, revdeps.id, worker).await? {
            return Ok(());
        }
        let source = &chain.source;
        super::revdeps::run(app, row, manifest, source, platform, revdeps.id, halt).await?;
    }
    Ok(())
}

/// Past its rebases (or without speculation) the checks left wait for the
/// related uploads ahead: true (recorded on the build check, whose job the
/// sweep renews) when they must.
async fn waits_for_uploads_ahead(
    app: &App,
    row: &UploadRow,
    manifest: &Manifest,
    build_id: i64,
    checks: [Option<&db::checks::CheckRow>; 3],
) -> anyhow::Result<bool> {
    if checks.into_iter().flatten().all(|c| c.state.is_final()) {
        return Ok(false);
    }
    let blockers = super::integrity::blockers(app, row, manifest).await?;
    if blockers.is_empty() {
        return Ok(false);
    }
    let why = format!("waiting for {} ahead of it", blockers.join(", "));
    let mut conn = app.db.pool().acquire().await?;
    db::checks::record_wait(&mut conn, build_id, &why).await?;
    Ok(true)
}

/// One run of a platform's checks of an upload, and what its steps share.
struct Chain<'a> {
    app: &'a App,
    row: &'a UploadRow,
    manifest: &'a Manifest,
    platform: &'a PlatformConfig,
    worker: &'a str,
    halt: &'a CancellationToken,
    source: Source,
}

/// A build that ran to its end (or could not resolve, and failed).
struct Built {
    /// Its workspace, where the test runs; none when it did not run.
    ws: Option<Workspace>,
    base: Base,
    passed: bool,
}

impl Chain<'_> {
    /// Runs the build check (tried again up to the platform's `retries`);
    /// `None` when it was halted or another worker runs it.
    async fn build(&self, build: &db::checks::CheckRow) -> anyhow::Result<Option<Built>> {
        let app = self.app;
        if !mark_running(app, build.id, self.worker).await? {
            return Ok(None);
        }
        // Resolve again now, against the future stable as it is when the
        // build runs; that is the build's base.
        let (base, resolved) = super::integrity::closure_base(app, self.row, self.manifest).await?;
        super::integrity::record_base(app, self.row.id, build.id, &base).await?;
        if let Err(e) = resolved {
            let why = format!("the dependencies no longer resolve: {e}");
            let (failed, no_time) = (CheckState::Failed, Duration::ZERO);
            finish(app, build.id, failed, &why, "", no_time, json!({})).await?;
            let built = Built {
                ws: None,
                base,
                passed: false,
            };
            return Ok(Some(built));
        }
        let manual_retry = BuildMetadata::parse(build.metadata.as_deref()).manual_retry;
        let Some((ws, outcome, tries)) = self.try_build(build, &base).await? else {
            return Ok(None);
        };
        let flaky = outcome.succeeded() && (tries > 1 || manual_retry);
        let mut summary = describe(&outcome);
        if flaky {
            summary.push_str(if tries > 1 {
                " on a retry (flaky)"
            } else {
                " when retried by an operator (flaky)"
            });
        }
        let (installed, files) = crate::storage::unpack::file_list(&ws.dest_dir)?;
        let metadata = BuildMetadata {
            duration_ms: outcome.duration.as_millis() as u64,
            installed_bytes: installed,
            files,
            resolved: Some(resolution_of(&base.closure)),
            tries,
            flaky,
            manual_retry: false,
        };
        let state = state_of(&outcome);
        let (log, took) = (&outcome.output, outcome.duration);
        let metadata = serde_json::to_value(&metadata)?;
        finish(app, build.id, state, &summary, log, took, metadata).await?;
        tracing::info!(upload.id = self.row.id, check.platform = %self.platform.name, check.kind = %CheckKind::Build, check.state = %state, duration_ms = took.as_millis() as u64, "check finished");
        Ok(Some(Built {
            ws: Some(ws),
            base,
            passed: outcome.succeeded(),
        }))
    }

    /// A failed build is tried again, in a fresh workspace, up to the
    /// platform's `retries`; the last try's workspace and outcome, and how
    /// many tries it took; `None` when halted.
    async fn try_build(
        &self,
        build: &db::checks::CheckRow,
        base: &Base,
    ) -> anyhow::Result<Option<(Workspace, RunOutcome, i64)>> {
        let platform = self.platform;
        let mut tries = 0;
        loop {
            tries += 1;
            let source = Source {
                archive: self.source.archive.clone(),
                top: self.source.top.clone(),
            };
            let mut ws = Workspace::prepare(self.app, platform, source, &base.closure, None)
                .await
                .context(Stage(InfraReason::Unpack))?;
            // Tries over the check's life: an operator's retry continues the count.
            ws.try_number = build.attempts + tries;
            let command = &self.manifest.build.command;
            let outcome = ws
                .run(self.app, platform, command, self.halt)
                .await
                .context(Stage(InfraReason::Sandbox))?;
            if outcome.ending == Ending::Halted {
                return Ok(None);
            }
            if outcome.succeeded() || tries > i64::from(platform.retries) {
                return Ok(Some((ws, outcome, tries)));
            }
            tracing::info!(
                upload.id = self.row.id,
                check.platform = %platform.name,
                check.kind = %CheckKind::Build,
                tries,
                "build failed; retrying"
            );
        }
    }

    /// Runs the test command in the build's workspace; false when it was
    /// halted or another worker runs it.
    async fn test(
        &self,
        test: &db::checks::CheckRow,
        command: &str,
        ws: &Workspace,
        base: &Base,
    ) -> anyhow::Result<bool> {
        let app = self.app;
        if !mark_running(app, test.id, self.worker).await? {
            return Ok(false);
        }
        super::integrity::record_base(app, self.row.id, test.id, base).await?;
        let outcome = ws
            .run(app, self.platform, command, self.halt)
            .await
            .context(Stage(InfraReason::Sandbox))?;
        if outcome.ending == Ending::Halted {
            return Ok(false);
        }
        let (state, summary) = (state_of(&outcome), describe(&outcome));
        let (log, took) = (&outcome.output, outcome.duration);
        finish(app, test.id, state, &summary, log, took, json!({})).await?;
        Ok(true)
    }
}

/// `name -> version` of a closure, as build metadata records it.
fn resolution_of(closure: &Closure) -> std::collections::BTreeMap<String, String> {
    closure
        .iter()
        .map(|(n, p)| (n.to_string(), p.version.to_string()))
        .collect()
}

async fn mark_running(app: &App, check_id: i64, worker: &str) -> anyhow::Result<bool> {
    let mut conn = app.db.pool().acquire().await?;
    Ok(db::checks::mark_running(&mut conn, check_id, worker).await?)
}

async fn skip_rest(
    app: &App,
    test: Option<&db::checks::CheckRow>,
    revdeps: Option<&db::checks::CheckRow>,
) -> anyhow::Result<()> {
    for check in [test, revdeps].into_iter().flatten() {
        finish(
            app,
            check.id,
            CheckState::Skipped,
            "skipped: the build failed",
            "",
            Duration::ZERO,
            json!({}),
        )
        .await?;
    }
    Ok(())
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
