//! Database migrations (issue #11) on the local cluster: the up Job that gates a rollout, the
//! down Job of a rollback across a schema change (before or after the images are restored),
//! a failed or timed-out down Job that halts the rollback until `rewind.dev/retry`, an operator
//! killed right after creating a Job, no Job without a schema change, two crossed schema
//! changes, and irreversible migrations. Each test runs its own operator in its own namespace.
//!
//! Job outcomes come from the simulated kubelet (tests/cluster/kwok/stages.yaml): a Job's pod
//! succeeds after `sim.rewind.dev/job-duration` (a pod annotation, default 1s) and fails when
//! its image carries the marker `jobfail`. Migration images are pushed to the cluster's open
//! registry, so the operator pins them to a digest.
//!
//! The Release's status is read as JSON (a DynamicObject), never through the Rust types, so
//! these tests say what the API server holds.

mod operator;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use operator::*;
use rewind::api::RollbackPolicy;
use serde_json::{Value, json};
use support::*;

// ------------------------------------------------------------------------------- fixtures

/// Operator arguments: the open test registry over plain HTTP, given up on after 2 s (app
/// images live on 127.0.0.1:9, refused at once, so their digests come from the pods).
fn registry_args() -> Vec<String> {
    let open = support::registry::open();
    vec![
        "--insecure-registry".into(),
        open.address,
        "--registry-timeout".into(),
        "2s".into(),
    ]
}

/// Policy `fast` with a readiness timeout that a loaded control plane meets: these tests roll
/// back crash-looping versions (detected by restarts, not by the timeout), and a rollout or a
/// restore that only has to become available must not fail because the shared cluster's
/// controller-manager is slow; plus `policy`.
fn patient(policy: Value) -> Value {
    let mut p = json!({"readiness": {"timeout": "90s", "unreadyFor": "3s", "maxUnready": 0}});
    if let (Some(p), Some(e)) = (p.as_object_mut(), policy.as_object()) {
        p.extend(e.clone());
    }
    p
}

/// The usual fixture, with an operator that can reach the open registry, and policy `fast`
/// made `patient` with `policy`.
async fn fixture(test: &str, policy: Value) -> Fixture {
    let args = registry_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Fixture::with(test, &args, patient(policy)).await
}

/// A migration image pushed to the open registry: as written in the Release, and pinned.
struct MigrationImage {
    written: String,
    pinned: String,
    digest: String,
}

/// Push a migration image to a repository of its own (`rewind-test/<name>-<random>`; put
/// `jobfail` in `name` for an image whose Jobs fail).
async fn push_migration(name: &str, tag: &str) -> MigrationImage {
    let reg = support::registry::open();
    let repo = support::registry::unique_repository(name);
    let digest = reg.push_image(&repo, tag, &format!("{repo}:{tag}")).await;
    MigrationImage {
        written: reg.image(&repo, tag),
        pinned: reg.pinned(&repo, &digest),
        digest,
    }
}

/// `{"migration": {image, schemaVersion, ...extra}}`, extra fields for a Release's spec.
fn migration(image: &MigrationImage, schema: &str, extra: Value) -> Value {
    let mut m = json!({"image": image.written, "schemaVersion": schema});
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    json!({ "migration": m })
}

/// What a failing migration container says (its termination message, from the simulated
/// kubelet's pod annotation `sim.rewind.dev/termination-message`).
const SAID: &str = "relation \"users\" does not exist";

/// The down command every test's migrations declare.
fn down() -> Value {
    json!({"command": ["/migrate", "down"], "args": ["--to-previous"]})
}

/// The app image of `version` pinned to the digest the simulated pods report for it.
fn pinned_app(version: &str) -> String {
    format!(
        "{LOOPBACK_REPO}@sha256:{}",
        sha256_hex(loopback_image(version).as_bytes())
    )
}

/// Apply `version` with an image whose pods crash-loop.
async fn ship_crashing(f: &Fixture, version: &str, extra: Value) {
    f.apply_release(
        version,
        &loopback_image(&format!("{version}-crashloop")),
        extra,
    )
    .await;
}

/// Set several annotations of Release shop at once (None removes one).
async fn annotate_release(f: &Fixture, annotations: &[(&str, Option<&str>)]) {
    let map: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    f.releases
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": map}})),
        )
        .await
        .expect("annotating Release shop");
}

// ------------------------------------------------------------------ the Release as JSON

static NULL: Value = Value::Null;

/// The status of a Release (JSON) as pretty text, for assertion messages.
fn show(v: &Value) -> String {
    serde_json::to_string_pretty(&v["status"]).unwrap_or_default()
}

/// Condition `type_` of a Release (JSON), or null.
fn cond<'a>(v: &'a Value, type_: &str) -> &'a Value {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&NULL)
}

/// Condition `type_` has `status` and `reason`.
fn cond_is(v: &Value, type_: &str, status: &str, reason: &str) -> bool {
    let c = cond(v, type_);
    c["status"] == status && c["reason"] == reason
}

/// The history entry of `revision`, or null.
fn entry(v: &Value, revision: i64) -> &Value {
    v["status"]["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["revision"] == revision))
        .unwrap_or(&NULL)
}

/// The migration steps of the current rollback (empty when none).
fn steps(v: &Value) -> Vec<Value> {
    v["status"]["rollback"]["migrations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A field of a step's Job: flat on the step as the design sketched it (`jobName`, `attempt`,
/// `startedAt`, `completedAt`, `message`) or in `step.job` (`name`, ...) as built.
fn step_job<'a>(step: &'a Value, field: &str) -> &'a Value {
    let flat = if field == "name" { "jobName" } else { field };
    if step[flat].is_null() {
        &step["job"][field]
    } else {
        &step[flat]
    }
}

/// An RFC 3339 timestamp (a JSON string).
fn ts(v: &Value, what: &str) -> jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a timestamp: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("{what} = {v}: {e}"))
}

// ------------------------------------------------------------------------------- Jobs

/// Label selectors of the Jobs Rewind creates for Release shop.
const UP: &str = "rewind.dev/release=shop,rewind.dev/migration=up";
const DOWN: &str = "rewind.dev/release=shop,rewind.dev/migration=down";

fn jobs_api(f: &Fixture) -> Api<Job> {
    f.ns.api()
}

/// The Jobs matching `selector` (every Job of the namespace with ""), oldest first.
async fn jobs(f: &Fixture, selector: &str) -> Vec<Job> {
    let mut list = jobs_api(f)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing Jobs")
        .items;
    list.sort_by_key(|j| (created(j), j.name_any()));
    list
}

/// Watch the Jobs matching `selector` until `pred` holds for them (oldest first).
async fn jobs_until(
    f: &Fixture,
    selector: &str,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&[Job]) -> bool,
) -> Vec<Job> {
    let mut list = wait_for_all(&jobs_api(f), selector, what, timeout, |js: &[Job]| {
        let mut js = js.to_vec();
        js.sort_by_key(|j| (created(j), j.name_any()));
        pred(&js)
    })
    .await;
    list.sort_by_key(|j| (created(j), j.name_any()));
    list
}

