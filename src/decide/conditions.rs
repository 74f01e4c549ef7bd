//! Condition types and reasons (kstatus: Ready, Reconciling, Stalled; plus RolledBack and
//! ManualRollback), and setting them without churning lastTransitionTime.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The release runs its desired version and it is healthy.
pub const READY: &str = "Ready";
/// Rewind is still working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// Rewind cannot make progress without a person (or a spec change).
pub const STALLED: &str = "Stalled";
/// The desired version was rolled back and is blocked.
pub const ROLLED_BACK: &str = "RolledBack";
/// Every image of the newest revision has a digest.
pub const PINNED: &str = "Pinned";
/// The outcome of the last `rewind.dev/rollback-to` request.
pub const MANUAL_ROLLBACK: &str = "ManualRollback";

/// Reasons (PascalCase), shared by conditions and Events.
pub mod reason {
    pub const PROGRESSING: &str = "Progressing";
    pub const HEALTHY: &str = "Healthy";
    pub const PAUSED: &str = "Paused";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const TARGET_CLAIMED: &str = "TargetClaimed";
    pub const CONTAINER_NOT_FOUND: &str = "ContainerNotFound";
    pub const ADOPTED: &str = "Adopted";
    pub const DEPLOYING: &str = "Deploying";
    pub const MIGRATION_NOT_RUN: &str = "MigrationNotRun";
    pub const METRICS_NOT_EVALUATED: &str = "MetricsNotEvaluated";
    pub const DIGEST_RECORDED: &str = "DigestRecorded";
    pub const PINNED: &str = "Pinned";
    pub const RELEASE_FAILED: &str = "ReleaseFailed";
    pub const ROLLBACK_DISABLED: &str = "AutomaticRollbackDisabled";
    pub const COOLDOWN: &str = "RollbackCooldown";
    pub const NO_ROLLBACK_TARGET: &str = "NoRollbackTarget";
    pub const ROLLING_BACK: &str = "RollingBack";
    pub const ROLLBACK_STARTED: &str = "RollbackStarted";
    pub const IMAGES_RESTORED: &str = "ImagesRestored";
    pub const ROLLBACK_SUCCEEDED: &str = "RollbackSucceeded";
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const RETRY: &str = "RetryRequested";
    pub const ACCEPTED: &str = "Accepted";
    pub const UNKNOWN_VERSION: &str = "UnknownVersion";
    pub const DIGESTS_UNKNOWN: &str = "DigestsUnknown";
    pub const TARGET_NOT_HEALTHY: &str = "TargetNotHealthy";
    pub const ALREADY_RUNNING: &str = "AlreadyRunning";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const RESOLVED: &str = "Resolved";
    pub const FROM_POD_STATUS: &str = "RecordedFromPodStatus";
    pub const UNPINNED: &str = "UnpinnedRefused";
}

/// Set condition `type_` in `conditions`, keeping lastTransitionTime when the status did not
/// change, so re-deciding the same state writes the same bytes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: Timestamp,
) {
    set_status(
        conditions,
        type_,
        if status { "True" } else { "False" },
        reason,
        message,
        generation,
        now,
    )
}

/// As [`set`], with a literal status (`Unknown` included).
pub fn set_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: Timestamp,
) {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
                c.status = status.to_owned();
            }
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = Some(generation);
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: Some(generation),
            last_transition_time: Time(now),
        }),
    }
}

/// Find a condition.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let mut cs = Vec::new();
        set(&mut cs, READY, false, "Progressing", "a", 1, t0);
        set(&mut cs, READY, false, "Progressing", "b", 2, t1);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time.0, t0);
        assert_eq!(cs[0].message, "b");
        set(&mut cs, READY, true, "Healthy", "c", 2, t1);
        assert_eq!(cs[0].last_transition_time.0, t1);
        assert_eq!(get(&cs, READY).unwrap().status, "True");
    }
}
