//! What a finished check records beside its state (SPEC section 4): build
//! metadata, and each dependent a revdeps check rebuilt with its result.
//! Written and read through these types only, never as loose JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::integrity::Source;
use super::passmark::CheckRecord;

/// How a dependent fared when rebuilt against an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependentResult {
    /// It still builds.
    #[serde(rename = "ok")]
    Ok,
    /// It built without the upload and fails with it.
    #[serde(rename = "regression")]
    Regression,
    /// It fails without the upload too: not counted.
    #[serde(rename = "already broken")]
    AlreadyBroken,
}

/// One dependent of a revdeps check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebuiltResult {
    pub name: String,
    pub version: String,
    /// Stable, or the pending upload ahead it came from (absent in rows
    /// written before speculative checks).
    #[serde(default)]
    pub source: Option<Source>,
    pub result: DependentResult,
}

/// The metadata of a revdeps check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RevdepsMetadata {
    /// Of the counted dependents, the share that still build.
    pub fraction: f64,
    pub dependents: Vec<RebuiltResult>,
}

/// The metadata of a build check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildMetadata {
    pub duration_ms: u64,
    pub installed_bytes: u64,
    pub files: Vec<String>,
    /// The version of every package of the closure it was built with
    /// (absent when it did not resolve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<BTreeMap<String, String>>,
    pub tries: i64,
    pub flaky: bool,
    /// Set by an operator's retry: a pass then is flaky.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub manual_retry: bool,
}

impl RevdepsMetadata {
    /// Reads a stored revdeps metadata column (empty when there is none).
    pub fn parse(stored: Option<&str>) -> Self {
        stored
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default()
    }
}

impl BuildMetadata {
    /// Reads a stored build metadata column (empty when there is none or
    /// it is not a finished build's).
    pub fn parse(stored: Option<&str>) -> Self {
        stored
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default()
    }
}

/// What a verdict records beside its score and threshold: the checks that
/// failed, what was flaky, the uploads ahead it was checked with, and the
/// check results it was judged on (what a pass mark simulation replays).
/// A cancellation records who cancelled it and why instead of results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictSummary {
    #[serde(default)]
    pub failed: Vec<String>,
    #[serde(default)]
    pub failed_required: Vec<String>,
    #[serde(default)]
    pub stable_moved: bool,
    #[serde(default)]
    pub ahead: Vec<String>,
    #[serde(default)]
    pub flaky: Vec<String>,
    /// The results judged; none for a cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<CheckRecord>>,
    /// Why an operator cancelled the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<String>,
    /// Who cancelled it (an operator's address: shown to owners and
    /// operators only, as recipients are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl VerdictSummary {
    /// Reads a stored verdict summary (empty when it does not parse).
    pub fn parse(stored: &str) -> Self {
        serde_json::from_str(stored).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a verdict summary serialises")
    }
}