/// Watch Job `name` until `pred` holds.
async fn job_until(
    f: &Fixture,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl FnMut(&Job) -> bool,
) -> Job {
    wait_for(&jobs_api(f), name, what, timeout, pred).await
}

async fn get_job(f: &Fixture, name: &str) -> Job {
    jobs_api(f)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading Job {name}: {e}"))
}

fn created<K: Resource>(o: &K) -> jiff::Timestamp {
    o.meta()
        .creation_timestamp
        .as_ref()
        .expect("a creationTimestamp")
        .0
}

fn completion(job: &Job) -> jiff::Timestamp {
    job.status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .unwrap_or_else(|| {
            panic!(
                "Job {} has no completionTime: {}",
                job.name_any(),
                status_json(job)
            )
        })
        .0
}

/// The reason of the Job's condition `type_` (True), if any.
fn job_condition_reason(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

/// The one container of the Job's pod template.
fn container(job: &Job) -> &k8s_openapi::api::core::v1::Container {
    let spec = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod spec");
    assert_eq!(
        spec.containers.len(),
        1,
        "one container in Job {}",
        job.name_any()
    );
    &spec.containers[0]
}

fn job_image(job: &Job) -> String {
    container(job).image.clone().unwrap_or_default()
}

/// The Job container's environment in order: (name, value, or `<valueFrom>` for a reference).
fn env_list(job: &Job) -> Vec<(String, String)> {
    container(job)
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (_, Some(_)) => "<valueFrom>".to_owned(),
                (Some(v), None) => v.clone(),
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

fn env_of(job: &Job) -> BTreeMap<String, String> {
    env_list(job).into_iter().collect()
}

/// Assert `env` has each (name, value) of `want`.
fn assert_env(job: &Job, want: &[(&str, &str)]) {
    let env = env_of(job);
    for (k, v) in want {
        assert_eq!(
            env.get(*k).map(String::as_str),
            Some(*v),
            "env {k} of Job {}; its env: {:?}",
            job.name_any(),
            env_list(job)
        );
    }
}

/// What every migration Job of Release shop looks like (design: "Jobs Rewind creates").
struct Shape<'a> {
    kind: &'a str,
    revision: i64,
    version: &'a str,
    image: &'a str,
    command: &'a [&'a str],
    args: &'a [&'a str],
    deadline_seconds: i64,
}

fn assert_job_shape(job: &Job, release: &Value, want: &Shape) {
    let name = job.name_any();
    let whole = serde_json::to_string_pretty(job).unwrap_or_default();
    assert!(
        name.len() <= 63 && name.starts_with(&format!("shop-{}-", want.kind)),
        "Job name {name:?}"
    );
    let labels = job.labels();
    for (k, v) in [
        ("rewind.dev/release", "shop"),
        ("rewind.dev/migration", want.kind),
        ("app.kubernetes.io/managed-by", "rewind"),
    ] {
        assert_eq!(
            labels.get(k).map(String::as_str),
            Some(v),
            "label {k} of Job {name}"
        );
    }
    let annotations = job.annotations();
    assert_eq!(
        annotations.get("rewind.dev/revision").map(String::as_str),
        Some(want.revision.to_string().as_str()),
        "annotation rewind.dev/revision of Job {name}"
    );
    assert_eq!(
        annotations.get("rewind.dev/version").map(String::as_str),
        Some(want.version),
        "annotation rewind.dev/version of Job {name}"
    );
    let owners = job.owner_references();
    assert!(
        owners.iter().any(|o| o.kind == "Release"
            && o.name == "shop"
            && o.controller == Some(true)
            && Some(o.uid.as_str()) == release["metadata"]["uid"].as_str()),
        "Job {name} is owned by Release shop (controller): {owners:?}"
    );
    let spec = job.spec.as_ref().expect("a Job spec");
    assert_eq!(spec.backoff_limit, Some(0), "backoffLimit of {name}");
    assert_eq!(
        spec.active_deadline_seconds,
        Some(want.deadline_seconds),
        "activeDeadlineSeconds of {name}"
    );
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in [
        ("rewind.dev/release", "shop"),
        ("rewind.dev/migration", want.kind),
        ("app.kubernetes.io/managed-by", "rewind"),
    ] {
        assert_eq!(
            template_labels.get(k).map(String::as_str),
            Some(v),
            "pod template label {k} of Job {name}"
        );
    }
    let pod = spec.template.spec.as_ref().expect("a pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"), "{whole}");
    let c = container(job);
    assert_eq!(c.name, "migrate", "{whole}");
    assert_eq!(job_image(job), want.image, "image of Job {name}");
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        c.command.clone().unwrap_or_default(),
        strings(want.command),
        "command of Job {name}"
    );
    assert_eq!(
        c.args.clone().unwrap_or_default(),
        strings(want.args),
        "args of Job {name}"
    );
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError"),
        "{whole}"
    );
}

