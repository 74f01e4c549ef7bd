//! Pure decisions: from a Release, its policy, what the cluster shows and the time, decide the
//! Release's next status, the one change to make to the Deployment (if any), the Events to
//! publish and when to look again. No client here: the controller gathers the inputs and
//! carries out the plan, in this order: status first (the step is recorded before any side
//! effect, so a restart resumes it), then Events (people hear of the step even if the apply
//! fails), then the Deployment.
//!
//! The planner is one [`Planner`](plan::Planner) whose methods live beside their concern:
//! - `plan.rs`: the planner, its entry point `run` (what to do first) and phase/condition setting;
//! - `deploy.rs`: adopting a Deployment (revision 0), deploying a new revision, pinning digests;
//! - `guard.rs`: judging the live revision (rolling out, then guarded) with `health.rs`;
//! - `rollback.rs`: a failure, then start → restore images → verify → finish, and cooldown;
//! - `migrate.rs`: migration Jobs: the up gate before a rollout, the down steps of a rollback
//!   (which revisions' migrations it undoes, irreversible ones), following each Job;
//! - `requests.rs`: what people ask by annotation (manual rollback, retry, pause);
//! - `contest.rs`: another field manager changing an image Rewind owns (put back, or stop);
//! - `history.rs`: the history cap, choosing a rollback target, digests already known;
//! - `views.rs`: the Deployment and Pods as the planner sees them; `policy.rs`: a policy with
//!   its defaults and bounds, and which policy a Release has; `conditions.rs`: condition types
//!   and setting them; `text.rs`: bounding outside text before it enters a status.

pub mod clock;
pub mod conditions;
mod contest;
mod deploy;
mod guard;
pub mod health;
mod history;
mod migrate;
mod plan;
pub mod policy;
mod requests;
mod rollback;
pub mod selection;
pub mod text;
pub mod views;

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::{
    api::{Release, ReleaseStatus, Rollback},
    registry::ResolveError,
};
use clock::Blind;
pub use policy::{Policy, PolicyError};
pub use requests::{paused, paused_by};
use views::Observed;

/// Everything a decision looks at.
pub struct Input<'a> {
    /// The Release as last seen (spec, annotations, status).
    pub release: &'a Release,
    /// Its policy, defaults filled in.
    pub policy: &'a Policy,
    /// Why its policy could not be resolved (missing policyRef, two policies match).
    pub policy_error: Option<PolicyError>,
    /// The Deployment and Pods.
    pub observed: &'a Observed,
    /// An older Release that manages the same Deployment, if any (a Deployment has one).
    pub claimed_by: Option<String>,
    /// What the registry said for the image references a previous plan asked about
    /// ([`Plan::lookups`]); empty on the first pass.
    pub resolved: &'a BTreeMap<String, Result<String, ResolveError>>,
    /// The time of the decision.
    pub now: Timestamp,
    /// Spans when the controller could not see the cluster; deadlines leave them out.
    pub blind: &'a [Blind],
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status to write (written only if it differs from the current one).
    pub status: ReleaseStatus,
    /// The pod template to apply to the Deployment, after the status is written and the Events
    /// are published.
    pub apply: Option<Template>,
    /// Events to publish on the Release, after the status is written and before the apply.
    pub events: Vec<Note>,
    /// When to look again even if nothing changes (a pending deadline).
    pub recheck: Option<Timestamp>,
    /// A rollback that finished in this step (for the log line and metrics).
    pub finished: Option<Rollback>,
    /// Image references this plan would deploy and pin but has no registry answer for (not in
    /// [`Input::resolved`]). When not empty, the controller asks the registry about exactly
    /// these and plans again with the answers; only the planner decides what deploys.
    pub lookups: Vec<String>,
    /// This plan declares a failure (a revision failed, or a rollback could not finish). When
    /// it was made from the watch caches, the controller re-reads the Deployment and its pods
    /// from the API server, plans again and acts only on that plan, so no verdict is taken
    /// from a cache that may be stale.
    pub confirm: bool,
    /// Migration Jobs to create, after the status is written (which records them first) and
    /// the Events are published. Creating one that exists already is not an error: it is the
    /// same step (the name is deterministic).
    pub jobs: Vec<JobRequest>,
    /// Migration Jobs that ended in this step: kind (`up`/`down`) and result (`Succeeded`,
    /// `Failed`, `TimedOut`, `Deleted`), for metrics.
    pub migrations_ended: Vec<(&'static str, &'static str)>,
}

pub use migrate::JobRequest;
#[cfg(test)]
pub use migrate::MigrationKind;

/// The fields of the Deployment's pod template Rewind owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Revision annotation.
    pub revision: i64,
    /// Version annotation.
    pub version: String,
    /// The containers whose image Rewind sets.
    pub containers: Vec<TemplateContainer>,
}

/// One container image Rewind sets in the pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateContainer {
    /// Container name.
    pub name: String,
    /// Image reference, `repo@sha256:…` when pinned.
    pub image: String,
    /// An init container (`initContainers`) rather than a container.
    pub init: bool,
}

/// Kubernetes Event type of a [`Note`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Something went as it should.
    Normal,
    /// Something a person may need to look at.
    Warning,
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub kind: EventKind,
    /// PascalCase reason, from [`crate::reasons`].
    pub reason: &'static str,
    /// For a person.
    pub message: String,
    /// The migration Job the Event is about (its `related` object), if any: Events about
    /// different Jobs are different Events, not one series under the first Job's words.
    pub job: Option<String>,
}

impl Note {
    /// A Warning Event.
    pub fn is_warning(&self) -> bool {
        self.kind == EventKind::Warning
    }
}

/// The Release is about to record what its Deployment runs as revision 0 (nothing recorded
/// yet, or the Deployment was created again): the controller then also lists the pods the
/// Deployment ran before Rewind, which carry no label of ours.
pub fn adopting(release: &Release, deployment_uid: Option<&str>) -> bool {
    let status = release.status.as_ref();
    paused(release).is_none()
        && (status.is_none_or(|s| s.history.is_empty())
            || status
                .and_then(|s| s.target_uid.as_deref())
                .zip(deployment_uid)
                .is_some_and(|(recorded, now)| !now.is_empty() && recorded != now))
}

/// The status written as soon as Rewind first sees a Release, before anything that may take
/// a while (registry lookups): Reconciling, so a GitOps tool reading it (kstatus, Argo CD)
/// never takes a Release Rewind has not judged yet for a healthy one.
pub fn initial_status(release: &Release, now: Timestamp) -> ReleaseStatus {
    let generation = release.metadata.generation.unwrap_or(0);
    let mut status = ReleaseStatus {
        observed_generation: Some(generation),
        phase: Some(crate::api::Phase::Progressing),
        ..Default::default()
    };
    let message = format!(
        "Rewind has seen {} and is working on it",
        release.spec.version
    );
    for (type_, value) in [
        (conditions::READY, "False"),
        (conditions::RECONCILING, "True"),
        (conditions::STALLED, "False"),
    ] {
        conditions::set_status(
            &mut status.conditions,
            type_,
            value,
            crate::reasons::PROGRESSING,
            if value == "False" && type_ == conditions::STALLED {
                String::new()
            } else {
                message.clone()
            },
            generation,
            now,
        );
    }
    status
}

/// Decide the next step for one Release.
pub fn plan(input: &Input) -> Plan {
    let mut p = plan::Planner::new(input);
    p.run();
    p.finish()
}

#[cfg(test)]
mod tests;
