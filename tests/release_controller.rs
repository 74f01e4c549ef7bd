//! The Release controller against the local cluster: pinning, health, automatic and manual
//! rollback, restarts, bad input. Each test runs its own operator in its own namespace.

mod operator;
mod support;

use std::time::{Duration, Instant};

use kube::{ResourceExt, api::PostParams};
use operator::*;
use rewind::api::{DigestSource, Outcome, Phase, Release, RollbackPhase, Trigger};
use serde_json::json;
use support::*;

/// On loopback, where nothing listens: the operator's registry lookup is refused at once (and
/// the digest then comes from the pods), so no test traffic leaves the machine.
const REPO: &str = "127.0.0.1:9/shop/api";

fn image(version: &str) -> String {
    format!("{REPO}:{version}")
}

fn pinned(version: &str) -> String {
    format!("{REPO}@sha256:{}", sha256_hex(image(version).as_bytes()))
}

impl Fixture {
    /// Deployment shop runs 1.0.0 under Rewind: healthy, pinned to its digest.
    async fn healthy_v1(&self) -> Release {
        self.create_deployment(&image("0.9.0")).await;
        // Rewind takes over a Deployment that runs: revision 0 gets its digest from the pods.
        self.deployment_until("0.9.0 rolled out", secs(60), deployment_is_rolled_out)
            .await;
        self.apply_release("1.0.0", &image("1.0.0"), json!({}))
            .await;
        self.deployment_until("pinned to 1.0.0's digest", secs(60), |d| {
            template_of(d) == (pinned("1.0.0"), Some("1".into()))
        })
        .await;
        self.release_until("Healthy on revision 1", secs(60), |r| {
            phase(r) == "Healthy" && r.status.as_ref().unwrap().revision == Some(1)
        })
        .await
    }

    /// `healthy_v1`, then 2.0.0 shipped and healthy as revision 2.
    async fn healthy_v1_then_v2(&self) {
        self.healthy_v1().await;
        self.apply_release("2.0.0", &image("2.0.0"), json!({}))
            .await;
        self.release_until("2.0.0 Healthy", secs(60), |r| {
            phase(r) == "Healthy" && r.status.as_ref().unwrap().revision == Some(2)
        })
        .await;
    }

    /// Ship 2.0.0 as `image` and wait until Rewind put 1.0.0 back; returns how long it took.
    async fn ship_bad_v2(&self, image: &str, trigger: Trigger) -> (Release, Duration) {
        let started = Instant::now();
        self.apply_release("2.0.0", image, json!({})).await;
        self.revision_applied(2, secs(20)).await;
        self.deployment_until("back on 1.0.0's digest (revision 1)", secs(40), |d| {
            template_of(d) == (pinned("1.0.0"), Some("1".into()))
        })
        .await;
        let took = started.elapsed();
        let r = self
            .release_until("rollback Succeeded", secs(30), |r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.rollback.as_ref())
                    .is_some_and(|rb| rb.phase == RollbackPhase::Succeeded)
            })
            .await;
        let s = r.status.as_ref().unwrap();
        let rb = s.rollback.as_ref().unwrap();
        assert_eq!(
            (rb.trigger, rb.from.revision, rb.to.revision),
            (trigger, 2, 1),
            "{}",
            status_json(&r)
        );
        let v2 = s
            .history
            .iter()
            .find(|h| h.revision == 2)
            .expect("revision 2 in history");
        assert_eq!(v2.outcome, Outcome::Failed);
        assert_eq!(v2.failure.as_ref().map(|f| f.trigger), Some(trigger));
        assert_eq!(s.revision, Some(1));
        assert_eq!(s.version.as_deref(), Some("1.0.0"));
        assert_eq!(
            s.blocked.as_ref().map(|b| b.version.as_str()),
            Some("2.0.0")
        );
        assert_eq!(s.phase, Some(Phase::RolledBack));
        assert!(
            has_condition(&r, "RolledBack", "True"),
            "{}",
            status_json(&r)
        );
        assert!(has_condition(&r, "Ready", "False"));
        assert!(has_condition(&r, "Stalled", "True"));
        assert_eq!(s.rollbacks.len(), 1);
        assert!(
            rb.images_restored_at.is_some()
                && rb.completed_at.is_some()
                && rb.duration_seconds.is_some()
        );
        (r, took)
    }
}

