//! The connection, made from the user's kubeconfig as kubectl makes it, and errors turned into
//! words a person can act on.

use std::io::IsTerminal;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, SelfSubjectReviewStatus};
use kube::{
    Api, Client, Config,
    api::{ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use super::{Color, Global, render::Paint, suggest};
use crate::api::Release;

/// Exit codes (docs/cli.md).
pub mod code {
    /// Failed or refused, or an error (unknown Release, RBAC, CRDs missing).
    pub const FAILED: u8 = 1;
    /// Usage error.
    pub const USAGE: u8 = 2;
    /// Timed out, or the request was not acknowledged.
    pub const TIMEOUT: u8 = 3;
}

/// Why a command did not do what was asked: a message, hints (what to try next), an exit code.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
    /// What to do about it, one per line.
    pub hints: Vec<String>,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: code::FAILED,
            message: message.into(),
            hints: Vec::new(),
        }
    }
    /// Add a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hints.push(hint.into());
        self
    }
    /// With another exit code.
    pub fn code(mut self, code: u8) -> Failure {
        self.code = code;
        self
    }
}

/// The API server, as the user's kubeconfig reaches it.
pub struct Conn {
    /// For requests (each bounded by --request-timeout).
    pub client: Client,
    /// For watches (long reads; only connecting is bounded).
    pub watch_client: Client,
    /// -n, else the context's namespace.
    pub namespace: String,
    /// The kubeconfig's user name for the context, when there is one (who asked, when the API
    /// server will not say).
    kubeconfig_user: Option<String>,
    /// Colour or not.
    pub paint: Paint,
    /// The API server's address, for messages.
    pub server: String,
}

