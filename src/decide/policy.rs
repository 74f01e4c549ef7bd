//! The policy a decision works with: a `RollbackPolicySpec` held to its bounds, with every
//! default filled in; and which policy a Release has.
//!
//! The schema already refuses values outside the bounds, but a policy stored under an older
//! schema is read as it is: converting it checks every bound again and reports what is wrong
//! (on the policy's Ready condition and on the Releases it governs), never panics and never
//! uses a value it cannot trust.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    selection::check_selector,
    text::{NAME_MAX, bounded},
};
use crate::api::{
    DigestResolution, IrreversibleAction, MigrationFailureAction, MigrationOrder,
    RollbackPolicySpec, RollbackTarget, duration,
    rules::{self, DurationBounds},
};

/// Every knob of a policy, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Roll back on failure (false: detect and record only).
    pub automatic: bool,
    /// Revisions kept in history.
    pub history_limit: usize,
    /// Which revision to roll back to.
    pub target: RollbackTarget,
    /// A new revision must be available this soon.
    pub readiness_timeout: Duration,
    /// After healthy, NotReady this long counts.
    pub unready_for: Duration,
    /// Pods allowed NotReady that long.
    pub max_unready: MaxUnready,
    /// Restarts that make a crash loop.
    pub crash_loop_restarts: i32,
    /// How long a pod may fail to pull.
    pub image_pull_fail_for: Duration,
    /// Act on ProgressDeadlineExceeded.
    pub progress_deadline: bool,
    /// Guarding after healthy.
    pub guard_window: Duration,
    /// Minimum gap between automatic rollbacks.
    pub cooldown: Duration,
    /// Refuse to deploy what cannot be pinned from the registry first.
    pub strict_digests: bool,
    /// Names of the metric checks the policy declares (not evaluated yet).
    pub metrics: Vec<String>,
    /// When a rollback's down migrations run.
    pub migration_order: MigrationOrder,
    /// The longest a migration Job may run (its activeDeadlineSeconds).
    pub migration_timeout: Duration,
    /// Roll back across an irreversible migration without asking (policy `irreversible:
    /// Allow`).
    pub allow_irreversible: bool,
    /// Overrides of an image by the same other manager within `contested_window` that stop
    /// Rewind writing to the Deployment.
    pub contested_limit: u32,
    /// How long overrides are counted together.
    pub contested_window: Duration,
}

/// Finished rollbacks kept in `status.rollbacks`.
pub const ROLLBACKS_KEPT: usize = 10;

/// How many pods may be NotReady past `unreadyFor`: a count, or a percent of the replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnready {
    /// This many pods (0 or more).
    Count(i32),
    /// This percent of the replicas, 0 to 100, rounded down.
    Percent(u8),
}

impl MaxUnready {
    /// Read `readiness.maxUnready` as the schema allows it: a count of 0 or more, or `N%` with
    /// N from 0 to 100 written without sign or leading zeros.
    pub fn parse(value: &IntOrString) -> Result<Self, String> {
        match value {
            IntOrString::Int(n) if *n >= 0 => Ok(MaxUnready::Count(*n)),
            IntOrString::Int(n) => Err(format!(
                "{n} is negative; write a count of pods (0 or more)"
            )),
            IntOrString::String(s) => {
                let digits = s.strip_suffix('%').filter(|d| {
                    (1..=3).contains(&d.len())
                        && d.bytes().all(|b| b.is_ascii_digit())
                        && (d.len() == 1 || !d.starts_with('0'))
                });
                match digits
                    .and_then(|d| d.parse::<u8>().ok())
                    .filter(|p| *p <= 100)
                {
                    Some(p) => Ok(MaxUnready::Percent(p)),
                    None => Err(format!(
                        "{:?} is neither a count of pods nor a percent from 0% to 100%",
                        bounded(s, NAME_MAX)
                    )),
                }
            }
        }
    }

