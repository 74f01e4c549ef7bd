//! Migration Jobs. Two uses:
//! - the **up gate**: a new revision whose migration has an `up` command runs that Job first;
//!   the Deployment is not touched until it completes. The revision waits in history (outcome
//!   Pending, `migration.upJob` Running) while `status.revision` stays what runs.
//! - the **down steps** of a rollback: when the rollback's target needs another schema than
//!   the failing revision, the migrations between them are undone newest first, one Job at a
//!   time, each with the newer revision's own migration image (only it knows its down script).
//!   Which revisions are crossed follows `deployedOver` (what was live when each revision was
//!   deployed), so a revision that was already rolled back is not undone twice.
//!
//! Every Job is recorded in status (name, attempt, phase) before it is created, and its name is
//! deterministic, so creating it again after a restart finds the same Job: never two Jobs for
//! one step. A Job that fails, times out or is deleted stops the step and asks for a person;
//! nothing is retried on its own (`rewind.dev/retry` runs a new attempt, a new Job).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{
    EventKind::{Normal, Warning},
    plan::{Planner, add},
    text::{DETAIL_MAX, MESSAGE_MAX, NAME_MAX, bounded, bounded_key},
    views::{JobState, Workload},
};
use crate::{
    api::{
        Failure, MigrationCommand, MigrationJob, MigrationPhase, MigrationStep, Outcome, Phase,
        PinnedMigration, Revision, Rollback, RollbackPhase, Trigger,
    },
    image::ImageRef,
    labels, reasons,
};

/// Beyond a Job's own deadline (its `activeDeadlineSeconds`), how long Rewind waits for the
/// Job controller to end it before calling it timed out itself (a Job controller that is down,
/// a Job that was never created).
pub(super) const DEADLINE_GRACE: Duration = Duration::from_secs(60);

/// The longest a Job name may be: the Job controller puts it in the `job-name` label of the
/// Job's pods, and a label value has at most 63 characters.
const JOB_NAME_MAX: usize = 63;

/// Which migration a Job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationKind {
    /// Before a revision rolls out.
    Up,
    /// On a rollback across the revision's schema change.
    Down,
}

impl MigrationKind {
    /// `up` or `down`: the label value, and the metric's.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationKind::Up => "up",
            MigrationKind::Down => "down",
        }
    }
}

/// A migration Job to create: everything the controller needs to write it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    /// The Job's name (deterministic: the same step always gets the same name).
    pub name: String,
    /// Up or down.
    pub kind: MigrationKind,
    /// The revision whose migration runs.
    pub revision: i64,
    /// Its version.
    pub version: String,
    /// The rollback a down Job belongs to.
    pub rollback_id: Option<String>,
    /// The image to run, by digest when it is known.
    pub image: String,
    /// Command and arguments (the image's entrypoint when empty).
    pub command: MigrationCommand,
    /// `REWIND_*` variables, set before the revision's own environment.
    pub env: Vec<(String, String)>,
    /// The revision's migration (service account, environment, resources, pod annotations).
    pub migration: PinnedMigration,
    /// The Job's `activeDeadlineSeconds`.
    pub deadline: Duration,
}

/// What a followed Job says now.
enum Followed {
    /// Still running; look again by then.
    Waiting(Timestamp),
    /// It completed at this time.
    Succeeded(Timestamp),
    /// It failed, timed out or was deleted.
    Failed {
        /// The reason for conditions, Events and history.
        reason: &'static str,
        /// The metric's result label.
        result: &'static str,
        /// What happened, for a person.
        message: String,
    },
}

/// What the down steps of a rollback say after this plan.
pub(super) enum Steps {
    /// Every step succeeded or was skipped.
    Done,
    /// A Job runs.
    Waiting,
    /// A step failed: the rollback is halted (already recorded).
    Halted,
}

/// The schema changes a rollback crosses.
#[derive(Debug)]
pub(super) struct Crossing {
    /// The down steps, newest first.
    pub steps: Vec<MigrationStep>,
    /// Versions whose migration cannot be undone (`reversible: false`).
    pub irreversible: Vec<String>,
}

