//! Cache trimming: keep only what decisions read, so thousands of Deployments and Pods cost
//! little memory.

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    batch::v1::Job,
    core::v1::Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::ResourceExt;

use crate::labels;

fn keep_annotations(map: &mut Option<std::collections::BTreeMap<String, String>>, keys: &[&str]) {
    if let Some(m) = map {
        m.retain(|k, _| keys.contains(&k.as_str()));
    }
}

/// Deployments: metadata we read, the template's containers (name and image), pull secrets and
/// service account (for registry lookups), the selector and the status.
pub fn deployment(d: &mut Deployment) {
    // Of managedFields, only who owns each container's image (to name a manager that
    // overrides one), rebuilt small: one entry per manager, its images only.
    let owners = crate::decide::views::image_managers(&d.metadata);
    let mut by_manager: std::collections::BTreeMap<
        String,
        serde_json::Map<String, serde_json::Value>,
    > = Default::default();
    for (container, managers) in owners {
        for m in managers {
            by_manager.entry(m).or_default().insert(
                format!("k:{}", serde_json::json!({"name": container})),
                serde_json::json!({"f:image": {}}),
            );
        }
    }
    d.metadata.managed_fields = Some(
        by_manager
            .into_iter()
            .map(|(manager, containers)| ManagedFieldsEntry {
                manager: Some(manager),
                fields_type: Some("FieldsV1".into()),
                fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:template": {"f:spec": {"f:containers": containers}}}}))),
                ..Default::default()
            })
            .collect(),
    );
    keep_annotations(
        &mut d.metadata.annotations,
        &[labels::ROLLBACK_TO, labels::REQUESTED_BY],
    );
    d.metadata.labels = None;
    if let Some(spec) = d.spec.as_mut() {
        spec.strategy = None;
        let t = &mut spec.template;
        if let Some(m) = t.metadata.as_mut() {
            keep_annotations(&mut m.annotations, &[labels::REVISION, labels::VERSION]);
        }
        if let Some(ps) = t.spec.as_mut() {
            let keep = |c: &mut k8s_openapi::api::core::v1::Container| {
                *c = k8s_openapi::api::core::v1::Container {
                    name: std::mem::take(&mut c.name),
                    image: c.image.take(),
                    ..Default::default()
                };
            };
            ps.containers.iter_mut().for_each(keep);
            ps.init_containers.iter_mut().flatten().for_each(keep);
            *ps = k8s_openapi::api::core::v1::PodSpec {
                containers: std::mem::take(&mut ps.containers),
                init_containers: ps.init_containers.take(),
                image_pull_secrets: ps.image_pull_secrets.take(),
                service_account_name: ps.service_account_name.take(),
                ..Default::default()
            };
        }
    }
}

/// Keep only the controller owner reference (what ties an object to its ReplicaSet or
/// Deployment).
fn keep_controller(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    if let Some(owners) = meta.owner_references.as_mut() {
        owners.retain(|o| o.controller == Some(true));
    }
}

/// ReplicaSets: uid, our label, the controller owner and the template's revision annotation.
pub fn replica_set(rs: &mut ReplicaSet) {
    rs.managed_fields_mut().clear();
    rs.metadata.annotations = None;
    if let Some(l) = rs.metadata.labels.as_mut() {
        l.retain(|k, _| k == labels::RELEASE);
    }
    keep_controller(&mut rs.metadata);
    rs.status = None;
    if let Some(spec) = rs.spec.as_mut()
        && let Some(t) = spec.template.as_mut()
    {
        t.spec = None;
        if let Some(m) = t.metadata.as_mut() {
            m.labels = None;
            keep_annotations(&mut m.annotations, &[labels::REVISION]);
        }
    }
}

