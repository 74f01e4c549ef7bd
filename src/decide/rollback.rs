//! Failing and rolling back: what a failure leads to (cooldown, automatic off, no target, a
//! rollback), and the rollback state machine, persisted in `status.rollback`: restore images
//! (RestoringImages) → verify the rollout (Verifying) → Succeeded or Failed; then the failed
//! version stays blocked until the spec changes or a retry is asked.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{
    EventKind::{Normal, Warning},
    Template, conditions,
    deploy::{template_for, workload_runs},
    health::Failing,
    history::choose_target,
    migrate::Steps,
    plan::{Planner, add},
    policy,
    text::{MESSAGE_MAX, bounded},
    views::Workload,
};
use crate::{
    api::{
        Blocked, Failure, MigrationOrder, MigrationPhase, MigrationStep, Outcome, Phase, Revision,
        RevisionRef, Rollback, RollbackPhase, Trigger,
    },
    labels, reasons,
};

impl Planner<'_> {
    pub(super) fn on_failure(&mut self, idx: usize, f: Failing, workload: &Workload) {
        self.confirm = true;
        let live = self.status.history[idx].clone();
        let headline = format!(
            "{} (revision {}) failed: {}",
            live.version, live.revision, f.message
        );
        if let Some(until) = self.cooldown_until() {
            let msg = format!("{headline}; no automatic rollback until {until} (policy cooldown)");
            if self.status.phase != Some(Phase::Degraded) {
                self.note(Warning, reasons::COOLDOWN, msg.clone());
            }
            self.set_phase(Phase::Degraded, reasons::COOLDOWN, msg);
            self.recheck_at(Some(until));
            return;
        }
        {
            let e = &mut self.status.history[idx];
            e.outcome = Outcome::Failed;
            e.failure = Some(Failure {
                trigger: f.trigger,
                reason: f.reason.into(),
                message: bounded(&f.message, MESSAGE_MAX),
                at: Time(f.at),
            });
        }
        if !self.policy.automatic {
            let msg = format!("{headline}; automatic rollback is off in the policy");
            self.note(Warning, reasons::ROLLBACK_DISABLED, msg.clone());
            self.set_phase(Phase::Degraded, reasons::ROLLBACK_DISABLED, msg);
            return;
        }
        let Some(target) = choose_target(&self.status.history, live.revision, self.policy.target)
        else {
            let msg = format!(
                "{headline}; no earlier healthy revision with recorded digests to roll back to"
            );
            self.note(Warning, reasons::NO_ROLLBACK_TARGET, msg.clone());
            self.set_phase(Phase::Degraded, reasons::NO_ROLLBACK_TARGET, msg);
            return;
        };
        let mut crossing = match self.crossing(&live, &target) {
            Ok(c) => c,
            Err(why) => {
                let msg = format!(
                    "{headline}; no automatic rollback to {}: {why}",
                    target.version
                );
                self.note(Warning, reasons::MIGRATION_PATH_UNKNOWN, msg.clone());
                self.set_phase(Phase::Degraded, reasons::MIGRATION_PATH_UNKNOWN, msg);
                return;
            }
        };
        if !crossing.irreversible.is_empty() {
            if !self.policy.allow_irreversible {
                let versions = crossing.irreversible.join(",");
                let msg = format!(
                    "{headline}; no automatic rollback to {}: it would cross the irreversible migration of {versions} (reversible: false; policy migrations.irreversible: Halt). To roll back anyway, set the annotations {}: \"{versions}\" and {}: \"{}\" on the Release",
                    target.version,
                    labels::ALLOW_IRREVERSIBLE,
                    labels::ROLLBACK_TO,
                    target.version
                );
                self.note(Warning, reasons::IRREVERSIBLE_MIGRATION, msg.clone());
                self.set_phase(Phase::Degraded, reasons::IRREVERSIBLE_MIGRATION, msg);
                return;
            }
            crossing.skip_irreversible(&self.status.history);
        }
        self.start_rollback(
            &live,
            &target,
            f,
            Asked::default(),
            crossing.steps,
            workload,
        );
    }

    /// The end of the cooldown after the last automatic rollback, if it has not passed.
    pub(super) fn cooldown_until(&self) -> Option<Timestamp> {
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

    /// Start rolling back from `from` to `to` because of `cause` (a failure detected, or a
    /// person's request), undoing the schema changes in `steps` (newest first). Records the
    /// first phase with its side effect in one plan: MigratingDown with the first Job (order
    /// BeforeRollback and a Job to run), else RestoringImages with the restore.
    pub(super) fn start_rollback(
        &mut self,
        from: &Revision,
        to: &Revision,
        cause: Failing,
        asked: Asked,
        steps: Vec<MigrationStep>,
        workload: &Workload,
    ) {
        let Failing {
            trigger,
            reason: why,
            message,
            at: detected_at,
        } = cause;
        let uid = self.release.uid().unwrap_or_default();
        // The first 8 characters (not bytes: a uid is the API server's, but never slice
        // text Rewind did not write inside a character).
        let uid: String = uid.chars().take(8).collect();
        let message = bounded(&message, MESSAGE_MAX);
        let rollback = Rollback {
            id: format!(
                "{uid}-{}-{}-{}",
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
            requested_by: asked.by,
            request_reason: asked.reason,
            request_id: asked.id,
            phase: RollbackPhase::RestoringImages,
            job_name: None,
            migrations: steps,
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
        let mut rollback = rollback;
        let runnable = rollback
            .migrations
            .iter()
            .any(|s| s.phase == MigrationPhase::Pending);
        let msg = if rollback.migrations.is_empty() {
            msg
        } else {
            let steps: Vec<String> = rollback
                .migrations
                .iter()
                .map(|s| {
                    let how = if s.phase == MigrationPhase::Skipped {
                        " (crossed without a Job: no down command, or irreversible and allowed)"
                    } else {
                        ""
                    };
                    format!(
                        "{} schema {} → {}{how}",
                        s.version, s.from_schema_version, s.to_schema_version
                    )
                })
                .collect();
            let when = match self.policy.migration_order {
                MigrationOrder::BeforeRollback => "before",
                MigrationOrder::AfterRollback => "after",
            };
            format!(
                "{msg}; down migrations {when} the images are restored: {}",
                steps.join(", ")
            )
        };
        self.note(Warning, reasons::ROLLBACK_STARTED, msg.clone());
        self.set_phase(Phase::RollingBack, reasons::ROLLING_BACK, msg);
        if runnable && self.policy.migration_order == MigrationOrder::BeforeRollback {
            // The phase and the first Job's name are written with this status, before the
            // Job is created; the Deployment is not touched until every step completed.
            rollback.phase = RollbackPhase::MigratingDown;
            self.status.rollback = Some(rollback);
            self.continue_rollback(workload);
            return;
        }
        self.status.rollback = Some(rollback);
        // The phase (RestoringImages) is written with this status, before the patch.
        self.apply = Some(template_for(to, workload, true));
        self.recheck_at(Some(add(self.now, self.policy.readiness_timeout)));
    }

    pub(super) fn continue_rollback(&mut self, workload: &Workload) {
        let Some(mut rb) = self.in_flight().cloned() else {
            return;
        };
        let Some(target) = self.entry(rb.to.revision).cloned() else {
            let msg = format!(
                "rollback {} lost its target revision {} from history",
                rb.id, rb.to.revision
            );
            self.fail_rollback(rb, reasons::ROLLBACK_FAILED, msg);
            return;
        };
        let template = template_for(&target, workload, true);
        match rb.phase {
            RollbackPhase::MigratingDown => match self.run_steps(&mut rb) {
                Steps::Halted => {}
                Steps::Waiting => {
                    let msg = migrating_message(&rb, "before restoring the images");
                    self.set_phase(Phase::RollingBack, reasons::MIGRATING_DOWN, msg);
                    self.status.rollback = Some(rb);
                }
                Steps::Done => {
                    rb.phase = RollbackPhase::RestoringImages;
                    self.restore(rb, &target, template, workload);
                }
            },
            RollbackPhase::Pending | RollbackPhase::RestoringImages => {
                self.restore(rb, &target, template, workload);
            }
            RollbackPhase::Verifying => {
                if !workload_runs(workload, &template) {
                    // Someone changed the Deployment under a rollback: put the target back.
                    self.apply = Some(template);
                }
                self.verify(rb, &target, workload);
            }
            RollbackPhase::MigratingDownAfter => {
                if !workload_runs(workload, &template) {
                    self.apply = Some(template);
                }
                match self.run_steps(&mut rb) {
                    Steps::Halted => {}
                    Steps::Waiting => {
                        let msg = migrating_message(&rb, "after restoring the images");
                        self.set_phase(Phase::RollingBack, reasons::MIGRATING_DOWN, msg);
                        self.status.rollback = Some(rb);
                    }
                    Steps::Done => self.succeed(rb, &target),
                }
            }
            RollbackPhase::Succeeded | RollbackPhase::Failed => {}
        }
    }

    /// Restore the target's images (RestoringImages), then verify once the Deployment runs
    /// them.
    fn restore(
        &mut self,
        mut rb: Rollback,
        target: &Revision,
        template: Template,
        workload: &Workload,
    ) {
        if workload_runs(workload, &template) {
            rb.phase = RollbackPhase::Verifying;
            rb.images_restored_at = Some(Time(self.now));
            self.note(
                Normal,
                reasons::IMAGES_RESTORED,
                format!(
                    "Deployment {} runs {} (revision {}) again; verifying the rollout",
                    self.release.spec.target.name, target.version, target.revision
                ),
            );
            self.status.rollback = Some(rb.clone());
            self.verify(rb, target, workload);
            return;
        }
        // From when the restore began: after the down migrations, when they ran first.
        let since = rb
            .migrations
            .iter()
            .filter_map(|s| s.job.as_ref()?.completed_at.as_ref())
            .map(|t| t.0)
            .chain(rb.started_at.as_ref().map(|t| t.0))
            .max()
            .unwrap_or(self.now);
        let deadline = self.clock().due(since, self.policy.readiness_timeout);
        if self.clock().passed(deadline) {
            // The Deployment never showed the target's images (an apply that keeps failing,
            // or a webhook rewriting images): stop and ask for a person.
            let msg = format!(
                "rollback {} could not restore {} (revision {}) within {}s: the Deployment does not run its images; a person must look",
                rb.id,
                target.version,
                target.revision,
                self.policy.readiness_timeout.as_secs()
            );
            self.fail_rollback(rb, reasons::ROLLBACK_FAILED, msg);
            return;
        }
        // Also when the phase says otherwise: a pause lifted mid-restore left it Paused.
        if rb.phase != RollbackPhase::RestoringImages
            || self.status.rollback.as_ref() != Some(&rb)
            || self.status.phase != Some(Phase::RollingBack)
        {
            let msg = format!(
                "rolling back {} (revision {}) to {} (revision {}): restoring the images",
                rb.from.version, rb.from.revision, target.version, target.revision
            );
            rb.phase = RollbackPhase::RestoringImages;
            self.set_phase(Phase::RollingBack, reasons::ROLLING_BACK, msg);
            self.status.rollback = Some(rb);
        }
        self.apply = Some(template);
        self.recheck_at(Some(deadline));
    }

    /// End a rollback that cannot go on: Failed, recorded, Stalled with `reason` and `message`.
    pub(super) fn fail_rollback(
        &mut self,
        mut rb: Rollback,
        reason: &'static str,
        message: String,
    ) {
        self.confirm = true;
        rb.phase = RollbackPhase::Failed;
        rb.completed_at = Some(Time(self.now));
        rb.duration_seconds = Some(seconds_between(rb.detected_at.0, self.now));
        self.status.rollback = Some(rb.clone());
        self.status.rollbacks.insert(0, rb.clone());
        self.status.rollbacks.truncate(policy::ROLLBACKS_KEPT);
        self.finished = Some(rb);
        self.stall(reason, message);
    }

    pub(super) fn verify(&mut self, mut rb: Rollback, target: &Revision, workload: &Workload) {
        let ready = self
            .input
            .observed
            .pods
            .iter()
            .filter(|p| p.revision == Some(target.revision) && !p.terminating && p.ready)
            .count();
        let done = workload.template_revision == Some(target.revision)
            && workload.rolled_out()
            && i64::try_from(ready).unwrap_or(i64::MAX) >= i64::from(workload.replicas);
        let restored_at = rb.images_restored_at.as_ref().map_or(self.now, |t| t.0);
        let deadline = self.clock().due(restored_at, self.policy.readiness_timeout);
        if !done && !self.clock().passed(deadline) {
            let msg = format!(
                "rolling back to {} (revision {}): {} of {} replicas available",
                target.version, target.revision, workload.available, workload.replicas
            );
            self.set_phase(Phase::RollingBack, reasons::ROLLING_BACK, msg);
            self.status.rollback = Some(rb);
            self.recheck_at(Some(deadline));
            return;
        }
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
        if done
            && rb
                .migrations
                .iter()
                .any(|s| s.phase == MigrationPhase::Pending)
        {
            // Order AfterRollback: the target runs and is verified; now its down migrations.
            rb.phase = RollbackPhase::MigratingDownAfter;
            match self.run_steps(&mut rb) {
                Steps::Halted => return,
                Steps::Waiting => {
                    let msg = migrating_message(&rb, "after restoring the images");
                    self.set_phase(Phase::RollingBack, reasons::MIGRATING_DOWN, msg);
                    self.status.rollback = Some(rb);
                    return;
                }
                Steps::Done => {}
            }
        }
        if done {
            self.succeed(rb, target);
            return;
        }
        {
            rb.completed_at = Some(Time(self.now));
            rb.duration_seconds = Some(seconds_between(rb.detected_at.0, self.now));
            self.confirm = true;
            rb.phase = RollbackPhase::Failed;
            let msg = format!(
                "rollback to {} (revision {}) did not become available within {}s: {} of {} replicas available; a person must look",
                target.version,
                target.revision,
                self.policy.readiness_timeout.as_secs(),
                workload.available,
                workload.replicas
            );
            self.note(Warning, reasons::ROLLBACK_FAILED, msg.clone());
            self.set_phase(Phase::Failed, reasons::ROLLBACK_FAILED, msg);
        }
        self.record_finished(rb);
    }

    /// The rollback reached its target and every down migration ran: Succeeded.
    fn succeed(&mut self, mut rb: Rollback, target: &Revision) {
        rb.completed_at = Some(Time(self.now));
        rb.duration_seconds = Some(seconds_between(rb.detected_at.0, self.now));
        let from_version = rb.from.version.clone();
        {
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
            self.note(Normal, reasons::ROLLBACK_SUCCEEDED, msg.clone());
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
                    self.set_phase(Phase::RolledBack, reasons::ROLLED_BACK, m);
                }
                None => self.set_phase(Phase::RolledBack, reasons::ROLLED_BACK, status_msg.clone()),
            }
            self.condition(
                conditions::ROLLED_BACK,
                true,
                reasons::ROLLED_BACK,
                status_msg,
            );
        }
        self.record_finished(rb);
    }

    /// Record a finished rollback in status and the audit list.
    fn record_finished(&mut self, rb: Rollback) {
        self.status.rollback = Some(rb.clone());
        self.status.rollbacks.insert(0, rb.clone());
        self.status.rollbacks.truncate(policy::ROLLBACKS_KEPT);
        self.finished = Some(rb);
        self.cap_history();
        // What waited for the rollback (a spec change, a retry, a request) is decided now.
        self.recheck_at(Some(self.now));
    }

    pub(super) fn stay_rolled_back(&mut self, blocked: &Blocked, workload: &Workload) {
        if let Some(failure) = self.gate_failure(&blocked.version) {
            // Blocked at its up migration: it never ran; say so, as when it failed.
            let reason = match failure.reason.as_str() {
                r if r == reasons::MIGRATION_TIMED_OUT => reasons::MIGRATION_TIMED_OUT,
                r if r == reasons::MIGRATION_JOB_DELETED => reasons::MIGRATION_JOB_DELETED,
                _ => reasons::MIGRATION_FAILED,
            };
            self.stall(reason, failure.message);
            return;
        }
        if let Some(live) = self.live_index().map(|i| self.status.history[i].clone()) {
            if self.contest(&live, workload) {
                // A GitOps tool rolling the blocked version out again, say: put back, or stop.
                return;
            }
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
            self.set_phase(Phase::RolledBack, reasons::ROLLED_BACK, msg);
        }
    }
}