/// The pod-template annotations of a Job.
fn pod_annotations(job: &Job) -> BTreeMap<String, String> {
    job.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

// ----------------------------------------------------------------------- other checks

/// `rewind_migration_jobs_total{kind, result}` on the operator's /metrics (labels in any order).
fn migration_jobs_metric(f: &Fixture, kind: &str, result: &str) -> f64 {
    let text = f.op.metrics();
    let (kind, result) = (format!("kind=\"{kind}\""), format!("result=\"{result}\""));
    text.lines()
        .filter(|l| {
            l.starts_with("rewind_migration_jobs_total{")
                && l.contains(&kind)
                && l.contains(&result)
        })
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// Wait until a Warning Event `reason` about Release shop names `needle`; returns its note.
async fn warning_naming(f: &Fixture, reason: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let all = event_objects(&f.ns.client(), f.ns.name(), "shop").await;
        if let Some(e) = all.iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.note.as_deref().is_some_and(|n| n.contains(needle))
        }) {
            assert_eq!(e.type_.as_deref(), Some("Warning"), "Event {reason}: {e:?}");
            return e.note.clone().unwrap_or_default();
        }
        if Instant::now() >= deadline {
            let seen: Vec<(String, String)> = all
                .into_iter()
                .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
                .collect();
            panic!(
                "no Event {reason} naming {needle:?} about Release shop within {timeout:?}; Events: {seen:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pod template of Deployment shop now.
async fn template_now(f: &Fixture) -> (Deployment, k8s_openapi::api::core::v1::PodTemplateSpec) {
    let d = f
        .deployments
        .get("shop")
        .await
        .expect("reading Deployment shop");
    let t = d.spec.as_ref().expect("a spec").template.clone();
    (d, t)
}

fn revision_of(d: &Deployment) -> Option<String> {
    template_of(d).1
}

fn done(test: &str, started: Instant) {
    eprintln!("TIMING {test}: {:.1}s", started.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------------------ 1. up

#[tokio::test]
async fn an_up_job_gates_the_rollout_and_the_deployment_changes_only_after_it_completed() {
    let started = Instant::now();
    let f = fixture("mig_up_succeeds", json!({})).await;
    let (m1, m2) = (
        push_migration("up-ok", "1").await,
        push_migration("up-ok", "2").await,
    );
    healthy_v1(&f, migration(&m1, "1", json!({"down": down()}))).await;
    assert!(
        jobs(&f, "").await.is_empty(),
        "1.0.0 declares no up command: no Job"
    );
    let (before, before_template) = template_now(&f).await;

    f.apply_release(
        "2.0.0",
        &loopback_image("2.0.0"),
        migration(
            &m2,
            "2",
            json!({
                "up": {"command": ["/migrate", "up"], "args": ["--all"]},
                "down": down(),
                "env": [{"name": "DB_HOST", "value": "db"}],
                "podAnnotations": {"sim.rewind.dev/job-duration": "6s"}
            }),
        ),
    )
    .await;
    let job = jobs_until(&f, UP, "the up Job of 2.0.0 created", secs(60), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name = job.name_any();
    // While it runs: the Deployment untouched, the Release says so.
    let (d, t) = template_now(&f).await;
    assert_eq!(
        (t, d.metadata.generation),
        (before_template.clone(), before.metadata.generation),
        "the Deployment changed while the up Job {name} ran"
    );
    let v = until(&f, "MigratingUp while the up Job runs", secs(30), |v| {
        cond(v, "Ready")["reason"] == "MigratingUp"
    })
    .await;
    let s = &v["status"];
    assert_eq!(s["phase"], "Progressing", "{}", show(&v));
    assert_eq!(
        s["revision"],
        1,
        "status.revision stays the old one: {}",
        show(&v)
    );
    assert_eq!(s["history"][0]["revision"], 2, "{}", show(&v));
    assert_eq!(s["history"][0]["outcome"], "Pending", "{}", show(&v));
    let m = &s["history"][0]["migration"];
    assert_eq!(
        (&m["schemaVersion"], &m["digest"]),
        (&json!("2"), &json!(m2.digest)),
        "{}",
        show(&v)
    );
    assert_eq!(m["upJob"]["name"], name.as_str(), "{}", show(&v));
    assert_eq!(m["upJob"]["phase"], "Running", "{}", show(&v));
    assert!(m["upJob"]["startedAt"].is_string(), "{}", show(&v));

    assert_job_shape(
        &job,
        &v,
        &Shape {
            kind: "up",
            revision: 2,
            version: "2.0.0",
            image: &m2.pinned,
            command: &["/migrate", "up"],
            args: &["--all"],
            deadline_seconds: 900,
        },
    );
    assert!(
        name.starts_with("shop-up-2-") || name.starts_with("shop-up-r2-"),
        "the up Job's name names the revision: {name}"
    );
    assert_env(
        &job,
        &[
            ("REWIND_RELEASE", "shop"),
            ("REWIND_VERSION", "2.0.0"),
            ("REWIND_SCHEMA_VERSION", "2"),
            ("REWIND_FROM_VERSION", "1.0.0"),
            ("REWIND_FROM_SCHEMA_VERSION", "1"),
            ("DB_HOST", "db"),
        ],
    );
    assert_eq!(
        pod_annotations(&job)
            .get("sim.rewind.dev/job-duration")
            .map(String::as_str),
        Some("6s"),
        "podAnnotations go on the Job's pod template"
    );

    // The Deployment gets revision 2 only once the Job is Complete.
    let d = f.revision_applied(2, secs(60)).await;
    let job = get_job(&f, &name).await;
    assert!(
        job_has_condition(&job, "Complete"),
        "revision 2 was applied while the up Job {name} was not Complete: {}",
        status_json(&job)
    );
    let completed = completion(&job);
    // The Deployment controller makes the ReplicaSet of the new template (a loaded
    // controller-manager may take a while).
    let of_revision_2 = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("rewind.dev/revision"))
            .map(String::as_str)
            == Some("2")
    };
    let sets = wait_for_all(
        &f.ns.api::<ReplicaSet>(),
        "app=shop",
        "a ReplicaSet for revision 2",
        secs(60),
        |sets: &[ReplicaSet]| sets.iter().any(of_revision_2),
    )
    .await;
    let rs = sets.iter().find(|rs| of_revision_2(rs)).unwrap();
    assert!(
        created(rs) >= completed,
        "the ReplicaSet of revision 2 was created at {} before the up Job completed at {completed}",
        created(rs)
    );
    assert!(
        completed >= created(&job),
        "the Job completed after it was created"
    );
    assert_eq!(revision_of(&d).as_deref(), Some("2"));

    let v = until(&f, "2.0.0 Healthy on revision 2", secs(90), |v| {
        v["status"]["phase"] == "Healthy" && v["status"]["revision"] == 2
    })
    .await;
    let up = &entry(&v, 2)["migration"]["upJob"];
    assert_eq!(up["phase"], "Succeeded", "{}", show(&v));
    assert_eq!(up["name"], name.as_str(), "{}", show(&v));
    assert_eq!(
        migration_jobs_metric(&f, "up", "Succeeded"),
        1.0,
        "rewind_migration_jobs_total{{kind=up,result=Succeeded}}"
    );
    assert_eq!(jobs(&f, UP).await.len(), 1, "one up Job");
    assert!(jobs(&f, DOWN).await.is_empty(), "no down Job");
    let migration_not_run = events(&f.ns.client(), f.ns.name(), "shop")
        .await
        .into_iter()
        .filter(|(r, _)| r == "MigrationNotRun")
        .count();
    assert_eq!(migration_not_run, 0, "the MigrationNotRun warning is gone");
    done("up_job_succeeds", started);
}

#[tokio::test]
async fn a_failed_up_job_fails_the_revision_and_leaves_the_deployment_alone() {
    let started = Instant::now();
    let f = fixture("mig_up_fails", json!({})).await;
    let m1 = push_migration("up-fails", "1").await;
    let m2 = push_migration("jobfail-up", "2").await;
    healthy_v1(&f, migration(&m1, "1", json!({"down": down()}))).await;
    let (before, before_template) = template_now(&f).await;

    f.apply_release(
        "2.0.0",
        &loopback_image("2.0.0"),
        migration(
            &m2,
            "2",
            json!({
                "up": {"command": ["/migrate", "up"]},
                "down": down(),
                "podAnnotations": {"sim.rewind.dev/termination-message": SAID}
            }),
        ),
    )
    .await;
    let job = jobs_until(&f, UP, "the up Job of 2.0.0 created", secs(60), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name = job.name_any();
    assert_eq!(job_image(&job), m2.pinned);
    job_until(&f, &name, "the up Job Failed", secs(60), |j| {
        job_has_condition(j, "Failed")
    })
    .await;

    let v = until(&f, "phase Failed, Stalled", secs(60), |v| {
        v["status"]["phase"] == "Failed" && cond(v, "Stalled")["status"] == "True"
    })
    .await;
    let s = &v["status"];
    assert!(
        cond_is(&v, "Stalled", "True", "MigrationFailed"),
        "{}",
        show(&v)
    );
    assert_eq!(cond(&v, "Ready")["status"], "False", "{}", show(&v));
    let v2 = entry(&v, 2);
    assert_eq!(v2["outcome"], "Failed", "{}", show(&v));
    assert_eq!(v2["failure"]["trigger"], "Migration", "{}", show(&v));
    assert_eq!(v2["failure"]["reason"], "MigrationFailed", "{}", show(&v));
    assert!(
        v2["failure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&name)),
        "the failure names the Job {name}: {}",
        show(&v)
    );
    assert_eq!(v2["migration"]["upJob"]["phase"], "Failed", "{}", show(&v));
    assert_eq!(
        (&s["revision"], &s["version"]),
        (&json!(1), &json!("1.0.0")),
        "{}",
        show(&v)
    );
    assert_eq!(s["blocked"]["version"], "2.0.0", "{}", show(&v));
    assert!(
        s["rollback"].is_null(),
        "nothing to roll back: {}",
        show(&v)
    );
    let note = warning_naming(&f, "MigrationFailed", &name, secs(15)).await;
    assert!(
        note.contains(SAID),
        "the Event gives the container's termination message: {note}"
    );
    assert_eq!(migration_jobs_metric(&f, "up", "Failed"), 1.0);

    // The Deployment never changed, and nothing retries.
    expect_never(
        &f.deployments,
        "shop",
        "the Deployment changed after a failed up Job",
        secs(5),
        |d| {
            d.metadata.generation != before.metadata.generation
                || d.spec.as_ref().map(|s| &s.template) != Some(&before_template)
        },
    )
    .await;
    let (_, t) = template_now(&f).await;
    assert_eq!(t, before_template, "the Deployment runs 1.0.0's template");
    assert_eq!(jobs(&f, "").await.len(), 1, "one Job in all: no retry");
    done("up_job_fails", started);
}

// -------------------------------------------------------------------- 2. down, ordering

/// v1 (schema 1) Healthy, then v2 (schema 2, with a down, its Jobs taking `duration`) shipped
/// crash-looping, once revision 2 is applied: returns v2's migration image. Its Jobs' pods say
/// SAID when they fail (only an image marked `jobfail` fails).
async fn crossing_rollback(
    f: &Fixture,
    test: &str,
    v2_image: &str,
    duration: &str,
) -> MigrationImage {
    let m1 = push_migration(&format!("{test}-m"), "1").await;
    let m2 = push_migration(v2_image, "2").await;
    // The migration's ServiceAccount must exist for its pods to be admitted; the Secret and
    // ConfigMap it names need not (nothing runs: the references are only checked on the Job).
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "migrator"}})).unwrap();
    f.ns.api::<k8s_openapi::api::core::v1::ServiceAccount>()
        .create(&Default::default(), &sa)
        .await
        .expect("creating ServiceAccount migrator");
    healthy_v1(f, migration(&m1, "1", json!({"down": down()}))).await;
    ship_crashing(
        f,
        "2.0.0",
        migration(
            &m2,
            "2",
            json!({
                "down": down(),
                "serviceAccountName": "migrator",
                "env": [
                    {"name": "DB_HOST", "value": "db"},
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                ],
                "envFrom": [{"configMapRef": {"name": "db-settings"}, "prefix": "DB_"}],
                "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
                "podAnnotations": {
                    "sim.rewind.dev/job-duration": duration,
                    "sim.rewind.dev/termination-message": SAID
                }
            }),
        ),
    )
    .await;
    f.revision_applied(2, secs(30)).await;
    m2
}

/// The down Job of a v2 → v1 rollback is what the design says.
fn assert_down_job(job: &Job, v: &Value, m2: &MigrationImage, deadline_seconds: i64) {
    assert_job_shape(
        job,
        v,
        &Shape {
            kind: "down",
            revision: 2,
            version: "2.0.0",
            image: &m2.pinned,
            command: &["/migrate", "down"],
            args: &["--to-previous"],
            deadline_seconds,
        },
    );
    let id = v["status"]["rollback"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a rollback id: {}", show(v)));
    assert_env(
        job,
        &[
            ("REWIND_RELEASE", "shop"),
            ("REWIND_ROLLBACK_ID", id),
            ("REWIND_FROM_VERSION", "2.0.0"),
            ("REWIND_TARGET_VERSION", "1.0.0"),
            ("REWIND_FROM_SCHEMA_VERSION", "2"),
            ("REWIND_TARGET_SCHEMA_VERSION", "1"),
            ("DB_HOST", "db"),
            ("DB_PASSWORD", "<valueFrom>"),
        ],
    );
    // Credentials stay references; the rest of the migration's pod settings are carried over.
    let c = container(job);
    let password = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "DB_PASSWORD")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|f| f.secret_key_ref.as_ref())
        .map(|r| (r.name.as_str(), r.key.as_str()));
    assert_eq!(
        password,
        Some(("db", "password")),
        "DB_PASSWORD from Secret db"
    );
    let env_from: Vec<(Option<String>, Option<String>)> = c
        .env_from
        .iter()
        .flatten()
        .map(|e| {
            (
                e.config_map_ref.as_ref().map(|r| r.name.clone()),
                e.prefix.clone(),
            )
        })
        .collect();
    assert_eq!(
        env_from,
        [(Some("db-settings".to_owned()), Some("DB_".to_owned()))],
        "envFrom of Job {}",
        job.name_any()
    );
    let resources = c
        .resources
        .as_ref()
        .expect("resources on the migration container");
    let amount =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(
        (
            amount(&resources.requests, "cpu"),
            amount(&resources.limits, "memory")
        ),
        (Some("100m".to_owned()), Some("256Mi".to_owned())),
        "resources of Job {}",
        job.name_any()
    );
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("migrator"));
    let names: Vec<String> = env_list(job).into_iter().map(|(k, _)| k).collect();
    let user = names.iter().position(|k| k == "DB_HOST").unwrap();
    assert!(
        names[..user]
            .iter()
            .filter(|k| k.starts_with("REWIND_"))
            .count()
            == 6,
        "the REWIND_* variables come before the user's: {names:?}"
    );
    assert_eq!(
        job.annotations()
            .get("rewind.dev/rollback-id")
            .map(String::as_str),
        Some(id),
        "annotation rewind.dev/rollback-id of Job {}",
        job.name_any()
    );
}

