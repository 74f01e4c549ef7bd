//! The `Release` custom resource: one version of one Deployment, and its history.
// clippy reads the repeated `type_ = …` of the printcolumn attributes as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A release of a Deployment: the version and images Rewind rolls out, pins to digests, and
/// rolls back when the new pods fail.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rewind.dev",
    version = "v1alpha1",
    kind = "Release",
    namespaced,
    status = "ReleaseStatus",
    derive = "PartialEq",
    shortname = "rls",
    category = "rewind",
    doc = "A release of a Deployment that Rewind pins to image digests and can roll back",
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: Rewind puts the Release's name in the label rewind.dev/release on the Deployment's pods, and a label value is at most 63"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(
        name = "Desired",
        type_ = "string",
        json_path = ".spec.version",
        description = "version in spec"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "version running now"
    ),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    /// The version this release deploys, as semver (e.g. 1.4.0). Identifies the revision.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::SEMVER)).message("spec.version must be semver (MAJOR.MINOR.PATCH, optional -prerelease and +build), e.g. 1.4.0 or 2.0.0-rc.1; no leading 'v'"))]
    pub version: String,

    /// The workload whose images Rewind owns. Same namespace; immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.target is immutable: create a new Release to manage another workload"))]
    pub target: TargetRef,

    /// The containers (or init containers) whose image this release sets.
    #[schemars(length(min = 1, max = crate::api::rules::MAX_IMAGES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["container".into()]))]
    pub images: Vec<ContainerImage>,

    /// Where this version came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,

    /// The schema migration this version needs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,

    /// The RollbackPolicy to use; without it, the one whose selector matches, else defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<PolicyRef>,

    /// When true, Rewind neither deploys nor rolls back this Release (nor while the
    /// annotation rewind.dev/paused is set, which pauses without editing the spec).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// The workload a Release manages.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Only Deployment for now.
    #[serde(default)]
    pub kind: TargetKind,
    /// Name of the Deployment in the Release's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload Rewind can manage.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum TargetKind {
    /// apps/v1 Deployment.
    #[default]
    Deployment,
}

/// The image of one container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerImage {
    /// Container name in the pod template (containers or initContainers).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DNS_LABEL)).message("container must be a container name: lower-case letters, digits and '-'"))]
    pub container: String,
    /// Image reference, by tag or digest: registry.example/shop/api:1.4.0 or repo@sha256:<64 hex>.
    #[schemars(length(min = 1, max = crate::api::rules::MAX_IMAGE_LEN))]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::IMAGE_REF)).message("image must be an image reference such as registry.example/team/app:1.4.0 or registry.example/team/app@sha256:<64 hex digits> (lower-case repository, no scheme)"))]
    pub image: String,
}

/// Provenance of a version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// VCS commit the images were built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub commit: Option<String>,
    /// Where to read about this version (changelog, pull request, build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// When the images were built (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_at: Option<Time>,
}

/// The migration a version needs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    /// Image that carries this version's up and down migrations.
    #[schemars(length(min = 1, max = crate::api::rules::MAX_IMAGE_LEN))]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::IMAGE_REF)).message("migration.image must be an image reference such as registry.example/team/migrate:1.4.0"))]
    pub image: String,
    /// The schema version this release needs.
    #[schemars(length(min = 1, max = 128))]
    pub schema_version: String,
    /// Job run before the rollout; the Deployment is not touched until it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<MigrationCommand>,
    /// Job run on rollback; gets the target schema in its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<MigrationCommand>,
    /// False: crossing this migration backwards needs an explicit override.
    #[serde(default = "default_true")]
    pub reversible: bool,
    /// ServiceAccount for the migration Jobs (database credentials via env/envFrom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::DNS_SUBDOMAIN)).message("migration.serviceAccountName must be a ServiceAccount name: lower-case letters, digits, '-' and '.'"))]
    pub service_account_name: Option<String>,
    /// Environment of the migration container (database address, credentials by reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<MigrationEnvVar>,
    /// Environment from whole Secrets or ConfigMaps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub env_from: Vec<MigrationEnvFrom>,
    /// CPU and memory of the migration container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<MigrationResources>,
    /// Annotations on the migration Job's pod (for example `sidecar.istio.io/inject: "false"`,
    /// so a mesh sidecar does not keep the Job from finishing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pod_annotations_schema")]
    pub pod_annotations: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The schema of `podAnnotations`: at most 16, keys at most 317 characters, values at most
