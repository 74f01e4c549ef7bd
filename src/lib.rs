//! Rewind: a Kubernetes operator that makes every release of a Deployment reversible.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod decide;
pub mod http;
pub mod image;
pub mod labels;
pub mod metrics;
pub mod reasons;
pub mod registry;
pub mod telemetry;

pub use controller::Error;
