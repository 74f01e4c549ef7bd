//! Pure decisions: from a Release, its policy, what the cluster shows and the time, decide the
//! Release's next status, the one change to make to the Deployment (if any), the Events to
//! publish and when to look again. No client here: the controller gathers the inputs and
//! carries out the plan, in that order: status first, then the Deployment, then Events.

pub mod conditions;
pub mod health;
pub mod observe;
pub mod policy;

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::{
    api::{
        Blocked, DigestSource, Failure, Handled, Outcome, Phase, PinnedImage, PinnedMigration,
        Release, ReleaseStatus, Revision, RevisionRef, Rollback, RollbackPhase, RollbackTarget,
        Trigger,
    },
    digest::ResolveError,
    image::{ImageRef, is_digest},
    labels,
};
use conditions::reason;
use health::{Failing, Verdict};
use observe::{Observed, PodView, Workload};
pub use policy::Policy;

/// Everything a decision looks at.
pub struct Input<'a> {
    /// The Release as last seen (spec, annotations, status).
    pub release: &'a Release,
    /// Its policy, defaults filled in.
    pub policy: &'a Policy,
    /// Why its policy could not be resolved (missing policyRef, two policies match).
    pub policy_error: Option<String>,
    /// The Deployment and Pods.
    pub observed: &'a Observed,
    /// An older Release that manages the same Deployment, if any (a Deployment has one).
    pub claimed_by: Option<String>,
    /// What the registry said for each image reference of [`images_to_resolve`].
    pub resolved: &'a BTreeMap<String, Result<String, ResolveError>>,
    /// The time of the decision.
    pub now: Timestamp,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status to write (written only if it differs from the current one).
    pub status: ReleaseStatus,
    /// The pod template to apply to the Deployment, after the status is written.
    pub apply: Option<Template>,
    /// Events to publish on the Release, after the writes succeed.
    pub events: Vec<Note>,
    /// When to look again even if nothing changes (a pending deadline).
    pub recheck: Option<Timestamp>,
    /// A rollback that finished in this step (for the log line and metrics).
    pub finished: Option<Rollback>,
}

/// The fields of the Deployment's pod template Rewind owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Revision annotation.
    pub revision: i64,
    /// Version annotation.
    pub version: String,
    /// Container name, image, and whether it is an init container.
    pub containers: Vec<(String, String, bool)>,
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// For a person.
    pub message: String,
}

/// Decide the next step for one Release.
pub fn plan(input: &Input) -> Plan {
    let mut p = Planner::new(input);
    p.run();
    p.finish()
}

struct Planner<'a> {
    input: &'a Input<'a>,
    release: &'a Release,
    policy: &'a Policy,
    now: Timestamp,
    generation: i64,
    status: ReleaseStatus,
    apply: Option<Template>,
    events: Vec<Note>,
    recheck: Option<Timestamp>,
    finished: Option<Rollback>,
}

