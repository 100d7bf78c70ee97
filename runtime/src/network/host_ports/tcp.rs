//! The TCP relay of a host port: every accepted connection is joined to a new connection to the
//! pod.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// How long the relay waits after a failed accept before trying again.
const ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Binds the host port; tokio-ready.
pub(super) fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Serves until aborted; each connection's copy runs in a task of its own.
pub(super) async fn relay(listener: TcpListener, target: SocketAddr) {
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: back off rather than spin.
                tracing::debug!(%target, error = %e, "hostPort relay: accept failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(target).await {
                Ok(mut pod) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut pod).await;
                }
                Err(e) => {
                    tracing::debug!(%peer, %target, error = %e, "hostPort relay: pod unreachable")
                }
            }
        });
    }
}
