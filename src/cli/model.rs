//! What the read commands show, as plain data with stable field names (`-o json|yaml` prints
//! these; the tables render them). Built from a Release and its pods only: pure, no client.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    api::{
        Blocked, Contest, MigrationPhase, Phase, Release, Revision, RevisionRef, Rollback,
        RollbackPhase,
    },
    decide::{conditions, views::PodView},
    labels, reasons,
};

/// `list`: one item per Release.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct List {
    /// The Releases, by namespace then name.
    pub items: Vec<ListItem>,
}

/// One Release in `list`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListItem {
    /// Namespace.
    pub namespace: String,
    /// Release name.
    pub name: String,
    /// Target Deployment.
    pub target: String,
    /// spec.version.
    pub desired: String,
    /// Version running now.
    pub live_version: Option<String>,
    /// Revision running now.
    pub live_revision: Option<i64>,
    /// status.phase.
    pub phase: Option<Phase>,
    /// The Ready condition's status: True, False or Unknown.
    pub ready: String,
    /// The Ready condition's reason.
    pub reason: Option<String>,
    /// The in-flight or last rollback.
    pub last_rollback: Option<RollbackSummary>,
    /// When the Release was created.
    pub created_at: Option<Time>,
}

/// A rollback in one line.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackSummary {
    /// Rollback id.
    pub id: String,
    /// Rolled back from.
    pub from: RevisionRef,
    /// Rolled back to.
    pub to: RevisionRef,
    /// What started it.
    pub trigger: crate::api::Trigger,
    /// Where it stands.
    pub phase: RollbackPhase,
    /// When the failure or request was seen.
    pub detected_at: Time,
    /// When it ended.
    pub completed_at: Option<Time>,
}

/// `history`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// The revision running now.
    pub live_revision: Option<i64>,
    /// Newest first.
    pub revisions: Vec<HistoryEntry>,
}

/// One revision: the Release's own history entry (its field names), and whether it is live.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The history entry as in `status.history`.
    #[serde(flatten)]
    pub revision: Revision,
    /// It runs now.
    pub live: bool,
}

/// `status`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// Namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Target Deployment.
    pub target: String,
    /// spec.version.
    pub desired_version: String,
    /// Version running now.
    pub live_version: Option<String>,
    /// Revision running now.
    pub live_revision: Option<i64>,
    /// status.phase.
    pub phase: Option<Phase>,
    /// Why the Release is paused, when it is (spec.paused or the rewind.dev/paused annotation).
    pub paused: Option<String>,
    /// Rewind has not looked at the latest spec yet (observedGeneration behind generation).
    pub stale: bool,
    /// The Release's conditions.
    pub conditions: Vec<ConditionView>,
    /// The version Rewind will not apply again.
    pub blocked: Option<Blocked>,
    /// Another field manager changing an image Rewind owns.
    pub contested: Option<Contest>,
    /// A rollback request on the Release Rewind has not answered yet.
    pub pending: Option<Pending>,
    /// The in-flight or last rollback.
    pub rollback: Option<RollbackView>,
    /// The pods of the live revision.
    pub pods: Option<Pods>,
    /// What a person can do next, as exact commands.
    pub next: Vec<Next>,
}

/// A `rewind.dev/rollback-to` request on the Release that Rewind has not answered yet.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// The version asked for (or `previous`).
    pub to: String,
    /// Who asked, when known.
    pub requested_by: Option<String>,
    /// The request id, when there is one.
    pub request_id: Option<String>,
}

