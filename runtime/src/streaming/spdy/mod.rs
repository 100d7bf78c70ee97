//! SPDY/3.1, the server side of what kubectl and crictl speak for exec, attach and
//! port-forward after an `Upgrade: SPDY/3.1` request.
//!
//! No maintained Rust SPDY crate exists (SPDY was replaced by HTTP/2 everywhere but in
//! Kubernetes' streaming), so this is our own, limited to what the Go client (moby/spdystream)
//! does: the client opens every stream, the server replies and writes data on them; no flow
//! control is enforced (spdystream enforces none and sends no WINDOW_UPDATE), no server push.
//! [`frame`] is the wire format; [`Connection`] runs a reader and a writer task over it.

pub mod frame;

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use frame::{FLAG_FIN, Frame, FrameError, FrameHead, HeaderCodec, Headers, MAX_PAYLOAD};

/// Largest DATA frame we send: small enough to interleave streams.
const CHUNK: usize = 32 * 1024;
/// Frames buffered per stream before the reader waits for its consumer.
const STREAM_BUFFER: usize = 64;

/// A stream the client opened.
#[derive(Debug)]
pub struct IncomingStream {
    /// Its id.
    pub id: u32,
    /// Its SYN_STREAM headers (lowercase names).
    pub headers: Headers,
    /// What the client sends on it; closed at the client's FIN or RST.
    pub data: mpsc::Receiver<Bytes>,
}

impl IncomingStream {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends frames on the connection; clones share it. The connection's write side closes when
/// every clone is gone.
#[derive(Debug, Clone)]
pub struct Writer {
    frames: mpsc::Sender<Frame>,
}

impl Writer {
    /// Accepts stream `id` (SYN_REPLY).
    pub async fn reply(&self, id: u32) {
        self.send(Frame::SynReply {
            stream_id: id,
            flags: 0,
            headers: Vec::new(),
        })
        .await;
    }

    /// Writes `data` on stream `id`, in chunks.
    pub async fn data(&self, id: u32, data: Bytes) {
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(CHUNK));
            self.send(Frame::Data {
                stream_id: id,
                flags: 0,
                data: chunk,
            })
            .await;
        }
    }

    /// Says we are done writing on stream `id` (an empty DATA frame with FIN).
    pub async fn finish(&self, id: u32) {
        self.send(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await;
    }

    /// Aborts stream `id`.
    pub async fn reset(&self, id: u32, status: u32) {
        self.send(Frame::RstStream {
            stream_id: id,
            status,
        })
        .await;
    }

    async fn send(&self, frame: Frame) {
        // A closed connection drops what is sent on it: the peer is gone.
        let _ = self.frames.send(frame).await;
    }
}

/// A server-side SPDY connection.
#[derive(Debug)]
pub struct Connection {
    incoming: mpsc::Receiver<IncomingStream>,
    writer: Writer,
    reader: JoinHandle<()>,
    writer_task: JoinHandle<()>,
    hangup: watch::Receiver<bool>,
}

impl Connection {
    /// Starts reading and writing frames on `io` (the upgraded HTTP connection).
    pub fn start<S>(io: S) -> Result<Self, FrameError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (frames, outgoing) = mpsc::channel(STREAM_BUFFER);
        let writer = Writer { frames };
        // Weak: the write side must close once the session drops its writers, even while
        // the reader still waits for the client's side to close.
        let writer_for_reader = writer.frames.downgrade();
        let (streams, incoming) = mpsc::channel(256);
        let (hangup_tx, hangup) = watch::channel(false);
        let reader = tokio::spawn(async move {
            read_loop(read, HeaderCodec::new_reader(), streams, writer_for_reader).await;
            let _ = hangup_tx.send(true);
        });
        let writer_task = tokio::spawn(write_loop(write, HeaderCodec::new()?, outgoing));
        Ok(Connection {
            incoming,
            writer,
            reader,
            writer_task,
            hangup,
        })
    }

    /// The next stream the client opens; None once the connection is closed.
    pub async fn accept(&mut self) -> Option<IncomingStream> {
        self.incoming.recv().await
    }

    /// A handle to write frames.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Becomes true when the client has closed the connection.
    pub fn hangup(&self) -> watch::Receiver<bool> {
        self.hangup.clone()
    }

    /// Ends the connection: GOAWAY, flush, close our side, then wait up to `linger` for the
    /// client to close its side. Closing while the client still sends would make the kernel
    /// reset the connection and could lose the last bytes we wrote.
    pub async fn close(self, linger: Duration) {
        self.writer
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            })
            .await;
        let Connection {
            incoming,
            writer,
            reader,
            writer_task,
            ..
        } = self;
        drop(incoming);
        drop(writer);
        let _ = tokio::time::timeout(linger, writer_task).await;
        let abort = reader.abort_handle();
        if tokio::time::timeout(linger, reader).await.is_err() {
            abort.abort();
        }
    }
}

