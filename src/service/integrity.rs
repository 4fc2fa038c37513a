//! Speculative checks and the promotion rule, orchestrated (SPEC section 3,
//! rules 6 and 7; the rules themselves are `domain::integrity`): each
//! check runs against the future stable of its upload and records that
//! base; deciding waits for the uploads a base assumed; promotion, under
//! the lock that serialises every change of stable, compares each base
//! with what stable is now and rebases the checks whose base went stale.

use std::collections::{BTreeMap, BTreeSet};

use super::App;
use super::stable::{with_repo, with_repo_at, with_serial_repo};
use crate::db::{self, checks::CheckRow, uploads::UploadRow};
use crate::domain::check::{CheckKind, CheckState};
use crate::domain::graph::StableRepo;
use crate::domain::integrity::{
    self as rules, Base, Closure, Dependent, FutureStable, Judgement, PendingRelease, Rebuilt,
};
use crate::domain::metadata::{DependentResult, RevdepsMetadata};
use crate::domain::{Manifest, PackageName};

/// The upload as the future stable of the uploads behind it holds it.
pub fn pending_release(row: &UploadRow, manifest: &Manifest) -> PendingRelease {
    PendingRelease {
        upload_id: row.id,
        name: manifest.name.clone(),
        release: super::checks::release_of(manifest),
    }
}

/// The pending uploads ahead of `row` in arrival order, of other packages.
async fn pending_ahead(app: &App, row: &UploadRow) -> anyhow::Result<Vec<(UploadRow, Manifest)>> {
    let mut conn = app.db.pool().acquire().await?;
    let rows = db::uploads::pending(&mut conn).await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.name != row.name)
        .filter(|r| {
            // Ahead of it (a group once submitted), or a fellow member.
            let ahead = r.id < row.id && r.in_unsubmitted_group == 0;
            ahead || (row.group_id.is_some() && r.group_id == row.group_id)
        })
        .filter_map(|r| {
            let manifest: Manifest = serde_json::from_str(&r.manifest).ok()?;
            Some((r, manifest))
        })
        .collect())
}

