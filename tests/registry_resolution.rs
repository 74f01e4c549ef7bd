//! Digest resolution against the local cluster's real registries (Debian's docker-registry):
//! pinned before any pod exists, moved tags never change what a version means, pull secrets,
//! and what happens when the registry is down or refuses.

mod operator;
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::ReplicaSet,
        core::v1::{Secret, ServiceAccount},
    },
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use operator::*;
use rewind::api::{DigestSource, Release};
use serde_json::json;
use support::{registry::Registry, *};

/// The operator reaches both test registries over plain HTTP, and gives up on one after 2 s.
async fn fixture(test: &str, policy: serde_json::Value) -> Fixture {
    let (open, auth) = (support::registry::open(), support::registry::with_auth());
    let insecure = format!("{},{}", open.address, auth.address);
    Fixture::with(
        test,
        &["--insecure-registry", &insecure, "--registry-timeout", "2s"],
        policy,
    )
    .await
}

/// Deployment shop runs something (not from a registry) before the Release takes it over.
async fn running_deployment(f: &Fixture, pull_secrets: &[&str]) {
    f.create_deployment_with("example.com/shop/api:0.9.0", pull_secrets)
        .await;
    f.deployment_until("0.9.0 rolled out", secs(60), deployment_is_rolled_out)
        .await;
}

fn pinned_condition(r: &Release) -> (String, String) {
    condition(r, "Pinned").map_or(("-".into(), "-".into()), |c| {
        (c.status.clone(), c.reason.clone())
    })
}

fn newest_image(r: &Release) -> rewind::api::PinnedImage {
    r.status.as_ref().unwrap().history[0].images[0].clone()
}

async fn docker_secret(f: &Fixture, name: &str, registry: &Registry, user: &str, password: &str) {
    let config =
        json!({"auths": {registry.address.clone(): {"username": user, "password": password}}});
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_owned(),
                ByteString(config.to_string().into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    f.ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the pull secret");
}

#[tokio::test]
async fn a_tag_is_pinned_from_the_registry_before_any_pod_exists() {
    let f = fixture("registry_pins_first", json!({})).await;
    let reg = support::registry::open();
    let repo = support::registry::unique_repository("pins-first");
    // A multi-arch image: the reference means the index, whatever the node's platform.
    let index = reg.push_index(&repo, "1.0.0", &["a", "b"]).await;
    running_deployment(&f, &[]).await;
    f.apply_release("1.0.0", &reg.image(&repo, "1.0.0"), json!({}))
        .await;

    let d = f.revision_applied(1, secs(30)).await;
    assert_eq!(
        template_of(&d).0,
        reg.pinned(&repo, &index),
        "the first template of revision 1 is already pinned to the index digest"
    );
    let r = f
        .release_until("Healthy", secs(60), |r| phase(r) == "Healthy")
        .await;
    let img = newest_image(&r);
    assert_eq!(
        (img.digest.as_deref(), img.resolved_from),
        (Some(index.as_str()), Some(DigestSource::Registry))
    );
    assert_eq!(pinned_condition(&r), ("True".into(), "Resolved".into()));
    // No ReplicaSet ever ran the tag.
    let sets =
        f.ns.api::<ReplicaSet>()
            .list(&ListParams::default())
            .await
            .unwrap();
    let tagged: Vec<String> = sets
        .items
        .iter()
        .flat_map(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .map(|s| s.containers.clone())
                .unwrap_or_default()
        })
        .filter_map(|c| c.image)
        .filter(|i| i.ends_with(":1.0.0"))
        .collect();
    assert!(tagged.is_empty(), "ReplicaSets ran the tag: {tagged:?}");
}

