//! HTTPS serving: the TLS handshake with the cluster's serving certificate, then every request
//! of the connection authenticated from its client certificate or bearer token before the REST
//! handler sees it.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use futures::future::BoxFuture;

use crate::authn::serviceaccount::check_still_valid;
use crate::authn::{Authenticated, Authenticator, Method};
use crate::server::{ApiServer, Authenticate, RequestUser, serve_connection};
use crate::tokens::lookup::StoreLookup;

/// How long a client may take over the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections on `listener` until `shutdown` completes, serving each on a task of
/// its own.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<ApiServer>,
    authenticator: Arc<Authenticator>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of descriptors passes; keep serving the connections there are.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = Arc::clone(&server);
        let authenticator = Arc::clone(&authenticator);
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let peer_certificates = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect());
            let auth = Arc::new(ConnectionAuth {
                authenticator,
                peer_certificates,
            });
            serve_connection(stream, server, auth).await;
        });
    }
}

/// Authenticates the requests of one TLS connection: its client certificate (judged by the
/// authenticator, which checks the chain) and each request's `Authorization` header.
struct ConnectionAuth {
    authenticator: Arc<Authenticator>,
    peer_certificates: Option<Vec<CertificateDer<'static>>>,
}

impl ConnectionAuth {
    fn authenticated(&self, request: &http::request::Parts) -> Option<Authenticated> {
        let authorization = request
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        match self
            .authenticator
            .authenticate(self.peer_certificates.as_deref(), authorization)
        {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::debug!(%error, path = %request.uri.path(), "unauthenticated request");
                None
            }
        }
    }
}

fn request_user(found: Authenticated) -> RequestUser {
    RequestUser {
        uid: (!found.user.uid.is_empty()).then_some(found.user.uid),
        name: found.user.name,
        groups: found.user.groups,
    }
}

impl Authenticate for ConnectionAuth {
    fn authenticate(&self, request: &http::request::Parts) -> Option<RequestUser> {
        // A bootstrap token needs its Secret read: only the async path can accept it.
        self.authenticated(request)
            .filter(|found| !matches!(found.method, Method::BootstrapToken(_)))
            .map(request_user)
    }

    fn authenticate_with<'a>(
        &'a self,
        server: &'a ApiServer,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Option<RequestUser>> {
        Box::pin(async move {
            let mut found = self.authenticated(request)?;
            if let Method::BootstrapToken(token) = &found.method {
                match StoreLookup(server).bootstrap_user(token).await {
                    Ok(user) => found.user = user,
                    Err(error) => {
                        tracing::debug!(%error, path = %request.uri.path(), "bootstrap token refused");
                        return None;
                    }
                }
            }
            if let Method::ServiceAccount(claims) = &found.method {
                // The account (and what the token is bound to) must still exist, as
                // kube-apiserver's --service-account-lookup checks.
                if let Err(error) = check_still_valid(claims, &StoreLookup(server)).await {
                    tracing::debug!(%error, path = %request.uri.path(), "service account token refused");
                    return None;
                }
            }
            Some(request_user(found))
        })
    }
}
