//! Gathering what a decision looks at: the target Deployment, its ReplicaSets and the
//! Release's pods, from the watch caches (every reconcile) or straight from the API server (to
//! confirm a verdict the caches led to); plus registry credentials and, when Rewind takes a
//! Deployment over, the pods it ran before.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    batch::v1::Job,
    core::v1::{Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::reflector::{ObjectRef, Store},
};
use tracing::warn;

use super::{Context, error::Error, trim};
use crate::{
    api::Release,
    decide::{
        self,
        views::{JobView, Observed, PodView, ReplicaSetView, Workload, owned_pods},
    },
    labels,
    registry::Credentials,
};

/// The target Deployment as seen, and the observations made from it.
pub(super) struct Seen {
    /// The Deployment (trimmed), if it exists.
    pub deployment: Option<Deployment>,
    /// What the planner looks at.
    pub observed: Observed,
}

/// From the watch caches.
pub(super) async fn from_caches(ctx: &Context, release: &Release, ns: &str) -> Result<Seen, Error> {
    let name = release.name_any();
    let target = &release.spec.target.name;
    let deployment = ctx
        .deployments
        .get(&ObjectRef::new(target).within(ns))
        .map(|d| (*d).clone());
    let of_release = |labels: &BTreeMap<String, String>, namespace: Option<&str>| {
        namespace == Some(ns) && labels.get(labels::RELEASE) == Some(&name)
    };
    let replica_sets: Vec<ReplicaSetView> = ctx
        .replica_sets
        .state_filter(|rs| of_release(rs.labels(), rs.metadata.namespace.as_deref()))
        .iter()
        .map(|rs| ReplicaSetView::from(&**rs))
        .collect();
    let raw_pods = ctx
        .pods
        .state_filter(|p| of_release(p.labels(), p.metadata.namespace.as_deref()));
    let raw_pods: Vec<&Pod> = raw_pods.iter().map(|p| &**p).collect();
    let jobs = ctx
        .jobs
        .state_filter(|j| of_release(j.labels(), j.metadata.namespace.as_deref()));
    let jobs = job_views(release, jobs.iter().map(|j| &**j), &raw_pods);
    let pods: Vec<PodView> = raw_pods.iter().map(|p| PodView::from(*p)).collect();
    seen(ctx, release, ns, deployment, &replica_sets, pods, jobs).await
}

/// The Release's own migration Jobs (controlled by it: a Job that only carries the label is
/// not one of ours), each with what its pods report.
fn job_views<'a>(
    release: &Release,
    jobs: impl Iterator<Item = &'a Job>,
    pods: &[&Pod],
) -> Vec<JobView> {
    let uid = release.uid().unwrap_or_default();
    jobs.filter(|j| {
        j.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "Release" && o.uid == uid)
    })
    .map(|j| {
        let job_uid = j.metadata.uid.clone().unwrap_or_default();
        let own: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.kind == "Job" && o.uid == job_uid)
            })
            .collect();
        JobView::new(j, &own)
    })
    .collect()
}

/// Straight from the API server: the caches may be behind (a watch that was cut, an outage),
/// and a failure verdict must not be taken from what may no longer be true.
pub(super) async fn from_api(ctx: &Context, release: &Release, ns: &str) -> Result<Seen, Error> {
    let f = fetch(&ctx.client, release, ns)
        .await
        .map_err(|(what, e)| Error::Confirm(what, e))?;
    seen(
        ctx,
        release,
        ns,
        f.deployment,
        &f.replica_sets,
        f.pods,
        f.jobs,
    )
    .await
}

/// What the planner would look at now, read from the API server, for a Release Rewind has
/// taken over (no adoption pods): `kubectl rewind rollback --dry-run` plans with it. An error
/// names what could not be read.
pub(crate) async fn read(
    client: &Client,
    release: &Release,
    ns: &str,
) -> Result<Observed, (String, kube::Error)> {
    let f = fetch(client, release, ns).await?;
    let uid = f.deployment.as_ref().and_then(|d| d.metadata.uid.clone());
    Ok(Observed {
        workload: f.deployment.as_ref().map(Workload::from),
        pods: owned_pods(uid.as_deref().unwrap_or_default(), &f.replica_sets, f.pods),
        jobs: f.jobs,
    })
}

/// The target Deployment (trimmed) and the Release's ReplicaSets, pods and Jobs, as the API
/// server has them now.
struct Fetched {
    deployment: Option<Deployment>,
    replica_sets: Vec<ReplicaSetView>,
    pods: Vec<PodView>,
    jobs: Vec<JobView>,
}

