//! Running the real `rewind` operator against the local cluster in integration tests: the CRDs
//! installed, one operator child process per test scoped to the test's namespace (so tests can
//! run side by side and kill or restart their operator), and helpers to read Releases.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::{
    api::events::v1::Event,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use rewind::api::{Release, RollbackPolicy};

use crate::support::{secs, wait_for};

/// Install (or update) both CRDs with server-side apply and wait until they are Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [rewind::api::release_crd(), RollbackPolicy::crd()] {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("rewind-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
        wait_for(
            &crds,
            &name,
            "CRD Established",
            secs(30),
            |c: &CustomResourceDefinition| {
                c.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            },
        )
        .await;
    }
}

/// A `rewind run --namespace <ns>` child process, killed on drop. Its log goes to
/// target/test-logs/<ns>-<n>.log and its tail is printed when a test fails.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
}

impl Operator {
    /// Start an operator for `namespace`.
    pub fn start(namespace: &str) -> Operator {
        Self::start_with(namespace, &[])
    }

    /// Start one with extra environment (test faults).
    pub fn start_with(namespace: &str, env: &[(&str, &str)]) -> Operator {
        Self::start_with_args(namespace, &[], env)
    }

    /// Start one that exits (code 75) right after it writes a rollback in phase `phase`, before
    /// acting on it: the test fault `REWIND_TEST_EXIT_AFTER_PHASE`.
    pub async fn start_exiting_after_phase(namespace: &str, phase: &str) -> Operator {
        Self::start_with_fault(namespace, "REWIND_TEST_EXIT_AFTER_PHASE", phase).await
    }

    /// Start one that exits (code 75) right after the Deployment patch of a rollback: the test
    /// fault `REWIND_TEST_EXIT_AFTER_RESTORE`.
    pub async fn start_exiting_after_restore(namespace: &str) -> Operator {
        Self::start_with_fault(namespace, "REWIND_TEST_EXIT_AFTER_RESTORE", "1").await
    }

    /// Start one with test fault `var=value` armed. Only a binary built with the `test-faults`
    /// feature has the faults (one without would ignore the variable and never exit), so this
    /// panics, saying how to build it, unless the operator logs the fault as armed.
    async fn start_with_fault(namespace: &str, var: &str, value: &str) -> Operator {
        Self::start_with_fault_args(namespace, &[], var, value).await
    }

    /// Start one with extra arguments that pauses `pause` (a Go duration) inside the reconcile
    /// right after it writes a rollback in phase `phase`, then goes on: the test fault
    /// `REWIND_TEST_PAUSE_AFTER_PHASE`. It logs `test fault: pausing` when it gets there.
    pub async fn start_pausing_after_phase(
        namespace: &str,
        args: &[&str],
        phase: &str,
        pause: &str,
    ) -> Operator {
        let value = format!("{phase}:{pause}");
        Self::start_with_fault_args(namespace, args, "REWIND_TEST_PAUSE_AFTER_PHASE", &value).await
    }

