//! The `Release` custom resource: one version of one Deployment, and its history.
// clippy reads the repeated `type_ = …` of the printcolumn attributes as duplicates.
#![allow(clippy::duplicated_attributes)]

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

    /// When true, Rewind neither deploys nor rolls back this Release.
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
    pub service_account_name: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Command and arguments of a migration Job's container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationCommand {
    /// Entrypoint; the image's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 1024)))]
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
    /// spec.paused is set.
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

/// The migration part of a revision.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PinnedMigration {
    /// Migration image as written.
    pub image: String,
    /// Its digest once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Schema version the revision needs.
    pub schema_version: String,
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
    /// Where it stands: RestoringImages, then Verifying, then Succeeded or Failed (Pending,
    /// MigratingDown and MigratingDownAfter are reserved for migrations, not built yet).
    pub phase: RollbackPhase,
    /// Migration Job, when one runs. Reserved: no migration Job runs yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
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
    /// Decided, nothing done yet. Reserved: Rewind starts a rollback at RestoringImages today.
    Pending,
    /// The down migration runs before the images are restored. Reserved: no migration Job runs
    /// yet.
    MigratingDown,
    /// The Deployment is being patched back to the target's digests.
    RestoringImages,
    /// Waiting for the restored rollout to become available.
    Verifying,
    /// The down migration runs after the images are restored. Reserved: no migration Job runs
    /// yet.
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
    /// Value of `rewind.dev/rollback-to` on the Deployment last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rollback_to: Option<String>,
    /// Value of `rewind.dev/retry` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}
