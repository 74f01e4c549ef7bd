//! How Argo CD and Flux read a Release, checked with their own code: deploy/argocd/health.lua
//! run by gopher-lua the way Argo CD runs it, and kstatus (sigs.k8s.io/cli-utils), which Flux's
//! health checks use. Both come from `gitops-check` (tests/gitops, a small Go program built on
//! demand by tests/gitops/build.sh and cached under ~/.cache/rewind/tools).
//!
//! - The Argo CD fixtures (deploy/argocd/health_test.yaml and testdata/, Argo CD's
//!   resource-customization convention) read as they say, with and without Lua's standard
//!   libraries.
//! - Statuses captured from real Releases on the local cluster (every status write, through a
//!   watch) read right in every phase: Progressing, Healthy, RollingBack, RolledBack, Degraded,
//!   Failed, Paused, a spec Rewind has not observed yet, and a Release it has not seen at all.
//!
//! What kstatus says, phase by phase (asserted below):
//!
//! | Release                                   | Argo CD     | kstatus    |
//! |-------------------------------------------|-------------|------------|
//! | not seen yet (the CRD's default status)   | Progressing | InProgress (observedGeneration 0 < generation) |
//! | observedGeneration < generation           | Progressing | InProgress |
//! | Progressing, RollingBack                  | Progressing | InProgress (Reconciling=True) |
//! | Healthy                                   | Healthy     | Current (Ready=True) |
//! | Degraded, RolledBack, Failed              | Degraded    | Failed (Stalled=True) |
//! | Paused                                    | Suspended   | InProgress (Ready=Unknown, no Reconciling or Stalled) |

mod operator;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    pin::pin,
    process::{Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use operator::*;
use rewind::api::{Release, RollbackPolicy};
use serde::Deserialize;
use serde_json::{Value, json};
use support::*;

// ------------------------------------------------------------------------------ gitops-check

/// How one tool reads an object.
#[derive(Deserialize, Debug, Clone, PartialEq)]
struct Check {
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: Option<String>,
}

/// Argo CD's expected health, from health_test.yaml.
#[derive(Deserialize, Debug, Clone)]
struct Expected {
    status: String,
    #[serde(default)]
    message: String,
}

/// One output line of gitops-check.
#[derive(Deserialize, Debug, Clone)]
struct Line {
    name: String,
    argocd: Check,
    kstatus: Check,
    #[serde(default)]
    expected: Option<Expected>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// deploy/argocd: health.lua, health_test.yaml, testdata/.
fn argocd_dir() -> PathBuf {
    repo().join("deploy/argocd")
}

/// The gitops-check binary, built (once per test process) by tests/gitops/build.sh.
fn gitops_check() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = repo().join("tests/gitops/build.sh");
        let started = Instant::now();
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "building gitops-check (tests/gitops: gopher-lua and kstatus, a Go module) failed; \
             it needs Go on PATH and the Go module proxy or a filled module cache:\n{stderr}"
        );
        if !stderr.is_empty() {
            eprintln!("{}(took {:?})", stderr, started.elapsed());
        }
        let path = String::from_utf8(out.stdout).expect("build.sh prints a path");
        PathBuf::from(path.trim())
    })
}

