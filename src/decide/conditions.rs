//! Condition types (kstatus: Ready, Reconciling, Stalled; plus RolledBack, Pinned and
//! ManualRollback), and setting them without churning lastTransitionTime. Their reasons are in
//! [`crate::reasons`].

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

/// Set condition `type_` in `conditions`, keeping lastTransitionTime when the status did not
/// change, so re-deciding the same state writes the same bytes. The message is bounded
/// ([`MESSAGE_MAX`](super::text::MESSAGE_MAX)): it may quote annotations and pod names.
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
    let message = super::text::bounded(&message.into(), super::text::MESSAGE_MAX);
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
