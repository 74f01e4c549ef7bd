//! Support for integration tests that run against the local test cluster (real kube-apiserver,
//! etcd, kube-controller-manager and kube-scheduler; KWOK playing the kubelets). Start it with
//! `make cluster-up`; `make test` sets `KUBECONFIG` for the tests. See docs/test-cluster.md.
//!
//! Use from a test file with `mod support;`. A test that needs the cluster and does not find it
//! panics with a message naming `make cluster-up`; it never skips.
//!
//! ```ignore
//! mod support;
//! use support::*;
//!
//! #[tokio::test]
//! async fn deployment_rolls_out() {
//!     let ns = TestNamespace::new("deployment_rolls_out").await;
//!     let deployments: Api<Deployment> = ns.api();
//!     deployments.create(&PostParams::default(), &deployment("web", 3, &["example.com/web:1.0"])).await.unwrap();
//!     wait_for(&deployments, "web", "rolled out", secs(60), deployment_is_rolled_out).await;
//!     ns.cleanup().await; // optional: dropping `ns` deletes it too
//! }
//! ```
#![allow(dead_code)]

pub mod audit;
pub mod chart;
pub mod prometheus;
pub mod registry;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Client, Config, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

#[allow(unused_imports)]
pub use k8s_openapi::api::apps::v1::ReplicaSet;
#[allow(unused_imports)]
pub use k8s_openapi::api::core::v1::Node;
#[allow(unused_imports)]
pub use kube::api::{ListParams, Patch, PatchParams};

/// What to do when there is no cluster; part of every "no cluster" panic message.
pub const CLUSTER_HINT: &str = "Start the local test cluster with `make cluster-up`, then \
     `export KUBECONFIG=$PWD/target/cluster/kubeconfig` (or run `make test`, which does both).";

/// Label put on every namespace made by [`TestNamespace`]; leftovers can be removed with
/// `kubectl delete namespace -l rewind.dev/test=true`.
pub const TEST_NAMESPACE_LABEL: &str = "rewind.dev/test";

/// Label of the fake nodes that KWOK manages (see tests/cluster/up.sh).
pub const FAKE_NODE_SELECTOR: &str = "type=kwok";

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ------------------------------------------------------------------------------------ client

/// A client for the test cluster named by `KUBECONFIG`. Panics, naming `make cluster-up`, when
/// `KUBECONFIG` is unset, unreadable, or the cluster does not answer.
pub async fn client() -> Client {
    let kubeconfig = std::env::var_os("KUBECONFIG");
    client_from(kubeconfig.as_deref()).await
}

/// Like [`client`], with the `KUBECONFIG` value passed in (so tests can try a missing file
/// without changing the process environment).
pub async fn client_from(kubeconfig: Option<&OsStr>) -> Client {
    let config = config_from(kubeconfig).await;
    connect(config, kubeconfig).await
}

/// The client configuration for a `KUBECONFIG` value (one path or several joined by ':').
pub async fn config_from(kubeconfig: Option<&OsStr>) -> Config {
    let value = match kubeconfig {
        Some(v) if !v.is_empty() => v,
        _ => panic!("no Kubernetes test cluster: KUBECONFIG is not set. {CLUSTER_HINT}"),
    };
    let shown = value.to_string_lossy();
    let mut merged: Option<Kubeconfig> = None;
    for path in std::env::split_paths(value) {
        let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
            panic!(
                "no Kubernetes test cluster: cannot read the kubeconfig {} (KUBECONFIG={shown}): {e}. {CLUSTER_HINT}",
                path.display()
            )
        });
        merged = Some(match merged {
            None => kc,
            Some(m) => m
                .merge(kc)
                .unwrap_or_else(|e| panic!("cannot merge kubeconfigs in KUBECONFIG={shown}: {e}")),
        });
    }
    let kc = merged.unwrap_or_else(|| {
        panic!("no Kubernetes test cluster: KUBECONFIG is empty. {CLUSTER_HINT}")
    });
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| {
            panic!("no usable Kubernetes test cluster in KUBECONFIG={shown}: {e}. {CLUSTER_HINT}")
        })
}

