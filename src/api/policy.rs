//! The `RollbackPolicy` custom resource: when and how Rewind rolls back the Releases it selects.
// clippy reads the repeated `type_ = …` of the printcolumn attributes as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{apis::meta::v1::Condition, util::intstr::IntOrString};
use kube::{CustomResource, KubeSchema};

use super::duration::Duration;
use serde::{Deserialize, Serialize};

/// How Rewind judges and rolls back the Releases a policy selects. Every field has a default,
/// so `spec: {}` is the built-in policy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "rewind.dev",
    version = "v1alpha1",
    kind = "RollbackPolicy",
    namespaced,
    status = "RollbackPolicyStatus",
    derive = "PartialEq",
    shortname = "rbp",
    category = "rewind",
    doc = "When and how Rewind rolls back the Releases it selects",
    printcolumn(name = "Automatic", type_ = "boolean", json_path = ".spec.automatic"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target"),
    printcolumn(
        name = "Timeout",
        type_ = "string",
        json_path = ".spec.readiness.timeout"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicySpec {
    /// Releases in this namespace the policy applies to (by their labels). Empty selects none;
    /// a Release can always name a policy with spec.policyRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<PolicySelector>,
    /// False: detect, record and alert, but do not roll back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic: Option<bool>,
    /// Revisions kept in a Release's history (the live one and the rollback target always stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = crate::api::rules::HISTORY_LIMIT.0, max = crate::api::rules::HISTORY_LIMIT.1))]
    pub history_limit: Option<i32>,
    /// Which revision to roll back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RollbackTarget>,
    /// Readiness checks on the new revision's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessPolicy>,
    /// Crash-loop check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoopPolicy>,
    /// Image-pull check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull: Option<ImagePullPolicy>,
    /// Act on the Deployment's ProgressDeadlineExceeded condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<bool>,
    /// Metric analyses against Prometheus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub metrics: Vec<MetricCheck>,
    /// How long to keep guarding a release after it became healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("guardWindow must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::GUARD_WINDOW.rule()).message(crate::api::rules::GUARD_WINDOW.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub guard_window: Option<Duration>,
    /// No second automatic rollback of the same Release sooner than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("cooldown must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::COOLDOWN.rule()).message(crate::api::rules::COOLDOWN.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub cooldown: Option<Duration>,
    /// How migrations are run on rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<MigrationPolicy>,
    /// When another field manager (a GitOps tool, a person's kubectl) keeps changing an image
    /// Rewind owns: how many overrides within the window Rewind undoes before it stops writing
    /// to the Deployment (default: 2 within 1h — the first is put back, the second stops it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contested: Option<ContestedPolicy>,
    /// What to do when an image's tag cannot be resolved to a digest from its registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_resolution: Option<DigestResolution>,
}

/// Which Releases a policy selects: a label selector, as in a Deployment (every matchLabels
/// entry and every matchExpressions requirement must hold). Bounded: a selector is a few
/// labels, and the API server evaluates its rules within a cost budget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicySelector {
    /// Labels a Release must have, with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "match_labels_schema")]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 317)").message("selector.matchLabels keys must be label keys: at most 317 characters ([prefix/]name)"))]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Requirements on a Release's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

/// The schema of `matchLabels`: at most 32 labels, values at most 63 characters (what a label
/// value can be).
fn match_labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {"type": "string", "maxLength": 63}
    })
}

/// One requirement of a selector: a label key, an operator and values.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)").message("selector.matchExpressions: In and NotIn need at least one value; Exists and DoesNotExist take none"))]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist. A string, not an enum, so a policy stored with
    /// another operator is still read and reported as invalid instead of failing to load.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self in ['In', 'NotIn', 'Exists', 'DoesNotExist']").message("selector.matchExpressions[].operator must be In, NotIn, Exists or DoesNotExist"))]
    pub operator: String,
    /// The values, for In and NotIn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Option<Vec<String>>,
}

/// What to do when a tag cannot be resolved to a digest before the rollout.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum DigestResolution {
    /// Deploy by the reference as written and record the digest from the pods once they run.
    #[default]
    Fallback,
    /// Refuse to deploy a release that cannot be pinned first.
    Strict,
}

/// Which revision a rollback goes to.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RollbackTarget {
    /// The newest revision that was healthy.
    #[default]
    LastHealthy,
    /// The revision just before the failing one, if it was healthy.
    Previous,
}

