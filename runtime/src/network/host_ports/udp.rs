//! The UDP relay of a host port. UDP has no connections, so the relay keeps a session per
//! client address: a socket connected to the pod, whose replies go back to that client from
//! the host port. A session ends after it has been idle for [`SESSION_IDLE`], like a conntrack
//! entry, and the number of sessions is bounded so a flood of source addresses cannot exhaust
//! the daemon's descriptors.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

/// How long a client may be silent, both ways, before its session is dropped.
const SESSION_IDLE: Duration = Duration::from_secs(60);
/// At most this many clients at once per host port; datagrams of further clients are dropped.
const MAX_SESSIONS: usize = 1024;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Binds the host port; tokio-ready.
pub(super) fn listen(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(address)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// One client's path to the pod. Dropping it stops relaying the pod's replies.
struct Session {
    to_pod: Arc<UdpSocket>,
    replies: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Serves until aborted (which drops every session with it).
pub(super) async fn relay(socket: UdpSocket, target: SocketAddr) {
    let socket = Arc::new(socket);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut datagram = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut datagram).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "hostPort UDP relay: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if sessions
            .get(&client)
            .is_some_and(|s| s.replies.is_finished())
        {
            sessions.remove(&client);
        }
        if !sessions.contains_key(&client) {
            if sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, s| !s.replies.is_finished());
            }
            if sessions.len() >= MAX_SESSIONS {
                tracing::debug!(%client, "hostPort UDP relay: too many clients; datagram dropped");
                continue;
            }
            match open_session(&socket, client, target).await {
                Ok(session) => {
                    sessions.insert(client, session);
                }
                Err(e) => {
                    tracing::debug!(%client, %target, error = %e, "hostPort UDP relay: pod unreachable");
                    continue;
                }
            }
        }
        if let Some(session) = sessions.get(&client)
            && let Err(e) = session.to_pod.send(&datagram[..len]).await
        {
            tracing::debug!(%client, %target, error = %e, "hostPort UDP relay: send to the pod failed");
        }
    }
}

/// A socket connected to the pod, and a task that returns what the pod sends on it to `client`
/// until the session has been idle long enough.
async fn open_session(
    host_port: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
) -> std::io::Result<Session> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let to_pod = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    to_pod.connect(target).await?;
    let to_pod = Arc::new(to_pod);
    let from_pod = Arc::clone(&to_pod);
    let host_port = Arc::clone(host_port);
    let replies = tokio::spawn(async move {
        let mut reply = vec![0u8; MAX_DATAGRAM];
        loop {
            match tokio::time::timeout(SESSION_IDLE, from_pod.recv(&mut reply)).await {
                Ok(Ok(len)) => {
                    let _ = host_port.send_to(&reply[..len], client).await;
                }
                // An ICMP error from the pod (nothing listening yet) surfaces here; the
                // client may retry, so the session stays.
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
    })
    .abort_handle();
    Ok(Session { to_pod, replies })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_client_gets_its_own_replies_until_the_relay_stops() {
        // A pod stand-in that answers every datagram with "pod:" and what it got.
        let pod = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = pod.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 128];
            while let Ok((len, from)) = pod.recv_from(&mut buf).await {
                let mut answer = b"pod:".to_vec();
                answer.extend_from_slice(&buf[..len]);
                let _ = pod.send_to(&answer, from).await;
            }
        });
        let host_port = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = host_port.local_addr().unwrap();
        let relay = tokio::spawn(relay(host_port, target));

        let ask = |client: Arc<UdpSocket>, text: &'static str| async move {
            client.send_to(text.as_bytes(), address).await.unwrap();
            let mut buf = [0u8; 128];
            let (len, from) =
                tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                    .await
                    .expect("a reply through the relay")
                    .unwrap();
            assert_eq!(from, address, "replies come from the host port");
            String::from_utf8_lossy(&buf[..len]).to_string()
        };
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        assert_eq!(ask(a.clone(), "one").await, "pod:one");
        assert_eq!(ask(b.clone(), "two").await, "pod:two");
        assert_eq!(ask(a.clone(), "three").await, "pod:three");

        relay.abort();
        let _ = relay.await;
        // The port is free again once the relay is gone.
        std::net::UdpSocket::bind(address).expect("the host port is released");
    }
}
