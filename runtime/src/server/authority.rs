//! Makes the `:authority` of HTTP/2 requests on the CRI socket acceptable to h2.
//!
//! grpc-go before 1.34 (crictl 1.26, kubelets and CSI sidecars of that generation), grpcurl
//! `-unix` and grpc-java send the socket path, or its percent-encoding, as `:authority`. h2,
//! under tonic, resets such a stream with PROTOCOL_ERROR before any service sees it, and offers
//! no switch. On a unix socket the authority means nothing, so this layer sits between the
//! socket and h2: it decodes each header block the client sends (HPACK state included), puts
//! `localhost` in place of an authority h2 would refuse, and encodes the block again without
//! the dynamic table. Every other frame passes through untouched, and the server's replies do
//! not go through here at all.

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept (RFC 9113 §4.2); h2's default.
const MAX_FRAME_LEN: usize = 16_384;
/// A header block larger than this is passed on as it came, for h2 to judge (its own limit on
/// header lists is far lower).
const MAX_BLOCK_LEN: usize = 1 << 20;
/// What stands in for an authority h2 cannot parse.
const STAND_IN: &[u8] = b"localhost";

/// A client connection whose header blocks are rewritten on the way in (see the module docs).
pub struct LenientAuthority<S> {
    inner: S,
    /// Read from the client, not yet looked at.
    incoming: BytesMut,
    /// Ready for h2.
    outgoing: BytesMut,
    rewriter: Rewriter,
    client_closed: bool,
}

impl<S> LenientAuthority<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        LenientAuthority {
            inner,
            incoming: BytesMut::with_capacity(8192),
            outgoing: BytesMut::new(),
            rewriter: Rewriter::new(),
            client_closed: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LenientAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.outgoing.is_empty() {
                let n = this.outgoing.len().min(buf.remaining());
                buf.put_slice(&this.outgoing[..n]);
                this.outgoing.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.client_closed {
                // A truncated frame goes on as it is: h2 reports it.
                this.outgoing.extend_from_slice(&this.incoming.split());
                if this.outgoing.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.rewriter
                .process(&mut this.incoming, &mut this.outgoing);
            if !this.outgoing.is_empty() {
                continue;
            }
            this.incoming.reserve(8192);
            let spare = this.incoming.spare_capacity_mut();
            let mut read = ReadBuf::uninit(spare);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.client_closed = true;
            }
            // SAFETY: poll_read initialised the first `n` bytes of the spare capacity.
            unsafe { this.incoming.set_len(this.incoming.len() + n) };
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LenientAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for LenientAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

enum Phase {
    /// Before the connection preface.
    Preface,
    /// Between frames, or inside one.
    Frames,
    /// Not HTTP/2 as expected, or HPACK that does not decode: everything goes on as it came
    /// and h2 says what is wrong.
    Verbatim,
}

/// A header block waiting for its CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, passed on should decoding fail.
    received: Vec<u8>,
}

/// The state of the client-to-server byte stream.
struct Rewriter {
    phase: Phase,
    decoder: loona_hpack::Decoder<'static>,
    /// Payload bytes of the current non-header frame still to pass through.
    passing: usize,
    pending: Option<PendingBlock>,
}

impl Rewriter {
    fn new() -> Self {
        Rewriter {
            phase: Phase::Preface,
            decoder: loona_hpack::Decoder::new(),
            passing: 0,
            pending: None,
        }
    }

    /// Moves what it can from `incoming` to `outgoing`, rewriting complete header blocks; a
    /// partial frame header or header frame stays in `incoming` until more arrives.
    fn process(&mut self, incoming: &mut BytesMut, outgoing: &mut BytesMut) {
        loop {
            match self.phase {
                Phase::Verbatim => {
                    outgoing.extend_from_slice(&incoming.split());
                    return;
                }
                Phase::Preface => {
                    let seen = incoming.len().min(PREFACE.len());
                    if incoming[..seen] != PREFACE[..seen] {
                        self.phase = Phase::Verbatim;
                        continue;
                    }
                    if seen < PREFACE.len() {
                        return;
                    }
                    outgoing.extend_from_slice(&incoming.split_to(PREFACE.len()));
                    self.phase = Phase::Frames;
                }
                Phase::Frames => {
                    if self.passing > 0 {
                        let n = self.passing.min(incoming.len());
                        outgoing.extend_from_slice(&incoming.split_to(n));
                        self.passing -= n;
                        if self.passing > 0 {
                            return;
                        }
                    }
                    if incoming.len() < FRAME_HEADER_LEN {
                        return;
                    }
                    let len =
                        u32::from_be_bytes([0, incoming[0], incoming[1], incoming[2]]) as usize;
                    let kind = incoming[3];
                    if kind != HEADERS && kind != CONTINUATION {
                        outgoing.extend_from_slice(&incoming.split_to(FRAME_HEADER_LEN));
                        self.passing = len;
                        continue;
                    }
                    if incoming.len() < FRAME_HEADER_LEN + len {
                        incoming.reserve(FRAME_HEADER_LEN + len - incoming.len());
                        return;
                    }
                    let frame = incoming.split_to(FRAME_HEADER_LEN + len);
                    if let Err(received) = self.header_frame(&frame, outgoing) {
                        outgoing.extend_from_slice(&received);
                        self.phase = Phase::Verbatim;
                    }
                }
            }
        }
    }