/// The rollback request on the Release that Rewind has not answered yet, if any, by the
/// operator's own rule (`decide::requests`): with an id, answered when `handled.requestId` is
/// that id and `handled.rollbackTo` is this value (or was cleared by an irreversible refusal);
/// without one, when `handled.rollbackTo` is this value. A request refused for crossing an
/// irreversible migration is answered too (its condition quotes the value), though it stays
/// armed until the override names the versions.
pub fn pending(release: &Release) -> Option<Pending> {
    use crate::decide::text::{NAME_MAX, bounded_key};
    let a = release.annotations();
    let to = a.get(labels::ROLLBACK_TO).filter(|v| !v.is_empty())?;
    let st = release.status.as_ref();
    let handled = st.and_then(|s| s.handled.as_ref());
    let value_key = bounded_key(to, NAME_MAX);
    let handled_value = handled.and_then(|h| h.rollback_to.as_deref());
    let value_done = handled_value == Some(to.as_str()) || handled_value == Some(&value_key);
    let id = a.get(labels::REQUEST_ID).filter(|v| !v.is_empty());
    let answered = match id {
        Some(id) => {
            handled.and_then(|h| h.request_id.as_deref()) == Some(&bounded_key(id, NAME_MAX))
                && (value_done || handled_value.is_none())
        }
        None => value_done,
    } || st
        .and_then(|s| conditions::get(&s.conditions, conditions::MANUAL_ROLLBACK))
        .is_some_and(|c| {
            c.status == "False"
                && c.reason == reasons::IRREVERSIBLE_MIGRATION
                && c.message
                    .contains(&format!("{:?}", crate::decide::text::bounded(to, NAME_MAX)))
        });
    (!answered).then(|| Pending {
        to: to.clone(),
        requested_by: a.get(labels::REQUESTED_BY).cloned(),
        request_id: id.cloned(),
    })
}

/// A condition.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// PascalCase reason.
    pub reason: String,
    /// For a person.
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: Time,
}

/// A rollback with its timeline.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RollbackView {
    /// The rollback as in `status.rollback`.
    #[serde(flatten)]
    pub rollback: Rollback,
    /// What happened when, oldest first.
    pub timeline: Vec<Step>,
}

/// One step of a rollback's timeline.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// detected, started, migrated-down, images-restored, succeeded, failed.
    pub step: String,
    /// What the step was about (the migration step's versions), when there is more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When.
    pub at: Time,
    /// Seconds after detection.
    pub after_seconds: f64,
}

/// The pods of the live revision.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pods {
    /// The revision they belong to.
    pub revision: i64,
    /// Ready pods.
    pub ready: usize,
    /// Pods (not terminating).
    pub total: usize,
    /// Containers waiting, by reason (CrashLoopBackOff, ImagePullBackOff…), as "reason ×n".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

/// Something a person can do next.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Next {
    /// Why.
    pub why: String,
    /// The exact command.
    pub command: String,
}

/// Whether the Release is paused, and what holds it (as the operator says it).
pub fn paused(release: &Release) -> Option<String> {
    crate::decide::paused(release)
}

fn ready_of(release: &Release) -> (String, Option<String>) {
    release
        .status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, conditions::READY))
        .map(|c| (c.status.clone(), Some(c.reason.clone())))
        .unwrap_or_else(|| ("Unknown".into(), None))
}

/// One `list` item.
pub fn list_item(release: &Release) -> ListItem {
    let status = release.status.clone().unwrap_or_default();
    let (ready, reason) = ready_of(release);
    ListItem {
        namespace: release.namespace().unwrap_or_default(),
        name: release.name_any(),
        target: release.spec.target.name.clone(),
        desired: release.spec.version.clone(),
        live_version: status.version,
        live_revision: status.revision,
        phase: status.phase,
        ready,
        reason,
        last_rollback: status.rollback.map(|rb| RollbackSummary {
            id: rb.id,
            from: rb.from,
            to: rb.to,
            trigger: rb.trigger,
            phase: rb.phase,
            detected_at: rb.detected_at,
            completed_at: rb.completed_at,
        }),
        created_at: release.metadata.creation_timestamp.clone(),
    }
}

/// `history`: every revision, newest first.
pub fn history(release: &Release) -> History {
    let status = release.status.clone().unwrap_or_default();
    let mut revisions: Vec<HistoryEntry> = status
        .history
        .into_iter()
        .map(|r| HistoryEntry {
            live: Some(r.revision) == status.revision,
            revision: r,
        })
        .collect();
    revisions.sort_by_key(|e| std::cmp::Reverse(e.revision.revision));
    History {
        namespace: release.namespace().unwrap_or_default(),
        release: release.name_any(),
        live_revision: status.revision,
        revisions,
    }
}

