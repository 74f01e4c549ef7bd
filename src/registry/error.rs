//! Why a registry could not answer: the registry client produces these and the pure decision
//! core reads them, so they live apart from the client (no network code in `decide`).

use std::time::Duration;

use crate::reasons;

/// Why a tag could not be resolved. Each maps to a reason shown in conditions and Events.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Connection refused, DNS, TLS: the registry could not be reached.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// No answer within the timeout.
    #[error("registry did not answer within {0:?}")]
    Timeout(Duration),
    /// 401/403: no or wrong credentials.
    #[error("registry refused the credentials (unauthorized): {0}")]
    Unauthorized(String),
    /// The repository or tag does not exist.
    #[error("image not found in the registry: {0}")]
    NotFound(String),
    /// Anything else the registry said.
    #[error("registry error: {0}")]
    Other(String),
}

impl ResolveError {
    /// PascalCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::Unreachable(_) => reasons::REGISTRY_UNREACHABLE,
            ResolveError::Timeout(_) => reasons::REGISTRY_TIMEOUT,
            ResolveError::Unauthorized(_) => reasons::REGISTRY_UNAUTHORIZED,
            ResolveError::NotFound(_) => reasons::IMAGE_NOT_FOUND,
            ResolveError::Other(_) => reasons::REGISTRY_ERROR,
        }
    }
}
