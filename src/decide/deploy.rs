//! Deploying: adopting a Deployment as revision 0, rolling out a new revision pinned to
//! digests (asking the registry through [`Plan::lookups`](super::Plan::lookups)), and pinning
//! the Deployment once the digests are known.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    EventKind::{Normal, Warning},
    Template, TemplateContainer, conditions,
    history::known_digest,
    plan::{Planner, add, images_summary},
    text::{DETAIL_MAX, bounded},
    views::{PodView, Workload},
};
use crate::{
    api::{
        DigestSource, Outcome, Phase, PinnedImage, PinnedMigration, ReleaseSpec, ReleaseStatus,
        Revision, RollbackPhase, rules::MAX_IMAGE_LEN,
    },
    image::{ImageRef, is_digest},
    reasons,
};

/// How long a Strict policy waits before asking the registry again.
const STRICT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

impl Planner<'_> {
    /// Record the target's UID; a Deployment deleted and created again under the same name is
    /// a new target: its predecessor's history (and any rollback in flight) ends here, and
    /// what the new one runs is adopted as revision 0, so no old digest is ever written to it.
    pub(super) fn bind_target(&mut self, workload: &Workload) {
        if workload.uid.is_empty() {
            return;
        }
        let Some(old) = self.status.target_uid.replace(workload.uid.clone()) else {
            return;
        };
        if old == workload.uid {
            return;
        }
        let name = self.release.spec.target.name.clone();
        let dropped: Vec<String> = self
            .status
            .history
            .iter()
            .map(|r| format!("{} ({})", r.revision, r.version))
            .collect();
        if let Some(mut rb) = self.in_flight().cloned() {
            rb.phase = RollbackPhase::Failed;
            rb.completed_at = Some(Time(self.now));
            rb.message = format!(
                "{}; abandoned: Deployment {name} was deleted and created again",
                rb.message
            );
            self.status.rollback = Some(rb.clone());
            self.status.rollbacks.insert(0, rb.clone());
            self.status
                .rollbacks
                .truncate(super::policy::ROLLBACKS_KEPT);
            self.finished = Some(rb);
        }
        self.status.history.clear();
        self.status.revision = None;
        self.status.version = None;
        self.status.blocked = None;
        self.note(
            Warning,
            reasons::TARGET_REPLACED,
            format!(
                "Deployment {name} was deleted and created again (uid {old} is now {}): it is a new target; the old one's history ({}) no longer applies, and what the new one runs is recorded as revision 0 before anything changes",
                workload.uid,
                if dropped.is_empty() {
                    "empty".to_owned()
                } else {
                    dropped.join(", ")
                }
            ),
        );
    }

    /// Revision 0: what the Deployment ran before Rewind's first change, so even the first
    /// Release has something to roll back to.
    pub(super) fn adopt(&mut self, workload: &Workload) {
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
                // Nothing to record, or more than any image reference a Release may hold:
                // such a text is not copied into status (cut short, it would not be an image).
                if image.is_empty() || image.len() > MAX_IMAGE_LEN as usize {
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
        // At 0 replicas nothing proves the images run: recorded, but not a rollback target.
        let healthy = workload.rolled_out() && workload.replicas > 0;
        let summary = images_summary(&images);
        self.status.history.push(Revision {
            revision: 0,
            version: "adopted".into(),
            images,
            migration: None,
            deployed_over: None,
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
            Normal,
            reasons::ADOPTED,
            format!(
                "recorded what the Deployment runs as revision 0 ({summary}) before changing it"
            ),
        );
    }

    pub(super) fn deploy(&mut self, workload: &Workload) {
        let spec = &self.release.spec;
        let newest = self.status.history.iter().map(|r| r.revision).max();
        let Some(number) = newest.map_or(Some(1), |m| m.max(0).checked_add(1)) else {
            // Only a status written by someone else can get here (revision 2^63-1).
            let msg = format!(
                "cannot number a new revision after {}: status.history holds the largest revision number there is; delete and recreate the Release",
                newest.unwrap_or_default()
            );
            self.stall(reasons::REVISIONS_EXHAUSTED, msg);
            return;
        };
        // The digest in the reference, else the one recorded for this version (a Git revert
        // brings back the same bits, even if the tag moved), else the registry's answer.
        let mut unresolved: Vec<String> = Vec::new();
        let mut first_error: Option<&'static str> = None;
        let mut lookups: Vec<String> = Vec::new();
        let mut pin = |label: &str, image: &str, known: Option<(String, Option<DigestSource>)>| {
            match known {
                Some((d, from)) => (Some(d), from),
                None => match self.input.resolved.get(image) {
                    Some(Ok(d)) => (Some(d.clone()), Some(DigestSource::Registry)),
                    Some(Err(e)) => {
                        first_error.get_or_insert(e.reason());
                        // The registry's words are its own: bounded.
                        unresolved.push(format!(
                            "{label}={image} ({}: {})",
                            e.reason(),
                            bounded(&e.to_string(), DETAIL_MAX)
                        ));
                        (None, None)
                    }
                    None => {
                        // No answer yet: the controller asks the registry and plans again;
                        // without an answer (none possible) it stays unpinned.
                        lookups.push(image.to_owned());
                        unresolved.push(format!("{label}={image} (not looked up)"));
                        (None, None)
                    }
                },
            }
        };
        let images: Vec<PinnedImage> = spec
            .images
            .iter()
            .map(|i| {
                let known =
                    known_digest(&self.status.history, &spec.version, &i.container, &i.image);
                let (digest, resolved_from) = pin(&i.container, &i.image, known);
                PinnedImage {
                    container: i.container.clone(),
                    image: i.image.clone(),
                    digest,
                    resolved_from,
                }
            })
            .collect();
        let migration = spec.migration.as_ref().map(|m| {
            let known = known_migration_digest(&self.status.history, &spec.version, &m.image);
            let (digest, resolved_from) = pin("migration", &m.image, known);
            PinnedMigration {
                image: m.image.clone(),
                digest,
                resolved_from,
                schema_version: m.schema_version.clone(),
                reversible: m.reversible,
                up: m.up.clone(),
                down: m.down.clone(),
                service_account_name: m.service_account_name.clone(),
                env: m.env.clone(),
                env_from: m.env_from.clone(),
                resources: m.resources.clone(),
                pod_annotations: m.pod_annotations.clone(),
                up_job: None,
            }
        });
        self.lookups.extend(lookups);
        let pin_reason = first_error.unwrap_or(reasons::DIGESTS_UNKNOWN);
        if !unresolved.is_empty() && self.policy.strict_digests {
            let msg = format!(
                "refusing to deploy {} unpinned (policy digestResolution: Strict): {}; asking the registry again in {}s",
                spec.version,
                unresolved.join("; "),
                STRICT_RETRY.as_secs()
            );
            self.condition(conditions::PINNED, false, pin_reason, msg.clone());
            self.stall(reasons::UNPINNED, msg);
            self.recheck_at(Some(add(self.now, STRICT_RETRY)));
            return;
        }
        if unresolved.is_empty() {
            let msg = format!(
                "every image of {} is pinned before the rollout",
                spec.version
            );
            self.condition(conditions::PINNED, true, reasons::RESOLVED, msg);
        } else {
            let msg = format!(
                "deploying {} by reference as written, the digest will be recorded from pod status: {}",
                spec.version,
                unresolved.join("; ")
            );
            self.condition(conditions::PINNED, false, pin_reason, msg.clone());
            if first_error.is_some() {
                self.note(Warning, pin_reason, msg);
            }
        }
        let gated = spec.migration.as_ref().is_some_and(|m| m.up.is_some());
        let entry = Revision {
            revision: number,
            version: spec.version.clone(),
            images,
            migration,
            source: spec.source.clone(),
            deployed_at: Some(Time(self.now)),
            healthy_at: None,
            outcome: Outcome::Pending,
            failure: None,
            deployed_over: self.schema_base(),
        };
        self.status.history.insert(0, entry);
        if gated {
            // The up Job first; the Deployment is not touched until it completes.
            self.start_up(0);
        } else {
            self.roll_out(0, workload);
        }
        // After the new revision is live (or waits for its up Job): the cap keeps it.
        self.cap_history();
    }

    /// Apply the revision at `idx` to the Deployment: it becomes the live one.
    pub(super) fn roll_out(&mut self, idx: usize, workload: &Workload) {
        let spec = &self.release.spec;
        let entry = self.status.history[idx].clone();
        let number = entry.revision;
        let reused = entry.images.iter().filter(|i| i.digest.is_some()).count();
        if let Some(live) = self.live_index() {
            let prev = &mut self.status.history[live];
            if prev.revision != number
                && matches!(prev.outcome, Outcome::Healthy | Outcome::Pending)
            {
                prev.outcome = Outcome::Superseded;
            }
        }
        let e = &mut self.status.history[idx];
        // Judged from the rollout, which starts now (an up migration may have taken a while).
        e.deployed_at = Some(Time(self.now));
        let template = template_for(&entry, workload, true);
        let summary = images_summary(&entry.images);
        self.status.revision = Some(number);
        self.status.version = Some(entry.version.clone());
        let msg = format!(
            "rolling out {} as revision {number} ({summary})",
            entry.version
        );
        self.set_phase(Phase::Progressing, reasons::PROGRESSING, msg.clone());
        if conditions::get(&self.status.conditions, conditions::ROLLED_BACK).is_some() {
            self.condition(
                conditions::ROLLED_BACK,
                false,
                reasons::DEPLOYING,
                msg.clone(),
            );
        }
        let reuse = if reused > 0 {
            format!("; {reused} digest(s) known before rollout")
        } else {
            String::new()
        };
        self.note(Normal, reasons::DEPLOYING, format!("{msg}{reuse}"));
        if !self.policy.metrics.is_empty() {
            self.note(
                Warning,
                reasons::METRICS_NOT_EVALUATED,
                format!(
                    "the policy's metric checks ({}) are not evaluated by this version of Rewind: only pod and Deployment health guard {}",
                    self.policy.metrics.join(", "),
                    spec.version
                ),
            );
        }
        self.apply = Some(template);
        self.recheck_at(Some(add(self.now, self.policy.readiness_timeout)));
    }

    /// Once the live revision is healthy and every digest is known, make the Deployment run
    /// `repo@sha256:…` so a reschedule can never pull a moved tag.
    pub(super) fn pin(&mut self, workload: &Workload) {
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
            self.note(Normal, reasons::PINNED, msg);
            self.apply = Some(template);
        }
    }
}

