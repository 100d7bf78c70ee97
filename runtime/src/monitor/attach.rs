//! Attach: a connection on the monitor's socket that, after an `attach` request, carries a
//! container's output to the daemon as it is logged, and the daemon's stdin for the container.
//! Frames both ways are `[kind: u8][length: u32 big-endian][bytes]`. The monitor never blocks
//! on a client: what a client cannot take at once waits in a bounded buffer, and a client that
//! falls too far behind is dropped rather than slowing the container's logging.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

/// Monitor → daemon: standard output bytes.
pub const STDOUT: u8 = 1;
/// Monitor → daemon: standard error bytes.
pub const STDERR: u8 = 2;
/// Daemon → monitor: bytes for the container's stdin.
pub const STDIN: u8 = 0;
/// Daemon → monitor: the client closed its stdin.
pub const STDIN_CLOSE: u8 = 3;
/// Daemon → monitor: the client's terminal size, width and height as two u16 big-endian.
pub const RESIZE: u8 = 4;

/// Largest frame accepted.
pub const MAX_FRAME: usize = 1 << 20;
/// Output buffered for one client before it is dropped as stalled.
const MAX_CLIENT_BACKLOG: usize = 4 << 20;

/// Encodes one frame.
pub fn encode(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(data.len() + 5);
    frame.push(kind);
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

/// Reassembles frames from bytes as they arrive.
#[derive(Debug, Default)]
pub struct Parser {
    pending: Vec<u8>,
}

impl Parser {
    /// Takes bytes; returns the frames they complete, or an error for a frame over the limit.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
        self.pending.extend_from_slice(data);
        let mut frames = Vec::new();
        loop {
            if self.pending.len() < 5 {
                return Ok(frames);
            }
            let length = u32::from_be_bytes([
                self.pending[1],
                self.pending[2],
                self.pending[3],
                self.pending[4],
            ]) as usize;
            if length > MAX_FRAME {
                return Err(format!("attach frame of {length} bytes is too large"));
            }
            if self.pending.len() < 5 + length {
                return Ok(frames);
            }
            let kind = self.pending[0];
            let data = self.pending[5..5 + length].to_vec();
            self.pending.drain(..5 + length);
            frames.push((kind, data));
        }
    }
}

/// What reading from a client produced.
#[derive(Debug, Default)]
pub struct ClientInput {
    /// Bytes for the container's stdin.
    pub stdin: Vec<u8>,
    /// The client closed its stdin.
    pub stdin_closed: bool,
    /// The client's latest terminal size (width, height).
    pub resize: Option<(u16, u16)>,
    /// The client hung up or broke the protocol.
    pub gone: bool,
}

/// One attached daemon connection, non-blocking.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    parser: Parser,
    backlog: Vec<u8>,
    /// The client sends stdin.
    pub stdin: bool,
}

impl Client {
    /// Takes over `stream` (the reply to the attach request was already written).
    pub fn new(stream: UnixStream, stdin: bool) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream,
            parser: Parser::default(),
            backlog: Vec::new(),
            stdin,
        })
    }

    /// The socket, for polling.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_fd()
    }

    /// Whether output waits to be written (poll for writability).
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Queues output; false when the client is too far behind and must be dropped.
    pub fn send(&mut self, kind: u8, data: &[u8]) -> bool {
        self.backlog.extend_from_slice(&encode(kind, data));
        self.flush() && self.backlog.len() <= MAX_CLIENT_BACKLOG
    }

    /// Writes what the socket takes now; false when the client is gone.
    pub fn flush(&mut self) -> bool {
        while !self.backlog.is_empty() {
            match (&self.stream).write(&self.backlog) {
                Ok(0) => return false,
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads what the client sent.
    pub fn read(&mut self) -> ClientInput {
        let mut input = ClientInput::default();
        let mut buffer = [0u8; 64 * 1024];
        loop {
            match (&self.stream).read(&mut buffer) {
                Ok(0) => {
                    input.gone = true;
                    return input;
                }
                Ok(n) => match self.parser.push(&buffer[..n]) {
                    Ok(frames) => {
                        for (kind, data) in frames {
                            match kind {
                                STDIN if self.stdin => input.stdin.extend_from_slice(&data),
                                STDIN_CLOSE => input.stdin_closed = true,
                                RESIZE if data.len() == 4 => {
                                    input.resize = Some((
                                        u16::from_be_bytes([data[0], data[1]]),
                                        u16::from_be_bytes([data[2], data[3]]),
                                    ));
                                }
                                _ => {}
                            }
                        }
                        // Enough for one round; the rest waits for the next poll.
                        if input.stdin.len() >= 64 * 1024 {
                            return input;
                        }
                    }
                    Err(message) => {
                        tracing::warn!(%message, "dropping an attach client");
                        input.gone = true;
                        return input;
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return input,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    input.gone = true;
                    return input;
                }
            }
        }
    }

    /// Last chance to deliver the backlog before the connection closes (at most a second).
    pub fn finish(mut self) {
        let _ = self.stream.set_nonblocking(false);
        let _ = self
            .stream
            .set_write_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = (&self.stream).write_all(&self.backlog);
        self.backlog.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_reassembled_across_reads() {
        let mut wire = encode(STDIN, b"hello");
        wire.extend(encode(STDIN_CLOSE, b""));
        let mut parser = Parser::default();
        assert!(parser.push(&wire[..3]).unwrap().is_empty());
        assert_eq!(
            parser.push(&wire[3..]).unwrap(),
            vec![(STDIN, b"hello".to_vec()), (STDIN_CLOSE, Vec::new())]
        );
        let mut huge = vec![STDIN];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Parser::default().push(&huge).is_err());
    }

    #[test]
    fn a_client_gets_output_and_sends_stdin() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut client = Client::new(ours, true).unwrap();
        assert!(client.send(STDOUT, b"out"));
        let mut got = [0u8; 8];
        (&theirs).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x01\0\0\0\x03out");
        (&theirs).write_all(&encode(STDIN, b"in")).unwrap();
        (&theirs).write_all(&encode(STDIN_CLOSE, b"")).unwrap();
        let input = client.read();
        assert_eq!(input.stdin, b"in");
        assert!(input.stdin_closed && !input.gone);
        drop(theirs);
        assert!(client.read().gone);
    }
}