#[tokio::test]
async fn a_moved_tag_does_not_change_what_a_version_means() {
    let f = fixture("registry_moved_tag", json!({})).await;
    let reg = support::registry::open();
    let repo = support::registry::unique_repository("moved-tag");
    let v1 = reg.push_image(&repo, "1.0.0", "first build of 1.0.0").await;
    let v2 = reg.push_image(&repo, "2.0.0", "2.0.0").await;
    running_deployment(&f, &[]).await;
    f.apply_release("1.0.0", &reg.image(&repo, "1.0.0"), json!({}))
        .await;
    f.release_until("1.0.0 Healthy", secs(60), |r| {
        phase(r) == "Healthy" && r.status.as_ref().unwrap().revision == Some(1)
    })
    .await;
    f.apply_release("2.0.0", &reg.image(&repo, "2.0.0"), json!({}))
        .await;
    f.deployment_until("on 2.0.0", secs(30), |d| {
        template_of(d).0 == reg.pinned(&repo, &v2)
    })
    .await;
    f.release_until("2.0.0 Healthy", secs(60), |r| {
        phase(r) == "Healthy" && r.status.as_ref().unwrap().revision == Some(2)
    })
    .await;

    // Someone rebuilds 1.0.0 and pushes it under the same tag.
    let moved = reg
        .push_image(&repo, "1.0.0", "second build of 1.0.0")
        .await;
    assert_ne!(moved, v1);
    assert_eq!(
        reg.digest_of_tag(&repo, "1.0.0").await.as_deref(),
        Some(moved.as_str())
    );

    // Rolling back to 1.0.0 restores the bits that shipped as 1.0.0.
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("1.0.0"))
        .await;
    f.deployment_until("back on the original 1.0.0", secs(30), |d| {
        template_of(d) == (reg.pinned(&repo, &v1), Some("1".into()))
    })
    .await;
    f.release_until("RolledBack", secs(30), |r| phase(r) == "RolledBack")
        .await;
    // And a Git revert of the spec to 1.0.0 too.
    f.apply_release("1.0.0", &reg.image(&repo, "1.0.0"), json!({}))
        .await;
    let r = f
        .release_until("settled on 1.0.0", secs(30), |r| phase(r) == "Healthy")
        .await;
    assert_eq!(
        r.status.as_ref().unwrap().revision,
        Some(1),
        "spec matches the running revision: nothing redeployed"
    );
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(template_of(&d).0, reg.pinned(&repo, &v1));
}

/// Where the pull secret for the private registry is attached.
enum SecretOn {
    Deployment,
    ServiceAccount,
}

