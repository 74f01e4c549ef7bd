//! Rewind: a Kubernetes operator that makes every release of a Deployment reversible.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub(crate) mod decide;
pub mod http;
pub(crate) mod image;
pub(crate) mod labels;
pub mod leader;
pub mod metrics;
pub(crate) mod reasons;
pub mod registry;
pub mod telemetry;

pub use controller::Error;
