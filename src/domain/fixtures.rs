//! Test fixtures shared by the domain's unit tests.

use semver::{Version, VersionReq};

use super::PackageName;
use super::resolve::Release;

/// A package name that is known to be valid.
pub fn n(s: &str) -> PackageName {
    PackageName::parse(s).unwrap()
}

/// A release of `version` with `deps` (name, requirement).
pub fn rel(version: &str, deps: &[(&str, &str)]) -> Release {
    Release {
        version: Version::parse(version).unwrap(),
        dependencies: deps
            .iter()
            .map(|(d, r)| (n(d), VersionReq::parse(r).unwrap()))
            .collect(),
    }
}
