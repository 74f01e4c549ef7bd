//! What the decisions look at: small views of a Deployment and its Pods, taken from the
//! Kubernetes objects so the decisions can be tested with plain values.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    batch::v1::Job,
    core::v1::Pod,
};

use crate::{image::digest_from_image_id, labels};

/// The parts of the target Deployment that decisions need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    /// metadata.uid: a Deployment deleted and created again under the same name has another.
    pub uid: String,
    /// metadata.generation.
    pub generation: i64,
    /// status.observedGeneration.
    pub observed_generation: i64,
    /// spec.replicas (1 when unset).
    pub replicas: i32,
    /// status.updatedReplicas.
    pub updated: i32,
    /// status.availableReplicas.
    pub available: i32,
    /// status.replicas (all pods, old and new).
    pub total: i32,
    /// The Rewind revision in the pod template's annotations.
    pub template_revision: Option<i64>,
    /// Container name → image in the pod template (containers and init containers).
    pub images: BTreeMap<String, ContainerSlot>,
    /// The Progressing condition says ProgressDeadlineExceeded.
    pub progress_deadline_exceeded: bool,
    /// `rewind.dev/rollback-to` on the Deployment.
    pub rollback_to: Option<String>,
    /// `rewind.dev/requested-by` on the Deployment.
    pub requested_by: Option<String>,
    /// Container name → the field managers that own its `image` (from managedFields).
    pub image_managers: BTreeMap<String, Vec<String>>,
}

/// A container in the pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSlot {
    /// Its image (empty when the manifest leaves it to Rewind).
    pub image: String,
    /// An init container.
    pub init: bool,
}

impl Workload {
    /// The rollout of the current template has finished and every replica is available.
    pub fn rolled_out(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= self.replicas
            && self.available >= self.replicas
            && self.total <= self.updated
    }
}

impl From<&Deployment> for Workload {
    fn from(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        let status = d.status.as_ref();
        let template = spec.map(|s| &s.template);
        let pod_spec = template.and_then(|t| t.spec.as_ref());
        let mut images = BTreeMap::new();
        if let Some(ps) = pod_spec {
            for (c, init) in ps
                .init_containers
                .iter()
                .flatten()
                .map(|c| (c, true))
                .chain(ps.containers.iter().map(|c| (c, false)))
            {
                let image = c.image.clone().unwrap_or_default();
                images.insert(c.name.clone(), ContainerSlot { image, init });
            }
        }
        Workload {
            uid: d.metadata.uid.clone().unwrap_or_default(),
            generation: d.metadata.generation.unwrap_or(0),
            observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
            replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            available: status.and_then(|s| s.available_replicas).unwrap_or(0),
            total: status.and_then(|s| s.replicas).unwrap_or(0),
            template_revision: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(labels::REVISION))
                .and_then(|r| r.parse().ok()),
            images,
            progress_deadline_exceeded: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_ == "Progressing"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                }),
            rollback_to: d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::ROLLBACK_TO))
                .filter(|v| !v.is_empty())
                .cloned(),
            requested_by: d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::REQUESTED_BY))
                .cloned(),
            image_managers: image_managers(&d.metadata),
        }
    }
}

/// Container name → the field managers that own its `image` in the pod template, read from
/// managedFields (`f:spec.f:template.f:spec.f:containers.k:{"name":…}.f:image`).
pub fn image_managers(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, Vec<String>> {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in meta.managed_fields.iter().flatten() {
        if entry.subresource.as_deref().is_some_and(|s| !s.is_empty()) {
            continue;
        }
        let (Some(manager), Some(fields)) = (&entry.manager, &entry.fields_v1) else {
            continue;
        };
        let Some(pod) = fields
            .0
            .get("f:spec")
            .and_then(|s| s.get("f:template"))
            .and_then(|t| t.get("f:spec"))
        else {
            continue;
        };
        for list in ["f:containers", "f:initContainers"] {
            let Some(items) = pod.get(list).and_then(|l| l.as_object()) else {
                continue;
            };
            for (key, owned) in items {
                let name = key
                    .strip_prefix("k:")
                    .and_then(|k| serde_json::from_str::<serde_json::Value>(k).ok())
                    .and_then(|k| k.get("name")?.as_str().map(String::from));
                if let Some(name) = name
                    && owned.get("f:image").is_some()
                {
                    let managers = owners.entry(name).or_default();
                    if !managers.contains(manager) {
                        managers.push(manager.clone());
                    }
                }
            }
        }
    }
    owners
}

/// The parts of a Pod that decisions need.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// Pod name, for messages.
    pub name: String,
    /// The Rewind revision it was created for.
    pub revision: Option<i64>,
    /// UID of the ReplicaSet that controls it (its controller owner reference), if any.
    pub owner: Option<String>,
    /// When it was created.
    pub created: Timestamp,
    /// Being deleted (ignored by health checks).
    pub terminating: bool,
    /// Its Ready condition is True.
    pub ready: bool,
    /// When the Ready condition last changed.
    pub ready_changed: Option<Timestamp>,
    /// Container statuses (regular containers; init containers too).
    pub containers: Vec<ContainerView>,
}