/// `status`: the Release, the pods of its live revision, and what to do next.
pub fn status(release: &Release, pods: &[PodView]) -> StatusView {
    let st = release.status.clone().unwrap_or_default();
    let live_pods = st.revision.map(|revision| {
        let mine: Vec<&PodView> = pods
            .iter()
            .filter(|p| p.revision == Some(revision) && !p.terminating)
            .collect();
        let mut waiting = std::collections::BTreeMap::<String, usize>::new();
        for c in mine.iter().flat_map(|p| &p.containers) {
            if let Some(w) = &c.waiting {
                *waiting.entry(w.clone()).or_default() += 1;
            }
        }
        Pods {
            revision,
            ready: mine.iter().filter(|p| p.ready).count(),
            total: mine.len(),
            waiting: waiting
                .into_iter()
                .map(|(reason, n)| format!("{reason} ×{n}"))
                .collect(),
        }
    });
    let mut view = StatusView {
        namespace: release.namespace().unwrap_or_default(),
        release: release.name_any(),
        target: release.spec.target.name.clone(),
        desired_version: release.spec.version.clone(),
        live_version: st.version.clone(),
        live_revision: st.revision,
        phase: st.phase,
        paused: paused(release),
        stale: st.observed_generation.unwrap_or(0) < release.metadata.generation.unwrap_or(0),
        conditions: st
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
            .collect(),
        blocked: st.blocked.clone(),
        contested: st.contested.clone(),
        pending: pending(release),
        rollback: st.rollback.clone().map(|rollback| RollbackView {
            timeline: timeline(&rollback),
            rollback,
        }),
        pods: live_pods,
        next: Vec::new(),
    };
    view.next = next_steps(release, &view);
    view
}

/// A rollback's steps that happened, oldest first, each with its time after detection.
pub fn timeline(rb: &Rollback) -> Vec<Step> {
    let detected = rb.detected_at.0;
    let step = |name: &str, detail: Option<String>, at: &Time| Step {
        step: name.into(),
        detail,
        at: at.clone(),
        after_seconds: seconds_between(detected, at.0),
    };
    let mut steps = vec![step("detected", None, &rb.detected_at)];
    if let Some(t) = &rb.started_at {
        steps.push(step("started", None, t));
    }
    for m in &rb.migrations {
        let Some(job) = &m.job else { continue };
        let Some(t) = &job.completed_at else { continue };
        let name = match m.phase {
            MigrationPhase::Succeeded => "migrated-down",
            MigrationPhase::Failed => "migration-failed",
            _ => continue,
        };
        let detail = format!(
            "{} → {} (schema {} → {}, Job {})",
            m.version,
            m.to_version,
            m.from_schema_version,
            if m.to_schema_version.is_empty() {
                "none"
            } else {
                &m.to_schema_version
            },
            job.name
        );
        steps.push(step(name, Some(detail), t));
    }
    if let Some(t) = &rb.images_restored_at {
        steps.push(step("images-restored", None, t));
    }
    if let Some(t) = &rb.completed_at {
        let name = if rb.phase == RollbackPhase::Failed {
            "failed"
        } else {
            "succeeded"
        };
        steps.push(step(name, None, t));
    }
    // Stable: equal times keep the order above.
    steps.sort_by_key(|s| s.at.0);
    steps
}

/// Seconds from `a` to `b`, to the millisecond.
pub fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    let ms = b.as_millisecond() - a.as_millisecond();
    ms as f64 / 1000.0
}