/// The one step of a v2 → v1 rollback.
fn assert_step(v: &Value, m2: &MigrationImage, job: &str, phase: &str, attempt: i64) {
    let steps = steps(v);
    assert_eq!(steps.len(), 1, "one migration step: {}", show(v));
    let st = &steps[0];
    for (field, want) in [
        ("revision", json!(2)),
        ("version", json!("2.0.0")),
        ("toRevision", json!(1)),
        ("toVersion", json!("1.0.0")),
        ("fromSchemaVersion", json!("2")),
        ("toSchemaVersion", json!("1")),
        ("phase", json!(phase)),
    ] {
        assert_eq!(st[field], want, "step field {field}: {}", show(v));
    }
    for (field, want) in [("name", json!(job)), ("attempt", json!(attempt))] {
        assert_eq!(
            step_job(st, field),
            &want,
            "the step's Job {field}: {}",
            show(v)
        );
    }
    assert!(
        st["image"] == m2.pinned.as_str() || st["image"] == m2.written.as_str(),
        "step image is v2's migration image: {}",
        show(v)
    );
    assert!(step_job(st, "startedAt").is_string(), "{}", show(v));
}

#[tokio::test]
async fn before_rollback_the_down_job_of_the_failing_revision_completes_before_the_images_are_restored()
 {
    let started = Instant::now();
    // No migrations policy: BeforeRollback is the default.
    let f = fixture("mig_down_before", json!({})).await;
    let m2 = crossing_rollback(&f, "down-before", "down-before-m", "5s").await;

    let job = jobs_until(&f, DOWN, "the down Job created", secs(90), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name = job.name_any();
    let (d, _) = template_now(&f).await;
    assert_eq!(
        revision_of(&d).as_deref(),
        Some("2"),
        "the images are restored only after the down Job"
    );
    let v = release_json(&f).await;
    assert_eq!(rollback_phase(&v), "MigratingDown", "{}", show(&v));
    assert_eq!(
        v["status"]["rollback"]["jobName"],
        name.as_str(),
        "{}",
        show(&v)
    );
    assert_step(&v, &m2, &name, "Running", 1);
    assert_eq!(
        entry(&v, 2)["migration"]["digest"],
        m2.digest.as_str(),
        "history records v2's migration digest: {}",
        show(&v)
    );
    assert_down_job(&job, &v, &m2, 900);

    // The Deployment goes back only once the Job is Complete.
    let d = f
        .deployment_until("back on revision 1", secs(90), |d| {
            revision_of(d).as_deref() == Some("1")
        })
        .await;
    let job = get_job(&f, &name).await;
    assert!(
        job_has_condition(&job, "Complete"),
        "the images were restored while the down Job {name} was not Complete: {}",
        status_json(&job)
    );
    assert_eq!(template_of(&d).0, pinned_app("1.0.0"), "1.0.0's digest");
    let v = until(&f, "rollback Succeeded", secs(120), |v| {
        rollback_phase(v) == "Succeeded"
    })
    .await;
    let rb = &v["status"]["rollback"];
    let restored = ts(&rb["imagesRestoredAt"], "imagesRestoredAt");
    assert!(
        completion(&job) <= restored,
        "the Job completed at {} after the images were restored at {restored}",
        completion(&job)
    );
    assert_step(&v, &m2, &name, "Succeeded", 1);
    let st = &steps(&v)[0];
    assert!(
        ts(step_job(st, "completedAt"), "step completedAt") <= restored,
        "{}",
        show(&v)
    );
    assert_eq!(
        step_job(&v["status"]["rollbacks"][0]["migrations"][0], "name"),
        name.as_str(),
        "the audit list records the step: {}",
        show(&v)
    );
    assert_eq!(migration_jobs_metric(&f, "down", "Succeeded"), 1.0);
    assert_eq!(jobs(&f, "").await.len(), 1, "exactly one Job");
    done("down_before_rollback", started);
}

#[tokio::test]
async fn after_rollback_the_images_are_restored_and_verified_before_the_down_job_is_created() {
    let started = Instant::now();
    let f = fixture(
        "mig_down_after",
        json!({"migrations": {"order": "AfterRollback"}}),
    )
    .await;
    let m2 = crossing_rollback(&f, "down-after", "down-after-m", "3s").await;

    // The images first: when revision 1 is back, no Job exists yet.
    let d = f
        .deployment_until("back on revision 1", secs(90), |d| {
            revision_of(d).as_deref() == Some("1")
        })
        .await;
    assert_eq!(template_of(&d).0, pinned_app("1.0.0"));
    let early = jobs(&f, "").await;
    assert!(
        early.is_empty(),
        "a Job exists when the images were just restored: {:?}",
        early.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );

    let job = jobs_until(&f, DOWN, "the down Job created", secs(90), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name = job.name_any();
    let (d, _) = template_now(&f).await;
    assert_eq!(revision_of(&d).as_deref(), Some("1"));
    assert!(
        deployment_is_rolled_out(&d),
        "the restored revision was verified before the Job: {}",
        status_json(&d)
    );
    let v = release_json(&f).await;
    assert_eq!(rollback_phase(&v), "MigratingDownAfter", "{}", show(&v));
    assert_step(&v, &m2, &name, "Running", 1);
    assert_down_job(&job, &v, &m2, 900);
    let rb = &v["status"]["rollback"];
    let restored = ts(&rb["imagesRestoredAt"], "imagesRestoredAt");
    let step_started = ts(step_job(&steps(&v)[0], "startedAt"), "step startedAt");
    assert!(
        restored <= step_started && restored <= created(&job),
        "images restored at {restored}, step started at {step_started}, Job created at {}",
        created(&job)
    );

    let v = until(&f, "rollback Succeeded", secs(120), |v| {
        rollback_phase(v) == "Succeeded"
    })
    .await;
    let job = get_job(&f, &name).await;
    assert!(job_has_condition(&job, "Complete"), "{}", status_json(&job));
    assert_step(&v, &m2, &name, "Succeeded", 1);
    let finished_at = ts(&v["status"]["rollback"]["completedAt"], "completedAt");
    assert!(
        completion(&job) <= finished_at,
        "the rollback completed at {finished_at}, before its Job ({})",
        completion(&job)
    );
    assert_eq!(migration_jobs_metric(&f, "down", "Succeeded"), 1.0);
    assert_eq!(jobs(&f, "").await.len(), 1, "exactly one Job");
    done("down_after_rollback", started);
}

// ------------------------------------------------------------------ 3. down fails, retry

#[tokio::test]
async fn a_failed_down_job_halts_the_rollback_and_each_retry_runs_a_new_job() {
    let started = Instant::now();
    let f = fixture("mig_down_fails", json!({})).await;
    let m2 = crossing_rollback(&f, "down-fails", "jobfail-down", "1s").await;

    let job1 = jobs_until(&f, DOWN, "the down Job created", secs(90), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name1 = job1.name_any();
    let (d_at, t_at) = template_now(&f).await;
    assert_eq!(revision_of(&d_at).as_deref(), Some("2"));
    job_until(&f, &name1, "the down Job Failed", secs(60), |j| {
        job_has_condition(j, "Failed")
    })
    .await;

    let v = until(&f, "rollback halted (Failed)", secs(60), |v| {
        rollback_phase(v) == "Failed"
    })
    .await;
    assert!(
        cond_is(&v, "Ready", "False", "MigrationFailed"),
        "{}",
        show(&v)
    );
    assert_eq!(cond(&v, "Stalled")["status"], "True", "{}", show(&v));
    let said = cond(&v, "Stalled")["message"].as_str().unwrap_or_default();
    assert!(
        said.contains(&name1) && said.contains("rewind.dev/retry"),
        "Stalled names the Job and what a person does next: {said}"
    );
    assert_step(&v, &m2, &name1, "Failed", 1);
    let note = warning_naming(&f, "MigrationFailed", &name1, secs(15)).await;
    assert!(
        note.contains(SAID),
        "the Event gives the container's termination message: {note}"
    );
    assert_eq!(migration_jobs_metric(&f, "down", "Failed"), 1.0);

    // Frozen: the Deployment exactly as when the Job was created, and nothing retries.
    expect_never(
        &f.deployments,
        "shop",
        "the Deployment changed after the down Job failed",
        secs(6),
        |d| {
            d.metadata.generation != d_at.metadata.generation
                || d.spec.as_ref().map(|s| &s.template) != Some(&t_at)
        },
    )
    .await;
    assert_eq!(jobs(&f, "").await.len(), 1, "no second Job without a retry");

    // A retry runs a new Job (another name) for the same step; this image fails again.
    f.annotate(&f.releases, "shop", "rewind.dev/retry", Some("1"))
        .await;
    let all = jobs_until(&f, DOWN, "a second down Job", secs(60), |js| js.len() >= 2).await;
    assert_eq!(all.len(), 2, "one Job per attempt");
    let job2 = all.into_iter().find(|j| j.name_any() != name1).unwrap();
    let name2 = job2.name_any();
    assert!(name2.starts_with("shop-down-"), "{name2}");
    assert_eq!(job_image(&job2), m2.pinned, "the same migration image");
    let v = until(&f, "attempt 2 halted again", secs(60), |v| {
        rollback_phase(v) == "Failed"
            && steps(v)
                .first()
                .is_some_and(|s| step_job(s, "attempt") == 2 && s["phase"] == "Failed")
    })
    .await;
    assert_step(&v, &m2, &name2, "Failed", 2);
    assert_eq!(
        v["status"]["rollback"]["jobName"],
        name2.as_str(),
        "{}",
        show(&v)
    );
    assert!(
        cond_is(&v, "Ready", "False", "MigrationFailed"),
        "{}",
        show(&v)
    );
    // The second failure is an Event of its own, naming the second Job (each Event's related
    // object is its Job, so the recorder does not fold it into the first one's series).
    warning_naming(&f, "MigrationFailed", &name2, secs(15)).await;
    assert_eq!(
        times_published(&f.ns.client(), f.ns.name(), "shop", "MigrationFailed").await,
        2,
        "one MigrationFailed per failed Job"
    );
    let (d, t) = template_now(&f).await;
    assert_eq!(
        (t, d.metadata.generation),
        (t_at, d_at.metadata.generation),
        "the Deployment is still exactly as before the first Job"
    );
    assert_eq!(migration_jobs_metric(&f, "down", "Failed"), 2.0);
    assert_eq!(jobs(&f, "").await.len(), 2);
    done("down_job_fails", started);
}

#[tokio::test]
async fn a_timed_out_down_job_halts_the_rollback_and_a_retry_with_a_longer_timeout_completes_it() {
    let started = Instant::now();
    let f = fixture(
        "mig_down_timeout",
        json!({"migrations": {"timeout": "10s"}}),
    )
    .await;
    // Each Job's pod runs 20 s: longer than the first attempt's 10 s.
    let m2 = crossing_rollback(&f, "down-timeout", "down-timeout-m", "20s").await;

    let job1 = jobs_until(&f, DOWN, "the down Job created", secs(90), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name1 = job1.name_any();
    let v = release_json(&f).await;
    assert_down_job(&job1, &v, &m2, 10);
    let (d_at, t_at) = template_now(&f).await;
    assert_eq!(revision_of(&d_at).as_deref(), Some("2"));
    let job1 = job_until(&f, &name1, "the down Job Failed", secs(60), |j| {
        job_has_condition(j, "Failed")
    })
    .await;
    assert_eq!(
        job_condition_reason(&job1, "Failed").as_deref(),
        Some("DeadlineExceeded"),
        "{}",
        status_json(&job1)
    );
    let v = until(&f, "rollback halted (Failed)", secs(60), |v| {
        rollback_phase(v) == "Failed"
    })
    .await;
    assert!(
        cond_is(&v, "Ready", "False", "MigrationTimedOut"),
        "{}",
        show(&v)
    );
    assert_eq!(cond(&v, "Stalled")["status"], "True", "{}", show(&v));
    assert_step(&v, &m2, &name1, "Failed", 1);
    warning_naming(&f, "MigrationTimedOut", &name1, secs(15)).await;
    assert_eq!(migration_jobs_metric(&f, "down", "TimedOut"), 1.0);
    let (d, t) = template_now(&f).await;
    assert_eq!(
        (t, d.metadata.generation),
        (t_at, d_at.metadata.generation),
        "the Deployment is as it was when the Job was created"
    );

    // A person raises the timeout and retries: a new Job with the new deadline completes it.
    f.ns.api::<RollbackPolicy>()
        .patch(
            "fast",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"migrations": {"timeout": "2m"}}})),
        )
        .await
        .expect("raising the migration timeout");
    tokio::time::sleep(secs(2)).await; // the operator's policy cache catches up
    f.annotate(&f.releases, "shop", "rewind.dev/retry", Some("1"))
        .await;
    let all = jobs_until(&f, DOWN, "a second down Job", secs(60), |js| js.len() >= 2).await;
    assert_eq!(all.len(), 2, "one Job per attempt");
    let job2 = all.into_iter().find(|j| j.name_any() != name1).unwrap();
    let name2 = job2.name_any();
    let v = release_json(&f).await;
    assert_down_job(&job2, &v, &m2, 120);
    let d = f
        .deployment_until("back on revision 1", secs(90), |d| {
            revision_of(d).as_deref() == Some("1")
        })
        .await;
    let job2 = get_job(&f, &name2).await;
    assert!(
        job_has_condition(&job2, "Complete"),
        "the images were restored while the retried Job {name2} was not Complete: {}",
        status_json(&job2)
    );
    assert_eq!(template_of(&d).0, pinned_app("1.0.0"));
    let v = until(&f, "rollback Succeeded", secs(120), |v| {
        rollback_phase(v) == "Succeeded"
    })
    .await;
    assert_step(&v, &m2, &name2, "Succeeded", 2);
    assert_eq!(migration_jobs_metric(&f, "down", "Succeeded"), 1.0);
    assert_eq!(jobs(&f, "").await.len(), 2);
    done("down_job_times_out_then_retry_succeeds", started);
}