#[tokio::test]
async fn pins_the_first_release_and_reports_it_healthy() {
    let f = Fixture::new("pins_first_release").await;
    let r = f.healthy_v1().await;
    let s = r.status.as_ref().unwrap();
    // Revision 0 is what ran before Rewind took over; revision 1 is the Release.
    let revs: Vec<(i64, &str)> = s
        .history
        .iter()
        .map(|h| (h.revision, h.version.as_str()))
        .collect();
    assert_eq!(revs, [(1, "1.0.0"), (0, "adopted")]);
    let v1 = &s.history[0];
    assert_eq!(
        v1.images[0].digest.as_deref(),
        Some(format!("sha256:{}", sha256_hex(image("1.0.0").as_bytes())).as_str())
    );
    assert_eq!(v1.images[0].resolved_from, Some(DigestSource::PodStatus));
    assert_eq!(v1.outcome, Outcome::Healthy);
    assert_eq!(
        s.history[1].images[0].image,
        image("0.9.0"),
        "revision 0 records the image that ran before"
    );
    assert!(
        s.history[1].images[0].digest.is_some(),
        "revision 0's digest comes from its pods"
    );
    assert!(has_condition(&r, "Ready", "True"), "{}", status_json(&r));
    assert!(has_condition(&r, "Stalled", "False"));
    assert_eq!(s.observed_generation, r.metadata.generation);

    // The printer columns tell the story (the API server renders them, as for kubectl get).
    let table = release_table(&f).await;
    for (column, want) in [
        ("Version", "1.0.0"),
        ("Revision", "1"),
        ("Phase", "Healthy"),
        ("Ready", "True"),
        ("Desired", "1.0.0"),
    ] {
        assert_eq!(
            table.get(column).map(String::as_str),
            Some(want),
            "column {column} in {table:?}"
        );
    }
    let wanted = [
        "Adopted",
        "Deploying",
        "DigestRecorded",
        "Healthy",
        "Pinned",
    ];
    wait_for_events(&f.ns.client(), f.ns.name(), "shop", &wanted, secs(10)).await;
}

/// The Release as `kubectl get rls` shows it: column name → cell.
async fn release_table(f: &Fixture) -> std::collections::HashMap<String, String> {
    let url = format!(
        "/apis/rewind.dev/v1alpha1/namespaces/{}/releases/shop",
        f.ns.name()
    );
    let req = http::Request::get(url)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: serde_json::Value =
        serde_json::from_str(&f.ns.client().request_text(req).await.expect("GET as Table"))
            .unwrap();
    let names: Vec<String> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    names
        .into_iter()
        .zip(cells.iter().map(|c| {
            c.as_str()
                .map(String::from)
                .unwrap_or_else(|| c.to_string())
        }))
        .collect()
}

#[tokio::test]
async fn rolls_back_when_new_pods_never_become_ready() {
    let mut f = Fixture::new("never_ready").await;
    f.healthy_v1().await;
    let (_, took) = f
        .ship_bad_v2(&image("2.0.0-unready"), Trigger::Readiness)
        .await;
    assert!(
        took <= secs(READINESS_TIMEOUT + 2),
        "restored after {took:?}, want ≤ readiness timeout ({READINESS_TIMEOUT}s) + 2s"
    );
    let trail_reasons = ["RollbackStarted", "ImagesRestored", "RollbackSucceeded"];
    let all = wait_for_events(
        &f.ns.client(),
        f.ns.name(),
        "shop",
        &trail_reasons,
        secs(10),
    )
    .await;
    let reasons: Vec<&str> = all.iter().map(|(r, _)| r.as_str()).collect();
    let trail: Vec<&str> = reasons
        .iter()
        .copied()
        .filter(|r| ["RollbackStarted", "ImagesRestored", "RollbackSucceeded"].contains(r))
        .collect();
    assert_eq!(
        trail,
        ["RollbackStarted", "ImagesRestored", "RollbackSucceeded"],
        "Events: {reasons:?}"
    );
    assert_eq!(
        f.op.log_lines("rollback finished").len(),
        1,
        "one structured log line per rollback"
    );

    // 2.0.0 is blocked: not applied again, not even by a fresh operator.
    expect_never(
        &f.deployments,
        "shop",
        "2.0.0 applied again",
        secs(4),
        |d| template_of(d).1.as_deref() == Some("2"),
    )
    .await;
    f.op.kill();
    f.op = Operator::start(f.ns.name());
    expect_never(
        &f.deployments,
        "shop",
        "2.0.0 applied again after a restart",
        secs(6),
        |d| template_of(d).1.as_deref() != Some("1"),
    )
    .await;
    let r = f.releases.get("shop").await.unwrap();
    assert_eq!(phase(&r), "RolledBack");
    assert_eq!(
        r.status.as_ref().unwrap().rollbacks.len(),
        1,
        "no second rollback after the restart"
    );
}