/// What a person can do next about a Release that is paused, blocked, stalled or halted: exact
/// commands, most useful first.
fn next_steps(release: &Release, view: &StatusView) -> Vec<Next> {
    let name = &view.release;
    let ns = &view.namespace;
    let rewind = |args: &str| format!("kubectl rewind {args} {name} -n {ns}");
    let mut next = Vec::new();
    if let Some(why) = &view.paused {
        if crate::decide::paused_by(release).is_some() {
            next.push(Next {
                why: format!("{why}; to let Rewind act on it again"),
                command: rewind("resume"),
            });
        }
        if release.spec.paused {
            next.push(Next {
                why: "spec.paused is true: set it to false where the Release is written (Git), or"
                    .into(),
                command: format!(
                    "kubectl patch release {name} -n {ns} --type merge -p '{{\"spec\":{{\"paused\":false}}}}'"
                ),
            });
        }
        return next;
    }
    if let Some(p) = &view.pending {
        next.push(Next {
            why: format!(
                "Rewind has not answered the request for {} yet; if it does not, check that the operator runs",
                p.to
            ),
            command: "kubectl get pods -A -l app.kubernetes.io/name=rewind".into(),
        });
    }
    let stalled = view
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::STALLED && c.status == "True");
    let rollback = view.rollback.as_ref().map(|r| &r.rollback);
    // A rollback halted at a failed down migration: its Job's logs, then retry from that step.
    if let Some(rb) = rollback.filter(|rb| rb.phase == RollbackPhase::Failed)
        && let Some(step) = rb
            .migrations
            .iter()
            .find(|m| m.phase == MigrationPhase::Failed)
    {
        if let Some(job) = &step.job {
            next.push(Next {
                why: format!("the down migration of {} failed: read why", step.version),
                command: format!("kubectl logs job/{} -n {ns}", job.name),
            });
        }
        next.push(Next {
            why: "once the database is fixed, go on from the failed step".into(),
            command: rewind("retry"),
        });
        return next;
    }
    if let Some(c) = stalled {
        match c.reason.as_str() {
            reasons::IMAGE_FIELD_CONTESTED => {
                let who = view
                    .contested
                    .as_ref()
                    .map(|c| format!("{} (container {})", c.manager, c.container))
                    .unwrap_or_else(|| "another field manager".into());
                next.push(Next {
                    why: format!(
                        "{who} keeps setting the image Rewind owns; stop it (leave image out of the Deployment in Git, see docs/gitops.md), then"
                    ),
                    command: rewind("retry"),
                });
            }
            reasons::TARGET_NOT_FOUND | reasons::CONTAINER_NOT_FOUND => next.push(Next {
                why: "check the target Deployment and its containers".into(),
                command: format!("kubectl get deployment {} -n {ns} -o yaml", view.target),
            }),
            reasons::TARGET_CLAIMED => next.push(Next {
                why: "another Release manages this Deployment".into(),
                command: format!("kubectl rewind list -n {ns}"),
            }),
            reasons::POLICY_ERROR => next.push(Next {
                why: "fix the RollbackPolicy named in the message".into(),
                command: format!("kubectl get rollbackpolicies -n {ns} -o wide"),
            }),
            reasons::MIGRATION_FAILED
            | reasons::MIGRATION_TIMED_OUT
            | reasons::MIGRATION_JOB_DELETED => {
                if let Some(job) = release.status.as_ref().and_then(|s| {
                    s.history
                        .iter()
                        .filter_map(|r| r.migration.as_ref()?.up_job.as_ref())
                        .find(|j| j.phase == MigrationPhase::Failed)
                }) {
                    next.push(Next {
                        why: "the up migration failed: read why".into(),
                        command: format!("kubectl logs job/{} -n {ns}", job.name),
                    });
                }
                next.push(Next {
                    why: "once fixed, run it again (or change spec.version)".into(),
                    command: rewind("retry"),
                });
            }
            reasons::ROLLBACK_FAILED => next.push(Next {
                why: "the rollback could not restore or verify its target: look at the Deployment"
                    .into(),
                command: format!("kubectl describe deployment {} -n {ns}", view.target),
            }),
            _ => {}
        }
    }
    if let Some(b) = &view.blocked {
        next.push(Next {
            why: format!(
                "{} is blocked after a rollback: release a fixed version (change spec.version), or deploy {} again as it is",
                b.version, b.version
            ),
            command: rewind("retry"),
        });
    }
    // A failure Rewind did not roll back (automatic: false, cooldown, no target): a person can.
    if matches!(view.phase, Some(Phase::Degraded))
        && let Some(target) = healthy_versions(release).into_iter().next()
    {
        next.push(Next {
            why: format!("the live revision failed and was not rolled back; {target} was healthy"),
            command: format!("kubectl rewind rollback {name} --to {target} -n {ns}"),
        });
    }
    if let Some(c) = view
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::MANUAL_ROLLBACK && c.status == "False")
        && c.reason == reasons::IRREVERSIBLE_MIGRATION
        && let Some(to) = release.annotations().get(labels::ROLLBACK_TO)
    {
        next.push(Next {
            why: "the requested rollback crosses an irreversible migration; to roll back anyway"
                .into(),
            command: format!(
                "kubectl rewind rollback {name} --to {to} --allow-irreversible -n {ns}"
            ),
        });
    }
    next
}