/// The parts of a container status that decisions need.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Digest from imageID, when the image was pulled.
    pub digest: Option<String>,
    /// Restarts so far.
    pub restarts: i32,
    /// Reason of a waiting state (CrashLoopBackOff, ImagePullBackOff, …).
    pub waiting: Option<String>,
}

impl From<&Pod> for PodView {
    fn from(p: &Pod) -> Self {
        let status = p.status.as_ref();
        let ready_condition = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        let containers = status
            .into_iter()
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .map(|c| ContainerView {
                name: c.name.clone(),
                digest: digest_from_image_id(&c.image_id).map(String::from),
                restarts: c.restart_count,
                waiting: c
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.clone()),
            })
            .collect();
        PodView {
            name: p.metadata.name.clone().unwrap_or_default(),
            revision: p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::REVISION))
                .and_then(|r| r.parse().ok()),
            owner: controller_of(&p.metadata, "ReplicaSet"),
            created: p
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            terminating: p.metadata.deletion_timestamp.is_some(),
            ready: ready_condition.is_some_and(|c| c.status == "True"),
            ready_changed: ready_condition
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            containers,
        }
    }
}

/// The UID of the controller owner of kind `kind`, if any.
fn controller_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.uid.clone())
}

/// The parts of a ReplicaSet that tie pods to a Deployment and a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSetView {
    /// metadata.uid (what its pods' owner reference names).
    pub uid: String,
    /// UID of the Deployment that controls it.
    pub deployment: Option<String>,
    /// The Rewind revision in its pod template's annotations.
    pub revision: Option<i64>,
}

impl From<&ReplicaSet> for ReplicaSetView {
    fn from(rs: &ReplicaSet) -> Self {
        ReplicaSetView {
            uid: rs.metadata.uid.clone().unwrap_or_default(),
            deployment: controller_of(&rs.metadata, "Deployment"),
            revision: rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(labels::REVISION))
                .and_then(|r| r.parse().ok()),
        }
    }
}

/// The pods that count for a revision: those controlled by a ReplicaSet of the target
/// Deployment (by UID) whose template carries the same revision. A pod that only carries our
/// label and annotation (a copied manifest, a bare pod, the pods of a deleted Deployment of the
/// same name) is left out, so it can neither make a revision healthy nor fail it.
pub fn owned_pods(
    deployment_uid: &str,
    replica_sets: &[ReplicaSetView],
    pods: Vec<PodView>,
) -> Vec<PodView> {
    pods.into_iter()
        .filter(|p| {
            p.revision.is_some()
                && replica_sets.iter().any(|rs| {
                    Some(&rs.uid) == p.owner.as_ref()
                        && rs.deployment.as_deref() == Some(deployment_uid)
                        && rs.revision == p.revision
                })
        })
        .collect()
}

/// Everything observed about one Release's workload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The target Deployment, if it exists.
    pub workload: Option<Workload>,
    /// Pods of the Release (label `rewind.dev/release`), plus, before adoption, the pods the
    /// Deployment already ran.
    pub pods: Vec<PodView>,
    /// The Release's migration Jobs (label `rewind.dev/release`, owned by the Release).
    pub jobs: Vec<JobView>,
}

/// The parts of a migration Job that decisions need.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    /// metadata.name.
    pub name: String,
    /// metadata.uid.
    pub uid: String,
    /// Being deleted.
    pub deleting: bool,
    /// How it stands.
    pub state: JobState,
    /// The digest its pod reports for the migration image (imageID), once pulled.
    pub digest: Option<String>,
    /// The termination message of its failed container, when there is one.
    pub termination_message: Option<String>,
}

/// Where a Job stands, from its final conditions.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Neither Complete nor Failed yet.
    Running,
    /// Condition Complete is True (since `at`).
    Succeeded {
        /// When it completed.
        at: Timestamp,
    },
    /// Condition Failed is True.
    Failed {
        /// When it failed.
        at: Timestamp,
        /// The condition's reason: DeadlineExceeded, BackoffLimitExceeded, …
        reason: String,
        /// The condition's message.
        message: String,
    },
}