async fn connect(config: Config, kubeconfig: Option<&OsStr>) -> Client {
    let url = config.cluster_url.clone();
    let shown = kubeconfig
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let client = Client::try_from(config)
        .unwrap_or_else(|e| panic!("cannot build a client for the test cluster at {url} (KUBECONFIG={shown}): {e}. {CLUSTER_HINT}"));
    match tokio::time::timeout(secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!(
            "the Kubernetes test cluster at {url} (KUBECONFIG={shown}) does not answer: {e}. {CLUSTER_HINT}"
        ),
        Err(_) => panic!(
            "the Kubernetes test cluster at {url} (KUBECONFIG={shown}) did not answer within 10s. {CLUSTER_HINT}"
        ),
    }
}

// ----------------------------------------------------------------------------- namespaces

/// A fresh namespace for one test, named `<test name>-<random suffix>` and labelled
/// `rewind.dev/test=true`. It is deleted by [`TestNamespace::cleanup`] or, failing that, when
/// dropped (also when the test panics): `Drop` cannot be async, so it deletes from a short-lived
/// thread with its own runtime and client, which works inside `#[tokio::test]` of either
/// flavour. Set `REWIND_TEST_KEEP_NAMESPACES=1` to keep namespaces for debugging.
pub struct TestNamespace {
    name: String,
    client: Client,
    config: Config,
    cleaned_up: bool,
}

impl TestNamespace {
    /// Creates the namespace (and connects to the cluster from `KUBECONFIG`; panics with the
    /// `make cluster-up` hint if there is none).
    pub async fn new(test_name: &str) -> Self {
        let kubeconfig = std::env::var_os("KUBECONFIG");
        let config = config_from(kubeconfig.as_deref()).await;
        let client = connect(config.clone(), kubeconfig.as_deref()).await;
        let name = unique_name(test_name);
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": { TEST_NAMESPACE_LABEL: "true", "rewind.dev/test-name": dns_label(test_name, 63) },
            }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create test namespace {name}: {e}"));
        TestNamespace {
            name,
            client,
            config,
            cleaned_up: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An `Api` for a namespaced resource in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now (the cluster finishes deleting its contents in the background).
    pub async fn cleanup(mut self) {
        self.cleaned_up = true;
        if keep_namespaces() {
            eprintln!(
                "REWIND_TEST_KEEP_NAMESPACES=1: keeping namespace {}",
                self.name
            );
            return;
        }
        delete_namespace(self.client.clone(), &self.name).await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if keep_namespaces() {
            eprintln!(
                "REWIND_TEST_KEEP_NAMESPACES=1: keeping namespace {}",
                self.name
            );
            return;
        }
        // The test's runtime may be a current-thread one that is blocked right here, so the
        // delete runs on its own thread, runtime and client (built from the saved Config).
        let config = self.config.clone();
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("cannot delete test namespace {name}: no runtime: {e}"),
            };
            rt.block_on(async {
                match Client::try_from(config) {
                    Ok(client) => {
                        let _ =
                            tokio::time::timeout(secs(10), delete_namespace(client, &name)).await;
                    }
                    Err(e) => eprintln!("cannot delete test namespace {name}: {e}"),
                }
            });
        });
        let _ = handle.join();
    }
}

fn keep_namespaces() -> bool {
    std::env::var("REWIND_TEST_KEEP_NAMESPACES").is_ok_and(|v| v == "1")
}

async fn delete_namespace(client: Client, name: &str) {
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => eprintln!("cannot delete test namespace {name}: {e}"),
    }
}

