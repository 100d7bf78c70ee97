//! Port-forward. Over SPDY (`portforward.k8s.io`, also tunneled through WebSocket): for each
//! forwarded connection the client opens an `error` and a `data` stream carrying the same
//! `port` and `requestid` headers; the server connects to 127.0.0.1:port inside the pod's
//! network namespace and relays the data stream, writing a failure as text on the error
//! stream. Over WebSocket channels (`v4.channel.k8s.io`): see `serve_websocket`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::PortForwardTarget;
use super::spdy::{Connection, IncomingStream, Writer};

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the other direction may go on once one has ended (as containerd).
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pair {
    error: Option<IncomingStream>,
    data: Option<IncomingStream>,
}

/// Serves port-forward requests on the upgraded connection `io` until the client closes it.
pub(super) async fn serve_spdy<S>(io: S, target: PortForwardTarget)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut connection = match Connection::start(io) {
        Ok(connection) => connection,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a SPDY connection");
            return;
        }
    };
    tracing::info!(sandbox = %target.sandbox_id, "port-forward session started");
    let writer = connection.writer();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = connection.accept().await {
        writer.reply(stream.id).await;
        // Clients before requestID paired streams by order; every kubectl since 1.6 sends it.
        let request = stream.header("requestid").unwrap_or_default().to_string();
        let pair = pairs.entry(request.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            other => {
                tracing::debug!(?other, "ignoring a port-forward stream of unknown type");
                writer.finish(stream.id).await;
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&request)
            else {
                continue;
            };
            tokio::spawn(forward(error, data, target.clone(), writer.clone()));
        }
    }
    drop(writer);
    connection.close(Duration::from_secs(1)).await;
    tracing::info!(sandbox = %target.sandbox_id, "port-forward session ended");
}

async fn forward(
    error: IncomingStream,
    data: IncomingStream,
    target: PortForwardTarget,
    writer: Writer,
) {
    let port = data
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    tracing::debug!(sandbox = %target.sandbox_id, ?port, request = data.header("requestid"), "forwarding a connection");
    let result = match port {
        Some(port) => dial(target.netns.clone(), port).await.map_err(|e| {
            format!(
                "error forwarding port {port} to pod {}: {e}",
                target.sandbox_id
            )
        }),
        None => Err(format!(
            "invalid port {:?} in port-forward request",
            data.header("port").unwrap_or_default()
        )),
    };
    match result {
        Ok(connection) => {
            let (to_client, mut outgoing) = mpsc::channel::<Bytes>(16);
            let id = data.id;
            let sending = async {
                while let Some(bytes) = outgoing.recv().await {
                    writer.data(id, bytes).await;
                }
            };
            tokio::join!(relay(connection, data.data, to_client), sending);
            writer.finish(data.id).await;
        }
        Err(message) => {
            tracing::info!(sandbox = %target.sandbox_id, %message, "port-forward failed");
            writer.data(error.id, Bytes::from(message)).await;
            writer.finish(data.id).await;
        }
    }
    writer.finish(error.id).await;
}

/// Relays until one direction ends, gives the other a moment, then closes both.
async fn relay(
    connection: TcpStream,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: mpsc::Sender<Bytes>,
) {
    let (mut read, mut write) = connection.into_split();
    let upstream = async {
        while let Some(data) = from_client.recv().await {
            if write.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client
                        .send(Bytes::copy_from_slice(&buffer[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        () = &mut upstream => {
            let _ = tokio::time::timeout(HALF_CLOSE_GRACE, &mut downstream).await;
        }
        () = &mut downstream => {
            let _ = tokio::time::timeout(HALF_CLOSE_GRACE, &mut upstream).await;
        }
    }
}

/// Ports of a WebSocket port-forward request: its `port` query parameters (repeated or
/// comma-separated), each 1–65535.
pub fn ports_of_query(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        for port in value.split("%2C").flat_map(|p| p.split(',')) {
            match port.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("port {port:?} is not a port number (1-65535)")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Port-forward over WebSocket (`v4.channel.k8s.io`, or no subprotocol), the kubelet's older
/// protocol that non-Go clients use: one connection per port named in the URL; port `i` gets
/// data channel `2i` and error channel `2i+1`, each opened by the server with the port as two
/// little-endian bytes. The session ends when every connection has.
pub(super) async fn serve_websocket<S>(
    socket: WebSocketStream<S>,
    target: PortForwardTarget,
    ports: Vec<u16>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    let (messages, mut outgoing) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });
    let frame = |channel: usize, data: &[u8]| {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(channel as u8);
        bytes.extend_from_slice(data);
        Message::Binary(bytes.into())
    };
    let mut inputs = Vec::new();
    let mut forwards = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (input, from_client) = mpsc::channel::<Bytes>(16);
        inputs.push(input);
        let _ = messages.send(frame(2 * i, &port.to_le_bytes())).await;
        let _ = messages.send(frame(2 * i + 1, &port.to_le_bytes())).await;
        let messages = messages.clone();
        let target = target.clone();
        forwards.push(tokio::spawn(async move {
            match dial(target.netns.clone(), port).await {
                Ok(connection) => {
                    let (to_client, mut outgoing) = mpsc::channel::<Bytes>(16);
                    let sending = async {
                        while let Some(bytes) = outgoing.recv().await {
                            if messages.send(frame(2 * i, &bytes)).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::join!(relay(connection, from_client, to_client), sending);
                }
                Err(e) => {
                    let message = format!(
                        "error forwarding port {port} to pod {}: {e}",
                        target.sandbox_id
                    );
                    tracing::info!(%message, "port-forward failed");
                    let _ = messages.send(frame(2 * i + 1, message.as_bytes())).await;
                }
            }
        }));
    }
    drop(messages);
    // Client data for channel 2i (its first byte) goes to connection i; other channels are
    // the server's to write.
    let reader = tokio::spawn(async move {
        let mut inputs: Vec<Option<mpsc::Sender<Bytes>>> = inputs.into_iter().map(Some).collect();
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            let channel = channel as usize;
            if channel % 2 == 0
                && let Some(slot) = inputs.get_mut(channel / 2)
                && let Some(input) = slot
                && !payload.is_empty()
                && input.send(Bytes::copy_from_slice(payload)).await.is_err()
            {
                *slot = None;
            }
        }
    });
    for forward in forwards {
        let _ = forward.await;
    }
    let _ = writer.await;
    let abort = reader.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Connects to `port` on the loopback (127.0.0.1, then ::1 for servers that listen only there)
/// in the network namespace pinned at `netns`, the host's when None. The socket is created on
/// a dedicated thread that enters the namespace and then ends: a socket stays in the namespace
/// it was created in, and no tokio worker ever changes its own.
pub async fn dial(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-dial".into())
        .spawn(move || {
            let _ = done.send(connect_in(netns.as_deref(), port));
        })?;
    let stream = result
        .await
        .map_err(|_| std::io::Error::other("the dialing thread died"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

fn connect_in(netns: Option<&Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(netns) = netns {
        let namespace = std::fs::File::open(netns)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", netns.display())))?;
        nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::other(format!("enter {}: {e}", netns.display())))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            // The IPv4 error says more when nothing listens on either.
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(
            super::ports_of_query("port=8080&port=9090"),
            Ok(vec![8080, 9090])
        );
        assert_eq!(super::ports_of_query("port=80%2C443"), Ok(vec![80, 443]));
        assert!(super::ports_of_query("").is_err());
        assert!(super::ports_of_query("port=0").is_err());
        assert!(super::ports_of_query("port=http").is_err());
    }
}
