//! What people ask for by annotation: `rewind.dev/retry` (unblock a rolled-back version) and
//! `rewind.dev/rollback-to` (a manual rollback, on the Release or its Deployment), each acted on
//! once per distinct value (or request id), and `rewind.dev/paused` (hold the Release as
//! `spec.paused` does).
//!
//! Annotation values are anyone's text: what is kept of them in status is bounded
//! ([`bounded_key`] for the values kept to compare, [`bounded`] for who asked, the reason given
//! and messages).

use super::{
    EventKind::{Normal, Warning},
    conditions,
    health::Failing,
    history::choose_target,
    plan::Planner,
    rollback::Asked,
    text::{DETAIL_MAX, MESSAGE_MAX, NAME_MAX, bounded, bounded_key},
    views::Workload,
};
use crate::{
    api::{Failure, Handled, MigrationStep, Outcome, Release, Revision, RollbackTarget, Trigger},
    labels, reasons,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

/// Who paused the Release and why: the value of `rewind.dev/paused` (trimmed, bounded), when
/// it pauses, that is when it is neither empty nor `false` (in any case).
pub fn paused_by(release: &Release) -> Option<String> {
    release
        .annotations()
        .get(labels::PAUSED)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("false"))
        .map(|v| bounded(v, DETAIL_MAX))
}

/// What holds the Release, for a person (`spec.paused`, the annotation, or both), or `None`
/// when nothing does. Paused, Rewind neither deploys nor rolls back.
pub fn paused(release: &Release) -> Option<String> {
    let annotation =
        paused_by(release).map(|who| format!("annotation {} is set ({who})", labels::PAUSED));
    match (release.spec.paused, annotation) {
        (true, Some(a)) => Some(format!("spec.paused is set and {a}")),
        (true, None) => Some("spec.paused is set".into()),
        (false, a) => a,
    }
}

