//! At peace with GitOps, on the local cluster: another field manager changing the image Rewind
//! owns is put back once with an Event naming it, then Rewind stops writing instead of
//! fighting; an apply that leaves the image out changes nothing of Rewind's; a new Release
//! has a status at once; a rollback's story is on the Deployment too, and in
//! rewind_release_info.

mod operator;
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use operator::*;
use serde_json::json;
use support::*;

/// Server-side apply of the container's image by `manager`, forcing the conflict with Rewind
/// (what a GitOps tool that self-heals does).
async fn set_image_as(f: &Fixture, manager: &str, image: &str) {
    let body = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
    });
    f.deployments
        .patch(
            "shop",
            &PatchParams::apply(manager).force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the image as {manager}: {e}"));
}

fn image_of(d: &Deployment) -> String {
    template_of(d).0
}

fn generation_of(d: &Deployment) -> i64 {
    d.metadata.generation.unwrap_or_default()
}

/// Events about Deployment shop (not the Release of the same name): reason and note.
async fn deployment_events(f: &Fixture) -> Vec<(String, String)> {
    event_objects_of(&f.ns.client(), f.ns.name(), "Deployment", "shop")
        .await
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Wait until Deployment shop has an Event `reason` from Rewind.
async fn deployment_event(f: &Fixture, reason: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let all = deployment_events(f).await;
        if let Some((_, note)) = all.iter().find(|(r, _)| r == reason) {
            return note.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no Event {reason} on Deployment shop within {timeout:?}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_override_is_put_back_once_naming_the_manager_then_rewind_stops_fighting() {
    let f = Fixture::new("contested").await;
    f.shop_healthy_on_1_0_0().await;
    let pinned = f
        .deployment_until("pinned to a digest", secs(60), |d| {
            image_of(d).contains("@sha256:")
        })
        .await;
    let ours = image_of(&pinned);

    // A GitOps tool forces its tag onto the image.
    set_image_as(&f, "argocd-controller", &loopback_image("1.0.0")).await;
    let note = deployment_event(&f, "ImageOverridden", secs(30)).await;
    assert!(
        note.contains("argocd-controller") && note.contains(&loopback_image("1.0.0")),
        "the Event names the manager and its image: {note}"
    );
    let back = f
        .deployment_until("Rewind's image put back", secs(30), |d| image_of(d) == ours)
        .await;
    let r = f
        .release_until("the override recorded", secs(10), |r| {
            r.status
                .as_ref()
                .and_then(|s| s.contested.as_ref())
                .is_some_and(|c| c.count == 1 && !c.stopped)
        })
        .await;
    assert_eq!(
        status_of(&r).contested.as_ref().unwrap().manager,
        "argocd-controller"
    );

    // It self-heals: the same manager again, within the window.
    set_image_as(&f, "argocd-controller", &loopback_image("1.0.0")).await;
    let overridden = generation_of(&back) + 1;
    f.release_until("Stalled: ImageFieldContested", secs(30), |r| {
        condition(r, "Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "ImageFieldContested")
    })
    .await;
    deployment_event(&f, "ImageFieldContested", secs(10)).await;
    // No further write: the Deployment keeps the tool's image, its generation stays.
    tokio::time::sleep(secs(5)).await;
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(
        image_of(&d),
        loopback_image("1.0.0"),
        "Rewind did not fight"
    );
    assert_eq!(generation_of(&d), overridden, "no write after the stop");

    // A retry lets Rewind write again.
    f.annotate(&f.releases, "shop", "rewind.dev/retry", Some("1"))
        .await;
    f.deployment_until("put back after the retry", secs(30), |d| {
        image_of(d) == ours
    })
    .await;
    f.release_until("no longer stalled", secs(30), |r| {
        r.status
            .as_ref()
            .and_then(|s| s.contested.as_ref())
            .is_none_or(|c| !c.stopped)
    })
    .await;
}

#[tokio::test]
async fn an_apply_by_another_manager_that_leaves_the_image_out_keeps_the_pin() {
    let f = Fixture::new("apply_without_image").await;
    f.shop_healthy_on_1_0_0().await;
    let pinned = f
        .deployment_until("pinned to a digest", secs(60), |d| {
            image_of(d).contains("@sha256:")
        })
        .await;
    let before = f.releases.get("shop").await.unwrap();
    let revisions = status_of(&before).history.len();
    // Flux applies its manifest: replicas and a label, no image.
    let body = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "labels": {"team": "shop"}},
        "spec": {"replicas": 4}
    });
    f.deployments
        .patch(
            "shop",
            &PatchParams::apply("kustomize-controller").force(),
            &Patch::Apply(body),
        )
        .await
        .expect("applying without the image");
    f.deployment_until("4 replicas rolled out", secs(60), |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(4) && deployment_is_rolled_out(d)
    })
    .await;
    tokio::time::sleep(secs(3)).await;
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(image_of(&d), image_of(&pinned), "the pin is kept");
    let r = f.releases.get("shop").await.unwrap();
    let s = status_of(&r);
    assert_eq!(s.history.len(), revisions, "no new revision");
    assert_eq!(s.revision, status_of(&before).revision);
    assert!(s.contested.is_none(), "not an override: {:?}", s.contested);
    let all = events(&f.ns.client(), f.ns.name(), "shop").await;
    assert!(
        all.iter().all(|(reason, _)| reason != "ImageOverridden"),
        "{all:#?}"
    );
}