    /// Wait until the log has a line containing `needle`; panics after `timeout`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.log_lines(needle).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator did not log {needle:?} within {timeout:?}; log: {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start_with_fault_args(
        namespace: &str,
        args: &[&str],
        var: &str,
        value: &str,
    ) -> Operator {
        let how = format!(
            "run the integration tests with `cargo test --features test-faults` (`make test` \
             does): {var} is compiled into the operator only with that feature"
        );
        if cfg!(not(feature = "test-faults")) {
            panic!("this test needs the operator's test fault hook: {how}");
        }
        let mut op = Self::start_with_args(namespace, args, &[(var, value)]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while op.log_lines("test fault armed").is_empty() {
            if let Some(status) = op.child.try_wait().expect("polling the operator") {
                panic!(
                    "the operator exited ({status}) before arming its test fault; log: {}",
                    op.log.display()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator never logged `test fault armed` (log: {}): {how}",
                op.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        op
    }

    /// Start one with extra arguments to `rewind run` and extra environment.
    pub fn start_with_args(namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Operator {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        std::fs::create_dir_all(&dir).expect("creating target/test-logs");
        let mut n = 0;
        let log = loop {
            let p = dir.join(format!("{namespace}-{n}.log"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let file = std::fs::File::create(&log).expect("creating operator log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rewind"));
        cmd.args([
            "run",
            "--namespace",
            namespace,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("RUST_LOG", "info,rewind=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting the rewind binary");
        Operator { child, log }
    }

    /// Wait for the process to exit by itself and return its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the operator") {
                return status.code();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "operator did not exit within {timeout:?}; log: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kill the process now (SIGKILL: no chance to tidy up, like a crashed pod).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send `signal` (TERM, STOP, CONT, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// Whether the process has exited, and with what code.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child
            .try_wait()
            .expect("polling the operator")
            .map(|s| s.code())
    }

    /// The body of GET /readyz ("ready: leading", "ready: standby: ..."), or None when the
    /// operator does not answer.
    pub fn readyz_body(&self) -> Option<String> {
        let reply = self.http_get("/readyz").ok()?;
        Some(reply.split("\r\n\r\n").nth(1)?.trim().to_owned())
    }

    /// GET /metrics from the running operator (its port is in its log).
    pub fn metrics(&self) -> String {
        self.http_get("/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics: {e}; log: {}", self.log.display()))
    }

    /// The HTTP status of GET /readyz, or None when the operator does not answer (yet).
    pub fn readyz(&self) -> Option<u16> {
        let reply = self.http_get("/readyz").ok()?;
        reply.split_whitespace().nth(1)?.parse().ok()
    }

    /// The raw HTTP/1.0 reply to GET `path` on the operator's metrics address (waiting up to
    /// 10 s for it to log that address).
    fn http_get(&self, path: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let found = self.log_lines("serving /metrics").iter().find_map(|l| {
                let plain = strip_ansi(l);
                plain
                    .split("addr=")
                    .nth(1)
                    .map(|a| a.split_whitespace().next().unwrap_or("").to_owned())
            });
            match found {
                Some(a) => break a,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                None => panic!(
                    "the operator never logged its metrics address; log: {}",
                    self.log.display()
                ),
            }
        };
        let mut conn = std::net::TcpStream::connect(&addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        conn.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Lines of its log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(needle))
            .collect()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- last lines of {}:", self.log.display());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Text without ANSI colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A condition of a Release by type.
pub fn condition<'a>(r: &'a Release, type_: &str) -> Option<&'a Condition> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `type_` is `status` on the Release.
pub fn has_condition(r: &Release, type_: &str, status: &str) -> bool {
    condition(r, type_).is_some_and(|c| c.status == status)
}

/// The Release's phase as text (`"-"` before the first status).
pub fn phase(r: &Release) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("-".into(), |p| format!("{p:?}"))
}

/// Reason and note of the Events recorded about object `name`, oldest first.
pub async fn events(client: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    event_objects(client, namespace, name)
        .await
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// The Events recorded about Rewind's object `name` (a Release or a RollbackPolicy), oldest
/// first: not those about a Deployment, which often has the Release's name (Rewind tells a
/// rollback on both).
pub async fn event_objects(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    events_where(client, namespace, name, |kind| kind != Some("Deployment")).await
}

/// The Events recorded about the object of `kind` named `name`, oldest first.
pub async fn event_objects_of(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Vec<Event> {
    events_where(client, namespace, name, |k| k == Some(kind)).await
}

async fn events_where(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: impl Fn(Option<&str>) -> bool,
) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    // Filtered here: the test namespace holds few Events, and field selectors on
    // events.k8s.io differ between versions.
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(name) && kind(r.kind.as_deref()))
        })
        .collect();
    list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    list
}

/// How many times Events with `reason` were published about `name`: an Event the recorder
/// aggregated counts as its `series.count`.
pub async fn times_published(client: &Client, namespace: &str, name: &str, reason: &str) -> i32 {
    event_objects(client, namespace, name)
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

/// The value of one series (name and labels exactly as rendered) in /metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Wait until Events with every reason in `wanted` have been recorded about `name` (Events are
/// published just after the status write a test may have waited for), and return all of them.
pub async fn wait_for_events(
    client: &Client,
    namespace: &str,
    name: &str,
    wanted: &[&str],
    timeout: Duration,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = events(client, namespace, name).await;
        if wanted.iter().all(|w| all.iter().any(|(r, _)| r == w)) {
            return all;
        }
        if tokio::time::Instant::now() >= deadline {
            let reasons: Vec<&str> = all.iter().map(|(r, _)| r.as_str()).collect();
            panic!(
                "Events {wanted:?} about {name} not all recorded within {timeout:?}; got {reasons:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pod template's first container image and Rewind revision of a Deployment.
pub fn template_of(d: &k8s_openapi::api::apps::v1::Deployment) -> (String, Option<String>) {
    let t = &d.spec.as_ref().expect("spec").template;
    let image = t
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let revision = t
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("rewind.dev/revision").cloned());
    (image, revision)
}

/// A test namespace with the CRDs installed, a RollbackPolicy `fast` with short timeouts, and
/// an operator watching the namespace. The Release is `shop`, its Deployment `shop` (3
/// replicas, container `app`).
pub struct Fixture {
    pub ns: crate::support::TestNamespace,
    pub op: Operator,
    pub releases: Api<Release>,
    pub deployments: Api<k8s_openapi::api::apps::v1::Deployment>,
}

/// The readiness timeout of policy `fast`: long enough for a 3-replica rolling update on a
/// loaded 2-core machine (several tests, each with its own operator, run at once).
pub const READINESS_TIMEOUT: u64 = 20;

impl Fixture {
    /// The usual fixture.
    pub async fn new(test: &str) -> Fixture {
        Self::with(test, &[], serde_json::json!({})).await
    }

    /// With extra operator arguments and extra fields for the policy's spec.
    pub async fn with(
        test: &str,
        operator_args: &[&str],
        policy_extra: serde_json::Value,
    ) -> Fixture {
        Self::with_operator(test, policy_extra, async |ns: String| {
            Operator::start_with_args(&ns, operator_args, &[])
        })
        .await
    }

    /// With extra fields for the policy's spec and the operator `start` starts for the
    /// namespace it is given.
    pub async fn with_operator(
        test: &str,
        policy_extra: serde_json::Value,
        start: impl AsyncFnOnce(String) -> Operator,
    ) -> Fixture {
        use kube::api::PostParams;
        let ns = crate::support::TestNamespace::new(test).await;
        install_crds(&ns.client()).await;
        let mut spec = serde_json::json!({
            "readiness": {"timeout": format!("{READINESS_TIMEOUT}s"), "unreadyFor": "3s", "maxUnready": 0},
            "crashLoop": {"restarts": 2},
            "imagePull": {"failFor": "4s"},
            "guardWindow": "2m",
            "cooldown": "1s"
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), policy_extra.as_object()) {
            s.extend(e.clone());
        }
        let policy: RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rewind.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "fast"}, "spec": spec
        }))
        .unwrap();
        ns.api::<RollbackPolicy>()
            .create(&PostParams::default(), &policy)
            .await
            .expect("creating the policy");
        let op = start(ns.name().to_owned()).await;
        Fixture {
            releases: ns.api(),
            deployments: ns.api(),
            op,
            ns,
        }
    }

    /// Deployment `shop` running `image`, optionally with pull secrets.
    pub async fn create_deployment(&self, image: &str) {
        self.create_deployment_with(image, &[]).await
    }

    /// Deployment `shop` running `image` with `imagePullSecrets`.
    pub async fn create_deployment_with(&self, image: &str, pull_secrets: &[&str]) {
        use kube::api::PostParams;
        let mut d = crate::support::deployment("shop", 3, &[image]);
        if !pull_secrets.is_empty() {
            let spec = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
            spec.image_pull_secrets = Some(
                pull_secrets
                    .iter()
                    .map(|n| k8s_openapi::api::core::v1::LocalObjectReference {
                        name: n.to_string(),
                    })
                    .collect(),
            );
        }
        self.deployments
            .create(&PostParams::default(), &d)
            .await
            .expect("creating Deployment shop");
    }

    /// Apply the Release's spec as a person or a GitOps tool would (its own field manager).
    pub async fn apply_release(&self, version: &str, image: &str, extra: serde_json::Value) {
        let mut spec = serde_json::json!({
            "version": version,
            "target": {"kind": "Deployment", "name": "shop"},
            "images": [{"container": "app", "image": image}],
            "policyRef": {"name": "fast"}
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let body = serde_json::json!({"apiVersion": "rewind.dev/v1alpha1", "kind": "Release", "metadata": {"name": "shop"}, "spec": spec});
        self.releases
            .patch(
                "shop",
                &PatchParams::apply("gitops").force(),
                &Patch::Apply(body),
            )
            .await
            .expect("applying Release shop");
    }

    /// Apply Release `shop` at `version` with an image whose pods crash-loop (the simulated
    /// nodes' `crashloop` marker): a bad release, for a rollback to follow.
    pub async fn ship_crashlooping(&self, version: &str) {
        let image = loopback_image(&format!("{version}-crashloop"));
        self.apply_release(version, &image, serde_json::json!({}))
            .await;
    }

    /// Set (or with None, remove) an annotation.
    pub async fn annotate<K>(&self, api: &Api<K>, name: &str, key: &str, value: Option<&str>)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("annotating");
    }

    /// Wait until Release shop satisfies `f`.
    pub async fn release_until(
        &self,
        what: &str,
        timeout: Duration,
        f: impl FnMut(&Release) -> bool,
    ) -> Release {
        wait_for(&self.releases, "shop", what, timeout, f).await
    }

    /// Wait until Deployment shop satisfies `f`.
    pub async fn deployment_until(
        &self,
        what: &str,
        timeout: Duration,
        f: impl FnMut(&k8s_openapi::api::apps::v1::Deployment) -> bool,
    ) -> k8s_openapi::api::apps::v1::Deployment {
        wait_for(&self.deployments, "shop", what, timeout, f).await
    }

    /// Wait until Deployment shop runs every container by digest and has rolled that out.
    /// Rewind pins a revision deployed by tag (registry unreachable) right after it judges it
    /// Healthy, from the pods' imageID: a test that reads the Deployment as "what Healthy
    /// runs" must wait for that write too, or it races it.
    pub async fn pinned_and_rolled_out(&self) -> k8s_openapi::api::apps::v1::Deployment {
        self.deployment_until("every image pinned and rolled out", secs(60), |d| {
            let pinned = d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .is_some_and(|p| {
                    p.containers
                        .iter()
                        .all(|c| c.image.as_deref().is_some_and(|i| i.contains("@sha256:")))
                });
            pinned && crate::support::deployment_is_rolled_out(d)
        })
        .await
    }

    /// Wait until Deployment shop's template carries Rewind revision `revision`.
    pub async fn revision_applied(
        &self,
        revision: i64,
        timeout: Duration,
    ) -> k8s_openapi::api::apps::v1::Deployment {
        let want = revision.to_string();
        let what = format!("revision {revision} applied");
        self.deployment_until(&what, timeout, |d| {
            template_of(d).1.as_deref() == Some(want.as_str())
        })
        .await
    }

    /// One series of the operator's /metrics (0 when it has not been rendered yet).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.op.metrics(), series).unwrap_or(0.0)
    }

    /// The operator's reconcile count from its /metrics.
    pub fn reconciles(&self) -> u64 {
        let text = self.op.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix("rewind_reconciles_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no rewind_reconciles_total in /metrics:\n{text}"))
    }
}

/// On loopback, where nothing listens: the operator's registry lookups are refused at once.
pub const LOOPBACK_REPO: &str = "127.0.0.1:9/shop/api";

/// `LOOPBACK_REPO:<tag>`.
pub fn loopback_image(tag: &str) -> String {
    format!("{LOOPBACK_REPO}:{tag}")
}

/// The status of a Release (panics, naming it, when it has none yet).
pub fn status_of(r: &Release) -> &rewind::api::ReleaseStatus {
    r.status
        .as_ref()
        .unwrap_or_else(|| panic!("Release {} has no status yet", r.name_any()))
}

impl Fixture {
    /// Deployment shop runs 0.9.0; Release shop 1.0.0 is Healthy on revision 1.
    pub async fn shop_healthy_on_1_0_0(&self) -> Release {
        self.create_deployment(&loopback_image("0.9.0")).await;
        self.deployment_until(
            "0.9.0 rolled out",
            Duration::from_secs(60),
            crate::support::deployment_is_rolled_out,
        )
        .await;
        self.apply_release("1.0.0", &loopback_image("1.0.0"), serde_json::json!({}))
            .await;
        self.release_until("Healthy on revision 1", Duration::from_secs(60), |r| {
            phase(r) == "Healthy" && status_of(r).revision == Some(1)
        })
        .await
    }

    /// `n` more Deployments (`app-<i>`, one replica) with a Release each (label
    /// `fleet=rewind-test`, policy `fast`), all Healthy: the many objects an operator must
    /// list and judge after a restart, not just the one a test looks at.
    pub async fn fleet(&self, n: usize) {
        use kube::api::PostParams;
        // Their own policy, patient with a control plane that is slow to report many rollouts
        // at once on a loaded machine: the fleet is there to be listed, not judged quickly.
        let policy: RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rewind.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "fleet"},
            "spec": {"readiness": {"timeout": "10m"}, "guardWindow": "0s"}
        }))
        .unwrap();
        self.ns
            .api::<RollbackPolicy>()
            .create(&PostParams::default(), &policy)
            .await
            .expect("creating the fleet's policy");
        for i in 0..n {
            let name = format!("app-{i}");
            let d = crate::support::deployment(&name, 1, &[&loopback_image("1.0.0")]);
            self.deployments
                .create(&PostParams::default(), &d)
                .await
                .unwrap_or_else(|e| panic!("creating Deployment {name}: {e}"));
            let r: Release = serde_json::from_value(serde_json::json!({
                "apiVersion": "rewind.dev/v1alpha1", "kind": "Release",
                "metadata": {"name": name, "labels": {"fleet": "rewind-test"}},
                "spec": {"version": "1.0.0", "target": {"kind": "Deployment", "name": name},
                         "images": [{"container": "app", "image": loopback_image("1.0.0")}],
                         "policyRef": {"name": "fleet"}}
            }))
            .unwrap();
            self.releases
                .create(&PostParams::default(), &r)
                .await
                .unwrap_or_else(|e| panic!("creating Release {name}: {e}"));
        }
        crate::support::wait_for_all(
            &self.releases,
            "fleet=rewind-test",
            &format!("all {n} fleet Releases Healthy"),
            Duration::from_secs(300),
            |all: &[Release]| all.len() == n && all.iter().all(|r| phase(r) == "Healthy"),
        )
        .await;
    }

    /// Replace the running operator with a new one (the old one is killed first, SIGKILL) and
    /// return how long the new one took to answer /readyz with 200.
    pub async fn restart_operator(&mut self, new: impl FnOnce(&str) -> Operator) -> Duration {
        self.op.kill();
        let started = std::time::Instant::now();
        self.op = new(self.ns.name());
        self.until_ready(started).await
    }

    /// Wait (up to 30 s) for /readyz 200 and return the time since `started`.
    pub async fn until_ready(&self, started: std::time::Instant) -> Duration {
        loop {
            if self.op.readyz() == Some(200) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the operator did not answer /readyz with 200 within 30 s; log: {}",
                self.op.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Operator {
    /// Start one with extra arguments that pauses `pause` (a Go duration) right after it
    /// creates a migration Job, before anything else (a test SIGKILLs it then): the test fault
    /// `REWIND_TEST_PAUSE_AFTER_JOB`.
    pub async fn start_pausing_after_job(namespace: &str, args: &[&str], pause: &str) -> Operator {
        Self::start_with_fault_args(namespace, args, "REWIND_TEST_PAUSE_AFTER_JOB", pause).await
    }
}

/// Release `shop` of the fixture's namespace as raw JSON: tests read fields by name, as a
/// person reading `kubectl get -o json` would.
pub fn release_api(f: &Fixture) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        f.ns.client(),
        f.ns.name(),
        &kube::api::ApiResource::erase::<Release>(&()),
    )
}

