//! What an exec or attach session exchanges with its client, whatever the wire protocol:
//! stdin in, stdout and stderr out, terminal resizes in, and how it ended, written on the error
//! stream the way the kubelet writes it.

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

/// A terminal size, as the client sends it on the resize stream (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of a session, as channels: a closed `stdin` is EOF, a closed output
/// means the client stopped reading.
#[derive(Debug)]
pub struct SessionIo {
    /// What the client types, if it asked for stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Standard output (and standard error, with a TTY).
    pub stdout: Option<mpsc::Sender<Bytes>>,
    /// Standard error (never with a TTY).
    pub stderr: Option<mpsc::Sender<Bytes>>,
    /// Terminal size changes, with a TTY.
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Becomes true when the client goes away.
    pub hangup: watch::Receiver<bool>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this status.
    Exited(i32),
    /// The session ended without an exit status (attach: the client detached, or the
    /// container's output ended).
    Done,
    /// It could not run; the message says why.
    Failed(String),
}

impl Outcome {
    /// The error stream's content for protocol v4 and later: a JSON `metav1.Status`. A non-zero
    /// exit is a Failure with reason NonZeroExitCode and an ExitCode cause holding the code,
    /// which client-go turns into the exit code kubectl exits with.
    pub fn status_json(&self) -> Vec<u8> {
        let status = match self {
            Outcome::Exited(0) | Outcome::Done => {
                serde_json::json!({"metadata": {}, "status": "Success"})
            }
            Outcome::Exited(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("error executing command in container: {message}"),
                "reason": "InternalError",
                "code": 500,
            }),
        };
        serde_json::to_vec(&status).unwrap_or_default()
    }

    /// The error stream's content before v4: the error's text, nothing on success.
    pub fn status_text(&self) -> Vec<u8> {
        match self {
            Outcome::Exited(0) | Outcome::Done => Vec::new(),
            Outcome::Exited(code) => {
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes()
            }
            Outcome::Failed(message) => {
                format!("error executing command in container: {message}").into_bytes()
            }
        }
    }
}

/// Splits a resize stream's bytes into sizes: a stream of JSON objects, possibly cut anywhere.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

impl ResizeDecoder {
    /// Takes bytes, returns the sizes completed by them; garbage is dropped.
    pub fn push(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        {
            let mut stream =
                serde_json::Deserializer::from_slice(&self.pending).into_iter::<TermSize>();
            loop {
                match stream.next() {
                    Some(Ok(size)) => {
                        sizes.push(size);
                        consumed = stream.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => {
                        consumed = self.pending.len();
                        break;
                    }
                    None => {
                        consumed = self.pending.len();
                        break;
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_zero_exit_is_a_status_with_the_exit_code_cause() {
        let status: serde_json::Value =
            serde_json::from_slice(&Outcome::Exited(3).status_json()).unwrap();
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value =
            serde_json::from_slice(&Outcome::Exited(0).status_json()).unwrap();
        assert_eq!(ok["status"], "Success");
        assert!(Outcome::Exited(0).status_text().is_empty());
    }

    #[test]
    fn resizes_are_read_across_cuts() {
        let mut decoder = ResizeDecoder::default();
        assert!(decoder.push(br#"{"Width":80,"#).is_empty());
        assert_eq!(
            decoder.push(br#""Height":24}{"Width":100,"Height":50}"#),
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 50
                }
            ]
        );
    }
}
