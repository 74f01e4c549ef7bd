//! Guarding the live revision: digests its pods report, then its health while it rolls out
//! and during the guard window after it became healthy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    EventKind::Normal,
    conditions,
    deploy::{agreed_digest, template_for},
    health::{self, Verdict},
    plan::{Planner, add},
    views::{PodView, Workload},
};
use crate::{
    api::{DigestSource, Outcome, Phase},
    reasons,
};

impl Planner<'_> {
    pub(super) fn guard_live(&mut self, workload: &Workload) {
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
            self.condition(conditions::PINNED, true, reasons::FROM_POD_STATUS, msg);
        }
        if !recorded.is_empty() {
            self.note(
                Normal,
                reasons::DIGEST_RECORDED,
                format!(
                    "revision {revision}: recorded from pod status {}",
                    recorded.join(", ")
                ),
            );
        }
        let live = self.status.history[idx].clone();
        if self.contest(&live, workload) {
            return;
        }
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
                    &self.clock(),
                ) {
                    Verdict::Healthy => {
                        let e = &mut self.status.history[idx];
                        e.outcome = Outcome::Healthy;
                        e.healthy_at = Some(Time(self.now));
                        let msg = format!(
                            "{} (revision {revision}) is healthy: {} of {} replicas available",
                            live.version, workload.available, workload.replicas
                        );
                        self.note(Normal, reasons::HEALTHY, msg);
                        self.set_phase(
                            Phase::Healthy,
                            reasons::HEALTHY,
                            format!("{} (revision {revision}) is healthy", live.version),
                        );
                        self.pin(workload);
                        self.recheck_at(Some(add(self.now, self.policy.guard_window)));
                    }
                    Verdict::Waiting { recheck } => {
                        let msg = if workload.replicas <= 0 {
                            format!(
                                "{} (revision {revision}) is applied but the Deployment has 0 replicas: it is judged, and can become healthy, once it runs pods",
                                live.version
                            )
                        } else {
                            format!(
                                "rolling out {} as revision {revision}: {} of {} replicas updated, {} available",
                                live.version,
                                workload.updated,
                                workload.replicas,
                                workload.available
                            )
                        };
                        self.set_phase(Phase::Progressing, reasons::PROGRESSING, msg);
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
                    &self.clock(),
                );
                if let Verdict::Failed(f) = verdict {
                    self.on_failure(idx, f, workload);
                    return;
                }
                if let Verdict::Waiting { recheck } = verdict {
                    self.recheck_at(recheck);
                }
                let msg = format!("{} (revision {revision}) is healthy", live.version);
                self.set_phase(Phase::Healthy, reasons::HEALTHY, msg);
                self.pin(workload);
            }
            Outcome::Failed => {
                // Failed without a rollback (automatic off, no target, or cooldown passed by):
                // stays Degraded until the spec changes or a person acts.
                if self.status.phase == Some(Phase::Degraded) {
                    return;
                }
                if self.status.rollback.as_ref().is_some_and(|r| {
                    r.phase == crate::api::RollbackPhase::Failed && r.from.revision == revision
                }) {
                    // Its rollback stopped (a migration step failed, or the restore): the
                    // phase it left says what to do.
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
                self.set_phase(Phase::Degraded, reasons::RELEASE_FAILED, msg);
            }
            Outcome::RolledBack | Outcome::Superseded => {}
        }
    }
}
