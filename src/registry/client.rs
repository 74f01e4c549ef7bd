//! The registry client: resolving image tags to digests against the registry, before a revision rolls out, with the
//! Deployment's pull secrets, a timeout, and a small cache so a storm of reconciles does not
//! hammer the registry.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine;
use oci_client::{
    Client, Reference,
    client::{ClientConfig, ClientProtocol},
    errors::{OciDistributionError, OciErrorCode},
    secrets::RegistryAuth,
};
use serde::Deserialize;

use super::ResolveError;
use crate::image::is_digest;

fn classify(e: OciDistributionError, timeout: Duration) -> ResolveError {
    use OciDistributionError as E;
    match e {
        E::UnauthorizedError { url } => ResolveError::Unauthorized(url),
        E::AuthenticationFailure(m) => ResolveError::Unauthorized(m),
        E::ImageManifestNotFoundError(m) => ResolveError::NotFound(m),
        E::ServerError {
            code: 401 | 403,
            url,
            ..
        } => ResolveError::Unauthorized(url),
        E::ServerError { code: 404, url, .. } => ResolveError::NotFound(url),
        E::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ResolveError::Unauthorized(url)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
            {
                ResolveError::NotFound(url)
            } else {
                ResolveError::Other(format!("{envelope} ({url})"))
            }
        }
        E::RequestError(r) if r.is_timeout() => ResolveError::Timeout(timeout),
        E::RequestError(r) if r.is_connect() || r.is_request() => {
            ResolveError::Unreachable(error_chain(&r))
        }
        other => ResolveError::Other(other.to_string()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Registry credentials from pull secrets: registry host → (user, password).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Credentials(BTreeMap<String, (String, String)>);

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// The registry host a config key or image reference names, Docker Hub's aliases folded into
/// `docker.io`.
fn registry_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    }
}

impl Credentials {
    /// Add the entries of a `.dockerconfigjson` (or legacy `.dockercfg`) secret value.
    /// Entries that cannot be read are skipped; the first secret naming a registry wins, as
    /// with the kubelet.
    pub fn add_docker_config(&mut self, json: &[u8]) -> Result<(), String> {
        let auths = match serde_json::from_slice::<DockerConfig>(json) {
            Ok(c) if !c.auths.is_empty() => c.auths,
            _ => serde_json::from_slice::<BTreeMap<String, DockerAuth>>(json)
                .map_err(|e| format!("not a docker config: {e}"))?,
        };
        for (key, a) in auths {
            let pair = match (a.username, a.password, a.auth) {
                (Some(u), Some(p), _) => Some((u, p)),
                (_, _, Some(encoded)) => base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|raw| String::from_utf8(raw).ok())
                    .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))),
                _ => None,
            };
            if let Some(pair) = pair {
                self.0.entry(registry_key(&key)).or_insert(pair);
            }
        }
        Ok(())
    }

    /// Credentials for the registry of `reference`, if any.
    fn for_reference(&self, reference: &Reference) -> RegistryAuth {
        match self.0.get(&registry_key(reference.registry())) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Registries with credentials (for messages; never the secrets themselves).
    pub fn registries(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    fn identity(&self, reference: &Reference) -> u64 {
        let mut h = DefaultHasher::new();
        self.0.get(&registry_key(reference.registry())).hash(&mut h);
        h.finish()
    }
}

/// How the resolver talks to registries.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Longest one resolution may take.
    pub timeout: Duration,
    /// Registries (host[:port]) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// How long a resolved digest is reused.
    pub ttl: Duration,
    /// How long a failure is remembered before asking again.
    pub error_ttl: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            timeout: Duration::from_secs(10),
            insecure: Vec::new(),
            ttl: Duration::from_secs(60),
            error_ttl: Duration::from_secs(10),
        }
    }
}

type CacheKey = (String, u64);
/// When an answer was given, and the answer.
type CacheEntry = (Instant, Result<String, ResolveError>);

