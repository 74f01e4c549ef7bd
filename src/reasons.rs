//! Every reason Rewind writes, in one place: condition reasons, Event reasons and the failure
//! reasons recorded in `history[].failure.reason` and `rollback.reason`. PascalCase, stable —
//! dashboards, alerts and GitOps health checks match on them — and each one is listed in
//! `docs/reference.md` (a unit test fails when the page misses one).

/// Reasons whose Events are also published on the target Deployment, where on-call looks
/// first (`kubectl describe deployment`): the story of a rollback.
pub const ON_TARGET: &[&str] = &[
    ROLLBACK_STARTED,
    ROLLBACK_SUCCEEDED,
    ROLLBACK_FAILED,
    MIGRATION_FAILED,
    MIGRATION_TIMED_OUT,
    MIGRATION_JOB_DELETED,
    IRREVERSIBLE_MIGRATION,
    IMAGE_OVERRIDDEN,
    IMAGE_FIELD_CONTESTED,
];

/// Declare the reasons and [`ALL`] together, so the list cannot miss one.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $name:ident = $value:literal;)+) => {
        $($(#[doc = $doc])+ pub const $name: &str = $value;)+
        /// Every reason above, for the documentation check.
        #[cfg(test)]
        pub const ALL: &[&str] = &[$($value),+];
    };
}

