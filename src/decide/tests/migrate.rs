//! Migration Jobs: the up gate, the down steps of a rollback (order, several schema changes,
//! irreversible ones), failures that halt, retries, Jobs deleted by a person, and restarts.

use super::*;
use crate::api::{Migration, MigrationCommand, MigrationOrder, MigrationPhase, RollbackPhase};

const MIGRATE: &str = "registry.example/shop/migrate";

/// A migration of schema `schema` with an up command (when `up`) and a down command.
fn migration(version: &str, schema: &str, up: bool) -> Migration {
    Migration {
        image: format!("{MIGRATE}:{version}"),
        schema_version: schema.into(),
        up: up.then(|| MigrationCommand {
            command: vec!["migrate".into()],
            args: vec!["up".into()],
        }),
        down: Some(MigrationCommand {
            command: vec!["migrate".into()],
            args: vec!["down".into()],
        }),
        reversible: true,
        service_account_name: None,
        env: Vec::new(),
        env_from: Vec::new(),
        resources: None,
        pod_annotations: BTreeMap::new(),
    }
}

impl World {
    /// A new spec: version `v` with migration `m`.
    fn set_release(&mut self, v: &str, m: Option<Migration>) -> &mut Self {
        self.set_version(v);
        self.release.spec.migration = m;
        self
    }

    /// The name of the Job the last plan asked for.
    fn only_job(p: &Plan) -> String {
        assert_eq!(p.jobs.len(), 1, "one Job asked for: {:#?}", p.jobs);
        p.jobs[0].name.clone()
    }
}

fn succeeded(at: i64) -> JobState {
    JobState::Succeeded { at: t(at) }
}

fn failed(reason: &str) -> JobState {
    JobState::Failed {
        at: t(0),
        reason: reason.into(),
        message: "Job has reached the specified backoff limit".into(),
    }
}

fn env(p: &Plan, name: &str) -> String {
    p.jobs[0]
        .env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {:?}", p.jobs[0].env))
}

/// v1 (schema 1) healthy with its migration recorded (no up), then v2 (schema 2, no up)
/// healthy: both deployed at once, no Job.
fn healthy_v1_v2() -> World {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.release.spec.migration = Some(migration("1.0.0", "1", false));
    w.at(0).step();
    w.at(20).roll_out().step();
    w.at(40).roll_out().step();
    w.set_release("2.0.0", Some(migration("2.0.0", "2", false)));
    w.at(100).step();
    w.at(120).roll_out().step();
    w.at(140).roll_out().step();
    assert_eq!(w.status().phase, Some(Phase::Healthy));
    assert!(w.jobs.is_empty(), "no up command, no Job: {:?}", w.jobs);
    w
}

// ---- the up gate ---------------------------------------------------------------------------

#[test]
fn an_up_job_gates_the_rollout_until_it_completes() {
    let mut w = healthy_v1();
    w.set_release("2.0.0", Some(migration("2.0.0", "2", true)));
    let p = w.at(100).step();
    let job = World::only_job(&p);
    assert!(job.starts_with("shop-api-up-r2-"), "{job}");
    assert_eq!(
        p.apply, None,
        "the Deployment is not touched while the up Job runs"
    );
    assert_eq!(p.status.revision, Some(1), "v1 still runs");
    assert_eq!(cond(&p.status, "Ready"), is("False", reasons::MIGRATING_UP));
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert_eq!(env(&p, "REWIND_SCHEMA_VERSION"), "2");
    assert_eq!(env(&p, "REWIND_FROM_VERSION"), "1.0.0");
    assert_eq!(p.jobs[0].command.args, ["up"]);
    assert!(reasons(&p).contains(&reasons::MIGRATING_UP));
    let recheck = p.recheck.expect("a deadline");
    assert_eq!(recheck, t(100 + 15 * 60 + 60), "timeout plus grace");

    // Still running: nothing new; the Job is not asked for again once seen.
    let p = w.at(110).step();
    assert_eq!((p.apply.clone(), p.jobs.len()), (None, 0));
    assert_eq!(
        entry(&p.status, 2)
            .migration
            .as_ref()
            .unwrap()
            .up_job
            .as_ref()
            .unwrap()
            .uid
            .as_deref(),
        Some(format!("uid-{job}").as_str())
    );

    w.job_ends(&job, succeeded(130));
    let p = w.at(131).step();
    assert_eq!(
        p.apply.as_ref().map(|t| t.revision),
        Some(2),
        "rolled out once the Job completed"
    );
    assert_eq!(p.status.revision, Some(2));
    assert_eq!(
        entry(&p.status, 2).deployed_at,
        Some(Time(t(131))),
        "judged from the rollout, not from the Job"
    );
    assert!(
        reasons(&p).contains(&reasons::MIGRATION_SUCCEEDED),
        "{:?}",
        reasons(&p)
    );
    assert_eq!(p.migrations_ended, [("up", "Succeeded")]);
    w.at(150).roll_out().step();
    assert_eq!(w.status().phase, Some(Phase::Healthy));
}