fn add(t: Timestamp, d: std::time::Duration) -> Timestamp {
    t.saturating_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn images_summary(images: &[PinnedImage]) -> String {
    let parts: Vec<String> = images
        .iter()
        .map(|i| match &i.digest {
            Some(d) => format!("{}={}", i.container, ImageRef::parse(&i.image).pinned(d)),
            None => format!("{}={}", i.container, i.image),
        })
        .collect();
    parts.join(", ")
}

impl<'a> Planner<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        let release = input.release;
        let mut status = release.status.clone().unwrap_or_default();
        let generation = release.metadata.generation.unwrap_or(0);
        status.observed_generation = Some(generation);
        Planner {
            input,
            release,
            policy: input.policy,
            now: input.now,
            generation,
            status,
            apply: None,
            events: Vec::new(),
            recheck: None,
            finished: None,
        }
    }

    fn finish(self) -> Plan {
        Plan {
            status: self.status,
            apply: self.apply,
            events: self.events,
            recheck: self.recheck,
            finished: self.finished,
        }
    }

    fn note(&mut self, warning: bool, reason: &'static str, message: impl Into<String>) {
        self.events.push(Note {
            warning,
            reason,
            message: message.into(),
        });
    }

    /// Set a condition at this plan's generation and time.
    fn condition(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    fn recheck_at(&mut self, at: Option<Timestamp>) {
        self.recheck = match (self.recheck, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Set phase and the kstatus trio consistently.
    fn set_phase(&mut self, phase: Phase, reason: &str, message: impl Into<String>) {
        let message = message.into();
        let (g, now) = (self.generation, self.now);
        let cs = &mut self.status.conditions;
        let (ready, reconciling, stalled) = match phase {
            Phase::Healthy => ("True", false, false),
            Phase::Progressing | Phase::RollingBack => ("False", true, false),
            Phase::Degraded | Phase::RolledBack | Phase::Failed => ("False", false, true),
            Phase::Paused => ("Unknown", false, false),
        };
        conditions::set_status(
            cs,
            conditions::READY,
            ready,
            reason,
            message.clone(),
            g,
            now,
        );
        conditions::set(
            cs,
            conditions::RECONCILING,
            reconciling,
            reason,
            if reconciling {
                message.clone()
            } else {
                String::new()
            },
            g,
            now,
        );
        conditions::set(
            cs,
            conditions::STALLED,
            stalled,
            reason,
            if stalled { message } else { String::new() },
            g,
            now,
        );
        if phase == Phase::Healthy && conditions::get(cs, conditions::ROLLED_BACK).is_some() {
            conditions::set(
                cs,
                conditions::ROLLED_BACK,
                false,
                reason::AS_EXPECTED,
                "",
                g,
                now,
            );
        }
        self.status.phase = Some(phase);
    }

    /// Report a problem that needs a person, once (Event only when the reason changes).
    fn stall(&mut self, reason: &'static str, message: String) {
        let already = conditions::get(&self.status.conditions, conditions::STALLED)
            .is_some_and(|c| c.status == "True" && c.reason == reason && c.message == message);
        if !already {
            self.note(true, reason, message.clone());
        }
        self.set_phase(Phase::Failed, reason, message);
    }

    fn run(&mut self) {
        let spec = &self.release.spec;
        if spec.paused {
            if self.status.phase != Some(Phase::Paused) {
                self.note(
                    false,
                    reason::PAUSED,
                    "spec.paused is set: Rewind neither deploys nor rolls back",
                );
            }
            self.set_phase(
                Phase::Paused,
                reason::PAUSED,
                "spec.paused is set: Rewind neither deploys nor rolls back",
            );
            return;
        }
        if let Some(other) = self.input.claimed_by.clone() {
            let msg = format!(
                "Deployment {} is already managed by Release {other}; a Deployment has one Release: delete this one or point it at another Deployment",
                spec.target.name
            );
            self.stall(reason::TARGET_CLAIMED, msg);
            // Deleting the other Release wakes nothing here: look again now and then.
            self.recheck_at(Some(add(self.now, std::time::Duration::from_secs(60))));
            return;
        }
        let Some(workload) = self.input.observed.workload.as_ref() else {
            let msg = format!(
                "Deployment {} not found in namespace {}; Rewind waits for it to exist",
                spec.target.name,
                self.release.namespace().unwrap_or_default()
            );
            self.stall(reason::TARGET_NOT_FOUND, msg);
            return;
        };
        if self.in_flight().is_some() {
            self.continue_rollback(workload);
            return;
        }
        if let Some(err) = self.input.policy_error.clone() {
            self.stall("PolicyError", err);
            return;
        }
        let missing: Vec<&str> = spec
            .images
            .iter()
            .filter(|i| !workload.images.contains_key(&i.container))
            .map(|i| i.container.as_str())
            .collect();
        if !missing.is_empty() {
            let known: Vec<&str> = workload.images.keys().map(String::as_str).collect();
            let msg = format!(
                "Deployment {} has no container named {}; it has: {}",
                spec.target.name,
                missing.join(", "),
                known.join(", ")
            );
            self.stall(reason::CONTAINER_NOT_FOUND, msg);
            return;
        }
        self.handle_retry();
        if self.handle_manual_rollback(workload) {
            return;
        }
        if self.status.history.is_empty() {
            self.adopt(workload);
        }
        if let Some(blocked) = self.status.blocked.clone() {
            if blocked.version == spec.version {
                self.stay_rolled_back(&blocked, workload);
                return;
            }
            self.status.blocked = None;
        }
        if spec_differs(&self.status, spec) {
            self.deploy(workload);
            return;
        }
        self.guard_live(workload);
    }

    fn in_flight(&self) -> Option<&Rollback> {
        self.status
            .rollback
            .as_ref()
            .filter(|r| !r.phase.is_finished())
    }

    fn live_index(&self) -> Option<usize> {
        let live = self.status.revision?;
        self.status.history.iter().position(|r| r.revision == live)
    }

    fn entry(&self, revision: i64) -> Option<&Revision> {
        self.status.history.iter().find(|r| r.revision == revision)
    }

    fn entry_mut(&mut self, revision: i64) -> Option<&mut Revision> {
        self.status
            .history
            .iter_mut()
            .find(|r| r.revision == revision)
    }

    // ---- deploying ------------------------------------------------------------------------

    /// Revision 0: what the Deployment ran before Rewind's first change, so even the first
    /// Release has something to roll back to.
    fn adopt(&mut self, workload: &Workload) {
        let pods: Vec<&PodView> = self
            .input
            .observed
            .pods
            .iter()
            .filter(|p| p.revision.is_none())
            .collect();
        let images: Vec<PinnedImage> = self
            .release
            .spec
            .images
            .iter()
            .filter_map(|i| {
                let image = workload.images.get(&i.container)?.image.clone();
                if image.is_empty() {
                    return None;
                }
                let (digest, from) = match ImageRef::parse(&image).digest.filter(|d| is_digest(d)) {
                    Some(d) => (Some(d.to_owned()), Some(DigestSource::Reference)),
                    None => match agreed_digest(&pods, &i.container) {
                        Some(d) => (Some(d), Some(DigestSource::PodStatus)),
                        None => (None, None),
                    },
                };
                Some(PinnedImage {
                    container: i.container.clone(),
                    image,
                    digest,
                    resolved_from: from,
                })
            })
            .collect();
        if images.is_empty() {
            return;
        }
        let healthy = workload.rolled_out();
        let summary = images_summary(&images);
        self.status.history.push(Revision {
            revision: 0,
            version: "adopted".into(),
            images,
            migration: None,
            source: None,
            deployed_at: None,
            healthy_at: healthy.then_some(Time(self.now)),
            outcome: if healthy {
                Outcome::Healthy
            } else {
                Outcome::Pending
            },
            failure: None,
        });
        self.status.revision = Some(0);
        self.status.version = Some("adopted".into());
        self.note(
            false,
            reason::ADOPTED,
            format!(
                "recorded what the Deployment runs as revision 0 ({summary}) before changing it"
            ),
        );
    }

    fn deploy(&mut self, workload: &Workload) {
        let spec = &self.release.spec;
        let number = self
            .status
            .history
            .iter()
            .map(|r| r.revision)
            .max()
            .map_or(1, |m| m + 1);
        // The digest in the reference, else the one recorded for this version (a Git revert
        // brings back the same bits, even if the tag moved), else the registry's answer.
        let mut unresolved: Vec<String> = Vec::new();
        let mut first_error: Option<&'static str> = None;
        let images: Vec<PinnedImage> = spec
            .images
            .iter()
            .map(|i| {
                let (digest, resolved_from) =
                    match known_digest(&self.status.history, &spec.version, &i.container, &i.image)
                    {
                        Some((d, from)) => (Some(d), from),
                        None => match self.input.resolved.get(&i.image) {
                            Some(Ok(d)) => (Some(d.clone()), Some(DigestSource::Registry)),
                            Some(Err(e)) => {
                                first_error.get_or_insert(e.reason());
                                unresolved.push(format!(
                                    "{}={} ({}: {e})",
                                    i.container,
                                    i.image,
                                    e.reason()
                                ));
                                (None, None)
                            }
                            None => {
                                // Not asked (no registry lookup was needed or possible).
                                unresolved
                                    .push(format!("{}={} (not looked up)", i.container, i.image));
                                (None, None)
                            }
                        },
                    };
                PinnedImage {
                    container: i.container.clone(),
                    image: i.image.clone(),
                    digest,
                    resolved_from,
                }
            })
            .collect();
        let pin_reason = first_error.unwrap_or(reason::DIGESTS_UNKNOWN);
        if !unresolved.is_empty() && self.policy.strict_digests {
            let msg = format!(
                "refusing to deploy {} unpinned (policy digestResolution: Strict): {}; asking the registry again in {}s",
                spec.version,
                unresolved.join("; "),
                STRICT_RETRY.as_secs()
            );
            self.condition(conditions::PINNED, false, pin_reason, msg.clone());
            self.stall(reason::UNPINNED, msg);
            self.recheck_at(Some(add(self.now, STRICT_RETRY)));
            return;
        }
        if unresolved.is_empty() {
            let msg = format!(
                "every image of {} is pinned before the rollout",
                spec.version
            );
            self.condition(conditions::PINNED, true, reason::RESOLVED, msg);
        } else {
            let msg = format!(
                "deploying {} by reference as written, the digest will be recorded from pod status: {}",
                spec.version,
                unresolved.join("; ")
            );
            self.condition(conditions::PINNED, false, pin_reason, msg.clone());
            if first_error.is_some() {
                self.note(true, pin_reason, msg);
            }
        }
        let reused = images.iter().filter(|i| i.digest.is_some()).count();
        if let Some(live) = self.live_index() {
            let prev = &mut self.status.history[live];
            if matches!(prev.outcome, Outcome::Healthy | Outcome::Pending) {
                prev.outcome = Outcome::Superseded;
            }
        }
        let entry = Revision {
            revision: number,
            version: spec.version.clone(),
            images,
            migration: spec.migration.as_ref().map(|m| PinnedMigration {
                image: m.image.clone(),
                digest: None,
                schema_version: m.schema_version.clone(),
            }),
            source: spec.source.clone(),
            deployed_at: Some(Time(self.now)),
            healthy_at: None,
            outcome: Outcome::Pending,
            failure: None,
        };
        let template = template_for(&entry, workload, true);
        let summary = images_summary(&entry.images);
        self.status.history.insert(0, entry);
        self.status.revision = Some(number);
        self.status.version = Some(spec.version.clone());
        self.cap_history();
        let msg = format!(
            "rolling out {} as revision {number} ({summary})",
            spec.version
        );
        self.set_phase(Phase::Progressing, reason::PROGRESSING, msg.clone());
        if conditions::get(&self.status.conditions, conditions::ROLLED_BACK).is_some() {
            self.condition(
                conditions::ROLLED_BACK,
                false,
                reason::DEPLOYING,
                msg.clone(),
            );
        }
        let reuse = if reused > 0 {
            format!("; {reused} digest(s) known before rollout")
        } else {
            String::new()
        };
        self.note(false, reason::DEPLOYING, format!("{msg}{reuse}"));
        if !self.policy.metrics.is_empty() {
            self.note(
                true,
                reason::METRICS_NOT_EVALUATED,
                format!(
                    "the policy's metric checks ({}) are not evaluated by this version of Rewind: only pod and Deployment health guard {}",
                    self.policy.metrics.join(", "),
                    spec.version
                ),
            );
        }
        if let Some(m) = &spec.migration {
            // Recorded in history, but not acted on yet: say so rather than ignore it silently.
            self.note(
                true,
                reason::MIGRATION_NOT_RUN,
                format!(
                    "spec.migration (schema {}) is recorded but this version of Rewind runs no migration Jobs: run {} yourself before relying on a rollback across it",
                    m.schema_version, m.image
                ),
            );
        }
        self.apply = Some(template);
        self.recheck_at(Some(add(self.now, self.policy.readiness_timeout)));
    }

    // ---- guarding the live revision ---------------------------------------------------------

    fn guard_live(&mut self, workload: &Workload) {
        let Some(idx) = self.live_index() else { return };
        // Record digests the pods of the live revision report.
        let revision = self.status.history[idx].revision;
        let pods: Vec<&PodView> = self
            .input
            .observed
            .pods
            .iter()
            .filter(|p| p.revision == Some(revision))
            .collect();
        let mut recorded = Vec::new();
        for img in self.status.history[idx]
            .images
            .iter_mut()
            .filter(|i| i.digest.is_none())
        {
            if let Some(d) = agreed_digest(&pods, &img.container) {
                recorded.push(format!("{}={d}", img.container));
                img.digest = Some(d);
                img.resolved_from = Some(DigestSource::PodStatus);
            }
        }
        if !recorded.is_empty()
            && self.status.history[idx]
                .images
                .iter()
                .all(|i| i.digest.is_some())
            && conditions::get(&self.status.conditions, conditions::PINNED)
                .is_some_and(|c| c.status == "False")
        {
            let msg =
                format!("every image of revision {revision} has a digest recorded from pod status");
            self.condition(conditions::PINNED, true, reason::FROM_POD_STATUS, msg);
        }
        if !recorded.is_empty() {
            self.note(
                false,
                reason::DIGEST_RECORDED,
                format!(
                    "revision {revision}: recorded from pod status {}",
                    recorded.join(", ")
                ),
            );
        }
        let live = self.status.history[idx].clone();
        match live.outcome {
            Outcome::Pending => {
                if workload.template_revision != Some(revision) {
                    // Written to status but not applied yet (a restart in between): apply now.
                    self.apply = Some(template_for(&live, workload, true));
                }
                let deployed_at = live.deployed_at.map_or(self.now, |t| t.0);
                match health::judge_rollout(
                    revision,
                    deployed_at,
                    workload,
                    &self.input.observed.pods,
                    self.policy,
                    self.now,
                ) {
                    Verdict::Healthy => {
                        let e = &mut self.status.history[idx];
                        e.outcome = Outcome::Healthy;
                        e.healthy_at = Some(Time(self.now));
                        let msg = format!(
                            "{} (revision {revision}) is healthy: {} of {} replicas available",
                            live.version, workload.available, workload.replicas
                        );
                        self.note(false, reason::HEALTHY, msg);
                        self.set_phase(
                            Phase::Healthy,
                            reason::HEALTHY,
                            format!("{} (revision {revision}) is healthy", live.version),
                        );
                        self.pin(workload);
                        self.recheck_at(Some(add(self.now, self.policy.guard_window)));
                    }
                    Verdict::Waiting { recheck } => {
                        let msg = format!(
                            "rolling out {} as revision {revision}: {} of {} replicas updated, {} available",
                            live.version, workload.updated, workload.replicas, workload.available
                        );
                        self.set_phase(Phase::Progressing, reason::PROGRESSING, msg);
                        self.recheck_at(recheck);
                    }
                    Verdict::Failed(f) => self.on_failure(idx, f, workload),
                }
            }
            Outcome::Healthy => {
                let healthy_at = live.healthy_at.map_or(self.now, |t| t.0);
                let verdict = health::judge_guarded(
                    revision,
                    healthy_at,
                    workload,
                    &self.input.observed.pods,
                    self.policy,
                    self.now,
                );
                if let Verdict::Failed(f) = verdict {
                    self.on_failure(idx, f, workload);
                    return;
                }
                if let Verdict::Waiting { recheck } = verdict {
                    self.recheck_at(recheck);
                }
                let msg = format!("{} (revision {revision}) is healthy", live.version);
                self.set_phase(Phase::Healthy, reason::HEALTHY, msg);
                self.pin(workload);
            }
            Outcome::Failed => {
                // Failed without a rollback (automatic off, no target, or cooldown passed by):
                // stays Degraded until the spec changes or a person acts.
                if self.status.phase == Some(Phase::Degraded) {
                    return;
                }
                let why = live
                    .failure
                    .as_ref()
                    .map_or(String::new(), |f| f.message.clone());
                let msg = format!(
                    "{} (revision {revision}) failed and was not rolled back: {why}",
                    live.version
                );
                self.set_phase(Phase::Degraded, reason::RELEASE_FAILED, msg);
            }
            Outcome::RolledBack | Outcome::Superseded => {}
        }
    }

    /// Once the live revision is healthy and every digest is known, make the Deployment run
    /// `repo@sha256:…` so a reschedule can never pull a moved tag.
    fn pin(&mut self, workload: &Workload) {
        let Some(idx) = self.live_index() else { return };
        let live = &self.status.history[idx];
        if live.images.iter().any(|i| i.digest.is_none()) {
            return;
        }
        let template = template_for(live, workload, true);
        if !workload_runs(workload, &template) {
            let msg = format!(
                "revision {} pinned to digests ({})",
                live.revision,
                images_summary(&live.images)
            );
            self.note(false, reason::PINNED, msg);
            self.apply = Some(template);
        }
    }

    // ---- failing and rolling back ----------------------------------------------------------

    fn on_failure(&mut self, idx: usize, f: Failing, workload: &Workload) {
        let live = self.status.history[idx].clone();
        let headline = format!(
            "{} (revision {}) failed: {}",
            live.version, live.revision, f.message
        );
        if let Some(until) = self.cooldown_until() {
            let msg = format!("{headline}; no automatic rollback until {until} (policy cooldown)");
            if self.status.phase != Some(Phase::Degraded) {
                self.note(true, reason::COOLDOWN, msg.clone());
            }
            self.set_phase(Phase::Degraded, reason::COOLDOWN, msg);
            self.recheck_at(Some(until));
            return;
        }
        {
            let e = &mut self.status.history[idx];
            e.outcome = Outcome::Failed;
            e.failure = Some(Failure {
                trigger: f.trigger,
                reason: f.reason.into(),
                message: f.message.clone(),
                at: Time(f.at),
            });
        }
        if !self.policy.automatic {
            let msg = format!("{headline}; automatic rollback is off in the policy");
            self.note(true, reason::ROLLBACK_DISABLED, msg.clone());
            self.set_phase(Phase::Degraded, reason::ROLLBACK_DISABLED, msg);
            return;
        }
        let Some(target) = choose_target(&self.status.history, live.revision, self.policy.target)
        else {
            let msg = format!(
                "{headline}; no earlier healthy revision with recorded digests to roll back to"
            );
            self.note(true, reason::NO_ROLLBACK_TARGET, msg.clone());
            self.set_phase(Phase::Degraded, reason::NO_ROLLBACK_TARGET, msg);
            return;
        };
        self.start_rollback(
            &live, &target, f.trigger, f.reason, f.message, f.at, None, workload,
        );
    }

    /// The end of the cooldown after the last automatic rollback, if it has not passed.
    fn cooldown_until(&self) -> Option<Timestamp> {
        let last = self
            .status
            .rollbacks
            .iter()
            .filter(|r| r.trigger != Trigger::Manual)
            .filter_map(|r| r.completed_at.as_ref())
            .map(|t| t.0)
            .max()?;
        let until = add(last, self.policy.cooldown);
        (self.now < until).then_some(until)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_rollback(
        &mut self,
        from: &Revision,
        to: &Revision,
        trigger: Trigger,
        why: &str,
        message: String,
        detected_at: Timestamp,
        requested_by: Option<String>,
        workload: &Workload,
    ) {
        let uid = self.release.uid().unwrap_or_default();
        let rollback = Rollback {
            id: format!(
                "{}-{}-{}-{}",
                &uid[..uid.len().min(8)],
                from.revision,
                to.revision,
                detected_at.as_second()
            ),
            from: RevisionRef {
                revision: from.revision,
                version: from.version.clone(),
            },
            to: RevisionRef {
                revision: to.revision,
                version: to.version.clone(),
            },
            trigger,
            reason: why.to_owned(),
            message: message.clone(),
            requested_by,
            phase: RollbackPhase::RestoringImages,
            job_name: None,
            detected_at: Time(detected_at),
            started_at: Some(Time(self.now)),
            images_restored_at: None,
            completed_at: None,
            duration_seconds: None,
        };
        let msg = format!(
            "rolling back {} (revision {}) to {} (revision {}): {message}",
            from.version, from.revision, to.version, to.revision
        );
        self.note(true, reason::ROLLBACK_STARTED, msg.clone());
        self.set_phase(Phase::RollingBack, reason::ROLLING_BACK, msg);
        self.status.rollback = Some(rollback);
        // The phase (RestoringImages) is written with this status, before the patch.
        self.apply = Some(template_for(to, workload, true));
        self.recheck_at(Some(add(self.now, self.policy.readiness_timeout)));
    }

    fn continue_rollback(&mut self, workload: &Workload) {
        let Some(mut rb) = self.in_flight().cloned() else {
            return;
        };
        let Some(target) = self.entry(rb.to.revision).cloned() else {
            let msg = format!(
                "rollback {} lost its target revision {} from history",
                rb.id, rb.to.revision
            );
            self.fail_rollback(rb, msg);
            return;
        };
        let template = template_for(&target, workload, true);
        match rb.phase {
            // Migrations are not run yet: these phases only restore images.
            RollbackPhase::Pending
            | RollbackPhase::MigratingDown
            | RollbackPhase::RestoringImages => {
                if workload_runs(workload, &template) {
                    rb.phase = RollbackPhase::Verifying;
                    rb.images_restored_at = Some(Time(self.now));
                    self.note(
                        false,
                        reason::IMAGES_RESTORED,
                        format!(
                            "Deployment {} runs {} (revision {}) again; verifying the rollout",
                            self.release.spec.target.name, target.version, target.revision
                        ),
                    );
                    self.status.rollback = Some(rb.clone());
                    self.verify(rb, &target, workload);
                } else {
                    let started = rb.started_at.as_ref().map_or(self.now, |t| t.0);
                    let deadline = add(started, self.policy.readiness_timeout);
                    if self.now >= deadline {
                        // The Deployment never showed the target's images (an apply that keeps
                        // failing, or a webhook rewriting images): stop and ask for a person.
                        let msg = format!(
                            "rollback {} could not restore {} (revision {}) within {}s: the Deployment does not run its images; a person must look",
                            rb.id,
                            target.version,
                            target.revision,
                            self.policy.readiness_timeout.as_secs()
                        );
                        self.fail_rollback(rb, msg);
                        return;
                    }
                    if rb.phase != RollbackPhase::RestoringImages {
                        rb.phase = RollbackPhase::RestoringImages;
                        self.status.rollback = Some(rb);
                    }
                    self.apply = Some(template);
                    self.recheck_at(Some(deadline));
                }
            }
            RollbackPhase::Verifying | RollbackPhase::MigratingDownAfter => {
                if !workload_runs(workload, &template) {
                    // Someone changed the Deployment under a rollback: put the target back.
                    self.apply = Some(template);
                }
                self.verify(rb, &target, workload);
            }
            RollbackPhase::Succeeded | RollbackPhase::Failed => {}
        }
    }

    /// End a rollback that cannot go on: Failed, recorded, Stalled with `message`.
    fn fail_rollback(&mut self, mut rb: Rollback, message: String) {
        rb.phase = RollbackPhase::Failed;
        rb.completed_at = Some(Time(self.now));
        rb.duration_seconds =
            Some((self.now.as_millisecond() - rb.detected_at.0.as_millisecond()) as f64 / 1000.0);
        self.status.rollback = Some(rb.clone());
        self.status.rollbacks.insert(0, rb.clone());
        self.status.rollbacks.truncate(policy::ROLLBACKS_KEPT);
        self.finished = Some(rb);
        self.stall(reason::ROLLBACK_FAILED, message);
    }

    fn verify(&mut self, mut rb: Rollback, target: &Revision, workload: &Workload) {
        let ready = self
            .input
            .observed
            .pods
            .iter()
            .filter(|p| p.revision == Some(target.revision) && !p.terminating && p.ready)
            .count() as i32;
        let done = workload.template_revision == Some(target.revision)
            && workload.rolled_out()
            && ready >= workload.replicas;
        let restored_at = rb.images_restored_at.as_ref().map_or(self.now, |t| t.0);
        let deadline = add(restored_at, self.policy.readiness_timeout);
        if !done && self.now < deadline {
            let msg = format!(
                "rolling back to {} (revision {}): {} of {} replicas available",
                target.version, target.revision, workload.available, workload.replicas
            );
            self.set_phase(Phase::RollingBack, reason::ROLLING_BACK, msg);
            self.status.rollback = Some(rb);
            self.recheck_at(Some(deadline));
            return;
        }
        rb.completed_at = Some(Time(self.now));
        rb.duration_seconds =
            Some((self.now.as_millisecond() - rb.detected_at.0.as_millisecond()) as f64 / 1000.0);
        let from_version = rb.from.version.clone();
        self.status.revision = Some(target.revision);
        self.status.version = Some(target.version.clone());
        if done && let Some(t) = self.entry_mut(target.revision) {
            t.outcome = Outcome::Healthy;
        }
        if self
            .status
            .blocked
            .as_ref()
            .is_some_and(|b| b.version == target.version)
        {
            self.status.blocked = None;
        }
        if self.release.spec.version == from_version {
            self.status.blocked = Some(Blocked {
                version: from_version.clone(),
                reason: format!("rolled back ({}): {}", rb.trigger.as_str(), rb.reason),
                since: Time(self.now),
            });
        }
        if done {
            rb.phase = RollbackPhase::Succeeded;
            let msg = format!(
                "rolled back from {} (revision {}) to {} (revision {}) in {:.1}s after {}: {}",
                rb.from.version,
                rb.from.revision,
                target.version,
                target.revision,
                rb.duration_seconds.unwrap_or_default(),
                rb.trigger.as_str(),
                rb.message
            );
            self.note(false, reason::ROLLBACK_SUCCEEDED, msg.clone());
            let blocked = self.release.spec.version == from_version;
            let status_msg = if blocked {
                format!(
                    "{msg}. {from_version} is blocked: change spec.version or set the {} annotation to try it again",
                    labels::RETRY
                )
            } else {
                msg
            };
            match self.status.blocked.clone().filter(|_| blocked) {
                Some(b) => {
                    let m = format!(
                        "{} is blocked ({}); running {}. Change spec.version or set the {} annotation to try it again",
                        b.version,
                        b.reason,
                        target.version,
                        labels::RETRY
                    );
                    self.set_phase(Phase::RolledBack, reason::ROLLED_BACK, m);
                }
                None => self.set_phase(Phase::RolledBack, reason::ROLLED_BACK, status_msg.clone()),
            }
            self.condition(
                conditions::ROLLED_BACK,
                true,
                reason::ROLLED_BACK,
                status_msg,
            );
        } else {
            rb.phase = RollbackPhase::Failed;
            let msg = format!(
                "rollback to {} (revision {}) did not become available within {}s: {} of {} replicas available; a person must look",
                target.version,
                target.revision,
                self.policy.readiness_timeout.as_secs(),
                workload.available,
                workload.replicas
            );
            self.note(true, reason::ROLLBACK_FAILED, msg.clone());
            self.set_phase(Phase::Failed, reason::ROLLBACK_FAILED, msg);
        }
        self.status.rollback = Some(rb.clone());
        self.status.rollbacks.insert(0, rb.clone());
        self.status.rollbacks.truncate(policy::ROLLBACKS_KEPT);
        self.finished = Some(rb);
        self.cap_history();
        // What waited for the rollback (a spec change, a retry, a request) is decided now.
        self.recheck_at(Some(self.now));
    }

    fn stay_rolled_back(&mut self, blocked: &Blocked, workload: &Workload) {
        if let Some(live) = self.live_index().map(|i| self.status.history[i].clone()) {
            let template = template_for(&live, workload, true);
            if !workload_runs(workload, &template) {
                self.apply = Some(template);
            }
        }
        let live = self.status.version.clone().unwrap_or_default();
        let msg = format!(
            "{} is blocked ({}); running {live}. Change spec.version or set the {} annotation to try it again",
            blocked.version,
            blocked.reason,
            labels::RETRY
        );
        let rolled_back_ok = self
            .status
            .rollback
            .as_ref()
            .is_none_or(|r| r.phase == RollbackPhase::Succeeded);
        if rolled_back_ok {
            self.set_phase(Phase::RolledBack, reason::ROLLED_BACK, msg);
        }
    }

    // ---- people asking ---------------------------------------------------------------------

    fn handle_retry(&mut self) {
        let value = self
            .release
            .annotations()
            .get(labels::RETRY)
            .filter(|v| !v.is_empty())
            .cloned();
        let handled = self.status.handled.get_or_insert_with(Handled::default);
        match value {
            None => handled.retry = None,
            Some(v) if handled.retry.as_ref() != Some(&v) => {
                handled.retry = Some(v);
                if let Some(b) = self.status.blocked.take() {
                    self.note(
                        false,
                        reason::RETRY,
                        format!(
                            "{} unblocked by {}; Rewind will deploy it again",
                            b.version,
                            labels::RETRY
                        ),
                    );
                }
            }
            Some(_) => {}
        }
        self.tidy_handled();
    }

    fn tidy_handled(&mut self) {
        if self
            .status
            .handled
            .as_ref()
            .is_some_and(|h| *h == Handled::default())
        {
            self.status.handled = None;
        }
    }

    /// Act on `rewind.dev/rollback-to` (Release first, then Deployment), once per distinct
    /// value. Returns true when a rollback started.
    fn handle_manual_rollback(&mut self, workload: &Workload) -> bool {
        let on_release = self
            .release
            .annotations()
            .get(labels::ROLLBACK_TO)
            .filter(|v| !v.is_empty())
            .cloned();
        let on_target = workload.rollback_to.clone();
        for (value, from_target) in [(on_release, false), (on_target, true)] {
            let handled = self.status.handled.get_or_insert_with(Handled::default);
            let slot = if from_target {
                &mut handled.target_rollback_to
            } else {
                &mut handled.rollback_to
            };
            let Some(value) = value else {
                *slot = None;
                continue;
            };
            if slot.as_ref() == Some(&value) {
                continue;
            }
            *slot = Some(value.clone());
            let source = if from_target {
                format!(
                    "annotation {} on Deployment {}",
                    labels::ROLLBACK_TO,
                    self.release.spec.target.name
                )
            } else {
                format!("annotation {} on the Release", labels::ROLLBACK_TO)
            };
            match self.resolve_manual_target(&value) {
                Err((why, msg)) => {
                    let msg = format!(
                        "rollback to {value:?} ({source}) refused: {msg}; nothing was changed"
                    );
                    self.condition(conditions::MANUAL_ROLLBACK, false, why, msg.clone());
                    self.note(true, why, msg);
                }
                Ok((from, to)) => {
                    let requested_by = if from_target {
                        workload.requested_by.clone()
                    } else {
                        self.release
                            .annotations()
                            .get(labels::REQUESTED_BY)
                            .cloned()
                    };
                    let who = requested_by
                        .clone()
                        .unwrap_or_else(|| "an unnamed user".into());
                    let message = format!("{who} asked for {value} ({source})");
                    self.condition(
                        conditions::MANUAL_ROLLBACK,
                        true,
                        reason::ACCEPTED,
                        message.clone(),
                    );
                    let now = self.now;
                    if let Some(e) = self.entry_mut(from.revision) {
                        if e.outcome != Outcome::Failed {
                            e.outcome = Outcome::RolledBack;
                        }
                        e.failure.get_or_insert(Failure {
                            trigger: Trigger::Manual,
                            reason: "ManualRollback".into(),
                            message: message.clone(),
                            at: Time(now),
                        });
                    }
                    self.tidy_handled();
                    self.start_rollback(
                        &from,
                        &to,
                        Trigger::Manual,
                        "ManualRollback",
                        message,
                        self.now,
                        requested_by,
                        workload,
                    );
                    return true;
                }
            }
        }
        self.tidy_handled();
        false
    }

    /// The live revision and the revision `value` names, or why not.
    fn resolve_manual_target(
        &self,
        value: &str,
    ) -> Result<(Revision, Revision), (&'static str, String)> {
        let live = self
            .live_index()
            .map(|i| self.status.history[i].clone())
            .ok_or((
                reason::UNKNOWN_VERSION,
                "nothing has been deployed yet".to_owned(),
            ))?;
        let target = if value == labels::PREVIOUS {
            choose_target(
                &self.status.history,
                live.revision,
                RollbackTarget::LastHealthy,
            )
            .ok_or((
                reason::UNKNOWN_VERSION,
                format!(
                    "no healthy revision before {} (revision {}) with recorded digests",
                    live.version, live.revision
                ),
            ))?
        } else {
            let known: Vec<&str> = self
                .status
                .history
                .iter()
                .map(|r| r.version.as_str())
                .collect();
            self.status
                .history
                .iter()
                .filter(|r| r.version == value)
                .max_by_key(|r| r.revision)
                .cloned()
                .ok_or((
                    reason::UNKNOWN_VERSION,
                    format!(
                        "no revision of {value} in history (known: {})",
                        known.join(", ")
                    ),
                ))?
        };
        if target.revision == live.revision {
            return Err((
                reason::ALREADY_RUNNING,
                format!(
                    "{} (revision {}) is what runs now",
                    target.version, target.revision
                ),
            ));
        }
        if target.healthy_at.is_none() || target.outcome == Outcome::Failed {
            return Err((
                reason::TARGET_NOT_HEALTHY,
                format!(
                    "{} (revision {}) was never healthy ({:?})",
                    target.version, target.revision, target.outcome
                ),
            ));
        }
        if let Some(i) = target.images.iter().find(|i| i.digest.is_none()) {
            return Err((
                reason::DIGESTS_UNKNOWN,
                format!(
                    "{} (revision {}) has no recorded digest for container {}; Rewind only restores pinned bits",
                    target.version, target.revision, i.container
                ),
            ));
        }
        Ok((live, target))
    }

    /// Keep the newest `historyLimit` revisions, never dropping the live one or a rollback's.
    fn cap_history(&mut self) {
        let limit = self.policy.history_limit;
        let live = self.status.revision;
        let target = |t| {
            live.and_then(|l| choose_target(&self.status.history, l, t))
                .map(|r| r.revision)
        };
        let keep: Vec<i64> = [
            live,
            self.in_flight().map(|r| r.to.revision),
            self.in_flight().map(|r| r.from.revision),
            target(RollbackTarget::LastHealthy),
            target(self.policy.target),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.status
            .history
            .sort_by_key(|r| std::cmp::Reverse(r.revision));
        while self.status.history.len() > limit {
            match self
                .status
                .history
                .iter()
                .rposition(|r| !keep.contains(&r.revision))
            {
                Some(i) => {
                    self.status.history.remove(i);
                }
                None => break,
            }
        }
    }
}

/// How long a Strict policy waits before asking the registry again.
const STRICT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// The live revision in `status` runs something other than `spec` (or nothing runs yet).
fn spec_differs(status: &ReleaseStatus, spec: &crate::api::ReleaseSpec) -> bool {
    let Some(live) = status
        .revision
        .and_then(|n| status.history.iter().find(|r| r.revision == n))
    else {
        return true;
    };
    live.version != spec.version
        || live.images.len() != spec.images.len()
        || spec.images.iter().any(|s| {
            !live
                .images
                .iter()
                .any(|l| l.container == s.container && l.image == s.image)
        })
}

/// A digest Rewind already knows for `image` of `container` at `version`: in the reference
/// itself, or recorded for the same version and image in history.
fn known_digest(
    history: &[Revision],
    version: &str,
    container: &str,
    image: &str,
) -> Option<(String, Option<DigestSource>)> {
    if let Some(d) = ImageRef::parse(image).digest.filter(|d| is_digest(d)) {
        return Some((d.to_owned(), Some(DigestSource::Reference)));
    }
    history
        .iter()
        .filter(|r| r.version == version)
        .flat_map(|r| r.images.iter())
        .find(|p| p.container == container && p.image == image && p.digest.is_some())
        .map(|p| (p.digest.clone().unwrap_or_default(), p.resolved_from))
}

/// The image references the registry must be asked about before planning: those of a spec
/// about to be deployed whose digest is not already known. Empty when nothing will deploy.
pub fn images_to_resolve(release: &Release) -> Vec<String> {
    let spec = &release.spec;
    let status = release.status.clone().unwrap_or_default();
    let in_flight = status
        .rollback
        .as_ref()
        .is_some_and(|r| !r.phase.is_finished());
    // A new rewind.dev/retry value unblocks the version in this very plan: look it up too.
    let retry = release
        .annotations()
        .get(labels::RETRY)
        .filter(|v| !v.is_empty());
    let retry_pending =
        retry.is_some() && retry != status.handled.as_ref().and_then(|h| h.retry.as_ref());
    let blocked = !retry_pending
        && status
            .blocked
            .as_ref()
            .is_some_and(|b| b.version == spec.version);
    if spec.paused || in_flight || blocked || !spec_differs(&status, spec) {
        return Vec::new();
    }
    spec.images
        .iter()
        .filter(|i| known_digest(&status.history, &spec.version, &i.container, &i.image).is_none())
        .map(|i| i.image.clone())
        .collect()
}

/// The digest every pod in `pods` reports for `container`, if they report one and agree.
fn agreed_digest(pods: &[&PodView], container: &str) -> Option<String> {
    let mut found: Option<&str> = None;
    for c in pods
        .iter()
        .flat_map(|p| p.containers.iter())
        .filter(|c| c.name == container)
    {
        match (found, c.digest.as_deref()) {
            (_, None) => {}
            (None, Some(d)) => found = Some(d),
            (Some(f), Some(d)) if f != d => return None,
            _ => {}
        }
    }
    found.map(String::from)
}

/// The revision to roll back to from `failed`.
pub fn choose_target(
    history: &[Revision],
    failed: i64,
    target: RollbackTarget,
) -> Option<Revision> {
    let usable = |r: &&Revision| {
        r.healthy_at.is_some()
            && !matches!(r.outcome, Outcome::Failed | Outcome::RolledBack)
            && r.images.iter().all(|i| i.digest.is_some())
            && !r.images.is_empty()
    };
    let older = history.iter().filter(|r| r.revision < failed);
    match target {
        RollbackTarget::LastHealthy => older.filter(usable).max_by_key(|r| r.revision).cloned(),
        RollbackTarget::Previous => older.max_by_key(|r| r.revision).filter(usable).cloned(),
    }
}

/// The pod template for a revision: images pinned where the digest is known (`pin`), as
/// written otherwise.
pub fn template_for(entry: &Revision, workload: &Workload, pin: bool) -> Template {
    Template {
        revision: entry.revision,
        version: entry.version.clone(),
        containers: entry
            .images
            .iter()
            // A container removed from the Deployment since is not put back by a rollback.
            .filter(|i| workload.images.is_empty() || workload.images.contains_key(&i.container))
            .map(|i| {
                let image = match (&i.digest, pin) {
                    (Some(d), true) => ImageRef::parse(&i.image).pinned(d),
                    _ => i.image.clone(),
                };
                let init = workload.images.get(&i.container).is_some_and(|s| s.init);
                (i.container.clone(), image, init)
            })
            .collect(),
    }
}

/// The Deployment's template already carries `template`. An image counts as the same when it
/// is the same string or, for a pinned one, names the same digest (a mutating webhook may
/// rewrite the repository, for a mirror, and keep the digest).
fn workload_runs(workload: &Workload, template: &Template) -> bool {
    let same = |want: &str, have: &str| {
        want == have
            || ImageRef::parse(want)
                .digest
                .is_some_and(|d| ImageRef::parse(have).digest == Some(d))
    };
    workload.template_revision == Some(template.revision)
        && template.containers.iter().all(|(name, image, _)| {
            workload
                .images
                .get(name)
                .is_some_and(|s| same(image, &s.image))
        })
}

#[cfg(test)]
mod tests;