/// Why revision `revision` of the Release failed.
fn failure_of(r: &Release, revision: i64) -> rewind::api::Failure {
    let s = r.status.as_ref().expect("a status");
    let entry = s
        .history
        .iter()
        .find(|h| h.revision == revision)
        .expect("the revision in history");
    entry.failure.clone().expect("a recorded failure")
}

#[tokio::test]
async fn rolls_back_a_crash_looping_release() {
    let f = Fixture::new("crashloop").await;
    f.healthy_v1().await;
    let (r, _) = f
        .ship_bad_v2(&image("2.0.0-crashloop"), Trigger::CrashLoop)
        .await;
    let failure = failure_of(&r, 2);
    assert!(
        failure.message.contains("CrashLoopBackOff"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn rolls_back_a_release_whose_image_cannot_be_pulled() {
    let f = Fixture::new("badpull").await;
    f.healthy_v1().await;
    let (r, _) = f
        .ship_bad_v2(&image("2.0.0-badpull"), Trigger::ImagePull)
        .await;
    let failure = failure_of(&r, 2);
    assert_eq!(failure.reason, "ImagePullFailed");
}

#[tokio::test]
async fn reverting_the_spec_reuses_the_recorded_digest() {
    let f = Fixture::new("revert_reuses_digest").await;
    f.healthy_v1_then_v2().await;
    f.apply_release("1.0.0", &image("1.0.0"), json!({})).await;
    // Revision 3 is 1.0.0 again, applied by digest straight away: never by its tag.
    let d = f.revision_applied(3, secs(30)).await;
    assert_eq!(
        template_of(&d).0,
        pinned("1.0.0"),
        "1.0.0 must come back as its recorded digest"
    );
    let r = f
        .release_until("revision 3 Healthy", secs(60), |r| {
            phase(r) == "Healthy" && r.status.as_ref().unwrap().revision == Some(3)
        })
        .await;
    let s = r.status.unwrap();
    let (v1, v3) = (
        s.history.iter().find(|h| h.revision == 1).unwrap(),
        &s.history[0],
    );
    assert_eq!(v3.revision, 3);
    assert_eq!(v3.images[0].digest, v1.images[0].digest);
}

#[tokio::test]
async fn manual_rollback_by_annotation_on_the_release_acts_once() {
    let f = Fixture::new("manual_on_release").await;
    f.healthy_v1_then_v2().await;
    f.annotate(
        &f.releases,
        "shop",
        "rewind.dev/requested-by",
        Some("alice"),
    )
    .await;
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("1.0.0"))
        .await;
    f.deployment_until("back on 1.0.0", secs(30), |d| {
        template_of(d) == (pinned("1.0.0"), Some("1".into()))
    })
    .await;
    let r = f
        .release_until("manual rollback Succeeded", secs(30), |r| {
            r.status
                .as_ref()
                .and_then(|s| s.rollback.as_ref())
                .is_some_and(|rb| rb.phase == RollbackPhase::Succeeded)
        })
        .await;
    let rb = r.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(
        (rb.trigger, rb.requested_by.as_deref()),
        (Trigger::Manual, Some("alice"))
    );
    assert_eq!(phase(&r), "RolledBack");
    assert!(has_condition(&r, "ManualRollback", "True"));

    // The annotation stays (it lives in Git): nothing more happens.
    f.annotate(
        &f.releases,
        "shop",
        "rewind.dev/requested-by",
        Some("alice-again"),
    )
    .await;
    expect_never(&f.releases, "shop", "a second rollback", secs(4), |r| {
        r.status.as_ref().is_some_and(|s| s.rollbacks.len() > 1)
    })
    .await;
    expect_never(
        &f.deployments,
        "shop",
        "the template changed",
        secs(1),
        |d| template_of(d).1.as_deref() != Some("1"),
    )
    .await;
}

#[tokio::test]
async fn manual_rollback_by_annotation_on_the_deployment() {
    let f = Fixture::new("manual_on_deployment").await;
    f.healthy_v1_then_v2().await;
    f.annotate(
        &f.deployments,
        "shop",
        "rewind.dev/rollback-to",
        Some("previous"),
    )
    .await;
    f.deployment_until("back on 1.0.0", secs(30), |d| {
        template_of(d) == (pinned("1.0.0"), Some("1".into()))
    })
    .await;
    let r = f
        .release_until("RolledBack", secs(30), |r| phase(r) == "RolledBack")
        .await;
    assert_eq!(r.status.unwrap().rollback.unwrap().trigger, Trigger::Manual);
}

/// What `kubectl rewind rollback` waits for: its request id in `status.handled.requestId`,
/// written with the ManualRollback condition that answers it; a new id is a new request.
#[tokio::test]
async fn a_request_id_is_answered_with_the_manual_rollback_condition() {
    let f = Fixture::new("manual_request_id").await;
    f.healthy_v1().await;
    for id in ["req-a", "req-b"] {
        f.annotate(&f.releases, "shop", "rewind.dev/request-id", Some(id))
            .await;
        f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("9.9.9"))
            .await;
        let r = f
            .release_until(&format!("request {id} answered"), secs(20), |r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.handled.as_ref())
                    .and_then(|h| h.request_id.as_deref())
                    == Some(id)
            })
            .await;
        let c = condition(&r, "ManualRollback").expect("answered with the condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "UnknownVersion")
        );
        assert!(r.status.as_ref().unwrap().rollback.is_none());
    }
}