#[test]
fn a_failed_up_job_fails_the_revision_and_leaves_the_deployment_alone() {
    let mut w = healthy_v1();
    let before = w.workload.clone();
    w.set_release("2.0.0", Some(migration("2.0.0", "2", true)));
    let job = World::only_job(&w.at(100).step());
    w.jobs[0].termination_message = Some("relation \"users\" does not exist".into());
    w.job_ends(&job, failed("BackoffLimitExceeded"));
    let p = w.at(105).step();
    assert!(
        p.confirm,
        "a failure verdict is confirmed against the API server"
    );
    assert_eq!(p.apply, None);
    assert_eq!(w.workload, before, "the Deployment is untouched");
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_FAILED)
    );
    let e = entry(&p.status, 2);
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(e.failure.as_ref().unwrap().trigger, Trigger::Migration);
    assert_eq!(p.status.revision, Some(1));
    assert_eq!(
        p.status.blocked.as_ref().map(|b| b.version.as_str()),
        Some("2.0.0")
    );
    let note = p
        .events
        .iter()
        .find(|n| n.reason == reasons::MIGRATION_FAILED)
        .expect("an Event");
    assert!(note.is_warning());
    assert!(
        note.message.contains(&job),
        "names the Job: {}",
        note.message
    );
    assert!(
        note.message.contains("relation \"users\" does not exist"),
        "{}",
        note.message
    );
    assert_eq!(p.migrations_ended, [("up", "Failed")]);
    // Nothing retries on its own.
    assert_settled(&mut w, 200);
    assert!(w.plan().jobs.is_empty());

    // A retry runs the up migration again, as a new revision with a new Job.
    w.annotate(labels::RETRY, "1");
    let p = w.at(300).step();
    let again = World::only_job(&p);
    assert_ne!(again, job);
    assert!(again.starts_with("shop-api-up-r3-"), "{again}");
}

#[test]
fn an_up_job_past_its_deadline_or_deleted_fails_the_revision() {
    // The Job controller ends it: DeadlineExceeded.
    let mut w = healthy_v1();
    w.set_release("2.0.0", Some(migration("2.0.0", "2", true)));
    let job = World::only_job(&w.at(100).step());
    w.job_ends(&job, failed("DeadlineExceeded"));
    let p = w.at(1000).step();
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_TIMED_OUT)
    );
    assert_eq!(p.migrations_ended, [("up", "TimedOut")]);

    // Nobody ends it: Rewind's own deadline (timeout + grace).
    let mut w = healthy_v1();
    w.policy.migration_timeout = Duration::from_secs(60);
    w.set_release("2.0.0", Some(migration("2.0.0", "2", true)));
    w.at(100).step();
    let p = w.at(219).step();
    assert_eq!(
        p.status.phase,
        Some(Phase::Progressing),
        "not before timeout + grace"
    );
    let p = w.at(220).step();
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_TIMED_OUT)
    );

    // Deleted by a person while it ran: reported, not created again.
    let mut w = healthy_v1();
    w.set_release("2.0.0", Some(migration("2.0.0", "2", true)));
    w.at(100).step();
    w.at(101).step();
    w.jobs.clear();
    let p = w.at(102).step();
    assert!(p.jobs.is_empty(), "not re-created silently");
    assert!(p.confirm);
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_JOB_DELETED)
    );
    assert_eq!(p.migrations_ended, [("up", "Deleted")]);
}

