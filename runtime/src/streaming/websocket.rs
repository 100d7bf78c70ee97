//! Exec and attach over WebSocket, the `channel.k8s.io` protocols: every binary message starts
//! with its channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize). v4 and v5 write a JSON
//! Status on the error channel; v5 adds message `[255, channel]`, the client closing a channel
//! (how stdin gets its EOF).

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::session::{ResizeDecoder, SessionIo};
use super::{Target, run_command};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

/// Runs the session of `target` on `socket`, negotiated as `protocol`.
pub(super) async fn serve_command<S>(socket: WebSocketStream<S>, protocol: &str, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let version = match protocol {
        "v5.channel.k8s.io" => 5,
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        _ => 2,
    };
    let flags = target.streams();
    let (mut sink, mut source) = socket.split();
    let (messages, mut outgoing) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        // Normal closure (1000): client-go takes it as the end of every channel; a close
        // without a code would be an error to it.
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });

    // Tell the client the connection is up: an empty message on the lowest channel it reads.
    let first = if flags.stdout {
        STDOUT
    } else if flags.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = messages.send(frame(first, &[])).await;

    let (hangup_tx, hangup) = watch::channel(false);
    let (stdin_tx, stdin) = channel_if::<Bytes>(flags.stdin);
    let (resize_tx, resize) = channel_if(flags.tty && version >= 3);
    let reader = tokio::spawn(async move {
        let mut stdin_tx = stdin_tx;
        let mut sizes = ResizeDecoder::default();
        while let Some(message) = source.next().await {
            let data = match message {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin_tx
                        && !payload.is_empty()
                        && tx.send(Bytes::copy_from_slice(payload)).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                RESIZE => {
                    if let Some(tx) = &resize_tx {
                        for size in sizes.push(payload) {
                            let _ = tx.send(size).await;
                        }
                    }
                }
                CLOSE if version >= 5 && payload.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
        let _ = hangup_tx.send(true);
    });

    let mut forwarders = Vec::new();
    let mut output = |enabled: bool, channel: u8| {
        if !enabled {
            return None;
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let messages = messages.clone();
        forwarders.push(tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if messages.send(frame(channel, &data)).await.is_err() {
                    return;
                }
            }
        }));
        Some(tx)
    };
    let stdout = output(flags.stdout, STDOUT);
    let stderr = output(flags.stderr && !flags.tty, STDERR);
    let io = SessionIo {
        stdin,
        stdout,
        stderr,
        resize,
        hangup,
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
        let _ = messages.send(frame(ERROR, &status)).await;
    }
    drop(messages);
    let _ = writer.await;
    // Let the client answer the close before the connection goes.
    let abort = reader.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .is_err()
    {
        abort.abort();
    }
}

fn channel_if<T>(enabled: bool) -> (Option<mpsc::Sender<T>>, Option<mpsc::Receiver<T>>) {
    if enabled {
        let (tx, rx) = mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}
