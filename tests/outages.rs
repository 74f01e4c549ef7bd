//! The API server taken away for 30 s (tests/cluster/restart.sh kube-apiserver --down-for 30)
//! in the middle of a rollout and of a rollback: no false verdict, no spin, and completion once
//! it is back. These stop the shared cluster's API server, so they never run beside other
//! tests: the target needs the `cluster-faults` feature and `make test` runs it alone, after
//! the rest of the suite, with one test thread.
//!
//! The operator runs as the chart runs it, with leader election (default timings): the outage
//! outlasts its renew deadline, so it stops writing mid-outage and must take the lease again,
//! and act, once the API server is back.

mod operator;
mod support;

use std::{path::PathBuf, process::Command, time::Instant};

use operator::*;
use rewind::api::{Phase, RollbackPhase};
use serde_json::json;
use support::*;

/// `rewind run` as the chart runs it: leader election on (the Lease in the test namespace).
const AS_DEPLOYED: &[&str] = &["--leader-elect"];

/// How long the API server stays away: longer than the policy's readiness timeout (20 s), so a
/// deadline counted through the outage would fire.
const DOWN_FOR: u64 = 30;

/// Run tests/cluster/restart.sh with `args` (blocking: nothing can be read from the API server
/// meanwhile anyway); panics with its output when it fails.
async fn restart(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/restart.sh");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&script)
            .args(&args)
            // Components drain for a long time on TERM; the outage starts at once.
            .env("REWIND_CLUSTER_STOP_GRACE", "1")
            .output()
            .expect("running tests/cluster/restart.sh")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "tests/cluster/restart.sh failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stop the API server, keep it down `DOWN_FOR` seconds, start it again, and restart the
/// controller-manager and the scheduler as a real control plane's would (they lose their
/// leader leases during such an outage and restart; ours run without leader election, and
/// their work queues would otherwise stay backed off for minutes). Returns the operator's reconcile count before and after.
async fn api_server_away(f: &Fixture) -> (u64, u64) {
    let before = f.reconciles();
    restart(&["kube-apiserver", "--down-for", &DOWN_FOR.to_string()]).await;
    let after = f.reconciles();
    restart(&["kube-controller-manager"]).await;
    restart(&["kube-scheduler"]).await;
    (before, after)
}

#[tokio::test]
async fn api_server_down_mid_rollout_gives_no_false_verdict() {
    let f = Fixture::with("outage_rollout", AS_DEPLOYED, json!({})).await;
    f.shop_healthy_on_1_0_0().await;
    // A good version whose pods take a few seconds to become Ready.
    f.apply_release("2.0.0", &loopback_image("2.0.0"), json!({}))
        .await;
    f.revision_applied(2, secs(20)).await;
    let started = Instant::now();
    let (before, after) = api_server_away(&f).await;
    let outage = started.elapsed();
    assert!(
        after - before < 60,
        "{} reconciles during a {outage:?} outage: a spin",
        after - before
    );
    // Back: the readiness timeout (20 s) passed during the outage, but that time was blind.
    let r = f
        .release_until("2.0.0 Healthy after the outage", secs(120), |r| {
            phase(r) == "Healthy" && status_of(r).revision == Some(2)
        })
        .await;
    assert!(
        status_of(&r).rollback.is_none(),
        "no rollback of a version whose pods became Ready: {}",
        status_json(&r)
    );
    let events = operator::events(&f.ns.client(), f.ns.name(), "shop").await;
    assert!(
        !events
            .iter()
            .any(|(reason, _)| reason == "RollbackStarted" || reason == "ReadinessTimeout"),
        "{events:?}"
    );
    led_again_after_losing_the_lease(&f);
}

#[tokio::test]
async fn api_server_down_mid_rollback_finishes_it_once_without_a_false_failure() {
    let f = Fixture::with("outage_rollback", AS_DEPLOYED, json!({})).await;
    f.shop_healthy_on_1_0_0().await;
    f.ship_crashlooping("2.0.0").await;
    f.release_until("a rollback in flight", secs(60), |r| {
        r.status
            .as_ref()
            .and_then(|s| s.rollback.as_ref())
            .is_some_and(|rb| !rb.phase.is_finished())
    })
    .await;
    let (before, after) = api_server_away(&f).await;
    assert!(
        after - before < 60,
        "{} reconciles during the outage: a spin",
        after - before
    );
    let r = f
        .release_until("the rollback Succeeded after the outage", secs(90), |r| {
            r.status
                .as_ref()
                .and_then(|s| s.rollback.as_ref())
                .is_some_and(|rb| rb.phase == RollbackPhase::Succeeded)
        })
        .await;
    let s = status_of(&r);
    assert_eq!(s.rollbacks.len(), 1, "{}", status_json(&r));
    assert_eq!(s.phase, Some(Phase::RolledBack));
    let events = operator::events(&f.ns.client(), f.ns.name(), "shop").await;
    assert!(
        !events.iter().any(|(reason, _)| reason == "RollbackFailed"),
        "no false RollbackFailed: {events:?}"
    );
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(template_of(&d).1.as_deref(), Some("1"), "1.0.0 runs");
    led_again_after_losing_the_lease(&f);
}

/// The outage outlasted the renew deadline: the operator stopped writing, then led again.
fn led_again_after_losing_the_lease(f: &Fixture) {
    let log = f.op.log.display();
    assert!(
        !f.op.log_lines("lost the lease").is_empty(),
        "the leader stopped writing during the outage; log: {log}"
    );
    assert!(
        f.op.log_lines("leading: acquired the lease").len() >= 2,
        "and took the lease again after it; log: {log}"
    );
}