    /// How many of `replicas` pods this allows (a percent rounds down, as a Deployment's
    /// maxUnavailable does). Never overflows: the product is taken in 64 bits.
    pub fn of(self, replicas: i32) -> i32 {
        match self {
            MaxUnready::Count(n) => n.max(0),
            MaxUnready::Percent(p) => {
                let n = i64::from(replicas.max(0)) * i64::from(p.min(100)) / 100;
                i32::try_from(n).unwrap_or(i32::MAX)
            }
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            automatic: true,
            history_limit: 10,
            target: RollbackTarget::LastHealthy,
            readiness_timeout: Duration::from_secs(5 * 60),
            unready_for: Duration::from_secs(30),
            max_unready: MaxUnready::Count(1),
            crash_loop_restarts: 3,
            image_pull_fail_for: Duration::from_secs(2 * 60),
            progress_deadline: true,
            guard_window: Duration::from_secs(15 * 60),
            cooldown: Duration::from_secs(10 * 60),
            strict_digests: false,
            metrics: Vec::new(),
            migration_order: MigrationOrder::BeforeRollback,
            migration_timeout: Duration::from_secs(15 * 60),
            allow_irreversible: false,
            contested_limit: 2,
            contested_window: Duration::from_secs(60 * 60),
        }
    }
}

/// The value of a duration field within its bounds (`default` when unset).
fn within(
    bounds: &DurationBounds,
    field: String,
    value: Option<&duration::Duration>,
    default: Duration,
) -> Result<Duration, PolicyError> {
    let Some(v) = value else { return Ok(default) };
    let parsed = v.value().map_err(|e| PolicyError::BadValue {
        field: field.clone(),
        value: bounded(v.as_str(), NAME_MAX),
        problem: e.to_string(),
    })?;
    let (min, max) = bounds.range();
    if parsed < min || parsed > max {
        return Err(PolicyError::OutOfBounds {
            field,
            value: bounded(v.as_str(), NAME_MAX),
            min: bounds.min.into(),
            max: bounds.max.into(),
            why: bounds.why,
        });
    }
    Ok(parsed)
}

/// An integer field within `(min, max)` (`default` when unset).
fn in_range(
    field: &str,
    value: Option<i32>,
    (min, max): (i32, i32),
    default: i32,
) -> Result<i32, PolicyError> {
    match value {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) => Err(PolicyError::OutOfBounds {
            field: field.into(),
            value: n.to_string(),
            min: min.to_string(),
            max: max.to_string(),
            why: "the schema's range",
        }),
    }
}

impl TryFrom<&RollbackPolicySpec> for Policy {
    type Error = PolicyError;

