//! The operator killed and started again, with 30 Releases present: at each persisted rollback
//! step and right after the Deployment patch, every rollback completes exactly once; after
//! every start /readyz is 200 within 5 s and the operator acts; two operators at once roll back
//! once. Each test runs in its own namespace with its own operator(s); none stops the cluster.

mod operator;
mod support;

use std::time::{Duration, Instant};

use operator::*;
use rewind::api::{Release, RollbackPhase};
use serde_json::json;
use support::*;

/// Releases besides `shop` in each test's namespace (30 in all).
const FLEET: usize = 29;
/// How many times each fault is injected.
const ROUNDS: usize = 5;
/// /readyz must answer 200 this soon after a start.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// Wait until `n` rollbacks are recorded and the last one Succeeded from `version`.
async fn rolled_back(f: &Fixture, n: usize, version: &str) -> Release {
    f.release_until(
        &format!("rollback #{n} (from {version}) Succeeded"),
        secs(90),
        |r| {
            r.status.as_ref().is_some_and(|s| {
                s.rollbacks.len() == n
                    && s.rollbacks[0].from.version == version
                    && s.rollbacks[0].phase == RollbackPhase::Succeeded
            })
        },
    )
    .await
}

/// Every recorded rollback Succeeded, each has its own id, and each went back to 1.0.0.
fn assert_audit_whole(r: &Release, n: usize) {
    let s = status_of(r);
    assert_eq!(s.rollbacks.len(), n, "{}", status_json(r));
    let mut ids: Vec<&str> = s.rollbacks.iter().map(|rb| rb.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "rollback ids are distinct: {}",
        status_json(r)
    );
    assert!(
        s.rollbacks
            .iter()
            .all(|rb| rb.phase == RollbackPhase::Succeeded && rb.to.version == "1.0.0"),
        "{}",
        status_json(r)
    );
}

async fn generation(f: &Fixture) -> i64 {
    f.deployments
        .get("shop")
        .await
        .expect("reading Deployment shop")
        .metadata
        .generation
        .unwrap_or_default()
}

/// Kill the operator at `fault` ROUNDS times in a row; each time a fresh operator must be
/// ready within 5 s and finish the rollback, exactly once.
async fn killed_at(test: &str, fault: &'static str) {
    let mut f = Fixture::new(test).await;
    f.fleet(FLEET).await;
    f.shop_healthy_on_1_0_0().await;
    let gen0 = generation(&f).await;
    for round in 1..=ROUNDS {
        let version = format!("2.0.{round}");
        // An operator armed to die at the fault; it starts with 30 Releases to list.
        let ns = f.ns.name().to_owned();
        let took = match fault {
            "AfterRestore" => {
                f.op.kill();
                let started = Instant::now();
                f.op = Operator::start_exiting_after_restore(&ns).await;
                f.until_ready(started).await
            }
            phase => {
                f.op.kill();
                let started = Instant::now();
                f.op = Operator::start_exiting_after_phase(&ns, phase).await;
                f.until_ready(started).await
            }
        };
        assert!(took <= READY_WITHIN, "round {round}: /readyz took {took:?}");
        f.ship_crashlooping(&version).await;
        let code = f.op.wait_exit(secs(90)).await;
        assert_eq!(
            code,
            Some(75),
            "round {round}: the operator exits at {fault}"
        );
        // A plain operator takes over and must finish what was started, once.
        let took = f.restart_operator(Operator::start).await;
        assert!(
            took <= READY_WITHIN,
            "round {round}: /readyz took {took:?} after the crash"
        );
        let r = rolled_back(&f, round, &version).await;
        assert_audit_whole(&r, round);
    }
    // It acts after the last restart too: one more bad version is rolled back.
    f.ship_crashlooping("2.0.99").await;
    let r = rolled_back(&f, ROUNDS + 1, "2.0.99").await;
    assert_audit_whole(&r, ROUNDS + 1);
    // Per bad version, exactly two changes to the Deployment: the rollout and the restore.
    let generation_now = generation(&f).await;
    assert_eq!(
        generation_now - gen0,
        2 * (ROUNDS as i64 + 1),
        "the Deployment changed {} times for {} bad versions",
        generation_now - gen0,
        ROUNDS + 1
    );
    let d = f.deployments.get("shop").await.unwrap();
    assert_eq!(template_of(&d).1.as_deref(), Some("1"), "1.0.0 runs");
}

#[tokio::test]
async fn killed_after_writing_restoring_images_every_rollback_completes_once() {
    killed_at("killed_restoring", "RestoringImages").await;
}

#[tokio::test]
async fn killed_right_after_the_deployment_patch_every_rollback_completes_once() {
    killed_at("killed_after_patch", "AfterRestore").await;
}

#[tokio::test]
async fn killed_after_writing_verifying_every_rollback_completes_once() {
    killed_at("killed_verifying", "Verifying").await;
}

#[tokio::test]
async fn ready_within_5s_and_acting_after_every_restart_with_30_releases() {
    let mut f = Fixture::new("restart_acts").await;
    f.fleet(FLEET).await;
    f.shop_healthy_on_1_0_0().await;
    f.apply_release("1.1.0", &loopback_image("1.1.0"), json!({}))
        .await;
    f.release_until("1.1.0 Healthy on revision 2", secs(60), |r| {
        phase(r) == "Healthy" && status_of(r).revision == Some(2)
    })
    .await;
    let mut took_all = Vec::new();
    for round in 1..=6 {
        let took = f.restart_operator(Operator::start).await;
        took_all.push(took);
        assert!(
            took <= READY_WITHIN,
            "restart {round}: /readyz took {took:?}"
        );
        // A person asks for a rollback right after the restart: acted on within seconds.
        let (to, revision) = if round % 2 == 1 {
            ("1.0.0", 1)
        } else {
            ("1.1.0", 2)
        };
        let asked = Instant::now();
        f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some(to))
            .await;
        f.release_until(
            &format!("restart {round}: rolled back to {to} on request"),
            secs(30),
            |r| {
                let s = status_of(r);
                s.revision == Some(revision)
                    && s.rollback
                        .as_ref()
                        .is_some_and(|rb| rb.to.version == to && rb.phase.is_finished())
            },
        )
        .await;
        assert!(
            asked.elapsed() < secs(15),
            "restart {round}: the request took {:?}",
            asked.elapsed()
        );
    }
    eprintln!("/readyz after each restart: {took_all:?}");
}

#[tokio::test]
async fn two_operators_at_once_roll_back_once() {
    let f = Fixture::new("two_operators").await;
    f.shop_healthy_on_1_0_0().await;
    let _second = Operator::start(f.ns.name());
    let gen0 = generation(&f).await;
    f.ship_crashlooping("2.0.0").await;
    rolled_back(&f, 1, "2.0.0").await;
    // Both operators had time to act on what they saw.
    tokio::time::sleep(secs(5)).await;
    let r = f.releases.get("shop").await.unwrap();
    assert_audit_whole(&r, 1);
    assert_eq!(generation(&f).await - gen0, 2, "one rollout, one restore");
    let events = operator::events(&f.ns.client(), f.ns.name(), "shop").await;
    let started = events
        .iter()
        .filter(|(reason, _)| reason == "RollbackStarted")
        .count();
    assert_eq!(started, 1, "{events:?}");
    assert!(
        !events.iter().any(|(reason, _)| reason == "RollbackFailed"),
        "{events:?}"
    );
}
