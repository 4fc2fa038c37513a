//! The holding queue as a simulation, against the rules of
//! `domain::integrity` (SPEC section 3, rules 6 and 7): random uploads of a
//! handful of packages, with dependencies between them, compatible and
//! breaking changes, failures and any finishing order of the check runs; no
//! processes and no database.
//!
//! Every version *provides* a set of symbols and *uses* symbols of each of
//! its direct dependencies; building `P v` against a closure succeeds when
//! every direct dependency's version in the closure provides what `P v`
//! uses (and `P v` is not broken in itself). Breaking changes drop symbols
//! under a compatible version number, the way real libraries do.
//!
//! Every decision is the real domain's: bases come from [`FutureStable`],
//! waiting from [`rules::must_wait`], rebase or verdict from
//! [`rules::judge`], the edges built from [`rules::edges_built`], and the
//! end state is checked with [`rules::check_invariant`]. Only the loop is
//! the simulation's own: arrivals (a newer upload of a package supersedes a
//! pending one), starting an upload, running one check, deciding one
//! upload, each chosen at random among those possible, as the service's
//! workers and deciding transactions could interleave them; past
//! `max_rebases` (or without speculation) an upload's checks start only
//! when no related upload ahead of it is pending, as the service's
//! `blockers` do.
//!
//! After each run: no violation of the invariant; the ground truth (every
//! stable package's latest version builds, by the symbol rule, against its
//! stable resolution now, except on exempt edges); every upload decided.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use semver::{Version, VersionReq};

use super::{
    self as rules, Assumed, Base, Closure, Dependent, Edge, Exempt, FutureStable, JudgedCheck,
    Judgement, PendingRelease, Rebuilt,
};
use crate::domain::check::{CheckKind, CheckState};
use crate::domain::graph::StableRepo;
use crate::domain::metadata::DependentResult;
use crate::domain::name::PackageName;
use crate::domain::resolve::Release;
use crate::domain::upload::UploadState;

const PACKAGES: usize = 5;
const SYMBOLS: u8 = 0b1111;
const PLATFORM: &str = "linux";

// ---------------------------------------------------------------- scenario

/// One direct dependency as generated: which package (reduced to one of
/// lower index), which of its versions the requirement names, and which
/// symbols it uses (a subset of that version's, or any when not `exact`).
#[derive(Clone, Debug)]
struct DepGen {
    dep: usize,
    target: u8,
    uses: u8,
    exact: bool,
}

#[derive(Clone, Debug)]
struct InitGen {
    present: bool,
    provides: u8,
    deps: Vec<(usize, u8)>,
}

#[derive(Clone, Debug)]
struct UploadGen {
    pkg: usize,
    major: bool,
    breaking: bool,
    mask: u8,
    deps: Vec<DepGen>,
    broken: bool,
    /// Its first build run fails whatever it builds against.
    flaky: bool,
}

#[derive(Clone, Debug)]
struct Scenario {
    init: Vec<InitGen>,
    uploads: Vec<UploadGen>,
    speculate: bool,
    max_rebases: u32,
    max_dependents: usize,
    min_fraction: f64,
    /// The choices of the loop, one per step (0 once exhausted).
    schedule: Vec<u16>,
}