#[test]
fn a_job_asked_for_but_not_seen_yet_is_asked_for_again_under_the_same_name() {
    let mut w = healthy_v1();
    w.set_release("2.0.0", Some(migration("2.0.0", "2", true)));
    let first = w.at(100).plan();
    w.release.status = Some(first.status.clone());
    // The operator stopped before creating it (or the cache is behind): same name again.
    let again = w.at(130).plan();
    assert_eq!(World::only_job(&again), World::only_job(&first));
    assert_eq!(again.status.phase, Some(Phase::Progressing));
}

// ---- down steps on rollback ----------------------------------------------------------------

#[test]
fn the_same_schema_runs_no_job() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "2", false)));
    let p = w.at(200).step();
    assert!(p.jobs.is_empty());
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    let rb = rollback(&p.status);
    assert_eq!(rb.phase, RollbackPhase::RestoringImages);
    assert!(rb.migrations.is_empty());
    assert!(p.jobs.is_empty());
    assert!(p.apply.is_some());
}

#[test]
fn before_rollback_the_down_job_runs_first_then_the_images_are_restored() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    let rb = rollback(&p.status).clone();
    assert_eq!(rb.phase, RollbackPhase::MigratingDown);
    assert_eq!(
        p.apply, None,
        "images are not restored before the down Job completed"
    );
    let job = World::only_job(&p);
    assert!(job.starts_with("shop-api-down-r3-r2-"), "{job}");
    assert_eq!(rb.job_name.as_deref(), Some(job.as_str()));
    assert_eq!(
        p.jobs[0].image,
        format!("{MIGRATE}:3.0.0"),
        "the newer revision's image"
    );
    assert_eq!(p.jobs[0].command.args, ["down"]);
    for (k, v) in [
        ("REWIND_FROM_VERSION", "3.0.0"),
        ("REWIND_TARGET_VERSION", "2.0.0"),
        ("REWIND_FROM_SCHEMA_VERSION", "3"),
        ("REWIND_TARGET_SCHEMA_VERSION", "2"),
        ("REWIND_RELEASE", NAME),
    ] {
        assert_eq!(env(&p, k), v, "{k}");
    }
    assert_eq!(env(&p, "REWIND_ROLLBACK_ID"), rb.id);
    assert_eq!(
        cond(&p.status, "Ready"),
        is("False", reasons::MIGRATING_DOWN)
    );
    assert!(reasons(&p).contains(&reasons::ROLLBACK_STARTED));
    assert!(reasons(&p).contains(&reasons::MIGRATING_DOWN));

    let p = w.at(215).step();
    assert_eq!(
        (p.apply.clone(), p.jobs.len()),
        (None, 0),
        "waits for the Job"
    );
    w.job_ends(&job, succeeded(220));
    let p = w.at(221).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::RestoringImages);
    assert_eq!(
        p.apply.as_ref().map(|t| t.revision),
        Some(2),
        "restored after the Job"
    );
    let p = w.complete_rollback(240);
    let rb = rollback(&p.status);
    assert_eq!(rb.migrations.len(), 1);
    assert_eq!(rb.migrations[0].phase, MigrationPhase::Succeeded);
    assert_eq!(
        p.status.rollbacks[0].migrations, rb.migrations,
        "recorded in the audit list"
    );
}

#[test]
fn after_rollback_the_images_come_first_then_the_down_job() {
    let mut w = healthy_v1_v2();
    w.policy.migration_order = MigrationOrder::AfterRollback;
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::RestoringImages);
    assert!(p.jobs.is_empty());
    assert_eq!(p.apply.as_ref().map(|t| t.revision), Some(2));
    w.at(215).step();
    let p = w.at(230).roll_out().step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::MigratingDownAfter);
    let job = World::only_job(&p);
    assert_eq!(p.status.revision, Some(2), "the restored revision runs");
    w.job_ends(&job, succeeded(240));
    let p = w.at(241).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::Succeeded);
    assert_eq!(p.status.phase, Some(Phase::RolledBack));
}

