//! Cache trimming: keep only what decisions read, so thousands of Deployments and Pods cost
//! little memory.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
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
    d.managed_fields_mut().clear();
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

/// Pods: name, labels and annotations of ours, and the status parts health checks read.
pub fn pod(p: &mut Pod) {
    p.managed_fields_mut().clear();
    keep_annotations(&mut p.metadata.annotations, &[labels::REVISION]);
    if let Some(l) = p.metadata.labels.as_mut() {
        l.retain(|k, _| k == labels::RELEASE);
    }
    p.metadata.owner_references = None;
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
    use crate::decide::views::{PodView, Workload};
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
                         "annotations": {"rewind.dev/revision": "4", "other": "z"}, "creationTimestamp": "2026-11-26T10:00:00Z"},
            "spec": {"containers": [{"name": "api", "image": "r/api:1"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "api", "image": "r/api:1", "imageID": "", "ready": true, "restartCount": 1}]}
        }))
        .unwrap();
        let before = PodView::from(&p);
        pod(&mut p);
        assert_eq!(PodView::from(&p), before);
        assert!(p.spec.is_none());
        assert_eq!(p.labels().len(), 1);
    }
}
