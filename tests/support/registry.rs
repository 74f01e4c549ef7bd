//! The local test cluster's two OCI registries (Debian's `docker-registry`, distribution 2.8,
//! started by `tests/cluster/up.sh`): an open one and one with HTTP basic auth, both plain HTTP
//! on 127.0.0.1. Their addresses and the credentials are read from `target/cluster/registry.env`
//! (or the file named by `REWIND_REGISTRY_ENV`). See docs/test-cluster.md, "Registries".
//!
//! Images are pushed with `oci-client`: a tiny but valid OCI image (an uncompressed tar layer
//! with one file whose content is the seed, and an image config naming that layer), so different
//! seeds give different digests and the same seed gives the same digest.
//!
//! ```ignore
//! mod support;
//! use support::registry;
//!
//! #[tokio::test]
//! async fn resolves_a_tag() {
//!     let reg = registry::open();
//!     let repo = registry::unique_repository("resolves_a_tag");
//!     let digest = reg.push_image(&repo, "1.0", "first").await;
//!     assert_eq!(reg.digest_of_tag(&repo, "1.0").await, Some(digest.clone()));
//!     let image = reg.image(&repo, "1.0"); // "127.0.0.1:15000/rewind-test/resolves-a-tag-x1y2z3:1.0"
//! }
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;

use super::{sha256_hex, unique_name};

/// Part of the panic message when a registry request fails.
const DOWN_HINT: &str =
    "(Are the registries up? `make cluster-status` shows them; `make cluster-up` starts them.)";

/// What to do when the registries are not there; part of every such panic message.
pub const REGISTRY_HINT: &str = "Start the local test cluster (it runs the test registries) with \
     `make cluster-up`; it writes target/cluster/registry.env. If the state directory is elsewhere, \
     point REWIND_REGISTRY_ENV at its registry.env.";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type a tag can point at (what `digest_of_tag` and `head` accept).
pub const MANIFEST_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Platforms given to the manifests of [`Registry::push_index`], in seed order.
pub const INDEX_PLATFORMS: &[(&str, Option<&str>)] = &[
    ("amd64", None),
    ("arm64", Some("v8")),
    ("arm", Some("v7")),
    ("s390x", None),
];

/// One of the test registries. `user`/`password` are `Some` for the auth registry.
#[derive(Clone, Debug)]
pub struct Registry {
    /// `host:port`, e.g. `127.0.0.1:15000`; the registry part of image references.
    pub address: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// The path of the env file: `REWIND_REGISTRY_ENV`, else `<crate>/target/cluster/registry.env`.
pub fn env_file() -> PathBuf {
    match std::env::var_os("REWIND_REGISTRY_ENV") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cluster/registry.env"),
    }
}

/// The `KEY=value` lines of the env file. Panics naming `make cluster-up` if it is missing.
pub fn read_env_file() -> BTreeMap<String, String> {
    read_env_file_at(&env_file())
}

/// Like [`read_env_file`] for a given path.
pub fn read_env_file_at(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "no test registries: cannot read {}: {e}. {REGISTRY_HINT}",
            path.display()
        )
    });
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim().trim_matches('"').trim_matches('\'');
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

fn env_value(env: &BTreeMap<String, String>, key: &str) -> String {
    match env.get(key) {
        Some(v) if !v.is_empty() => v.clone(),
        _ => panic!(
            "no test registries: {key} is missing from {}. {REGISTRY_HINT}",
            env_file().display()
        ),
    }
}

/// The open registry (`REWIND_TEST_REGISTRY`, no auth).
pub fn open() -> Registry {
    let env = read_env_file();
    Registry {
        address: env_value(&env, "REWIND_TEST_REGISTRY"),
        user: None,
        password: None,
    }
}

/// The registry with basic auth (`REWIND_TEST_REGISTRY_AUTH`), with its credentials.
pub fn with_auth() -> Registry {
    let env = read_env_file();
    Registry {
        address: env_value(&env, "REWIND_TEST_REGISTRY_AUTH"),
        user: Some(env_value(&env, "REWIND_TEST_REGISTRY_USER")),
        password: Some(env_value(&env, "REWIND_TEST_REGISTRY_PASSWORD")),
    }
}

/// A repository name no other test uses: `rewind-test/<test name>-<random>`.
pub fn unique_repository(test_name: &str) -> String {
    format!("rewind-test/{}", unique_name(test_name))
}

/// The answer to a plain HTTP request made by [`Registry::head`].
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What was pushed by [`Registry::push_image_parts`]: the manifest as sent and its digest.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `sha256:<hex>` as the registry reported it (equal to the sha256 of `manifest`).
    pub digest: String,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
}

impl Registry {
    /// The same registry without credentials (anonymous requests).
    pub fn without_credentials(&self) -> Registry {
        Registry {
            address: self.address.clone(),
            user: None,
            password: None,
        }
    }