#[test]
fn a_failed_down_job_halts_and_a_retry_runs_a_new_job() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    let job = World::only_job(&w.at(210).pods_come_up(PodState::CrashLoop(3)).step());
    let before = w.workload.clone();
    w.job_ends(&job, failed("BackoffLimitExceeded"));
    let p = w.at(220).step();
    assert!(p.confirm);
    assert_eq!(p.apply, None);
    assert_eq!(w.workload, before, "the Deployment is left as it was");
    let rb = rollback(&p.status);
    assert_eq!(rb.phase, RollbackPhase::Failed);
    assert_eq!(rb.migrations[0].phase, MigrationPhase::Failed);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_FAILED)
    );
    assert!(
        p.events
            .iter()
            .any(|n| n.reason == reasons::MIGRATION_FAILED && n.message.contains(&job))
    );
    assert_eq!(
        p.finished.as_ref().map(|r| r.phase),
        Some(RollbackPhase::Failed)
    );
    // Frozen: nothing happens on its own.
    assert_settled(&mut w, 300);
    assert_settled(&mut w, 5000);

    w.annotate(labels::RETRY, "after-fixing-the-lock");
    let p = w.at(6000).step();
    let second = World::only_job(&p);
    assert_ne!(second, job, "a new Job, with a new name");
    let rb = rollback(&p.status);
    assert_eq!(rb.phase, RollbackPhase::MigratingDown);
    assert_eq!(rb.migrations[0].job.as_ref().map(|j| j.attempt), Some(2));
    assert!(reasons(&p).contains(&reasons::MIGRATION_RETRY));
    assert!(
        p.status.rollbacks.iter().all(|r| r.id != rb.id),
        "no longer finished"
    );
    w.job_ends(&second, succeeded(6010));
    let p = w.at(6011).step();
    assert_eq!(p.apply.as_ref().map(|t| t.revision), Some(2));
    w.complete_rollback(6030);
    assert_eq!(w.status().phase, Some(Phase::RolledBack));
    assert_eq!(
        w.status()
            .rollbacks
            .iter()
            .filter(|r| r.id == rb.id)
            .count(),
        1
    );
}

#[test]
fn a_down_job_deleted_mid_run_halts_the_rollback() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    w.at(215).step();
    w.jobs.clear();
    let p = w.at(216).step();
    assert!(p.jobs.is_empty());
    assert_eq!(rollback(&p.status).phase, RollbackPhase::Failed);
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_JOB_DELETED)
    );
}

#[test]
fn a_down_job_that_never_ends_times_out() {
    let mut w = healthy_v1_v2();
    w.policy.migration_timeout = Duration::from_secs(30);
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(p.recheck, Some(t(210 + 30 + 60)));
    let p = w.at(300).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::Failed);
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_TIMED_OUT)
    );
}

#[test]
fn two_schema_changes_run_two_jobs_newest_first_one_at_a_time() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    w.at(220).roll_out().step();
    w.at(240).roll_out().step();
    w.annotate(labels::ROLLBACK_TO, "1.0.0");
    let p = w.at(300).step();
    let rb = rollback(&p.status).clone();
    let steps: Vec<(i64, i64)> = rb
        .migrations
        .iter()
        .map(|s| (s.revision, s.to_revision))
        .collect();
    assert_eq!(steps, [(3, 2), (2, 1)]);
    let first = World::only_job(&p);
    assert!(first.starts_with("shop-api-down-r3-r2-"), "{first}");
    w.job_ends(&first, succeeded(310));
    let p = w.at(311).step();
    let second = World::only_job(&p);
    assert!(second.starts_with("shop-api-down-r2-r1-"), "{second}");
    assert_eq!(p.jobs[0].image, format!("{MIGRATE}:2.0.0"));
    assert_eq!(env(&p, "REWIND_TARGET_SCHEMA_VERSION"), "1");
    assert_eq!(p.apply, None, "images wait for both");
    w.job_ends(&second, succeeded(320));
    let p = w.at(321).step();
    assert_eq!(p.apply.as_ref().map(|t| t.revision), Some(1));
    let p = w.complete_rollback(340);
    assert!(
        rollback(&p.status)
            .migrations
            .iter()
            .all(|s| s.phase == MigrationPhase::Succeeded)
    );
}

