//! Rewind: a Kubernetes operator that makes every release of a Deployment reversible.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod decide;
pub mod deploy;
pub mod digest;
pub mod http;
pub mod image;
pub mod labels;
pub mod metrics;
pub mod telemetry;

/// Errors Rewind's library can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Result with Rewind's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