/// Jobs: name, uid, our label, the controller owner, deletion and the status conditions.
pub fn job(j: &mut Job) {
    j.managed_fields_mut().clear();
    j.metadata.annotations = None;
    if let Some(l) = j.metadata.labels.as_mut() {
        l.retain(|k, _| k == labels::RELEASE);
    }
    keep_controller(&mut j.metadata);
    j.spec = None;
    if let Some(s) = j.status.as_mut() {
        *s = k8s_openapi::api::batch::v1::JobStatus {
            conditions: s.conditions.take(),
            ..Default::default()
        };
    }
}

/// Pods: name, labels and annotations of ours, and the status parts health checks read.
pub fn pod(p: &mut Pod) {
    p.managed_fields_mut().clear();
    keep_annotations(&mut p.metadata.annotations, &[labels::REVISION]);
    if let Some(l) = p.metadata.labels.as_mut() {
        l.retain(|k, _| k == labels::RELEASE);
    }
    keep_controller(&mut p.metadata);
    p.spec = None;
    if let Some(s) = p.status.as_mut() {
        *s = k8s_openapi::api::core::v1::PodStatus {
            conditions: s
                .conditions
                .take()
                .map(|cs| cs.into_iter().filter(|c| c.type_ == "Ready").collect()),
            container_statuses: s.container_statuses.take(),
            init_container_statuses: s.init_container_statuses.take(),
            phase: s.phase.take(),
            ..Default::default()
        };
        for c in s
            .container_statuses
            .iter_mut()
            .flatten()
            .chain(s.init_container_statuses.iter_mut().flatten())
        {
            c.last_state = None;
            c.resources = None;
            c.volume_mounts = None;
            c.allocated_resources = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::views::{PodView, ReplicaSetView, Workload};
    use serde_json::json;

    #[test]
    fn trimming_keeps_what_decisions_read() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "a", "generation": 2, "annotations": {"rewind.dev/rollback-to": "1.0.0", "big": "x"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}}, "template": {
                "metadata": {"labels": {"app": "a"}, "annotations": {"rewind.dev/revision": "4", "other": "y"}},
                "spec": {"containers": [{"name": "api", "image": "r/api:1", "env": [{"name": "X", "value": "1"}]}],
                         "volumes": [{"name": "v", "emptyDir": {}}]}}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        }))
        .unwrap();
        let before = Workload::from(&d);
        deployment(&mut d);
        assert_eq!(Workload::from(&d), before);
        assert!(
            d.metadata.managed_fields.is_none()
                || d.metadata.managed_fields.as_ref().unwrap().is_empty()
        );
        let ps = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(ps.volumes.is_none() && ps.containers[0].env.is_none());

        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a-1", "labels": {"rewind.dev/release": "a", "pod-template-hash": "x"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a-x", "uid": "rs-uid", "controller": true},
                                             {"apiVersion": "v1", "kind": "Other", "name": "o", "uid": "o"}],
                         "annotations": {"rewind.dev/revision": "4", "other": "z"}, "creationTimestamp": "2026-11-26T10:00:00Z"},
            "spec": {"containers": [{"name": "api", "image": "r/api:1"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "api", "image": "r/api:1", "imageID": "", "ready": true, "restartCount": 1}]}
        }))
        .unwrap();
        let before = PodView::from(&p);
        pod(&mut p);
        assert_eq!(PodView::from(&p), before);
        assert_eq!(before.owner.as_deref(), Some("rs-uid"));

        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "a-5d9", "uid": "rs-uid", "labels": {"rewind.dev/release": "a", "app": "a"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "a", "uid": "d", "controller": true}]},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {"rewind.dev/revision": "4", "other": "z"}},
                     "spec": {"containers": [{"name": "api", "image": "r/api:1"}]}}},
            "status": {"replicas": 2}
        }))
        .unwrap();
        let before = ReplicaSetView::from(&rs);
        replica_set(&mut rs);
        assert_eq!(ReplicaSetView::from(&rs), before);
        assert!(rs.status.is_none() && rs.spec.unwrap().template.unwrap().spec.is_none());
        assert!(p.spec.is_none());
        assert_eq!(p.labels().len(), 1);
    }
}