/// The phase message while down migrations run: which Job, which step.
fn migrating_message(rb: &Rollback, when: &str) -> String {
    let running = rb
        .migrations
        .iter()
        .find(|s| s.phase == MigrationPhase::Running);
    match running {
        Some(s) => format!(
            "rolling back {} to {}: down migration of {} (schema {} → {}) runs as Job {} {when}",
            rb.from.version,
            rb.to.version,
            s.version,
            s.from_schema_version,
            s.to_schema_version,
            s.job.as_ref().map_or("?", |j| j.name.as_str())
        ),
        None => format!(
            "rolling back {} to {}: down migrations {when}",
            rb.from.version, rb.to.version
        ),
    }
}

/// Seconds from `from` to `to` (0 if `to` is earlier), at millisecond precision.
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    let ms = to
        .as_millisecond()
        .saturating_sub(from.as_millisecond())
        .max(0);
    // Any span between two timestamps is under 2^53 ms, exact as an f64.
    ms as f64 / 1000.0
}

/// Who asked for a manual rollback and why, both bounded already; nobody for an automatic one.
#[derive(Clone, Debug, Default)]
pub(super) struct Asked {
    /// `rewind.dev/requested-by` (on the Release or the Deployment).
    pub(super) by: Option<String>,
    /// `rewind.dev/reason` on the Release.
    pub(super) reason: Option<String>,
    /// `rewind.dev/request-id` on the Release (bounded).
    pub(super) id: Option<String>,
}
