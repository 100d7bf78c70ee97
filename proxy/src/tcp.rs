//! One TCP frontend: a listener on the VIP (or node) port that joins each connection to a
//! ready endpoint, round robin. The listener exists only while there are endpoints, so a
//! connection to a Service with none is refused by the kernel at once (RST to the SYN), as
//! upstream refuses it, instead of being accepted and dropped. Connections already relayed
//! keep flowing when endpoints change or the frontend goes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The endpoints behind a frontend.
pub type Endpoints = Arc<Vec<SocketAddr>>;

/// Longest wait between attempts to bind a port something else holds.
const MAX_BIND_BACKOFF: Duration = Duration::from_secs(30);
/// How long a connection to one endpoint may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A running TCP frontend; dropping it closes its listener.
#[derive(Debug)]
pub struct TcpFrontend {
    endpoints: watch::Sender<Endpoints>,
    task: JoinHandle<()>,
}

impl TcpFrontend {
    /// Serves `at` for Service port `owner` with `endpoints`.
    pub fn start(at: SocketAddr, endpoints: Vec<SocketAddr>, owner: String) -> Self {
        let (sender, receiver) = watch::channel(Arc::new(endpoints));
        let task = tokio::spawn(serve(at, receiver, owner));
        TcpFrontend {
            endpoints: sender,
            task,
        }
    }

    /// Replaces the endpoints; new connections go to these.
    pub fn update(&self, endpoints: Vec<SocketAddr>) {
        self.endpoints.send_if_modified(|current| {
            if **current == endpoints {
                return false;
            }
            *current = Arc::new(endpoints);
            true
        });
    }
}

impl Drop for TcpFrontend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn listen(at: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if at.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(at)?;
    socket.listen(1024)
}

async fn serve(at: SocketAddr, mut endpoints: watch::Receiver<Endpoints>, owner: String) {
    let next = AtomicUsize::new(0);
    let mut backoff = Duration::from_millis(500);
    let mut warned = false;
    loop {
        while endpoints.borrow_and_update().is_empty() {
            tracing::debug!(%at, service = %owner, "no ready endpoints: not listening, connections are refused");
            if endpoints.changed().await.is_err() {
                return;
            }
        }
        let listener = match listen(at) {
            Ok(listener) => listener,
            Err(error) => {
                if warned {
                    tracing::debug!(%at, service = %owner, %error, "service port still not bound");
                } else {
                    tracing::warn!(%at, service = %owner, %error, "cannot listen on the service port; retrying");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BIND_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        warned = false;
        tracing::debug!(%at, service = %owner, "listening");
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((client, _peer)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let list = Arc::clone(&endpoints.borrow());
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(relay(client, list, first));
                }
                changed = endpoints.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if endpoints.borrow().is_empty() {
                        // Dropping the listener: from now on the kernel refuses.
                        break;
                    }
                }
            }
        }
    }
}

/// Joins `client` to the first endpoint from `first` on that answers.
async fn relay(mut client: TcpStream, endpoints: Endpoints, first: usize) {
    let _ = client.set_nodelay(true);
    for offset in 0..endpoints.len() {
        let target = endpoints[(first + offset) % endpoints.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Ok(Err(error)) => tracing::debug!(%target, %error, "endpoint refused; trying the next"),
            Err(_) => tracing::debug!(%target, "endpoint did not answer; trying the next"),
        }
    }
    // No endpoint answered: reset rather than close, so the client sees a failure.
    let _ = client.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.write_all(reply).await;
                });
            }
        });
        at
    }

    async fn read_from(at: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(at).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn connections_alternate_and_none_left_is_refused() {
        let a = echo_server(b"a").await;
        let b = echo_server(b"b").await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let frontend = TcpFrontend::start(port, vec![a, b], "ns/web:http".into());
        let mut seen = Vec::new();
        for _ in 0..50 {
            match read_from(port).await {
                Ok(reply) => {
                    seen.push(reply);
                    if seen.len() == 4 {
                        break;
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert_eq!(
            seen,
            [b"a".to_vec(), b"b".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        frontend.update(Vec::new());
        let mut refused = false;
        for _ in 0..50 {
            match TcpStream::connect(port).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    refused = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(refused, "a frontend without endpoints still accepts");
        frontend.update(vec![b]);
        let mut back = None;
        for _ in 0..50 {
            if let Ok(reply) = read_from(port).await {
                back = Some(reply);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(back.as_deref(), Some(&b"b"[..]));
    }
}
