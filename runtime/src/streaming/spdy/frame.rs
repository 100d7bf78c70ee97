//! SPDY/3.1 frames: the 8-byte frame header, the control frames kubectl's SPDY library
//! (moby/spdystream) sends and answers, and header blocks compressed with zlib and the SPDY/3
//! dictionary, one compression context per direction for the whole connection.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header dictionary (1423 bytes, as Go's SPDY framer uses it: no trailing NUL).
/// Both sides must use the same bytes: zlib checks the dictionary's Adler-32.
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

/// The only version spoken.
pub const VERSION: u16 = 3;
/// FIN flag on SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender is done with the stream.
pub const FLAG_FIN: u8 = 0x01;
/// Largest frame payload accepted (16 MiB − 1 is what the length field can say).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the stream was refused.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: protocol error.
pub const RST_PROTOCOL_ERROR: u32 = 1;

/// Header name/value pairs, names lowercase as SPDY requires.
pub type Headers = Vec<(String, String)>;

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The peer opens a stream.
    SynStream {
        /// The new stream.
        stream_id: u32,
        /// FIN / UNIDIRECTIONAL flags.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// The peer accepts a stream we opened.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FIN flag.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// The stream is aborted.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: u32,
    },
    /// Connection settings (read and ignored: no flow control is enforced, as spdystream).
    Settings,
    /// A ping, answered with the same id.
    Ping {
        /// Its id.
        id: u32,
    },
    /// The peer stops the connection.
    GoAway {
        /// The last stream it processed.
        last_good_stream_id: u32,
        /// Why.
        status: u32,
    },
    /// More headers on a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN flag.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow-control credit (read and ignored).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// Credit.
        delta: u32,
    },
    /// Payload on a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN flag.
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame type this server does not know (ignored, as the spec says).
    Unknown(u16),
}

/// Why bytes could not be read as SPDY.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A control frame of a version other than 3.
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    /// A frame too short for its type, or a header block that does not parse.
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    /// zlib failed on a header block.
    #[error("SPDY header block: {0}")]
    Compression(String),
}

/// The 8-byte prefix of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Control frames have the high bit set.
    pub control: bool,
    /// Control: the frame type; data: unused.
    pub kind: u16,
    /// Data: the stream id; control: the version.
    pub stream_or_version: u32,
    /// Flags.
    pub flags: u8,
    /// Payload length.
    pub length: usize,
}

impl FrameHead {
    /// Parses the 8-byte frame header.
    pub fn parse(bytes: &[u8; 8]) -> FrameHead {
        let first = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let control = first & 0x8000_0000 != 0;
        let length = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize;
        if control {
            FrameHead {
                control,
                kind: (first & 0xffff) as u16,
                stream_or_version: (first >> 16) & 0x7fff,
                flags: bytes[4],
                length,
            }
        } else {
            FrameHead {
                control,
                kind: 0,
                stream_or_version: first & 0x7fff_ffff,
                flags: bytes[4],
                length,
            }
        }
    }
}

/// The zlib contexts of one connection: one for the headers we send, one for those we read.
pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
}

impl std::fmt::Debug for HeaderCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderCodec")
    }
}

impl HeaderCodec {
    /// Fresh contexts, the compressing one primed with the dictionary.
    pub fn new() -> Result<Self, FrameError> {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .map_err(|e| FrameError::Compression(e.to_string()))?;
        Ok(HeaderCodec {
            deflate,
            inflate: Decompress::new(true),
        })
    }

    /// A codec for reading only (its compressing side is never primed or used).
    pub fn new_reader() -> Self {
        HeaderCodec {
            deflate: Compress::new(Compression::best(), true),
            inflate: Decompress::new(true),
        }
    }

