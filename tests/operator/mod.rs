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
    for crd in [Release::crd(), RollbackPolicy::crd()] {
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

/// Reasons of the Events recorded about object `name`, oldest first.
pub async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    // Filtered here: the test namespace holds few Events, and field selectors on
    // events.k8s.io differ between versions.
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    list.into_iter().filter_map(|e| e.reason).collect()
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