impl Planner<'_> {
    pub(super) fn handle_retry(&mut self) {
        let value = self
            .release
            .annotations()
            .get(labels::RETRY)
            .filter(|v| !v.is_empty())
            .cloned();
        let handled = self.status.handled.get_or_insert_with(Handled::default);
        match value {
            None => handled.retry = None,
            Some(v) if !already_handled(handled.retry.as_deref(), &v) => {
                handled.retry = Some(bounded_key(&v, NAME_MAX));
                if let Some(b) = self.status.blocked.take() {
                    self.note(
                        Normal,
                        reasons::RETRY,
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

    pub(super) fn tidy_handled(&mut self) {
        if self
            .status
            .handled
            .as_ref()
            .is_some_and(|h| *h == Handled::default())
        {
            self.status.handled = None;
        }
    }

    /// Act on `rewind.dev/rollback-to` (Release first, then Deployment), once per request: a
    /// distinct value, or on the Release a distinct `rewind.dev/request-id`. Every request on
    /// the Release that is answered records its id in `handled.requestId` in the same status
    /// as the ManualRollback condition that answers it. Returns true when a rollback started.
    pub(super) fn handle_manual_rollback(&mut self, workload: &Workload) -> bool {
        let on_release = self
            .release
            .annotations()
            .get(labels::ROLLBACK_TO)
            .filter(|v| !v.is_empty())
            .cloned();
        let release_id = self
            .release
            .annotations()
            .get(labels::REQUEST_ID)
            .filter(|v| !v.is_empty())
            .map(|v| bounded_key(v, NAME_MAX));
        let on_target = workload.rollback_to.clone();
        for (value, from_target) in [(on_release, false), (on_target, true)] {
            // The Deployment's requests carry no id: acted on once per value.
            let id = if from_target {
                None
            } else {
                release_id.clone()
            };
            let handled = self.status.handled.get_or_insert_with(Handled::default);
            let slot = if from_target {
                &mut handled.target_rollback_to
            } else {
                &mut handled.rollback_to
            };
            let Some(value) = value else {
                *slot = None;
                if !from_target {
                    handled.request_id = None;
                }
                continue;
            };
            let new_id = id.is_some() && id != handled.request_id;
            if already_handled(slot.as_deref(), &value) && !new_id {
                continue;
            }
            let before = slot.replace(bounded_key(&value, NAME_MAX));
            // Answered, whatever the answer: a client waiting on its id sees it with the
            // ManualRollback condition written below.
            let id_before = if from_target {
                None
            } else {
                std::mem::replace(&mut handled.request_id, id.clone())
            };
            let source = if from_target {
                format!(
                    "annotation {} on Deployment {}",
                    labels::ROLLBACK_TO,
                    self.release.spec.target.name
                )
            } else {
                format!("annotation {} on the Release", labels::ROLLBACK_TO)
            };
            let shown = bounded(&value, NAME_MAX);
            match self.resolve_manual_target(&value) {
                Err(refusal) => {
                    let why = refusal.reason();
                    let msg = format!(
                        "rollback to {shown:?} ({source}) refused: {refusal}; nothing was changed"
                    );
                    if matches!(refusal, Refusal::Irreversible { .. }) {
                        // Not used up: the request is taken as soon as the override names
                        // every irreversible version (said once, not on every look). Its id
                        // stays recorded: it was answered. Under a new id the value may be
                        // the one handled before, which must not count as handled now.
                        let handled = self.status.handled.get_or_insert_with(Handled::default);
                        let slot = if from_target {
                            &mut handled.target_rollback_to
                        } else {
                            &mut handled.rollback_to
                        };
                        *slot = if new_id { None } else { before };
                        // A new request id is a new ask, answered again.
                        let said = id_before == id
                            && conditions::get(
                                &self.status.conditions,
                                conditions::MANUAL_ROLLBACK,
                            )
                            .is_some_and(|c| {
                                c.status == "False"
                                    && c.reason == why
                                    && c.message == bounded(&msg, MESSAGE_MAX)
                            });
                        if said {
                            continue;
                        }
                    }
                    self.condition(conditions::MANUAL_ROLLBACK, false, why, msg.clone());
                    self.note(Warning, why, msg);
                }
                Ok((from, to, steps)) => {
                    let requested_by = if from_target {
                        workload.requested_by.as_deref()
                    } else {
                        self.release
                            .annotations()
                            .get(labels::REQUESTED_BY)
                            .map(String::as_str)
                    }
                    .map(|who| bounded(who, NAME_MAX));
                    let who = requested_by
                        .clone()
                        .unwrap_or_else(|| "an unnamed user".into());
                    // Only the Release's: the Deployment's request has no reason annotation.
                    let reason = if from_target {
                        None
                    } else {
                        self.release
                            .annotations()
                            .get(labels::REASON)
                            .map(|r| r.trim())
                            .filter(|r| !r.is_empty())
                            .map(|r| bounded(r, DETAIL_MAX))
                    };
                    let message = match &reason {
                        Some(why) => format!("{who} asked for {shown} ({source}): {why}"),
                        None => format!("{who} asked for {shown} ({source})"),
                    };
                    self.condition(
                        conditions::MANUAL_ROLLBACK,
                        true,
                        reasons::ACCEPTED,
                        message.clone(),
                    );
                    let now = self.now;
                    if let Some(e) = self.entry_mut(from.revision) {
                        if e.outcome != Outcome::Failed {
                            e.outcome = Outcome::RolledBack;
                        }
                        e.failure.get_or_insert(Failure {
                            trigger: Trigger::Manual,
                            reason: reasons::MANUAL_ROLLBACK.into(),
                            message: message.clone(),
                            at: Time(now),
                        });
                    }
                    self.tidy_handled();
                    // A person named the blocked version: that unblocks it (as a retry
                    // would), so no plan applies a version its status still says is blocked.
                    if self
                        .status
                        .blocked
                        .as_ref()
                        .is_some_and(|b| b.version == to.version)
                    {
                        self.status.blocked = None;
                    }
                    let cause = Failing {
                        trigger: Trigger::Manual,
                        reason: reasons::MANUAL_ROLLBACK,
                        message,
                        at: self.now,
                    };
                    let asked = Asked {
                        by: requested_by,
                        reason,
                        id: id.clone(),
                    };
                    self.start_rollback(&from, &to, cause, asked, steps, workload);
                    return true;
                }
            }
        }
        self.tidy_handled();
        false
    }

    /// The live revision, the revision `value` names and the down migrations between them,
    /// or why not.
    pub(super) fn resolve_manual_target(
        &self,
        value: &str,
    ) -> Result<(Revision, Revision, Vec<MigrationStep>), Refusal> {
        let live = self
            .live_index()
            .map(|i| self.status.history[i].clone())
            .ok_or(Refusal::NothingDeployed)?;
        if let Some(i) = self.gated_index() {
            // Its up migration runs against the database now: a down migration beside it, or
            // images restored under it, would mix two schema changes at once.
            let gated = &self.status.history[i];
            return Err(Refusal::UpMigrationRunning(
                gated.version.clone(),
                gated
                    .migration
                    .as_ref()
                    .and_then(|m| m.up_job.as_ref())
                    .map(|j| j.name.clone())
                    .unwrap_or_default(),
            ));
        }
        if let Some(rb) = self.status.rollback.as_ref().filter(|rb| {
            rb.phase == crate::api::RollbackPhase::Failed
                && rb.images_restored_at.is_none()
                && rb.from.revision == live.revision
                && rb
                    .migrations
                    .iter()
                    .any(|s| s.phase == crate::api::MigrationPhase::Succeeded)
        }) {
            // Some of its down migrations ran: planning anew would run them again.
            return Err(Refusal::HaltedMigration(rb.id.clone()));
        }
        let target = if value == labels::PREVIOUS {
            // Not a revision of the blocked version: those are the bits that just failed,
            // which only a request naming that version (or a retry) brings back.
            let blocked = self.status.blocked.as_ref().map(|b| b.version.as_str());
            let candidates: Vec<Revision> = self
                .status
                .history
                .iter()
                .filter(|r| Some(r.version.as_str()) != blocked)
                .cloned()
                .collect();
            choose_target(&candidates, live.revision, RollbackTarget::LastHealthy)
                .ok_or_else(|| Refusal::NoHealthyBefore(live.version.clone(), live.revision))?
        } else {
            self.status
                .history
                .iter()
                .filter(|r| r.version == value)
                .max_by_key(|r| r.revision)
                .cloned()
                .ok_or_else(|| Refusal::NotInHistory {
                    value: bounded(value, NAME_MAX),
                    known: self
                        .status
                        .history
                        .iter()
                        .map(|r| r.version.clone())
                        .collect(),
                })?
        };
        if target.revision == live.revision {
            return Err(Refusal::AlreadyRunning(target.version, target.revision));
        }
        if target.healthy_at.is_none() || target.outcome == Outcome::Failed {
            return Err(Refusal::NeverHealthy(
                target.version,
                target.revision,
                target.outcome,
            ));
        }
        if let Some(i) = target.images.iter().find(|i| i.digest.is_none()) {
            return Err(Refusal::DigestUnknown(
                target.version.clone(),
                target.revision,
                i.container.clone(),
            ));
        }
        let mut crossing = self
            .crossing(&live, &target)
            .map_err(Refusal::MigrationPath)?;
        if !crossing.irreversible.is_empty() {
            let allowed: Vec<&str> = self
                .release
                .annotations()
                .get(labels::ALLOW_IRREVERSIBLE)
                .map(|v| v.split(',').map(str::trim).collect())
                .unwrap_or_default();
            let missing: Vec<String> = crossing
                .irreversible
                .iter()
                .filter(|v| !allowed.contains(&v.as_str()))
                .cloned()
                .collect();
            if !self.policy.allow_irreversible && !missing.is_empty() {
                return Err(Refusal::Irreversible {
                    versions: crossing.irreversible.join(","),
                });
            }
            crossing.skip_irreversible(&self.status.history);
        }
        Ok((live, target, crossing.steps))
    }
}

/// `value` was acted on already: `handled` is what status keeps of it (bounded), or, from an
/// operator before bounds, the whole value.
fn already_handled(handled: Option<&str>, value: &str) -> bool {
    handled.is_some_and(|h| h == value || h == bounded_key(value, NAME_MAX))
}

/// Why a `rewind.dev/rollback-to` request is refused (nothing changes).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(super) enum Refusal {
    /// Nothing runs yet that could be rolled back.
    #[error("nothing has been deployed yet")]
    NothingDeployed,
    /// `previous`, but no usable revision before the live one (version, revision).
    #[error("no healthy revision before {0} (revision {1}) with recorded digests")]
    NoHealthyBefore(String, i64),
    /// The version is not in history.
    #[error("no revision of {value} in history (known: {})", known.join(", "))]
    NotInHistory {
        /// What was asked for.
        value: String,
        /// The versions history has.
        known: Vec<String>,
    },
    /// The requested revision is the live one (version, revision).
    #[error("{0} (revision {1}) is what runs now")]
    AlreadyRunning(String, i64),
    /// The requested revision was never healthy (version, revision, outcome).
    #[error("{0} (revision {1}) was never healthy ({2:?})")]
    NeverHealthy(String, i64, Outcome),
    /// The requested revision lacks a digest (version, revision, container).
    #[error(
        "{0} (revision {1}) has no recorded digest for container {2}; Rewind only restores pinned bits"
    )]
    DigestUnknown(String, i64, String),
    /// An up migration runs (version, Job).
    #[error("the up migration of {0} runs now (Job {1}); wait for it to end, then ask again")]
    UpMigrationRunning(String, String),
    /// A rollback halted after some of its down migrations ran (rollback id).
    #[error(
        "rollback {0} halted after some of its down migrations ran: a new rollback would run them again. Set rewind.dev/retry to go on from the failed step, or roll forward by changing spec.version"
    )]
    HaltedMigration(String),
    /// History does not show which down migrations lead to the target's schema.
    #[error("{0}")]
    MigrationPath(String),
    /// The rollback would cross migrations that cannot be undone, and no override names them.
    #[error(
        "it would cross the irreversible migration of {versions} (reversible: false); to roll back anyway, name them in the annotation {allow}: \"{versions}\" and ask again",
        allow = labels::ALLOW_IRREVERSIBLE
    )]
    Irreversible {
        /// The versions whose migration would be crossed, comma-separated.
        versions: String,
    },
}

impl Refusal {
    /// The reason of the ManualRollback condition and the Event.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Refusal::NothingDeployed
            | Refusal::NoHealthyBefore(..)
            | Refusal::NotInHistory { .. } => reasons::UNKNOWN_VERSION,
            Refusal::AlreadyRunning(..) => reasons::ALREADY_RUNNING,
            Refusal::NeverHealthy(..) => reasons::TARGET_NOT_HEALTHY,
            Refusal::DigestUnknown(..) => reasons::DIGESTS_UNKNOWN,
            Refusal::MigrationPath(_) => reasons::MIGRATION_PATH_UNKNOWN,
            Refusal::UpMigrationRunning(..) => reasons::MIGRATING_UP,
            Refusal::HaltedMigration(_) => reasons::MIGRATION_FAILED,
            Refusal::Irreversible { .. } => reasons::IRREVERSIBLE_MIGRATION,
        }
    }
}
