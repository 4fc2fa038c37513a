//! The state of a package in the stable repository (SPEC section 5):
//! `active`, `obsolete` (its dependents pinned, no new uploads), or
//! `removed` (nothing depended on it any more; its versions are gone).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a package stands in the stable repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    Active,
    Obsolete,
    Removed,
}

impl PackageState {
    pub const ALL: [PackageState; 3] = [Self::Active, Self::Obsolete, Self::Removed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Obsolete => "obsolete",
            Self::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for PackageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A package state this build does not know (written by a newer server).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown package state {0:?} (written by a newer holdq?)")]
pub struct UnknownPackageState(pub String);

impl TryFrom<String> for PackageState {
    type Error = UnknownPackageState;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or(UnknownPackageState(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_an_unknown_one_is_named() {
        for s in PackageState::ALL {
            assert_eq!(PackageState::try_from(s.to_string()), Ok(s));
        }
        let err = PackageState::try_from("archived".to_owned()).unwrap_err();
        assert!(err.to_string().contains("\"archived\""), "{err}");
    }
}
