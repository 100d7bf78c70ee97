//! hostPort mappings without netfilter: a userspace relay listens on each mapped host port and
//! relays TCP connections ([`tcp`]) and UDP datagrams ([`udp`]) to the pod's address and
//! container port. As with any userspace proxy the pod sees the host as the peer.

mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use capstan_proto::{PortMapping, Protocol};
use tokio::task::AbortHandle;

/// Why a mapping cannot be served; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port_mappings[{index}].{field}: {reason}")]
pub struct PortMappingError {
    /// Which mapping.
    pub index: usize,
    /// Which field of it.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Checks mappings before anything is created for the sandbox.
pub fn validate(mappings: &[PortMapping]) -> Result<(), PortMappingError> {
    for (index, m) in mappings.iter().enumerate() {
        let error = |field, reason: String| PortMappingError {
            index,
            field,
            reason,
        };
        if m.host_port == 0 {
            // The kubelet passes container ports without a host port too: nothing to serve.
            continue;
        }
        if m.protocol == Protocol::Sctp as i32 {
            return Err(error(
                "protocol",
                "SCTP host ports are not implemented (TCP and UDP are)".into(),
            ));
        }
        if Protocol::try_from(m.protocol).is_err() {
            return Err(error(
                "protocol",
                format!("{} is not a protocol", m.protocol),
            ));
        }
        if !(1..=65535).contains(&m.host_port) {
            return Err(error("host_port", format!("{} is not a port", m.host_port)));
        }
        if !(1..=65535).contains(&m.container_port) {
            return Err(error(
                "container_port",
                format!("{} is not a port", m.container_port),
            ));
        }
        if !m.host_ip.is_empty() && m.host_ip.parse::<IpAddr>().is_err() {
            return Err(error(
                "host_ip",
                format!("{:?} is not an IP address", m.host_ip),
            ));
        }
    }
    Ok(())
}

/// The relays of every sandbox, by sandbox id.
#[derive(Debug, Default)]
pub struct HostPorts {
    relays: Mutex<HashMap<String, Vec<AbortHandle>>>,
}

impl HostPorts {
    /// Listens on the host ports of `mappings` and relays them to `pod_ip`. Either every port is
    /// served or none is (a port in use fails the whole set, naming it).
    pub fn open(
        &self,
        sandbox_id: &str,
        pod_ip: IpAddr,
        mappings: &[PortMapping],
    ) -> Result<(), PortMappingError> {
        let mut listeners = Vec::new();
        for (index, m) in mappings
            .iter()
            .enumerate()
            .filter(|(_, m)| m.host_port != 0)
        {
            let host_ip = m
                .host_ip
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let address = SocketAddr::new(host_ip, m.host_port as u16);
            let target = SocketAddr::new(pod_ip, m.container_port as u16);
            let listener = if m.protocol == Protocol::Udp as i32 {
                udp::listen(address).map(|socket| Listener::Udp(socket, target))
            } else {
                tcp::listen(address).map(|listener| Listener::Tcp(listener, target))
            };
            listeners.push(listener.map_err(|e| PortMappingError {
                index,
                field: "host_port",
                reason: format!("cannot listen on {address}: {e}"),
            })?);
        }
        // Spawned only once every port is bound, so a failure leaves nothing listening.
        let handles: Vec<AbortHandle> = listeners
            .into_iter()
            .map(|listener| match listener {
                Listener::Tcp(listener, target) => tokio::spawn(tcp::relay(listener, target)),
                Listener::Udp(socket, target) => tokio::spawn(udp::relay(socket, target)),
            })
            .map(|task| task.abort_handle())
            .collect();
        if let Ok(mut relays) = self.relays.lock()
            && let Some(old) = relays.insert(sandbox_id.to_string(), handles)
        {
            old.iter().for_each(AbortHandle::abort);
        }
        Ok(())
    }

    /// Stops serving the sandbox's host ports; idempotent.
    pub fn close(&self, sandbox_id: &str) {
        if let Ok(mut relays) = self.relays.lock()
            && let Some(handles) = relays.remove(sandbox_id)
        {
            // Aborting drops the listeners and UDP sessions (the ports are free again); TCP
            // connections already relayed end when either side closes.
            handles.iter().for_each(AbortHandle::abort);
        }
    }
}

/// A bound host port and where its traffic goes.
enum Listener {
    Tcp(tokio::net::TcpListener, SocketAddr),
    Udp(tokio::net::UdpSocket, SocketAddr),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(protocol: Protocol, host_port: i32, container_port: i32) -> PortMapping {
        PortMapping {
            protocol: protocol as i32,
            container_port,
            host_port,
            host_ip: String::new(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(validate(&[mapping(Protocol::Tcp, 8080, 80)]), Ok(()));
        assert_eq!(
            validate(&[mapping(Protocol::Sctp, 0, 53)]),
            Ok(()),
            "no host port, nothing to do"
        );
        let e = validate(&[
            mapping(Protocol::Tcp, 80, 80),
            mapping(Protocol::Udp, 53, 53),
            mapping(Protocol::Sctp, 54, 54),
        ])
        .unwrap_err();
        assert_eq!((e.index, e.field), (2, "protocol"));
        assert!(e.reason.contains("SCTP"), "{e}");
        let e = validate(&[mapping(Protocol::Tcp, 70000, 80)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "port_mappings[0].host_port: 70000 is not a port"
        );
    }

    #[tokio::test]
    async fn connections_are_relayed_until_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                let _ = s.write_all(b"from the pod").await;
            }
        });
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_port = free.local_addr().unwrap().port();
        drop(free);
        let ports = HostPorts::default();
        let mut m = mapping(Protocol::Tcp, i32::from(host_port), i32::from(backend_port));
        m.host_ip = "127.0.0.1".into();
        ports
            .open("s1", "127.0.0.1".parse().unwrap(), &[m.clone()])
            .unwrap();
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
            .await
            .unwrap();
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "from the pod");
        // A second sandbox cannot take the same port, and says which.
        let e = HostPorts::default()
            .open("s2", "127.0.0.1".parse().unwrap(), &[m])
            .unwrap_err();
        assert_eq!(e.field, "host_port");
        ports.close("s1");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", host_port))
                .await
                .is_err()
        );
    }
}