    /// `<address>/<repository>:<tag>`
    pub fn image(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.address)
    }

    /// `<address>/<repository>@<digest>`
    pub fn pinned(&self, repository: &str, digest: &str) -> String {
        format!("{}/{repository}@{digest}", self.address)
    }

    /// The credentials in `oci-client`'s terms.
    pub fn auth(&self) -> RegistryAuth {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            _ => RegistryAuth::Anonymous,
        }
    }

    /// An `oci-client` client that speaks plain HTTP to this registry (and HTTPS to any other).
    pub fn client(&self) -> Client {
        install_crypto_provider();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![self.address.clone()]),
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(30)),
            user_agent: "rewind-tests",
            ..ClientConfig::default()
        };
        Client::try_from(config)
            .unwrap_or_else(|e| panic!("cannot build an OCI client for {}: {e}", self.address))
    }

    fn reference(&self, repository: &str, tag_or_digest: &str) -> Reference {
        let s = if tag_or_digest.contains(':') {
            self.pinned(repository, tag_or_digest)
        } else {
            self.image(repository, tag_or_digest)
        };
        s.parse()
            .unwrap_or_else(|e| panic!("bad image reference {s}: {e}"))
    }

    /// Pushes a tiny OCI image (one layer whose content depends on `seed`, platform
    /// linux/amd64) tagged `tag`, and returns its manifest digest `sha256:<hex>` as the registry
    /// reports it. The same seed always gives the same digest; pushing another seed under the
    /// same tag moves the tag.
    pub async fn push_image(&self, repository: &str, tag: &str, seed: &str) -> String {
        self.push_image_parts(repository, Some(tag), seed, INDEX_PLATFORMS[0])
            .await
            .digest
    }

    /// Like [`push_image`](Self::push_image) for a given platform (architecture, variant),
    /// returning the manifest bytes too. With `tag: None` the manifest is pushed untagged, by its
    /// own digest (as the members of an index are).
    pub async fn push_image_parts(
        &self,
        repository: &str,
        tag: Option<&str>,
        seed: &str,
        platform: (&str, Option<&str>),
    ) -> Pushed {
        let client = self.client();
        client
            .store_auth_if_needed(&self.address, &self.auth())
            .await;
        let image = tiny_image(seed, platform);
        // Blobs are addressed by digest within the repository; the reference's tag is unused.
        let repo_ref = self.reference(repository, "latest");
        for (what, data, digest) in [
            ("layer", &image.layer, &image.layer_digest),
            ("config", &image.config, &image.config_digest),
        ] {
            client
                .push_blob(&repo_ref, data.clone(), digest)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "pushing the {what} blob {digest} to {}/{repository} failed: {e} {DOWN_HINT}",
                        self.address
                    )
                });
        }
        let own_digest = format!("sha256:{}", sha256_hex(&image.manifest));
        let digest = self
            .push_manifest_bytes(
                &client,
                repository,
                tag.unwrap_or(&own_digest),
                &image.manifest,
                OCI_MANIFEST,
            )
            .await;
        Pushed {
            digest,
            manifest: image.manifest,
            media_type: OCI_MANIFEST,
        }
    }

    /// Pushes a multi-platform OCI image index tagged `tag`, with one image per seed (platforms
    /// from [`INDEX_PLATFORMS`]: linux/amd64, linux/arm64/v8, …; each pushed untagged, by
    /// digest), and returns the digest of the index.
    pub async fn push_index(&self, repository: &str, tag: &str, seeds: &[&str]) -> String {
        assert!(
            !seeds.is_empty() && seeds.len() <= INDEX_PLATFORMS.len(),
            "push_index takes 1 to {} seeds",
            INDEX_PLATFORMS.len()
        );
        let mut manifests = Vec::new();
        for (seed, &(arch, variant)) in seeds.iter().zip(INDEX_PLATFORMS) {
            let pushed = self
                .push_image_parts(repository, None, seed, (arch, variant))
                .await;
            let mut platform = json!({ "architecture": arch, "os": "linux" });
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            manifests.push(json!({
                "mediaType": pushed.media_type,
                "digest": pushed.digest,
                "size": pushed.manifest.len(),
                "platform": platform,
            }));
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }))
        .unwrap();
        let client = self.client();
        client
            .store_auth_if_needed(&self.address, &self.auth())
            .await;
        self.push_manifest_bytes(&client, repository, tag, &index, OCI_INDEX)
            .await
    }

    /// PUTs a manifest and returns the digest the registry reports for it: the `Location` of the
    /// PUT must name it, and a HEAD of the tag must answer it in `Docker-Content-Digest`; both
    /// must equal sha256 of the bytes sent (panics otherwise).
    async fn push_manifest_bytes(
        &self,
        client: &Client,
        repository: &str,
        tag_or_digest: &str,
        body: &[u8],
        media_type: &str,
    ) -> String {
        let expected = format!("sha256:{}", sha256_hex(body));
        let reference = self.reference(repository, tag_or_digest);
        let location = client
            .push_manifest_raw(&reference, body.to_vec(), media_type.parse().unwrap())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "pushing the manifest {expected} as {repository}:{tag_or_digest} to {} failed: {e} {DOWN_HINT}",
                    self.address
                )
            });
        let from_location = location.rsplit('/').next().unwrap_or_default();
        assert_eq!(
            from_location, expected,
            "the registry stored the manifest under another digest (Location: {location})"
        );
        let reported = self
            .digest_of_tag(repository, tag_or_digest)
            .await
            .unwrap_or_else(|| {
                panic!("{repository}:{tag_or_digest} not found right after the push")
            });
        assert_eq!(
            reported, expected,
            "Docker-Content-Digest of {repository}:{tag_or_digest} is not sha256 of the manifest sent"
        );
        reported
    }

    /// The digest the tag (or digest) points at, from a HEAD of the manifest with every manifest
    /// and index media type accepted (`Docker-Content-Digest`); `None` if the tag or the
    /// repository does not exist. Panics on any other error (e.g. 401 without credentials).
    pub async fn digest_of_tag(&self, repository: &str, tag: &str) -> Option<String> {
        let client = self.client();
        match client
            .fetch_manifest_digest(&self.reference(repository, tag), &self.auth())
            .await
        {
            Ok(d) => Some(d),
            Err(e) if is_not_found(&e) => None,
            Err(e) => panic!(
                "HEAD {}/{repository}:{tag} failed: {e} ({e:?}) {DOWN_HINT}",
                self.address
            ),
        }
    }

    /// The manifest (raw bytes) and its digest for a tag or digest; `None` if not found.
    pub async fn pull_manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
    ) -> Option<(Vec<u8>, String)> {
        let client = self.client();
        match client
            .pull_manifest_raw(
                &self.reference(repository, tag_or_digest),
                &self.auth(),
                MANIFEST_TYPES,
            )
            .await
        {
            Ok((bytes, digest)) => Some((bytes.to_vec(), digest)),
            Err(e) if is_not_found(&e) => None,
            Err(e) => panic!(
                "GET {}/{repository} manifest {tag_or_digest} failed: {e} {DOWN_HINT}",
                self.address
            ),
        }
    }

    /// A plain HTTP/1.1 HEAD of `/v2/<repository>/manifests/<tag or digest>` with every manifest
    /// type accepted, sending the credentials if this `Registry` has any: for checking status
    /// codes and headers exactly (e.g. 401 and `WWW-Authenticate` without credentials).
    pub async fn head(&self, repository: &str, tag_or_digest: &str) -> RawResponse {
        let path = format!("/v2/{repository}/manifests/{tag_or_digest}");
        let mut extra = format!("Accept: {}\r\n", MANIFEST_TYPES.join(", "));
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            extra.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(format!("{u}:{p}").as_bytes())
            ));
        }
        let address = self.address.clone();
        tokio::task::spawn_blocking(move || raw_request(&address, "HEAD", &path, &extra))
            .await
            .unwrap()
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|err| {
            matches!(
                err.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and headers (the body, if
/// any, is read and dropped).
fn raw_request(address: &str, method: &str, path: &str, extra_headers: &str) -> RawResponse {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|e| {
        panic!("cannot connect to the test registry at {address}: {e}. {REGISTRY_HINT}")
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: rewind-tests\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer of {method} {path} from {address}: {e}"));
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer from {address}: {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse { status, headers }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct TinyImage {
    layer: Vec<u8>,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
}

/// The blobs and manifest of a one-layer image; deterministic in `seed` and `platform`.
fn tiny_image(seed: &str, (arch, variant): (&str, Option<&str>)) -> TinyImage {
    let layer = tar_with_file("seed.txt", seed.as_bytes());
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let mut config = json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Labels": { "dev.rewind.test.seed": seed } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [ { "mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer.len() } ],
    }))
    .unwrap();
    TinyImage {
        layer,
        layer_digest,
        config,
        config_digest,
        manifest,
    }
}

/// A POSIX (ustar) tar archive holding one regular file.
fn tar_with_file(name: &str, content: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100);
    let mut header = [0u8; 512];
    let mut put =
        |offset: usize, value: &[u8]| header[offset..offset + value.len()].copy_from_slice(value);
    put(0, name.as_bytes());
    put(100, b"0000644\0"); // mode
    put(108, b"0000000\0"); // uid
    put(116, b"0000000\0"); // gid
    put(124, format!("{:011o}\0", content.len()).as_bytes()); // size
    put(136, b"00000000000\0"); // mtime: fixed, so the same seed gives the same digest
    put(148, b"        "); // checksum, counted as spaces
    put(156, b"0"); // regular file
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.extend_from_slice(&[0u8; 1024]); // end of archive
    tar
}

/// `oci-client` is built with `rustls-tls-no-provider`, so reqwest needs a process-wide rustls
/// CryptoProvider before it can build a client (even one that only speaks plain HTTP). Installing
/// fails harmlessly when one is already there.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
