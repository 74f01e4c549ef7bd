//! Image references: splitting `registry/repo:tag@sha256:…` and pinning a repository to a digest.
//!
//! The CRD schema already rejects malformed references (see `api::rules::IMAGE_REF`); this
//! module only needs to take well-formed ones apart.

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Everything before the tag and digest: `registry.example:5000/team/app`.
    pub repository: &'a str,
    /// The tag, if any.
    pub tag: Option<&'a str>,
    /// The digest (`sha256:<hex>`), if any.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Split a reference. A `:` after the last `/` starts the tag; a registry port does not.
    pub fn parse(reference: &'a str) -> Self {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (reference, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].find(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        ImageRef {
            repository,
            tag,
            digest,
        }
    }

    /// The repository pinned to `digest`: `repo@sha256:…` (the tag is dropped: the digest is
    /// what runs, and a tag beside it would only suggest otherwise).
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{}", self.repository, digest)
    }
}

/// The `sha256:<64 hex>` digest inside a container status `imageID`
/// (`docker-pullable://repo@sha256:…`, `repo@sha256:…` or a bare `sha256:…`).
pub fn digest_from_image_id(image_id: &str) -> Option<&str> {
    let at = image_id.rfind("sha256:")?;
    let digest = &image_id[at..];
    is_digest(digest).then_some(digest)
}

/// True for `sha256:` followed by exactly 64 lower-case hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_references() {
        let cases = [
            ("nginx", "nginx", None, None),
            ("nginx:1.27", "nginx", Some("1.27"), None),
            (
                "registry.example:5000/shop/api",
                "registry.example:5000/shop/api",
                None,
                None,
            ),
            (
                "registry.example:5000/shop/api:1.4.0",
                "registry.example:5000/shop/api",
                Some("1.4.0"),
                None,
            ),
            (
                "localhost/app:v2@".to_owned().leak(),
                "localhost/app",
                Some("v2"),
                Some(""),
            ),
        ];
        for (input, repository, tag, digest) in cases {
            assert_eq!(
                ImageRef::parse(input),
                ImageRef {
                    repository,
                    tag,
                    digest
                },
                "{input}"
            );
        }
        let with_digest = format!("example.com/shop/api:1.0@{D}");
        let r = ImageRef::parse(&with_digest);
        assert_eq!(
            (r.repository, r.tag, r.digest),
            ("example.com/shop/api", Some("1.0"), Some(D))
        );
    }

    #[test]
    fn pins_to_a_digest_dropping_the_tag() {
        assert_eq!(
            ImageRef::parse("example.com:5000/shop/api:1.0").pinned(D),
            format!("example.com:5000/shop/api@{D}")
        );
        let already = format!("example.com/shop/api@{D}");
        assert_eq!(ImageRef::parse(&already).pinned(D), already);
    }

    #[test]
    fn finds_the_digest_in_an_image_id() {
        assert_eq!(
            digest_from_image_id(&format!("docker-pullable://example.com/a@{D}")),
            Some(D)
        );
        assert_eq!(digest_from_image_id(&format!("example.com/a@{D}")), Some(D));
        assert_eq!(digest_from_image_id(D), Some(D));
        assert_eq!(digest_from_image_id(""), None);
        assert_eq!(digest_from_image_id("docker://sha256:abc"), None);
        assert_eq!(digest_from_image_id(&D.to_uppercase()), None);
    }
}