async fn fetch(
    client: &Client,
    release: &Release,
    ns: &str,
) -> Result<Fetched, (String, kube::Error)> {
    let name = release.name_any();
    let target = &release.spec.target.name;
    let by_label = ListParams::default().labels(&format!("{}={name}", labels::RELEASE));
    let mut deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(target)
        .await
        .map_err(|e| (format!("Deployment {target}"), e))?;
    if let Some(d) = deployment.as_mut() {
        trim::deployment(d);
    }
    let replica_sets: Vec<ReplicaSetView> = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&by_label)
        .await
        .map_err(|e| (format!("the ReplicaSets of Release {name}"), e))?
        .items
        .iter()
        .map(ReplicaSetView::from)
        .collect();
    let raw_pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&by_label)
        .await
        .map_err(|e| (format!("the pods of Release {name}"), e))?
        .items;
    let raw_pods: Vec<&Pod> = raw_pods.iter().collect();
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&by_label)
        .await
        .map_err(|e| (format!("the migration Jobs of Release {name}"), e))?
        .items;
    let jobs = job_views(release, jobs.iter(), &raw_pods);
    let pods: Vec<PodView> = raw_pods.iter().map(|p| PodView::from(*p)).collect();
    Ok(Fetched {
        deployment,
        replica_sets,
        pods,
        jobs,
    })
}

/// Keep the pods of the target's own ReplicaSets, and add the pods the Deployment ran before
/// Rewind when it is being taken over.
async fn seen(
    ctx: &Context,
    release: &Release,
    ns: &str,
    deployment: Option<Deployment>,
    replica_sets: &[ReplicaSetView],
    labelled: Vec<PodView>,
    jobs: Vec<JobView>,
) -> Result<Seen, Error> {
    let uid = deployment.as_ref().and_then(|d| d.metadata.uid.clone());
    // Only the pods of the target Deployment's own ReplicaSets count for a revision.
    let mut pods = owned_pods(uid.as_deref().unwrap_or_default(), replica_sets, labelled);
    if let (true, Some(d)) = (
        decide::adopting(release, uid.as_deref()),
        deployment.as_ref(),
    ) {
        // Adoption: the pods the Deployment ran before Rewind carry no label of ours.
        pods.extend(adoption_pods(&ctx.client, ns, d).await?);
    }
    Ok(Seen {
        observed: Observed {
            workload: deployment.as_ref().map(Workload::from),
            pods,
            jobs,
        },
        deployment,
    })
}

/// The name of an older Release (by creation, then name) that targets the same Deployment:
/// the older one keeps it, so two Releases never overwrite each other's images.
pub(super) fn older_release_for_target(
    releases: &Store<Release>,
    release: &Release,
) -> Option<String> {
    let key = |r: &Release| {
        (
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            r.name_any(),
        )
    };
    let mine = key(release);
    releases
        .state_filter(|r| {
            r.namespace() == release.namespace()
                && r.spec.target.name == release.spec.target.name
                && r.uid() != release.uid()
                && key(r) < mine
        })
        .iter()
        .map(|r| key(r))
        .min()
        .map(|(_, name)| name)
}

/// Registry credentials the kubelet would use for the Deployment's pods: its
/// imagePullSecrets and those of its ServiceAccount. Secrets that cannot be read are skipped
/// (logged): resolution then goes on anonymously and reports what the registry says.
pub(super) async fn pull_credentials(client: &Client, ns: &str, d: &Deployment) -> Credentials {
    let pod_spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let mut names: Vec<String> = pod_spec
        .and_then(|p| p.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    let sa_name = pod_spec
        .and_then(|p| p.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    match Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get_opt(&sa_name)
        .await
    {
        Ok(Some(sa)) => names.extend(sa.image_pull_secrets.into_iter().flatten().map(|r| r.name)),
        Ok(None) => {}
        Err(e) => {
            warn!(service_account = %sa_name, error = %e, "cannot read ServiceAccount for pull secrets")
        }
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let mut credentials = Credentials::default();
    for name in names {
        match secrets.get_opt(&name).await {
            Ok(Some(secret)) => {
                let data = secret.data.unwrap_or_default();
                if let Some(json) = data
                    .get(".dockerconfigjson")
                    .or_else(|| data.get(".dockercfg"))
                    && let Err(e) = credentials.add_docker_config(&json.0)
                {
                    warn!(secret = %name, error = %e, "pull secret is not a docker config");
                }
            }
            Ok(None) => warn!(secret = %name, "pull secret not found"),
            Err(e) => warn!(secret = %name, error = %e, "cannot read pull secret"),
        }
    }
    credentials
}

/// The pods a Deployment runs, listed once when Rewind first takes it over.
async fn adoption_pods(client: &Client, ns: &str, d: &Deployment) -> Result<Vec<PodView>, Error> {
    let Some(selector) = d.spec.as_ref().map(|s| s.selector.clone()) else {
        return Ok(Vec::new());
    };
    // matchLabels and matchExpressions both; an empty selector would list every pod.
    let selector = match kube::core::Selector::try_from(selector) {
        Ok(s) if !s.selects_all() => s.to_string(),
        _ => return Ok(Vec::new()),
    };
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::ListPods(d.name_any(), e))?;
    Ok(list
        .items
        .iter()
        .map(PodView::from)
        .filter(|p| p.revision.is_none())
        .collect())
}
