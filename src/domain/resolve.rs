//! Dependency resolution over the stable repository (SPEC section 4), with
//! the `pubgrub` solver: for every package in the closure, the highest
//! stable version that satisfies every requirement on it.
//!
//! Version sets are exact: a requirement becomes the set of the package's
//! *known* versions that `semver` says it matches (pre-release rules
//! included), written as a few intervals between known versions. The solver
//! never sees a version that is not in the repository, so nothing is lost
//! in translating Cargo-flavoured requirements to ranges.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use pubgrub::{
    DefaultStringReporter, Dependencies, DependencyConstraints, DependencyProvider,
    PackageResolutionStatistics, PubGrubError, Ranges, Reporter,
};
use semver::{Version, VersionReq};

use super::name::PackageName;

/// One version of a package and what it requires.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    pub version: Version,
    pub dependencies: BTreeMap<PackageName, VersionReq>,
}

/// The versions resolution may choose from, per package, sorted ascending.
#[derive(Clone, Debug, Default)]
pub struct Universe {
    packages: HashMap<PackageName, Vec<Release>>,
    /// Max-version pins: (dependent, dependency) -> highest admitted version.
    pins: HashMap<(PackageName, PackageName), Version>,
}

/// The chosen version of every package in a closure (the root excluded).
pub type Resolution = BTreeMap<PackageName, Version>;

/// Why no resolution exists: the solver's explanation, naming the
/// conflicting requirements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

impl Universe {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a release; keeps each package's releases sorted.
    pub fn add(&mut self, name: PackageName, release: Release) {
        let releases = self.packages.entry(name).or_default();
        let at = releases.partition_point(|r| r.version < release.version);
        if releases
            .get(at)
            .is_some_and(|r| r.version == release.version)
        {
            releases[at] = release;
        } else {
            releases.insert(at, release);
        }
    }

    /// Replaces every release of `name` by `release` alone: how an upload
    /// stands in for the stable versions of its package.
    pub fn replace(&mut self, name: PackageName, release: Release) {
        self.packages.insert(name, vec![release]);
    }

    pub fn releases(&self, name: &PackageName) -> &[Release] {
        self.packages
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn release(&self, name: &PackageName, version: &Version) -> Option<&Release> {
        self.releases(name).iter().find(|r| &r.version == version)
    }

    /// The highest version of `name`, if any.
    pub fn latest(&self, name: &PackageName) -> Option<&Release> {
        self.releases(name).last()
    }

    /// Every version of every package requiring `dependency` is held to
    /// `<= max` when the requiring package is `dependent`.
    pub fn pin(&mut self, dependent: PackageName, dependency: PackageName, max: Version) {
        self.pins.insert((dependent, dependency), max);
    }

    pub fn unpin(&mut self, dependent: &PackageName, dependency: &PackageName) {
        self.pins.remove(&(dependent.clone(), dependency.clone()));
    }

    /// The pin on `dependent`'s requirement on `dependency`, if any.
    pub fn pin_of(&self, dependent: &PackageName, dependency: &PackageName) -> Option<&Version> {
        self.pins.get(&(dependent.clone(), dependency.clone()))
    }

    /// Removes a package and every pin that names it.
    pub fn remove(&mut self, name: &PackageName) -> Option<Vec<Release>> {
        self.pins.retain(|(a, b), _| a != name && b != name);
        self.packages.remove(name)
    }

    pub fn package_names(&self) -> impl Iterator<Item = &PackageName> {
        self.packages.keys()
    }

    /// Resolves the closure of `name` at `version` (which must be in the
    /// universe).
    pub fn resolve(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Resolution, ResolveError> {
        View {
            base: self,
            overlay: None,
        }
        .resolve(name, version)
    }

    /// Resolves as if `overlay` stood in for every version of its package,
    /// without copying the universe: how an upload is checked, and how a
    /// dependent is rebuilt against an upload.
    pub fn resolve_with(
        &self,
        name: &PackageName,
        version: &Version,
        overlay: (&PackageName, &Release),
    ) -> Result<Resolution, ResolveError> {
        let overlay: Overlay = [(overlay.0.clone(), vec![overlay.1.clone()])].into();
        self.resolve_over(name, version, &overlay)
    }

    /// Resolves as if each package of `overlay` had exactly the releases
    /// it lists there (pins still apply): how the future stable, stable plus
    /// the uploads ahead, is seen without copying the universe.
    pub fn resolve_over(
        &self,
        name: &PackageName,
        version: &Version,
        overlay: &Overlay,
    ) -> Result<Resolution, ResolveError> {
        View {
            base: self,
            overlay: Some(overlay),
        }
        .resolve(name, version)
    }
}

/// Packages whose releases are replaced, each by a sorted list.
pub type Overlay = HashMap<PackageName, Vec<Release>>;

/// The universe as one resolution sees it: the base, with an optional
/// package whose versions are replaced.
struct View<'a> {
    base: &'a Universe,
    overlay: Option<&'a Overlay>,
}

impl View<'_> {
    fn releases(&self, name: &PackageName) -> &[Release] {
        match self.overlay.and_then(|o| o.get(name)) {
            Some(releases) => releases,
            None => self.base.releases(name),
        }
    }

