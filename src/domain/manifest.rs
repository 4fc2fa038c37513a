//! The package manifest (`NAME-VERSION/package.toml`, SPEC section 2):
//! parsed from text into validated domain types, or refused with an error
//! that names the field at fault.

use std::collections::BTreeMap;
use std::fmt;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use super::name::PackageName;

/// The largest manifest read; a larger one is refused before parsing.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// A validated `package.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: PackageName,
    pub version: Version,
    pub maintainers: Vec<Maintainer>,
    pub description: String,
    pub license: String,
    /// Dependency name to semver requirement (Cargo flavour), sorted by name.
    pub dependencies: BTreeMap<PackageName, VersionReq>,
    pub build: BuildSpec,
}

/// The `[build]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildSpec {
    pub command: String,
    pub test: Option<String>,
    /// Platforms to check on; `None` means every platform the server knows.
    pub platforms: Option<Vec<PackageName>>,
}

/// A maintainer, `Name <address>` or a bare address; receives the emails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintainer {
    pub name: Option<String>,
    pub email: String,
}

/// Why a manifest was refused. The message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("package.toml is not valid UTF-8")]
    NotUtf8,
    #[error("package.toml is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("package.toml is not valid TOML: {0}")]
    Toml(String),
    #[error("package.toml: {field}: {problem}")]
    Field { field: String, problem: String },
}

impl ManifestError {
    fn field(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self::Field {
            field: field.into(),
            problem: problem.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    package: RawPackage,
    #[serde(default)]
    dependencies: BTreeMap<String, String>,
    build: RawBuild,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: String,
    version: String,
    maintainers: Vec<String>,
    description: String,
    license: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: String,
    test: Option<String>,
    platforms: Option<Vec<String>>,
}

impl Manifest {
    /// Parses the bytes of a `package.toml`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        Self::parse(text)
    }

    /// Parses the text of a `package.toml`.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let p = raw.package;
        let name = PackageName::parse(&p.name)
            .map_err(|e| ManifestError::field("package.name", e.reason))?;
        let version = Version::parse(&p.version).map_err(|e| {
            ManifestError::field(
                "package.version",
                format!("{:?} is not a semantic version ({e})", p.version),
            )
        })?;
        if p.maintainers.is_empty() {
            return Err(ManifestError::field(
                "package.maintainers",
                "at least one maintainer is required",
            ));
        }
        let maintainers = p
            .maintainers
            .iter()
            .map(|m| {
                Maintainer::parse(m).map_err(|e| ManifestError::field("package.maintainers", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let description = required_text("package.description", p.description)?;
        let license = required_text("package.license", p.license)?;

        let mut dependencies = BTreeMap::new();
        for (dep, req) in raw.dependencies {
            let field = format!("dependencies.{dep}");
            let dep_name =
                PackageName::parse(&dep).map_err(|e| ManifestError::field(&field, e.reason))?;
            if dep_name == name {
                return Err(ManifestError::field(
                    &field,
                    "a package cannot depend on itself",
                ));
            }
            let req = VersionReq::parse(&req).map_err(|e| {
                ManifestError::field(
                    &field,
                    format!("{req:?} is not a version requirement ({e})"),
                )
            })?;
            dependencies.insert(dep_name, req);
        }

        let b = raw.build;
        let command = required_text("build.command", b.command)?;
        let test = match b.test {
            Some(t) => Some(required_text("build.test", t)?),
            None => None,
        };
        let platforms = match b.platforms {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    return Err(ManifestError::field(
                        "build.platforms",
                        "an empty list builds nowhere; leave the key out to build on every platform",
                    ));
                }
                let mut out: Vec<PackageName> = Vec::with_capacity(list.len());
                for p in &list {
                    let platform = PackageName::parse(p)
                        .map_err(|e| ManifestError::field("build.platforms", e.to_string()))?;
                    if out.contains(&platform) {
                        return Err(ManifestError::field(
                            "build.platforms",
                            format!("{p:?} is listed twice"),
                        ));
                    }
                    out.push(platform);
                }
                Some(out)
            }
        };

        Ok(Self {
            name,
            version,
            maintainers,
            description,
            license,
            dependencies,
            build: BuildSpec {
                command,
                test,
                platforms,
            },
        })
    }

    /// The directory (and archive stem) this package must live in: `NAME-VERSION`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

fn required_text(field: &str, value: String) -> Result<String, ManifestError> {
    if value.trim().is_empty() {
        Err(ManifestError::field(field, "must not be empty"))
    } else {
        Ok(value)
    }
}

/// One line: the toml crate's own message plus where it happened.
fn toml_error(text: &str, e: &toml::de::Error) -> ManifestError {
    let at = e.span().map(|span| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    });
    let message = e.message().trim().replace('\n', " ");
    ManifestError::Toml(format!("{message}{}", at.unwrap_or_default()))
}

impl Maintainer {
    /// Parses `Name <address>` or a bare `address`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, email) = match (s.find('<'), s.strip_suffix('>')) {
            (Some(open), Some(rest)) => {
                let name = s[..open].trim();
                let email = rest[open + 1..].trim();
                ((!name.is_empty()).then(|| name.to_owned()), email)
            }
            (None, None) => (None, s),
            _ => return Err(format!("{s:?} is not `Name <address>`")),
        };
        if !is_plausible_email(email) {
            return Err(format!("{s:?} does not hold a valid email address"));
        }
        Ok(Self {
            name,
            email: email.to_owned(),
        })
    }
}