    /// Serialises and compresses a header block (sync-flushed, so the peer can read it now).
    pub fn compress(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, FrameError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (name, value) in headers {
            raw.put_u32(name.len() as u32);
            raw.put_slice(name.as_bytes());
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            consumed += (self.deflate.total_in() - before) as usize;
            // Done once all input is in and zlib left room in the output (nothing pending).
            if consumed >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Decompresses and parses a header block; names are lowercased.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(1024);
            }
            let before = self.inflate.total_in();
            let produced = out.len();
            let result =
                self.inflate
                    .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            let taken = (self.inflate.total_in() - before) as usize;
            consumed += taken;
            match result {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::Malformed("header block too large"));
            }
            if consumed >= block.len() && out.len() < out.capacity() {
                break;
            }
            if taken == 0 && out.len() == produced && out.len() < out.capacity() {
                // zlib neither read nor wrote with room to write: the rest is not deflate.
                return Err(FrameError::Compression(
                    "header block does not inflate".into(),
                ));
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(mut raw: &[u8]) -> Result<Headers, FrameError> {
    let count = take_u32(&mut raw)? as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take_string(&mut raw)?;
        let value = take_string(&mut raw)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

fn take_u32(raw: &mut &[u8]) -> Result<u32, FrameError> {
    if raw.len() < 4 {
        return Err(FrameError::Malformed("truncated header block"));
    }
    let value = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    *raw = &raw[4..];
    Ok(value)
}

fn take_string(raw: &mut &[u8]) -> Result<String, FrameError> {
    let len = take_u32(raw)? as usize;
    if raw.len() < len {
        return Err(FrameError::Malformed("truncated header block"));
    }
    let text = String::from_utf8_lossy(&raw[..len]).into_owned();
    *raw = &raw[len..];
    Ok(text)
}

fn be32(payload: &[u8], at: usize) -> Result<u32, FrameError> {
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(FrameError::Malformed("control frame too short"))
}

/// Decodes one frame from its head and payload.
pub fn decode(
    head: FrameHead,
    payload: Bytes,
    codec: &mut HeaderCodec,
) -> Result<Frame, FrameError> {
    if !head.control {
        return Ok(Frame::Data {
            stream_id: head.stream_or_version,
            flags: head.flags,
            data: payload,
        });
    }
    if head.stream_or_version != VERSION as u32 {
        return Err(FrameError::Version(head.stream_or_version as u16));
    }
    let stream = |at| be32(&payload, at).map(|v| v & 0x7fff_ffff);
    Ok(match head.kind {
        SYN_STREAM => {
            // stream id, associated stream id, priority + slot, then the header block.
            let stream_id = stream(0)?;
            let block = payload
                .get(10..)
                .ok_or(FrameError::Malformed("SYN_STREAM too short"))?;
            Frame::SynStream {
                stream_id,
                flags: head.flags,
                headers: codec.decompress(block)?,
            }
        }
        SYN_REPLY | HEADERS => {
            let stream_id = stream(0)?;
            let block = payload
                .get(4..)
                .ok_or(FrameError::Malformed("SYN_REPLY too short"))?;
            let headers = codec.decompress(block)?;
            if head.kind == SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags: head.flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags: head.flags,
                    headers,
                }
            }
        }
        RST_STREAM => Frame::RstStream {
            stream_id: stream(0)?,
            status: be32(&payload, 4)?,
        },
        SETTINGS => Frame::Settings,
        PING => Frame::Ping {
            id: be32(&payload, 0)?,
        },
        GOAWAY => Frame::GoAway {
            last_good_stream_id: stream(0)?,
            status: be32(&payload, 4).unwrap_or(0),
        },
        WINDOW_UPDATE => Frame::WindowUpdate {
            stream_id: stream(0)?,
            delta: be32(&payload, 4)? & 0x7fff_ffff,
        },
        other => Frame::Unknown(other),
    })
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(((flags as u32) << 24) | payload.len() as u32);
    out.put_slice(payload);
}

/// Encodes a frame (data payloads must be at most [`MAX_PAYLOAD`]).
pub fn encode(
    frame: &Frame,
    codec: &mut HeaderCodec,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(((*flags as u32) << 24) | data.len() as u32);
            out.put_slice(data);
        }
        Frame::SynStream {
            stream_id,
            flags,
            headers,
        } => {
            let mut payload = Vec::new();
            payload.put_u32(*stream_id);
            payload.put_u32(0);
            payload.put_u16(0);
            payload.extend(codec.compress(headers)?);
            control(out, SYN_STREAM, *flags, &payload);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let mut payload = Vec::new();
            payload.put_u32(*stream_id);
            payload.extend(codec.compress(headers)?);
            control(out, SYN_REPLY, *flags, &payload);
        }
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let mut payload = Vec::new();
            payload.put_u32(*stream_id);
            payload.extend(codec.compress(headers)?);
            control(out, HEADERS, *flags, &payload);
        }
        Frame::RstStream { stream_id, status } => {
            let mut payload = Vec::new();
            payload.put_u32(*stream_id);
            payload.put_u32(*status);
            control(out, RST_STREAM, 0, &payload);
        }
        Frame::Settings => control(out, SETTINGS, 0, &0u32.to_be_bytes()),
        Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            let mut payload = Vec::new();
            payload.put_u32(*last_good_stream_id);
            payload.put_u32(*status);
            control(out, GOAWAY, 0, &payload);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut payload = Vec::new();
            payload.put_u32(*stream_id);
            payload.put_u32(*delta);
            control(out, WINDOW_UPDATE, 0, &payload);
        }
        Frame::Unknown(_) => return Err(FrameError::Malformed("cannot encode an unknown frame")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frames: &[Frame]) -> Vec<Frame> {
        let mut sender = HeaderCodec::new().unwrap();
        let mut receiver = HeaderCodec::new().unwrap();
        let mut wire = BytesMut::new();
        for frame in frames {
            encode(frame, &mut sender, &mut wire).unwrap();
        }
        let mut decoded = Vec::new();
        let mut wire = wire.freeze();
        while !wire.is_empty() {
            let head = FrameHead::parse(wire[..8].try_into().unwrap());
            let payload = wire.slice(8..8 + head.length);
            wire = wire.slice(8 + head.length..);
            decoded.push(decode(head, payload, &mut receiver).unwrap());
        }
        decoded
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_the_one_go_uses() {
        assert_eq!(DICTIONARY.len(), 1423);
        // zlib's dictionary id is the Adler-32 of the dictionary; spdystream's framer expects it.
        let (mut a, mut b) = (1u32, 0u32);
        for byte in DICTIONARY {
            a = (a + *byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn control_and_data_frames_survive_a_roundtrip_with_one_zlib_context() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                flags: 0,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: Vec::new(),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream_id: 5,
                status: RST_REFUSED_STREAM,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65536,
            },
        ];
        assert_eq!(roundtrip(&frames), frames);
    }

    #[test]
    fn frame_heads_carry_type_flags_length_and_stream() {
        let mut codec = HeaderCodec::new().unwrap();
        let mut wire = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut codec, &mut wire).unwrap();
        assert_eq!(&wire[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        let head = FrameHead::parse(&[0, 0, 0, 5, FLAG_FIN, 0, 1, 0]);
        assert_eq!(
            head,
            FrameHead {
                control: false,
                kind: 0,
                stream_or_version: 5,
                flags: FLAG_FIN,
                length: 256
            }
        );
    }

    #[test]
    fn a_header_block_compressed_as_go_does_is_read() {
        // zlib with the SPDY dictionary, as Go's compress/zlib NewWriterLevelDict writes it.
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(DICTIONARY).unwrap();
        let mut raw = Vec::new();
        raw.put_u32(1);
        raw.put_u32(10);
        raw.put_slice(b"StreamType");
        raw.put_u32(6);
        raw.put_slice(b"stdout");
        let mut block = Vec::with_capacity(256);
        deflate
            .compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut codec = HeaderCodec::new().unwrap();
        assert_eq!(
            codec.decompress(&block).unwrap(),
            headers(&[("streamtype", "stdout")])
        );
    }

    #[test]
    fn garbage_header_blocks_are_errors_not_hangs() {
        let mut codec = HeaderCodec::new().unwrap();
        assert!(codec.decompress(b"definitely not zlib").is_err());
    }

    #[test]
    fn other_versions_and_short_frames_are_errors() {
        let mut codec = HeaderCodec::new().unwrap();
        let head = FrameHead::parse(&[0x80, 2, 0, 6, 0, 0, 0, 4]);
        assert!(matches!(
            decode(head, Bytes::from_static(&[0, 0, 0, 1]), &mut codec),
            Err(FrameError::Version(2))
        ));
        let head = FrameHead::parse(&[0x80, 3, 0, 3, 0, 0, 0, 2]);
        assert!(matches!(
            decode(head, Bytes::from_static(&[0, 0]), &mut codec),
            Err(FrameError::Malformed(_))
        ));
    }
}