    fn release(&self, name: &PackageName, version: &Version) -> Option<&Release> {
        self.releases(name).iter().find(|r| &r.version == version)
    }

    fn resolve(&self, name: &PackageName, version: &Version) -> Result<Resolution, ResolveError> {
        match pubgrub::resolve(self, name.clone(), version.clone()) {
            Ok(selected) => Ok(selected
                .into_iter()
                .filter(|(package, _)| package != name)
                .collect()),
            Err(PubGrubError::NoSolution(mut tree)) => {
                tree.collapse_no_versions();
                Err(ResolveError(DefaultStringReporter::report(&tree)))
            }
            Err(other) => Err(ResolveError(other.to_string())),
        }
    }

    /// The known versions of `name` that `req` matches, as intervals.
    fn matching(&self, name: &PackageName, req: &VersionReq) -> Ranges<Version> {
        let mut set = Ranges::empty();
        let mut run: Option<(&Version, &Version)> = None;
        for release in self.releases(name) {
            if req.matches(&release.version) {
                run = Some(match run {
                    Some((first, _)) => (first, &release.version),
                    None => (&release.version, &release.version),
                });
            } else if let Some((first, last)) = run.take() {
                set = set.union(&Ranges::between_inclusive(first, last));
            }
        }
        if let Some((first, last)) = run {
            set = set.union(&Ranges::between_inclusive(first, last));
        }
        set
    }
}

trait Inclusive {
    fn between_inclusive(first: &Version, last: &Version) -> Self;
}

impl Inclusive for Ranges<Version> {
    fn between_inclusive(first: &Version, last: &Version) -> Self {
        Ranges::from_range_bounds(first.clone()..=last.clone())
    }
}

