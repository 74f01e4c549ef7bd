//! What a Release is bound to and what counts as its pods, against the local cluster: a
//! Deployment created again under the same name is a new target (adopted, never given the old
//! one's digests), a revision at 0 replicas is never Healthy, and a pod that only carries the
//! Release's label (not owned by the Deployment's ReplicaSet) neither heals nor fails a
//! revision. Each test runs its own operator in its own namespace.

mod operator;
mod support;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use operator::*;
use rewind::api::{Outcome, Phase, Release};
use serde_json::json;
use support::*;

/// On loopback, where nothing listens: registry lookups are refused at once.
const REPO: &str = "127.0.0.1:9/shop/api";

fn image(version: &str) -> String {
    format!("{REPO}:{version}")
}

fn status(r: &Release) -> &rewind::api::ReleaseStatus {
    r.status.as_ref().expect("a status")
}

impl Fixture {
    /// Deployment shop runs 0.9.0; Release shop 1.0.0 is Healthy on revision 1.
    async fn healthy_1_0_0(&self) -> Release {
        self.create_deployment(&image("0.9.0")).await;
        self.deployment_until("0.9.0 rolled out", secs(60), deployment_is_rolled_out)
            .await;
        self.apply_release("1.0.0", &image("1.0.0"), json!({}))
            .await;
        self.release_until("Healthy on revision 1", secs(60), |r| {
            phase(r) == "Healthy" && status(r).revision == Some(1)
        })
        .await
    }
}

#[tokio::test]
async fn a_deployment_created_again_under_the_same_name_is_adopted_not_overwritten() {
    let f = Fixture::new("target_recreated").await;
    let before = f.healthy_1_0_0().await;
    let old_uid = status(&before)
        .target_uid
        .clone()
        .expect("targetUID recorded");
    // Another app takes the name: the old Deployment is deleted, a new one created.
    f.deployments
        .delete("shop", &DeleteParams::foreground())
        .await
        .expect("deleting Deployment shop");
    wait_for_deleted(&f.deployments, "shop").await;
    let other = "127.0.0.1:9/other/app:9.9.9";
    f.deployments
        .create(&PostParams::default(), &deployment("shop", 3, &[other]))
        .await
        .expect("creating the new Deployment shop");
    let r = f
        .release_until("the new Deployment adopted", secs(60), |r| {
            let s = status(r);
            s.target_uid.as_deref().is_some_and(|u| u != old_uid)
                && s.history
                    .iter()
                    .any(|h| h.revision == 0 && h.images[0].image == other)
        })
        .await;
    let s = status(&r);
    let revisions: Vec<i64> = s.history.iter().map(|h| h.revision).collect();
    assert!(
        revisions.iter().all(|&n| n <= 1),
        "the old history is gone, a new one starts: {revisions:?}\n{}",
        status_json(&r)
    );
    let events = wait_for_events(
        &f.ns.client(),
        f.ns.name(),
        "shop",
        &["TargetReplaced"],
        secs(20),
    )
    .await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "TargetReplaced" && note.contains(&old_uid)),
        "{events:?}"
    );
    // 1.0.0 is deployed to the new target as a new revision and becomes healthy there.
    let r = f
        .release_until("1.0.0 Healthy on the new target", secs(90), |r| {
            phase(r) == "Healthy" && status(r).revision == Some(1)
        })
        .await;
    let adopted = status(&r)
        .history
        .iter()
        .find(|h| h.revision == 0)
        .expect("revision 0");
    assert_eq!(adopted.images[0].image, other);
}

#[tokio::test]
async fn a_revision_at_zero_replicas_is_not_healthy_until_it_runs() {
    let f = Fixture::new("zero_replicas").await;
    let d = deployment("shop", 0, &[&image("0.9.0")]);
    f.deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("creating Deployment shop at 0 replicas");
    // A crash-looping version at 0 replicas: nothing runs, so nothing can vouch for it.
    f.apply_release("1.0.0", &image("1.0.0-crashloop"), json!({}))
        .await;
    f.revision_applied(1, secs(30)).await;
    expect_never(
        &f.releases,
        "shop",
        "Healthy (or Failed) at 0 replicas",
        secs(READINESS_TIMEOUT + 8),
        |r: &Release| {
            r.status.as_ref().is_some_and(|s| {
                matches!(
                    s.phase,
                    Some(Phase::Healthy | Phase::Failed | Phase::Degraded)
                ) || s
                    .history
                    .iter()
                    .any(|h| h.revision == 1 && h.outcome == Outcome::Healthy)
            })
        },
    )
    .await;
    let r = f.releases.get("shop").await.unwrap();
    assert_eq!(phase(&r), "Progressing", "{}", status_json(&r));
    assert!(
        condition(&r, "Ready").is_some_and(|c| c.message.contains("0 replicas")),
        "{}",
        status_json(&r)
    );
    // Scaled up, its pods crash-loop: judged now, and with no healthy revision to go back to,
    // Degraded (it was never trusted).
    f.deployments
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let r = f
        .release_until("judged once it runs", secs(60), |r| {
            status(r)
                .history
                .iter()
                .any(|h| h.revision == 1 && h.outcome == Outcome::Failed)
        })
        .await;
    assert!(
        status(&r)
            .history
            .iter()
            .all(|h| h.outcome != Outcome::Healthy),
        "{}",
        status_json(&r)
    );
}

#[tokio::test]
async fn a_pod_that_only_carries_the_label_does_not_fail_a_revision() {
    let f = Fixture::new("stray_pod").await;
    f.healthy_1_0_0().await;
    // A bare pod (a copied manifest) with the Release's label and revision, crash-looping.
    let mut stray = pod(
        "shop-stray",
        &[&image("1.0.0-crashloop")],
        &[
            ("rewind.dev/revision", "1"),
            ("rewind.dev/version", "1.0.0"),
        ],
    );
    stray
        .metadata
        .labels
        .get_or_insert_default()
        .insert("rewind.dev/release".into(), "shop".into());
    let pods = f.ns.api::<Pod>();
    pods.create(&PostParams::default(), &stray)
        .await
        .expect("creating the stray pod");
    wait_for(
        &pods,
        "shop-stray",
        "the stray pod crash-looping past the policy's limit",
        secs(60),
        |p: &Pod| {
            container_status(p, "app").is_some_and(|c| {
                waiting_reason(c) == Some("CrashLoopBackOff") && c.restart_count >= 3
            })
        },
    )
    .await;
    expect_never(
        &f.releases,
        "shop",
        "a rollback caused by a pod the Deployment does not own",
        secs(8),
        |r: &Release| r.status.as_ref().is_some_and(|s| s.rollback.is_some()),
    )
    .await;
    let r = f.releases.get("shop").await.unwrap();
    assert_eq!(phase(&r), "Healthy", "{}", status_json(&r));
    let d: Deployment = f.deployments.get("shop").await.unwrap();
    assert_eq!(template_of(&d).1.as_deref(), Some("1"));
}

/// Wait until Deployment `name` is gone.
async fn wait_for_deleted(api: &kube::Api<Deployment>, name: &str) {
    let deadline = std::time::Instant::now() + secs(60);
    while api
        .get_opt(name)
        .await
        .expect("reading Deployment")
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "Deployment {name} still exists 60 s after its deletion"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