/// The live revision in `status` runs something other than `spec` (or nothing runs yet).
pub(super) fn spec_differs(status: &ReleaseStatus, spec: &ReleaseSpec) -> bool {
    status
        .revision
        .and_then(|n| status.history.iter().find(|r| r.revision == n))
        .is_none_or(|live| spec_differs_from(live, spec))
}

/// The revision `live` is not what `spec` describes (version and images).
pub(super) fn spec_differs_from(live: &Revision, spec: &ReleaseSpec) -> bool {
    live.version != spec.version
        || live.images.len() != spec.images.len()
        || spec.images.iter().any(|s| {
            !live
                .images
                .iter()
                .any(|l| l.container == s.container && l.image == s.image)
        })
}

/// A digest Rewind already knows for the migration image `image` of `version`: in the
/// reference, or recorded for the same version and image in history.
fn known_migration_digest(
    history: &[Revision],
    version: &str,
    image: &str,
) -> Option<(String, Option<DigestSource>)> {
    if let Some(known) = super::history::reference_digest(image) {
        return Some(known);
    }
    history
        .iter()
        .filter(|r| r.version == version)
        .filter_map(|r| r.migration.as_ref())
        .find(|m| m.image == image && m.digest.is_some())
        .map(|m| (m.digest.clone().unwrap_or_default(), m.resolved_from))
}

/// The digest every pod in `pods` reports for `container`, if they report one and agree.
pub(super) fn agreed_digest(pods: &[&PodView], container: &str) -> Option<String> {
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

/// The pod template for a revision: images pinned where the digest is known (`pin`), as
/// written otherwise.
pub(super) fn template_for(entry: &Revision, workload: &Workload, pin: bool) -> Template {
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
                TemplateContainer {
                    name: i.container.clone(),
                    image,
                    init,
                }
            })
            .collect(),
    }
}

/// The Deployment's template already carries `template`. An image counts as the same when it
/// is the same string or, for a pinned one, names the same digest (a mutating webhook may
/// rewrite the repository, for a mirror, and keep the digest).
pub(super) fn workload_runs(workload: &Workload, template: &Template) -> bool {
    let same = |want: &str, have: &str| {
        want == have
            || ImageRef::parse(want)
                .digest
                .is_some_and(|d| ImageRef::parse(have).digest == Some(d))
    };
    workload.template_revision == Some(template.revision)
        && template.containers.iter().all(|c| {
            workload
                .images
                .get(&c.name)
                .is_some_and(|s| same(&c.image, &s.image))
        })
}