impl Conn {
    /// Connect as `--kubeconfig`/`--context` say.
    pub async fn new(g: &Global) -> Result<Conn, Failure> {
        let options = KubeConfigOptions {
            context: g.context.clone(),
            ..Default::default()
        };
        let kubeconfig = match &g.kubeconfig {
            Some(path) => Some(Kubeconfig::read_from(path).map_err(|e| {
                Failure::failed(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?),
            None => match Kubeconfig::read() {
                Ok(k) => Some(k),
                // Nothing to read is fine (in a pod: the in-cluster account); a file that is
                // there but does not read is not.
                Err(e) if kubeconfig_expected() => {
                    return Err(Failure::failed(format!("cannot read the kubeconfig: {e}"))
                        .hint("check $KUBECONFIG and ~/.kube/config (kubectl config view)"));
                }
                Err(_) => None,
            },
        };
        let (mut config, kubeconfig_user) = match kubeconfig {
            Some(k) => {
                let user = context_user(&k, g.context.as_deref());
                let config = Config::from_custom_kubeconfig(k, &options)
                    .await
                    .map_err(|e| {
                        Failure::failed(format!("cannot use the kubeconfig: {e}")).hint(
                            "check --context (kubectl config get-contexts) and --kubeconfig",
                        )
                    })?;
                (config, user)
            }
            None => (
                Config::incluster().map_err(|_| {
                    Failure::failed("no kubeconfig found and not running in a cluster").hint(
                        "set KUBECONFIG or pass --kubeconfig (kubectl config view shows what kubectl uses)",
                    )
                })?,
                None,
            ),
        };
        let timeout = g
            .request_timeout
            .value()
            .map_err(|e| Failure::failed(format!("--request-timeout: {e}")).code(code::USAGE))?;
        let agent = format!("kubectl-rewind/{}", env!("CARGO_PKG_VERSION"));
        if let Ok(v) = http::HeaderValue::from_str(&agent) {
            config.headers.push((http::header::USER_AGENT, v));
        }
        let server = config.cluster_url.to_string();
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        // 0 means no limit, as in kubectl.
        let timeout = (!timeout.is_zero()).then_some(timeout);
        let mut watch_config = config.clone();
        watch_config.connect_timeout = timeout;
        watch_config.read_timeout = None;
        config.connect_timeout = timeout;
        config.read_timeout = timeout;
        config.write_timeout = timeout;
        config.reset_reader_on_write = true;
        let client = Client::try_from(config)
            .and_then(|c| Ok((c, Client::try_from(watch_config)?)))
            .map_err(|e| Failure::failed(format!("cannot build a client: {e}")))?;
        let paint = Paint {
            on: match g.color {
                Color::Always => true,
                Color::Never => false,
                Color::Auto => {
                    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                        && std::io::stdout().is_terminal()
                }
            },
        };
        Ok(Conn {
            client: client.0,
            watch_client: client.1,
            namespace,
            kubeconfig_user,
            paint,
            server,
        })
    }

    /// Releases of the namespace, or of every namespace.
    pub fn releases(&self) -> Api<Release> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A Release, or why not: not found (with close names), forbidden, CRDs missing.
    pub async fn release(&self, name: &str) -> Result<Release, Failure> {
        match self.releases().get_opt(name).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(self.not_found(name).await),
            Err(e) => Err(self.api_failure(e, "get", "releases.rewind.dev").await),
        }
    }

    async fn not_found(&self, name: &str) -> Failure {
        let names: Vec<String> = match self.releases().list_metadata(&ListParams::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter_map(|m| m.metadata.name)
                .collect(),
            Err(e) => return self.api_failure(e, "list", "releases.rewind.dev").await,
        };
        let mut f = Failure::failed(format!(
            "no Release {name:?} in namespace {}",
            self.namespace
        ));
        let close = suggest::close(name, &names);
        if !close.is_empty() {
            f = f.hint(format!("did you mean: {}?", close.join(", ")));
        } else if names.is_empty() {
            f = f.hint(format!(
                "namespace {} has no Releases; kubectl rewind list -A lists every namespace's",
                self.namespace
            ));
        } else {
            f = f.hint(format!("Releases here: {}", names.join(", ")));
        }
        f
    }

    /// Words for an error from the API server: who may not do what, missing CRDs, no server.
    pub async fn api_failure(&self, e: kube::Error, verb: &str, resource: &str) -> Failure {
        self.failure_in(&e, verb, resource, Some(&self.namespace))
            .await
    }

    /// As [`Conn::api_failure`], for a request over every namespace (`ns` None).
    pub async fn failure_in(
        &self,
        e: &kube::Error,
        verb: &str,
        resource: &str,
        ns: Option<&str>,
    ) -> Failure {
        let (where_, can_i) = match ns {
            Some(ns) => (format!("in namespace {ns}"), format!("-n {ns}")),
            None => ("in all namespaces".to_owned(), "-A".to_owned()),
        };
        match e {
            kube::Error::Api(s) if s.code == 403 => Failure::failed(format!(
                "forbidden: you may not {verb} {resource} {where_}: {}",
                s.message
            ))
            .hint(format!(
                "ask for the verb {verb:?} on {resource} {where_}; check with: kubectl auth can-i {verb} {resource} {can_i}"
            )),
            kube::Error::Api(s) if s.code == 401 => {
                Failure::failed(format!("the API server refused your credentials: {}", s.message))
                    .hint("your login may have expired; check with: kubectl get --raw /version")
            }
            kube::Error::Api(s) if s.code == 404 && !self.crds_installed().await => {
                Failure::failed(format!(
                    "Rewind's CRDs (releases.rewind.dev) are not installed in the cluster at {}",
                    self.server
                ))
                .hint("install Rewind (README: \"Installing on a real cluster\"), or check --context")
            }
            kube::Error::Api(s) => Failure::failed(format!(
                "the API server refused to {verb} {resource}: {} ({})",
                s.message, s.code
            )),
            other => Failure::failed(format!(
                "cannot reach the API server at {}: {other}",
                self.server
            ))
            .hint("check --context and --kubeconfig; kubectl get --raw /version tests the connection"),
        }
    }

    async fn crds_installed(&self) -> bool {
        // The group's discovery document exists only when a CRD of the group is installed.
        let req = http::Request::get("/apis/rewind.dev/v1alpha1").body(Vec::new());
        match req {
            Ok(req) => self.client.request_text(req).await.is_ok(),
            Err(_) => true,
        }
    }

    /// The Release after each change (None once deleted), from a watch: the current state
    /// first, then every change; a cut watch is resumed with backoff, its error passed on.
    pub fn watch_release(
        &self,
        name: &str,
    ) -> futures::stream::BoxStream<'static, Result<Option<Release>, kube::runtime::watcher::Error>>
    {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let api: Api<Release> = Api::namespaced(self.watch_client.clone(), &self.namespace);
        watcher(
            api,
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .default_backoff()
        .filter_map(|e| async move {
            match e {
                Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => Some(Ok(Some(r))),
                Ok(watcher::Event::Delete(_)) => Some(Ok(None)),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .boxed()
    }

    /// A watch error that will not pass by itself (not allowed, not there) as a failure to
    /// report; None for one the watch resumes from (a cut connection, a restarting server).
    pub async fn watch_failure(
        &self,
        e: &kube::runtime::watcher::Error,
        resource: &str,
    ) -> Option<Failure> {
        use kube::runtime::watcher::Error as W;
        let inner = match e {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => e,
            W::WatchError(s) if matches!(s.code, 401 | 403) => {
                return Some(
                    Failure::failed(format!(
                        "the API server ended the watch of {resource}: {}",
                        s.message
                    ))
                    .hint(format!(
                        "check with: kubectl auth can-i watch {resource} -n {}",
                        self.namespace
                    )),
                );
            }
            _ => return None,
        };
        match inner {
            kube::Error::Api(s) if matches!(s.code, 401 | 403 | 404) => Some(
                self.failure_in(inner, "watch", resource, Some(&self.namespace))
                    .await,
            ),
            _ => None,
        }
    }

    /// Who the API server says we are (SelfSubjectReview); the kubeconfig's user name when the
    /// review is not allowed; None when neither is known.
    pub async fn whoami(&self) -> Option<String> {
        let review = SelfSubjectReview::default();
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(SelfSubjectReview {
                status:
                    Some(SelfSubjectReviewStatus {
                        user_info: Some(u), ..
                    }),
                ..
            }) if u.username.as_deref().is_some_and(|n| !n.is_empty()) => u.username,
            _ => self.kubeconfig_user.clone(),
        }
    }
}

/// A kubeconfig should be there: $KUBECONFIG is set, or ~/.kube/config exists.
fn kubeconfig_expected() -> bool {
    std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
        || std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .is_some_and(|h| h.join(".kube/config").exists())
}

/// The user entry the context names.
fn context_user(k: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let name = context.map(str::to_owned).or(k.current_context.clone())?;
    k.contexts
        .iter()
        .find(|c| c.name == name)?
        .context
        .as_ref()?
        .user
        .clone()
        .filter(|u| !u.is_empty())
}
