//! The pass mark (SPEC sections 4 and 7): threshold, weights and required
//! flags per kind of check and per platform, and the revdeps settings. It
//! scores recorded check results, so a verdict can be given (or simulated)
//! under any pass mark without running anything again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::check::{CheckKind, CheckResult, CheckState, Verdict, score};

/// Per-platform settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlatformMark {
    /// Multiplies the weight of every check on the platform (default 1).
    pub weight: Option<f64>,
    /// `true`: every check on the platform is required; `false`: none is;
    /// absent: as each kind says.
    pub required: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassMark {
    pub threshold: f64,
    /// Weight per kind (default 1).
    pub weights: BTreeMap<CheckKind, f64>,
    /// Kinds that must pass (`validate` and `resolve` always must).
    pub required: BTreeSet<CheckKind>,
    pub platforms: BTreeMap<String, PlatformMark>,
    pub revdeps_min_fraction: f64,
    pub revdeps_max_dependents: u32,
}

/// A check's recorded outcome, enough to score it under any pass mark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub kind: CheckKind,
    pub platform: String,
    pub passed: bool,
    /// For `revdeps`: the fraction of counted dependents that still built;
    /// whether it passes depends on the pass mark's `min_fraction`.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Passed only on a retry.
    #[serde(default)]
    pub flaky: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassMarkError {
    #[error(
        "unknown pass mark key {0:?}; keys: threshold, weight.KIND, required.KIND, platform.NAME.weight, platform.NAME.required, revdeps.min_fraction, revdeps.max_dependents"
    )]
    UnknownKey(String),
    #[error("{key}: {problem}")]
    BadValue { key: String, problem: String },
}

/// One check an upload gets when it leaves the queue, as the pass mark
/// weighs it; `validate` and `resolve` are already final.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedCheck {
    pub kind: CheckKind,
    /// Empty for checks that do not run per platform.
    pub platform: String,
    pub weight: f64,
    pub required: bool,
    pub state: CheckState,
    pub summary: String,
}

/// What `validate` and `resolve` found, and where the upload builds.
pub struct CheckInputs<'a> {
    /// Why the archive is invalid, if it is.
    pub validate: Result<(), String>,
    /// How many packages its closure holds, or why it does not resolve.
    pub resolve: Result<usize, String>,
    pub platforms: &'a [&'a str],
    /// Whether its manifest has a test command.
    pub has_test: bool,
}

impl PassMark {
    /// The checks of an upload leaving the queue: `validate` and `resolve`
    /// with their results, then per platform `build`, `test` (when it has
    /// one) and `revdeps`, pending, or skipped when either failed.
    pub fn plan(&self, inputs: CheckInputs<'_>) -> Vec<PlannedCheck> {
        let check =
            |kind: CheckKind, platform: &str, state: CheckState, summary: String| PlannedCheck {
                kind,
                platform: platform.to_owned(),
                weight: self.weight_of(kind, platform),
                required: self.required_of(kind, platform),
                state,
                summary,
            };
        let verdict_of = |result: &Result<String, String>| match result {
            Ok(line) => (CheckState::Passed, line.clone()),
            Err(why) => (CheckState::Failed, why.clone()),
        };
        let validate = inputs
            .validate
            .as_ref()
            .map(|()| "archive and manifest are valid".to_owned())
            .map_err(Clone::clone);
        let resolve = match &inputs.resolve {
            Ok(0) => Ok("no dependencies".to_owned()),
            Ok(n) => Ok(format!("resolved {n} packages")),
            Err(why) => Err(why.clone()),
        };
        let ready = validate.is_ok() && resolve.is_ok();
        let (v_state, v_line) = verdict_of(&validate);
        let (r_state, r_line) = verdict_of(&resolve);
        let mut plan = vec![
            check(CheckKind::Validate, "", v_state, v_line),
            check(CheckKind::Resolve, "", r_state, r_line),
        ];
        let (state, why) = if ready {
            (CheckState::Pending, "")
        } else {
            (CheckState::Skipped, "skipped: validate or resolve failed")
        };
        for platform in inputs.platforms {
            let kinds = [CheckKind::Build, CheckKind::Test, CheckKind::Revdeps];
            for kind in kinds
                .into_iter()
                .filter(|&k| k != CheckKind::Test || inputs.has_test)
            {
                plan.push(check(kind, platform, state, why.to_owned()));
            }
        }
        plan
    }