#[tokio::test]
async fn manual_rollback_to_an_unknown_version_is_refused_and_changes_nothing() {
    let f = Fixture::new("manual_unknown").await;
    f.healthy_v1().await;
    let before = f.deployments.get("shop").await.unwrap();
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("9.9.9"))
        .await;
    let r = f
        .release_until("ManualRollback refused", secs(20), |r| {
            has_condition(r, "ManualRollback", "False")
        })
        .await;
    let c = condition(&r, "ManualRollback").unwrap();
    assert_eq!(c.reason, "UnknownVersion");
    assert!(
        c.message.contains("9.9.9") && c.message.contains("1.0.0"),
        "{}",
        c.message
    );
    assert_eq!(phase(&r), "Healthy");
    assert!(r.status.as_ref().unwrap().rollback.is_none());
    let after = f.deployments.get("shop").await.unwrap();
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the Deployment must not change"
    );
    wait_for_events(
        &f.ns.client(),
        f.ns.name(),
        "shop",
        &["UnknownVersion"],
        secs(10),
    )
    .await;
}

#[tokio::test]
async fn a_restart_while_restoring_images_finishes_the_rollback_exactly_once() {
    let mut f = Fixture::new("restart_mid_rollback").await;
    f.healthy_v1().await;
    // This operator exits right after it records RestoringImages, before patching.
    f.op.kill();
    f.op = Operator::start_exiting_after_phase(f.ns.name(), "RestoringImages").await;
    f.apply_release("2.0.0", &image("2.0.0-unready"), json!({}))
        .await;
    let d2 = f.revision_applied(2, secs(20)).await;
    let code = f.op.wait_exit(secs(READINESS_TIMEOUT + 20)).await;
    assert_eq!(
        code,
        Some(75),
        "the fault hook should have stopped the operator"
    );
    let r = f.releases.get("shop").await.unwrap();
    assert_eq!(
        r.status
            .as_ref()
            .unwrap()
            .rollback
            .as_ref()
            .map(|rb| rb.phase),
        Some(RollbackPhase::RestoringImages)
    );
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(
        template_of(&d).1.as_deref(),
        Some("2"),
        "the Deployment is still on revision 2"
    );
    assert_eq!(d.metadata.generation, d2.metadata.generation);

    f.op = Operator::start(f.ns.name());
    let d = f
        .deployment_until("back on 1.0.0", secs(30), |d| {
            template_of(d) == (pinned("1.0.0"), Some("1".into()))
        })
        .await;
    f.release_until("rollback Succeeded", secs(30), |r| {
        r.status
            .as_ref()
            .and_then(|s| s.rollback.as_ref())
            .is_some_and(|rb| rb.phase == RollbackPhase::Succeeded)
    })
    .await;
    // Exactly one change of the template after revision 2, as without the crash.
    assert_eq!(d.metadata.generation, d2.metadata.generation.map(|g| g + 1));
    expect_never(
        &f.deployments,
        "shop",
        "another template change",
        secs(3),
        |d| d.metadata.generation != d2.metadata.generation.map(|g| g + 1),
    )
    .await;
}

