//! Stable is only ever a set that was checked together (SPEC section 3,
//! rules 6 and 7): the *base* each check ran against, the *future stable*
//! an upload is checked against (stable plus the pending uploads ahead of
//! it), whether a base went stale before promotion, and the invariant that
//! every dependency edge in stable was built together.
//!
//! Staleness is judged on direct edges, the relation revdeps checks: a
//! build base is stale when a direct dependency of the upload would now
//! resolve to another version; a revdeps base is stale when the dependents
//! it must rebuild, or their versions, changed. Whole closures are recorded
//! for display only: judging them would rebase half the queue whenever a
//! widely used package moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use semver::Version;
use serde::{Deserialize, Serialize};

use super::check::{CheckKind, CheckState};
use super::graph::StableRepo;
use super::name::PackageName;
use super::resolve::{Overlay, Release, Resolution, ResolveError};
use super::upload::UploadState;

/// Where a version in a base comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Stable,
    /// A pending upload (by id): one ahead in the queue, or the upload
    /// under check itself.
    Upload(i64),
}

/// One package of a base: its version and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    pub version: Version,
    pub source: Source,
}

/// A resolved closure with the source of every version.
pub type Closure = BTreeMap<PackageName, Pinned>;

/// A dependent revdeps rebuilds (or, beyond `max_dependents`, leaves out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependent {
    pub name: PackageName,
    pub version: Version,
    pub source: Source,
}

/// A dependent rebuilt against the upload, with the closure it was built
/// with (the upload standing in for its package).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    #[serde(flatten)]
    pub dependent: Dependent,
    pub closure: Closure,
}

/// What one run of a check ran against. `resolve`, `build` and `test`
/// fill `closure`; `revdeps` fills `dependents` and `beyond`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The stable serial the base was computed at.
    pub serial: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub closure: Closure,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<Rebuilt>,
    /// Dependents left out because of `revdeps.max_dependents`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beyond: Vec<Dependent>,
}

impl Base {
    /// The pending uploads this base assumes will be accepted (never
    /// `me`, the upload whose base it is).
    pub fn assumptions(&self, me: i64) -> BTreeSet<i64> {
        let closures =
            std::iter::once(&self.closure).chain(self.dependents.iter().map(|d| &d.closure));
        closures
            .flat_map(|c| c.values().map(|p| p.source))
            .chain(self.dependents.iter().map(|d| d.dependent.source))
            .filter_map(|s| match s {
                Source::Upload(id) if id != me => Some(id),
                _ => None,
            })
            .collect()
    }

    /// The versions of `release`'s direct dependencies in this base.
    pub fn direct_edges(&self, release: &Release) -> BTreeMap<PackageName, Version> {
        direct_edges(&self.closure, release)
    }

    /// The dependents rebuilt, by name.
    pub fn rebuilt(&self) -> BTreeMap<PackageName, Version> {
        self.dependents
            .iter()
            .map(|d| (d.dependent.name.clone(), d.dependent.version.clone()))
            .collect()
    }
}

fn direct_edges(closure: &Closure, release: &Release) -> BTreeMap<PackageName, Version> {
    release
        .dependencies
        .keys()
        .filter_map(|d| closure.get(d).map(|p| (d.clone(), p.version.clone())))
        .collect()
}

/// A pending upload as the future stable holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingRelease {
    pub upload_id: i64,
    pub name: PackageName,
    pub release: Release,
}

/// Stable plus pending uploads, each as if accepted: what an upload is
/// checked against. Uploads behind it never enter it.
pub struct FutureStable<'a> {
    stable: &'a StableRepo,
    serial: i64,
    pending: HashMap<PackageName, (i64, Release)>,
    overlay: Overlay,
}

