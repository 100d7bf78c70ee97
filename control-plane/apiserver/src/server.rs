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
    /// `--service-cluster-ip-range`: where Services' ClusterIPs are allocated.
    pub service_cluster_ip_range: ipnet::IpNet,
    /// `--service-node-port-range`: where Services' nodePorts are allocated.
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(30 * 60),
            git_version: "v1.33.0-capstan".into(),
            service_cluster_ip_range: ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 96, 0, 0),
                12,
            )),
            service_node_port_range: 30000..=32767,
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
}

impl ApiServer {
    /// A server over `store` serving the built-in kinds; makes the system namespaces that are
    /// missing.
    pub async fn new(store: Arc<dyn Store>, config: Config) -> ApiResult<Arc<ApiServer>> {
        let server = Arc::new(ApiServer {
            store,
            kinds: KindTable::default(),
            config,
            admission: crate::admission::chain(),
        });
        server.ensure_system_namespaces().await?;
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

    /// The kinds served.
    pub fn kinds(&self) -> &KindTable {
        &self.kinds
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
        let response = match self.route(&parts, body, user).await {
            Ok(response) => response,
            Err(error) => {
                if error.code >= 500 {
                    tracing::warn!(%method, %path, %error, "request failed");
                }
                body::error_response(&error)
            }
        };
        tracing::debug!(%method, %path, code = response.status().as_u16(), user = %user.name, "request");
        response
    }

    async fn route(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
        user: &RequestUser,
    ) -> ApiResult<Response<ApiBody>> {
        let route = route::parse(&self.kinds, parts.uri.path());
        crate::authz::authorize(user, &parts.method, parts.uri.path(), &route)?;
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
            Route::OpenApi(path) => openapi::serve(self, &path, accept),
            Route::Resource(target) => rest::serve(self, parts, target, body, user).await,
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
            let response = match auth.authenticate(&parts) {
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