#[tokio::test]
async fn a_down_job_deleted_mid_run_halts_the_rollback_and_is_not_created_again() {
    let started = Instant::now();
    let f = fixture("mig_down_deleted", json!({})).await;
    // A Job that would run a minute: a person deletes it first.
    let _m2 = crossing_rollback(&f, "down-deleted", "down-deleted-m", "60s").await;
    let job = jobs_until(&f, DOWN, "the down Job created", secs(90), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name = job.name_any();
    // Its pod runs (so the operator has seen the Job for a while), then it is deleted.
    job_until(&f, &name, "the down Job's pod running", secs(60), |j| {
        j.status.as_ref().and_then(|s| s.active) == Some(1)
    })
    .await;
    tokio::time::sleep(secs(2)).await;
    let (d_at, t_at) = template_now(&f).await;
    assert_eq!(revision_of(&d_at).as_deref(), Some("2"));
    jobs_api(&f)
        .delete(&name, &kube::api::DeleteParams::background())
        .await
        .expect("deleting the down Job");

    let v = until(&f, "rollback halted (Failed)", secs(60), |v| {
        rollback_phase(v) == "Failed"
    })
    .await;
    assert!(
        cond_is(&v, "Ready", "False", "MigrationJobDeleted"),
        "{}",
        show(&v)
    );
    assert_eq!(cond(&v, "Stalled")["status"], "True", "{}", show(&v));
    assert_eq!(steps(&v)[0]["phase"], "Failed", "{}", show(&v));
    warning_naming(&f, "MigrationJobDeleted", &name, secs(15)).await;
    assert_eq!(migration_jobs_metric(&f, "down", "Deleted"), 1.0);
    // Not created again, and the Deployment left as it was.
    expect_never(
        &f.deployments,
        "shop",
        "the Deployment changed after the down Job was deleted",
        secs(6),
        |d| {
            d.metadata.generation != d_at.metadata.generation
                || d.spec.as_ref().map(|s| &s.template) != Some(&t_at)
        },
    )
    .await;
    let left = jobs(&f, "").await;
    assert!(
        left.is_empty(),
        "the deleted Job was created again (or another one): {:?}",
        left.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );
    done("down_job_deleted", started);
}

// ------------------------------------------------------------- 4. killed after the Job

#[tokio::test]
async fn an_operator_killed_right_after_creating_the_down_job_follows_that_job_after_a_restart() {
    let started = Instant::now();
    let args = registry_args();
    let mut f = Fixture::with_operator(
        "mig_killed_after_job",
        patient(json!({})),
        async |ns: String| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Operator::start_pausing_after_job(&ns, &args, "20s").await
        },
    )
    .await;
    let m2 = crossing_rollback(&f, "killed", "killed-m", "3s").await;

    let job = jobs_until(&f, DOWN, "the down Job created", secs(90), |js| {
        !js.is_empty()
    })
    .await
    .remove(0);
    let name = job.name_any();
    // The operator pauses right after the create: kill it there.
    f.op.wait_log("test fault: pausing", secs(10)).await;
    f.op.kill();
    eprintln!(
        "killed the operator; its test-fault lines: {:?}",
        f.op.log_lines("test fault")
    );
    let v = release_json(&f).await;
    assert_eq!(rollback_phase(&v), "MigratingDown", "{}", show(&v));
    assert_step(&v, &m2, &name, "Running", 1);
    let (d, _) = template_now(&f).await;
    assert_eq!(
        revision_of(&d).as_deref(),
        Some("2"),
        "killed before the images were restored"
    );

    // A new operator follows the Job it finds (created by the dead one): no second Job.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    f.op = Operator::start_with_args(f.ns.name(), &args, &[]);
    let d = f
        .deployment_until("back on revision 1", secs(90), |d| {
            revision_of(d).as_deref() == Some("1")
        })
        .await;
    assert_eq!(template_of(&d).0, pinned_app("1.0.0"));
    let v = until(&f, "rollback Succeeded", secs(120), |v| {
        rollback_phase(v) == "Succeeded"
    })
    .await;
    assert_step(&v, &m2, &name, "Succeeded", 1);
    let all = jobs(&f, "").await;
    assert_eq!(
        all.iter().map(|j| j.name_any()).collect::<Vec<_>>(),
        vec![name.as_str()],
        "exactly one Job, the one the killed operator created"
    );
    assert!(job_has_condition(&all[0], "Complete"));
    // The new operator acted: it saw the Job's result and restored the images.
    assert_eq!(
        migration_jobs_metric(&f, "down", "Succeeded"),
        1.0,
        "the new operator counted the Job it followed"
    );
    tokio::time::sleep(secs(3)).await;
    assert_eq!(jobs(&f, "").await.len(), 1, "still one Job, a while later");
    done("killed_after_job", started);
}