/// `<test name as a DNS label, at most 50 chars>-<6 random base-36 chars>`.
pub fn unique_name(test_name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    let mut n = h.finish();
    let mut suffix = String::new();
    for _ in 0..6 {
        suffix.push(char::from_digit((n % 36) as u32, 36).unwrap());
        n /= 36;
    }
    let prefix = dns_label(test_name, 50);
    if prefix.is_empty() {
        format!("test-{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

/// Lowercase letters, digits and single '-', no leading/trailing '-', at most `max` chars.
fn dns_label(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= max {
            break;
        }
    }
    out.trim_end_matches('-').to_string()
}

// ---------------------------------------------------------------------------------- waiting

/// Watches the named object until `condition` holds and returns it. On timeout panics with
/// `description` and the last state seen (the object's `status` as JSON), so a failed test
/// says what it was waiting for and what it saw instead.
pub async fn wait_for<K, F>(
    api: &Api<K>,
    name: &str,
    description: &str,
    timeout: Duration,
    mut condition: F,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
    K::DynamicType: Default,
    F: FnMut(&K) -> bool,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = pin!(watcher::watch_object(api.clone(), name).default_backoff());
    let mut last: Option<K> = None;
    let mut seen = false;
    let mut last_error: Option<String> = None;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Some(obj)))) => {
                seen = true;
                if condition(&obj) {
                    return obj;
                }
                last = Some(obj);
            }
            Ok(Some(Ok(None))) => last = None,
            Ok(Some(Err(e))) => last_error = Some(e.to_string()),
            Ok(None) => panic!("the watch of {kind} {name} ended while waiting for: {description}"),
            Err(_) => {
                let state = match &last {
                    Some(obj) => {
                        format!("last seen status of {kind} {name}:\n{}", status_json(obj))
                    }
                    None if seen => format!("{kind} {name} was deleted"),
                    None => format!("{kind} {name} was never seen (does it exist?)"),
                };
                let err = last_error
                    .map(|e| format!("\nlast watch error: {e}"))
                    .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {kind} {name}: {description}\n{state}{err}"
                );
            }
        }
    }
}

/// Watches the named object for `duration` and panics (with `what` and the object's status)
/// if `condition` ever holds in that time; for "this must not happen" checks.
pub async fn expect_never<K, F>(
    api: &Api<K>,
    name: &str,
    what: &str,
    duration: Duration,
    mut condition: F,
) where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
    K::DynamicType: Default,
    F: FnMut(&K) -> bool,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let deadline = tokio::time::Instant::now() + duration;
    let mut stream = pin!(watcher::watch_object(api.clone(), name).default_backoff());
    while let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await {
        match next {
            Some(Ok(Some(obj))) if condition(&obj) => {
                panic!(
                    "{kind} {name}: {what}, which must not happen (watched for {duration:?}); status:\n{}",
                    status_json(&obj)
                )
            }
            Some(_) => {}
            None => panic!("the watch of {kind} {name} ended early"),
        }
    }
}

/// Watches all objects matching `label_selector` until `condition` holds for the current set
/// (sorted by name) and returns that set. On timeout panics with `description` and the status
/// of every object seen last.
pub async fn wait_for_all<K, F>(
    api: &Api<K>,
    label_selector: &str,
    description: &str,
    timeout: Duration,
    mut condition: F,
) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
    K::DynamicType: Default,
    F: FnMut(&[K]) -> bool,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let deadline = tokio::time::Instant::now() + timeout;
    let cfg = watcher::Config::default().labels(label_selector);
    let mut stream = pin!(watcher::watcher(api.clone(), cfg).default_backoff());
    let mut current: BTreeMap<String, K> = BTreeMap::new();
    let mut relist: BTreeMap<String, K> = BTreeMap::new();
    let mut last_error: Option<String> = None;
    loop {
        let check = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(event))) => match event {
                watcher::Event::Init => {
                    relist.clear();
                    false
                }
                watcher::Event::InitApply(obj) => {
                    relist.insert(obj.name_any(), obj);
                    false
                }
                watcher::Event::InitDone => {
                    current = std::mem::take(&mut relist);
                    true
                }
                watcher::Event::Apply(obj) => {
                    current.insert(obj.name_any(), obj);
                    true
                }
                watcher::Event::Delete(obj) => {
                    current.remove(&obj.name_any());
                    true
                }
            },
            Ok(Some(Err(e))) => {
                last_error = Some(e.to_string());
                false
            }
            Ok(None) => panic!(
                "the watch of {kind} ({label_selector}) ended while waiting for: {description}"
            ),
            Err(_) => {
                let mut state = String::new();
                for (name, obj) in &current {
                    state.push_str(&format!("--- {kind} {name}:\n{}\n", status_json(obj)));
                }
                if current.is_empty() {
                    state.push_str(&format!("(no {kind} matching {label_selector} seen)\n"));
                }
                let err = last_error
                    .map(|e| format!("last watch error: {e}\n"))
                    .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {kind}s matching {label_selector}: {description}\nlast seen:\n{state}{err}"
                );
            }
        };
        if check {
            let objs: Vec<K> = current.values().cloned().collect();
            if condition(&objs) {
                return objs;
            }
        }
    }
}

/// The object's `status` (or the whole object if it has none) as pretty JSON.
pub fn status_json<K: Serialize>(obj: &K) -> String {
    let value = serde_json::to_value(obj).unwrap_or_default();
    let status = value.get("status").cloned().unwrap_or(value);
    serde_json::to_string_pretty(&status).unwrap_or_default()
}

