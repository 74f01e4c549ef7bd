//! Registries: the client that resolves tags to digests (`client`) and the errors it reports
//! (`error`, which the decision core reads without depending on the client).

mod client;
pub mod error;

pub use client::{Credentials, Resolver, ResolverConfig};
pub use error::ResolveError;
