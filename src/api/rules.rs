//! CEL expressions and limits shared by the CRD schemas.
//!
//! Each rule is paired with a message a person can act on. The patterns are RE2 (what the API
//! server's CEL `matches` uses); `[0-9]` is spelled out instead of `\d` so the rules need no
//! escaping inside CEL string literals.

/// Semantic Versioning 2.0.0, without a leading `v`.
pub const SEMVER: &str = "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(\\+([0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*))?$";

/// An OCI image reference: `[registry[:port]/]path[:tag][@sha256:<64 hex>]`, lower-case path
/// components as the distribution reference grammar requires.
pub const IMAGE_REF: &str = "^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*)*(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";

/// A Go duration such as `30s`, `5m` or `1h30m` (what `metav1.Duration` accepts, without sign).
pub const DURATION: &str = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A DNS-1123 label: container and object names.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Longest image reference accepted (bounds CEL cost; real references are far shorter).
pub(crate) const MAX_IMAGE_LEN: u32 = 512;
/// Most containers a Release may own.
pub(crate) const MAX_IMAGES: u32 = 32;

/// The CEL rule that checks `self` against `pattern` (a CEL raw string, so backslashes pass
/// through to RE2 untouched).
pub fn matches(pattern: &str) -> String {
    format!("self.matches(r'{pattern}')")
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_have_no_single_quotes_that_would_break_cel() {
        for p in [
            super::SEMVER,
            super::IMAGE_REF,
            super::DURATION,
            super::DNS_LABEL,
        ] {
            assert!(!p.contains('\''), "{p}");
        }
    }
}
