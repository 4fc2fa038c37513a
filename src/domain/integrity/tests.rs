//! Unit tests of the integrity rules.
use super::*;
use crate::domain::fixtures::{n, rel};

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn stable() -> StableRepo {
    let mut s = StableRepo::new();
    s.add_release(n("lib"), rel("1.0.0", &[]));
    s.add_release(n("app"), rel("1.0.0", &[("lib", "^1")]));
    s
}

fn pending(id: i64, name: &str, release: Release) -> PendingRelease {
    PendingRelease {
        upload_id: id,
        name: n(name),
        release,
    }
}

#[test]
fn an_upload_is_resolved_against_the_uploads_ahead_that_it_admits() {
    let s = stable();
    let future = FutureStable::new(&s, 7, [pending(41, "lib", rel("1.1.0", &[]))]);
    let me = pending(42, "app", rel("1.1.0", &[("lib", "^1.1")]));
    let closure = future.resolve_upload(&me).unwrap();
    assert_eq!(
        closure[&n("lib")],
        Pinned {
            version: v("1.1.0"),
            source: Source::Upload(41)
        }
    );
    let base = Base {
        serial: 7,
        closure,
        ..Base::default()
    };
    assert_eq!(base.assumptions(42), BTreeSet::from([41]));

    // An ahead upload the requirement does not admit is not assumed.
    let old = pending(43, "app", rel("1.2.0", &[("lib", "=1.0.0")]));
    let closure = future.resolve_upload(&old).unwrap();
    assert_eq!(closure[&n("lib")].source, Source::Stable);
}

#[test]
fn revdeps_rebuild_the_dependents_ahead_in_place_of_their_stable_version() {
    let s = stable();
    let future = FutureStable::new(&s, 7, [pending(41, "app", rel("1.1.0", &[("lib", "^1")]))]);
    let (rebuild, beyond) = future.dependents_to_rebuild(&n("lib"), &v("1.1.0"), 100);
    assert_eq!(
        rebuild,
        vec![Dependent {
            name: n("app"),
            version: v("1.1.0"),
            source: Source::Upload(41)
        }]
    );
    assert!(beyond.is_empty());
    let me = pending(42, "lib", rel("1.1.0", &[]));
    let closure = future.resolve_dependent(&rebuild[0], Some(&me)).unwrap();
    assert_eq!(closure[&n("lib")].source, Source::Upload(42));

    // An ahead version that drops the dependency is not a dependent.
    let future = FutureStable::new(&s, 7, [pending(41, "app", rel("2.0.0", &[]))]);
    assert!(
        future
            .dependents_to_rebuild(&n("lib"), &v("1.1.0"), 100)
            .0
            .is_empty()
    );
    // A version the requirement does not admit is not rebuilt against.
    let future = FutureStable::stable(&s, 7);
    assert!(
        future
            .dependents_to_rebuild(&n("lib"), &v("2.0.0"), 100)
            .0
            .is_empty()
    );
    let (rebuild, beyond) = future.dependents_to_rebuild(&n("lib"), &v("1.2.0"), 0);
    assert!(rebuild.is_empty());
    assert_eq!(beyond.len(), 1);
}

#[test]
fn a_build_base_goes_stale_only_when_a_direct_dependency_moves() {
    let mut s = stable();
    s.add_release(n("deep"), rel("1.0.0", &[]));
    s.add_release(n("lib"), rel("1.0.1", &[("deep", "^1")]));
    let me = pending(50, "tool", rel("1.0.0", &[("lib", "^1")]));
    let recorded = Base {
        serial: 1,
        closure: FutureStable::stable(&s, 1).resolve_upload(&me).unwrap(),
        ..Base::default()
    };
    // deep moves: not a direct edge of tool, not stale.
    s.add_release(n("deep"), rel("1.0.1", &[]));
    let now = FutureStable::stable(&s, 2).resolve_upload(&me);
    assert_eq!(build_stale(Some(&recorded), &me.release, &now), None);
    // lib moves: stale, and the reason names it.
    s.add_release(n("lib"), rel("1.1.0", &[]));
    let now = FutureStable::stable(&s, 3).resolve_upload(&me);
    let why = build_stale(Some(&recorded), &me.release, &now).unwrap();
    assert!(why.contains("lib 1.1.0 entered stable"), "{why}");
    // No recorded base (an upload from before bases): stale.
    assert!(build_stale(None, &me.release, &now).is_some());
}

#[test]
fn a_revdeps_base_goes_stale_when_the_dependents_change() {
    let mut s = stable();
    let recorded = Base {
        serial: 1,
        dependents: vec![Rebuilt {
            dependent: Dependent {
                name: n("app"),
                version: v("1.0.0"),
                source: Source::Stable,
            },
            closure: Closure::new(),
        }],
        ..Base::default()
    };
    let now = FutureStable::stable(&s, 1)
        .dependents_to_rebuild(&n("lib"), &v("1.1.0"), 100)
        .0;
    assert_eq!(revdeps_stale(Some(&recorded), (&now, &[])), None);
    s.add_release(n("app"), rel("1.1.0", &[("lib", "^1")]));
    let now = FutureStable::stable(&s, 2)
        .dependents_to_rebuild(&n("lib"), &v("1.1.0"), 100)
        .0;
    let why = revdeps_stale(Some(&recorded), (&now, &[])).unwrap();
    assert!(why.contains("app 1.1.0"), "{why}");
}

#[test]
fn the_checker_finds_a_pair_never_built_together() {
    // The race of the issue: app 1.1.0 built with lib 1.0.0, lib 1.1.0
    // whose revdeps rebuilt app 1.0.0; both accepted.
    let mut s = stable();
    s.add_release(n("app"), rel("1.1.0", &[("lib", "^1")]));
    s.add_release(n("lib"), rel("1.1.0", &[]));
    let built: BTreeSet<Edge> = [
        Edge {
            package: n("app"),
            version: v("1.1.0"),
            dependency: n("lib"),
            dependency_version: v("1.0.0"),
        },
        Edge {
            package: n("app"),
            version: v("1.0.0"),
            dependency: n("lib"),
            dependency_version: v("1.1.0"),
        },
    ]
    .into();
    let report = check_invariant(&s, &built, &BTreeMap::new());
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].to_string(), "app 1.1.0 -> lib 1.1.0");
    // Exempt with a reason: not a violation.
    let exempt = [(report.violations[0].clone(), Exempt::AllowedRegression)].into();
    let report = check_invariant(&s, &built, &exempt);
    assert!(report.violations.is_empty());
    assert_eq!(report.exempt.len(), 1);
}
