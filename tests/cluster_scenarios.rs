//! The local test cluster behaves as Rewind's tests assume: real controllers and scheduler, and
//! KWOK moving pods through the scenarios chosen by marker words in image references
//! (docs/test-cluster.md, tests/cluster/kwok/stages.yaml).
//!
//! Needs the cluster: `make cluster-up && export KUBECONFIG=$PWD/target/cluster/kubeconfig`
//! (or `make test`). Without it every test here fails with that hint, except
//! `missing_cluster_fails_with_hint`, which checks exactly that.

mod support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(60);

fn terminated_exit_code(pod: &Pod, container: &str) -> Option<i32> {
    container_status(pod, container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn terminated_message<'a>(pod: &'a Pod, container: &str) -> Option<&'a str> {
    container_status(pod, container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .as_deref()
}

/// The one pod of Job `name` in `ns`.
async fn only_pod_of_job(ns: &TestNamespace, name: &str) -> Pod {
    let pods: Api<Pod> = ns.api();
    let mut pods = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await
        .unwrap()
        .items;
    assert_eq!(
        pods.len(),
        1,
        "backoffLimit 0: exactly one attempt of {name}"
    );
    pods.remove(0)
}

#[tokio::test]
async fn deployment_of_three_replicas_rolls_out_onto_kwok_nodes() {
    let ns = TestNamespace::new("deployment_rolls_out").await;
    let deployments: Api<Deployment> = ns.api();
    let image = "example.com/shop/api:1.0";
    deployments
        .create(&PostParams::default(), &deployment("web", 3, &[image]))
        .await
        .unwrap();
    let d = wait_for(
        &deployments,
        "web",
        "3 replicas updated, ready and available",
        TIMEOUT,
        deployment_is_rolled_out,
    )
    .await;

    // The ReplicaSet comes from the real deployment controller...
    let replicasets: Api<ReplicaSet> = ns.api();
    let rss = replicasets
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(
        rss.len(),
        1,
        "expected one ReplicaSet for the Deployment, got {}",
        rss.len()
    );
    let rs = &rss[0];
    let rs_owner = rs
        .owner_references()
        .first()
        .expect("ReplicaSet has an owner");
    assert_eq!(
        (rs_owner.kind.as_str(), Some(rs_owner.uid.as_str())),
        ("Deployment", d.uid().as_deref())
    );

    // ...the Pods from the real replicaset controller, placed by the real scheduler on KWOK nodes.
    let nodes: Api<Node> = Api::all(ns.client());
    let kwok_nodes: BTreeSet<String> = nodes
        .list(&ListParams::default().labels(FAKE_NODE_SELECTOR))
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert!(
        !kwok_nodes.is_empty(),
        "no nodes labelled {FAKE_NODE_SELECTOR}"
    );

    let pods: Api<Pod> = ns.api();
    let pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 3, "expected 3 pods");
    for p in &pods {
        let owner = p.owner_references().first().expect("pod has an owner");
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", rs.name_any().as_str())
        );
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("pod is scheduled");
        assert!(
            kwok_nodes.contains(&node),
            "pod {} is on {node}, not a KWOK node {kwok_nodes:?}",
            p.name_any()
        );
        assert_eq!(pod_condition(p, "PodScheduled"), Some("True"));
        assert_eq!(pod_phase(p), Some("Running"));
        assert!(
            pod_is_ready(p),
            "pod {} not Ready:\n{}",
            p.name_any(),
            status_json(p)
        );
        let cs = container_status(p, "app").expect("status of container app");
        assert!(
            cs.ready && cs.started == Some(true) && is_running(cs),
            "container not running+ready: {cs:?}"
        );
        assert_eq!(cs.image, image);
        assert_eq!(cs.image_id, simulated_image_id(image));
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn unready_pod_runs_but_never_becomes_ready() {
    let ns = TestNamespace::new("unready_never_ready").await;
    let pods: Api<Pod> = ns.api();
    pods.create(
        &PostParams::default(),
        &pod("api", &["example.com/unready/api:1.0"], &[]),
    )
    .await
    .unwrap();
    let p = wait_for(
        &pods,
        "api",
        "phase Running with its container running",
        TIMEOUT,
        |p| pod_phase(p) == Some("Running") && container_status(p, "app").is_some_and(is_running),
    )
    .await;
    assert_eq!(pod_condition(&p, "Ready"), Some("False"));
    assert_eq!(pod_condition(&p, "ContainersReady"), Some("False"));
    let cs = container_status(&p, "app").unwrap();
    assert!(!cs.ready && cs.started == Some(true), "{cs:?}");
    assert!(
        cs.image_id.contains("@sha256:"),
        "running container has an imageID: {cs:?}"
    );

    expect_never(
        &pods,
        "api",
        "the unready pod became Ready",
        Duration::from_secs(8),
        pod_is_ready,
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn flaky_pod_is_ready_then_turns_not_ready_after_a_delay() {
    let ns = TestNamespace::new("flaky_ready_then_not").await;
    let pods: Api<Pod> = ns.api();
    pods.create(
        &PostParams::default(),
        &pod("api", &["example.com/flaky/api:1.0"], &[]),
    )
    .await
    .unwrap();
    wait_for(&pods, "api", "Ready", TIMEOUT, pod_is_ready).await;
    let ready_at = Instant::now();
    let p = wait_for(
        &pods,
        "api",
        "NotReady again (~5s after Ready)",
        TIMEOUT,
        |p| pod_condition(p, "Ready") == Some("False"),
    )
    .await;
    let after = ready_at.elapsed();
    assert!(
        after >= Duration::from_secs(3),
        "turned NotReady only {after:?} after Ready; expected ~5s"
    );
    assert_eq!(pod_phase(&p), Some("Running"));
    let cs = container_status(&p, "app").unwrap();
    assert!(
        !cs.ready && is_running(cs) && cs.restart_count == 0,
        "{cs:?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn crashloop_container_backs_off_with_a_rising_restart_count() {
    let ns = TestNamespace::new("crashloop_restarts").await;
    let pods: Api<Pod> = ns.api();
    // Only the marked container crashes; the other one runs.
    let images = [
        "example.com/shop/api:1.0",
        "example.com/crashloop/agent:1.0",
    ];
    pods.create(&PostParams::default(), &pod("api", &images, &[]))
        .await
        .unwrap();
    let p = wait_for(
        &pods,
        "api",
        "sidecar-1 in CrashLoopBackOff with restartCount >= 2",
        TIMEOUT,
        |p| {
            container_status(p, "sidecar-1").is_some_and(|cs| {
                waiting_reason(cs) == Some("CrashLoopBackOff") && cs.restart_count >= 2
            })
        },
    )
    .await;
    let crashing = container_status(&p, "sidecar-1").unwrap();
    let last = crashing
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 1);
    assert!(!crashing.ready);
    assert!(!pod_is_ready(&p));
    assert_eq!(pod_phase(&p), Some("Running"));
    let app = container_status(&p, "app").unwrap();
    assert!(
        app.ready && is_running(app) && app.restart_count == 0,
        "unmarked container runs: {app:?}"
    );

    let seen = crashing.restart_count;
    wait_for(&pods, "api", "restartCount to keep rising", TIMEOUT, |p| {
        container_status(p, "sidecar-1").is_some_and(|cs| cs.restart_count > seen)
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn badpull_container_reports_err_image_pull_then_image_pull_back_off() {
    let ns = TestNamespace::new("badpull").await;
    let pods: Api<Pod> = ns.api();
    // A longer ErrImagePull phase (default 2s) so the watch surely sees it.
    let annotations = [("sim.rewind.dev/pull-backoff-after", "5s")];
    pods.create(
        &PostParams::default(),
        &pod("api", &["example.com/shop/api:2.0-badpull"], &annotations),
    )
    .await
    .unwrap();
    let p = wait_for(
        &pods,
        "api",
        "container waiting with ErrImagePull",
        TIMEOUT,
        |p| container_status(p, "app").and_then(waiting_reason) == Some("ErrImagePull"),
    )
    .await;
    let cs = container_status(&p, "app").unwrap();
    assert!(
        cs.image_id.is_empty(),
        "an image that was never pulled has no imageID: {cs:?}"
    );
    assert!(!cs.ready);
    assert_eq!(pod_phase(&p), Some("Pending"));
    assert_eq!(pod_condition(&p, "Ready"), Some("False"));

    wait_for(
        &pods,
        "api",
        "container waiting with ImagePullBackOff",
        TIMEOUT,
        |p| container_status(p, "app").and_then(waiting_reason) == Some("ImagePullBackOff"),
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn job_pod_succeeds_and_job_completes() {
    let ns = TestNamespace::new("job_completes").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(
        &PostParams::default(),
        &job("migrate", "example.com/shop/migrate:1.0", 0),
    )
    .await
    .unwrap();
    let j = wait_for(&jobs, "migrate", "condition Complete=True", TIMEOUT, |j| {
        job_has_condition(j, "Complete")
    })
    .await;
    assert_eq!(j.status.as_ref().and_then(|s| s.succeeded), Some(1));

    let pods: Api<Pod> = ns.api();
    let pods = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=migrate"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pod_phase(&pods[0]), Some("Succeeded"));
    assert_eq!(terminated_exit_code(&pods[0], "app"), Some(0));
    ns.cleanup().await;
}

#[tokio::test]
async fn jobfail_job_fails_with_backoff_limit_zero() {
    let ns = TestNamespace::new("jobfail_fails").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(
        &PostParams::default(),
        &job("migrate", "example.com/jobfail/migrate:1.0", 0),
    )
    .await
    .unwrap();
    let j = wait_for(&jobs, "migrate", "condition Failed=True", TIMEOUT, |j| {
        job_has_condition(j, "Failed")
    })
    .await;
    assert!(!job_has_condition(&j, "Complete"));
    assert_eq!(j.status.as_ref().and_then(|s| s.failed), Some(1));

    let pod = only_pod_of_job(&ns, "migrate").await;
    assert_eq!(pod_phase(&pod), Some("Failed"));
    assert_eq!(terminated_exit_code(&pod, "app"), Some(1));
    assert_eq!(
        terminated_message(&pod, "app"),
        None,
        "no sim.rewind.dev/termination-message annotation: no message"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn jobfail_pod_reports_the_termination_message_of_its_annotation() {
    let ns = TestNamespace::new("jobfail_message").await;
    let jobs: Api<Job> = ns.api();
    // What Postgres prints, quotes and a newline included: the message is copied verbatim.
    let message = "ERROR:  relation \"users\" does not exist\nLINE 1: SELECT id FROM users";
    // The annotation on the pod template; a second, unmarked container exits 0 without one.
    let mut j = job("migrate", "example.com/jobfail/migrate:1", 0);
    j.spec.as_mut().unwrap().template = serde_json::from_value(json!({
        "metadata": {
            "labels": {"app": "migrate"},
            "annotations": {"sim.rewind.dev/termination-message": message},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "app", "image": "example.com/jobfail/migrate:1"},
                {"name": "sidecar-1", "image": "example.com/shop/proxy:1"},
            ],
        },
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let j = wait_for(&jobs, "migrate", "condition Failed=True", TIMEOUT, |j| {
        job_has_condition(j, "Failed")
    })
    .await;
    assert!(!job_has_condition(&j, "Complete"));

    let pod = only_pod_of_job(&ns, "migrate").await;
    assert_eq!(pod_phase(&pod), Some("Failed"));
    assert_eq!(terminated_exit_code(&pod, "app"), Some(1));
    assert_eq!(terminated_message(&pod, "app"), Some(message));
    assert_eq!(terminated_exit_code(&pod, "sidecar-1"), Some(0));
    assert_eq!(
        terminated_message(&pod, "sidecar-1"),
        None,
        "only the containers whose image carries the marker get the message"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn image_id_digest_is_sha256_of_the_reference_and_pinned_reference_reports_the_same() {
    let ns = TestNamespace::new("image_id_digest").await;
    let pods: Api<Pod> = ns.api();
    let tagged = "example.com/shop/api:1.0";
    let digest = sha256_hex(tagged.as_bytes());
    let pinned = format!("example.com/shop/api@sha256:{digest}");
    let with_port = "localhost:5000/shop/worker:2.1";
    pods.create(
        &PostParams::default(),
        &pod("api", &[tagged, with_port, &pinned], &[]),
    )
    .await
    .unwrap();
    let p = wait_for(&pods, "api", "Ready", TIMEOUT, pod_is_ready).await;

    let app = container_status(&p, "app").unwrap();
    assert_eq!(app.image, tagged);
    assert_eq!(
        app.image_id,
        format!("docker-pullable://example.com/shop/api@sha256:{digest}")
    );
    let worker = container_status(&p, "sidecar-1").unwrap();
    assert_eq!(
        worker.image_id,
        format!(
            "docker-pullable://localhost:5000/shop/worker@sha256:{}",
            sha256_hex(with_port.as_bytes())
        )
    );
    let by_digest = container_status(&p, "sidecar-2").unwrap();
    assert_eq!(by_digest.image, pinned);
    assert_eq!(
        by_digest.image_id, app.image_id,
        "pinning the captured digest reports the same imageID"
    );
    for cs in [app, worker, by_digest] {
        assert_eq!(cs.image_id, simulated_image_id(&cs.image));
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn deployment_rolled_back_to_captured_digest_reports_the_same_digest() {
    // The flow Rewind relies on: deploy a tag, capture the digest from the pods' imageID, later
    // set the image to repo@sha256:<digest>; the new pods report the same digest.
    let ns = TestNamespace::new("digest_capture").await;
    let deployments: Api<Deployment> = ns.api();
    let pods: Api<Pod> = ns.api();
    deployments
        .create(
            &PostParams::default(),
            &deployment("shop", 2, &["example.com/shop/api:1.0"]),
        )
        .await
        .unwrap();
    wait_for(
        &deployments,
        "shop",
        "rolled out with the tag",
        TIMEOUT,
        deployment_is_rolled_out,
    )
    .await;
    let running = pods
        .list(&ListParams::default().labels("app=shop"))
        .await
        .unwrap()
        .items;
    let image_id = container_status(&running[0], "app")
        .unwrap()
        .image_id
        .clone();
    let digest = digest_of(&image_id)
        .expect("imageID carries a digest")
        .to_string();
    let pinned = format!("example.com/shop/api@sha256:{digest}");

    let patch = json!({ "spec": { "template": { "spec": { "containers": [ { "name": "app", "image": pinned } ] } } } });
    deployments
        .patch("shop", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    wait_for(
        &deployments,
        "shop",
        "rolled out with the pinned digest",
        TIMEOUT,
        deployment_is_rolled_out,
    )
    .await;
    let pinned_pods = wait_for_all(
        &pods,
        "app=shop",
        "2 Ready pods, all with the pinned image",
        TIMEOUT,
        |ps| {
            ps.len() == 2
                && ps.iter().all(|p| {
                    pod_is_ready(p)
                        && container_status(p, "app").is_some_and(|cs| cs.image == pinned)
                })
        },
    )
    .await;
    for p in &pinned_pods {
        assert_eq!(container_status(p, "app").unwrap().image_id, image_id);
    }
    ns.cleanup().await;
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

#[tokio::test]
async fn missing_cluster_fails_with_hint() {
    // KUBECONFIG naming a file that does not exist.
    let missing = "/nonexistent/rewind/kubeconfig";
    let err = tokio::spawn(async move { drop(client_from(Some(OsStr::new(missing))).await) })
        .await
        .expect_err("a client for a missing kubeconfig must panic");
    let msg = panic_message(err.into_panic());
    assert!(
        msg.contains("make cluster-up") && msg.contains(missing),
        "unhelpful message: {msg}"
    );

    // KUBECONFIG unset.
    let err = tokio::spawn(async { drop(client_from(None).await) })
        .await
        .expect_err("must panic without KUBECONFIG");
    let msg = panic_message(err.into_panic());
    assert!(
        msg.contains("make cluster-up") && msg.contains("KUBECONFIG is not set"),
        "unhelpful message: {msg}"
    );

    // A kubeconfig whose API server does not answer (nothing listens on port 1).
    let path = std::env::temp_dir().join(format!(
        "rewind-no-cluster-{}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:1\n    \
         insecure-skip-tls-verify: true\nusers:\n- name: nobody\n  user: {}\ncontexts:\n- name: gone\n  context:\n    \
         cluster: gone\n    user: nobody\ncurrent-context: gone\n",
    )
    .unwrap();
    let p = path.clone();
    let err = tokio::spawn(async move { drop(client_from(Some(p.as_os_str())).await) })
        .await
        .expect_err("a cluster that does not answer must panic");
    let _ = std::fs::remove_file(&path);
    let msg = panic_message(err.into_panic());
    assert!(
        msg.contains("make cluster-up") && msg.contains("does not answer"),
        "unhelpful message: {msg}"
    );
}
