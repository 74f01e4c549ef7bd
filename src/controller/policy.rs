//! The RollbackPolicy controller: holds every policy to its bounds (the same check the Release
//! controller makes, [`Policy::try_from`]) and reports the outcome on the policy itself, so a
//! person sees an unusable policy where they wrote it: `status.observedGeneration` and a
//! `Ready` condition (True, reason Valid; False, reason Invalid, naming the field, its value
//! and its bounds), and an Event when that changes. The status is written with server-side
//! apply (field manager `rewind`) to the status subresource, and only when it would change.
//! The Releases such a policy governs stall with reason PolicyError (the Release controller).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector, watcher,
    },
};
use serde_json::json;
use tracing::{info, warn};

use super::watches::{WatchBackoff, tolerant_watch};
use crate::{
    api::{RollbackPolicy, RollbackPolicyStatus},
    decide::{Policy, conditions},
    labels,
    leader::Leadership,
    reasons,
};

/// Shared by every reconcile of a policy.
struct Context {
    client: Client,
    recorder: Recorder,
    leader: Leadership,
}

/// Run the policy controller (all namespaces, or one) until a signal arrives.
pub async fn run(client: Client, namespace: Option<String>, leader: Leadership) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: labels::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // Decoded one object at a time, like the Release controller's watches: one policy that
    // does not decode is skipped (the Release controller counts it), never the whole list.
    let (store, writer) = reflector::store::<RollbackPolicy>();
    let stream = tolerant_watch::<RollbackPolicy, _>(
        &client,
        &namespace,
        watcher::Config::default(),
        |_| {},
    )
    .backoff(WatchBackoff::default())
    .reflect(writer)
    .applied_objects();
    let ctx = Arc::new(Context {
        client,
        recorder,
        leader: leader.clone(),
    });
    Controller::for_stream(stream, store)
        .reconcile_all_on(super::became_leader(&leader))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) | Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                Err(e) => warn!(error = %e, "policy controller"),
            }
        })
        .await;
    info!("policy controller stopped");
}

/// Errors of one policy reconcile.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// Writing the policy's status failed.
    #[error("writing status of RollbackPolicy {0}: {1}")]
    Status(String, #[source] kube::Error),
}

/// What the policy's status should be at `now`, and whether it is valid.
fn desired_status(policy: &RollbackPolicy, now: Timestamp) -> (RollbackPolicyStatus, bool) {
    let generation = policy.metadata.generation.unwrap_or(0);
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = Some(generation);
    let (valid, reason, message) = match Policy::try_from(&policy.spec) {
        Ok(_) => (
            true,
            reasons::VALID,
            "every value is within its bounds; Rewind uses this policy".to_owned(),
        ),
        Err(e) => (
            false,
            reasons::INVALID,
            format!(
                "{e}. Until it is fixed, the Releases this policy governs stall with reason PolicyError (nothing is deployed or rolled back for them)"
            ),
        ),
    };
    conditions::set(
        &mut status.conditions,
        conditions::READY,
        valid,
        reason,
        message,
        generation,
        now,
    );
    (status, valid)
}

/// Compare as the API server stores it (timestamps at second precision).
fn changed(current: Option<&RollbackPolicyStatus>, desired: &RollbackPolicyStatus) -> bool {
    let normalize = |s: &RollbackPolicyStatus| serde_json::to_value(s).ok();
    current.map(normalize) != Some(normalize(desired))
}

async fn reconcile(policy: Arc<RollbackPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leader.is_leading() {
        // A standby writes nothing; it looks at every policy when it starts leading.
        return Ok(Action::await_change());
    }
    let (name, ns) = (policy.name_any(), policy.namespace().unwrap_or_default());
    let (status, valid) = desired_status(&policy, Timestamp::now());
    if !changed(policy.status.as_ref(), &status) {
        return Ok(Action::await_change());
    }
    let patch = json!({
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "RollbackPolicy",
        // Conditional on what we read: a status decided from a stale cache is refused (409)
        // and decided again from the newer object.
        "metadata": {"name": name, "namespace": ns, "resourceVersion": policy.resource_version()},
        "status": status,
    });
    Api::<RollbackPolicy>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(labels::MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(|e| Error::Status(name.clone(), e))?;
    let ready = |s: Option<&RollbackPolicyStatus>| {
        s.and_then(|s| conditions::get(&s.conditions, conditions::READY))
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let (before, after) = (ready(policy.status.as_ref()), ready(Some(&status)));
    let was_invalid = before.as_ref().is_some_and(|(s, _)| s == "False");
    // An Event when the verdict (or what is wrong) changes: invalid, or valid again.
    if before != after && (!valid || was_invalid) {
        let note = after.map(|(_, m)| m).unwrap_or_default();
        info!(policy = %name, namespace = %ns, valid, "{note}");
        let event = Event {
            type_: if valid {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: if valid {
                reasons::VALID
            } else {
                reasons::INVALID
            }
            .into(),
            note: Some(crate::decide::text::bounded(
                &note,
                crate::decide::text::MESSAGE_MAX,
            )),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
            warn!(error = %e, policy = %name, "could not publish Event");
        }
    }
    Ok(Action::await_change())
}

fn error_policy(policy: Arc<RollbackPolicy>, error: &Error, _: Arc<Context>) -> Action {
    if crate::leader::refused(error) {
        // Leadership was lost mid-reconcile; the new leader looks at every policy.
        return Action::await_change();
    }
    warn!(policy = %policy.name_any(), error = %error, "policy reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: serde_json::Value) -> RollbackPolicy {
        let mut p: RollbackPolicy = serde_json::from_value(json!({
            "apiVersion": "rewind.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "p", "namespace": "ns", "generation": 3},
            "spec": spec
        }))
        .unwrap();
        p.metadata.generation = Some(3);
        p
    }

    #[test]
    fn a_valid_policy_is_ready_and_an_invalid_one_says_what_to_fix() {
        let now: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
        let (status, valid) = desired_status(&policy(json!({"cooldown": "5m"})), now);
        assert!(valid);
        assert_eq!(status.observed_generation, Some(3));
        let c = conditions::get(&status.conditions, conditions::READY).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Valid"));

        let (status, valid) =
            desired_status(&policy(json!({"cooldown": "99999999999999999999h"})), now);
        assert!(!valid);
        let c = conditions::get(&status.conditions, conditions::READY).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
        assert!(
            c.message
                .contains("cooldown \"99999999999999999999h\" cannot be used")
                && c.message.contains("longer than the longest duration")
                && c.message.contains("stall with reason PolicyError"),
            "{}",
            c.message
        );
    }

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let now: Timestamp = "2026-11-26T10:00:00.5Z".parse().unwrap();
        let mut p = policy(json!({"readiness": {"timeout": "0s"}}));
        let (first, _) = desired_status(&p, now);
        assert!(changed(p.status.as_ref(), &first));
        // As stored and read back (second precision), then decided again later.
        p.status = Some(serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap());
        let later: Timestamp = "2026-11-26T11:00:00Z".parse().unwrap();
        let (again, _) = desired_status(&p, later);
        assert!(!changed(p.status.as_ref(), &again));
    }
}