/// Resolves references to manifest digests (for multi-arch images, the index digest).
pub struct Resolver {
    config: ResolverConfig,
    cache: Mutex<HashMap<CacheKey, CacheEntry>>,
}

/// Entries above this are swept of expired ones.
const CACHE_SWEEP_AT: usize = 4096;

impl Resolver {
    /// A resolver with `config`.
    pub fn new(config: ResolverConfig) -> Self {
        // reqwest (under oci-client) needs a process-wide rustls provider; kube already uses
        // ring, so install that one. An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Resolver {
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self) -> Client {
        let protocol = if self.config.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.config.insecure.clone())
        };
        Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(self.config.timeout),
            read_timeout: Some(self.config.timeout),
            // Never pick a platform: the index digest is what a multi-arch reference means.
            platform_resolver: None,
            ..Default::default()
        })
    }

    /// The digest `image` names now. A reference that already carries a digest is returned
    /// as it is, without asking the registry.
    pub async fn resolve(
        &self,
        image: &str,
        credentials: &Credentials,
    ) -> Result<String, ResolveError> {
        let reference =
            Reference::from_str(image).map_err(|e| ResolveError::Other(format!("{image}: {e}")))?;
        if let Some(d) = reference.digest().filter(|d| is_digest(d)) {
            return Ok(d.to_owned());
        }
        let key = (reference.whole(), credentials.identity(&reference));
        if let Some(hit) = self.cached(&key) {
            return hit;
        }
        let auth = credentials.for_reference(&reference);
        // A fresh client per resolution: oci-client remembers the first credentials it used
        // for a registry, and Releases may bring different ones. Resolutions are rare (one per
        // new revision and image) and cached.
        let client = self.client();
        let result = match tokio::time::timeout(
            self.config.timeout,
            client.fetch_manifest_digest(&reference, &auth),
        )
        .await
        {
            Err(_) => Err(ResolveError::Timeout(self.config.timeout)),
            Ok(Err(e)) => Err(classify(e, self.config.timeout)),
            Ok(Ok(d)) if is_digest(&d) => Ok(d),
            Ok(Ok(d)) => Err(ResolveError::Other(format!(
                "registry answered a digest Rewind cannot use: {d}"
            ))),
        };
        self.remember(key, result.clone());
        result
    }

    fn cached(&self, key: &CacheKey) -> Option<Result<String, ResolveError>> {
        let cache = self.cache.lock().expect("digest cache lock");
        let (at, result) = cache.get(key)?;
        let ttl = if result.is_ok() {
            self.config.ttl
        } else {
            self.config.error_ttl
        };
        (at.elapsed() < ttl).then(|| result.clone())
    }

    fn remember(&self, key: CacheKey, result: Result<String, ResolveError>) {
        let mut cache = self.cache.lock().expect("digest cache lock");
        if cache.len() >= CACHE_SWEEP_AT {
            let (ttl, error_ttl) = (self.config.ttl, self.config.error_ttl);
            cache.retain(|_, (at, r)| at.elapsed() < if r.is_ok() { ttl } else { error_ttl });
        }
        cache.insert(key, (Instant::now(), result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_secrets() {
        let mut c = Credentials::default();
        let encoded = base64::engine::general_purpose::STANDARD.encode("bob:hunter2");
        let json = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": encoded},
            "127.0.0.1:15001": {"username": "rewind", "password": "pw"},
            "broken.example": {"auth": "!!!"}
        }});
        c.add_docker_config(json.to_string().as_bytes()).unwrap();
        let hub = Reference::from_str("nginx:1.27").unwrap();
        assert_eq!(
            c.for_reference(&hub),
            RegistryAuth::Basic("bob".into(), "hunter2".into())
        );
        let local = Reference::from_str("127.0.0.1:15001/shop/api:1").unwrap();
        assert_eq!(
            c.for_reference(&local),
            RegistryAuth::Basic("rewind".into(), "pw".into())
        );
        let other = Reference::from_str("quay.io/a/b:1").unwrap();
        assert_eq!(c.for_reference(&other), RegistryAuth::Anonymous);
        assert_eq!(c.registries(), ["127.0.0.1:15001", "docker.io"]);
        assert!(c.add_docker_config(b"not json").is_err());
    }

    #[test]
    fn legacy_dockercfg_is_read_too() {
        let mut c = Credentials::default();
        c.add_docker_config(br#"{"registry.example": {"username": "u", "password": "p"}}"#)
            .unwrap();
        assert_eq!(c.registries(), ["registry.example"]);
    }

    #[test]
    fn reasons_are_pascal_case_and_distinct() {
        let all = [
            ResolveError::Unreachable(String::new()),
            ResolveError::Timeout(Duration::from_secs(1)),
            ResolveError::Unauthorized(String::new()),
            ResolveError::NotFound(String::new()),
            ResolveError::Other(String::new()),
        ];
        let reasons: std::collections::BTreeSet<&str> = all.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(
            reasons
                .iter()
                .all(|r| r.chars().next().unwrap().is_ascii_uppercase() && !r.contains(' '))
        );
    }

    #[tokio::test]
    async fn a_digest_reference_needs_no_registry() {
        let r = Resolver::new(ResolverConfig::default());
        let d = format!("sha256:{}", "ab".repeat(32));
        let got = r
            .resolve(&format!("registry.invalid/x@{d}"), &Credentials::default())
            .await;
        assert_eq!(got, Ok(d));
    }

    /// A registry on loopback that answers every manifest HEAD with `digest` and counts
    /// the requests it gets.
    async fn counting_registry(
        digest: String,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                if request.starts_with("HEAD /v2/") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        (addr, hits)
    }

    #[tokio::test]
    async fn a_storm_of_lookups_asks_the_registry_once() {
        let digest = format!("sha256:{}", "cd".repeat(32));
        let (addr, hits) = counting_registry(digest.clone()).await;
        let r = Resolver::new(ResolverConfig {
            insecure: vec![addr.clone()],
            ..Default::default()
        });
        let image = format!("{addr}/shop/api:1.0.0");
        for _ in 0..20 {
            assert_eq!(
                r.resolve(&image, &Credentials::default()).await,
                Ok(digest.clone())
            );
        }
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the cache should answer all but the first"
        );
        // Other credentials for that registry are a different question.
        let mut creds = Credentials::default();
        creds
            .add_docker_config(
                format!(r#"{{"auths": {{"{addr}": {{"username": "u", "password": "p"}}}}}}"#)
                    .as_bytes(),
            )
            .unwrap();
        let _ = r.resolve(&image, &creds).await;
        assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }

    #[test]
    fn docker_hub_names_get_the_default_registry_and_library() {
        let r = Reference::from_str("nginx:1.27").unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("docker.io", "library/nginx")
        );
        let mut c = Credentials::default();
        c.add_docker_config(
            br#"{"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.for_reference(&r),
            RegistryAuth::Basic("u".into(), "p".into())
        );
    }

    #[tokio::test]
    async fn unreachable_registries_fail_fast_and_the_failure_is_cached() {
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let r = Resolver::new(ResolverConfig {
            insecure: vec!["127.0.0.1:9".into()],
            ..Default::default()
        });
        let started = Instant::now();
        let first = r
            .resolve("127.0.0.1:9/shop/api:1", &Credentials::default())
            .await;
        assert!(
            matches!(first, Err(ResolveError::Unreachable(_))),
            "{first:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let again = Instant::now();
        assert_eq!(
            r.resolve("127.0.0.1:9/shop/api:1", &Credentials::default())
                .await,
            first
        );
        assert!(
            again.elapsed() < Duration::from_millis(50),
            "the second answer should come from the cache"
        );
    }
}