impl<'a> FutureStable<'a> {
    /// `stable` (at `serial`) plus `pending`, at most one per package (a
    /// newer upload supersedes an older one).
    pub fn new(
        stable: &'a StableRepo,
        serial: i64,
        pending: impl IntoIterator<Item = PendingRelease>,
    ) -> Self {
        let mut future = Self {
            stable,
            serial,
            pending: HashMap::new(),
            overlay: Overlay::new(),
        };
        for p in pending {
            let mut releases = stable.universe().releases(&p.name).to_vec();
            releases.retain(|r| r.version != p.release.version);
            let at = releases.partition_point(|r| r.version < p.release.version);
            releases.insert(at, p.release.clone());
            future.overlay.insert(p.name.clone(), releases);
            future.pending.insert(p.name, (p.upload_id, p.release));
        }
        future
    }

    /// Stable alone.
    pub fn stable(stable: &'a StableRepo, serial: i64) -> Self {
        Self::new(stable, serial, [])
    }

    pub fn serial(&self) -> i64 {
        self.serial
    }

    fn source_of(&self, name: &PackageName, version: &Version) -> Source {
        match self.pending.get(name) {
            Some((id, r)) if &r.version == version => Source::Upload(*id),
            _ => Source::Stable,
        }
    }

    fn closure_of(&self, resolution: Resolution, me: Option<&PendingRelease>) -> Closure {
        resolution
            .into_iter()
            .map(|(name, version)| {
                let source = match me {
                    Some(me) if me.name == name => Source::Upload(me.upload_id),
                    _ => self.source_of(&name, &version),
                };
                (name, Pinned { version, source })
            })
            .collect()
    }

    fn overlay_with(&self, me: Option<&PendingRelease>) -> std::borrow::Cow<'_, Overlay> {
        match me {
            None => std::borrow::Cow::Borrowed(&self.overlay),
            Some(me) => {
                let mut overlay = self.overlay.clone();
                overlay.insert(me.name.clone(), vec![me.release.clone()]);
                std::borrow::Cow::Owned(overlay)
            }
        }
    }

    /// The closure of the upload `me`, which stands in for every version of
    /// its package: the base of its `resolve`, `build` and `test`.
    pub fn resolve_upload(&self, me: &PendingRelease) -> Result<Closure, ResolveError> {
        let overlay = self.overlay_with(Some(me));
        self.stable
            .universe()
            .resolve_over(&me.name, &me.release.version, &overlay)
            .map(|r| self.closure_of(r, Some(me)))
    }

    /// The closure of a dependent, with `me` in place of its package when
    /// given (the rebuild) or as the future stable has it (the baseline).
    pub fn resolve_dependent(
        &self,
        dependent: &Dependent,
        me: Option<&PendingRelease>,
    ) -> Result<Closure, ResolveError> {
        let overlay = self.overlay_with(me);
        self.stable
            .universe()
            .resolve_over(&dependent.name, &dependent.version, &overlay)
            .map(|r| self.closure_of(r, me))
    }

    /// The latest release of `name` in the future stable, with its source.
    fn latest(&self, name: &PackageName) -> Option<(&Release, Source)> {
        match self.pending.get(name) {
            Some((id, release)) => Some((release, Source::Upload(*id))),
            None => self.stable.latest(name).map(|r| (r, Source::Stable)),
        }
    }

    /// The dependents revdeps must rebuild for an upload of `name` at
    /// `version`: the packages whose latest version in the future stable
    /// requires `name` in a way that admits `version`, most-depended-upon
    /// first; the first `max` of them, and those beyond.
    pub fn dependents_to_rebuild(
        &self,
        name: &PackageName,
        version: &Version,
        max: usize,
    ) -> (Vec<Dependent>, Vec<Dependent>) {
        let mut names: BTreeSet<PackageName> = self.stable.dependents(name).into_iter().collect();
        names.extend(
            self.pending
                .iter()
                .filter(|(_, (_, r))| r.dependencies.contains_key(name))
                .map(|(n, _)| n.clone()),
        );
        names.remove(name);
        let mut admitted: Vec<(usize, Dependent)> = names
            .into_iter()
            .filter_map(|d| {
                let (latest, source) = self.latest(&d)?;
                let req = latest.dependencies.get(name)?;
                req.matches(version).then(|| {
                    (
                        self.stable.dependents_count(&d),
                        Dependent {
                            version: latest.version.clone(),
                            name: d,
                            source,
                        },
                    )
                })
            })
            .collect();
        admitted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let mut rebuild: Vec<Dependent> = admitted.into_iter().map(|(_, d)| d).collect();
        let beyond = rebuild.split_off(max.min(rebuild.len()));
        (rebuild, beyond)
    }
}

