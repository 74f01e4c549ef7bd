//! The local API server's audit log (tests/cluster/up.sh writes it, Metadata level, JSON, to
//! target/cluster/logs/audit.log): what a client really sent and what it was answered.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::Value;

/// The audit log's path: beside the kubeconfig the tests use (target/cluster/logs/audit.log).
pub fn path() -> PathBuf {
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cluster/kubeconfig")
        });
    kubeconfig
        .parent()
        .map(|d| d.join("logs/audit.log"))
        .unwrap_or_else(|| PathBuf::from("target/cluster/logs/audit.log"))
}

/// Every completed request in the audit log (stage ResponseComplete).
pub fn events() -> Vec<Value> {
    let p = path();
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "cannot read the API server's audit log {}: {e}. The local cluster writes it unless \
             started with REWIND_CLUSTER_AUDIT=0; {}",
            p.display(),
            super::CLUSTER_HINT
        )
    });
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .collect()
}

/// Wait (up to 60 s) until the audit log has caught up with now: a ConfigMap created in
/// `namespace` shows in it. The API server writes the log in batches.
pub async fn flushed(client: &kube::Client, namespace: &str) {
    let name = super::unique_name("audit-marker");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &cm)
        .await
        .expect("creating the audit marker ConfigMap");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = events().iter().any(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "configmaps"
                && e["objectRef"]["name"] == name.as_str()
        });
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the audit log {} did not show the marker ConfigMap {name} within 60 s",
            path().display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether an audit event is a write (anything but get, list, watch).
pub fn is_write(e: &Value) -> bool {
    !matches!(e["verb"].as_str(), Some("get" | "list" | "watch"))
}

/// A short description of an audit event for assertion messages.
pub fn describe(e: &Value) -> String {
    format!(
        "{} {} {}/{} {}/{} -> {} at {} by {}",
        e["verb"].as_str().unwrap_or("?"),
        e["objectRef"]["resource"].as_str().unwrap_or("?"),
        e["objectRef"]["subresource"].as_str().unwrap_or(""),
        e["objectRef"]["namespace"].as_str().unwrap_or(""),
        e["objectRef"]["name"].as_str().unwrap_or(""),
        e["requestURI"].as_str().unwrap_or(""),
        e["responseStatus"]["code"],
        e["requestReceivedTimestamp"].as_str().unwrap_or("?"),
        e["userAgent"].as_str().unwrap_or("?"),
    )
}