impl JobView {
    /// From a Job and the pods it controls.
    pub fn new(job: &Job, pods: &[&Pod]) -> JobView {
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let holds = |type_: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == "True")
        };
        let at = |c: &k8s_openapi::api::batch::v1::JobCondition| {
            c.last_transition_time
                .as_ref()
                .or(c.last_probe_time.as_ref())
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
        };
        let state = if let Some(c) = holds("Complete") {
            JobState::Succeeded { at: at(c) }
        } else if let Some(c) = holds("Failed") {
            JobState::Failed {
                at: at(c),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            }
        } else {
            JobState::Running
        };
        let statuses = || {
            pods.iter()
                .filter_map(|p| p.status.as_ref())
                .flat_map(|s| s.container_statuses.iter().flatten())
        };
        let digest = statuses().find_map(|c| digest_from_image_id(&c.image_id).map(String::from));
        let termination_message = statuses()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
            .filter(|t| t.exit_code != 0)
            .find_map(|t| t.message.clone().filter(|m| !m.trim().is_empty()));
        JobView {
            name: job.metadata.name.clone().unwrap_or_default(),
            uid: job.metadata.uid.clone().unwrap_or_default(),
            deleting: job.metadata.deletion_timestamp.is_some(),
            state,
            digest,
            termination_message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_deployment() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "a", "generation": 4, "annotations": {"rewind.dev/rollback-to": "1.0.0"}},
            "spec": {"replicas": 3, "selector": {}, "template": {
                "metadata": {"annotations": {"rewind.dev/revision": "2"}},
                "spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                         "containers": [{"name": "api", "image": "example.com/api:1.0"}, {"name": "side"}]}}},
            "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
                       "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
        }))
        .unwrap();
        let w = Workload::from(&d);
        assert_eq!(w.template_revision, Some(2));
        assert_eq!(w.rollback_to.as_deref(), Some("1.0.0"));
        assert!(w.progress_deadline_exceeded);
        assert!(w.rolled_out());
        assert_eq!(
            w.images["init"],
            ContainerSlot {
                image: "busybox".into(),
                init: true
            }
        );
        assert_eq!(w.images["side"].image, "");
    }

    #[test]
    fn a_rollout_with_old_pods_left_is_not_done() {
        let w = Workload {
            generation: 2,
            observed_generation: 2,
            replicas: 3,
            updated: 3,
            available: 3,
            total: 4,
            ..Default::default()
        };
        assert!(!w.rolled_out());
        let stale = Workload {
            observed_generation: 1,
            total: 3,
            ..w.clone()
        };
        assert!(!stale.rolled_out());
    }

    fn pod_of(revision: Option<i64>, owner: Option<&str>) -> PodView {
        PodView {
            name: format!("p-{revision:?}-{owner:?}"),
            revision,
            owner: owner.map(String::from),
            created: Timestamp::UNIX_EPOCH,
            terminating: false,
            ready: true,
            ready_changed: None,
            containers: Vec::new(),
        }
    }

    #[test]
    fn only_pods_of_the_targets_replica_sets_count() {
        let sets = [
            ReplicaSetView {
                uid: "rs-2".into(),
                deployment: Some("dep".into()),
                revision: Some(2),
            },
            ReplicaSetView {
                uid: "rs-other".into(),
                deployment: Some("another-dep".into()),
                revision: Some(2),
            },
        ];
        let pods = vec![
            pod_of(Some(2), Some("rs-2")),     // counts
            pod_of(Some(3), Some("rs-2")),     // annotation disagrees with its ReplicaSet
            pod_of(Some(2), Some("rs-other")), // another Deployment's ReplicaSet
            pod_of(Some(2), None),             // a bare pod with our label
            pod_of(Some(2), Some("rs-gone")),  // a ReplicaSet not (yet) seen
            pod_of(None, Some("rs-2")),        // no revision
        ];
        let kept: Vec<String> = owned_pods("dep", &sets, pods)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(kept, [pod_of(Some(2), Some("rs-2")).name]);
    }

    #[test]
    fn reads_a_replica_set() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "a-5d9", "uid": "rs-uid", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a", "uid": "dep-uid", "controller": true}]},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {"rewind.dev/revision": "7"}}}}
        }))
        .unwrap();
        assert_eq!(
            ReplicaSetView::from(&rs),
            ReplicaSetView {
                uid: "rs-uid".into(),
                deployment: Some("dep-uid".into()),
                revision: Some(7)
            }
        );
    }

    #[test]
    fn reads_a_pod() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a-1", "creationTimestamp": "2026-11-26T10:00:00Z", "annotations": {"rewind.dev/revision": "3"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a-5d9", "uid": "rs-uid", "controller": true}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-26T10:00:05Z"}],
                "containerStatuses": [{"name": "api", "image": "x", "imageID": format!("docker-pullable://x@{d}"), "ready": false,
                    "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        let v = PodView::from(&p);
        assert_eq!(v.revision, Some(3));
        assert_eq!(v.owner.as_deref(), Some("rs-uid"));
        assert!(!v.ready);
        assert_eq!(
            v.ready_changed,
            Some("2026-11-26T10:00:05Z".parse().unwrap())
        );
        assert_eq!(v.containers[0].digest.as_deref(), Some(d));
        assert_eq!(v.containers[0].restarts, 4);
        assert_eq!(v.containers[0].waiting.as_deref(), Some("CrashLoopBackOff"));
    }
}
