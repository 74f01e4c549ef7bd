//! `tests/support/registry.rs` works against the local test cluster's real registries
//! (distribution 2.8 from Debian's docker-registry; see docs/test-cluster.md, "Registries").
//!
//! Needs the registries: `make cluster-up` (they are part of the test cluster; their addresses
//! and credentials are read from target/cluster/registry.env). Without them every test here
//! fails with that hint, except `missing_env_file_fails_with_hint`, which checks exactly that.

mod support;

use std::path::Path;

use serde_json::Value;
use support::registry::{self, INDEX_PLATFORMS, OCI_INDEX, OCI_MANIFEST};
use support::sha256_hex;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("manifest is JSON")
}

#[test]
#[should_panic(expected = "make cluster-up")]
fn missing_env_file_fails_with_hint() {
    registry::read_env_file_at(Path::new("/nonexistent/rewind/registry.env"));
}

#[tokio::test]
async fn push_and_digest_of_tag_agree() {
    let reg = registry::open();
    assert!(reg.user.is_none() && reg.password.is_none());
    let repo = registry::unique_repository("push_and_digest_of_tag_agree");

    let digest = reg.push_image(&repo, "1.0", "seed-a").await;
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{digest}"
    );
    assert_eq!(reg.digest_of_tag(&repo, "1.0").await, Some(digest.clone()));

    // The manifest behind the tag is an OCI image manifest whose bytes hash to the digest.
    let (bytes, pulled_digest) = reg.pull_manifest(&repo, "1.0").await.expect("tag exists");
    assert_eq!(pulled_digest, digest);
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), digest);
    let manifest = json(&bytes);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

    // A plain HEAD says the same, with the OCI media type.
    let head = reg.head(&repo, "1.0").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(head.header("content-type"), Some(OCI_MANIFEST));

    // Deterministic: the same seed gives the same digest, another seed another one.
    assert_eq!(reg.push_image(&repo, "1.0-again", "seed-a").await, digest);
    assert_ne!(reg.push_image(&repo, "other", "seed-b").await, digest);

    // Unknown tags and repositories are None, not errors.
    assert_eq!(reg.digest_of_tag(&repo, "no-such-tag").await, None);
    let missing_repo = registry::unique_repository("no_such_repository");
    assert_eq!(reg.digest_of_tag(&missing_repo, "1.0").await, None);
}

#[tokio::test]
async fn pushing_another_image_under_the_same_tag_moves_it() {
    let reg = registry::open();
    let repo = registry::unique_repository("pushing_moves_tag");

    let first = reg.push_image(&repo, "stable", "v1").await;
    assert_eq!(
        reg.digest_of_tag(&repo, "stable").await,
        Some(first.clone())
    );
    let second = reg.push_image(&repo, "stable", "v2").await;
    assert_ne!(first, second);
    assert_eq!(
        reg.digest_of_tag(&repo, "stable").await,
        Some(second.clone())
    );

    // The old image is still there by digest: a pinned reference keeps working.
    assert_eq!(reg.digest_of_tag(&repo, &first).await, Some(first.clone()));
    assert!(reg.pull_manifest(&repo, &first).await.is_some());
    assert_eq!(
        reg.pinned(&repo, &first),
        format!("{}/{repo}@{first}", reg.address)
    );
}

#[tokio::test]
async fn index_digest_differs_from_its_platform_manifests() {
    let reg = registry::open();
    let repo = registry::unique_repository("index_digest");

    let index_digest = reg
        .push_index(&repo, "multi", &["amd64-seed", "arm64-seed"])
        .await;
    assert_eq!(
        reg.digest_of_tag(&repo, "multi").await,
        Some(index_digest.clone())
    );

    let head = reg.head(&repo, "multi").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        head.header("docker-content-digest"),
        Some(index_digest.as_str())
    );

    let (bytes, _) = reg
        .pull_manifest(&repo, "multi")
        .await
        .expect("index exists");
    let index = json(&bytes);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let members = index["manifests"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for (member, (arch, _)) in members.iter().zip(INDEX_PLATFORMS) {
        let digest = member["digest"].as_str().unwrap();
        assert_ne!(digest, index_digest);
        assert_eq!(member["platform"]["architecture"], *arch);
        assert_eq!(member["mediaType"], OCI_MANIFEST);
        // Each platform manifest is in the registry under its own digest.
        assert_eq!(
            reg.digest_of_tag(&repo, digest).await.as_deref(),
            Some(digest)
        );
        let (platform_manifest, _) = reg.pull_manifest(&repo, digest).await.unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&platform_manifest)), digest);
    }
    assert_ne!(members[0]["digest"], members[1]["digest"]);
}

#[tokio::test]
async fn auth_registry_refuses_anonymous_and_accepts_credentials() {
    let reg = registry::with_auth();
    assert_eq!(reg.user.as_deref(), Some("rewind"));
    assert!(reg.password.as_deref().is_some_and(|p| !p.is_empty()));
    assert_ne!(reg.address, registry::open().address);
    let repo = registry::unique_repository("auth_registry");

    let digest = reg.push_image(&repo, "1.0", "private").await;

    // Anonymous: 401 with a basic-auth challenge, for the manifest and the API root alike.
    let anonymous = reg.without_credentials();
    let head = anonymous.head(&repo, "1.0").await;
    assert_eq!(head.status, 401, "{head:?}");
    let challenge = head.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert!(head.header("docker-content-digest").is_none());

    // Wrong password: 401 too.
    let mut wrong = reg.clone();
    wrong.password = Some("not-the-password".into());
    assert_eq!(wrong.head(&repo, "1.0").await.status, 401);

    // With the credentials: 200 and the digest, by a plain HEAD and through oci-client.
    let head = reg.head(&repo, "1.0").await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(reg.digest_of_tag(&repo, "1.0").await, Some(digest));
}