    /// The weight of a check of `kind` on `platform` ("" for none).
    pub fn weight_of(&self, kind: CheckKind, platform: &str) -> f64 {
        let kind_weight = self.weights.get(&kind).copied().unwrap_or(1.0);
        let platform_weight = self
            .platforms
            .get(platform)
            .and_then(|p| p.weight)
            .unwrap_or(1.0);
        kind_weight * platform_weight
    }

    /// Whether a check of `kind` on `platform` must pass.
    pub fn required_of(&self, kind: CheckKind, platform: &str) -> bool {
        if kind.always_required() {
            return true;
        }
        match self.platforms.get(platform).and_then(|p| p.required) {
            Some(required) => required,
            None => self.required.contains(&kind),
        }
    }

    /// Whether a revdeps check with this fraction passes.
    pub fn revdeps_pass(&self, fraction: f64) -> bool {
        fraction + 1e-9 >= self.revdeps_min_fraction
    }

    /// Scores recorded checks under this pass mark.
    pub fn judge(&self, records: &[CheckRecord]) -> Verdict {
        let results: Vec<CheckResult> = records
            .iter()
            .map(|r| CheckResult {
                kind: r.kind,
                platform: r.platform.clone(),
                weight: self.weight_of(r.kind, &r.platform),
                required: self.required_of(r.kind, &r.platform),
                passed: match (r.kind, r.fraction) {
                    (CheckKind::Revdeps, Some(f)) => self.revdeps_pass(f),
                    _ => r.passed,
                },
            })
            .collect();
        score(&results, self.threshold)
    }

    /// The value of `key`, as `set` takes it.
    pub fn get(&self, key: &str) -> Result<String, PassMarkError> {
        let parts: Vec<&str> = key.split('.').collect();
        Ok(match parts.as_slice() {
            ["threshold"] => self.threshold.to_string(),
            ["weight", kind] => self
                .weights
                .get(&parse_kind(key, kind)?)
                .copied()
                .unwrap_or(1.0)
                .to_string(),
            ["required", kind] => {
                let kind = parse_kind(key, kind)?;
                (kind.always_required() || self.required.contains(&kind)).to_string()
            }
            ["platform", name, "weight"] => self
                .platforms
                .get(*name)
                .and_then(|p| p.weight)
                .unwrap_or(1.0)
                .to_string(),
            ["platform", name, "required"] => self
                .platforms
                .get(*name)
                .and_then(|p| p.required)
                .map(|r| r.to_string())
                .unwrap_or_else(|| "default".into()),
            ["revdeps", "min_fraction"] => self.revdeps_min_fraction.to_string(),
            ["revdeps", "max_dependents"] => self.revdeps_max_dependents.to_string(),
            _ => return Err(PassMarkError::UnknownKey(key.into())),
        })
    }

    /// Sets `key` to `value`; returns the old value. Validated: a pass mark
    /// never holds a value it could not score with.
    pub fn set(&mut self, key: &str, value: &str) -> Result<String, PassMarkError> {
        let old = self.get(key)?;
        let bad = |problem: &str| PassMarkError::BadValue {
            key: key.into(),
            problem: problem.into(),
        };
        let fraction = |v: &str| -> Result<f64, PassMarkError> {
            v.parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(|| bad("expected a number between 0 and 1"))
        };
        let weight = |v: &str| -> Result<f64, PassMarkError> {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| bad("expected a weight, a number of at least 0"))
        };
        let boolean = |v: &str| -> Result<bool, PassMarkError> {
            v.parse::<bool>().map_err(|_| bad("expected true or false"))
        };
        let parts: Vec<&str> = key.split('.').collect();
        match parts.as_slice() {
            ["threshold"] => self.threshold = fraction(value)?,
            ["weight", kind] => {
                self.weights.insert(parse_kind(key, kind)?, weight(value)?);
            }
            ["required", kind] => {
                let kind = parse_kind(key, kind)?;
                if kind.always_required() && !boolean(value)? {
                    return Err(bad("validate and resolve are always required"));
                }
                if boolean(value)? {
                    self.required.insert(kind);
                } else {
                    self.required.remove(&kind);
                }
            }
            ["platform", name, "weight"] => {
                self.platforms.entry((*name).to_owned()).or_default().weight = Some(weight(value)?);
            }
            ["platform", name, "required"] => {
                self.platforms
                    .entry((*name).to_owned())
                    .or_default()
                    .required = match value {
                    "default" => None,
                    v => Some(boolean(v).map_err(|_| bad("expected true, false or default"))?),
                };
            }
            ["revdeps", "min_fraction"] => self.revdeps_min_fraction = fraction(value)?,
            ["revdeps", "max_dependents"] => {
                self.revdeps_max_dependents =
                    value.parse().map_err(|_| bad("expected a whole number"))?;
            }
            _ => return Err(PassMarkError::UnknownKey(key.into())),
        }
        Ok(old)
    }
}