/// Why a check's base no longer holds, when it does not.
pub fn build_stale(
    recorded: Option<&Base>,
    release: &Release,
    now: &Result<Closure, ResolveError>,
) -> Option<String> {
    let Some(recorded) = recorded else {
        return Some("it was checked before bases were recorded".into());
    };
    // A base with no closure for a release with dependencies is one that
    // did not resolve: it holds for as long as it still does not.
    let unresolved_then = recorded.closure.is_empty() && !release.dependencies.is_empty();
    let now = match (unresolved_then, now) {
        (true, Err(_)) => return None,
        (true, Ok(_)) => return Some("its dependencies resolve now".into()),
        (false, Err(e)) => return Some(format!("its dependencies no longer resolve: {e}")),
        (false, Ok(closure)) => direct_edges(closure, release),
    };
    let before = recorded.direct_edges(release);
    let moved: Vec<String> = now
        .iter()
        .filter(|(name, version)| before.get(*name) != Some(version))
        .map(|(name, version)| match before.get(name) {
            Some(old) => format!("{name} {version} entered stable (built with {old})"),
            None => format!("{name} now resolves to {version}"),
        })
        .collect();
    (!moved.is_empty()).then(|| moved.join("; "))
}

/// Why a revdeps base no longer holds: the dependents to rebuild now
/// (`now`) differ from those it rebuilt, or those left beyond
/// `max_dependents` now (`beyond`) from those it left out (an edge in
/// neither list would enter stable unbuilt and unexempted).
pub fn revdeps_stale(
    recorded: Option<&Base>,
    (now, beyond): (&[Dependent], &[Dependent]),
) -> Option<String> {
    let Some(recorded) = recorded else {
        return Some("it was checked before bases were recorded".into());
    };
    let by_name = |list: &[Dependent]| -> BTreeMap<PackageName, Version> {
        list.iter()
            .map(|d| (d.name.clone(), d.version.clone()))
            .collect()
    };
    let before = recorded.rebuilt();
    let now = by_name(now);
    let mut changes: Vec<String> = now
        .iter()
        .filter(|(n, v)| before.get(*n) != Some(v))
        .map(|(n, v)| format!("{n} {v} now depends on it"))
        .collect();
    changes.extend(
        before
            .iter()
            .filter(|(n, v)| now.get(*n) != Some(v))
            .map(|(n, v)| format!("{n} {v} no longer does")),
    );
    let (beyond_before, beyond_now) = (by_name(&recorded.beyond), by_name(beyond));
    changes.extend(
        beyond_now
            .iter()
            .filter(|(n, v)| beyond_before.get(*n) != Some(v))
            .map(|(n, v)| format!("{n} {v} now depends on it (beyond revdeps.max_dependents)")),
    );
    changes.extend(
        beyond_before
            .iter()
            .filter(|(n, v)| beyond_now.get(*n) != Some(v) && !now.contains_key(*n))
            .map(|(n, v)| format!("{n} {v} no longer does")),
    );
    (!changes.is_empty()).then(|| changes.join("; "))
}

/// One check of an upload as judging its base needs it.
#[derive(Clone, Debug)]
pub struct JudgedCheck {
    pub id: i64,
    pub kind: CheckKind,
    pub platform: String,
    pub state: CheckState,
    pub required: bool,
    pub base: Option<Base>,
}

/// An upload that some base assumed, and where it stands.
#[derive(Clone, Debug)]
pub struct Assumed {
    pub id: i64,
    /// "lib 1.1.0 (upload 41)".
    pub label: String,
    pub state: UploadState,
}

