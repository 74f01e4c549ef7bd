//! The planner: what a decision looks at, what it has decided so far, and `run`, which picks
//! the one thing to do this time (in order: paused, claimed target, missing Deployment, a
//! rollback in flight, policy error, unknown containers, requests, adoption, blocked version,
//! a new spec, guarding what runs).

use jiff::Timestamp;
use kube::ResourceExt;

use super::{
    EventKind::{self, Normal, Warning},
    Input, Note, Plan, Policy, Template,
    clock::Clock,
    conditions,
    deploy::spec_differs,
    text::{MESSAGE_MAX, bounded},
};
use crate::{
    api::{Phase, PinnedImage, Release, ReleaseStatus, Revision, Rollback},
    image::ImageRef,
    reasons,
};

/// One decision in the making: the status being built, and what to do.
pub(super) struct Planner<'a> {
    pub(super) input: &'a Input<'a>,
    pub(super) release: &'a Release,
    pub(super) policy: &'a Policy,
    pub(super) now: Timestamp,
    pub(super) generation: i64,
    pub(super) status: ReleaseStatus,
    pub(super) apply: Option<Template>,
    pub(super) events: Vec<Note>,
    pub(super) recheck: Option<Timestamp>,
    pub(super) finished: Option<Rollback>,
    pub(super) lookups: Vec<String>,
    pub(super) confirm: bool,
    pub(super) jobs: Vec<super::JobRequest>,
    pub(super) migrations_ended: Vec<(&'static str, &'static str)>,
}

pub(super) use super::clock::add;

/// `container=image` for each image, pinned where the digest is known, for messages.
pub(super) fn images_summary(images: &[PinnedImage]) -> String {
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
    pub(super) fn new(input: &'a Input<'a>) -> Self {
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
            lookups: Vec::new(),
            confirm: false,
            jobs: Vec::new(),
            migrations_ended: Vec::new(),
        }
    }

    pub(super) fn finish(self) -> Plan {
        Plan {
            status: self.status,
            apply: self.apply,
            events: self.events,
            recheck: self.recheck,
            finished: self.finished,
            lookups: self.lookups,
            confirm: self.confirm,
            jobs: self.jobs,
            migrations_ended: self.migrations_ended,
        }
    }

    pub(super) fn note(
        &mut self,
        kind: EventKind,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.events.push(Note {
            kind,
            reason,
            message: bounded(&message.into(), MESSAGE_MAX),
            job: None,
        });
    }

    /// An Event about migration Job `job`.
    pub(super) fn note_job(
        &mut self,
        kind: EventKind,
        reason: &'static str,
        message: impl Into<String>,
        job: &str,
    ) {
        self.note(kind, reason, message);
        if let Some(n) = self.events.last_mut() {
            n.job = Some(job.to_owned());
        }
    }

    /// Set a condition at this plan's generation and time.
    pub(super) fn condition(
        &mut self,
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
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

    pub(super) fn recheck_at(&mut self, at: Option<Timestamp>) {
        self.recheck = match (self.recheck, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Set phase and the kstatus trio consistently.
    pub(super) fn set_phase(&mut self, phase: Phase, reason: &str, message: impl Into<String>) {
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
                reasons::AS_EXPECTED,
                "",
                g,
                now,
            );
        }
        self.status.phase = Some(phase);
    }

    /// Report a problem that needs a person, once (Event only when the reason changes).
    pub(super) fn stall(&mut self, reason: &'static str, message: String) {
        // Compared with the condition as stored, which is bounded.
        let message = bounded(&message, MESSAGE_MAX);
        let already = conditions::get(&self.status.conditions, conditions::STALLED)
            .is_some_and(|c| c.status == "True" && c.reason == reason && c.message == message);
        if !already {
            self.note(Warning, reason, message.clone());
        }
        self.set_phase(Phase::Failed, reason, message);
    }

    pub(super) fn run(&mut self) {
        let spec = &self.release.spec;
        if let Some(why) = super::paused(self.release) {
            let msg = bounded(
                &format!("{why}: Rewind neither deploys nor rolls back"),
                MESSAGE_MAX,
            );
            // Said once per pause, and again when who paused it (or why) changes.
            let said = self.status.phase == Some(Phase::Paused)
                && conditions::get(&self.status.conditions, conditions::READY)
                    .is_some_and(|c| c.message == msg);
            if !said {
                self.note(Normal, reasons::PAUSED, msg.clone());
            }
            self.set_phase(Phase::Paused, reasons::PAUSED, msg);
            return;
        }
        if self.status.phase == Some(Phase::Paused) {
            // The pause was lifted. Not every step below sets a phase (putting back an
            // overridden image does not): none may leave the Release said to be paused.
            self.set_phase(
                Phase::Progressing,
                reasons::PROGRESSING,
                "no longer paused: Rewind looks at the Release again",
            );
        }
        if let Some(other) = self.input.claimed_by.clone() {
            let msg = format!(
                "Deployment {} is already managed by Release {other}; a Deployment has one Release: delete this one or point it at another Deployment",
                spec.target.name
            );
            self.stall(reasons::TARGET_CLAIMED, msg);
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
            self.stall(reasons::TARGET_NOT_FOUND, msg);
            return;
        };
        self.bind_target(workload);
        if self.contest_holds() {
            // Another manager keeps changing the image: Rewind writes nothing to it.
            return;
        }
        if self.retry_halted() || self.in_flight().is_some() {
            self.continue_rollback(workload);
            return;
        }
        if let Some(err) = self.input.policy_error.clone() {
            self.stall(reasons::POLICY_ERROR, err.to_string());
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
            self.stall(reasons::CONTAINER_NOT_FOUND, msg);
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
        if let Some(idx) = self.gated_index() {
            // A revision waits for its up migration Job (or the spec moved on while it ran).
            self.continue_up(idx, workload);
            return;
        }
        if spec_differs(&self.status, spec) {
            self.deploy(workload);
            return;
        }
        self.guard_live(workload);
    }

    /// Time as this decision sees it: now, and the blind spans deadlines leave out.
    pub(super) fn clock(&self) -> Clock<'a> {
        Clock {
            now: self.now,
            blind: self.input.blind,
        }
    }

    pub(super) fn in_flight(&self) -> Option<&Rollback> {
        self.status
            .rollback
            .as_ref()
            .filter(|r| !r.phase.is_finished())
    }

    pub(super) fn live_index(&self) -> Option<usize> {
        let live = self.status.revision?;
        self.status.history.iter().position(|r| r.revision == live)
    }

    pub(super) fn entry(&self, revision: i64) -> Option<&Revision> {
        self.status.history.iter().find(|r| r.revision == revision)
    }

    pub(super) fn entry_mut(&mut self, revision: i64) -> Option<&mut Revision> {
        self.status
            .history
            .iter_mut()
            .find(|r| r.revision == revision)
    }
}
