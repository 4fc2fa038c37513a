//! The drop-box manifest (mmpack): `NAME.holdq-manifest`, TOML naming the
//! uploader and each archive with its sha256 (and, optionally, the package
//! name and version it must hold).
//!
//! ```toml
//! uploader = "ada@example.org"
//! together = true
//! [[file]]
//! name = "alpha-1.0.0.tar.gz"
//! sha256 = "…"
//! package = "alpha"      # optional
//! version = "1.0.0"      # optional
//! ```

use serde::Deserialize;

/// The suffix that makes a file of the drop box a manifest.
pub const MANIFEST_SUFFIX: &str = ".holdq-manifest";
/// The suffix of the outcome written beside it.
pub const RESULT_SUFFIX: &str = ".holdq-result.json";

/// A manifest that parsed and obeys the rules below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropManifest {
    pub uploader: String,
    pub together: bool,
    pub files: Vec<DropFile>,
}

/// One archive the manifest lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropFile {
    /// A plain file name in the drop box.
    pub name: String,
    /// Lowercase hex.
    pub sha256: String,
    pub package: Option<crate::domain::PackageName>,
    pub version: Option<semver::Version>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    uploader: String,
    #[serde(default)]
    together: bool,
    #[serde(default)]
    file: Vec<RawFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    sha256: String,
    package: Option<String>,
    version: Option<String>,
}

/// Why a manifest is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropError {
    /// Not (yet) TOML: a writer may still be writing it in place.
    #[error("the manifest is not valid TOML: {0}")]
    NotToml(String),
    #[error("the manifest is invalid: {0}")]
    Invalid(String),
}

/// Parses and checks a manifest's text.
pub fn parse(text: &str) -> Result<DropManifest, DropError> {
    let raw: Raw = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) if toml::from_str::<toml::Table>(text).is_err() => {
            return Err(DropError::NotToml(e.message().to_owned()));
        }
        Err(e) => return Err(DropError::Invalid(e.message().to_owned())),
    };
    let invalid = |m: String| Err(DropError::Invalid(m));
    if !raw.uploader.contains('@') {
        return invalid(format!("uploader {:?} is not an email", raw.uploader));
    }
    if raw.file.is_empty() {
        return invalid("it lists no [[file]]".into());
    }
    let mut files: Vec<DropFile> = Vec::new();
    for f in raw.file {
        if !is_plain_name(&f.name) {
            return invalid(format!(
                "file name {:?} must be a plain name in the drop box",
                f.name
            ));
        }
        if files.iter().any(|g| g.name == f.name) {
            return invalid(format!("{} is listed twice", f.name));
        }
        let sha256 = f.sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(format!("{}: sha256 must be 64 hexadecimal digits", f.name));
        }
        let package = f
            .package
            .map(|p| crate::domain::PackageName::parse(&p))
            .transpose()
            .map_err(|e| DropError::Invalid(format!("{}: package: {e}", f.name)))?;
        let version = f
            .version
            .map(|v| semver::Version::parse(&v))
            .transpose()
            .map_err(|e| DropError::Invalid(format!("{}: version: {e}", f.name)))?;
        files.push(DropFile {
            name: f.name,
            sha256,
            package,
            version,
        });
    }
    Ok(DropManifest {
        uploader: raw.uploader,
        together: raw.together,
        files,
    })
}

/// A name that stays in its directory and is none of the drop box's own.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.ends_with(MANIFEST_SUFFIX)
        && !name.ends_with(RESULT_SUFFIX)
        && name != "rejected"
}

/// The manifest's `NAME`, when `file_name` is a manifest's.
pub fn manifest_name(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(MANIFEST_SUFFIX)
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn a_manifest_parses_with_its_files() {
        let m = parse(&format!(
            "uploader = \"ada@example.org\"\ntogether = true\n[[file]]\nname = \"a.tar.gz\"\nsha256 = \"{SHA}\"\npackage = \"alpha\"\nversion = \"1.0.0\"\n"
        ))
        .unwrap();
        assert!(m.together);
        assert_eq!(m.files[0].package.as_ref().unwrap().as_str(), "alpha");
    }

    #[test]
    fn half_written_toml_is_not_yet_a_manifest() {
        assert!(matches!(
            parse("uploader = \"ada@exa"),
            Err(DropError::NotToml(_))
        ));
    }

    #[test]
    fn rule_breaking_manifests_are_invalid_with_the_reason() {
        for (text, why) in [
            ("uploader = \"ada@example.org\"\n".to_owned(), "no [[file]]"),
            (
                format!(
                    "uploader = \"ada@example.org\"\n[[file]]\nname = \"../x\"\nsha256 = \"{SHA}\"\n"
                ),
                "plain name",
            ),
            (
                "uploader = \"ada@example.org\"\n[[file]]\nname = \"x\"\nsha256 = \"12\"\n"
                    .to_owned(),
                "64 hexadecimal",
            ),
            (
                format!("uploader = \"ada\"\n[[file]]\nname = \"x\"\nsha256 = \"{SHA}\"\n"),
                "not an email",
            ),
            ("uploader = 3\n".to_owned(), "string"),
        ] {
            match parse(&text) {
                Err(DropError::Invalid(m)) => assert!(m.contains(why), "{m} / {why}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn manifest_names() {
        assert_eq!(manifest_name("batch.holdq-manifest"), Some("batch"));
        assert_eq!(manifest_name(".holdq-manifest"), None);
        assert_eq!(manifest_name("batch.tar.gz"), None);
    }
}