/// Where an upload whose checks are all final stands against its bases.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    /// Some upload its bases assumed is still pending: decide it later.
    Wait(Vec<String>),
    /// Some base no longer holds: these checks run again (`resolve` too,
    /// when `resolve_again`).
    Rebase {
        why: String,
        rerun: Vec<i64>,
        resolve_again: bool,
    },
    /// Every base holds against stable as it is: decide. `ahead` names the
    /// uploads (now in stable) that the failing builds were built against.
    Fresh { ahead: Vec<String> },
}

fn is_pending(state: UploadState) -> bool {
    matches!(state, UploadState::Queued | UploadState::Checking)
}

/// The required checks that failed against a base assuming nothing still
/// pending: they reject without waiting (if their base still holds).
fn own_failures(me: i64, checks: &[JudgedCheck], pending: &BTreeSet<i64>) -> Vec<i64> {
    checks
        .iter()
        .filter(|c| {
            c.required
                && c.state == CheckState::Failed
                && c.base
                    .as_ref()
                    .is_none_or(|b| b.assumptions(me).is_disjoint(pending))
        })
        .map(|c| c.id)
        .collect()
}

/// Whether deciding upload `me` must wait: the pending uploads its bases
/// assumed, unless a failure of its own rejects it anyway.
pub fn must_wait(me: i64, checks: &[JudgedCheck], assumed: &[Assumed]) -> Option<Vec<String>> {
    let pending: BTreeSet<i64> = assumed
        .iter()
        .filter(|a| is_pending(a.state))
        .map(|a| a.id)
        .collect();
    (!pending.is_empty() && own_failures(me, checks, &pending).is_empty()).then(|| {
        assumed
            .iter()
            .filter(|a| pending.contains(&a.id))
            .map(|a| a.label.clone())
            .collect()
    })
}

/// Judges the bases of upload `me` (of `release`), whose checks are all
/// final and which need not wait, against stable now: its closure there
/// (`closure_now`) and the dependents revdeps would rebuild there
/// (`dependents_now`: those rebuilt, and those beyond `max_dependents`).
/// A base is stale when it assumed an upload that was
/// not accepted, or when its direct edges moved.
pub fn judge(
    me: i64,
    release: &Release,
    checks: &[JudgedCheck],
    assumed: &[Assumed],
    closure_now: &Result<Closure, ResolveError>,
    dependents_now: (&[Dependent], &[Dependent]),
) -> Judgement {
    let pending: BTreeSet<i64> = assumed
        .iter()
        .filter(|a| is_pending(a.state))
        .map(|a| a.id)
        .collect();
    let lost: BTreeMap<i64, String> = assumed
        .iter()
        .filter(|a| !is_pending(a.state) && a.state != UploadState::Accepted)
        .map(|a| (a.id, format!("{}, ahead of it, was {}", a.label, a.state)))
        .collect();
    // Rejecting for a failure of its own while others wait: judge only that.
    let own = own_failures(me, checks, &pending);
    let mut why: BTreeSet<String> = BTreeSet::new();
    let (mut rerun, mut resolve_again) = (Vec::new(), false);
    for check in checks {
        if !pending.is_empty() && !own.contains(&check.id) {
            continue;
        }
        let base = check.base.as_ref();
        let lost_assumption = base.and_then(|b| {
            b.assumptions(me)
                .iter()
                .find_map(|id| lost.get(id).cloned())
        });
        let stale = lost_assumption.or_else(|| match check.kind {
            CheckKind::Resolve => build_stale(base, release, closure_now),
            CheckKind::Build if check.state != CheckState::Skipped => {
                build_stale(base, release, closure_now)
            }
            CheckKind::Revdeps if check.state != CheckState::Skipped => {
                revdeps_stale(base, dependents_now)
            }
            _ => None,
        });
        let Some(stale) = stale else { continue };
        why.insert(stale);
        match check.kind {
            CheckKind::Resolve => resolve_again = true,
            // A build that runs again runs its platform's chain again.
            CheckKind::Build => rerun.extend(
                checks
                    .iter()
                    .filter(|c| c.platform == check.platform)
                    .map(|c| c.id),
            ),
            _ => rerun.push(check.id),
        }
    }
    if resolve_again {
        rerun.extend(
            checks
                .iter()
                .filter(|c| !c.platform.is_empty())
                .map(|c| c.id),
        );
    }
    if why.is_empty() {
        // Only builds and tests: a failing revdeps names its dependents itself.
        let ids: BTreeSet<i64> = checks
            .iter()
            .filter(|c| c.state == CheckState::Failed && c.kind != CheckKind::Revdeps)
            .filter_map(|c| c.base.as_ref())
            .flat_map(|b| b.assumptions(me))
            .collect();
        let ahead = assumed
            .iter()
            .filter(|a| ids.contains(&a.id))
            .map(|a| a.label.clone())
            .collect();
        return Judgement::Fresh { ahead };
    }
    rerun.sort_unstable();
    rerun.dedup();
    Judgement::Rebase {
        why: why.into_iter().collect::<Vec<_>>().join("; "),
        rerun,
        resolve_again,
    }
}