/// 1 KiB (a Release and its history must fit etcd's 1.5 MiB object limit).
fn pod_annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 16,
        "propertyNames": {"maxLength": 317},
        "additionalProperties": {"type": "string", "maxLength": 1024}
    })
}

/// One environment variable of a migration container: a value, or a reference to a key of a
/// Secret or ConfigMap (credentials stay in the Secret).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))").message("env: set either value or valueFrom, not both"))]
pub struct MigrationEnvVar {
    /// Variable name.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(crate::api::rules::matches(crate::api::rules::ENV_NAME)).message("env[].name must be an environment variable name: letters, digits, '_', '-' and '.', not starting with a digit"))]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub value: Option<String>,
    /// A key of a Secret or ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<MigrationEnvSource>,
}

/// Where an environment variable's value comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("env[].valueFrom needs exactly one of secretKeyRef or configMapKeyRef"))]
pub struct MigrationEnvSource {
    /// A key of a Secret in the Release's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// A key of a ConfigMap in the Release's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Object name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in its data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Start the container even if the object or key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Every key of a Secret or ConfigMap as environment variables.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.configMapRef)").message("envFrom[] needs exactly one of secretRef or configMapRef"))]
pub struct MigrationEnvFrom {
    /// A Secret in the Release's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectRef>,
    /// A ConfigMap in the Release's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ObjectRef>,
    /// Put before every variable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub prefix: Option<String>,
}

/// A Secret or ConfigMap by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Object name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Start the container even if the object is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// CPU and memory of a migration container, as in a pod (`cpu: 100m`, `memory: 256Mi`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationResources {
    /// Guaranteed amounts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantities_schema")]
    #[x_kube(validation = Rule::new("self.all(k, isQuantity(self[k]))").message("resources.requests values must be quantities such as 100m, 1 or 256Mi"))]
    pub requests: BTreeMap<String, String>,
    /// Upper limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantities_schema")]
    #[x_kube(validation = Rule::new("self.all(k, isQuantity(self[k]))").message("resources.limits values must be quantities such as 100m, 1 or 256Mi"))]
    pub limits: BTreeMap<String, String>,
}

/// The schema of resource amounts: a few resource names, each a short quantity text.
fn quantities_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 8,
        "propertyNames": {"maxLength": 253},
        "additionalProperties": {"type": "string", "maxLength": 64}
    })
}

/// Command and arguments of a migration Job's container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationCommand {
    /// Entrypoint; the image's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 1024)))]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub args: Vec<String>,
}

/// Reference to a RollbackPolicy in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// RollbackPolicy name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state of a Release, written only by Rewind.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of where the release stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions: Ready, Reconciling and Stalled (kstatus-compatible), RolledBack (the desired
    /// version was rolled back and is blocked), Pinned (every image of the newest revision has a
    /// digest) and ManualRollback (the outcome of the last rewind.dev/rollback-to request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// UID of the Deployment this history belongs to. A Deployment deleted and created again
    /// under the same name has another UID: it is a new target, adopted again, never given the
    /// old one's digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_uid: Option<String>,
    /// Revision running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Version running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Revisions, newest first, capped by the policy's historyLimit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Revision>,
    /// The in-flight or last rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Finished rollbacks, newest first (capped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollbacks: Vec<Rollback>,
    /// A version Rewind will not apply again until spec.version changes or a retry is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// Annotation values already acted on, so each distinct value acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled: Option<Handled>,
    /// Another field manager changing an image Rewind owns: who, what, how often; when
    /// `stopped`, Rewind writes nothing to the Deployment until the Release changes or
    /// `rewind.dev/retry` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contested: Option<Contest>,
}

/// Overrides of an image Rewind owns by another field manager.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Contest {
    /// The field manager that changed it (from the Deployment's managedFields).
    pub manager: String,
    /// The container.
    pub container: String,
    /// The image it set.
    pub image: String,
    /// Overrides by this manager counted in the current window.
    pub count: u32,
    /// When the first of them was seen.
    pub first_at: Time,
    /// When the last was seen.
    pub last_at: Time,
    /// The Deployment's generation when the last was seen (one override is counted once).
    pub deployment_generation: i64,
    /// Rewind stopped writing to the Deployment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The Release's generation when Rewind stopped (a new spec lets it write again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_generation: Option<i64>,
    /// The `rewind.dev/retry` value when Rewind stopped (a new value lets it write again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// Where a Release stands.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A revision is rolling out.
    Progressing,
    /// The live revision is healthy.
    Healthy,
    /// A failure was seen but policy says not to roll back.
    Degraded,
    /// A rollback is in flight.
    RollingBack,
    /// A rollback finished; the desired version is blocked.
    RolledBack,
    /// Rewind could not act (see conditions).
    Failed,
    /// spec.paused or the annotation rewind.dev/paused is set.
    Paused,
}