impl DependencyProvider for View<'_> {
    type P = PackageName;
    type V = Version;
    type VS = Ranges<Version>;
    type M = String;
    type Priority = (u32, Reverse<usize>);
    type Err = Infallible;

    fn prioritize(
        &self,
        package: &PackageName,
        range: &Ranges<Version>,
        stats: &PackageResolutionStatistics,
    ) -> Self::Priority {
        // Decide first where conflicts were seen, then where few versions fit.
        let fitting = self
            .releases(package)
            .iter()
            .filter(|r| range.contains(&r.version))
            .count();
        (stats.conflict_count(), Reverse(fitting))
    }

    fn choose_version(
        &self,
        package: &PackageName,
        range: &Ranges<Version>,
    ) -> Result<Option<Version>, Infallible> {
        Ok(self
            .releases(package)
            .iter()
            .rev()
            .find(|r| range.contains(&r.version))
            .map(|r| r.version.clone()))
    }

    fn get_dependencies(
        &self,
        package: &PackageName,
        version: &Version,
    ) -> Result<Dependencies<PackageName, Ranges<Version>, String>, Infallible> {
        let Some(release) = self.release(package, version) else {
            return Ok(Dependencies::Unavailable(format!(
                "{package} {version} is not available"
            )));
        };
        let constraints: DependencyConstraints<_, _> = release
            .dependencies
            .iter()
            .map(|(dep, req)| {
                let mut set = self.matching(dep, req);
                if let Some(max) = self.base.pin_of(package, dep) {
                    set = set.intersection(&Ranges::lower_than(max.clone()));
                }
                (dep.clone(), set)
            })
            .collect();
        Ok(Dependencies::Available(constraints))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{n, rel};

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn picks_the_highest_version_that_fits_every_requirement() {
        let mut u = Universe::new();
        for ver in ["1.0.0", "1.5.0", "2.0.0"] {
            u.add(n("libwave"), rel(ver, &[]));
        }
        u.add(n("mixer"), rel("1.0.0", &[("libwave", ">=1.2, <2")]));
        u.add(
            n("app"),
            rel("0.1.0", &[("libwave", "^1"), ("mixer", "^1")]),
        );
        let r = u.resolve(&n("app"), &v("0.1.0")).unwrap();
        assert_eq!(r[&n("libwave")], v("1.5.0"));
        assert_eq!(r[&n("mixer")], v("1.0.0"));
        assert!(!r.contains_key(&n("app")));
    }

    #[test]
    fn a_conflict_names_the_requirements() {
        let mut u = Universe::new();
        u.add(n("libwave"), rel("1.0.0", &[]));
        u.add(n("libwave"), rel("2.0.0", &[]));
        u.add(n("mixer"), rel("1.0.0", &[("libwave", "^1")]));
        u.add(
            n("app"),
            rel("0.1.0", &[("libwave", "^2"), ("mixer", "^1")]),
        );
        let e = u.resolve(&n("app"), &v("0.1.0")).unwrap_err();
        assert!(e.0.contains("libwave") && e.0.contains("mixer"), "{e}");
    }

    #[test]
    fn a_missing_package_is_named() {
        let mut u = Universe::new();
        u.add(n("app"), rel("0.1.0", &[("ghost", "^1")]));
        let e = u.resolve(&n("app"), &v("0.1.0")).unwrap_err();
        assert!(e.0.contains("ghost"), "{e}");
    }

    #[test]
    fn prereleases_follow_semver_rules() {
        let mut u = Universe::new();
        u.add(n("lib"), rel("1.0.0", &[]));
        u.add(n("lib"), rel("1.1.0-beta.1", &[]));
        u.add(n("app"), rel("1.0.0", &[("lib", "^1")]));
        u.add(n("brave"), rel("1.0.0", &[("lib", "^1.1.0-beta.1")]));
        // ^1 does not admit a pre-release even though it sorts higher.
        assert_eq!(
            u.resolve(&n("app"), &v("1.0.0")).unwrap()[&n("lib")],
            v("1.0.0")
        );
        assert_eq!(
            u.resolve(&n("brave"), &v("1.0.0")).unwrap()[&n("lib")],
            v("1.1.0-beta.1")
        );
    }

    #[test]
    fn an_upload_replaces_the_stable_versions_of_its_package() {
        let mut u = Universe::new();
        u.add(n("lib"), rel("1.0.0", &[]));
        u.add(n("lib"), rel("1.1.0", &[]));
        u.add(n("user"), rel("1.0.0", &[("lib", "^1")]));
        u.replace(n("lib"), rel("1.2.0", &[]));
        assert_eq!(
            u.resolve(&n("user"), &v("1.0.0")).unwrap()[&n("lib")],
            v("1.2.0")
        );
        u.replace(n("lib"), rel("2.0.0", &[]));
        assert!(u.resolve(&n("user"), &v("1.0.0")).is_err());
    }

    #[test]
    fn a_pin_holds_a_dependent_to_a_maximum() {
        let mut u = Universe::new();
        u.add(n("lib"), rel("1.0.0", &[]));
        u.add(n("lib"), rel("1.5.0", &[]));
        u.add(n("user"), rel("1.0.0", &[("lib", "^1")]));
        u.add(n("other"), rel("1.0.0", &[("lib", "^1")]));
        u.pin(n("user"), n("lib"), v("1.0.0"));
        assert_eq!(
            u.resolve(&n("user"), &v("1.0.0")).unwrap()[&n("lib")],
            v("1.0.0")
        );
        assert_eq!(
            u.resolve(&n("other"), &v("1.0.0")).unwrap()[&n("lib")],
            v("1.5.0")
        );
        u.unpin(&n("user"), &n("lib"));
        assert_eq!(
            u.resolve(&n("user"), &v("1.0.0")).unwrap()[&n("lib")],
            v("1.5.0")
        );
    }

    #[test]
    fn an_overlay_stands_in_without_copying() {
        let mut u = Universe::new();
        u.add(n("lib"), rel("1.0.0", &[]));
        u.add(n("user"), rel("1.0.0", &[("lib", "^1")]));
        let upload = rel("1.3.0", &[]);
        let r = u
            .resolve_with(&n("user"), &v("1.0.0"), (&n("lib"), &upload))
            .unwrap();
        assert_eq!(r[&n("lib")], v("1.3.0"));
        assert_eq!(
            u.resolve(&n("user"), &v("1.0.0")).unwrap()[&n("lib")],
            v("1.0.0")
        );
        let breaking = rel("2.0.0", &[]);
        assert!(
            u.resolve_with(&n("user"), &v("1.0.0"), (&n("lib"), &breaking))
                .is_err()
        );
        // The upload itself is the root.
        let own = rel("0.1.0", &[("lib", "^1")]);
        let r = u
            .resolve_with(&n("new"), &v("0.1.0"), (&n("new"), &own))
            .unwrap();
        assert_eq!(r[&n("lib")], v("1.0.0"));
    }

    #[test]
    fn cycles_resolve() {
        let mut u = Universe::new();
        u.add(n("a"), rel("1.0.0", &[("b", "^1")]));
        u.add(n("b"), rel("1.0.0", &[("a", "^1")]));
        let r = u.resolve(&n("a"), &v("1.0.0")).unwrap();
        assert_eq!(r.len(), 1);
    }
}