/// A direct dependency edge of a stable package: `package version` built
/// with `dependency dependency_version`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Edge {
    pub package: PackageName,
    pub version: Version,
    pub dependency: PackageName,
    pub dependency_version: Version,
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} {}",
            self.package, self.version, self.dependency, self.dependency_version
        )
    }
}

/// Why an edge need not have been built together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exempt {
    /// The dependent was beyond `revdeps.max_dependents`.
    BeyondMaxDependents,
    /// The dependent already failed against stable before.
    AlreadyBroken,
    /// The pass mark let a regression through (its maintainers were told).
    AllowedRegression,
}

/// What the invariant checker found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InvariantReport {
    pub violations: Vec<Edge>,
    pub exempt: Vec<(Edge, Exempt)>,
    /// Edges that were built together.
    pub held: usize,
}

/// Checks that every direct dependency edge of every stable package's
/// latest version, as it resolves in stable now, was built together by
/// some accepted check (`built`) or is exempt.
pub fn check_invariant(
    stable: &StableRepo,
    built: &BTreeSet<Edge>,
    exemptions: &BTreeMap<Edge, Exempt>,
) -> InvariantReport {
    let mut report = InvariantReport::default();
    let mut names: Vec<&PackageName> = stable.package_names().collect();
    names.sort();
    for name in names {
        let Some(latest) = stable.latest(name) else {
            continue;
        };
        let Ok(resolution) = stable.resolve(name, &latest.version) else {
            continue; // nothing in stable builds it now; not an edge of stable
        };
        for dep in latest.dependencies.keys() {
            let Some(w) = resolution.get(dep) else {
                continue;
            };
            let edge = Edge {
                package: name.clone(),
                version: latest.version.clone(),
                dependency: dep.clone(),
                dependency_version: w.clone(),
            };
            if built.contains(&edge) {
                report.held += 1;
            } else if let Some(why) = exemptions.get(&edge) {
                report.exempt.push((edge, *why));
            } else {
                report.violations.push(edge);
            }
        }
    }
    report
}

/// The edges an accepted upload of `name` `release` built together: its
/// own direct dependencies in each build base, and each dependent its
/// revdeps rebuilt and that passed (`passed(dependent)`).
pub fn edges_built(
    name: &PackageName,
    release: &Release,
    build_bases: &[Base],
    revdeps_bases: &[Base],
    passed: impl Fn(&PackageName) -> bool,
) -> Vec<Edge> {
    let own = build_bases.iter().flat_map(|b| {
        b.direct_edges(release)
            .into_iter()
            .map(|(dependency, dependency_version)| Edge {
                package: name.clone(),
                version: release.version.clone(),
                dependency,
                dependency_version,
            })
    });
    let rebuilt = revdeps_bases
        .iter()
        .flat_map(|b| b.dependents.iter())
        .filter(|d| passed(&d.dependent.name))
        .map(|d| Edge {
            package: d.dependent.name.clone(),
            version: d.dependent.version.clone(),
            dependency: name.clone(),
            dependency_version: release.version.clone(),
        });
    own.chain(rebuilt).collect()
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
