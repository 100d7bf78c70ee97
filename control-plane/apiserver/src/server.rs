//! The API server: its state, the request entry point [`ApiServer::handle`] (after
//! authentication, which the caller does), and [`serve`] / [`serve_connection`] over any
//! accepted IO, so TLS can be put in front.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_store::Store;
use http::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::body::{self, ApiBody};
use crate::kinds::KindTable;
use crate::route::{self, Route};
use crate::status::{ApiError, ApiResult};
use crate::{discovery, openapi, rest};

/// The authenticated user a request runs as; authorization and admission read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestUser {
    /// The user name, e.g. `system:node:n1` or `system:anonymous`.
    pub name: String,
    /// The uid, when the authenticator knows one.
    pub uid: Option<String>,
    /// The groups, e.g. `system:masters`, `system:authenticated`.
    pub groups: Vec<String>,
}

impl RequestUser {
    /// A member of `system:masters`: what tests and the in-process clients run as.
    pub fn admin() -> RequestUser {
        RequestUser {
            name: "system:admin".into(),
            uid: None,
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }
}

/// Finds the user of a request (client certificate of the connection, bearer token...).
/// `None` answers 401 Unauthorized.
pub trait Authenticate: Send + Sync + 'static {
    /// The user `request` authenticates as.
    fn authenticate(&self, request: &http::request::Parts) -> Option<RequestUser>;

    /// [`authenticate`](Self::authenticate), then the checks that need `server`'s storage (a
    /// service-account token dies with its account or bound pod).
    fn authenticate_with<'a>(
        &'a self,
        _server: &'a ApiServer,
        request: &'a http::request::Parts,
    ) -> futures::future::BoxFuture<'a, Option<RequestUser>> {
        Box::pin(async move { self.authenticate(request) })
    }
}

/// Treats every request as the admin: for plain-HTTP tests and loopback-only serving.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAllAsAdmin;

impl Authenticate for AllowAllAsAdmin {
    fn authenticate(&self, _request: &http::request::Parts) -> Option<RequestUser> {
        Some(RequestUser::admin())
    }
}

/// Tunables of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often a watch that asked for bookmarks gets one (kube: about a minute).
    pub bookmark_interval: Duration,
    /// How long a watch without `timeoutSeconds` lasts (kube: 30 to 60 minutes).
    pub default_watch_timeout: Duration,
    /// The `gitVersion` `/version` reports.
    pub git_version: String,
    /// How service-account tokens are issued; `None` serves no TokenRequest (as
    /// kube-apiserver without a signing key).
    pub service_account_tokens: Option<Arc<crate::tokens::TokenSettings>>,
    /// `--authorization-mode`: the authorizers after the system:masters bypass, in order.
    pub authorization_modes: Vec<crate::authz::Mode>,
    /// The token authenticators TokenReview runs (`None`: TokenReview says it has none).
    pub token_authenticator: Option<Arc<crate::authn::Authenticator>>,
    /// Recent events the watch cache keeps per kind for watches from a recent resourceVersion.
    pub watch_cache_events: usize,
    /// `--service-cluster-ip-range`: where Services' ClusterIPs are allocated.
    pub service_cluster_ip_range: ipnet::IpNet,
    /// `--service-node-port-range`: where Services' nodePorts are allocated.
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
    /// How pods' log, exec, attach and portforward reach kubelets; `None`: they are refused
    /// (no `--kubelet-client-certificate`).
    pub kubelet_client: Option<crate::node_proxy::KubeletClient>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(30 * 60),
            git_version: "v1.33.0-capstan".into(),
            service_account_tokens: None,
            authorization_modes: vec![crate::authz::Mode::Rbac],
            token_authenticator: None,
            watch_cache_events: 4096,
            service_cluster_ip_range: ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 96, 0, 0),
                12,
            )),
            service_node_port_range: 30000..=32767,
            kubelet_client: None,
        }
    }
}

/// The namespaces that exist from the start, as kube-apiserver makes them.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The API server over one store.
pub struct ApiServer {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) kinds: KindTable,
    pub(crate) config: Config,
    pub(crate) admission: Vec<Box<dyn crate::admission::Plugin>>,
    pub(crate) authorizer: crate::authz::Authorizer,
    /// The served kinds with those CustomResourceDefinitions add.
    pub(crate) crds: Arc<crate::crd::Registry>,
    pub(crate) caches: crate::cache::Caches,
}

impl ApiServer {
    /// A server over `store` serving the built-in kinds; makes the system namespaces and the
    /// bootstrap RBAC policy that are missing.
    pub async fn new(store: Arc<dyn Store>, config: Config) -> ApiResult<Arc<ApiServer>> {
        let authorizer =
            crate::authz::Authorizer::start(&config.authorization_modes, Arc::clone(&store))
                .await
                .map_err(|e| ApiError::internal(format!("load the RBAC policy: {e}")))?;
        let kinds = KindTable::default();
        let crds = Arc::new(crate::crd::Registry::new(kinds.clone()));
        let server = Arc::new(ApiServer {
            store,
            kinds,
            admission: crate::admission::chain(),
            authorizer,
            crds,
            caches: crate::cache::Caches::new(config.watch_cache_events),
            config,
        });
        let revision = server
            .crds
            .reload(&server.store)
            .await
            .map_err(|e| rest::store_error(e, &crate::crd::definition_kind(), ""))?;
        server.crds.spawn_watch(Arc::clone(&server.store), revision);
        server.ensure_system_namespaces().await?;
        crate::admission::priority::ensure_system_classes(&server).await?;
        crate::default_serviceaccount::ensure_all(&server).await?;
        crate::admission::resourcequota::recalc::start(&server).await;
        crate::authz::rbac::bootstrap::reconcile(&server).await?;
        // Requests right after start see the policy just made, not the watch's lag.
        if let Some(rbac) = server.authorizer.rbac() {
            rbac.index()
                .load(&*server.store)
                .await
                .map_err(|e| ApiError::internal(format!("load the RBAC policy: {e}")))?;
        }
        crate::strategies::service_alloc::ensure_default_cidr(&server).await?;
        Ok(server)
    }