/// Run gitops-check with `args`, `stdin` as its input, and parse its lines.
fn run_check(args: &[&str], stdin: &str) -> Vec<Line> {
    let bin = gitops_check();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .expect("writing to gitops-check");
    let out = child.wait_with_output().expect("waiting for gitops-check");
    assert!(
        out.status.success(),
        "gitops-check {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Argo CD's and kstatus' reading of each object, in order, with the script as an argocd-cm
/// customization runs it (no `useOpenLibs`).
fn check_objects(objects: &[Value]) -> Vec<Line> {
    let lua = argocd_dir().join("health.lua");
    let input: String = objects.iter().map(|o| format!("{o}\n")).collect();
    let lines = run_check(&["--lua", lua.to_str().unwrap()], &input);
    assert_eq!(lines.len(), objects.len(), "one line per object");
    for l in &lines {
        assert!(
            l.argocd.error.is_none() && l.kstatus.error.is_none(),
            "{} could not be read: {l:?}",
            l.name
        );
    }
    lines
}

// ---------------------------------------------------------------------------------- fixtures

/// Every case the fixtures must hold, and what kstatus says of each (not part of Argo CD's
/// convention: asserted here to document Flux's reading of the same objects).
const FIXTURES: &[(&str, &str)] = &[
    ("testdata/progressing.yaml", "InProgress"),
    ("testdata/healthy.yaml", "Current"),
    ("testdata/degraded.yaml", "Failed"),
    ("testdata/rolling-back.yaml", "InProgress"),
    ("testdata/rolled-back.yaml", "Failed"),
    ("testdata/failed.yaml", "Failed"),
    ("testdata/paused.yaml", "InProgress"),
    ("testdata/no-status.yaml", "Current"),
    ("testdata/older-generation.yaml", "InProgress"),
];

#[test]
fn argocd_fixtures_read_as_health_test_yaml_says() {
    let dir = argocd_dir();
    let started = Instant::now();
    // As an argocd-cm customization runs (only base, table, package and a safe os), and as
    // Argo CD's own tests and built-in scripts run it (every standard library).
    for libs in [&[][..], &["--open-libs"][..]] {
        let mut args = vec!["--argocd-tests", dir.to_str().unwrap()];
        args.extend_from_slice(libs);
        let lines = run_check(&args, "");
        let listed: BTreeSet<&str> = lines.iter().map(|l| l.name.as_str()).collect();
        for (input, _) in FIXTURES {
            assert!(listed.contains(input), "health_test.yaml lacks {input}");
        }
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir.join("testdata"))
            .expect("deploy/argocd/testdata")
            .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        for f in &on_disk {
            assert!(
                listed.contains(f.as_str()),
                "{f} is not in health_test.yaml"
            );
        }
        for l in &lines {
            let want = l.expected.as_ref().unwrap();
            assert!(
                l.argocd.error.is_none(),
                "{} {libs:?}: {:?}",
                l.name,
                l.argocd
            );
            assert_eq!(
                (l.argocd.status.as_str(), l.argocd.message.as_str()),
                (want.status.as_str(), want.message.as_str()),
                "{} {libs:?}",
                l.name
            );
            if let Some((_, k)) = FIXTURES.iter().find(|(f, _)| *f == l.name) {
                assert_eq!(
                    l.kstatus.status, *k,
                    "kstatus of {}: {:?}",
                    l.name, l.kstatus
                );
            }
        }
    }
    eprintln!("fixtures checked in {:?}", started.elapsed());
}

// ------------------------------------------------------------------------------- live objects

/// Releases as the API server serves them (every field, as a GitOps tool reads them).
fn dynamic_releases(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &ApiResource::erase::<Release>(&()))
}