/// A private repository resolves with the right pull secret attached `on` one place or the other.
async fn private_repository_resolves(test: &str, on: SecretOn) {
    let f = fixture(test, json!({})).await;
    let reg = support::registry::with_auth();
    let repo = support::registry::unique_repository(test);
    let digest = reg.push_image(&repo, "1.0.0", test).await;
    let (user, password) = (reg.user.clone().unwrap(), reg.password.clone().unwrap());
    docker_secret(&f, "registry-creds", &reg, &user, &password).await;
    match on {
        SecretOn::Deployment => running_deployment(&f, &["registry-creds"]).await,
        SecretOn::ServiceAccount => {
            // The namespace's default ServiceAccount carries the pull secret, as many clusters do.
            let sas: Api<ServiceAccount> = f.ns.api();
            wait_for(&sas, "default", "default ServiceAccount", secs(30), |_| {
                true
            })
            .await;
            let patch = json!({"imagePullSecrets": [{"name": "registry-creds"}]});
            sas.patch("default", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
            running_deployment(&f, &[]).await;
        }
    }
    f.apply_release("1.0.0", &reg.image(&repo, "1.0.0"), json!({}))
        .await;
    let d = f.revision_applied(1, secs(30)).await;
    assert_eq!(template_of(&d).0, reg.pinned(&repo, &digest));
    let r = f
        .release_until("Pinned", secs(30), |r| pinned_condition(r).0 == "True")
        .await;
    assert_eq!(newest_image(&r).resolved_from, Some(DigestSource::Registry));
}

#[tokio::test]
async fn a_private_repository_resolves_with_the_deployments_pull_secret() {
    private_repository_resolves("registry_pull_secret", SecretOn::Deployment).await;
}

#[tokio::test]
async fn a_private_repository_resolves_with_the_service_accounts_pull_secret() {
    private_repository_resolves("registry_sa_secret", SecretOn::ServiceAccount).await;
}

#[tokio::test]
async fn a_wrong_pull_secret_falls_back_to_the_tag_and_says_unauthorized() {
    let f = fixture("registry_wrong_secret", json!({})).await;
    let reg = support::registry::with_auth();
    let repo = support::registry::unique_repository("wrong-secret");
    reg.push_image(&repo, "1.0.0", "wrong secret").await;
    docker_secret(&f, "bad-creds", &reg, "rewind", "not-the-password").await;
    running_deployment(&f, &["bad-creds"]).await;
    f.apply_release("1.0.0", &reg.image(&repo, "1.0.0"), json!({}))
        .await;
    let d = f.revision_applied(1, secs(30)).await;
    assert_eq!(
        template_of(&d).0,
        reg.image(&repo, "1.0.0"),
        "Fallback deploys the reference as written"
    );
    // Pinned is False (RegistryUnauthorized) only until the pods report their digest, which
    // on the simulated nodes can be quicker than a watch: read the reason from the Event,
    // whose note is the condition's message, and the outcome from history.
    let r = f
        .release_until("Healthy", secs(60), |r| phase(r) == "Healthy")
        .await;
    assert_eq!(
        newest_image(&r).resolved_from,
        Some(DigestSource::PodStatus),
        "not from the registry"
    );
    let all = wait_for_events(
        &f.ns.client(),
        f.ns.name(),
        "shop",
        &["RegistryUnauthorized"],
        secs(10),
    )
    .await;
    let (_, msg) = all
        .iter()
        .find(|(reason, _)| reason == "RegistryUnauthorized")
        .unwrap_or_else(|| panic!("no RegistryUnauthorized Event in {all:?}"));
    assert!(
        msg.contains("unauthorized") && msg.contains("pod status"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_strict_policy_refuses_what_it_cannot_pin() {
    let f = fixture("registry_strict", json!({"digestResolution": "Strict"})).await;
    let reg = support::registry::with_auth();
    let repo = support::registry::unique_repository("strict");
    reg.push_image(&repo, "1.0.0", "strict").await;
    running_deployment(&f, &[]).await; // no pull secret at all
    f.apply_release("1.0.0", &reg.image(&repo, "1.0.0"), json!({}))
        .await;
    let r = f
        .release_until("refused", secs(30), |r| {
            condition(r, "Stalled")
                .is_some_and(|c| c.status == "True" && c.reason == "UnpinnedRefused")
        })
        .await;
    assert_eq!(
        pinned_condition(&r),
        ("False".into(), "RegistryUnauthorized".into())
    );
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(
        template_of(&d),
        ("example.com/shop/api:0.9.0".into(), None),
        "nothing deployed"
    );
    let before = f.reconciles();
    tokio::time::sleep(secs(6)).await;
    let spent = f.reconciles() - before;
    assert!(
        spent <= 3,
        "{spent} reconciles in 6 s while refusing: the loop spins"
    );
}

/// A TCP listener that accepts connections and never answers: a registry that hangs.
async fn hanging_registry() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_hanging_registry_delays_a_release_by_the_timeout_only_and_nothing_spins() {
    let (addr, hang) = hanging_registry().await;
    let f = Fixture::with(
        "registry_down",
        &["--insecure-registry", &addr, "--registry-timeout", "2s"],
        json!({}),
    )
    .await;
    running_deployment(&f, &[]).await;
    let image = format!("{addr}/shop/api:1.0.0");
    let started = Instant::now();
    f.apply_release("1.0.0", &image, json!({})).await;
    let d = f.revision_applied(1, secs(15)).await;
    let took = started.elapsed();
    assert_eq!(
        template_of(&d).0,
        image,
        "deployed by the reference as written"
    );
    assert!(
        took >= Duration::from_millis(1900) && took <= secs(8),
        "deployed after {took:?}: want the 2 s registry timeout, not a hang"
    );
    let r = f
        .release_until("Healthy", secs(60), |r| phase(r) == "Healthy")
        .await;
    assert_eq!(
        newest_image(&r).resolved_from,
        Some(DigestSource::PodStatus),
        "the digest came from the pods"
    );
    let r = f
        .release_until("Pinned from pod status", secs(30), |r| {
            pinned_condition(r).1 == "RecordedFromPodStatus"
        })
        .await;
    assert_eq!(pinned_condition(&r).0, "True");
    wait_for_events(
        &f.ns.client(),
        f.ns.name(),
        "shop",
        &["RegistryTimeout"],
        secs(10),
    )
    .await;
    // Settled: a quiet Release costs no reconciles.
    f.deployment_until("pinned and rolled out", secs(60), |d| {
        template_of(d).0.contains("@sha256:") && deployment_is_rolled_out(d)
    })
    .await;
    tokio::time::sleep(secs(3)).await;
    let before = f.reconciles();
    tokio::time::sleep(secs(5)).await;
    let spent = f.reconciles() - before;
    assert!(spent <= 2, "{spent} reconciles in 5 s on a settled Release");
    hang.abort();
}