    async fn ensure_system_namespaces(&self) -> ApiResult<()> {
        let Some(namespaces) = self.kinds.find("", "v1", "namespaces").cloned() else {
            return Ok(());
        };
        for name in SYSTEM_NAMESPACES {
            let key = namespaces.key(None, name);
            let present = self
                .store
                .get(&key)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            if present.is_some() {
                continue;
            }
            let object =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let system = RequestUser::admin();
            match rest::create_object(self, &namespaces, None, object, &system, false).await {
                Ok(_) => tracing::info!(namespace = name, "created system namespace"),
                // Another API server on the same store made it first.
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The built-in kinds served.
    pub fn kinds(&self) -> &KindTable {
        &self.kinds
    }

    /// Every kind served now: the built-in ones and those CustomResourceDefinitions add.
    pub fn served(&self) -> Arc<KindTable> {
        self.crds.table()
    }

    /// Answers one request, already authenticated as `user`. The body is read here, within the
    /// 3 MiB limit; every failure is a kube `Status` response.
    pub async fn handle<B>(&self, request: Request<B>, user: &RequestUser) -> Response<ApiBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = request.into_parts();
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let body = if matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            match body::read_body(body).await {
                Ok(bytes) => bytes,
                Err(error) => return body::error_response(&error),
            }
        } else {
            Bytes::new()
        };
        let (result, warnings) =
            crate::admission::warnings::collect(self.route(&parts, body, user)).await;
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                if error.code >= 500 {
                    tracing::warn!(%method, %path, %error, "request failed");
                }
                body::error_response(&error)
            }
        };
        for warning in warnings {
            let value = crate::admission::warnings::header_value(&warning);
            if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
                response.headers_mut().append(http::header::WARNING, value);
            }
        }
        tracing::debug!(%method, %path, code = response.status().as_u16(), user = %user.name, "request");
        response
    }

    async fn route(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
        user: &RequestUser,
    ) -> ApiResult<Response<ApiBody>> {
        // One snapshot per request: definitions changing meanwhile do not move the target.
        let kinds = self.served();
        let route = route::parse(&kinds, parts.uri.path());
        let impersonated =
            crate::authz::impersonation::impersonate(&self.authorizer, user, &parts.headers)?;
        let user = impersonated.as_ref().unwrap_or(user);
        let attributes = crate::authz::attributes::Attributes::from_request(
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
        );
        self.authorizer.check(user, &attributes)?;
        if !matches!(route, Route::Resource(_)) && parts.method != Method::GET {
            return match route {
                Route::Unknown => Err(ApiError::path_not_found()),
                _ => Err(ApiError::method_not_allowed(parts.method.as_str())),
            };
        }
        let accept = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        match route {
            Route::CoreVersions => Ok(discovery::core_versions(self, accept)),
            Route::Groups => Ok(discovery::groups(self, accept)),
            Route::Group(group) => discovery::group(self, &group),
            Route::Resources(group, version) => discovery::resources(self, &group, &version),
            Route::Version => Ok(discovery::version(self)),
            Route::Health(_) => Ok(body::text_response(200, "ok")),
            Route::OpenApi(_) => openapi::serve(self, parts),
            Route::ServiceAccountIssuer(path) => crate::tokens::oidc::serve(self, &path),
            Route::Resource(target) => {
                let warnings = crate::crd::deprecation(target.kind);
                let response = rest::serve(self, parts, target, body, user).await?;
                Ok(crate::crd::with_warnings(response, &warnings))
            }
            Route::Unknown => Err(ApiError::path_not_found()),
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (as the client speaks, after ALPN on TLS) on one accepted
/// connection (plain TCP, or a TLS stream put in front), authenticating each request with
/// `auth`. Returns when the connection closes.
pub async fn serve_connection<IO>(io: IO, server: Arc<ApiServer>, auth: Arc<dyn Authenticate>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let server = Arc::clone(&server);
        let auth = Arc::clone(&auth);
        async move {
            let (parts, body) = request.into_parts();
            let response = match auth.authenticate_with(&server, &parts).await {
                Some(user) => server.handle(Request::from_parts(parts, body), &user).await,
                None => body::error_response(&ApiError::new(401, "Unauthorized", "Unauthorized")),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // Upgrades: kubectl exec/attach/port-forward ask for them over HTTP/1.1.
    if let Err(error) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Accepts connections on `listener` forever, serving each on its own task.
pub async fn serve(listener: TcpListener, server: Arc<ApiServer>, auth: Arc<dyn Authenticate>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of descriptors passes; keep serving the connections there are.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tracing::trace!(%peer, "accepted");
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            Arc::clone(&server),
            Arc::clone(&auth),
        ));
    }
}