/// Every version of every Release in a namespace, as a watch delivers them: each status write
/// Rewind makes, and each spec change before Rewind has seen it.
struct Capture {
    seen: Arc<Mutex<Vec<(Instant, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    /// Start watching; returns once the watch is established.
    async fn start(client: kube::Client, namespace: &str) -> Capture {
        let api = dynamic_releases(client, namespace);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        let o = serde_json::to_value(&o).unwrap();
                        sink.lock().unwrap().push((Instant::now(), o));
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(secs(30), ready_rx)
            .await
            .expect("the watch of Releases did not start within 30 s")
            .expect("the watch task ended");
        Capture { seen, task }
    }

    /// Everything seen so far, each resourceVersion once.
    fn stop(self) -> Vec<Value> {
        self.task.abort();
        let mut versions = BTreeSet::new();
        let all = self.seen.lock().unwrap().clone();
        // How long each Release was seen without a status (the window in which kstatus reads it
        // as Current), as the watch delivered them.
        let mut created: BTreeMap<String, Instant> = BTreeMap::new();
        for (at, o) in &all {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if o["status"]["phase"].is_null() {
                created.entry(name).or_insert(*at);
            } else if let Some(first) = created.remove(&name) {
                eprintln!(
                    "Release {name}: first status {:?} after the watch saw it created",
                    at.duration_since(first)
                );
            }
        }
        all.into_iter()
            .map(|(_, o)| o)
            .filter(|o| versions.insert(o["metadata"]["resourceVersion"].to_string()))
            .collect()
    }
}

/// How a captured Release stands: its phase, or why it has none that counts yet.
fn state_of(o: &Value) -> String {
    let status = &o["status"];
    match status["phase"].as_str() {
        None => "no status".into(),
        Some(_) if status["observedGeneration"].as_i64() < o["metadata"]["generation"].as_i64() => {
            "older observedGeneration".into()
        }
        Some(p) => p.into(),
    }
}

fn ready_message(o: &Value) -> String {
    o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Argo CD's and kstatus' status for a Release in `state`, as deploy/argocd/health.lua and
/// the table at the top of this file say.
fn expected_for(state: &str) -> (&'static str, &'static str) {
    match state {
        "older observedGeneration" => ("Progressing", "InProgress"),
        "Progressing" | "RollingBack" => ("Progressing", "InProgress"),
        "Healthy" => ("Healthy", "Current"),
        "Degraded" | "RolledBack" | "Failed" => ("Degraded", "Failed"),
        "Paused" => ("Suspended", "InProgress"),
        other => panic!("no expectation for a Release in state {other}"),
    }
}

/// Check one captured Release: Argo CD and kstatus as the table says; the message Argo CD
/// shows is the Ready condition's, except for RolledBack (both versions) and an unobserved spec.
fn assert_reads_right(o: &Value, l: &Line) {
    let state = state_of(o);
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    let rv = o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    let what = format!("Release {name} in state {state} (resourceVersion {rv}): {l:?}");
    if state == "no status" {
        assert_eq!(l.argocd.status, "Progressing", "{what}");
        assert_eq!(
            l.argocd.message, "Waiting for Rewind to observe the Release",
            "{what}"
        );
        // kstatus reads it as Current (the table at the top); asserted in
        // a_release_before_and_after_rewind_first_sees_it.
        return;
    }
    let (argocd, kstatus) = expected_for(&state);
    assert_eq!(l.argocd.status, argocd, "Argo CD: {what}");
    assert_eq!(l.kstatus.status, kstatus, "kstatus: {what}");
    match state.as_str() {
        "RolledBack" => {
            let blocked = o["status"]["blocked"]["version"].as_str().expect("blocked");
            let running = o["status"]["version"].as_str().expect("version");
            assert_ne!(blocked, running, "{what}");
            assert!(
                l.argocd.message.contains(&format!("{blocked} is blocked"))
                    && l.argocd
                        .message
                        .starts_with(&format!("Rolled back to {running}:")),
                "Argo CD's message names the blocked version and the one running: {what}"
            );
        }
        "older observedGeneration" => {
            assert!(
                l.argocd
                    .message
                    .starts_with("Waiting for Rewind to observe generation"),
                "{what}"
            );
        }
        _ => {
            let ready = ready_message(o);
            let want = if ready.is_empty() {
                format!("Release is {state}")
            } else {
                ready
            };
            assert_eq!(l.argocd.message, want, "{what}");
        }
    }
}

/// Print, once per state, how Argo CD and kstatus read it (for people reading the log).
fn print_table(objects: &[Value], lines: &[Line]) -> BTreeMap<String, (Check, Check)> {
    let mut table = BTreeMap::new();
    for (o, l) in objects.iter().zip(lines) {
        table
            .entry(state_of(o))
            .or_insert_with(|| (l.argocd.clone(), l.kstatus.clone()));
    }
    for (state, (a, k)) in &table {
        eprintln!(
            "{state:26} Argo CD {:12} {:?}\n{:26} kstatus {:12} {:?}",
            a.status, a.message, "", k.status, k.message
        );
    }
    table
}

/// Keep the captured Releases in target/test-logs/<namespace>-releases.jsonl, one per line,
/// to read when a test fails or to turn into fixtures.
fn keep(f: &Fixture, objects: &[Value]) {
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("creating target/test-logs");
    let path = dir.join(format!("{}-releases.jsonl", f.ns.name()));
    let text: String = objects.iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    eprintln!("captured Releases: {}", path.display());
}

/// A Release `name` of version 1.0.0 on Deployment `target` running `image`, under `policy`.
async fn apply_named(f: &Fixture, name: &str, target: &str, image: &str, policy: &str) {
    let body = json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "Release", "metadata": {"name": name},
        "spec": {"version": "1.0.0", "target": {"kind": "Deployment", "name": target},
                 "images": [{"container": "app", "image": image}],
                 "policyRef": {"name": policy}}
    });
    f.releases
        .patch(
            name,
            &PatchParams::apply("gitops").force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap_or_else(|e| panic!("applying Release {name}: {e}"));
}

#[tokio::test]
async fn live_releases_read_right_in_every_phase() {
    let started = Instant::now();
    let f = Fixture::new("gitops_phases").await;
    let capture = Capture::start(f.ns.client(), f.ns.name()).await;

    // Degraded: a policy with automatic rollback off, and a release of it that crash-loops.
    let manual: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "RollbackPolicy",
        "metadata": {"name": "manual"},
        "spec": {"automatic": false, "readiness": {"timeout": format!("{READINESS_TIMEOUT}s"), "unreadyFor": "3s", "maxUnready": 0},
                 "crashLoop": {"restarts": 2}, "imagePull": {"failFor": "4s"}, "guardWindow": "2m"}
    }))
    .unwrap();
    f.ns.api::<RollbackPolicy>()
        .create(&PostParams::default(), &manual)
        .await
        .expect("creating policy manual");
    f.deployments
        .create(
            &PostParams::default(),
            &deployment("manual", 1, &[&loopback_image("0.9.0")]),
        )
        .await
        .expect("creating Deployment manual");
    // Failed: a Release whose Deployment does not exist.
    apply_named(&f, "orphan", "nowhere", &loopback_image("1.0.0"), "fast").await;

    // Progressing, then Healthy.
    f.shop_healthy_on_1_0_0().await;
    wait_for(
        &f.deployments,
        "manual",
        "Deployment manual rolled out",
        secs(60),
        deployment_is_rolled_out,
    )
    .await;
    apply_named(
        &f,
        "manual",
        "manual",
        &loopback_image("1.0.0-crashloop"),
        "manual",
    )
    .await;
    // A new spec (generation 2, not yet observed), RollingBack, RolledBack.
    f.ship_crashlooping("2.0.0").await;
    f.release_until("RolledBack", secs(120), |r| phase(r) == "RolledBack")
        .await;
    // Paused.
    f.apply_release(
        "2.0.0",
        &loopback_image("2.0.0-crashloop"),
        json!({"paused": true}),
    )
    .await;
    f.release_until("Paused", secs(30), |r| phase(r) == "Paused")
        .await;
    wait_for(
        &f.releases,
        "manual",
        "Degraded",
        secs(90),
        |r: &Release| phase(r) == "Degraded",
    )
    .await;
    wait_for(&f.releases, "orphan", "Failed", secs(30), |r: &Release| {
        phase(r) == "Failed"
    })
    .await;
    let objects = capture.stop();
    keep(&f, &objects);

    let lines = check_objects(&objects);
    for (o, l) in objects.iter().zip(&lines) {
        assert_reads_right(o, l);
    }
    let table = print_table(&objects, &lines);
    for state in [
        "Progressing",
        "Healthy",
        "RollingBack",
        "RolledBack",
        "Degraded",
        "Failed",
        "Paused",
        "older observedGeneration",
    ] {
        assert!(
            table.contains_key(state),
            "no Release was captured in state {state}; captured: {:?}",
            table.keys().collect::<Vec<_>>()
        );
    }
    eprintln!(
        "{} statuses of 3 Releases checked; test took {:?}",
        objects.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn a_release_before_and_after_rewind_first_sees_it() {
    let started = Instant::now();
    // No operator yet: the Release is as a GitOps tool finds it right after applying it.
    let ns = TestNamespace::new("gitops_unseen").await;
    install_crds(&ns.client()).await;
    ns.api::<k8s_openapi::api::apps::v1::Deployment>()
        .create(
            &PostParams::default(),
            &deployment("shop", 1, &[&loopback_image("0.9.0")]),
        )
        .await
        .expect("creating Deployment shop");
    let release: Release = serde_json::from_value(json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "Release", "metadata": {"name": "shop"},
        "spec": {"version": "1.0.0", "target": {"kind": "Deployment", "name": "shop"},
                 "images": [{"container": "app", "image": loopback_image("1.0.0")}]}
    }))
    .unwrap();
    ns.api::<Release>()
        .create(&PostParams::default(), &release)
        .await
        .expect("creating Release shop");
    let api = dynamic_releases(ns.client(), ns.name());
    let unseen =
        serde_json::to_value(api.get("shop").await.expect("reading Release shop")).unwrap();
    let l = &check_objects(std::slice::from_ref(&unseen))[0];
    assert_eq!(
        (l.argocd.status.as_str(), l.argocd.message.as_str()),
        ("Progressing", "Waiting for Rewind to observe the Release"),
        "{l:?}"
    );
    // The CRD defaults status to {observedGeneration: 0}: without it kstatus, finding no
    // observedGeneration and no condition, would assume a custom resource is Current, and
    // Flux would pass a Release Rewind never judged.
    assert_eq!(
        unseen["status"]["observedGeneration"], 0,
        "the API server gives a new Release its default status: {unseen}"
    );
    assert_eq!(l.kstatus.status, "InProgress", "{l:?}");

    // Rewind starts: its first status makes both read the Release as in progress.
    let _op = Operator::start(ns.name());
    let first = Instant::now();
    let mut seen = None;
    while first.elapsed() < secs(30) {
        let o = serde_json::to_value(api.get("shop").await.unwrap()).unwrap();
        if o["status"]["phase"].is_string() {
            seen = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.expect("Rewind wrote no status within 30 s of starting");
    eprintln!(
        "first status {:?} after the operator started",
        first.elapsed()
    );
    let l = &check_objects(std::slice::from_ref(&seen))[0];
    assert_eq!(l.argocd.status, "Progressing", "{l:?}");
    assert_eq!(l.kstatus.status, "InProgress", "{l:?}");
    eprintln!(
        "unseen Release: Argo CD and kstatus checked in {:?}",
        started.elapsed()
    );
}