// --------------------------------------------------- 5. schema cases, irreversibility

#[tokio::test]
async fn a_rollback_without_a_schema_change_runs_no_job() {
    let started = Instant::now();
    let f = fixture("mig_same_schema", json!({})).await;
    let (m1, m2) = (
        push_migration("same-schema", "1").await,
        push_migration("same-schema", "2").await,
    );
    healthy_v1(&f, migration(&m1, "1", json!({"down": down()}))).await;
    ship_crashing(&f, "2.0.0", migration(&m2, "1", json!({"down": down()}))).await;
    f.revision_applied(2, secs(30)).await;
    let v = until(&f, "rollback Succeeded", secs(120), |v| {
        rollback_phase(v) == "Succeeded"
    })
    .await;
    assert!(steps(&v).is_empty(), "no migration step: {}", show(&v));
    assert!(v["status"]["rollback"]["jobName"].is_null(), "{}", show(&v));
    let (d, _) = template_now(&f).await;
    assert_eq!(template_of(&d), (pinned_app("1.0.0"), Some("1".into())));
    assert!(jobs(&f, "").await.is_empty(), "no Job in the namespace");
    done("same_schema", started);
}

#[tokio::test]
async fn a_rollback_across_two_schema_changes_runs_both_down_jobs_newest_first() {
    let started = Instant::now();
    let f = fixture("mig_two_schemas", json!({})).await;
    let m1 = push_migration("two-schemas", "1").await;
    let m2 = push_migration("two-schemas", "2").await;
    let m3 = push_migration("two-schemas", "3").await;
    let slow = |m: &MigrationImage, schema: &str| {
        migration(
            m,
            schema,
            json!({"down": down(), "podAnnotations": {"sim.rewind.dev/job-duration": "3s"}}),
        )
    };
    healthy_v1(&f, slow(&m1, "1")).await;
    ship_healthy(&f, "2.0.0", 2, slow(&m2, "2")).await;
    ship_healthy(&f, "3.0.0", 3, slow(&m3, "3")).await;
    assert!(jobs(&f, "").await.is_empty(), "no Job before the rollback");

    // 3.0.0 → 1.0.0 crosses 3's schema change, then 2's.
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("1.0.0"))
        .await;
    let first = jobs_until(&f, DOWN, "the first down Job", secs(60), |js| {
        !js.is_empty()
    })
    .await;
    assert_eq!(first.len(), 1, "one Job at a time");
    let a = first[0].clone();
    let name_a = a.name_any();
    let all = jobs_until(&f, DOWN, "the second down Job", secs(60), |js| {
        js.len() >= 2
    })
    .await;
    let a_now = get_job(&f, &name_a).await;
    assert!(
        job_has_condition(&a_now, "Complete"),
        "the second Job was created before the first ({name_a}) completed: {}",
        status_json(&a_now)
    );
    assert_eq!(all.len(), 2, "two Jobs");
    let b = all.into_iter().find(|j| j.name_any() != name_a).unwrap();
    let name_b = b.name_any();
    assert!(
        completion(&a_now) <= created(&b),
        "{name_a} completed at {}, {name_b} was created at {}",
        completion(&a_now),
        created(&b)
    );
    let v = release_json(&f).await;
    let id = v["status"]["rollback"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Newest first: 3.0.0's down (back to 2.0.0), then 2.0.0's (back to 1.0.0).
    for (job, m, rev, from, from_schema, to, to_schema) in [
        (&a, &m3, 3, "3.0.0", "3", "2.0.0", "2"),
        (&b, &m2, 2, "2.0.0", "2", "1.0.0", "1"),
    ] {
        assert_job_shape(
            job,
            &v,
            &Shape {
                kind: "down",
                revision: rev,
                version: from,
                image: &m.pinned,
                command: &["/migrate", "down"],
                args: &["--to-previous"],
                deadline_seconds: 900,
            },
        );
        assert_env(
            job,
            &[
                ("REWIND_RELEASE", "shop"),
                ("REWIND_ROLLBACK_ID", &id),
                ("REWIND_FROM_VERSION", from),
                ("REWIND_FROM_SCHEMA_VERSION", from_schema),
                ("REWIND_TARGET_VERSION", to),
                ("REWIND_TARGET_SCHEMA_VERSION", to_schema),
            ],
        );
    }

    let d = f
        .deployment_until("back on revision 1", secs(90), |d| {
            revision_of(d).as_deref() == Some("1")
        })
        .await;
    let b_now = get_job(&f, &name_b).await;
    assert!(
        job_has_condition(&b_now, "Complete"),
        "the images were restored before the second Job completed: {}",
        status_json(&b_now)
    );
    assert_eq!(template_of(&d).0, pinned_app("1.0.0"));
    let v = until(&f, "rollback Succeeded", secs(120), |v| {
        rollback_phase(v) == "Succeeded"
    })
    .await;
    assert_eq!(v["status"]["rollback"]["trigger"], "Manual", "{}", show(&v));
    let st = steps(&v);
    assert_eq!(st.len(), 2, "two steps: {}", show(&v));
    for (s, rev, to_rev, job) in [(&st[0], 3, 2, &name_a), (&st[1], 2, 1, &name_b)] {
        assert_eq!(
            (
                &s["revision"],
                &s["toRevision"],
                step_job(s, "name"),
                &s["phase"]
            ),
            (
                &json!(rev),
                &json!(to_rev),
                &json!(job),
                &json!("Succeeded")
            ),
            "{}",
            show(&v)
        );
    }
    assert_eq!(migration_jobs_metric(&f, "down", "Succeeded"), 2.0);
    assert_eq!(jobs(&f, "").await.len(), 2);
    done("two_schema_changes", started);
}