/// Readiness checks.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessPolicy {
    /// A new revision must be fully available this soon after it is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("readiness.timeout must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::READINESS_TIMEOUT.rule()).message(crate::api::rules::READINESS_TIMEOUT.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub timeout: Option<Duration>,
    /// After it was healthy, pods NotReady this long count as failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("readiness.unreadyFor must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::UNREADY_FOR.rule()).message(crate::api::rules::UNREADY_FOR.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub unready_for: Option<Duration>,
    /// How many pods (count, or percent of replicas like "25%") may be NotReady that long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == string ? self.matches(r'^(100|[1-9]?[0-9])%$') : self >= 0").message("readiness.maxUnready must be a count of pods (0 or more) or a percent from 0% to 100%"))]
    pub max_unready: Option<IntOrString>,
}

/// Crash-loop check.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CrashLoopPolicy {
    /// Restarts of one container of the new revision that count as a crash loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = crate::api::rules::CRASH_LOOP_RESTARTS.0, max = crate::api::rules::CRASH_LOOP_RESTARTS.1))]
    pub restarts: Option<i32>,
}

/// Image-pull check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullPolicy {
    /// A pod of the new revision that cannot pull its image this long counts as failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("imagePull.failFor must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::IMAGE_PULL_FAIL_FOR.rule()).message(crate::api::rules::IMAGE_PULL_FAIL_FOR.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub fail_for: Option<Duration>,
}

/// How Rewind answers another field manager changing an image it owns.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContestedPolicy {
    /// Overrides by the same manager within `window` that stop Rewind (the ones before are
    /// put back, each with a Warning Event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = crate::api::rules::CONTESTED_LIMIT.0, max = crate::api::rules::CONTESTED_LIMIT.1))]
    pub limit: Option<i32>,
    /// How long overrides are counted together (default 1h: longer than a GitOps tool's sync
    /// interval, so its overrides add up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("contested.window must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::CONTESTED_WINDOW.rule()).message(crate::api::rules::CONTESTED_WINDOW.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub window: Option<Duration>,
}

/// One metric analysis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricCheck {
    /// Name shown in conditions and Events.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Where and what to ask.
    pub prometheus: PrometheusQuery,
    /// How often to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("metrics[].interval must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::METRIC_INTERVAL.rule()).message(crate::api::rules::METRIC_INTERVAL.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub interval: Option<Duration>,
    /// The threshold.
    pub fail_when: Threshold,
    /// Consecutive failing answers that fail the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = crate::api::rules::FAILURE_LIMIT.0, max = crate::api::rules::FAILURE_LIMIT.1))]
    pub failure_limit: Option<i32>,
}

/// A Prometheus instant query.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusQuery {
    /// Base URL, e.g. http://prometheus.monitoring:9090.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("prometheus.address must be an http:// or https:// URL"))]
    pub address: String,
    /// PromQL returning one number.
    #[schemars(length(min = 1, max = 8192))]
    pub query: String,
}

/// Fails when the value is above or below a bound (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.above) != has(self.below)").message("failWhen needs exactly one of above or below"))]
pub struct Threshold {
    /// Fail when the value is greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Fail when the value is less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

/// How migrations run on rollback.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPolicy {
    /// Migrate down before or after the images are restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<MigrationOrder>,
    /// Longest a migration Job may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DURATION)).message("migrations.timeout must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(crate::api::rules::MIGRATION_TIMEOUT.rule()).message(crate::api::rules::MIGRATION_TIMEOUT.message().as_str()))]
    #[schemars(length(max = crate::api::rules::MAX_DURATION_LEN))]
    pub timeout: Option<Duration>,
    /// What to do when a migration Job fails: Halt (the only choice: stop and ask a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<MigrationFailureAction>,
    /// What to do when a rollback would cross an irreversible migration: Halt (default) or
    /// Allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irreversible: Option<IrreversibleAction>,
}

/// When the down migration runs.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum MigrationOrder {
    /// Migrate down, then restore images (old code never sees the new schema).
    #[default]
    BeforeRollback,
    /// Restore images, then migrate down (the new schema is backward compatible).
    AfterRollback,
}

/// What to do when a migration Job fails.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum MigrationFailureAction {
    /// Stop: the Deployment stays as it is, nothing retries on its own, a person decides
    /// (`rewind.dev/retry` runs the Job again).
    #[default]
    Halt,
    /// Accepted by an earlier schema, no longer: read so a stored policy is reported as
    /// invalid on itself (and on its Releases) rather than skipped.
    #[schemars(skip)]
    Continue,
}

/// What to do when a rollback would cross an irreversible migration.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum IrreversibleAction {
    /// Refuse the automatic rollback; a manual one needs `rewind.dev/allow-irreversible`.
    #[default]
    Halt,
    /// Roll back across it without running a down Job for it.
    Allow,
    /// Accepted by an earlier schema, no longer (see [`MigrationFailureAction::Continue`]).
    #[schemars(skip)]
    Continue,
}

/// Observed state of a RollbackPolicy.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicyStatus {
    /// The generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, or Invalid with a message a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
