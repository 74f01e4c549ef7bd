//! The operator's HTTP endpoint: /metrics, /healthz (alive), /readyz (caches synced; the body
//! says whether this replica leads).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::{controller::CacheSync, leader::Leadership, metrics::Metrics};

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    /// Metrics to render.
    pub metrics: Metrics,
    /// One per controller: have its caches synced.
    pub ready: Vec<Arc<CacheSync>>,
    /// Whether this replica leads.
    pub leader: Leadership,
}

/// The content type of prometheus-client's text encoding (OpenMetrics 1.0).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// /readyz: 200 once every cache has synced, for the leader and a standby alike (a standby
/// that is not Ready would make a PodDisruptionBudget block draining the leader's node); the
/// body says which this replica is. 503 before the caches sync, and while a candidate cannot
/// read or write the Lease (RBAC, the API server away): it could never take over.
fn readiness(h: &Health) -> (StatusCode, String) {
    h.metrics.leader.set(i64::from(h.leader.is_leading()));
    if h.leader.trouble().is_some() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", h.leader.describe()),
        );
    }
    let pending: Vec<String> = h
        .ready
        .iter()
        .filter(|r| !r.is_synced())
        .map(|r| r.pending())
        .collect();
    if pending.is_empty() {
        (StatusCode::OK, format!("ready: {}\n", h.leader.describe()))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: waiting for the first list of {}; {}\n",
                pending.join("; "),
                h.leader.describe()
            ),
        )
    }
}

/// Serve until the process ends. Returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                h.metrics.leader.set(i64::from(h.leader.is_leading()));
                (
                    [(http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                    h.metrics.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move { readiness(&h) }),
        )
        .with_state(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_and_readyz_says_who_leads() {
        let ready = CacheSync::new("namespace shop");
        let leader = Leadership::candidate("ns/lease".into(), "me".into());
        let health = Health {
            metrics: Metrics::default(),
            ready: vec![ready.clone()],
            leader,
        };
        let addr = serve("127.0.0.1:0".parse().unwrap(), health).await.unwrap();
        let metrics = get(addr, "/metrics").await;
        assert!(
            metrics
                .to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("rewind_build_info{version=\""),
            "{metrics}"
        );
        assert!(metrics.contains("rewind_leader 0"), "{metrics}");
        let not_yet = get(addr, "/readyz").await;
        assert!(not_yet.starts_with("HTTP/1.0 503"), "{not_yet}");
        assert!(
            not_yet.contains("not ready: waiting for the first list of"),
            "{not_yet}"
        );
        ready.mark_synced();
        let standby = get(addr, "/readyz").await;
        assert!(standby.starts_with("HTTP/1.0 200"), "{standby}");
        assert!(
            standby.contains("ready: standby: lease ns/lease has no holder yet"),
            "{standby}"
        );
    }
}