    /// Takes one HEADERS or CONTINUATION frame. On anything unexpected it gives back the bytes
    /// received for the block so far, to be passed on as they came.
    fn header_frame(&mut self, frame: &[u8], outgoing: &mut BytesMut) -> Result<(), Vec<u8>> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        let mut block = match (kind, self.pending.take()) {
            (HEADERS, None) => {
                let (priority, fragment) = headers_payload(flags, payload).ok_or(frame.to_vec())?;
                PendingBlock {
                    stream_id,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    received: frame.to_vec(),
                }
            }
            (CONTINUATION, Some(mut block)) if block.stream_id == stream_id => {
                block.fragment.extend_from_slice(payload);
                block.received.extend_from_slice(frame);
                block
            }
            (_, pending) => {
                let mut received = pending.map(|block| block.received).unwrap_or_default();
                received.extend_from_slice(frame);
                return Err(received);
            }
        };
        if block.received.len() > MAX_BLOCK_LEN {
            return Err(block.received);
        }
        if flags & END_HEADERS == 0 {
            self.pending = Some(block);
            return Ok(());
        }
        let mut fields = match self.decoder.decode(&block.fragment) {
            Ok(fields) => fields,
            Err(error) => {
                tracing::debug!(
                    ?error,
                    "a client header block does not decode; passed on as it came"
                );
                return Err(std::mem::take(&mut block.received));
            }
        };
        for (name, value) in &mut fields {
            if name == b":authority" && !is_valid_authority(value) {
                tracing::trace!(authority = %String::from_utf8_lossy(value), "authority replaced");
                *value = STAND_IN.to_vec();
            }
        }
        write_header_frames(&block, &encode_without_indexing(&fields), outgoing);
        Ok(())
    }
}

/// Splits a HEADERS payload into its priority fields and header block fragment, dropping any
/// padding; `None` when the lengths do not add up.
fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut padding = 0;
    if flags & PADDED != 0 {
        padding = *rest.first()? as usize;
        rest = &rest[1..];
    }
    rest = rest.get(..rest.len().checked_sub(padding)?)?;
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(rest.get(..5)?.try_into().ok()?);
        rest = &rest[5..];
    }
    Some((priority, rest))
}

fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Encodes every field as a literal with a literal name and no indexing (RFC 7541 §6.2.2):
/// nothing enters h2's dynamic table, so no table state has to be kept in step with it.
fn encode_without_indexing(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        encode_string(name, &mut block);
        encode_string(value, &mut block);
    }
    block
}

/// A string literal without Huffman coding: its length as a 7-bit-prefix integer, then the
/// bytes (RFC 7541 §5.2).
fn encode_string(bytes: &[u8], block: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(bytes.len(), 7, 0, block);
    block.extend_from_slice(bytes);
}

/// Writes `header_block` as a HEADERS frame followed by as many CONTINUATION frames as the
/// frame size needs, keeping the block's END_STREAM and priority.
fn write_header_frames(block: &PendingBlock, header_block: &[u8], outgoing: &mut BytesMut) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_len = header_block.len().min(MAX_FRAME_LEN - priority_len);
    let (first, mut rest) = header_block.split_at(first_len);
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    write_frame_header(
        outgoing,
        first.len() + priority_len,
        HEADERS,
        flags,
        block.stream_id,
    );
    if let Some(priority) = &block.priority {
        outgoing.extend_from_slice(priority);
    }
    outgoing.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_LEN));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        write_frame_header(outgoing, chunk.len(), CONTINUATION, flags, block.stream_id);
        outgoing.extend_from_slice(chunk);
        rest = tail;
    }
}

fn write_frame_header(outgoing: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = (len as u32).to_be_bytes();
    outgoing.extend_from_slice(&len[1..]);
    outgoing.extend_from_slice(&[kind, flags]);
    outgoing.extend_from_slice(&stream_id.to_be_bytes());
}

#[cfg(test)]
mod tests;