fn dep_gen() -> impl Strategy<Value = DepGen> {
    (
        0..PACKAGES,
        any::<u8>(),
        0..=SYMBOLS,
        prop::bool::weighted(0.8),
    )
        .prop_map(|(dep, target, uses, exact)| DepGen {
            dep,
            target,
            uses,
            exact,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let init = prop::collection::vec(
        (
            prop::bool::weighted(0.8),
            1..=SYMBOLS,
            prop::collection::vec((0..PACKAGES, 0..=SYMBOLS), 0..3),
        )
            .prop_map(|(present, provides, deps)| InitGen {
                present,
                provides,
                deps,
            }),
        PACKAGES,
    );
    let upload = (
        0..PACKAGES,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.4),
        1..=SYMBOLS,
        prop::collection::vec(dep_gen(), 0..3),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(pkg, major, breaking, mask, deps, broken, flaky)| UploadGen {
                pkg,
                major,
                breaking,
                mask,
                deps,
                broken,
                flaky,
            },
        );
    (
        init,
        prop::collection::vec(upload, 1..9),
        prop::bool::weighted(0.85),
        0u32..4,
        // Below the number of packages too, so dependents go beyond it
        // (`a_dependent_pushed_beyond_max_dependents_is_neither_built_nor_exempt`).
        prop_oneof![2 => Just(100usize), 1 => Just(1usize), 1 => Just(2usize)],
        prop_oneof![3 => Just(1.0), 1 => Just(0.5)],
        prop::collection::vec(any::<u16>(), 0..300),
    )
        .prop_map(
            |(init, uploads, speculate, max_rebases, max_dependents, min_fraction, schedule)| {
                Scenario {
                    init,
                    uploads,
                    speculate,
                    max_rebases,
                    max_dependents,
                    min_fraction,
                    schedule,
                }
            },
        )
}

fn name(i: usize) -> PackageName {
    PackageName::parse(&format!("p{i}")).unwrap()
}

/// What a version provides and uses.
#[derive(Clone, Debug)]
struct Info {
    provides: u8,
    uses: BTreeMap<PackageName, u8>,
    broken: bool,
}

// -------------------------------------------------------------- simulation

#[derive(Clone, Debug)]
struct SimCheck {
    id: i64,
    kind: CheckKind,
    platform: &'static str,
    state: CheckState,
    required: bool,
    base: Option<Base>,
    results: BTreeMap<PackageName, DependentResult>,
}

#[derive(Clone, Debug)]
struct Up {
    id: i64,
    name: PackageName,
    release: Release,
    state: UploadState,
    checks: Vec<SimCheck>,
    /// The uploads its bases assumed (the service's `upload_assumptions`).
    assumed: BTreeSet<i64>,
    rebases: u32,
    flaky: bool,
}

impl Up {
    fn pending(&self) -> bool {
        matches!(self.state, UploadState::Queued | UploadState::Checking)
    }

    fn me(&self) -> PendingRelease {
        PendingRelease {
            upload_id: self.id,
            name: self.name.clone(),
            release: self.release.clone(),
        }
    }

    fn check(&self, kind: CheckKind) -> usize {
        self.checks.iter().position(|c| c.kind == kind).unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Arrive,
    Start(usize),
    Run(usize, usize),
    Decide(usize),
}

struct Sim {
    speculate: bool,
    max_rebases: u32,
    max_dependents: usize,
    min_fraction: f64,
    stable: StableRepo,
    serial: i64,
    infos: HashMap<(PackageName, Version), Info>,
    /// Every upload of the scenario, by arrival (id = index + 1).
    ups: Vec<Up>,
    arrived: usize,
    next_check: i64,
    built: BTreeSet<Edge>,
    exempt: BTreeMap<Edge, Exempt>,
    trace: Vec<String>,
}

impl Sim {
    fn new(s: &Scenario) -> Self {
        let mut sim = Sim {
            speculate: s.speculate,
            max_rebases: s.max_rebases,
            max_dependents: s.max_dependents,
            min_fraction: s.min_fraction,
            stable: StableRepo::new(),
            serial: 1,
            infos: HashMap::new(),
            ups: Vec::new(),
            arrived: 0,
            next_check: 1,
            built: BTreeSet::new(),
            exempt: BTreeMap::new(),
            trace: Vec::new(),
        };
        // Every version the scenario knows, per package, with what it provides.
        let mut versions: Vec<Vec<(Version, u8)>> = vec![Vec::new(); PACKAGES];
        for (i, g) in s.init.iter().enumerate() {
            if g.present {
                versions[i].push((Version::new(1, 0, 0), g.provides));
            }
        }
        // Stable at the start builds: each uses a part of what it requires.
        for (i, g) in s.init.iter().enumerate().filter(|(_, g)| g.present) {
            let mut deps = BTreeMap::new();
            let mut uses = BTreeMap::new();
            for &(d, m) in &g.deps {
                if i == 0 {
                    break;
                }
                let d = d % i;
                if !s.init[d].present {
                    continue;
                }
                deps.insert(name(d), VersionReq::parse("^1.0").unwrap());
                uses.insert(name(d), m & s.init[d].provides);
                // Stable at the start was built together.
                sim.built.insert(Edge {
                    package: name(i),
                    version: Version::new(1, 0, 0),
                    dependency: name(d),
                    dependency_version: Version::new(1, 0, 0),
                });
            }
            let release = Release {
                version: Version::new(1, 0, 0),
                dependencies: deps,
            };
            sim.infos.insert(
                (name(i), release.version.clone()),
                Info {
                    provides: g.provides,
                    uses,
                    broken: false,
                },
            );
            sim.stable.add_release(name(i), release);
        }
        // Versions of the uploads, in order, each after its package's last.
        let mut upload_versions = Vec::new();
        for g in &s.uploads {
            let prev = versions[g.pkg].last().cloned();
            let (version, provides) = match prev {
                None => (Version::new(1, 0, 0), g.mask),
                Some((v, p)) => {
                    let version = if g.major {
                        Version::new(v.major + 1, 0, 0)
                    } else {
                        Version::new(v.major, v.minor + 1, 0)
                    };
                    let provides = if g.breaking {
                        (p & !g.mask) | (g.mask & 0b1000)
                    } else {
                        p | g.mask
                    };
                    (version, provides)
                }
            };
            versions[g.pkg].push((version.clone(), provides));
            upload_versions.push((version, provides));
        }
        for (k, (g, (version, provides))) in s.uploads.iter().zip(upload_versions).enumerate() {
            let mut deps = BTreeMap::new();
            let mut uses = BTreeMap::new();
            for d in &g.deps {
                if g.pkg == 0 {
                    break;
                }
                let dep = d.dep % g.pkg;
                let known = &versions[dep];
                if known.is_empty() || deps.contains_key(&name(dep)) {
                    continue;
                }
                let (target, target_provides) = &known[d.target as usize % known.len()];
                let req = VersionReq::parse(&format!("^{}.{}", target.major, target.minor));
                deps.insert(name(dep), req.unwrap());
                let used = if d.exact {
                    d.uses & target_provides
                } else {
                    d.uses
                };
                uses.insert(name(dep), used);
            }
            let release = Release {
                version: version.clone(),
                dependencies: deps,
            };
            sim.infos.insert(
                (name(g.pkg), version),
                Info {
                    provides,
                    uses,
                    broken: g.broken,
                },
            );
            sim.ups.push(Up {
                id: k as i64 + 1,
                name: name(g.pkg),
                release,
                state: UploadState::Queued,
                checks: Vec::new(),
                assumed: BTreeSet::new(),
                rebases: 0,
                flaky: g.flaky,
            });
        }
        sim
    }

    /// Whether `name` `version`, with these versions of its dependencies,
    /// builds: the symbol rule.
    fn builds(&self, name: &PackageName, version: &Version, closure: &Closure) -> bool {
        let info = &self.infos[&(name.clone(), version.clone())];
        !info.broken
            && info.uses.iter().all(|(dep, uses)| {
                closure.get(dep).is_some_and(|p| {
                    self.infos[&(dep.clone(), p.version.clone())].provides & uses == *uses
                })
            })
    }

    /// The pending uploads ahead of `u` (arrived), of other packages.
    fn ahead(&self, u: usize) -> Vec<PendingRelease> {
        self.ups[..u]
            .iter()
            .filter(|a| a.pending() && a.name != self.ups[u].name)
            .map(Up::me)
            .collect()
    }

    /// Stable plus the uploads ahead of `u` (none without speculation).
    fn future(&self, u: usize) -> FutureStable<'_> {
        let ahead = if self.speculate {
            self.ahead(u)
        } else {
            Vec::new()
        };
        FutureStable::new(&self.stable, self.serial, ahead)
    }

    /// The service's `blockers`: while speculating, none; past
    /// `max_rebases` (or without speculation), the pending uploads ahead
    /// that touch the upload's closure or depend on its package.
    fn blocked(&self, u: usize) -> bool {
        let up = &self.ups[u];
        if self.speculate && up.rebases < self.max_rebases {
            return false;
        }
        let mut touched: BTreeSet<PackageName> = FutureStable::stable(&self.stable, 0)
            .resolve_upload(&up.me())
            .map(|c| c.into_keys().collect())
            .unwrap_or_default();
        touched.extend(up.release.dependencies.keys().cloned());
        self.ahead(u)
            .iter()
            .any(|a| touched.contains(&a.name) || a.release.dependencies.contains_key(&up.name))
    }

    fn judged(&self, u: usize) -> Vec<JudgedCheck> {
        self.ups[u]
            .checks
            .iter()
            .map(|c| JudgedCheck {
                id: c.id,
                kind: c.kind,
                platform: c.platform.to_owned(),
                state: c.state,
                required: c.required,
                base: c.base.clone(),
            })
            .collect()
    }

    fn assumed(&self, u: usize) -> Vec<Assumed> {
        self.ups[u]
            .assumed
            .iter()
            .map(|&id| {
                let a = &self.ups[id as usize - 1];
                Assumed {
                    id,
                    label: format!("{} {} (upload {id})", a.name, a.release.version),
                    state: a.state,
                }
            })
            .collect()
    }

    fn record(&mut self, u: usize, c: usize, base: Base) {
        let up = &mut self.ups[u];
        up.assumed.extend(base.assumptions(up.id));
        up.checks[c].base = Some(base);
    }

    fn actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.arrived < self.ups.len() {
            out.push(Action::Arrive);
        }
        for (u, up) in self.ups[..self.arrived].iter().enumerate() {
            match up.state {
                UploadState::Queued if !self.blocked(u) => out.push(Action::Start(u)),
                UploadState::Checking => {
                    let pending: Vec<usize> = (0..up.checks.len())
                        .filter(|&c| up.checks[c].state == CheckState::Pending)
                        .collect();
                    if pending.is_empty() {
                        let wait =
                            rules::must_wait(up.id, &self.judged(u), &self.assumed(u)).is_some();
                        if !wait {
                            out.push(Action::Decide(u));
                        }
                    } else if !self.blocked(u) {
                        let build = up.check(CheckKind::Build);
                        for c in pending {
                            // The platform's chain: revdeps after the build.
                            if c == build || up.checks[build].state.is_final() {
                                out.push(Action::Run(u, c));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::Arrive => self.arrive(),
            Action::Start(u) => self.start(u),
            Action::Run(u, c) => match self.ups[u].checks[c].kind {
                CheckKind::Build => self.run_build(u, c),
                CheckKind::Revdeps => self.run_revdeps(u, c),
                k => unreachable!("no pending {k} check"),
            },
            Action::Decide(u) => self.decide(u),
        }
    }

    fn arrive(&mut self) {
        let u = self.arrived;
        self.arrived += 1;
        let name = self.ups[u].name.clone();
        for older in self.ups[..u].iter_mut() {
            if older.name == name && older.pending() {
                older.state = UploadState::Superseded;
                for c in older.checks.iter_mut().filter(|c| !c.state.is_final()) {
                    c.state = CheckState::Halted;
                }
                self.trace.push(format!("upload {} superseded", older.id));
            }
        }
        let up = &self.ups[u];
        self.trace.push(format!(
            "upload {} arrives: {} {} {:?} {:?}",
            up.id,
            up.name,
            up.release.version,
            up.release
                .dependencies
                .iter()
                .map(|(d, r)| format!("{d} {r}"))
                .collect::<Vec<_>>(),
            self.infos[&(up.name.clone(), up.release.version.clone())]
        ));
    }

    fn new_check(
        &mut self,
        kind: CheckKind,
        platform: &'static str,
        state: CheckState,
    ) -> SimCheck {
        self.next_check += 1;
        SimCheck {
            id: self.next_check,
            kind,
            platform,
            state,
            required: kind != CheckKind::Revdeps,
            base: None,
            results: BTreeMap::new(),
        }
    }

    /// The base of `resolve` and `build`: the closure in the future stable.
    fn closure_base(&self, u: usize) -> (Base, bool) {
        let future = self.future(u);
        let closure = future.resolve_upload(&self.ups[u].me());
        let ok = closure.is_ok();
        let base = Base {
            serial: future.serial(),
            closure: closure.unwrap_or_default(),
            ..Base::default()
        };
        (base, ok)
    }

    fn start(&mut self, u: usize) {
        let (base, ok) = self.closure_base(u);
        let validate = self.new_check(CheckKind::Validate, "", CheckState::Passed);
        let resolve = self.new_check(
            CheckKind::Resolve,
            "",
            if ok {
                CheckState::Passed
            } else {
                CheckState::Failed
            },
        );
        let later = if ok {
            CheckState::Pending
        } else {
            CheckState::Skipped
        };
        let build = self.new_check(CheckKind::Build, PLATFORM, later);
        let revdeps = self.new_check(CheckKind::Revdeps, PLATFORM, later);
        self.ups[u].checks = vec![validate, resolve, build, revdeps];
        self.ups[u].state = UploadState::Checking;
        self.trace.push(format!(
            "upload {} starts; resolve {}: {}",
            self.ups[u].id,
            if ok { "passed" } else { "failed" },
            show(&base.closure)
        ));
        self.record(u, 1, base);
    }

    fn run_build(&mut self, u: usize, c: usize) {
        let (base, ok) = self.closure_base(u);
        let up = &self.ups[u];
        let passed = ok && !up.flaky && self.builds(&up.name, &up.release.version, &base.closure);
        self.trace.push(format!(
            "upload {} build {}: {}",
            up.id,
            if passed { "passed" } else { "failed" },
            show(&base.closure)
        ));
        self.record(u, c, base);
        let up = &mut self.ups[u];
        up.flaky = false;
        up.checks[c].state = if passed {
            CheckState::Passed
        } else {
            CheckState::Failed
        };
        if !passed {
            let r = up.check(CheckKind::Revdeps);
            up.checks[r].state = CheckState::Skipped;
        }
    }

    fn run_revdeps(&mut self, u: usize, c: usize) {
        let build = self.ups[u].check(CheckKind::Build);
        if self.ups[u].checks[build].state != CheckState::Passed {
            self.ups[u].checks[c].state = CheckState::Skipped;
            return;
        }
        let me = self.ups[u].me();
        let future = self.future(u);
        let (rebuild, beyond) =
            future.dependents_to_rebuild(&me.name, &me.release.version, self.max_dependents);
        let mut results = BTreeMap::new();
        let mut dependents = Vec::new();
        for d in rebuild {
            let with_new = future.resolve_dependent(&d, Some(&me));
            let as_is = future.resolve_dependent(&d, None);
            let result = if with_new
                .as_ref()
                .is_ok_and(|cl| self.builds(&d.name, &d.version, cl))
            {
                DependentResult::Ok
            } else if as_is
                .as_ref()
                .is_ok_and(|cl| self.builds(&d.name, &d.version, cl))
            {
                DependentResult::Regression
            } else {
                DependentResult::AlreadyBroken
            };
            results.insert(d.name.clone(), result);
            dependents.push(Rebuilt {
                dependent: d,
                closure: with_new.unwrap_or_default(),
            });
        }
        let base = Base {
            serial: future.serial(),
            dependents,
            beyond,
            ..Base::default()
        };
        let ok = results
            .values()
            .filter(|r| **r == DependentResult::Ok)
            .count();
        let counted = results
            .values()
            .filter(|r| **r != DependentResult::AlreadyBroken)
            .count();
        let fraction = if counted == 0 {
            1.0
        } else {
            ok as f64 / counted as f64
        };
        let passed = fraction + 1e-9 >= self.min_fraction;
        self.trace.push(format!(
            "upload {} revdeps {}: {:?} beyond {:?}",
            me.upload_id,
            if passed { "passed" } else { "failed" },
            results,
            base.beyond
                .iter()
                .map(|d| d.name.to_string())
                .collect::<Vec<_>>()
        ));
        self.record(u, c, base);
        let check = &mut self.ups[u].checks[c];
        check.results = results;
        check.state = if passed {
            CheckState::Passed
        } else {
            CheckState::Failed
        };
    }

    fn decide(&mut self, u: usize) {
        let judged = self.judged(u);
        let assumed = self.assumed(u);
        let me = self.ups[u].me();
        let judgement = {
            let now = FutureStable::stable(&self.stable, self.serial);
            let closure_now = now.resolve_upload(&me);
            let dependents_now =
                now.dependents_to_rebuild(&me.name, &me.release.version, self.max_dependents);
            rules::judge(
                me.upload_id,
                &me.release,
                &judged,
                &assumed,
                &closure_now,
                (&dependents_now.0, &dependents_now.1),
            )
        };
        match judgement {
            Judgement::Wait(w) => panic!("judge does not wait: {w:?}"),
            Judgement::Rebase {
                why,
                rerun,
                resolve_again,
            } => {
                self.trace
                    .push(format!("upload {} rebased: {why}", me.upload_id));
                self.rebase(u, &rerun, resolve_again);
            }
            Judgement::Fresh { .. } => self.verdict(u),
        }
    }

    /// The service's `rebase`: the stale runs pending again (their bases
    /// gone), `resolve` again when asked, the assumptions of what stays.
    fn rebase(&mut self, u: usize, rerun: &[i64], resolve_again: bool) {
        self.ups[u].rebases += 1;
        for c in self.ups[u].checks.iter_mut() {
            if rerun.contains(&c.id) {
                c.state = CheckState::Pending;
                c.base = None;
                c.results.clear();
            }
        }
        let mut skip = false;
        if resolve_again {
            let (base, ok) = self.closure_base(u);
            let r = self.ups[u].check(CheckKind::Resolve);
            self.ups[u].checks[r].state = if ok {
                CheckState::Passed
            } else {
                CheckState::Failed
            };
            self.ups[u].checks[r].base = Some(base);
            skip = !ok;
        }
        let up = &mut self.ups[u];
        up.assumed = up
            .checks
            .iter()
            .filter_map(|c| c.base.as_ref())
            .flat_map(|b| b.assumptions(up.id))
            .collect();
        if skip {
            for c in up.checks.iter_mut().filter(|c| rerun.contains(&c.id)) {
                c.state = CheckState::Skipped;
            }
        }
    }

    fn verdict(&mut self, u: usize) {
        let accepted = self.ups[u]
            .checks
            .iter()
            .all(|c| c.state == CheckState::Passed);
        let up = self.ups[u].clone();
        self.trace.push(format!(
            "upload {} {}",
            up.id,
            if accepted { "accepted" } else { "rejected" }
        ));
        if !accepted {
            self.ups[u].state = UploadState::Rejected;
            return;
        }
        let of_kind = |k: CheckKind| -> Vec<Base> {
            up.checks
                .iter()
                .filter(|c| c.kind == k && c.state == CheckState::Passed)
                .filter_map(|c| c.base.clone())
                .collect()
        };
        let results: BTreeMap<PackageName, DependentResult> =
            up.checks.iter().flat_map(|c| c.results.clone()).collect();
        let (builds, revdeps) = (of_kind(CheckKind::Build), of_kind(CheckKind::Revdeps));
        self.built.extend(rules::edges_built(
            &up.name,
            &up.release,
            &builds,
            &revdeps,
            |d| results.get(d) == Some(&DependentResult::Ok),
        ));
        let edge = |d: &Dependent| Edge {
            package: d.name.clone(),
            version: d.version.clone(),
            dependency: up.name.clone(),
            dependency_version: up.release.version.clone(),
        };
        for base in &revdeps {
            for d in &base.beyond {
                self.exempt.insert(edge(d), Exempt::BeyondMaxDependents);
            }
            for r in &base.dependents {
                let why = match results.get(&r.dependent.name) {
                    Some(DependentResult::AlreadyBroken) => Exempt::AlreadyBroken,
                    Some(DependentResult::Regression) => Exempt::AllowedRegression,
                    _ => continue,
                };
                self.exempt.insert(edge(&r.dependent), why);
            }
        }
        self.stable.add_release(up.name, up.release);
        self.serial += 1;
        self.ups[u].state = UploadState::Accepted;
    }

    /// Runs the scenario to its end; the number of steps.
    fn run(&mut self, schedule: &[u16]) -> Result<usize, String> {
        for step in 0..10_000 {
            let actions = self.actions();
            if actions.is_empty() {
                return Ok(step);
            }
            let choice = schedule.get(step).copied().unwrap_or(0) as usize;
            self.step(actions[choice % actions.len()]);
        }
        Err("no end after 10000 steps (livelock)".into())
    }

    /// What must hold at the end of every run.
    fn verify(&self) -> Result<(), String> {
        // (c) every upload decided.
        for up in &self.ups {
            if up.pending() {
                return Err(format!(
                    "upload {} ({} {}) never decided: {} (rebases {}, checks {:?}, must_wait {:?})",
                    up.id,
                    up.name,
                    up.release.version,
                    up.state,
                    up.rebases,
                    up.checks
                        .iter()
                        .map(|c| format!("{} {}", c.kind, c.state))
                        .collect::<Vec<_>>(),
                    rules::must_wait(
                        up.id,
                        &self.judged(up.id as usize - 1),
                        &self.assumed(up.id as usize - 1)
                    ),
                ));
            }
        }
        // (a) the invariant, as the checker sees it.
        let report = rules::check_invariant(&self.stable, &self.built, &self.exempt);
        if !report.violations.is_empty() {
            return Err(format!(
                "invariant violated: {}",
                report
                    .violations
                    .iter()
                    .map(Edge::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // (b) the ground truth: what is in stable builds.
        let mut names: Vec<&PackageName> = self.stable.package_names().collect();
        names.sort();
        for name in names {
            let latest = self.stable.latest(name).unwrap();
            let resolution = self
                .stable
                .resolve(name, &latest.version)
                .map_err(|e| format!("{name} {} does not resolve: {e}", latest.version))?;
            let info = &self.infos[&(name.clone(), latest.version.clone())];
            if info.broken {
                return Err(format!("{name} {} is broken and in stable", latest.version));
            }
            for (dep, uses) in &info.uses {
                let w = &resolution[dep];
                let edge = Edge {
                    package: name.clone(),
                    version: latest.version.clone(),
                    dependency: dep.clone(),
                    dependency_version: w.clone(),
                };
                let provides = self.infos[&(dep.clone(), w.clone())].provides;
                if provides & uses != *uses && !self.exempt.contains_key(&edge) {
                    return Err(format!(
                        "stable does not build: {edge} (uses {uses:04b}, provided {provides:04b})"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn show(closure: &Closure) -> String {
    closure
        .iter()
        .map(|(n, p)| match p.source {
            rules::Source::Stable => format!("{n} {}", p.version),
            rules::Source::Upload(id) => format!("{n} {} (upload {id})", p.version),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one scenario; the trace of the run on failure.
fn simulate(s: &Scenario) -> Result<Sim, String> {
    let mut sim = Sim::new(s);
    let outcome = sim.run(&s.schedule).and_then(|_| sim.verify());
    match outcome {
        Ok(()) => Ok(sim),
        Err(e) => Err(format!("{e}\n  {}", sim.trace.join("\n  "))),
    }
}

proptest! {
    #![proptest_config(RunnerConfig {
        cases: 2000,
        failure_persistence: None,
        ..RunnerConfig::default()
    })]

    #[test]
    fn the_queue_never_breaks_stable_and_always_ends(s in scenario()) {
        if let Err(e) = simulate(&s) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The same generator from a fixed seed.
fn fixed(seed: u8) -> Sim {
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let mut last = None;
    // Several scenarios per seed, so that each run covers some ground.
    for _ in 0..50 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        last = Some(simulate(&s).unwrap_or_else(|e| panic!("seed {seed}: {e}")));
    }
    last.unwrap()
}

#[test]
fn fixed_seed_1() {
    fixed(1);
}

#[test]
fn fixed_seed_2() {
    fixed(2);
}

#[test]
fn fixed_seed_3() {
    fixed(3);
}

/// Found by the simulation (with `max_dependents` 1): a dependent that the
/// future stable hid (a pending upload ahead dropped the dependency) comes
/// back when that upload is rejected, beyond `max_dependents` this time.
/// `revdeps_stale` compares only the dependents rebuilt, not those beyond,
/// so the base is judged fresh: the edge `p2 1.0.0 -> p0 1.1.0` enters
/// stable neither built nor recorded as exempt, and the checker reports it.
/// The fix needs `judge` to see the dependents beyond now (the service
/// passes only `.0` of `dependents_to_rebuild`): a base is stale when
/// `beyond` changed too.
#[test]
fn a_dependent_pushed_beyond_max_dependents_is_neither_built_nor_exempt() {
    use crate::domain::fixtures::{n, rel};
    let mut stable = StableRepo::new();
    stable.add_release(n("p0"), rel("1.0.0", &[]));
    stable.add_release(n("p1"), rel("1.0.0", &[("p0", "^1")]));
    stable.add_release(n("p2"), rel("1.0.0", &[("p0", "^1")]));
    let built: BTreeSet<Edge> = ["p1", "p2"]
        .map(|p| Edge {
            package: n(p),
            version: Version::new(1, 0, 0),
            dependency: n("p0"),
            dependency_version: Version::new(1, 0, 0),
        })
        .into();
    // Upload 1, ahead: p2 1.1.0 drops p0. Upload 2: p0 1.1.0, max 1.
    let ahead = PendingRelease {
        upload_id: 1,
        name: n("p2"),
        release: rel("1.1.0", &[]),
    };
    let me = PendingRelease {
        upload_id: 2,
        name: n("p0"),
        release: rel("1.1.0", &[]),
    };
    let v = Version::new(1, 1, 0);
    let future = FutureStable::new(&stable, 1, [ahead]);
    let (rebuild, beyond) = future.dependents_to_rebuild(&me.name, &v, 1);
    assert_eq!(rebuild.len(), 1);
    assert!(
        beyond.is_empty(),
        "p2 is no dependent while upload 1 is ahead"
    );
    let revdeps = Base {
        serial: 1,
        dependents: rebuild
            .iter()
            .map(|d| Rebuilt {
                dependent: d.clone(),
                closure: future.resolve_dependent(d, Some(&me)).unwrap(),
            })
            .collect(),
        beyond,
        ..Base::default()
    };
    let resolve = Base {
        serial: 1,
        ..Base::default()
    };
    let check = |id, kind, platform: &str, base: &Base| JudgedCheck {
        id,
        kind,
        platform: platform.into(),
        state: CheckState::Passed,
        required: kind != CheckKind::Revdeps,
        base: Some(base.clone()),
    };
    let checks = [
        check(1, CheckKind::Resolve, "", &resolve),
        check(2, CheckKind::Build, PLATFORM, &resolve),
        check(3, CheckKind::Revdeps, PLATFORM, &revdeps),
    ];
    // Upload 1 is rejected; p2 1.0.0 depends on p0 again, beyond the max.
    let now = FutureStable::stable(&stable, 1);
    let (rebuild_now, beyond_now) = now.dependents_to_rebuild(&me.name, &v, 1);
    assert_eq!(beyond_now.len(), 1);
    let judgement = rules::judge(
        2,
        &me.release,
        &checks,
        &[],
        &now.resolve_upload(&me),
        (&rebuild_now, &beyond_now),
    );
    // What happens today: fresh, accepted, and the checker finds the edge.
    if judgement == (Judgement::Fresh { ahead: vec![] }) {
        let edges = rules::edges_built(
            &me.name,
            &me.release,
            &[resolve],
            std::slice::from_ref(&revdeps),
            |_| true,
        );
        let mut stable = stable.clone();
        stable.add_release(me.name.clone(), me.release.clone());
        let exempt: BTreeMap<Edge, Exempt> = revdeps
            .beyond
            .iter()
            .map(|d| {
                let edge = Edge {
                    package: d.name.clone(),
                    version: d.version.clone(),
                    dependency: me.name.clone(),
                    dependency_version: v.clone(),
                };
                (edge, Exempt::BeyondMaxDependents)
            })
            .collect();
        let built: BTreeSet<Edge> = built.into_iter().chain(edges).collect();
        let report = rules::check_invariant(&stable, &built, &exempt);
        panic!(
            "judged fresh; violations: {}",
            report
                .violations
                .iter()
                .map(Edge::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    assert!(
        matches!(judgement, Judgement::Rebase { .. }),
        "{judgement:?}"
    );
}