    /// The policy a spec describes, or the first field that is outside its bounds or not
    /// usable. Fields Rewind does not act on yet (metrics, migrations) are checked too: a
    /// policy is valid as a whole or not at all.
    fn try_from(spec: &RollbackPolicySpec) -> Result<Self, Self::Error> {
        let d = Policy::default();
        if let Some(s) = &spec.selector {
            check_selector(s)?;
        }
        let readiness = spec.readiness.as_ref();
        let max_unready = match readiness.and_then(|r| r.max_unready.as_ref()) {
            None => d.max_unready,
            Some(v) => MaxUnready::parse(v).map_err(|problem| PolicyError::BadValue {
                field: "readiness.maxUnready".into(),
                value: match v {
                    IntOrString::Int(n) => n.to_string(),
                    IntOrString::String(s) => bounded(s, NAME_MAX),
                },
                problem,
            })?,
        };
        let history_limit = in_range(
            "historyLimit",
            spec.history_limit,
            rules::HISTORY_LIMIT,
            i32::try_from(d.history_limit).unwrap_or(i32::MAX),
        )?;
        for (i, m) in spec.metrics.iter().enumerate() {
            within(
                &rules::METRIC_INTERVAL,
                format!("metrics[{i}].interval"),
                m.interval.as_ref(),
                Duration::ZERO,
            )?;
            in_range(
                &format!("metrics[{i}].failureLimit"),
                m.failure_limit,
                rules::FAILURE_LIMIT,
                1,
            )?;
            if m.fail_when.above.is_some() == m.fail_when.below.is_some() {
                return Err(PolicyError::BadValue {
                    field: format!("metrics[{i}].failWhen"),
                    value: String::new(),
                    problem: "needs exactly one of above or below".into(),
                });
            }
        }
        let migrations = spec.migrations.clone().unwrap_or_default();
        for (field, stale) in [
            (
                "migrations.onFailure",
                migrations.on_failure == Some(MigrationFailureAction::Continue),
            ),
            (
                "migrations.irreversible",
                migrations.irreversible == Some(IrreversibleAction::Continue),
            ),
        ] {
            if stale {
                return Err(PolicyError::BadValue {
                    field: field.into(),
                    value: "Continue".into(),
                    problem: "Continue is no longer accepted: onFailure is Halt, irreversible is Halt or Allow".into(),
                });
            }
        }
        let migration_timeout = within(
            &rules::MIGRATION_TIMEOUT,
            rules::MIGRATION_TIMEOUT.field.into(),
            migrations.timeout.as_ref(),
            d.migration_timeout,
        )?;
        let duration = |b: &DurationBounds, v: Option<&duration::Duration>, default| {
            within(b, b.field.into(), v, default)
        };
        Ok(Policy {
            automatic: spec.automatic.unwrap_or(d.automatic),
            history_limit: usize::try_from(history_limit).unwrap_or(d.history_limit),
            target: spec.target.unwrap_or(d.target),
            readiness_timeout: duration(
                &rules::READINESS_TIMEOUT,
                readiness.and_then(|r| r.timeout.as_ref()),
                d.readiness_timeout,
            )?,
            unready_for: duration(
                &rules::UNREADY_FOR,
                readiness.and_then(|r| r.unready_for.as_ref()),
                d.unready_for,
            )?,
            max_unready,
            crash_loop_restarts: in_range(
                "crashLoop.restarts",
                spec.crash_loop.as_ref().and_then(|c| c.restarts),
                rules::CRASH_LOOP_RESTARTS,
                d.crash_loop_restarts,
            )?,
            image_pull_fail_for: duration(
                &rules::IMAGE_PULL_FAIL_FOR,
                spec.image_pull.as_ref().and_then(|p| p.fail_for.as_ref()),
                d.image_pull_fail_for,
            )?,
            progress_deadline: spec.progress_deadline.unwrap_or(d.progress_deadline),
            guard_window: duration(
                &rules::GUARD_WINDOW,
                spec.guard_window.as_ref(),
                d.guard_window,
            )?,
            cooldown: duration(&rules::COOLDOWN, spec.cooldown.as_ref(), d.cooldown)?,
            strict_digests: spec.digest_resolution == Some(DigestResolution::Strict),
            metrics: spec.metrics.iter().map(|m| m.name.clone()).collect(),
            migration_order: migrations.order.unwrap_or_default(),
            migration_timeout,
            allow_irreversible: migrations.irreversible == Some(IrreversibleAction::Allow),
            contested_limit: u32::try_from(in_range(
                "contested.limit",
                spec.contested.as_ref().and_then(|c| c.limit),
                rules::CONTESTED_LIMIT,
                2,
            )?)
            .unwrap_or(2),
            contested_window: duration(
                &rules::CONTESTED_WINDOW,
                spec.contested.as_ref().and_then(|c| c.window.as_ref()),
                d.contested_window,
            )?,
        })
    }
}

impl Policy {
    /// How many of `replicas` pods may be NotReady past `unready_for` (percent rounds down,
    /// as a Deployment's maxUnavailable does).
    pub fn max_unready_of(&self, replicas: i32) -> i32 {
        self.max_unready.of(replicas)
    }
}

/// Why a Release's policy cannot be used (reported as `PolicyError` on the Release, and on the
/// policy itself when the policy is invalid), never guessed around.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `spec.policyRef` names a policy that does not exist in the Release's namespace.
    #[error(
        "spec.policyRef names RollbackPolicy {name} but there is none in namespace {namespace}"
    )]
    RefNotFound {
        /// The policy named.
        name: String,
        /// The Release's namespace.
        namespace: String,
    },
    /// More than one policy's selector matches the Release.
    #[error(
        "RollbackPolicies {} all select this Release; set spec.policyRef or make their selectors disjoint",
        .0.join(" and ")
    )]
    Ambiguous(Vec<String>),
    /// A field of a policy is outside its bounds.
    #[error("{field} is {value}; it must be from {min} to {max} ({why})")]
    OutOfBounds {
        /// The field (`readiness.timeout`).
        field: String,
        /// Its value as written.
        value: String,
        /// The least value accepted.
        min: String,
        /// The greatest value accepted.
        max: String,
        /// Why those are the bounds.
        why: &'static str,
    },
    /// A field of a policy holds what cannot be used at all (not a duration, an unknown
    /// selector operator, a malformed percent).
    #[error("{field}{} cannot be used: {problem}", if value.is_empty() { String::new() } else { format!(" {value:?}") })]
    BadValue {
        /// The field (`selector.matchExpressions[0].operator`).
        field: String,
        /// Its value as written (bounded).
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// The policy that governs (or may govern) the Release is invalid.
    #[error(
        "RollbackPolicy {name}, which {how} this Release, is invalid: {error}. Fix the policy (its Ready condition says the same); until then Rewind neither deploys nor rolls back this Release"
    )]
    Invalid {
        /// The policy.
        name: String,
        /// How it is tied to the Release: "spec.policyRef names", "selects", "may select".
        how: &'static str,
        /// What is wrong with it.
        error: Box<PolicyError>,
    },
}

