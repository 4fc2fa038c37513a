//! The rules of the tus 1.0 protocol that need no server: the version, the
//! extensions and checksum algorithms holdq speaks, and the parsing of the
//! `Upload-Metadata` and `Upload-Checksum` headers.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The one protocol version spoken (`Tus-Resumable`, `Tus-Version`).
pub const VERSION: &str = "1.0.0";

/// The extensions implemented (`Tus-Extension`).
pub const EXTENSIONS: &str = "creation,checksum,termination,expiration";

/// The checksum algorithms accepted in `Upload-Checksum`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

/// The content type of a PATCH body.
pub const PATCH_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// What `Upload-Metadata` says about an upload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The file's name, as the client knows it (shown in listings).
    pub filename: Option<String>,
    /// The whole file's sha256 (lowercase hex), checked when it is complete.
    pub sha256: Option<String>,
    /// The upload group it joins.
    pub group: Option<i64>,
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("Upload-Metadata: {0}")]
    Metadata(String),
    #[error("Upload-Checksum must be `ALGORITHM BASE64` with sha1 or sha256, got {0:?}")]
    Checksum(String),
}

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs (a
/// key alone means an empty value). Unknown keys are kept by the caller as
/// the raw header and otherwise ignored, as the protocol asks.
pub fn parse_metadata(header: &str) -> Result<Metadata, HeaderError> {
    let mut pairs = BTreeMap::new();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HeaderError::Metadata(format!("{key:?} is not a key")));
        }
        let bytes = STANDARD
            .decode(value.trim())
            .map_err(|_| HeaderError::Metadata(format!("the value of {key} is not base64")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| HeaderError::Metadata(format!("the value of {key} is not UTF-8")))?;
        if pairs.insert(key.to_owned(), text).is_some() {
            return Err(HeaderError::Metadata(format!("{key} is given twice")));
        }
    }
    let sha256 = match pairs.remove("sha256") {
        Some(hex) => Some(parse_sha256_hex(&hex).ok_or_else(|| {
            HeaderError::Metadata(format!("sha256 must be 64 hexadecimal digits, got {hex:?}"))
        })?),
        None => None,
    };
    let group = match pairs.remove("group") {
        Some(id) => Some(id.trim().parse().map_err(|_| {
            HeaderError::Metadata(format!("group must be an upload group id, got {id:?}"))
        })?),
        None => None,
    };
    Ok(Metadata {
        filename: pairs.remove("filename").filter(|f| !f.is_empty()),
        sha256,
        group,
    })
}

fn parse_sha256_hex(hex: &str) -> Option<String> {
    let hex = hex.trim().to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// A checksum algorithm of `Upload-Checksum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

/// The checksum a PATCH body must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

/// Parses `Upload-Checksum: sha256 BASE64DIGEST`.
pub fn parse_checksum(header: &str) -> Result<Checksum, HeaderError> {
    let bad = || HeaderError::Checksum(header.to_owned());
    let (name, value) = header.trim().split_once(' ').ok_or_else(bad)?;
    let (algorithm, len) = match name {
        "sha1" => (ChecksumAlgorithm::Sha1, 20),
        "sha256" => (ChecksumAlgorithm::Sha256, 32),
        _ => return Err(bad()),
    };
    let digest = STANDARD.decode(value.trim()).map_err(|_| bad())?;
    if digest.len() != len {
        return Err(bad());
    }
    Ok(Checksum { algorithm, digest })
}

/// Encodes `Upload-Metadata` (what a client sends).
pub fn encode_metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_ignores_unknown_keys() {
        let sha = "ab".repeat(32);
        let header = encode_metadata(&[
            ("filename", "alpha-1.0.0.tar.gz"),
            ("sha256", &sha),
            ("group", "7"),
            ("filetype", "application/gzip"),
        ]);
        let m = parse_metadata(&format!("{header},flag")).unwrap();
        assert_eq!(m.filename.as_deref(), Some("alpha-1.0.0.tar.gz"));
        assert_eq!(m.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(m.group, Some(7));
        assert_eq!(parse_metadata("").unwrap(), Metadata::default());
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let e = parse_metadata("filename !!!").unwrap_err();
        assert!(e.to_string().contains("filename"), "{e}");
        let e = parse_metadata(&encode_metadata(&[("sha256", "xyz")])).unwrap_err();
        assert!(e.to_string().contains("64 hexadecimal"), "{e}");
        let e = parse_metadata(&encode_metadata(&[("group", "seven")])).unwrap_err();
        assert!(e.to_string().contains("group"), "{e}");
    }

    #[test]
    fn checksums_parse_with_their_lengths() {
        let sha1 = STANDARD.encode([0u8; 20]);
        assert_eq!(
            parse_checksum(&format!("sha1 {sha1}")).unwrap().algorithm,
            ChecksumAlgorithm::Sha1
        );
        assert!(parse_checksum(&format!("sha256 {sha1}")).is_err());
        assert!(parse_checksum(&format!("md5 {sha1}")).is_err());
        assert!(parse_checksum("sha256").is_err());
    }
}