#[tokio::test]
async fn an_irreversible_migration_refuses_the_rollback_until_a_person_allows_crossing_it() {
    let started = Instant::now();
    let f = fixture("mig_irreversible", json!({})).await;
    let (m1, m2) = (
        push_migration("irreversible", "1").await,
        push_migration("irreversible", "2").await,
    );
    healthy_v1(&f, migration(&m1, "1", json!({"down": down()}))).await;
    // Even with a down command, reversible: false wins.
    ship_crashing(
        &f,
        "2.0.0",
        migration(&m2, "2", json!({"down": down(), "reversible": false})),
    )
    .await;
    f.revision_applied(2, secs(30)).await;

    // The automatic rollback is refused.
    let v = until(
        &f,
        "the rollback refused (IrreversibleMigration)",
        secs(90),
        |v| cond(v, "Ready")["reason"] == "IrreversibleMigration",
    )
    .await;
    assert_eq!(v["status"]["phase"], "Degraded", "{}", show(&v));
    assert_eq!(cond(&v, "Stalled")["status"], "True", "{}", show(&v));
    assert!(
        v["status"]["rollback"].is_null() || rollback_phase(&v) == "Failed",
        "no rollback runs: {}",
        show(&v)
    );
    warning_naming(&f, "IrreversibleMigration", "2.0.0", secs(15)).await;
    let (d_at, t_at) = template_now(&f).await;
    assert_eq!(revision_of(&d_at).as_deref(), Some("2"));
    expect_never(
        &f.deployments,
        "shop",
        "the Deployment changed although the rollback was refused",
        secs(4),
        |d| d.metadata.generation != d_at.metadata.generation,
    )
    .await;

    // A manual rollback is refused too.
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("1.0.0"))
        .await;
    let v = until(&f, "ManualRollback refused", secs(30), |v| {
        cond(v, "ManualRollback")["status"] == "False"
    })
    .await;
    let c = cond(&v, "ManualRollback");
    assert_eq!(c["reason"], "IrreversibleMigration", "{}", show(&v));
    assert!(
        c["message"].as_str().is_some_and(|m| m.contains("2.0.0")),
        "the refusal names the irreversible version: {}",
        show(&v)
    );
    let (d, t) = template_now(&f).await;
    assert_eq!(
        (t, d.metadata.generation),
        (t_at.clone(), d_at.metadata.generation),
        "a refused request changes nothing"
    );
    assert!(jobs(&f, "").await.is_empty(), "no Job");

    // Allowed: the request, asked again, crosses 2.0.0's migration without a Job.
    annotate_release(
        &f,
        &[
            ("rewind.dev/allow-irreversible", Some("2.0.0")),
            ("rewind.dev/rollback-to", None),
        ],
    )
    .await;
    until(&f, "the removed request forgotten", secs(30), |v| {
        v["status"]["handled"]["rollbackTo"].is_null()
    })
    .await;
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("1.0.0"))
        .await;
    let d = f
        .deployment_until("back on revision 1", secs(90), |d| {
            revision_of(d).as_deref() == Some("1")
        })
        .await;
    assert_eq!(template_of(&d).0, pinned_app("1.0.0"));
    let v = until(&f, "rollback Succeeded", secs(120), |v| {
        rollback_phase(v) == "Succeeded"
    })
    .await;
    assert_eq!(cond(&v, "ManualRollback")["status"], "True", "{}", show(&v));
    let st = steps(&v);
    assert_eq!(st.len(), 1, "one step: {}", show(&v));
    assert_eq!(st[0]["phase"], "Skipped", "{}", show(&v));
    assert_eq!(st[0]["revision"], 2, "{}", show(&v));
    assert!(step_job(&st[0], "name").is_null(), "{}", show(&v));
    assert!(jobs(&f, "").await.is_empty(), "no Job: the step is skipped");
    done("irreversible", started);
}
