//! Exec and attach over SPDY (`v2`–`v4.channel.k8s.io`): the client opens one stream per
//! standard stream, named by its `streamtype` header (error, stdin, stdout, stderr, resize),
//! the server answers each, relays, writes how it ended on the error stream (v4: a JSON
//! Status) and closes every stream.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::session::{ResizeDecoder, SessionIo};
use super::spdy::{Connection, IncomingStream};
use super::{Target, run_command};

/// How long the client has to open its streams (the kubelet's stream creation timeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the client to close the connection once we are done.
const LINGER: Duration = Duration::from_secs(5);

/// Runs the session of `target` on the upgraded connection `io`.
pub(super) async fn serve<S>(io: S, protocol: &str, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let version = match protocol {
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        _ => 2,
    };
    let mut connection = match Connection::start(io) {
        Ok(connection) => connection,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a SPDY connection");
            return;
        }
    };
    let flags = target.streams();
    let mut expected = vec!["error"];
    if flags.stdin {
        expected.push("stdin");
    }
    if flags.stdout {
        expected.push("stdout");
    }
    if flags.stderr && !flags.tty {
        expected.push("stderr");
    }
    if flags.tty && version >= 3 {
        expected.push("resize");
    }
    let writer = connection.writer();
    let mut streams: HashMap<String, IncomingStream> = HashMap::new();
    let mut opened = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !expected.iter().all(|kind| streams.contains_key(*kind)) {
        match tokio::time::timeout_at(deadline, connection.accept()).await {
            Ok(Some(stream)) => {
                writer.reply(stream.id).await;
                opened.push(stream.id);
                let kind = stream.header("streamtype").unwrap_or_default().to_string();
                streams.insert(kind, stream);
            }
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(?expected, got = ?streams.keys().collect::<Vec<_>>(), "client did not open its streams in time");
                connection.close(LINGER).await;
                return;
            }
        }
    }
    let error_id = streams.get("error").map(|s| s.id).unwrap_or_default();

    let stdin = streams.remove("stdin").map(|s| s.data);
    let resize = streams.remove("resize").map(|mut stream| {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut sizes = ResizeDecoder::default();
            while let Some(data) = stream.data.recv().await {
                for size in sizes.push(&data) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    });
    let mut forwarders = Vec::new();
    let mut output = |kind: &str| {
        let id = streams.get(kind)?.id;
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let writer = writer.clone();
        forwarders.push(tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                writer.data(id, data).await;
            }
        }));
        Some(tx)
    };
    let stdout = output("stdout");
    let stderr = output("stderr");
    // What the client may still send on the rest (nothing, normally) is dropped unread, so it
    // cannot hold up the connection's reader.
    drop(streams);
    let io = SessionIo {
        stdin,
        stdout,
        stderr,
        resize,
        hangup: connection.hangup(),
    };
    let outcome = run_command(target, io).await;
    for forwarder in forwarders {
        let _ = forwarder.await;
    }
    let status = if version >= 4 {
        outcome.status_json()
    } else {
        outcome.status_text()
    };
    if !status.is_empty() {
        writer.data(error_id, Bytes::from(status)).await;
    }
    // The client reads stdout, stderr and error to their end before it is done.
    for id in opened {
        writer.finish(id).await;
    }
    drop(writer);
    connection.close(LINGER).await;
}
