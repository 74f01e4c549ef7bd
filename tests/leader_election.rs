//! Leader election with two replicas on the local cluster: one leads and only it writes (the
//! API server's audit log says who sent what); a leader killed mid-rollback (SIGKILL) is
//! replaced and the rollback finishes exactly once; a leader frozen (SIGSTOP) past its lease
//! wakes up fenced and writes nothing; SIGTERM mid-rollback finishes the step, gives the lease
//! up, and the next start completes the rollback once.
//!
//! Shortened lease timings (lease 8 s, renew deadline 6 s, retry 1 s) keep the takeovers quick
//! while leaving a leader on a loaded 2-core machine room to renew in time.

mod operator;
mod support;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use operator::*;
use rewind::api::{Release, RollbackPhase};

use serde_json::json;
use support::*;

/// `rewind run` arguments for a replica named `id` (the Lease lives in the test namespace:
/// the only watched one).
fn elect(id: &str) -> Vec<&str> {
    vec![
        "--leader-elect",
        "--identity",
        id,
        "--lease-duration",
        "8s",
        "--lease-renew-deadline",
        "6s",
        "--lease-retry-period",
        "1s",
    ]
}

/// Wait until `op`'s /readyz body satisfies `want` (what it says is in the failure message).
async fn readyz_until(op: &Operator, what: &str, within: Duration, want: impl Fn(&str) -> bool) {
    let started = Instant::now();
    loop {
        let body = op.readyz_body().unwrap_or_default();
        if want(&body) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{what}: /readyz said {body:?} for {within:?}; log: {}",
            op.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fixture whose operator `a` leads and pauses `pause` right after it writes a rollback's
/// RestoringImages phase, before it patches the Deployment: a rollback step in flight.
async fn leader_pausing_mid_rollback(test: &str, pause: &'static str) -> Fixture {
    let f = Fixture::with_operator(test, json!({}), async |ns: String| {
        Operator::start_pausing_after_phase(&ns, &elect("a"), "RestoringImages", pause).await
    })
    .await;
    readyz_until(&f.op, "a leads", secs(20), |b| b == "ready: leading").await;
    f
}

/// Ship `version` crash-looping and wait until the leader has written RestoringImages and is
/// pausing (the test fault) before it patches the Deployment.
async fn ship_bad_until_in_flight(f: &Fixture, version: &str) {
    f.ship_crashlooping(version).await;
    f.op.wait_log("test fault: pausing", secs(90)).await;
}

/// Wait until the one rollback from `version` Succeeded.
async fn rolled_back_once(f: &Fixture, version: &str) -> Release {
    f.release_until("the rollback Succeeded", secs(90), |r| {
        r.status.as_ref().is_some_and(|s| {
            s.rollbacks.len() == 1
                && s.rollbacks[0].from.version == version
                && s.rollbacks[0].phase == RollbackPhase::Succeeded
        })
    })
    .await
}

/// Exactly one rollback, to 1.0.0, finished once (one RollbackSucceeded Event, no
/// RollbackFailed; started or carried on by one replica at a time: at most one RollbackStarted
/// and one RollbackResumed, at least one of them), and the Deployment changed exactly twice
/// since `gen0` (the bad rollout, the restore).
async fn assert_rolled_back_exactly_once(f: &Fixture, gen0: i64) {
    // Let any second writer show itself.
    tokio::time::sleep(secs(3)).await;
    let r = f.releases.get("shop").await.unwrap();
    let s = status_of(&r);
    assert_eq!(s.rollbacks.len(), 1, "{}", status_json(&r));
    assert_eq!(s.rollbacks[0].to.version, "1.0.0", "{}", status_json(&r));
    assert_eq!(s.rollbacks[0].phase, RollbackPhase::Succeeded);
    let now = generation(f).await;
    assert_eq!(now - gen0, 2, "one bad rollout, one restore");
    // Counted with the Events' series: a repeat from one replica is merged into one object.
    let client = f.ns.client();
    let count = async |reason: &str| times_published(&client, f.ns.name(), "shop", reason).await;
    let (succeeded, failed) = (
        count("RollbackSucceeded").await,
        count("RollbackFailed").await,
    );
    let (started, resumed) = (
        count("RollbackStarted").await,
        count("RollbackResumed").await,
    );
    let events = operator::events(&client, f.ns.name(), "shop").await;
    assert_eq!(succeeded, 1, "{events:?}");
    assert_eq!(failed, 0, "{events:?}");
    assert!(started <= 1 && resumed <= 1, "{events:?}");
    assert!(started + resumed >= 1, "{events:?}");
}

async fn generation(f: &Fixture) -> i64 {
    let d = f
        .deployments
        .get("shop")
        .await
        .expect("reading Deployment shop");
    d.metadata.generation.unwrap_or_default()
}

/// The writes replica `id` sent in the test's namespace, Leases aside (after the audit log
/// has caught up).
async fn writes_by(f: &Fixture, id: &str) -> Vec<serde_json::Value> {
    audit::flushed(&f.ns.client(), f.ns.name()).await;
    let agent = format!("({id})");
    audit::events()
        .into_iter()
        .filter(|e| {
            e["objectRef"]["namespace"] == f.ns.name()
                && e["objectRef"]["resource"] != "leases"
                && e["userAgent"].as_str().is_some_and(|a| a.contains(&agent))
                && audit::is_write(e)
        })
        .collect()
}

fn received(e: &serde_json::Value) -> Timestamp {
    e["requestReceivedTimestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("audit event without a timestamp: {e}"))
}

/// Two replicas: a leads, b stands by (Ready, saying who leads) and writes nothing; a is
/// killed with a rollback in flight; b takes over and finishes it, once.
#[tokio::test]
async fn standby_takes_over_a_killed_leaders_rollback_and_finishes_it_once() {
    let mut f = leader_pausing_mid_rollback("leader_kill", "10m").await;
    f.shop_healthy_on_1_0_0().await;
    let b = Operator::start_with_args(f.ns.name(), &elect("b"), &[]);
    readyz_until(&b, "b is a Ready standby", secs(20), |body| {
        body.starts_with("ready: standby") && body.contains("held by a")
    })
    .await;
    let gen0 = generation(&f).await;
    ship_bad_until_in_flight(&f, "2.0.0").await;
    let killed_at = Timestamp::now();
    f.op.kill();
    rolled_back_once(&f, "2.0.0").await;
    readyz_until(&b, "b leads", secs(20), |body| body == "ready: leading").await;
    assert_rolled_back_exactly_once(&f, gen0).await;

    let by_b = writes_by(&f, "b").await;
    assert!(
        !by_b.is_empty(),
        "b finished the rollback, so the audit log shows its writes"
    );
    let early: Vec<String> = by_b
        .iter()
        .filter(|e| received(e) < killed_at)
        .map(audit::describe)
        .collect();
    assert!(
        early.is_empty(),
        "the standby wrote while a led: {early:#?}"
    );
    let lease: Lease = f.ns.api::<Lease>().get("rewind-leader").await.unwrap();
    let spec = lease.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert!(spec.lease_transitions.unwrap_or_default() >= 1, "{spec:?}");
}

/// A leader frozen (SIGSTOP) with a rollback in flight loses the lease; b finishes the
/// rollback; when a wakes (SIGCONT) its fence has closed by the clock: it sends no write at all
/// after it was frozen, and says it is a standby.
#[tokio::test]
async fn a_leader_frozen_past_its_lease_wakes_up_fenced_and_writes_nothing() {
    // a's pause ends while it is frozen (b needs the 8 s lease duration to take over): it
    // wakes up to patch the Deployment.
    let f = leader_pausing_mid_rollback("leader_freeze", "5s").await;
    f.shop_healthy_on_1_0_0().await;
    let b = Operator::start_with_args(f.ns.name(), &elect("b"), &[]);
    readyz_until(&b, "b is a Ready standby", secs(20), |body| {
        body.starts_with("ready: standby")
    })
    .await;
    let gen0 = generation(&f).await;
    ship_bad_until_in_flight(&f, "2.0.0").await;
    let frozen_at = Timestamp::now();
    f.op.signal("STOP");
    readyz_until(&b, "b takes over", secs(15), |body| {
        body == "ready: leading"
    })
    .await;
    rolled_back_once(&f, "2.0.0").await;
    // Frozen well past its renew deadline; the step it had in flight wakes up with it and
    // tries to patch the Deployment.
    f.op.signal("CONT");
    f.op.wait_log("no longer leads", secs(10)).await;
    readyz_until(&f.op, "a, awake, stands by", secs(15), |body| {
        body.starts_with("ready: standby") && body.contains("held by b")
    })
    .await;
    assert_rolled_back_exactly_once(&f, gen0).await;
    let late: Vec<String> = writes_by(&f, "a")
        .await
        .iter()
        .filter(|e| received(e) > frozen_at)
        .map(audit::describe)
        .collect();
    assert!(
        late.is_empty(),
        "a wrote after it lost the lease: {late:#?}"
    );
    assert!(
        !f.op
            .log_lines("could not renew the lease in time")
            .is_empty()
            || !f.op.log_lines("lost the lease").is_empty(),
        "a says it stopped writing; log: {}",
        f.op.log.display()
    );
}

/// SIGTERM with a rollback in flight: the operator finishes the step, releases the lease and
/// exits 0; the next start leads at once and completes the rollback, once.
#[tokio::test]
async fn sigterm_mid_rollback_releases_the_lease_and_the_next_start_completes_once() {
    let mut f = leader_pausing_mid_rollback("leader_term", "5s").await;
    f.shop_healthy_on_1_0_0().await;
    let gen0 = generation(&f).await;
    ship_bad_until_in_flight(&f, "2.0.0").await;
    let term = Instant::now();
    f.op.signal("TERM");
    let code = f.op.wait_exit(secs(30)).await;
    // The TERM came within a poll of the pause starting; the exit waited for the step.
    assert!(
        term.elapsed() > secs(3),
        "exited {:?} after SIGTERM: it did not wait for the step in flight; log: {}",
        term.elapsed(),
        f.op.log.display()
    );
    assert!(
        !f.op.log_lines("test fault: pause over").is_empty(),
        "the step in flight was finished before the exit; log: {}",
        f.op.log.display()
    );
    assert_eq!(code, Some(0), "a clean exit; log: {}", f.op.log.display());
    assert!(
        !f.op.log_lines("released the lease").is_empty(),
        "it gave the lease up; log: {}",
        f.op.log.display()
    );
    let lease: Lease = f.ns.api::<Lease>().get("rewind-leader").await.unwrap();
    assert_eq!(
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        None,
        "released: no holder"
    );
    let started = Instant::now();
    f.op = Operator::start_with_args(f.ns.name(), &elect("c"), &[]);
    readyz_until(&f.op, "c leads", secs(10), |b| b == "ready: leading").await;
    assert!(
        started.elapsed() < secs(8),
        "a released lease is taken at once, not after it expires: {:?}",
        started.elapsed()
    );
    rolled_back_once(&f, "2.0.0").await;
    assert_rolled_back_exactly_once(&f, gen0).await;
}