#[test]
fn a_revision_already_rolled_back_is_not_migrated_down_twice() {
    // v2 (schema 2) failed and was rolled back with its down Job; v3 (schema 3) was deployed
    // over v1 and fails: only v3's down runs.
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.policy.cooldown = Duration::ZERO;
    w.release.spec.migration = Some(migration("1.0.0", "1", false));
    w.at(0).step();
    w.at(20).roll_out().step();
    w.at(40).roll_out().step();
    w.set_release("2.0.0", Some(migration("2.0.0", "2", false)));
    w.at(100).step();
    let job = World::only_job(&w.at(110).pods_come_up(PodState::CrashLoop(3)).step());
    w.job_ends(&job, succeeded(115));
    w.at(116).step();
    w.complete_rollback(130);
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    assert_eq!(entry(w.status(), 3).deployed_over, Some(1));
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    let rb = rollback(&p.status);
    let steps: Vec<(i64, i64, &str, &str)> = rb
        .migrations
        .iter()
        .map(|s| {
            (
                s.revision,
                s.to_revision,
                s.from_schema_version.as_str(),
                s.to_schema_version.as_str(),
            )
        })
        .collect();
    assert_eq!(steps, [(3, 1, "3", "1")]);
}

#[test]
fn an_irreversible_migration_refuses_the_automatic_rollback_until_a_person_names_it() {
    let mut w = healthy_v1_v2();
    let mut m = migration("3.0.0", "3", false);
    m.reversible = false;
    w.set_release("3.0.0", Some(m));
    w.at(200).step();
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    assert!(p.status.rollback.is_none() && p.apply.is_none() && p.jobs.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(
        cond(&p.status, "Ready"),
        is("False", reasons::IRREVERSIBLE_MIGRATION)
    );
    assert!(reasons(&p).contains(&reasons::IRREVERSIBLE_MIGRATION));
    assert_settled(&mut w, 300);

    // A manual rollback is refused without the override, and said once.
    w.annotate(labels::ROLLBACK_TO, "2.0.0");
    let p = w.at(400).step();
    assert!(p.status.rollback.is_none());
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("False", reasons::IRREVERSIBLE_MIGRATION)
    );
    assert_settled(&mut w, 410);

    // Naming the version lets the same request through: crossed without a Job.
    w.annotate(labels::ALLOW_IRREVERSIBLE, "3.0.0");
    let p = w.at(500).step();
    let rb = rollback(&p.status);
    assert_eq!(rb.migrations[0].phase, MigrationPhase::Skipped);
    assert!(p.jobs.is_empty());
    assert_eq!(p.apply.as_ref().map(|t| t.revision), Some(2));
}

#[test]
fn a_policy_that_allows_irreversible_migrations_rolls_back_across_them() {
    let mut w = healthy_v1_v2();
    w.policy.allow_irreversible = true;
    let mut m = migration("3.0.0", "3", false);
    m.reversible = false;
    w.set_release("3.0.0", Some(m));
    w.at(200).step();
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    let rb = rollback(&p.status);
    assert_eq!(rb.phase, RollbackPhase::RestoringImages);
    assert_eq!(rb.migrations[0].phase, MigrationPhase::Skipped);
    assert!(p.jobs.is_empty());
}

#[test]
fn a_restart_mid_step_follows_the_same_job() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    let first = w.at(210).pods_come_up(PodState::CrashLoop(3)).plan();
    // Status written, then the process died before creating the Job: the next process asks
    // for the very same Job.
    w.release.status = Some(first.status.clone());
    let again = w.at(230).plan();
    assert_eq!(World::only_job(&again), World::only_job(&first));
    assert_eq!(rollback(&again.status).phase, RollbackPhase::MigratingDown);
    assert!(
        again
            .events
            .iter()
            .all(|n| n.reason != reasons::ROLLBACK_STARTED)
    );
}

#[test]
fn a_migration_image_is_pinned_like_an_app_image() {
    let mut w = world_with_registry();
    let image = format!("{MIGRATE}:2.0.0");
    w.resolved.insert(image.clone(), Ok(d(77)));
    w.set_release("2.0.0", Some(migration("2.0.0", "2", true)));
    let p = w.at(100).step();
    let m = entry(&p.status, 2).migration.clone().unwrap();
    assert_eq!(m.digest, Some(d(77)));
    assert_eq!(m.resolved_from, Some(DigestSource::Registry));
    assert_eq!(p.jobs[0].image, format!("{MIGRATE}@{}", d(77)));
}