impl Crossing {
    /// Cross the irreversible migrations without a Job (a person or the policy allowed it).
    pub(super) fn skip_irreversible(&mut self, history: &[Revision]) {
        for step in &mut self.steps {
            if is_irreversible(history, step.revision) {
                step.phase = MigrationPhase::Skipped;
            }
        }
    }
}

/// The revision `revision`'s migration is marked `reversible: false`.
fn is_irreversible(history: &[Revision], revision: i64) -> bool {
    history
        .iter()
        .find(|r| r.revision == revision)
        .and_then(|r| r.migration.as_ref())
        .is_some_and(|m| !m.reversible)
}

/// The revision `rev` was deployed over: `deployedOver` when recorded (and older), else the
/// next older revision in history.
fn predecessor<'h>(history: &'h [Revision], rev: &Revision) -> Option<&'h Revision> {
    match rev.deployed_over {
        Some(n) if n < rev.revision => history.iter().find(|r| r.revision == n),
        Some(_) => None,
        None => history
            .iter()
            .filter(|r| r.revision < rev.revision)
            .max_by_key(|r| r.revision),
    }
}

/// The revisions from `from` down to `to` along `deployedOver` (both ends included; stops
/// where history does not go on).
pub(super) fn chain(history: &[Revision], from: i64, to: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut current = history.iter().find(|r| r.revision == from);
    while let Some(r) = current {
        out.push(r.revision);
        if r.revision <= to || out.len() > history.len() {
            break;
        }
        current = predecessor(history, r);
    }
    out
}

/// Revisions `a` and `b` (both in history) run with different schemas.
pub(super) fn schemas_differ(history: &[Revision], a: i64, b: i64) -> bool {
    let schema = |n: i64| {
        history
            .iter()
            .find(|r| r.revision == n)
            .map(|r| schema_of(history, r))
    };
    schema(a) != schema(b)
}

/// The schema a revision runs with: its own migration's, else (no migration declared) the one
/// it was deployed over. `None`: none declared down the chain.
pub(super) fn schema_of(history: &[Revision], rev: &Revision) -> Option<String> {
    let mut current = rev;
    // Each step goes to an older revision, so the walk ends within the history's length.
    for _ in 0..=history.len() {
        if let Some(m) = &current.migration {
            return Some(m.schema_version.clone());
        }
        current = predecessor(history, current)?;
    }
    None
}

/// The schema as text for messages and the Job's environment ("" when none is declared).
fn shown(schema: &Option<String>) -> String {
    schema.clone().unwrap_or_default()
}

/// The image a migration runs: pinned when the digest is known.
fn migration_image(m: &PinnedMigration) -> String {
    match &m.digest {
        Some(d) => ImageRef::parse(&m.image).pinned(d),
        None => m.image.clone(),
    }
}

/// A 64-bit FNV-1a hash: stable across builds and platforms (a Job's name must be the same
/// after a restart, and after an upgrade of Rewind).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `<release>-<kind>-<parts>-<hash>`, cut to fit 63 characters; the hash covers everything
/// that makes the step unique (the Release's uid, the parts and `salt`), so a cut name stays
/// unique and a retry (another salt) gets another name.
pub(super) fn job_name(
    release: &str,
    uid: &str,
    kind: MigrationKind,
    parts: &str,
    salt: &str,
) -> String {
    let hash = format!(
        "{:08x}",
        fnv1a(&format!("{uid}/{}/{parts}/{salt}", kind.as_str())) & 0xffff_ffff
    );
    let base = format!("{release}-{}-{parts}", kind.as_str());
    let room = JOB_NAME_MAX - hash.len() - 1;
    // Release names are DNS subdomains: ASCII, so cutting at a byte is cutting at a character.
    let cut: String = base.chars().take(room).collect();
    let cut = cut.trim_end_matches(['-', '.']);
    format!("{cut}-{hash}")
}

/// The `activeDeadlineSeconds` a Job is created with: the one recorded when its step started.
fn job_deadline(job: &MigrationJob, policy: Duration) -> Duration {
    job.deadline_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(policy, Duration::from_secs)
}

