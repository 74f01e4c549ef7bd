//! History: the cap on kept revisions, choosing the revision a rollback goes back to, and the
//! digests already recorded for a version.

use super::plan::Planner;
use crate::{
    api::{DigestSource, Outcome, Revision, RollbackTarget},
    image::{ImageRef, is_digest},
};

/// The most bytes (as JSON) `status.history` may take, whatever `historyLimit` allows: 50
/// revisions of 32 images of 512 characters each would be about 1.3 MiB, next to etcd's
/// 1.5 MiB for the whole object (spec, annotations and the rest of the status included).
pub(super) const HISTORY_BUDGET: usize = 512 * 1024;

impl Planner<'_> {
    /// Keep the newest `historyLimit` revisions, and no more than [`HISTORY_BUDGET`] bytes of
    /// them, never dropping the live one or a rollback's.
    pub(super) fn cap_history(&mut self) {
        let limit = self.policy.history_limit;
        let live = self.status.revision;
        let target = |t| {
            live.and_then(|l| choose_target(&self.status.history, l, t))
                .map(|r| r.revision)
        };
        let mut keep: Vec<i64> = [
            live,
            self.in_flight().map(|r| r.to.revision),
            self.in_flight().map(|r| r.from.revision),
            target(RollbackTarget::LastHealthy),
            target(self.policy.target),
            self.gated_index().map(|i| self.status.history[i].revision),
        ]
        .into_iter()
        .flatten()
        .collect();
        // A rollback in flight runs the down migrations of these revisions.
        if let Some(rb) = self.in_flight() {
            keep.extend(
                rb.migrations
                    .iter()
                    .flat_map(|s| [s.revision, s.to_revision]),
            );
        }
        // The revisions between the live one and its rollback target that the schema went
        // through: a rollback needs their down migrations. Kept over the count, not over the
        // byte budget (then a rollback across them says it cannot tell the way back).
        let mut chain: Vec<i64> = Vec::new();
        if let (Some(l), Some(t)) = (live, target(RollbackTarget::LastHealthy))
            && super::migrate::schemas_differ(&self.status.history, l, t)
        {
            chain = super::migrate::chain(&self.status.history, l, t);
        }
        self.status
            .history
            .sort_by_key(|r| std::cmp::Reverse(r.revision));
        let oldest_droppable =
            |history: &[Revision]| history.iter().rposition(|r| !keep.contains(&r.revision));
        while self.status.history.len() > limit {
            let not_on_chain = self
                .status
                .history
                .iter()
                .rposition(|r| !keep.contains(&r.revision) && !chain.contains(&r.revision));
            match not_on_chain {
                Some(i) => {
                    self.status.history.remove(i);
                }
                None => break,
            }
        }
        let size = |r: &Revision| serde_json::to_vec(r).map_or(0, |v| v.len().saturating_add(1));
        let mut total: usize = self.status.history.iter().map(size).sum();
        while total > HISTORY_BUDGET {
            match oldest_droppable(&self.status.history) {
                Some(i) => {
                    let dropped = self.status.history.remove(i);
                    total = total.saturating_sub(size(&dropped));
                }
                None => break,
            }
        }
    }
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

/// A digest Rewind already knows for `image` of `container` at `version`: in the reference
/// itself, or recorded for the same version and image in history.
pub(super) fn known_digest(
    history: &[Revision],
    version: &str,
    container: &str,
    image: &str,
) -> Option<(String, Option<DigestSource>)> {
    if let Some(known) = reference_digest(image) {
        return Some(known);
    }
    history
        .iter()
        .filter(|r| r.version == version)
        .flat_map(|r| r.images.iter())
        .find(|p| p.container == container && p.image == image && p.digest.is_some())
        .map(|p| (p.digest.clone().unwrap_or_default(), p.resolved_from))
}

/// The digest a reference carries itself (`repo@sha256:…`).
pub(super) fn reference_digest(image: &str) -> Option<(String, Option<DigestSource>)> {
    ImageRef::parse(image)
        .digest
        .filter(|d| is_digest(d))
        .map(|d| (d.to_owned(), Some(DigestSource::Reference)))
}
