//! A transport that hands requests straight to an [`ApiServer`]: what the scheduler and the
//! controllers use when they share the API server's process (`capstan control-plane`,
//! `capstan server`), so that they stay API clients without a socket or TLS in between.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;

use crate::body::ApiBody;
use crate::server::{ApiServer, RequestUser};

/// A `tower::Service` answering each request with [`ApiServer::handle`] as one fixed user; give
/// it to `kube::Client::new`. Authorization and admission run exactly as for remote clients.
#[derive(Clone)]
pub struct InProcess {
    server: Arc<ApiServer>,
    user: Arc<RequestUser>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("user", &self.user.name)
            .finish()
    }
}

impl InProcess {
    /// Requests to `server`, authenticated as `user`.
    pub fn new(server: Arc<ApiServer>, user: RequestUser) -> InProcess {
        InProcess {
            server,
            user: Arc::new(user),
        }
    }

    /// Requests to `server` as the scheduler, `system:kube-scheduler`.
    pub fn scheduler(server: Arc<ApiServer>) -> InProcess {
        InProcess::new(server, component_user("system:kube-scheduler"))
    }

    /// Requests to `server` as the controller manager, `system:kube-controller-manager`.
    pub fn controller_manager(server: Arc<ApiServer>) -> InProcess {
        InProcess::new(server, component_user("system:kube-controller-manager"))
    }

    /// Requests to `server` as the control plane's own administrator, `system:admin`, for the
    /// objects it publishes at start (cluster-info and the join bindings).
    pub fn admin(server: Arc<ApiServer>) -> InProcess {
        InProcess::new(server, component_user("system:admin"))
    }
}

/// One of the control plane's own users. They are also in system:masters until the bootstrap
/// roles of the scheduler and the controllers cover all they do.
fn component_user(name: &str) -> RequestUser {
    RequestUser {
        name: name.into(),
        uid: None,
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

/// A request body error, carried as `std::io::Error` because [`ApiServer::handle`] wants a
/// concrete error type.
fn body_error(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::other(error)
}

impl<B> tower::Service<Request<B>> for InProcess
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ApiBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ApiBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let server = Arc::clone(&self.server);
        let user = Arc::clone(&self.user);
        Box::pin(async move {
            let request = request.map(|body| body.map_err(body_error));
            Ok(server.handle(request, &user).await)
        })
    }
}