fn parse_kind(key: &str, kind: &str) -> Result<CheckKind, PassMarkError> {
    CheckKind::parse(kind).ok_or_else(|| PassMarkError::BadValue {
        key: key.into(),
        problem: format!(
            "{kind:?} is not a kind of check (validate, resolve, build, test, revdeps)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> PassMark {
        PassMark {
            threshold: 1.0,
            weights: BTreeMap::new(),
            required: [CheckKind::Build].into(),
            platforms: BTreeMap::new(),
            revdeps_min_fraction: 1.0,
            revdeps_max_dependents: 100,
        }
    }

    fn rec(kind: CheckKind, platform: &str, passed: bool) -> CheckRecord {
        CheckRecord {
            kind,
            platform: platform.into(),
            passed,
            fraction: None,
            flaky: false,
        }
    }

    #[test]
    fn the_plan_weighs_each_check_and_skips_the_platforms_when_resolve_failed() {
        let mut m = mark();
        m.set("weight.revdeps", "0.5").unwrap();
        let inputs = |resolve| CheckInputs {
            validate: Ok(()),
            resolve,
            platforms: &["linux-x86_64", "linux-aarch64"],
            has_test: false,
        };
        let plan = m.plan(inputs(Ok(3)));
        let labels: Vec<String> = plan
            .iter()
            .map(|c| format!("{}@{}:{}", c.kind, c.platform, c.state))
            .collect();
        assert_eq!(
            labels,
            [
                "validate@:passed",
                "resolve@:passed",
                "build@linux-x86_64:pending",
                "revdeps@linux-x86_64:pending",
                "build@linux-aarch64:pending",
                "revdeps@linux-aarch64:pending",
            ]
        );
        assert_eq!(plan[1].summary, "resolved 3 packages");
        assert_eq!(plan[3].weight, 0.5);
        assert!(plan[2].required && !plan[3].required);

        let failed = m.plan(inputs(Err("no version of lib matches ^2".into())));
        assert_eq!(failed[1].state, CheckState::Failed);
        assert_eq!(failed[1].summary, "no version of lib matches ^2");
        assert!(
            failed[2..]
                .iter()
                .all(|c| c.state == CheckState::Skipped && c.summary.starts_with("skipped"))
        );
    }

    #[test]
    fn set_validates_and_returns_the_old_value() {
        let mut m = mark();
        assert_eq!(m.set("threshold", "0.5").unwrap(), "1");
        assert!(m.set("threshold", "2").is_err());
        assert!(m.set("weight.bogus", "1").is_err());
        assert!(m.set("required.validate", "false").is_err());
        assert!(matches!(
            m.set("colour", "red"),
            Err(PassMarkError::UnknownKey(_))
        ));
        m.set("platform.linux-a.required", "false").unwrap();
        assert_eq!(m.get("platform.linux-a.required").unwrap(), "false");
        m.set("platform.linux-a.required", "default").unwrap();
        assert_eq!(m.get("platform.linux-a.required").unwrap(), "default");
    }

    #[test]
    fn judging_uses_weights_required_flags_and_the_revdeps_fraction() {
        let mut m = mark();
        let records = [
            rec(CheckKind::Validate, "", true),
            rec(CheckKind::Build, "a", true),
            rec(CheckKind::Build, "b", false),
            CheckRecord {
                kind: CheckKind::Revdeps,
                platform: "a".into(),
                passed: false,
                fraction: Some(0.8),
                flaky: false,
            },
        ];
        assert!(!m.judge(&records).accepted);
        m.set("platform.b.required", "false").unwrap();
        m.set("platform.b.weight", "0").unwrap();
        m.set("revdeps.min_fraction", "0.75").unwrap();
        let v = m.judge(&records);
        assert_eq!(v.score, 1.0);
        assert!(v.accepted, "{v:?}");
    }
}