#[tokio::test]
async fn a_new_release_has_a_status_within_two_seconds() {
    let f = Fixture::new("status_at_once").await;
    f.create_deployment(&loopback_image("0.9.0")).await;
    f.until_ready(Instant::now()).await;
    let created = Instant::now();
    f.apply_release("1.0.0", &loopback_image("1.0.0"), json!({}))
        .await;
    // (The API server's default status, {observedGeneration: 0}, is there at once: wait for
    // Rewind's own.)
    let r = f
        .release_until("a status written by Rewind", secs(10), |r| {
            condition(r, "Reconciling").is_some()
        })
        .await;
    let took = created.elapsed();
    assert!(took <= secs(2), "the first status took {took:?}");
    let reconciling = condition(&r, "Reconciling").expect("a Reconciling condition");
    assert_eq!(reconciling.status, "True", "{r:?}");
    assert_eq!(status_of(&r).observed_generation, r.metadata.generation);
}

#[tokio::test]
async fn a_rollback_is_told_on_the_deployment_and_in_release_info() {
    let f = Fixture::new("told_on_deployment").await;
    f.shop_healthy_on_1_0_0().await;
    f.release_until("release_info Healthy", secs(30), |_| {
        f.metric(&format!(
            "rewind_release_info{{namespace=\"{}\",release=\"shop\",phase=\"Healthy\",version=\"1.0.0\"}}",
            f.ns.name()
        )) == 1.0
    })
    .await;
    f.ship_crashlooping("2.0.0").await;
    f.release_until("RolledBack", secs(90), |r| phase(r) == "RolledBack")
        .await;
    let started = deployment_event(&f, "RollbackStarted", secs(10)).await;
    assert!(
        started.contains("2.0.0") && started.contains("1.0.0"),
        "{started}"
    );
    deployment_event(&f, "RollbackSucceeded", secs(10)).await;
    let text = f.op.metrics();
    let series = format!(
        "rewind_release_info{{namespace=\"{}\",release=\"shop\",phase=\"RolledBack\",version=\"1.0.0\"}}",
        f.ns.name()
    );
    assert_eq!(metric_value(&text, &series), Some(1.0), "{text}");
    assert!(
        !text.contains("phase=\"Healthy\",version=\"1.0.0\""),
        "one series per Release: {text}"
    );
}