impl fmt::Display for Maintainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}>", self.email),
            None => f.write_str(&self.email),
        }
    }
}

/// A syntactic check only: one `@`, something either side, a dot in the
/// domain, nothing that would break a mail header.
fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"()[]\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[package]
name = "sound-goodizer"
version = "1.4.0"
maintainers = ["Ada <ada@example.org>"]
description = "Makes sound good"
license = "MIT"

[dependencies]
libwave = "^2.1"

[build]
command = "sh build.sh"
test = "sh test.sh"
platforms = ["linux-x86_64"]
"#;

    #[test]
    fn parses_the_example_of_the_spec() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.name.as_str(), "sound-goodizer");
        assert_eq!(m.version, Version::new(1, 4, 0));
        assert_eq!(m.maintainers[0].email, "ada@example.org");
        assert_eq!(m.maintainers[0].name.as_deref(), Some("Ada"));
        assert_eq!(m.dir_name(), "sound-goodizer-1.4.0");
        let req = &m.dependencies[&PackageName::parse("libwave").unwrap()];
        assert!(req.matches(&Version::new(2, 3, 0)));
        assert!(!req.matches(&Version::new(3, 0, 0)));
        assert_eq!(m.build.test.as_deref(), Some("sh test.sh"));
    }

    fn refusal(from: &str, to: &str) -> ManifestError {
        Manifest::parse(&GOOD.replace(from, to)).unwrap_err()
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            ("\"sound-goodizer\"", "\"Sound\"", "package.name"),
            ("\"1.4.0\"", "\"1.4\"", "package.version"),
            ("[\"Ada <ada@example.org>\"]", "[]", "package.maintainers"),
            (
                "[\"Ada <ada@example.org>\"]",
                "[\"Ada\"]",
                "package.maintainers",
            ),
            ("\"^2.1\"", "\"two\"", "dependencies.libwave"),
            (
                "libwave =",
                "sound-goodizer =",
                "dependencies.sound-goodizer",
            ),
            ("\"sh build.sh\"", "\"  \"", "build.command"),
            ("\"MIT\"", "\"\"", "package.license"),
        ];
        for (from, to, field) in cases {
            match refusal(from, to) {
                ManifestError::Field { field: f, .. } => assert_eq!(f, field, "{to}"),
                other => panic!("{to}: expected a field error, got {other}"),
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_refused_with_a_line() {
        let e = refusal("command =", "comand =");
        assert!(e.to_string().contains("comand"), "{e}");
        let e = Manifest::parse("[package\nname=").unwrap_err();
        assert!(
            matches!(e, ManifestError::Toml(ref m) if m.contains("line")),
            "{e}"
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        assert_eq!(
            Manifest::from_bytes(b"name = \"\xff\"").unwrap_err(),
            ManifestError::NotUtf8
        );
    }

    #[test]
    fn bare_addresses_are_maintainers() {
        let m = Maintainer::parse("ada@example.org").unwrap();
        assert_eq!(m.name, None);
        assert!(Maintainer::parse("not an address").is_err());
        assert!(Maintainer::parse("Ada <ada@example.org").is_err());
    }
}