/// One deployed revision.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Revision number; 0 is what ran before Rewind took over.
    pub revision: i64,
    /// Version deployed.
    pub version: String,
    /// Images per container, as written and pinned.
    #[serde(default)]
    pub images: Vec<PinnedImage>,
    /// Migration image digest and schema version, when the release has a migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<PinnedMigration>,
    /// The revision that was live when this one was deployed: a rollback undoes schema
    /// changes along this chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_over: Option<i64>,
    /// Provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// When Rewind applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<Time>,
    /// When it was first seen healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_at: Option<Time>,
    /// How it ended (or Pending while rolling out).
    pub outcome: Outcome,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// A container's image as written and its digest.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PinnedImage {
    /// Container name.
    pub container: String,
    /// Image as written in the Release.
    pub image: String,
    /// `sha256:<hex>` once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where the digest came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_from: Option<DigestSource>,
}

/// Where a digest was learned.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestSource {
    /// Asked the registry before rolling out.
    Registry,
    /// Read from the running pods' imageID.
    PodStatus,
    /// The reference already carried the digest.
    Reference,
}

/// The migration part of a revision: what its Jobs run, recorded so a rollback can run this
/// revision's down migration long after its spec changed.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PinnedMigration {
    /// Migration image as written.
    pub image: String,
    /// Its digest once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where the digest came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_from: Option<DigestSource>,
    /// Schema version the revision needs.
    pub schema_version: String,
    /// False: crossing it backwards needs an explicit override.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub reversible: bool,
    /// The up command, when the revision has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<MigrationCommand>,
    /// The down command, when the revision has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<MigrationCommand>,
    /// ServiceAccount of its Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Environment of its Jobs (as in spec.migration.env).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "recorded_list")]
    pub env: Vec<MigrationEnvVar>,
    /// Environment from Secrets and ConfigMaps (as in spec.migration.envFrom).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "recorded_list")]
    pub env_from: Vec<MigrationEnvFrom>,
    /// Resources of its Jobs (as in spec.migration.resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "recorded_object")]
    pub resources: Option<MigrationResources>,
    /// Annotations of its Jobs' pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// The up Job that gated the rollout, when the revision has an up command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_job: Option<MigrationJob>,
}

/// The schema of a list copied from the spec into status: the spec's schema already
/// validated it, and repeating its rules under every history entry would exceed the API
/// server's CEL cost budget.
fn recorded_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// The schema of an object copied from the spec into status (see [`recorded_list`]).
fn recorded_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// One migration Job Rewind ran (or runs).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationJob {
    /// The Job's name.
    pub name: String,
    /// Where it stands.
    pub phase: MigrationPhase,
    /// Attempt number (a retry runs a new Job, with a new name).
    #[serde(default = "one")]
    pub attempt: u32,
    /// The Job's uid once Rewind saw it (a Job that disappears after that was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// When Rewind decided to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// How it ended, for a person (the container's termination message when it failed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The Job's `activeDeadlineSeconds` (the policy's timeout when the step started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<i64>,
}

fn one() -> u32 {
    1
}

/// Where a migration Job or step stands.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationPhase {
    /// Not started yet.
    Pending,
    /// The Job runs (or is being created).
    Running,
    /// The Job completed.
    Succeeded,
    /// The Job failed, timed out or was deleted.
    Failed,
    /// Crossed without a Job: an irreversible migration a person (or the policy) allowed.
    Skipped,
}

/// One down migration of a rollback: the revision whose down Job runs, and the schema it
/// goes back to.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStep {
    /// The revision whose migration is undone.
    pub revision: i64,
    /// Its version.
    pub version: String,
    /// The revision it was deployed over (whose schema the step goes back to).
    pub to_revision: i64,
    /// That revision's version.
    pub to_version: String,
    /// Schema before the step.
    pub from_schema_version: String,
    /// Schema after the step ("" when the revision it goes back to declares none).
    #[serde(default)]
    pub to_schema_version: String,
    /// The migration image the Job runs (by digest when known).
    pub image: String,
    /// The Job, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<MigrationJob>,
    /// Where the step stands.
    pub phase: MigrationPhase,
}