/// Versions a rollback may name, newest first: those whose newest revision was healthy and is
/// not the live one (a version names its newest revision).
pub fn healthy_versions(release: &Release) -> Vec<String> {
    let Some(st) = release.status.as_ref() else {
        return Vec::new();
    };
    let mut newest: std::collections::BTreeMap<&str, &Revision> = Default::default();
    for r in &st.history {
        let e = newest.entry(r.version.as_str()).or_insert(r);
        if r.revision > e.revision {
            *e = r;
        }
    }
    let mut ok: Vec<&Revision> = newest
        .into_values()
        .filter(|r| r.healthy_at.is_some() && r.outcome != crate::api::Outcome::Failed)
        .filter(|r| Some(r.revision) != st.revision)
        .collect();
    ok.sort_by_key(|r| std::cmp::Reverse(r.revision));
    ok.into_iter().map(|r| r.version.clone()).collect()
}

/// Short form of a digest for tables: the first 12 hex digits.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::text::{NAME_MAX, bounded_key};

    fn release(annotations: &[(&str, &str)], status: serde_json::Value) -> Release {
        let a: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rewind.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "shop", "namespace": "ns", "annotations": a},
            "spec": {"version": "2.0.0", "target": {"kind": "Deployment", "name": "shop"},
                     "images": [{"container": "c", "image": "r/c:2"}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_request_is_pending_until_answered_by_the_operators_own_rule() {
        let to = labels::ROLLBACK_TO;
        let id = labels::REQUEST_ID;
        let handled = |v: &str, i: Option<&str>| serde_json::json!({"handled": {"rollbackTo": v, "requestId": i}});
        // (what, annotations, status, pending)
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, serde_json::Value, bool);
        let cases: Vec<Case> = vec![
            (
                "answered, same id and value",
                vec![(to, "1.0.0"), (id, "a")],
                handled("1.0.0", Some("a")),
                false,
            ),
            (
                "a new id",
                vec![(to, "1.0.0"), (id, "b")],
                handled("1.0.0", Some("a")),
                true,
            ),
            (
                "the same id, another value",
                vec![(to, "1.1.0"), (id, "a")],
                handled("1.0.0", Some("a")),
                true,
            ),
            (
                "no status yet",
                vec![(to, "1.0.0"), (id, "a")],
                serde_json::json!({}),
                true,
            ),
            (
                "no id, value handled",
                vec![(to, "1.0.0")],
                handled("1.0.0", None),
                false,
            ),
            (
                "no id, another value",
                vec![(to, "1.1.0")],
                handled("1.0.0", None),
                true,
            ),
            (
                "an id, refused as irreversible (value not used up)",
                vec![(to, "1.0.0"), (id, "a")],
                serde_json::json!({"handled": {"requestId": "a"}}),
                false,
            ),
            (
                "no id, refused as irreversible",
                vec![(to, "1.0.0")],
                serde_json::json!({"conditions": [{
                    "type": "ManualRollback", "status": "False", "reason": "IrreversibleMigration",
                    "message": "rollback to \"1.0.0\" (annotation rewind.dev/rollback-to on the Release) refused: …",
                    "lastTransitionTime": "2026-11-26T10:00:00Z"}]}),
                false,
            ),
            ("nothing asked", vec![], handled("1.0.0", Some("a")), false),
        ];
        for (what, annotations, status, pending_expected) in cases {
            let r = release(&annotations, status);
            assert_eq!(pending(&r).is_some(), pending_expected, "{what}");
        }
        // Values and ids past the bound are compared as the operator keeps them.
        let long = "9".repeat(400);
        let r = release(
            &[(to, &long), (id, &long)],
            handled(
                &bounded_key(&long, NAME_MAX),
                Some(&bounded_key(&long, NAME_MAX)),
            ),
        );
        assert!(pending(&r).is_none(), "bounded forms match");
    }
}
