//! Applying the fields Rewind owns to a Deployment's pod template, with server-side apply:
//! container images, the `rewind.dev/release` label and the revision/version annotations.
//! Nothing else — never replicas, resources or anything an autoscaler or GitOps tool owns.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

#[cfg(test)]
use crate::decide::TemplateContainer;
use crate::{decide::Template, labels};

/// The apply configuration for `template` on Deployment `name`.
pub fn apply_config(name: &str, namespace: &str, release: &str, template: &Template) -> Value {
    let entries = |init: bool| -> Vec<Value> {
        template
            .containers
            .iter()
            .filter(|c| c.init == init)
            .map(|c| json!({"name": c.name, "image": c.image}))
            .collect()
    };
    let (containers, init) = (entries(false), entries(true));
    let mut pod_spec = json!({});
    if !containers.is_empty() {
        pod_spec["containers"] = Value::Array(containers);
    }
    if !init.is_empty() {
        pod_spec["initContainers"] = Value::Array(init);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {
            "metadata": {
                "labels": {labels::RELEASE: release},
                "annotations": {
                    labels::REVISION: template.revision.to_string(),
                    labels::VERSION: template.version,
                },
            },
            "spec": pod_spec,
        }},
    })
}

/// Apply `template` to the Deployment (field manager `rewind`, forced: these fields are ours).
#[tracing::instrument(skip(api, template), fields(revision = template.revision), err)]
pub async fn apply(
    api: &Api<Deployment>,
    name: &str,
    release: &str,
    template: &Template,
) -> Result<(), kube::Error> {
    let namespace = api.namespace().unwrap_or_default().to_owned();
    let config = apply_config(name, &namespace, release, template);
    api.patch(
        name,
        &PatchParams::apply(labels::MANAGER).force(),
        &Patch::Apply(config),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_only_images_label_and_annotations() {
        let t = Template {
            revision: 3,
            version: "1.4.0".into(),
            containers: vec![
                TemplateContainer {
                    name: "api".into(),
                    image: "r/api@sha256:aa".into(),
                    init: false,
                },
                TemplateContainer {
                    name: "setup".into(),
                    image: "r/setup:1".into(),
                    init: true,
                },
            ],
        };
        let c = apply_config("shop", "ns", "shop-release", &t);
        assert_eq!(
            c["spec"]["template"]["metadata"]["annotations"]["rewind.dev/revision"],
            "3"
        );
        assert_eq!(
            c["spec"]["template"]["metadata"]["labels"]["rewind.dev/release"],
            "shop-release"
        );
        assert_eq!(
            c["spec"]["template"]["spec"]["containers"],
            json!([{"name": "api", "image": "r/api@sha256:aa"}])
        );
        assert_eq!(
            c["spec"]["template"]["spec"]["initContainers"],
            json!([{"name": "setup", "image": "r/setup:1"}])
        );
        let spec = c["spec"].as_object().unwrap();
        assert_eq!(
            spec.keys().collect::<Vec<_>>(),
            ["template"],
            "nothing but the template: {spec:?}"
        );
    }
}