/// Release shop as the API server holds it.
pub async fn release_json(f: &Fixture) -> serde_json::Value {
    let r = release_api(f)
        .get("shop")
        .await
        .expect("reading Release shop");
    serde_json::to_value(r).unwrap()
}

/// Watch Release shop (as JSON) until `pred` holds; on timeout panic with `what` and the last
/// annotations and status seen.
pub async fn until(
    f: &Fixture,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream =
        std::pin::pin!(watcher::watch_object(release_api(f), "shop").default_backoff());
    let mut last = serde_json::Value::Null;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Some(obj)))) => {
                let v = serde_json::to_value(obj).unwrap();
                if pred(&v) {
                    return v;
                }
                last = v;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch of Release shop ended while waiting for: {what}"),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for Release shop: {what}\nlast seen:\n{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "annotations": last["metadata"]["annotations"],
                    "status": last["status"],
                }))
                .unwrap_or_default()
            ),
        }
    }
}

/// The phase of the Release's current rollback, or "-".
pub fn rollback_phase(v: &serde_json::Value) -> &str {
    v["status"]["rollback"]["phase"].as_str().unwrap_or("-")
}

/// Deployment shop (0.9.0) rolled out, then Release shop 1.0.0 (with `extra` in its spec)
/// Healthy on revision 1, pinned and rolled out.
pub async fn healthy_v1(f: &Fixture, extra: serde_json::Value) -> serde_json::Value {
    f.create_deployment(&loopback_image("0.9.0")).await;
    f.deployment_until(
        "0.9.0 rolled out",
        secs(60),
        crate::support::deployment_is_rolled_out,
    )
    .await;
    ship_healthy(f, "1.0.0", 1, extra).await
}

/// Apply `version` (an image whose pods become Ready) and wait until it is Healthy as
/// `revision`, and until Rewind's pin that follows Healthy (tag → digest, from the pods) is
/// rolled out: what a test reads next is what Healthy runs.
pub async fn ship_healthy(
    f: &Fixture,
    version: &str,
    revision: i64,
    extra: serde_json::Value,
) -> serde_json::Value {
    f.apply_release(version, &loopback_image(version), extra)
        .await;
    let v = until(
        f,
        &format!("{version} Healthy on revision {revision}"),
        secs(90),
        |v| v["status"]["phase"] == "Healthy" && v["status"]["revision"] == revision,
    )
    .await;
    f.pinned_and_rolled_out().await;
    v
}
