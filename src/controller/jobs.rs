//! Writing the migration Jobs the planner asks for. A Job is created, never patched: its name
//! is deterministic, so creating it again (after a restart, or while the cache has not seen
//! it yet) finds the same Job, and AlreadyExists means the step is already under way.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            ConfigMapEnvSource, ConfigMapKeySelector, Container, EnvFromSource, EnvVar,
            EnvVarSource, PodSpec, PodTemplateSpec, ResourceRequirements, SecretEnvSource,
            SecretKeySelector,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{Api, Resource, ResourceExt, api::PostParams};

use crate::{
    api::{MigrationEnvFrom, MigrationEnvVar, Release},
    decide::JobRequest,
    labels,
};

/// The Job for `request`, owned by `release` (deleted with it).
pub fn job_for(release: &Release, request: &JobRequest) -> Job {
    let m = &request.migration;
    let mut labels_ = BTreeMap::from([
        (labels::RELEASE.to_owned(), release.name_any()),
        (
            labels::MIGRATION.to_owned(),
            request.kind.as_str().to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            labels::MANAGER.to_owned(),
        ),
    ]);
    let mut annotations = BTreeMap::from([
        (labels::REVISION.to_owned(), request.revision.to_string()),
        (labels::VERSION.to_owned(), request.version.clone()),
    ]);
    if let Some(id) = &request.rollback_id {
        annotations.insert(labels::ROLLBACK_ID.to_owned(), id.clone());
    }
    let env: Vec<EnvVar> = request
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .chain(m.env.iter().map(env_var))
        .collect();
    let resources = m.resources.as_ref().map(|r| {
        let quantities = |map: &BTreeMap<String, String>| {
            (!map.is_empty()).then(|| {
                map.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect()
            })
        };
        ResourceRequirements {
            requests: quantities(&r.requests),
            limits: quantities(&r.limits),
            ..Default::default()
        }
    });
    let container = Container {
        name: "migrate".into(),
        image: Some(request.image.clone()),
        command: (!request.command.command.is_empty()).then(|| request.command.command.clone()),
        args: (!request.command.args.is_empty()).then(|| request.command.args.clone()),
        env: Some(env),
        env_from: (!m.env_from.is_empty()).then(|| m.env_from.iter().map(env_from).collect()),
        resources,
        // A failing script that writes no termination message still says why: its last log
        // lines become the message, which Rewind puts in the Event and status.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let owner = release.controller_owner_ref(&()).map(|mut o| {
        // Deleting the Job's owner must not wait on it (that needs update on releases/finalizers).
        o.block_owner_deletion = None;
        o
    });
    labels_.retain(|_, v| !v.is_empty());
    Job {
        metadata: ObjectMeta {
            name: Some(request.name.clone()),
            namespace: release.namespace(),
            labels: Some(labels_.clone()),
            annotations: Some(annotations.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                i64::try_from(request.deadline.as_secs()).unwrap_or(i64::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels_),
                    annotations: Some(
                        m.pod_annotations
                            .clone()
                            .into_iter()
                            .chain(annotations)
                            .collect(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: m.service_account_name.clone(),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn env_var(v: &MigrationEnvVar) -> EnvVar {
    let value_from = v.value_from.as_ref().map(|s| EnvVarSource {
        secret_key_ref: s.secret_key_ref.as_ref().map(|k| SecretKeySelector {
            name: k.name.clone(),
            key: k.key.clone(),
            optional: k.optional,
        }),
        config_map_key_ref: s.config_map_key_ref.as_ref().map(|k| ConfigMapKeySelector {
            name: k.name.clone(),
            key: k.key.clone(),
            optional: k.optional,
        }),
        ..Default::default()
    });
    EnvVar {
        name: v.name.clone(),
        value: v.value.clone(),
        value_from,
    }
}

fn env_from(e: &MigrationEnvFrom) -> EnvFromSource {
    EnvFromSource {
        secret_ref: e.secret_ref.as_ref().map(|r| SecretEnvSource {
            name: r.name.clone(),
            optional: r.optional,
        }),
        config_map_ref: e.config_map_ref.as_ref().map(|r| ConfigMapEnvSource {
            name: r.name.clone(),
            optional: r.optional,
        }),
        prefix: e.prefix.clone(),
    }
}

/// Create the Job; one that exists already (this step, created before) is not an error.
/// Returns true when this call created it.
pub async fn create(api: &Api<Job>, job: &Job) -> Result<bool, kube::Error> {
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{KeyRef, MigrationCommand, MigrationEnvSource, ObjectRef, PinnedMigration},
        decide::MigrationKind,
    };
    use serde_json::json;

    #[test]
    fn a_down_job_runs_once_with_its_deadline_env_and_owner() {
        let mut release = Release::new(
            "shop",
            serde_json::from_value(json!({"version": "1.0.0", "target": {"name": "shop"}, "images": [{"container": "api", "image": "r/api:1"}]}))
                .unwrap(),
        );
        release.metadata.namespace = Some("ns".into());
        release.metadata.uid = Some("uid-1".into());
        let request = JobRequest {
            name: "shop-down-r2-r1-0a1b2c3d".into(),
            kind: MigrationKind::Down,
            revision: 2,
            version: "2.0.0".into(),
            rollback_id: Some("uid-1-2-1-100".into()),
            image: "r/migrate@sha256:aa".into(),
            command: MigrationCommand {
                command: vec!["migrate".into()],
                args: vec!["down".into()],
            },
            env: vec![("REWIND_FROM_VERSION".into(), "2.0.0".into())],
            migration: PinnedMigration {
                image: "r/migrate:2".into(),
                digest: None,
                resolved_from: None,
                schema_version: "2".into(),
                reversible: true,
                down: None,
                service_account_name: Some("migrator".into()),
                env: vec![MigrationEnvVar {
                    name: "DB_PASSWORD".into(),
                    value: None,
                    value_from: Some(MigrationEnvSource {
                        secret_key_ref: Some(KeyRef {
                            name: "db".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        config_map_key_ref: None,
                    }),
                }],
                env_from: vec![MigrationEnvFrom {
                    secret_ref: None,
                    config_map_ref: Some(ObjectRef {
                        name: "db-config".into(),
                        optional: None,
                    }),
                    prefix: Some("DB_".into()),
                }],
                resources: None,
                pod_annotations: BTreeMap::from([(
                    "sidecar.istio.io/inject".into(),
                    "false".into(),
                )]),
                up_job: None,
            },
            deadline: std::time::Duration::from_secs(600),
        };
        let job = serde_json::to_value(job_for(&release, &request)).unwrap();
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
        assert_eq!(job["metadata"]["labels"]["rewind.dev/release"], "shop");
        assert_eq!(job["metadata"]["labels"]["rewind.dev/migration"], "down");
        assert_eq!(
            job["metadata"]["annotations"]["rewind.dev/rollback-id"],
            "uid-1-2-1-100"
        );
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "Release");
        assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);
        let pod = &job["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["rewind.dev/release"], "shop");
        assert_eq!(
            pod["metadata"]["annotations"]["sidecar.istio.io/inject"],
            "false"
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["serviceAccountName"], "migrator");
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["image"], "r/migrate@sha256:aa");
        assert_eq!(c["command"], json!(["migrate"]));
        assert_eq!(c["args"], json!(["down"]));
        assert_eq!(
            c["env"],
            json!([
                {"name": "REWIND_FROM_VERSION", "value": "2.0.0"},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
            ])
        );
        assert_eq!(
            c["envFrom"],
            json!([{"configMapRef": {"name": "db-config"}, "prefix": "DB_"}])
        );
        assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    }
}
