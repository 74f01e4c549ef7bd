//! The operator's HTTP endpoint: /metrics, /healthz (alive), /readyz (caches synced; the body
//! says whether this replica leads).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::{leader::Leadership, metrics::Metrics};

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    /// Metrics to render.
    pub metrics: Metrics,
    /// One per controller, set once its caches have synced.
    pub ready: Vec<Arc<AtomicBool>>,
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
    if h.ready.iter().all(|r| r.load(Ordering::Relaxed)) {
        (StatusCode::OK, format!("ready: {}\n", h.leader.describe()))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("caches not synced yet ({})\n", h.leader.describe()),
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