#[test]
fn a_reversible_migration_without_a_down_command_is_crossed_without_a_job() {
    // An additive change (a new column) the older code runs with: nothing to undo.
    let mut w = healthy_v1_v2();
    let mut m = migration("3.0.0", "3", false);
    m.down = None;
    w.set_release("3.0.0", Some(m));
    w.at(200).step();
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    let rb = rollback(&p.status);
    assert_eq!(rb.phase, RollbackPhase::RestoringImages);
    assert_eq!(rb.migrations[0].phase, MigrationPhase::Skipped);
    assert!(p.jobs.is_empty());
    assert!(p.apply.is_some());
}

#[test]
fn a_job_keeps_the_deadline_it_was_created_with() {
    let mut w = healthy_v1_v2();
    w.policy.migration_timeout = Duration::from_secs(600);
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    let p = w.at(210).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(p.jobs[0].deadline, Duration::from_secs(600));
    // Someone lowers the policy's timeout while the Job runs: the Job still has 600 s, so
    // Rewind does not call it timed out early (and a retry would run a second Job beside it).
    w.policy.migration_timeout = Duration::from_secs(10);
    let p = w.at(400).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::MigratingDown);
    assert_eq!(p.recheck, Some(t(210 + 600 + 60)));
}

#[test]
fn a_revision_rolled_back_after_its_up_job_is_not_the_next_ones_base() {
    // v3's up Job ran, v3 failed and its down ran in the rollback to v2: v4 is deployed over
    // v2 (the database is at schema 2), so a rollback from v4 runs v4's down only.
    let mut w = healthy_v1_v2();
    w.policy.cooldown = Duration::ZERO;
    w.set_release("3.0.0", Some(migration("3.0.0", "3", true)));
    let up = World::only_job(&w.at(200).step());
    w.job_ends(&up, succeeded(205));
    w.at(206).step();
    let down = World::only_job(&w.at(210).pods_come_up(PodState::CrashLoop(3)).step());
    w.job_ends(&down, succeeded(215));
    w.at(216).step();
    w.complete_rollback(230);
    w.set_release("4.0.0", Some(migration("4.0.0", "4", true)));
    let p = w.at(300).step();
    assert_eq!(entry(&p.status, 4).deployed_over, Some(2));
    assert_eq!(env(&p, "REWIND_FROM_SCHEMA_VERSION"), "2");
}

#[test]
fn a_manual_rollback_waits_for_a_running_up_job() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "3", true)));
    w.at(200).step();
    w.annotate(labels::ROLLBACK_TO, "1.0.0");
    let p = w.at(210).step();
    assert!(p.status.rollback.is_none(), "no down Job beside the up Job");
    assert!(p.jobs.is_empty());
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("False", reasons::MIGRATING_UP)
    );
}

#[test]
fn a_manual_rollback_after_a_half_done_halted_one_is_refused() {
    let mut w = healthy_v1_v2();
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    w.at(220).roll_out().step();
    w.at(240).roll_out().step();
    w.annotate(labels::ROLLBACK_TO, "1.0.0");
    let first = World::only_job(&w.at(300).step());
    w.job_ends(&first, succeeded(310));
    let second = World::only_job(&w.at(311).step());
    w.job_ends(&second, failed("BackoffLimitExceeded"));
    w.at(320).step();
    assert_eq!(rollback(w.status()).phase, RollbackPhase::Failed);
    w.annotate(labels::ROLLBACK_TO, "2.0.0");
    let p = w.at(400).step();
    assert!(p.jobs.is_empty(), "v3's down must not run again");
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("False", reasons::MIGRATION_FAILED)
    );
}

