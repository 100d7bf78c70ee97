//! Port-forward over SPDY (`portforward.k8s.io`): for each forwarded connection the client
//! opens an `error` and a `data` stream carrying the same `port` and `requestid` headers; the
//! server connects to 127.0.0.1:port inside the pod's network namespace and relays the data
//! stream, writing a failure as text on the error stream.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

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
        Ok(connection) => relay(connection, data.data, data.id, &writer).await,
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
    mut from_client: tokio::sync::mpsc::Receiver<Bytes>,
    stream: u32,
    writer: &Writer,
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
                    writer
                        .data(stream, Bytes::copy_from_slice(&buffer[..n]))
                        .await
                }
            }
        }
        writer.finish(stream).await;
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

/// Connects to 127.0.0.1:`port` in the network namespace pinned at `netns` (the host's when
/// None). The socket is created on a dedicated thread that enters the namespace and then
/// ends: a socket stays in the namespace it was created in, and no tokio worker ever changes
/// its own.
pub async fn dial(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Some(netns) = netns else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?;
    };
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-dial".into())
        .spawn(move || {
            let _ = done.send(connect_in(&netns, address));
        })?;
    let stream = result
        .await
        .map_err(|_| std::io::Error::other("the dialing thread died"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

fn connect_in(netns: &Path, address: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let namespace = std::fs::File::open(netns)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", netns.display())))?;
    nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| std::io::Error::other(format!("enter {}: {e}", netns.display())))?;
    std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
}