async fn read_loop<R: AsyncRead + Send>(
    read: R,
    mut codec: HeaderCodec,
    incoming: mpsc::Sender<IncomingStream>,
    writer: mpsc::WeakSender<Frame>,
) {
    let send = |frame: Frame| {
        let writer = writer.upgrade();
        async move {
            if let Some(writer) = writer {
                let _ = writer.send(frame).await;
            }
        }
    };
    let mut read = std::pin::pin!(read);
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let mut head = [0u8; 8];
        if read.read_exact(&mut head).await.is_err() {
            break;
        }
        let head = FrameHead::parse(&head);
        if head.length > MAX_PAYLOAD {
            break;
        }
        let mut payload = BytesMut::zeroed(head.length);
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let frame = match frame::decode(head, payload.freeze(), &mut codec) {
            Ok(frame) => frame,
            Err(e) => {
                // A broken header block desynchronises zlib: the connection cannot go on.
                tracing::warn!(error = %e, "closing a SPDY connection");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let (sender, data) = mpsc::channel(STREAM_BUFFER);
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, sender);
                }
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    data,
                };
                // Never wait here: a session that stopped accepting streams must not stall the
                // data of those it has.
                if incoming.try_send(stream).is_err() {
                    streams.remove(&stream_id);
                    send(Frame::RstStream {
                        stream_id,
                        status: frame::RST_REFUSED_STREAM,
                    })
                    .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty()
                    && let Some(stream) = streams.get(&stream_id)
                    && stream.send(data).await.is_err()
                {
                    // Nobody reads this stream any more; drop what comes on it.
                    streams.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => send(Frame::Ping { id }).await,
            Frame::GoAway { .. }
            | Frame::Settings
            | Frame::WindowUpdate { .. }
            | Frame::Headers { .. }
            | Frame::SynReply { .. }
            | Frame::Unknown(_) => {}
        }
    }
    tracing::debug!("SPDY connection closed by the client");
}

async fn write_loop<W: AsyncWrite + Send>(
    write: W,
    mut codec: HeaderCodec,
    mut frames: mpsc::Receiver<Frame>,
) {
    let mut write = std::pin::pin!(write);
    let mut buffer = BytesMut::new();
    while let Some(frame) = frames.recv().await {
        buffer.clear();
        let mut next = Some(frame);
        // Batch what is already queued into one write.
        while let Some(frame) = next {
            if let Err(e) = frame::encode(&frame, &mut codec, &mut buffer) {
                tracing::warn!(error = %e, "cannot encode a SPDY frame");
            }
            next = if buffer.len() < 256 * 1024 {
                frames.try_recv().ok()
            } else {
                None
            };
        }
        if write.write_all(&buffer).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side of the framing, enough to drive the server in tests.
    struct TestClient {
        io: tokio::io::DuplexStream,
        codec: HeaderCodec,
    }

    impl TestClient {
        async fn send(&mut self, frame: Frame) {
            let mut wire = BytesMut::new();
            frame::encode(&frame, &mut self.codec, &mut wire).unwrap();
            self.io.write_all(&wire).await.unwrap();
        }

        async fn recv(&mut self) -> Option<Frame> {
            let mut head = [0u8; 8];
            self.io.read_exact(&mut head).await.ok()?;
            let head = FrameHead::parse(&head);
            let mut payload = BytesMut::zeroed(head.length);
            self.io.read_exact(&mut payload).await.ok()?;
            Some(frame::decode(head, payload.freeze(), &mut self.codec).unwrap())
        }
    }

    #[tokio::test]
    async fn streams_data_pings_and_close() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut client = TestClient {
            io: client,
            codec: HeaderCodec::new().unwrap(),
        };
        let mut connection = Connection::start(server).unwrap();
        client
            .send(Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            })
            .await;
        let mut stream = connection.accept().await.unwrap();
        assert_eq!(stream.header("streamtype"), Some("stdin"));
        let writer = connection.writer();
        writer.reply(1).await;
        assert!(matches!(
            client.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"abc"),
            })
            .await;
        assert_eq!(
            stream.data.recv().await.unwrap(),
            Bytes::from_static(b"abc")
        );
        assert!(stream.data.recv().await.is_none(), "FIN ends the stream");
        client.send(Frame::Ping { id: 1 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 1 }));
        writer.data(1, Bytes::from(vec![7u8; CHUNK + 1])).await;
        writer.finish(1).await;
        drop(writer);
        let mut sizes = Vec::new();
        loop {
            match client.recv().await {
                Some(Frame::Data { data, flags, .. }) => {
                    sizes.push(data.len());
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sizes, vec![CHUNK, 1, 0]);
        let closing = tokio::spawn(connection.close(Duration::from_secs(5)));
        assert!(matches!(client.recv().await, Some(Frame::GoAway { .. })));
        assert_eq!(client.recv().await, None, "the server closed its side");
        drop(client);
        closing.await.unwrap();
    }
}