/// Runs `f` on the future stable of `row`: stable now plus the pending
/// uploads ahead of it (none when speculation is off).
async fn with_future<R>(
    app: &App,
    row: &UploadRow,
    f: impl FnOnce(&FutureStable<'_>, &StableRepo) -> R,
) -> anyhow::Result<R> {
    // Without speculation only its group's other members are in it.
    let ahead: Vec<PendingRelease> = pending_ahead(app, row)
        .await?
        .iter()
        .filter(|(r, _)| {
            app.config.queue.speculate || (row.group_id.is_some() && r.group_id == row.group_id)
        })
        .map(|(r, m)| pending_release(r, m))
        .collect();
    with_serial_repo(app, |serial, repo| {
        f(&FutureStable::new(repo, serial, ahead), repo)
    })
    .await
}

/// The base of an upload's `resolve`, `build` and `test`: its closure in
/// its future stable, and why it does not resolve when it does not (the
/// base is then empty).
pub async fn closure_base(
    app: &App,
    row: &UploadRow,
    manifest: &Manifest,
) -> anyhow::Result<(Base, Result<(), String>)> {
    let me = pending_release(row, manifest);
    with_future(app, row, |future, repo| {
        let closure = super::checks::refuse_new_obsolete(repo, manifest)
            .and_then(|()| future.resolve_upload(&me).map_err(|e| e.to_string()));
        let base = Base {
            serial: future.serial(),
            closure: closure.as_ref().cloned().unwrap_or_default(),
            ..Base::default()
        };
        (base, closure.map(|_| ()))
    })
    .await
}

/// One dependent revdeps rebuilds, with its closure against the upload and
/// against the future stable without it (the baseline).
pub struct PlannedRebuild {
    pub dependent: Dependent,
    pub with_new: Result<Closure, String>,
    pub as_is: Result<Closure, String>,
}

/// What the revdeps check of an upload rebuilds, and its base.
pub async fn revdeps_plan(
    app: &App,
    row: &UploadRow,
    manifest: &Manifest,
    max: usize,
) -> anyhow::Result<(Base, Vec<PlannedRebuild>)> {
    let me = pending_release(row, manifest);
    with_future(app, row, |future, _| {
        let (rebuild, beyond) = future.dependents_to_rebuild(&me.name, &me.release.version, max);
        let plan: Vec<PlannedRebuild> = rebuild
            .into_iter()
            .map(|dependent| PlannedRebuild {
                with_new: future
                    .resolve_dependent(&dependent, Some(&me))
                    .map_err(|e| e.to_string()),
                as_is: future
                    .resolve_dependent(&dependent, None)
                    .map_err(|e| e.to_string()),
                dependent,
            })
            .collect();
        let base = Base {
            serial: future.serial(),
            dependents: plan
                .iter()
                .map(|p| Rebuilt {
                    dependent: p.dependent.clone(),
                    closure: p.with_new.as_ref().cloned().unwrap_or_default(),
                })
                .collect(),
            beyond,
            ..Base::default()
        };
        (base, plan)
    })
    .await
}

/// Records what a check runs against, and the uploads it assumes.
pub async fn record_base(
    app: &App,
    upload_id: i64,
    check_id: i64,
    base: &Base,
) -> anyhow::Result<()> {
    let mut tx = app.db.begin_write().await?;
    db::checks::set_base(&mut tx, check_id, &serde_json::to_string(base)?).await?;
    let assumed: Vec<i64> = base.assumptions(upload_id).into_iter().collect();
    db::assumptions::add(&mut tx, upload_id, &assumed).await?;
    tx.commit().await?;
    Ok(())
}

/// The base a check row records, if it records one this build can read.
pub fn base_of(check: &CheckRow) -> Option<Base> {
    check
        .base
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
}

/// "lib 1.1.0 (upload 41)".
fn upload_label(name: &str, version: &str, id: i64) -> String {
    format!("{name} {version} (upload {id})")
}

/// The related uploads ahead that an upload's checks must wait for before
/// they start: none while it speculates; past `queue.max_rebases` (or with
/// speculation off), the pending uploads ahead of it that touch its edges
/// (a package of its closure, or one that depends on it), so that its next
/// base cannot go stale.
pub async fn blockers(
    app: &App,
    row: &UploadRow,
    manifest: &Manifest,
) -> anyhow::Result<Vec<String>> {
    let rebases = {
        let mut conn = app.db.pool().acquire().await?;
        db::uploads::rebases(&mut conn, row.id).await?
    };
    if app.config.queue.speculate && rebases < i64::from(app.config.queue.max_rebases) {
        return Ok(Vec::new());
    }
    let mut ahead = pending_ahead(app, row).await?;
    ahead.retain(|(r, _)| row.group_id.is_none() || r.group_id != row.group_id);
    if ahead.is_empty() {
        return Ok(Vec::new());
    }
    let me = pending_release(row, manifest);
    let mut touched: BTreeSet<PackageName> = with_repo(app, |repo| {
        FutureStable::stable(repo, 0)
            .resolve_upload(&me)
            .map(|c| c.into_keys().collect())
            .unwrap_or_default()
    })
    .await?;
    touched.extend(manifest.dependencies.keys().cloned());
    Ok(ahead
        .iter()
        .filter(|(_, m)| touched.contains(&m.name) || m.dependencies.contains_key(&manifest.name))
        .map(|(r, m)| upload_label(m.name.as_str(), &m.version.to_string(), r.id))
        .collect())
}

/// Judges the bases of an upload whose checks are all final, inside the
/// deciding transaction: waits for pending assumptions, else takes the
/// promotion lock and compares every base with stable at that serial
/// (the rule: [`rules::must_wait`] and [`rules::judge`]).
///
/// `fellows` are the other members of its group, decided with it: they are
/// part of the stable it enters, not uploads it waits for.
pub async fn settle(
    app: &App,
    tx: &mut db::Tx,
    (upload, manifest, checks): (&UploadRow, &Manifest, &[CheckRow]),
    fellows: &[PendingRelease],
    max_dependents: usize,
) -> anyhow::Result<Judgement> {
    let assumed: Vec<rules::Assumed> = db::assumptions::of_upload(tx, upload.id)
        .await?
        .into_iter()
        .filter(|a| fellows.iter().all(|f| f.upload_id != a.id))
        .map(|a| rules::Assumed {
            id: a.id,
            label: upload_label(&a.name, &a.version, a.id),
            state: a.state,
        })
        .collect();
    let judged: Vec<rules::JudgedCheck> = checks
        .iter()
        .map(|c| rules::JudgedCheck {
            id: c.id,
            kind: c.kind,
            platform: c.platform.clone(),
            state: c.state,
            required: c.required != 0,
            base: base_of(c),
        })
        .collect();
    if let Some(waiting) = rules::must_wait(upload.id, &judged, &assumed) {
        return Ok(Judgement::Wait(waiting));
    }
    let serial = db::stable::lock_serial(tx, app.db.for_update()).await?;
    let me = pending_release(upload, manifest);
    let (closure_now, dependents_now) = with_repo_at(app, serial, |repo| {
        let now = FutureStable::new(repo, serial, fellows.iter().cloned());
        let closure = super::checks::refuse_new_obsolete(repo, manifest)
            .and_then(|()| now.resolve_upload(&me).map_err(|e| e.to_string()))
            .map_err(crate::domain::resolve::ResolveError);
        let dependents = now.dependents_to_rebuild(&me.name, &me.release.version, max_dependents);
        (closure, dependents)
    })
    .await?;
    Ok(rules::judge(
        upload.id,
        &me.release,
        &judged,
        &assumed,
        &closure_now,
        (&dependents_now.0, &dependents_now.1),
    ))
}

/// Rebases an upload inside the deciding transaction: keeps the runs of
/// `rerun` and makes them pending again, runs `resolve` again when asked,
/// counts the rebase and says why. Keeps its place in the queue; sends no
/// email. Returns the build checks to enqueue after the commit.
pub async fn rebase(
    app: &App,
    tx: &mut db::Tx,
    upload: &UploadRow,
    manifest: &Manifest,
    checks: &[CheckRow],
    (why, rerun, resolve_again): (&str, &[i64], bool),
) -> anyhow::Result<Vec<(String, i64)>> {
    let n = db::uploads::rebases(tx, upload.id).await? + 1;
    let max = i64::from(app.config.queue.max_rebases);
    let line = if n >= max {
        format!("rebase {n} of {max}: {why}; its checks now wait for the related uploads ahead")
    } else {
        format!("rebase {n} of {max}: {why}")
    };
    db::uploads::count_rebase(tx, upload.id, &line).await?;
    for &id in rerun {
        db::checks::rerun(
            tx,
            id,
            "rebase",
            "waiting: to run again against the new stable",
        )
        .await?;
    }
    let mut skip_builds = false;
    if resolve_again && let Some(resolve) = checks.iter().find(|c| c.kind == CheckKind::Resolve) {
        let (base, outcome) = closure_base(app, upload, manifest).await?;
        db::checks::rerun(tx, resolve.id, "rebase", "").await?;
        let (state, summary) = match &outcome {
            Ok(()) => (
                CheckState::Passed,
                format!("resolved {} packages", base.closure.len()),
            ),
            Err(e) => (CheckState::Failed, e.clone()),
        };
        skip_builds = outcome.is_err();
        db::checks::set_base(tx, resolve.id, &serde_json::to_string(&base)?).await?;
        db::checks::finish(
            tx,
            resolve.id,
            db::checks::Finished {
                state,
                duration_ms: 0,
                summary: &summary,
                log: "",
                metadata: &serde_json::json!({}),
            },
        )
        .await?;
    }
    // The assumptions are those of the bases that stay, until the new runs
    // record theirs.
    db::assumptions::clear(tx, upload.id).await?;
    let kept: Vec<i64> = db::checks::of_upload(tx, upload.id)
        .await?
        .iter()
        .filter_map(base_of)
        .flat_map(|b| b.assumptions(upload.id))
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    db::assumptions::add(tx, upload.id, &kept).await?;
    let mut builds = Vec::new();
    for check in checks.iter().filter(|c| rerun.contains(&c.id)) {
        if skip_builds {
            db::checks::finish(
                tx,
                check.id,
                db::checks::Finished {
                    state: CheckState::Skipped,
                    duration_ms: 0,
                    summary: "skipped: validate or resolve failed",
                    log: "",
                    metadata: &serde_json::json!({}),
                },
            )
            .await?;
        } else if check.kind == CheckKind::Build {
            builds.push((check.platform.clone(), check.id));
        } else if let Some(build) = checks
            .iter()
            .find(|c| c.kind == CheckKind::Build && c.platform == check.platform)
        {
            builds.push((build.platform.clone(), build.id));
        }
    }
    builds.sort();
    builds.dedup();
    db::events::record(
        tx,
        db::events::NewEvent {
            kind: "upload.rebased",
            package_id: Some(upload.package_id),
            upload_id: Some(upload.id),
            actor_id: None,
            detail: serde_json::json!({ "why": why, "rebase": n, "checks": rerun }),
        },
    )
    .await?;
    tracing::info!(upload.id = upload.id, package.name = %upload.name, rebase = n, why, "upload rebased");
    Ok(builds)
}

/// Edges of stable that accepted checks built together, and those exempt:
/// what [`rules::check_invariant`] needs, read from the accepted uploads'
/// checks.
pub async fn invariant_report(app: &App) -> anyhow::Result<rules::InvariantReport> {
    let accepted = {
        let mut conn = app.db.pool().acquire().await?;
        db::uploads::accepted(&mut conn).await?
    };
    let mut built = BTreeSet::new();
    let mut exempt = BTreeMap::new();
    for row in &accepted {
        let Ok(manifest) = serde_json::from_str::<Manifest>(&row.manifest) else {
            continue;
        };
        let checks = {
            let mut conn = app.db.pool().acquire().await?;
            db::checks::of_upload(&mut conn, row.id).await?
        };
        let release = super::checks::release_of(&manifest);
        let of_kind = |k: CheckKind| -> Vec<Base> {
            checks
                .iter()
                .filter(|c| c.kind == k && c.state == CheckState::Passed)
                .filter_map(base_of)
                .collect()
        };
        let (builds, revdeps) = (of_kind(CheckKind::Build), of_kind(CheckKind::Revdeps));
        let results = revdeps_results(&checks);
        built.extend(rules::edges_built(
            &manifest.name,
            &release,
            &builds,
            &revdeps,
            |d| results.get(d) == Some(&DependentResult::Ok),
        ));
        let edge = |d: &Dependent| rules::Edge {
            package: d.name.clone(),
            version: d.version.clone(),
            dependency: manifest.name.clone(),
            dependency_version: manifest.version.clone(),
        };
        for base in &revdeps {
            for d in &base.beyond {
                exempt.insert(edge(d), rules::Exempt::BeyondMaxDependents);
            }
            for r in &base.dependents {
                let why = match results.get(&r.dependent.name) {
                    Some(DependentResult::AlreadyBroken) => rules::Exempt::AlreadyBroken,
                    Some(DependentResult::Regression) => rules::Exempt::AllowedRegression,
                    _ => continue,
                };
                exempt.insert(edge(&r.dependent), why);
            }
        }
    }
    with_repo(app, |repo| rules::check_invariant(repo, &built, &exempt)).await
}

/// Each dependent's result in an upload's revdeps checks (`Ok` wins over
/// the others: some platform built it together).
fn revdeps_results(checks: &[CheckRow]) -> BTreeMap<PackageName, DependentResult> {
    let mut out: BTreeMap<PackageName, DependentResult> = BTreeMap::new();
    for c in checks.iter().filter(|c| c.kind == CheckKind::Revdeps) {
        for d in RevdepsMetadata::parse(c.metadata.as_deref()).dependents {
            let Ok(name) = PackageName::parse(&d.name) else {
                continue;
            };
            let entry = out.entry(name).or_insert(d.result);
            if d.result == DependentResult::Ok {
                *entry = DependentResult::Ok;
            }
        }
    }
    out
}