/// How a revision ended.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Rolling out or not yet judged.
    Pending,
    /// Judged healthy (and live, unless superseded since).
    Healthy,
    /// Failed a health check.
    Failed,
    /// Rolled back by request while healthy.
    RolledBack,
    /// Replaced by a newer revision (healthyAt tells whether it was healthy first).
    Superseded,
}

/// Why a revision failed.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// What detected it.
    pub trigger: Trigger,
    /// Short PascalCase reason.
    pub reason: String,
    /// What a person should know.
    pub message: String,
    /// When it was detected.
    pub at: Time,
}

/// What started a rollback.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Pods did not become (or stay) Ready.
    Readiness,
    /// Containers restarted past the limit.
    CrashLoop,
    /// Images could not be pulled.
    ImagePull,
    /// The Deployment's progress deadline passed.
    ProgressDeadline,
    /// A metric crossed its threshold. Reserved: metric analysis is not built yet, so no
    /// rollback has this trigger today.
    Metric,
    /// A person asked.
    Manual,
    /// The revision's up migration Job failed (the revision never rolled out).
    Migration,
}

impl Trigger {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Readiness => "Readiness",
            Trigger::CrashLoop => "CrashLoop",
            Trigger::ImagePull => "ImagePull",
            Trigger::ProgressDeadline => "ProgressDeadline",
            Trigger::Metric => "Metric",
            Trigger::Manual => "Manual",
            Trigger::Migration => "Migration",
        }
    }
}

/// A revision number and its version.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRef {
    /// Revision number.
    pub revision: i64,
    /// Version.
    pub version: String,
}

/// A rollback, in flight or finished. Its phase is written before each side effect.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// Unique id (release uid prefix, from and to revisions).
    pub id: String,
    /// The revision rolled back from.
    pub from: RevisionRef,
    /// The revision rolled back to.
    pub to: RevisionRef,
    /// What started it: Readiness, CrashLoop, ImagePull, ProgressDeadline or Manual (Metric is
    /// reserved for metric analysis, not built yet).
    pub trigger: Trigger,
    /// Short PascalCase reason.
    pub reason: String,
    /// What a person should know.
    #[serde(default)]
    pub message: String,
    /// Who asked, for manual rollbacks, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Why, in the words of the person who asked (`rewind.dev/reason` on the Release), for
    /// manual rollbacks asked for on the Release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_reason: Option<String>,
    /// The `rewind.dev/request-id` of the request that started it (on the Release), so a client
    /// that asked knows this rollback is the one it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Where it stands: MigratingDown (when the policy's order is BeforeRollback and the
    /// schema changes), RestoringImages, Verifying, MigratingDownAfter (order AfterRollback),
    /// then Succeeded or Failed.
    pub phase: RollbackPhase,
    /// The migration Job running now (or the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The down migrations this rollback runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<MigrationStep>,
    /// When the failure became definite (or the request was seen).
    pub detected_at: Time,
    /// When Rewind started acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the Deployment was patched back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_restored_at: Option<Time>,
    /// When it finished (Succeeded or Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Seconds from detection to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

/// Steps of the rollback state machine.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackPhase {
    /// Decided, nothing done yet. Reserved: Rewind starts a rollback at its first step.
    Pending,
    /// The down migrations run before the images are restored.
    MigratingDown,
    /// The Deployment is being patched back to the target's digests.
    RestoringImages,
    /// Waiting for the restored rollout to become available.
    Verifying,
    /// The down migrations run after the images are restored and verified.
    MigratingDownAfter,
    /// Done: the target runs.
    Succeeded,
    /// Stopped; needs a person.
    Failed,
}

impl RollbackPhase {
    /// True once the state machine has stopped.
    pub fn is_finished(self) -> bool {
        matches!(self, RollbackPhase::Succeeded | RollbackPhase::Failed)
    }
}

/// A version Rewind will not re-apply.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    /// The blocked version.
    pub version: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: Time,
}

/// Annotation values already acted on.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Handled {
    /// Value of `rewind.dev/rollback-to` on the Release last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<String>,
    /// `rewind.dev/request-id` of the last `rewind.dev/rollback-to` request on the Release
    /// that Rewind answered, accepted or refused (the ManualRollback condition, written with
    /// it, says which): a client that set the id waits for it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Value of `rewind.dev/rollback-to` on the Deployment last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rollback_to: Option<String>,
    /// Value of `rewind.dev/retry` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}
