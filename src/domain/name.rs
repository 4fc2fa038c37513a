//! `PackageName`: the validated name of a package, and of a platform.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name the repository accepts (the first character plus 63 more).
pub const MAX_NAME_LEN: usize = 64;

/// A package name: `[a-z0-9][a-z0-9_-]{0,63}`.
///
/// Parsed once at the edge; everything past that holds a `PackageName` and
/// never re-checks. Serializes as a plain string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

/// Why a string is not a valid package name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid package name {name:?}: {reason}")]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

impl PackageName {
    pub fn parse(name: &str) -> Result<Self, InvalidName> {
        let invalid = |reason| InvalidName {
            name: name.to_owned(),
            reason,
        };
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return Err(invalid("a name cannot be empty"));
        };
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("a name has at most 64 characters"));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(invalid(
                "a name starts with a lowercase letter or a digit (a-z, 0-9)",
            ));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
            return Err(invalid(
                "a name holds only lowercase letters, digits, '_' and '-'",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PackageName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PackageName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PackageName> for String {
    fn from(name: PackageName) -> String {
        name.0
    }
}

impl AsRef<str> for PackageName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_names_of_the_spec() {
        for ok in ["sound-goodizer", "libwave", "a", "0x", "a_b-c9"] {
            assert!(PackageName::parse(ok).is_ok(), "{ok}");
        }
        assert!(PackageName::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_names_outside_the_rule() {
        for bad in ["", "Sound", "-lead", "_lead", "has space", "dot.ted", "ünï"] {
            assert!(PackageName::parse(bad).is_err(), "{bad}");
        }
        assert!(PackageName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn deserializing_validates() {
        let bad: Result<PackageName, _> = serde_json::from_str("\"UPPER\"");
        assert!(bad.is_err());
        let good: PackageName = serde_json::from_str("\"lower\"").unwrap();
        assert_eq!(good.as_str(), "lower");
    }
}