impl PolicyError {
    pub(super) fn in_policy(self, name: String, how: &'static str) -> PolicyError {
        PolicyError::Invalid {
            name,
            how,
            error: Box::new(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CrashLoopPolicy, ReadinessPolicy};

    #[test]
    fn empty_spec_gives_the_documented_defaults() {
        assert_eq!(
            Policy::try_from(&RollbackPolicySpec::default()),
            Ok(Policy::default())
        );
        let d = Policy::default();
        assert_eq!(d.readiness_timeout, Duration::from_secs(300));
        assert_eq!(d.crash_loop_restarts, 3);
    }

    #[test]
    fn spec_values_override_defaults() {
        let spec = RollbackPolicySpec {
            automatic: Some(false),
            readiness: Some(ReadinessPolicy {
                timeout: Some("20s".parse().unwrap()),
                max_unready: Some(IntOrString::String("50%".into())),
                ..Default::default()
            }),
            crash_loop: Some(CrashLoopPolicy { restarts: Some(5) }),
            ..Default::default()
        };
        let p = Policy::try_from(&spec).unwrap();
        assert!(!p.automatic);
        assert_eq!(p.readiness_timeout, Duration::from_secs(20));
        assert_eq!(p.unready_for, Duration::from_secs(30));
        assert_eq!(p.crash_loop_restarts, 5);
        assert_eq!(p.max_unready_of(4), 2);
        assert_eq!(p.max_unready_of(3), 1);
    }

    #[test]
    fn max_unready_counts_and_percents() {
        let table = [
            (IntOrString::Int(1), 3, 1),
            (IntOrString::Int(0), 3, 0),
            (IntOrString::String("0%".into()), 10, 0),
            (IntOrString::String("100%".into()), 3, 3),
            (IntOrString::String("25%".into()), 3, 0),
            (IntOrString::String("50%".into()), i32::MAX, i32::MAX / 2),
            (IntOrString::Int(i32::MAX), 3, i32::MAX),
        ];
        for (max, replicas, want) in table {
            let m = MaxUnready::parse(&max).unwrap();
            assert_eq!(m.of(replicas), want, "{max:?} of {replicas}");
        }
        for bad in [
            "1000%", "101%", "-1%", "5", "05%", "%", "1.5%", "", " 5%", "٣%",
        ] {
            assert!(
                MaxUnready::parse(&IntOrString::String(bad.into())).is_err(),
                "{bad:?}"
            );
        }
        assert!(MaxUnready::parse(&IntOrString::Int(-1)).is_err());
    }

    fn spec(json: serde_json::Value) -> RollbackPolicySpec {
        serde_json::from_value(json).unwrap()
    }

    /// A policy stored under an older schema (or with values the schema never saw) is held
    /// to the same bounds in code: the error names the field and the bound.
    #[test]
    fn values_outside_the_bounds_are_errors_naming_field_and_bound() {
        let table = [
            (
                serde_json::json!({"cooldown": "99999999999999999999h"}),
                "cooldown \"99999999999999999999h\" cannot be used",
            ),
            (
                serde_json::json!({"readiness": {"timeout": "5124095576030432h"}}),
                "readiness.timeout \"5124095576030432h\" cannot be used",
            ),
            (
                serde_json::json!({"readiness": {"timeout": "0s"}}),
                "readiness.timeout is 0s; it must be from 5s to 24h",
            ),
            (
                serde_json::json!({"readiness": {"timeout": "250us"}}),
                "readiness.timeout is 250us; it must be from 5s to 24h",
            ),
            (
                serde_json::json!({"readiness": {"timeout": "25h"}}),
                "readiness.timeout is 25h; it must be from 5s to 24h",
            ),
            (
                serde_json::json!({"readiness": {"unreadyFor": "0s"}}),
                "readiness.unreadyFor is 0s; it must be from 1s to 1h",
            ),
            (
                serde_json::json!({"readiness": {"maxUnready": "1000%"}}),
                "readiness.maxUnready \"1000%\" cannot be used",
            ),
            (
                serde_json::json!({"readiness": {"maxUnready": -3}}),
                "readiness.maxUnready \"-3\" cannot be used",
            ),
            (
                serde_json::json!({"imagePull": {"failFor": "2h"}}),
                "imagePull.failFor is 2h; it must be from 1s to 1h",
            ),
            (
                serde_json::json!({"guardWindow": "169h"}),
                "guardWindow is 169h; it must be from 0s to 168h",
            ),
            (
                serde_json::json!({"cooldown": "8760h"}),
                "cooldown is 8760h; it must be from 0s to 168h",
            ),
            (
                serde_json::json!({"cooldown": "soon"}),
                "cooldown \"soon\" cannot be used: \"soon\" is not a duration",
            ),
            (
                serde_json::json!({"historyLimit": 1}),
                "historyLimit is 1; it must be from 2 to 50",
            ),
            (
                serde_json::json!({"historyLimit": 100000}),
                "historyLimit is 100000; it must be from 2 to 50",
            ),
            (
                serde_json::json!({"crashLoop": {"restarts": 0}}),
                "crashLoop.restarts is 0; it must be from 1 to 1000",
            ),
            (
                serde_json::json!({"migrations": {"timeout": "1s"}}),
                "migrations.timeout is 1s; it must be from 10s to 24h",
            ),
            (
                // Stored under an earlier schema: reported, not skipped.
                serde_json::json!({"migrations": {"onFailure": "Continue"}}),
                "migrations.onFailure \"Continue\" cannot be used: Continue is no longer accepted",
            ),
            (
                serde_json::json!({"migrations": {"irreversible": "Continue"}}),
                "migrations.irreversible \"Continue\" cannot be used",
            ),
            (
                serde_json::json!({"metrics": [{"name": "e", "prometheus": {"address": "http://p", "query": "up"}, "interval": "1s", "failWhen": {"above": 1}}]}),
                "metrics[0].interval is 1s; it must be from 5s to 1h",
            ),
            (
                serde_json::json!({"metrics": [{"name": "e", "prometheus": {"address": "http://p", "query": "up"}, "failWhen": {}}]}),
                "metrics[0].failWhen cannot be used: needs exactly one of above or below",
            ),
            (
                serde_json::json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "Matches", "values": ["web"]}]}}),
                "selector.matchExpressions[0] \"tier Matches\" cannot be used: the operator must be In, NotIn, Exists or DoesNotExist",
            ),
            (
                serde_json::json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}),
                "In and NotIn need at least one value",
            ),
            (
                serde_json::json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["x"]}]}}),
                "Exists and DoesNotExist take no values",
            ),
        ];
        for (json, want) in table {
            let err = Policy::try_from(&spec(json.clone()))
                .expect_err(&json.to_string())
                .to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn values_at_the_bounds_are_accepted() {
        for json in [
            serde_json::json!({"readiness": {"timeout": "5s", "unreadyFor": "1s", "maxUnready": "100%"}, "imagePull": {"failFor": "1s"}, "guardWindow": "0s", "cooldown": "0s", "historyLimit": 2, "crashLoop": {"restarts": 1}, "migrations": {"timeout": "10s"}}),
            serde_json::json!({"readiness": {"timeout": "24h", "unreadyFor": "1h", "maxUnready": "0%"}, "imagePull": {"failFor": "1h"}, "guardWindow": "168h", "cooldown": "167h59m60s", "historyLimit": 50, "crashLoop": {"restarts": 1000}, "migrations": {"timeout": "24h"}}),
        ] {
            Policy::try_from(&spec(json.clone())).unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }
}
