//! The TCP relay of a host port: every accepted connection is joined to a new connection to the
//! pod.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds the host port; tokio-ready.
pub(super) fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Serves until aborted; each connection's copy runs in a task of its own.
pub(super) async fn relay(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut client, peer)) = listener.accept().await else {
            continue;
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