// --------------------------------------------------------------------------------- builders

/// Container names for `images`: "app" for the first, "sidecar-1", "sidecar-2", ... after.
pub fn container_name(index: usize) -> String {
    if index == 0 {
        "app".to_string()
    } else {
        format!("sidecar-{index}")
    }
}

fn containers(images: &[&str]) -> serde_json::Value {
    assert!(!images.is_empty(), "a pod needs at least one image");
    images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({ "name": container_name(i), "image": image }))
        .collect()
}

/// A Deployment `name` with `replicas` pods, one container per image, selected by `app=<name>`.
pub fn deployment(name: &str, replicas: i32, images: &[&str]) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": containers(images) },
            },
        },
    }))
    .unwrap()
}

/// A Job `name` running `image` once (`restartPolicy: Never`) with the given `backoffLimit`.
pub fn job(name: &str, image: &str, backoff_limit: i32) -> Job {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "restartPolicy": "Never", "containers": containers(&[image]) },
            },
        },
    }))
    .unwrap()
}

/// A bare Pod `name` with one container per image and the given annotations (for example the
/// `sim.rewind.dev/...` delay overrides of tests/cluster/kwok/stages.yaml).
pub fn pod(name: &str, images: &[&str], annotations: &[(&str, &str)]) -> Pod {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": name }, "annotations": annotations },
        "spec": { "containers": containers(images) },
    }))
    .unwrap()
}

// ------------------------------------------------------------------------------- predicates

/// Status ("True"/"False"/"Unknown") of the pod condition `type_`, if present.
pub fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready") == Some("True")
}

pub fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

pub fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

pub fn waiting_reason(cs: &ContainerStatus) -> Option<&str> {
    cs.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

pub fn is_running(cs: &ContainerStatus) -> bool {
    cs.state.as_ref().is_some_and(|s| s.running.is_some())
}

/// The Deployment controller has seen the latest spec and every replica is updated, ready and
/// available, with condition Available=True.
pub fn deployment_is_rolled_out(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&d.spec, &d.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    let available = status.conditions.as_ref().is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    });
    status.observed_generation >= d.metadata.generation
        && status.replicas == Some(want)
        && status.updated_replicas == Some(want)
        && status.ready_replicas == Some(want)
        && status.available_replicas == Some(want)
        && available
}

/// The Job has condition `type_` (e.g. "Complete", "Failed") with status True.
pub fn job_has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

// --------------------------------------------------------------------------- image digests

/// The `imageID` the simulated kubelet (tests/cluster/kwok/stages.yaml) reports for `image`:
/// `docker-pullable://<repo>@sha256:<digest>`, where `<repo>` is the image without tag and
/// digest, and `<digest>` is the one in the reference or else sha256 of the whole reference.
pub fn simulated_image_id(image: &str) -> String {
    let (name, digest) = match image.split_once("@sha256:") {
        Some((name, digest)) => (name, digest.to_string()),
        None => (image, sha256_hex(image.as_bytes())),
    };
    let name = name.split('@').next().unwrap_or(name);
    // Strip a tag: a ':' after the last '/' (a ':' before it is a registry port).
    let repo = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    format!("docker-pullable://{repo}@sha256:{digest}")
}

/// The digest part (hex after "sha256:") of an imageID or image reference.
pub fn digest_of(image_or_id: &str) -> Option<&str> {
    image_or_id.split_once("@sha256:").map(|(_, d)| d)
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A kubeconfig for `token` (a ServiceAccount's, from a TokenRequest), against the test
/// cluster, written to target/test-logs/: to act as someone with less than admin rights.
pub async fn kubeconfig_with_token(name: &str, token: &str) -> std::path::PathBuf {
    let path = std::env::var_os("KUBECONFIG").expect("KUBECONFIG");
    let admin = kube::config::Kubeconfig::read_from(std::env::split_paths(&path).next().unwrap())
        .expect("reading the admin kubeconfig");
    let cluster = admin.clusters[0].cluster.clone().expect("a cluster entry");
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
            "certificate-authority": cluster.certificate_authority,
        }}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
        "current-context": "test",
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&file, serde_json::to_string_pretty(&kc).unwrap()).unwrap();
    file
}
