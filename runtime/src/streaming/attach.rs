//! Attach: the container's own stdio, which its pod monitor holds. The daemon connects to the
//! monitor's socket per session (nothing of it lives in the daemon, so a restarted daemon
//! loses no container stdio), relays the output frames the monitor sends and the client's
//! stdin, and ends when the container's output ends or the client leaves.

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::AttachTarget;
use super::session::{Outcome, SessionIo, TermSize};
use crate::monitor::attach::{self as frames, Parser};
use crate::monitor::protocol::{MAX_LINE, Reply, Request};

/// Runs the attach session to its end.
pub async fn run(target: AttachTarget, io: SessionIo) -> Outcome {
    let socket = target.run_dir.join(crate::monitor::SOCKET_NAME);
    let stream = match UnixStream::connect(&socket).await {
        Ok(stream) => stream,
        Err(e) => return Outcome::Failed(format!("pod monitor at {}: {e}", socket.display())),
    };
    let (read, mut write) = stream.into_split();
    let request = Request::Attach {
        id: target.container_id.clone(),
        stdin: io.stdin.is_some(),
    };
    let mut line = match serde_json::to_vec(&request) {
        Ok(line) => line,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    line.push(b'\n');
    if let Err(e) = write.write_all(&line).await {
        return Outcome::Failed(format!("pod monitor: {e}"));
    }
    let mut read = BufReader::new(read);
    let mut reply = String::new();
    match (&mut read)
        .take(MAX_LINE as u64)
        .read_line(&mut reply)
        .await
    {
        Ok(0) | Err(_) => return Outcome::Failed("the pod monitor hung up".into()),
        Ok(_) => {}
    }
    match serde_json::from_str::<Reply>(&reply) {
        Ok(Reply::Ok) => {}
        Ok(Reply::Error { message }) => return Outcome::Failed(message),
        other => return Outcome::Failed(format!("pod monitor answered {other:?}")),
    }

    // Without stdin there is no EOF to end on: only the output's end or a hangup ends it.
    let detach_at_eof = target.detach_at_stdin_eof && io.stdin.is_some();
    let mut input = tokio::spawn(send_input(write, io.stdin, io.resize));
    let output = async {
        let mut parser = Parser::default();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let Ok(frames) = parser.push(&buffer[..n]) else {
                return;
            };
            for (kind, data) in frames {
                let to = match kind {
                    frames::STDOUT => &io.stdout,
                    frames::STDERR if io.stderr.is_some() => &io.stderr,
                    // A terminal's single stream, or stderr the client did not ask for.
                    frames::STDERR => &None,
                    _ => &None,
                };
                if let Some(to) = to {
                    let _ = to.send(Bytes::from(data)).await;
                }
            }
        }
    };
    let mut hangup = io.hangup;
    let gone = async move {
        while !*hangup.borrow_and_update() {
            if hangup.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let stdin_ended = async {
        if !detach_at_eof {
            return std::future::pending::<()>().await;
        }
        // Whether the monitor was told (StdinClosed) or its connection broke, no more input
        // comes; the connection closes with the session.
        let _ = (&mut input).await;
    };
    tokio::select! {
        () = output => {}
        () = gone => {}
        () = stdin_ended => {
            tracing::debug!(container = %target.container_id, "the client's stdin ended; detaching");
        }
    }
    input.abort();
    Outcome::Done
}

/// How the client's input ended.
enum InputEnd {
    /// Its stdin closed and the monitor was told; the connection is handed back so that it
    /// stays open (dropping a write half shuts it down) while output goes on.
    StdinClosed(#[allow(dead_code)] OwnedWriteHalf),
    /// The monitor's connection failed.
    Broken,
}

/// Sends the client's stdin and terminal sizes to the monitor. Returns when the client's stdin
/// ends (after telling the monitor) or the connection breaks; without stdin it runs until
/// aborted, keeping the connection open for output (only the monitor ends that).
async fn send_input(
    mut write: OwnedWriteHalf,
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: Option<mpsc::Receiver<TermSize>>,
) -> InputEnd {
    let had_stdin = stdin.is_some();
    let (mut stdin, mut resize) = (stdin, resize);
    while stdin.is_some() || resize.is_some() {
        let frame = tokio::select! {
            data = recv(&mut stdin) => match data {
                Some(data) => data
                    .chunks(frames::MAX_FRAME)
                    .flat_map(|chunk| frames::encode(frames::STDIN, chunk))
                    .collect(),
                None => {
                    if write
                        .write_all(&frames::encode(frames::STDIN_CLOSE, &[]))
                        .await
                        .is_err()
                    {
                        return InputEnd::Broken;
                    }
                    return InputEnd::StdinClosed(write);
                }
            },
            size = recv(&mut resize) => match size {
                Some(size) => {
                    let mut payload = size.width.to_be_bytes().to_vec();
                    payload.extend_from_slice(&size.height.to_be_bytes());
                    frames::encode(frames::RESIZE, &payload)
                }
                None => {
                    resize = None;
                    continue;
                }
            },
        };
        if write.write_all(&frame).await.is_err() {
            return InputEnd::Broken;
        }
    }
    debug_assert!(!had_stdin, "stdin's end returns above");
    // No stdin: keep the connection open for output; only the monitor ends the session.
    std::future::pending::<InputEnd>().await
}

/// The next item of an optional channel; never, without one.
async fn recv<T>(channel: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match channel {
        Some(channel) => channel.recv().await,
        None => std::future::pending().await,
    }
}