impl Planner<'_> {
    /// The policy's migration timeout in seconds, recorded with each Job.
    fn deadline_seconds(&self) -> i64 {
        i64::try_from(self.policy.migration_timeout.as_secs()).unwrap_or(i64::MAX)
    }

    /// Follow a Job this plan or an earlier one asked for. While it is not seen, ask for it
    /// again (creating it is idempotent by name): the cache may not have it yet.
    fn follow(&mut self, job: &mut MigrationJob, request: JobRequest) -> Followed {
        let started = job.started_at.as_ref().map_or(self.now, |t| t.0);
        // The deadline the Job was created with (the policy's may have changed since).
        let timeout = job
            .deadline_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.policy.migration_timeout, Duration::from_secs);
        let deadline = self.clock().due(started, timeout + DEADLINE_GRACE);
        let seen = self
            .input
            .observed
            .jobs
            .iter()
            .find(|j| j.name == job.name)
            .cloned();
        let Some(seen) = seen.filter(|j| !j.deleting) else {
            if job.uid.is_some() {
                // Seen before and gone now: deleted by someone. Not created again silently.
                self.confirm = true;
                return Followed::Failed {
                    reason: reasons::MIGRATION_JOB_DELETED,
                    result: "Deleted",
                    message: format!(
                        "Job {} was deleted before it finished; Rewind does not create it again on its own",
                        job.name
                    ),
                };
            }
            if self.clock().passed(deadline) {
                self.confirm = true;
                return Followed::Failed {
                    reason: reasons::MIGRATION_TIMED_OUT,
                    result: "TimedOut",
                    message: format!(
                        "Job {} was not seen running within {}s of being asked for (can Rewind create Jobs in this namespace?)",
                        job.name,
                        (timeout + DEADLINE_GRACE).as_secs()
                    ),
                };
            }
            self.jobs.push(request);
            return Followed::Waiting(deadline);
        };
        job.uid.get_or_insert_with(|| seen.uid.clone());
        match &seen.state {
            JobState::Running if self.clock().passed(deadline) => {
                self.confirm = true;
                Followed::Failed {
                    reason: reasons::MIGRATION_TIMED_OUT,
                    result: "TimedOut",
                    message: format!(
                        "Job {} did not finish within {}s (its deadline {}s, and the Job controller did not end it)",
                        job.name,
                        (timeout + DEADLINE_GRACE).as_secs(),
                        timeout.as_secs()
                    ),
                }
            }
            JobState::Running => Followed::Waiting(deadline),
            JobState::Succeeded { at } => Followed::Succeeded(*at),
            JobState::Failed {
                reason, message, ..
            } => {
                self.confirm = true;
                let timed_out = reason == "DeadlineExceeded";
                let said = seen
                    .termination_message
                    .as_deref()
                    .map(|m| format!("; the container said: {}", bounded(m.trim(), DETAIL_MAX)))
                    .unwrap_or_default();
                Followed::Failed {
                    reason: if timed_out {
                        reasons::MIGRATION_TIMED_OUT
                    } else {
                        reasons::MIGRATION_FAILED
                    },
                    result: if timed_out { "TimedOut" } else { "Failed" },
                    message: format!(
                        "Job {} {} ({}: {}){said}",
                        job.name,
                        if timed_out {
                            "ran past its deadline"
                        } else {
                            "failed"
                        },
                        bounded(reason, NAME_MAX),
                        bounded(message, DETAIL_MAX)
                    ),
                }
            }
        }
    }

    // ---- the up gate ------------------------------------------------------------------------

    /// The revision waiting for its up Job, if any (at most one: it is the newest).
    pub(super) fn gated_index(&self) -> Option<usize> {
        self.status.history.iter().position(|r| {
            r.migration
                .as_ref()
                .and_then(|m| m.up_job.as_ref())
                .is_some_and(|j| j.phase == MigrationPhase::Running)
        })
    }

    /// The revision a new one is deployed over, for its schema: a revision whose up migration
    /// ran but which never rolled out (the spec moved on meanwhile) changed the schema too.
    pub(super) fn schema_base(&self) -> Option<i64> {
        let live = self.status.revision;
        self.status
            .history
            .iter()
            .filter(|r| live.is_none_or(|l| r.revision > l))
            // Superseded while its up Job ran: never live. (A newer revision that was live and
            // was rolled back has its change undone already: Failed or RolledBack.)
            .filter(|r| r.outcome == Outcome::Superseded)
            .filter(|r| {
                r.migration
                    .as_ref()
                    .and_then(|m| m.up_job.as_ref())
                    .is_some_and(|j| j.phase == MigrationPhase::Succeeded)
            })
            .map(|r| r.revision)
            .max()
            .or(live)
    }

    /// The up Job of the revision at `idx`.
    fn up_request(&self, entry: &Revision, job: &MigrationJob) -> Option<JobRequest> {
        let m = entry.migration.as_ref()?;
        let up = m.up.clone().unwrap_or_default();
        let live = self.live_index().map(|i| &self.status.history[i]);
        // The schema the database is at: the revision this one is deployed over.
        let base = entry.deployed_over.and_then(|n| self.entry(n)).or(live);
        let from_schema = base.map(|b| shown(&schema_of(&self.status.history, b)));
        Some(JobRequest {
            name: job.name.clone(),
            kind: MigrationKind::Up,
            revision: entry.revision,
            version: entry.version.clone(),
            rollback_id: None,
            image: migration_image(m),
            command: up,
            env: vec![
                ("REWIND_RELEASE".into(), self.release.name_any()),
                ("REWIND_VERSION".into(), entry.version.clone()),
                ("REWIND_SCHEMA_VERSION".into(), m.schema_version.clone()),
                (
                    "REWIND_FROM_VERSION".into(),
                    live.map(|l| l.version.clone()).unwrap_or_default(),
                ),
                (
                    "REWIND_FROM_SCHEMA_VERSION".into(),
                    from_schema.unwrap_or_default(),
                ),
            ],
            migration: m.clone(),
            deadline: job_deadline(job, self.policy.migration_timeout),
        })
    }

    /// Start the up Job of the revision just put at `idx` (not live yet).
    pub(super) fn start_up(&mut self, idx: usize) {
        let entry = self.status.history[idx].clone();
        let Some(m) = entry.migration.as_ref() else {
            return;
        };
        let name = job_name(
            &self.release.name_any(),
            &self.release.uid().unwrap_or_default(),
            MigrationKind::Up,
            &format!("r{}", entry.revision),
            "1",
        );
        let job = MigrationJob {
            name: name.clone(),
            phase: MigrationPhase::Running,
            attempt: 1,
            uid: None,
            started_at: Some(Time(self.now)),
            completed_at: None,
            message: String::new(),
            deadline_seconds: Some(self.deadline_seconds()),
        };
        if let Some(request) = self.up_request(&entry, &job) {
            self.jobs.push(request);
        }
        let msg = format!(
            "running the up migration of {} (revision {}, schema {}) as Job {name} before the rollout; the Deployment is not changed until it completes",
            entry.version, entry.revision, m.schema_version
        );
        self.note_job(Normal, reasons::MIGRATING_UP, msg.clone(), &name);
        self.set_phase(Phase::Progressing, reasons::MIGRATING_UP, msg);
        if let Some(pm) = self.status.history[idx].migration.as_mut() {
            pm.up_job = Some(job);
        }
        self.recheck_at(Some(add(
            self.now,
            self.policy.migration_timeout + DEADLINE_GRACE,
        )));
    }

    /// Follow the up Job of the revision at `idx`: on success roll it out (when the spec still
    /// asks for it), on failure fail the revision and block its version.
    pub(super) fn continue_up(&mut self, idx: usize, workload: &Workload) {
        let entry = self.status.history[idx].clone();
        let Some(mut job) = entry.migration.as_ref().and_then(|m| m.up_job.clone()) else {
            return;
        };
        let wanted = !super::deploy::spec_differs_from(&entry, &self.release.spec);
        let request = self.up_request(&entry, &job);
        let followed = match request {
            Some(r) => self.follow(&mut job, r),
            None => return,
        };
        // A digest the Job's pod reports, when the registry gave none before.
        let reported = self
            .input
            .observed
            .jobs
            .iter()
            .find(|j| j.name == job.name)
            .and_then(|j| j.digest.clone());
        if let Some(pm) = self.status.history[idx].migration.as_mut()
            && pm.digest.is_none()
            && let Some(d) = reported
        {
            pm.digest = Some(d);
            pm.resolved_from = Some(crate::api::DigestSource::PodStatus);
        }
        let running_now = self
            .status
            .version
            .clone()
            .unwrap_or_else(|| "nothing".into());
        match followed {
            Followed::Waiting(deadline) => {
                let msg = if wanted {
                    format!(
                        "running the up migration of {} (revision {}) as Job {}; the Deployment still runs {running_now} until it completes",
                        entry.version, entry.revision, job.name
                    )
                } else {
                    format!(
                        "waiting for the up migration Job {} of {} to finish before deploying {}",
                        job.name, entry.version, self.release.spec.version
                    )
                };
                self.set_phase(Phase::Progressing, reasons::MIGRATING_UP, msg);
                self.set_up_job(idx, job);
                self.recheck_at(Some(deadline));
            }
            Followed::Succeeded(at) => {
                job.phase = MigrationPhase::Succeeded;
                job.completed_at = Some(Time(at));
                self.migrations_ended.push(("up", "Succeeded"));
                self.note_job(
                    Normal,
                    reasons::MIGRATION_SUCCEEDED,
                    format!(
                        "the up migration Job {} of {} (revision {}) completed",
                        job.name, entry.version, entry.revision
                    ),
                    &job.name,
                );
                self.set_up_job(idx, job);
                if wanted {
                    self.roll_out(idx, workload);
                } else {
                    // Its schema is applied but the spec moved on: it never rolls out, and the
                    // next revision is deployed over it (its down migration undoes it).
                    self.status.history[idx].outcome = Outcome::Superseded;
                    self.recheck_at(Some(self.now));
                }
            }
            Followed::Failed {
                reason,
                result,
                message,
            } => {
                job.phase = MigrationPhase::Failed;
                job.completed_at = Some(Time(self.now));
                job.message = bounded(&message, MESSAGE_MAX);
                self.migrations_ended.push(("up", result));
                let name = job.name.clone();
                self.set_up_job(idx, job);
                let text = format!(
                    "the up migration of {} (revision {}) did not complete: {message}. The Deployment was not changed and still runs {running_now}. Fix the cause, then set the {} annotation (or change spec.version) to try again",
                    entry.version,
                    entry.revision,
                    labels::RETRY
                );
                let failure = Failure {
                    trigger: Trigger::Migration,
                    reason: reason.into(),
                    message: bounded(&text, MESSAGE_MAX),
                    at: Time(self.now),
                };
                let e = &mut self.status.history[idx];
                e.outcome = Outcome::Failed;
                e.failure = Some(failure);
                if wanted {
                    self.status.blocked = Some(crate::api::Blocked {
                        version: entry.version.clone(),
                        reason: bounded(&format!("up migration failed: {message}"), MESSAGE_MAX),
                        since: Time(self.now),
                    });
                    self.stall(reason, text);
                    self.about_job(reason, &name);
                } else {
                    self.note_job(Warning, reason, text, &name);
                    self.recheck_at(Some(self.now));
                }
            }
        }
    }

    fn set_up_job(&mut self, idx: usize, job: MigrationJob) {
        if let Some(pm) = self.status.history[idx].migration.as_mut() {
            pm.up_job = Some(job);
        }
    }

    /// The blocked version failed at its up gate: the failure, to show again (same words as
    /// when it failed, so no second Event).
    pub(super) fn gate_failure(&self, version: &str) -> Option<Failure> {
        self.status
            .history
            .iter()
            .filter(|r| r.version == version)
            .max_by_key(|r| r.revision)
            .filter(|r| r.outcome == Outcome::Failed)
            .and_then(|r| r.failure.clone())
            .filter(|f| f.trigger == Trigger::Migration)
    }

    // ---- the down steps of a rollback ---------------------------------------------------------

    /// The schema changes a rollback from `from` to `to` crosses, newest first; an error (for
    /// a person) when history does not show how the schema got from `to`'s to `from`'s.
    pub(super) fn crossing(&self, from: &Revision, to: &Revision) -> Result<Crossing, String> {
        let history = &self.status.history;
        let target = schema_of(history, to);
        let mut crossing = Crossing {
            steps: Vec::new(),
            irreversible: Vec::new(),
        };
        let mut current = from;
        for _ in 0..=history.len() {
            let schema = schema_of(history, current);
            if schema == target {
                return Ok(crossing);
            }
            let Some(before) = predecessor(history, current) else {
                break;
            };
            let before_schema = schema_of(history, before);
            if schema != before_schema
                && let Some(m) = &current.migration
            {
                // Reversible without a down command: nothing to undo (an additive change the
                // older code runs with), crossed without a Job.
                let phase = if m.down.is_none() && m.reversible {
                    MigrationPhase::Skipped
                } else {
                    MigrationPhase::Pending
                };
                crossing.steps.push(MigrationStep {
                    revision: current.revision,
                    version: current.version.clone(),
                    to_revision: before.revision,
                    to_version: before.version.clone(),
                    from_schema_version: shown(&schema),
                    to_schema_version: shown(&before_schema),
                    image: migration_image(m),
                    job: None,
                    phase,
                });
                if !m.reversible {
                    crossing.irreversible.push(current.version.clone());
                }
            }
            current = before;
        }
        Err(format!(
            "history does not show how the schema went from {} ({}) to {} ({}), so Rewind cannot tell which down migrations to run",
            shown(&target),
            to.version,
            shown(&schema_of(history, from)),
            from.version
        ))
    }

    /// The down Job of step `i` of `rb`.
    fn down_request(&self, rb: &Rollback, i: usize, job: &MigrationJob) -> Option<JobRequest> {
        let step = rb.migrations.get(i)?;
        let m = self.entry(step.revision)?.migration.clone()?;
        Some(JobRequest {
            name: job.name.clone(),
            kind: MigrationKind::Down,
            revision: step.revision,
            version: step.version.clone(),
            rollback_id: Some(rb.id.clone()),
            image: step.image.clone(),
            command: m.down.clone().unwrap_or_default(),
            env: vec![
                ("REWIND_RELEASE".into(), self.release.name_any()),
                ("REWIND_ROLLBACK_ID".into(), rb.id.clone()),
                ("REWIND_FROM_VERSION".into(), step.version.clone()),
                ("REWIND_TARGET_VERSION".into(), step.to_version.clone()),
                (
                    "REWIND_FROM_SCHEMA_VERSION".into(),
                    step.from_schema_version.clone(),
                ),
                (
                    "REWIND_TARGET_SCHEMA_VERSION".into(),
                    step.to_schema_version.clone(),
                ),
            ],
            migration: m,
            deadline: job_deadline(job, self.policy.migration_timeout),
        })
    }

    /// Run the down steps of `rb` in order: start the first not started, follow the one
    /// running, go on to the next when it completes. A failed step halts the rollback.
    pub(super) fn run_steps(&mut self, rb: &mut Rollback) -> Steps {
        let total = rb
            .migrations
            .iter()
            .filter(|s| s.phase != MigrationPhase::Skipped)
            .count();
        for i in 0..rb.migrations.len() {
            match rb.migrations[i].phase {
                MigrationPhase::Succeeded | MigrationPhase::Skipped => continue,
                MigrationPhase::Failed => return Steps::Halted,
                MigrationPhase::Pending => {
                    let step = rb.migrations[i].clone();
                    let attempt = step.job.as_ref().map_or(1, |j| j.attempt.saturating_add(1));
                    let name = job_name(
                        &self.release.name_any(),
                        &self.release.uid().unwrap_or_default(),
                        MigrationKind::Down,
                        &format!("r{}-r{}", step.revision, step.to_revision),
                        &format!("{}/{attempt}", rb.id),
                    );
                    let job = MigrationJob {
                        name: name.clone(),
                        phase: MigrationPhase::Running,
                        attempt,
                        uid: None,
                        started_at: Some(Time(self.now)),
                        completed_at: None,
                        message: String::new(),
                        deadline_seconds: Some(self.deadline_seconds()),
                    };
                    if let Some(request) = self.down_request(rb, i, &job) {
                        self.jobs.push(request);
                    }
                    let n = rb.migrations[..=i]
                        .iter()
                        .filter(|s| s.phase != MigrationPhase::Skipped)
                        .count();
                    let retry = if attempt > 1 {
                        format!(", attempt {attempt}")
                    } else {
                        String::new()
                    };
                    self.note_job(
                        Normal,
                        reasons::MIGRATING_DOWN,
                        format!(
                            "running the down migration of {} (schema {} → {}, back to {}) as Job {name} ({n} of {total}{retry})",
                            step.version,
                            step.from_schema_version,
                            step.to_schema_version,
                            step.to_version
                        ),
                        &name,
                    );
                    let s = &mut rb.migrations[i];
                    s.job = Some(job);
                    s.phase = MigrationPhase::Running;
                    rb.job_name = Some(name);
                    self.recheck_at(Some(add(
                        self.now,
                        self.policy.migration_timeout + DEADLINE_GRACE,
                    )));
                    return Steps::Waiting;
                }
                MigrationPhase::Running => {
                    let Some(mut job) = rb.migrations[i].job.clone() else {
                        // Running without a Job recorded: start it (as Pending).
                        rb.migrations[i].phase = MigrationPhase::Pending;
                        return self.run_steps(rb);
                    };
                    let Some(request) = self.down_request(rb, i, &job) else {
                        let msg = format!(
                            "revision {} left history while its down migration ran; a person must look",
                            rb.migrations[i].revision
                        );
                        rb.migrations[i].phase = MigrationPhase::Failed;
                        self.halt(rb, reasons::MIGRATION_FAILED, msg);
                        return Steps::Halted;
                    };
                    rb.job_name = Some(job.name.clone());
                    match self.follow(&mut job, request) {
                        Followed::Waiting(deadline) => {
                            rb.migrations[i].job = Some(job);
                            self.recheck_at(Some(deadline));
                            return Steps::Waiting;
                        }
                        Followed::Succeeded(at) => {
                            job.phase = MigrationPhase::Succeeded;
                            job.completed_at = Some(Time(at));
                            self.migrations_ended.push(("down", "Succeeded"));
                            let step = &rb.migrations[i];
                            self.note_job(
                                Normal,
                                reasons::MIGRATION_SUCCEEDED,
                                format!(
                                    "the down migration Job {} of {} completed: schema {} → {}",
                                    job.name,
                                    step.version,
                                    step.from_schema_version,
                                    step.to_schema_version
                                ),
                                &job.name,
                            );
                            let s = &mut rb.migrations[i];
                            s.job = Some(job);
                            s.phase = MigrationPhase::Succeeded;
                        }
                        Followed::Failed {
                            reason,
                            result,
                            message,
                        } => {
                            job.phase = MigrationPhase::Failed;
                            job.completed_at = Some(Time(self.now));
                            job.message = bounded(&message, MESSAGE_MAX);
                            self.migrations_ended.push(("down", result));
                            let s = &mut rb.migrations[i];
                            s.job = Some(job);
                            s.phase = MigrationPhase::Failed;
                            let version = s.version.clone();
                            self.halt(
                                rb,
                                reason,
                                format!(
                                    "the down migration of {version} did not complete: {message}"
                                ),
                            );
                            return Steps::Halted;
                        }
                    }
                }
            }
        }
        Steps::Done
    }

    /// Halt a rollback whose migration step failed: nothing more happens on its own.
    fn halt(&mut self, rb: &mut Rollback, reason: &'static str, what: String) {
        let state = if rb.images_restored_at.is_some() {
            format!("runs {} again", rb.to.version)
        } else {
            format!("still runs {}", rb.from.version)
        };
        let message = format!(
            "rollback {} from {} to {} halted: {what}. The Deployment is left as it is ({state}) and nothing is retried on its own: look at the Job (kubectl describe job/{job}; kubectl logs job/{job} while its pod exists), fix the cause, then set the {retry} annotation to run it again as a new Job",
            rb.id,
            rb.from.version,
            rb.to.version,
            job = rb.job_name.as_deref().unwrap_or("?"),
            retry = labels::RETRY
        );
        self.fail_rollback(rb.clone(), reason, message);
        if let Some(job) = rb.job_name.as_deref() {
            self.about_job(reason, job);
        }
    }

    /// The Event just noted with `reason` (by `stall`) is about Job `job`.
    fn about_job(&mut self, reason: &'static str, job: &str) {
        if let Some(n) = self.events.last_mut().filter(|n| n.reason == reason) {
            n.job = Some(job.to_owned());
        }
    }

    /// `rewind.dev/retry` with a new value while the last rollback is halted at a failed
    /// migration step: open it again at that step (a new attempt, a new Job). Returns true
    /// when it did; the value is then used up (it unblocks nothing else).
    pub(super) fn retry_halted(&mut self) -> bool {
        let Some(value) = self
            .release
            .annotations()
            .get(labels::RETRY)
            .filter(|v| !v.is_empty())
            .cloned()
        else {
            return false;
        };
        let handled = self
            .status
            .handled
            .as_ref()
            .and_then(|h| h.retry.as_deref());
        if handled.is_some_and(|h| h == value || h == bounded_key(&value, NAME_MAX)) {
            return false;
        }
        let Some(mut rb) = self.status.rollback.clone().filter(|r| {
            r.phase == RollbackPhase::Failed
                && r.migrations
                    .iter()
                    .any(|s| s.phase == MigrationPhase::Failed)
        }) else {
            return false;
        };
        let live = if rb.images_restored_at.is_some() {
            rb.to.revision
        } else {
            rb.from.revision
        };
        if self.status.revision != Some(live) {
            // Something else happened since (a new spec, a manual rollback): not resumed.
            return false;
        }
        let still_running: Option<String> = rb
            .migrations
            .iter()
            .filter(|s| s.phase == MigrationPhase::Failed)
            .filter_map(|s| s.job.as_ref())
            .find(|j| {
                self.input.observed.jobs.iter().any(|seen| {
                    seen.name == j.name && !seen.deleting && seen.state == JobState::Running
                })
            })
            .map(|j| j.name.clone());
        if let Some(job) = still_running {
            // Rewind gave up on it by its own deadline, but it still runs: never two Jobs for
            // one step. The value is used up; set a new one once the Job has ended.
            self.status
                .handled
                .get_or_insert_with(Default::default)
                .retry = Some(bounded_key(&value, NAME_MAX));
            self.note_job(
                Warning,
                reasons::MIGRATION_RETRY,
                format!(
                    "{} not taken: Job {job} of the failed step still runs; stop it or wait for it to end (kubectl get job {job}), then set a new value",
                    labels::RETRY
                ),
                &job,
            );
            return false;
        }
        self.status
            .handled
            .get_or_insert_with(Default::default)
            .retry = Some(bounded_key(&value, NAME_MAX));
        for s in rb
            .migrations
            .iter_mut()
            .filter(|s| s.phase == MigrationPhase::Failed)
        {
            s.phase = MigrationPhase::Pending;
        }
        rb.phase = if rb.images_restored_at.is_some() {
            RollbackPhase::MigratingDownAfter
        } else {
            RollbackPhase::MigratingDown
        };
        rb.completed_at = None;
        rb.duration_seconds = None;
        self.status.rollbacks.retain(|r| r.id != rb.id);
        let msg = format!(
            "{} asked to retry: rollback {} from {} to {} goes on from its failed migration step, with a new Job",
            labels::RETRY,
            rb.id,
            rb.from.version,
            rb.to.version
        );
        self.note(Normal, reasons::MIGRATION_RETRY, msg.clone());
        self.set_phase(Phase::RollingBack, reasons::ROLLING_BACK, msg);
        self.status.rollback = Some(rb);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_fit_a_label_and_differ_per_attempt() {
        let long = "a".repeat(63);
        let a = job_name(&long, "uid", MigrationKind::Down, "r12-r3", "id/1");
        let b = job_name(&long, "uid", MigrationKind::Down, "r12-r3", "id/2");
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        let short = job_name("shop", "uid", MigrationKind::Up, "r4", "1");
        assert!(short.starts_with("shop-up-r4-"), "{short}");
        assert_eq!(short, job_name("shop", "uid", MigrationKind::Up, "r4", "1"));
        let dotted = job_name(
            &format!("{}.x", "b".repeat(50)),
            "u",
            MigrationKind::Down,
            "r1-r0",
            "s",
        );
        assert!(!dotted.contains(".-") && !dotted.contains("--"), "{dotted}");
    }

    #[test]
    fn the_name_hash_is_stable_across_builds() {
        // FNV-1a test vectors: a change here renames every Job in flight after an upgrade.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }
}