#[tokio::test]
async fn a_missing_target_is_reported_and_picked_up_when_it_appears() {
    let f = Fixture::new("missing_target").await;
    f.apply_release("1.0.0", &image("1.0.0"), json!({})).await;
    let r = f
        .release_until("TargetNotFound", secs(20), |r| {
            condition(r, "Ready").is_some_and(|c| c.reason == "TargetNotFound")
        })
        .await;
    assert!(has_condition(&r, "Stalled", "True"));
    assert!(
        condition(&r, "Ready")
            .unwrap()
            .message
            .contains("Deployment shop not found")
    );
    f.create_deployment(&image("0.9.0")).await;
    f.release_until("Healthy once the Deployment exists", secs(60), |r| {
        phase(r) == "Healthy"
    })
    .await;
}

#[tokio::test]
async fn a_container_the_deployment_lacks_is_reported() {
    let f = Fixture::new("missing_container").await;
    f.create_deployment(&image("0.9.0")).await;
    f.releases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "rewind.dev/v1alpha1", "kind": "Release", "metadata": {"name": "shop"},
                "spec": {"version": "1.0.0", "target": {"name": "shop"}, "images": [{"container": "web", "image": image("1.0.0")}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let r = f
        .release_until("ContainerNotFound", secs(20), |r| {
            condition(r, "Ready").is_some_and(|c| c.reason == "ContainerNotFound")
        })
        .await;
    let msg = &condition(&r, "Ready").unwrap().message;
    assert!(
        msg.contains("no container named web") && msg.contains("app"),
        "{msg}"
    );
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(template_of(&d).0, image("0.9.0"), "nothing applied");
}

#[tokio::test]
async fn a_paused_release_is_left_alone() {
    let f = Fixture::new("paused").await;
    f.create_deployment(&image("0.9.0")).await;
    f.apply_release("1.0.0", &image("1.0.0"), json!({"paused": true}))
        .await;
    let r = f
        .release_until("Paused", secs(20), |r| phase(r) == "Paused")
        .await;
    assert!(r.status.as_ref().unwrap().history.is_empty());
    expect_never(
        &f.deployments,
        "shop",
        "the paused Release changed the Deployment",
        secs(3),
        |d| template_of(d).0 != image("0.9.0"),
    )
    .await;
}

#[tokio::test]
async fn a_second_release_for_the_same_deployment_is_refused() {
    let f = Fixture::new("second_release").await;
    f.healthy_v1().await;
    let before = f.deployments.get("shop").await.unwrap();
    f.releases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "rewind.dev/v1alpha1", "kind": "Release", "metadata": {"name": "shop-copy"},
                "spec": {"version": "9.0.0", "target": {"name": "shop"}, "images": [{"container": "app", "image": image("9.0.0")}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let copy = wait_for(&f.releases, "shop-copy", "TargetClaimed", secs(20), |r| {
        condition(r, "Stalled").is_some_and(|c| c.status == "True" && c.reason == "TargetClaimed")
    })
    .await;
    assert!(
        condition(&copy, "Ready")
            .unwrap()
            .message
            .contains("already managed by Release shop")
    );
    expect_never(
        &f.deployments,
        "shop",
        "the Deployment changed",
        secs(3),
        |d| d.metadata.generation != before.metadata.generation,
    )
    .await;
    assert_eq!(phase(&f.releases.get("shop").await.unwrap()), "Healthy");
}

/// The fields the `rewind` field manager owns on a Deployment whose only container is `app`.
fn rewind_owned_fields(with_image: bool) -> serde_json::Value {
    let mut container = json!({".": {}, "f:name": {}});
    if with_image {
        container["f:image"] = json!({});
    }
    json!({"f:spec": {"f:template": {
        "f:metadata": {
            "f:annotations": {"f:rewind.dev/revision": {}, "f:rewind.dev/version": {}},
            "f:labels": {"f:rewind.dev/release": {}},
        },
        "f:spec": {"f:containers": {r#"k:{"name":"app"}"#: container}},
    }}})
}

/// The managedFields entries of field manager `manager` on `d`: (operation, fields).
fn managed_by(
    d: &k8s_openapi::api::apps::v1::Deployment,
    manager: &str,
) -> Vec<(String, serde_json::Value)> {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .map(|m| {
            (
                m.operation.clone().unwrap_or_default(),
                m.fields_v1
                    .as_ref()
                    .map(|f| f.0.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn deleting_a_release_leaves_its_fields_on_the_deployment_and_rewind_lets_go() {
    let f = Fixture::new("delete_release").await;
    f.healthy_v1().await;
    let r = f.releases.get("shop").await.unwrap();
    assert!(
        r.finalizers().is_empty(),
        "a Release has no finalizer: {:?}",
        r.finalizers()
    );
    let before = f.deployments.get("shop").await.unwrap();
    f.releases
        .delete("shop", &kube::api::DeleteParams::default())
        .await
        .expect("deleting Release shop");
    // Gone at once: nothing waits for the operator.
    let deadline = Instant::now() + secs(10);
    while f.releases.get_opt("shop").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "Release shop still exists");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_never(
        &f.deployments,
        "shop",
        "the Deployment changed after its Release was deleted",
        secs(3),
        |d| d.spec != before.spec || d.metadata.generation != before.metadata.generation,
    )
    .await;

    // What stays on the pod template: exactly what Rewind last applied.
    let d = f.deployments.get("shop").await.unwrap();
    let template = &d.spec.as_ref().unwrap().template;
    let meta = template.metadata.as_ref().unwrap();
    assert_eq!(
        meta.labels.as_ref().unwrap().get("rewind.dev/release"),
        Some(&"shop".to_string())
    );
    let annotations = meta.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("rewind.dev/revision").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        annotations.get("rewind.dev/version").map(String::as_str),
        Some("1.0.0")
    );
    assert_eq!(
        template_of(&d).0,
        pinned("1.0.0"),
        "the pinned digest stays"
    );
    assert_eq!(
        managed_by(&d, "rewind"),
        [("Apply".to_string(), rewind_owned_fields(true))],
        "the managedFields entry of manager rewind stays, owning the image"
    );
    assert_eq!(d.spec, before.spec, "nothing else changed");
    assert_eq!(d.metadata.generation, before.metadata.generation);

    // The operator lets go: a person takes the image back with their own field manager
    // (forcing, since rewind still owns the field), and nothing reverts it.
    let reconciles = f.reconciles();
    let take_back = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image("0.9.1")}]}}}
    });
    f.deployments
        .patch(
            "shop",
            &PatchParams::apply("person").force(),
            &Patch::Apply(take_back),
        )
        .await
        .expect("applying the image as manager person");
    let taken = f
        .deployment_until("0.9.1 rolled out", secs(60), |d| {
            template_of(d).0 == image("0.9.1") && deployment_is_rolled_out(d)
        })
        .await;
    expect_never(
        &f.deployments,
        "shop",
        "the image was changed back",
        secs(5),
        |d| {
            template_of(d).0 != image("0.9.1") || d.metadata.generation != taken.metadata.generation
        },
    )
    .await;
    let after = f.deployments.get("shop").await.unwrap();
    assert_eq!(
        after.metadata.generation, taken.metadata.generation,
        "nothing changed the Deployment after the person's apply"
    );
    assert_eq!(
        managed_by(&after, "rewind"),
        [("Apply".to_string(), rewind_owned_fields(false))],
        "rewind keeps the label and annotations, no longer the image"
    );
    assert_eq!(
        f.reconciles(),
        reconciles,
        "no reconcile after the Release was deleted"
    );
    assert!(
        f.op.log_lines("reconcile failed").is_empty(),
        "the operator reported no error"
    );
}

/// A ValidatingAdmissionPolicy and its binding, both named after the test namespace, that
/// refuse (422) every update of a Deployment in that namespace whose pod template has an image
/// containing `refused`. Owned by the Namespace, so they go with it even if the test fails.
/// Returns once the API server enforces it.
async fn refuse_images_marked_refused(f: &Fixture) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::core::v1::Namespace;
    let client = f.ns.client();
    let ns = f.ns.name();
    let uid = kube::Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("reading the test namespace")
        .metadata
        .uid;
    let owner = json!([{"apiVersion": "v1", "kind": "Namespace", "name": ns, "uid": uid}]);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": ns, "ownerReferences": owner},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["deployments"]
            }]},
            "validations": [{
                "expression": "!object.spec.template.spec.containers.exists(c, c.image.contains('refused'))",
                "message": "images marked refused are not admitted here"
            }]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": ns, "ownerReferences": owner},
        "spec": {
            "policyName": ns,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        }
    }))
    .unwrap();
    kube::Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the admission policy");
    kube::Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the admission policy binding");
    // The API server loads policies asynchronously: probe with a dry run until it refuses.
    let probe = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image("0.0.0-refused")}]}}}
    });
    let deadline = Instant::now() + secs(30);
    loop {
        let answer = f
            .deployments
            .patch(
                "shop",
                &PatchParams::apply("probe").force().dry_run(),
                &Patch::Apply(&probe),
            )
            .await;
        match answer {
            Err(kube::Error::Api(s)) if s.code == 422 => return,
            other => assert!(
                Instant::now() < deadline,
                "the admission policy is not enforced after 30s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reconciles that failed because the Deployment apply was refused, in /metrics.
const APPLY_FAILURES: &str = r#"rewind_reconcile_failures_total{error="apply"}"#;

/// Wait until the operator has counted at least `n` refused applies.
async fn apply_failures_at_least(f: &Fixture, n: f64) {
    let deadline = Instant::now() + secs(60);
    while f.metric(APPLY_FAILURES) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} refused applies within 60s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_refused_apply_is_shown_on_the_release_once_and_timed() {
    // A long readiness timeout: the refused revision must not be rolled back while we look.
    let f = Fixture::with(
        "refused_apply",
        &[],
        json!({"readiness": {"timeout": "10m", "unreadyFor": "3s", "maxUnready": 0}}),
    )
    .await;
    f.create_deployment(&image("0.9.0")).await;
    f.deployment_until("0.9.0 rolled out", secs(60), deployment_is_rolled_out)
        .await;
    refuse_images_marked_refused(&f).await;
    let (client, ns) = (f.ns.client(), f.ns.name());
    f.apply_release("1.0.0-refused", &image("1.0.0-refused"), json!({}))
        .await;
    apply_failures_at_least(&f, 3.0).await;
    let all = wait_for_events(&client, ns, "shop", &["DeploymentApplyFailed"], secs(10)).await;
    let (_, note) = all
        .iter()
        .find(|(r, _)| r == "DeploymentApplyFailed")
        .unwrap();
    assert!(
        note.starts_with("applying Deployment shop: ")
            && note.contains("images marked refused are not admitted here")
            && note.contains("(422 Invalid)"),
        "{note}"
    );
    assert_eq!(
        times_published(&client, ns, "shop", "DeploymentApplyFailed").await,
        1,
        "a persisting error is published once, not on each of the {} retries",
        f.metric(APPLY_FAILURES)
    );
    let event = event_objects(&client, ns, "shop")
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("DeploymentApplyFailed"))
        .unwrap();
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    // Every reconcile is timed, the failed ones too (one may be running while we read).
    let text = f.op.metrics();
    let value = |series: &str| {
        metric_value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let (reconciles, timed, failed) = (
        value("rewind_reconciles_total"),
        value("rewind_reconcile_duration_seconds_count"),
        value(APPLY_FAILURES),
    );
    assert!(
        timed >= failed && timed + 1.0 >= reconciles,
        "reconciles {reconciles}, timed {timed}, failed applies {failed}"
    );

    // A good version succeeds, which forgets the error: the next refusal is shown again.
    f.apply_release("1.0.0", &image("1.0.0"), json!({})).await;
    f.release_until("1.0.0 Healthy", secs(60), |r| {
        phase(r) == "Healthy" && r.status.as_ref().unwrap().version.as_deref() == Some("1.0.0")
    })
    .await;
    let before = f.metric(APPLY_FAILURES);
    f.apply_release("2.0.0-refused", &image("2.0.0-refused"), json!({}))
        .await;
    apply_failures_at_least(&f, before + 2.0).await;
    let deadline = Instant::now() + secs(10);
    while times_published(&client, ns, "shop", "DeploymentApplyFailed").await < 2 {
        assert!(
            Instant::now() < deadline,
            "the refusal after a success was not published again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        times_published(&client, ns, "shop", "DeploymentApplyFailed").await,
        2
    );
    assert!(
        f.op.log_lines("could not publish Event").is_empty(),
        "every Event was published"
    );
}
