//! The image field, contested: another field manager (a GitOps tool that self-heals, a person's
//! `kubectl set image`) changes an image Rewind owns. Rewind says who (from managedFields),
//! puts its image back, and counts; when the same manager does it again within the policy's
//! window (`contested.limit`, default 2 within 10m), Rewind stops writing to the Deployment —
//! no endless tug-of-war, no silent revert — until the Release changes or `rewind.dev/retry`.

use kube::ResourceExt;

use super::{
    EventKind::Warning,
    deploy::{template_for, workload_runs},
    plan::{Planner, add},
    text::{NAME_MAX, bounded, bounded_key},
    views::Workload,
};
use crate::{
    api::{Contest, Revision, rules::MAX_IMAGE_LEN},
    image::ImageRef,
    labels, reasons,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

impl Planner<'_> {
    /// While Rewind has stopped writing to the Deployment (contested), say so and do nothing
    /// else: true. A new spec (generation) or a new `rewind.dev/retry` value ends it (the retry
    /// value is used up here). An old contest that did not stop is forgotten after its window.
    pub(super) fn contest_holds(&mut self) -> bool {
        let Some(c) = self.status.contested.clone() else {
            return false;
        };
        if !c.stopped {
            if self.now >= add(c.first_at.0, self.policy.contested_window) {
                self.status.contested = None;
            }
            return false;
        }
        let retry = self.retry_value();
        if c.release_generation != Some(self.generation) || retry != c.retry {
            if retry != c.retry
                && let Some(v) = retry
            {
                // Used up: it resumes writing, it does not also unblock a version.
                self.status
                    .handled
                    .get_or_insert_with(Default::default)
                    .retry = Some(v);
            }
            self.status.contested = None;
            return false;
        }
        let msg = self.contest_message(&c);
        self.stall(reasons::IMAGE_FIELD_CONTESTED, msg);
        true
    }

    /// The `rewind.dev/retry` value, as status keeps it.
    fn retry_value(&self) -> Option<String> {
        self.release
            .annotations()
            .get(labels::RETRY)
            .filter(|v| !v.is_empty())
            .map(|v| bounded_key(v, NAME_MAX))
    }

    /// Another field manager changed an image of `live` after Rewind applied it: count it, put
    /// Rewind's image back with a Warning Event naming the manager, or stop at the limit.
    /// Returns true when it decided this plan (an override was seen).
    pub(super) fn contest(&mut self, live: &Revision, workload: &Workload) -> bool {
        let template = template_for(live, workload, true);
        if workload_runs(workload, &template) {
            return false;
        }
        // Rewind's apply of this revision landed (not a restart between status and apply).
        if workload.template_revision != Some(live.revision) && live.healthy_at.is_none() {
            return false;
        }
        let same = |want: &str, have: &str| {
            want == have
                || ImageRef::parse(want)
                    .digest
                    .is_some_and(|d| ImageRef::parse(have).digest == Some(d))
        };
        let changed = template.containers.iter().find_map(|c| {
            let have = &workload.images.get(&c.name)?.image;
            if same(&c.image, have) {
                return None;
            }
            // Only Rewind owns it: its own earlier write (by tag, before the digest was known).
            let other = workload
                .image_managers
                .get(&c.name)?
                .iter()
                .find(|m| *m != labels::MANAGER)?;
            Some((c.name.clone(), c.image.clone(), have.clone(), other.clone()))
        });
        let Some((container, ours, theirs, manager)) = changed else {
            return false;
        };
        let manager = bounded(&manager, NAME_MAX);
        let theirs = bounded(&theirs, MAX_IMAGE_LEN as usize);
        let generation = workload.generation;
        let window = self.policy.contested_window;
        let mut contest = match self.status.contested.clone() {
            Some(c) if c.deployment_generation == generation => {
                // Counted already (the cache has not caught up with our put-back yet).
                if !c.stopped {
                    self.apply = Some(template);
                }
                return true;
            }
            Some(mut c)
                if c.manager == manager && !c.stopped && self.now < add(c.first_at.0, window) =>
            {
                c.count = c.count.saturating_add(1);
                c.last_at = Time(self.now);
                c.container = container.clone();
                c.image = theirs.clone();
                c.deployment_generation = generation;
                c
            }
            _ => Contest {
                manager: manager.clone(),
                container: container.clone(),
                image: theirs.clone(),
                count: 1,
                first_at: Time(self.now),
                last_at: Time(self.now),
                deployment_generation: generation,
                stopped: false,
                release_generation: None,
                retry: None,
            },
        };
        if contest.count >= self.policy.contested_limit {
            contest.stopped = true;
            contest.release_generation = Some(self.generation);
            contest.retry = self.retry_value();
            let msg = self.contest_message(&contest);
            self.status.contested = Some(contest);
            self.stall(reasons::IMAGE_FIELD_CONTESTED, msg);
            return true;
        }
        let msg = format!(
            "{manager} changed the image of container {container} from {ours} to {theirs}; Rewind put its image back (override {} of {} within {}s by {manager}: at {} Rewind stops writing to Deployment {} and leaves it to you)",
            contest.count,
            self.policy.contested_limit,
            window.as_secs(),
            self.policy.contested_limit,
            self.release.spec.target.name
        );
        self.status.contested = Some(contest);
        self.note(Warning, reasons::IMAGE_OVERRIDDEN, msg);
        self.apply = Some(template);
        true
    }

    fn contest_message(&self, c: &Contest) -> String {
        format!(
            "{} changed the image of container {} (to {}) {} time(s) within {}s, against Rewind's: Rewind stopped writing to Deployment {} so the two do not fight. Leave the image to Rewind in {} (see docs/gitops.md), then change the Release or set the {} annotation",
            c.manager,
            c.container,
            c.image,
            c.count,
            self.policy.contested_window.as_secs(),
            self.release.spec.target.name,
            c.manager,
            labels::RETRY
        )
    }
}