#[test]
fn a_retry_waits_for_the_previous_job_to_end() {
    let mut w = healthy_v1_v2();
    w.policy.migration_timeout = Duration::from_secs(30);
    w.set_release("3.0.0", Some(migration("3.0.0", "3", false)));
    w.at(200).step();
    let job = World::only_job(&w.at(210).pods_come_up(PodState::CrashLoop(3)).step());
    // Rewind's own deadline passes; the Job controller never ended the Job: it still runs.
    let p = w.at(310).step();
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::MIGRATION_TIMED_OUT)
    );
    w.annotate(labels::RETRY, "1");
    let p = w.at(320).step();
    assert!(p.jobs.is_empty(), "never two Jobs for one step");
    assert_eq!(rollback(&p.status).phase, RollbackPhase::Failed);
    assert!(
        p.events
            .iter()
            .any(|n| n.reason == reasons::MIGRATION_RETRY && n.message.contains(&job))
    );
    // Once it has ended, a new value runs the next attempt.
    w.job_ends(&job, failed("DeadlineExceeded"));
    w.annotate(labels::RETRY, "2");
    let p = w.at(330).step();
    assert_eq!(p.jobs.len(), 1);
    assert_ne!(p.jobs[0].name, job);
}

/// A refusal for an irreversible migration records the request's id (the request was
/// answered) but does not use up the request: it goes through once the override names the
/// version, under the same id.
#[test]
fn an_irreversible_refusal_records_the_request_id_and_the_request_still_acts() {
    let handled = |p: &Plan| {
        let h = p.status.handled.clone().unwrap_or_default();
        (h.rollback_to, h.request_id)
    };
    let mut w = healthy_v1_v2();
    let mut m = migration("3.0.0", "3", false);
    m.reversible = false;
    w.set_release("3.0.0", Some(m));
    w.at(200).step();
    w.at(220).roll_out().step();
    w.at(240).roll_out().step();
    assert_eq!(w.status().phase, Some(Phase::Healthy));

    let p = w
        .annotate(labels::ROLLBACK_TO, "2.0.0")
        .annotate(labels::REQUEST_ID, "r1")
        .at(400)
        .step();
    assert!(p.status.rollback.is_none() && p.apply.is_none());
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("False", reasons::IRREVERSIBLE_MIGRATION)
    );
    assert_eq!(reasons(&p), [reasons::IRREVERSIBLE_MIGRATION]);
    assert_eq!(
        handled(&p),
        (None, Some("r1".into())),
        "answered, not used up"
    );
    assert_settled(&mut w, 410);

    // Asked again under a new id: answered again (an Event), still not used up.
    let p = w.annotate(labels::REQUEST_ID, "r2").at(420).step();
    assert_eq!(reasons(&p), [reasons::IRREVERSIBLE_MIGRATION]);
    assert_eq!(handled(&p), (None, Some("r2".into())));
    assert_settled(&mut w, 430);

    w.annotate(labels::ALLOW_IRREVERSIBLE, "3.0.0");
    let p = w.at(500).step();
    let rb = rollback(&p.status);
    assert_eq!((rb.from.revision, rb.to.revision), (3, 2));
    assert_eq!(rb.migrations[0].phase, MigrationPhase::Skipped);
    assert_eq!(p.apply.as_ref().map(|t| t.revision), Some(2));
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("True", reasons::ACCEPTED)
    );
    assert_eq!(handled(&p), (Some("2.0.0".into()), Some("r2".into())));
    w.complete_rollback(510);

    // Rolled forward again, the override taken away: the same version under a new id is
    // refused, and is not taken for the request handled before.
    w.remove_annotation(labels::ALLOW_IRREVERSIBLE);
    w.annotate(labels::RETRY, "1").at(600).step();
    w.at(620).roll_out().step();
    w.at(640).roll_out().step();
    assert_eq!(w.status().phase, Some(Phase::Healthy), "{:#?}", w.status());
    let p = w.annotate(labels::REQUEST_ID, "r3").at(700).step();
    assert_eq!(reasons(&p), [reasons::IRREVERSIBLE_MIGRATION]);
    assert_eq!(handled(&p), (None, Some("r3".into())));
    assert_settled(&mut w, 710);
    w.annotate(labels::ALLOW_IRREVERSIBLE, "3.0.0");
    let p = w.at(800).step();
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("True", reasons::ACCEPTED),
        "{:#?}",
        p.events
    );
    assert_eq!(rollback(&p.status).to.revision, 2);
}