reasons! {
    // ---- the state of a Release (Ready/Reconciling/Stalled and phase) ----
    /// A new revision is rolling out.
    PROGRESSING = "Progressing";
    /// The live revision runs and is healthy.
    HEALTHY = "Healthy";
    /// `spec.paused` or the annotation `rewind.dev/paused` is set: Rewind neither deploys nor
    /// rolls back.
    PAUSED = "Paused";
    /// The target Deployment does not exist.
    TARGET_NOT_FOUND = "TargetNotFound";
    /// An older Release already manages the target Deployment.
    TARGET_CLAIMED = "TargetClaimed";
    /// The target Deployment was deleted and created again under the same name: a new target,
    /// adopted again (Event).
    TARGET_REPLACED = "TargetReplaced";
    /// `spec.images` names a container the Deployment does not have.
    CONTAINER_NOT_FOUND = "ContainerNotFound";
    /// The Release's policy could not be resolved (missing policyRef, two policies match).
    POLICY_ERROR = "PolicyError";
    /// A Strict policy refused to deploy images that could not be pinned.
    UNPINNED = "UnpinnedRefused";
    /// A revision failed and was not rolled back (see the failure in history).
    RELEASE_FAILED = "ReleaseFailed";
    /// A revision failed and the policy has `automatic: false`.
    ROLLBACK_DISABLED = "AutomaticRollbackDisabled";
    /// A revision failed inside the cooldown after the last automatic rollback.
    COOLDOWN = "RollbackCooldown";
    /// A revision failed and no earlier healthy revision with digests exists.
    NO_ROLLBACK_TARGET = "NoRollbackTarget";
    /// A rollback is in flight.
    ROLLING_BACK = "RollingBack";
    /// Another field manager keeps changing an image Rewind owns: Rewind stopped writing to
    /// the Deployment until the Release changes or `rewind.dev/retry`.
    IMAGE_FIELD_CONTESTED = "ImageFieldContested";
    /// Another field manager changed an image Rewind owns; Rewind put its image back (Event).
    IMAGE_OVERRIDDEN = "ImageOverridden";
    /// The desired version was rolled back and is blocked.
    ROLLED_BACK = "RolledBack";
    /// A rollback could not restore or verify its target.
    ROLLBACK_FAILED = "RollbackFailed";
    /// The RolledBack condition cleared because the Release became healthy again.
    AS_EXPECTED = "AsExpected";
    /// `status.history` holds the largest revision number there is: no new one can follow.
    REVISIONS_EXHAUSTED = "RevisionsExhausted";

    // ---- a RollbackPolicy (its Ready condition, Events on it) ----
    /// The policy is within every bound and Rewind uses it.
    VALID = "Valid";
    /// The policy has a value outside its bounds or one that cannot be used; the Releases it
    /// governs stall with PolicyError until it is fixed.
    INVALID = "Invalid";

    // ---- steps (Events, and reasons of the Pinned and RolledBack conditions) ----
    /// Revision 0 recorded from what the Deployment ran before Rewind.
    ADOPTED = "Adopted";
    /// A revision is being applied to the Deployment.
    DEPLOYING = "Deploying";
    /// A revision's up migration Job runs; the Deployment is changed once it completes.
    MIGRATING_UP = "MigratingUp";
    /// A rollback's down migration Job runs.
    MIGRATING_DOWN = "MigratingDown";
    /// A migration Job completed.
    MIGRATION_SUCCEEDED = "MigrationSucceeded";
    /// A migration Job failed: an up Job fails its revision (the Deployment is untouched), a
    /// down Job halts its rollback (the Deployment is left as it is).
    MIGRATION_FAILED = "MigrationFailed";
    /// A migration Job ran past the policy's `migrations.timeout`.
    MIGRATION_TIMED_OUT = "MigrationTimedOut";
    /// A migration Job was deleted before it finished; Rewind does not create it again.
    MIGRATION_JOB_DELETED = "MigrationJobDeleted";
    /// `rewind.dev/retry` reopened a rollback halted at a failed migration step.
    MIGRATION_RETRY = "MigrationRetry";
    /// A rollback would cross a migration that cannot be undone (`reversible: false` or no
    /// down command): refused unless allowed.
    IRREVERSIBLE_MIGRATION = "IrreversibleMigration";
    /// History does not show which down migrations lead back to the target's schema.
    MIGRATION_PATH_UNKNOWN = "MigrationPathUnknown";
    /// The policy declares metric checks, which are not evaluated yet.
    METRICS_NOT_EVALUATED = "MetricsNotEvaluated";
    /// A digest was recorded from the pods' imageID.
    DIGEST_RECORDED = "DigestRecorded";
    /// The Deployment now runs `repo@sha256:…` for every container.
    PINNED = "Pinned";
    /// Every digest was resolved from the registry before the rollout.
    RESOLVED = "Resolved";
    /// Every digest was recorded from pod status after a fallback.
    FROM_POD_STATUS = "RecordedFromPodStatus";
    /// A revision has images whose digest is not known.
    DIGESTS_UNKNOWN = "DigestsUnknown";
    /// A rollback started.
    ROLLBACK_STARTED = "RollbackStarted";
    /// A rollback in flight, started by an earlier run or another replica, is carried on.
    ROLLBACK_RESUMED = "RollbackResumed";
    /// The Deployment runs the rollback target's images again.
    IMAGES_RESTORED = "ImagesRestored";
    /// A rollback finished and its target is available.
    ROLLBACK_SUCCEEDED = "RollbackSucceeded";
    /// `rewind.dev/retry` unblocked a version.
    RETRY = "RetryRequested";

    // ---- manual rollback requests (ManualRollback condition) ----
    /// A `rewind.dev/rollback-to` request was accepted.
    ACCEPTED = "Accepted";
    /// The requested version is not in history (or nothing was deployed yet).
    UNKNOWN_VERSION = "UnknownVersion";
    /// The requested revision was never healthy.
    TARGET_NOT_HEALTHY = "TargetNotHealthy";
    /// The requested revision is what runs now.
    ALREADY_RUNNING = "AlreadyRunning";
    /// Failure reason of a revision a person rolled back.
    MANUAL_ROLLBACK = "ManualRollback";

    // ---- why a revision failed (history[].failure.reason, rollback.reason) ----
    /// The new revision did not roll out within the readiness timeout.
    READINESS_TIMEOUT = "ReadinessTimeout";
    /// In the guard window, more pods than maxUnready were NotReady past unreadyFor.
    PODS_NOT_READY = "PodsNotReady";
    /// A container crash-looped past the restart limit.
    CRASH_LOOP = "CrashLoopBackOff";
    /// A container could not pull its image past the policy's window.
    IMAGE_PULL_FAILED = "ImagePullFailed";
    /// The Deployment reported ProgressDeadlineExceeded.
    PROGRESS_DEADLINE = "ProgressDeadlineExceeded";

    // ---- the registry (Pinned condition, Events) ----
    /// The registry could not be reached.
    REGISTRY_UNREACHABLE = "RegistryUnreachable";
    /// The registry did not answer within `--registry-timeout`.
    REGISTRY_TIMEOUT = "RegistryTimeout";
    /// The registry refused the credentials.
    REGISTRY_UNAUTHORIZED = "RegistryUnauthorized";
    /// The repository or tag does not exist.
    IMAGE_NOT_FOUND = "ImageNotFound";
    /// Any other registry error.
    REGISTRY_ERROR = "RegistryError";

    // ---- a reconcile that failed (Warning Events, once per distinct error) ----
    /// The API server refused the write of the Release's status (not a conflict).
    STATUS_WRITE_FAILED = "StatusWriteFailed";
    /// The API server refused Rewind's apply of the Deployment's pod template.
    DEPLOYMENT_APPLY_FAILED = "DeploymentApplyFailed";
    /// The API server refused to create a migration Job (the step waits and is tried again).
    JOB_CREATE_FAILED = "JobCreateFailed";
    /// Listing the pods of the target Deployment (when taking it over) failed.
    POD_LIST_FAILED = "PodListFailed";
    /// Reading the Deployment and its pods from the API server, to confirm a failure verdict
    /// made from the caches, failed: nothing was acted on, and it is tried again.
    VERDICT_NOT_CONFIRMED = "VerdictNotConfirmed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_and_pascal_case() {
        let mut seen = std::collections::BTreeSet::new();
        for r in ALL {
            assert!(seen.insert(*r), "reason {r} is declared twice");
            assert!(
                r.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && r.chars().all(|c| c.is_ascii_alphanumeric()),
                "reason {r} is not PascalCase"
            );
        }
    }

    #[test]
    fn reference_documents_every_reason() {
        let page = include_str!("../docs/reference.md");
        let missing: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|r| {
                !page
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|word| word == *r)
            })
            .collect();
        assert!(
            missing.is_empty(),
            "docs/reference.md does not mention these reasons the code can produce: {missing:?}"
        );
    }
}
