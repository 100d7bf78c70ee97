use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `client_bytes` through the layer and returns what h2 would read.
async fn through_layer(client_bytes: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    client.write_all(client_bytes).await.unwrap();
    drop(client);
    let mut layer = LenientAuthority::new(server);
    let mut seen = Vec::new();
    layer.read_to_end(&mut seen).await.unwrap();
    seen
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_frame_header(&mut out, payload.len(), kind, flags, stream_id);
    out.extend_from_slice(payload);
    out.to_vec()
}

struct Frame {
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

fn parse_frames(bytes: &[u8]) -> Vec<Frame> {
    assert!(bytes.starts_with(PREFACE), "the preface goes first");
    let mut rest = &bytes[PREFACE.len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        frames.push(Frame {
            kind: rest[3],
            flags: rest[4],
            stream_id: u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]),
            payload: rest[9..9 + len].to_vec(),
        });
        rest = &rest[9 + len..];
    }
    frames
}

/// Decodes every header block in `frames` as h2 would, in order, with one decoder.
fn header_lists(frames: &[Frame]) -> Vec<Vec<(String, String)>> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut lists = Vec::new();
    let mut block = Vec::new();
    for frame in frames {
        match frame.kind {
            HEADERS => {
                let (_, fragment) = headers_payload(frame.flags, &frame.payload).unwrap();
                block = fragment.to_vec();
            }
            CONTINUATION => block.extend_from_slice(&frame.payload),
            _ => continue,
        }
        if frame.flags & END_HEADERS != 0 {
            let fields = decoder.decode(&block).unwrap();
            lists.push(
                fields
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect(),
            );
        }
    }
    lists
}

fn request(authority: &str, path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":scheme", "http".into()),
        (":path", path.into()),
        (":authority", authority.into()),
        ("content-type", "application/grpc".into()),
        ("user-agent", "grpc-go/1.33.0".into()),
        ("te", "trailers".into()),
    ]
}

fn encode(encoder: &mut loona_hpack::Encoder, fields: &[(&'static str, String)]) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn owned(fields: &[(&'static str, String)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}

#[tokio::test]
async fn a_socket_path_authority_becomes_localhost_and_the_table_stays_in_step() {
    // As grpc-go 1.33 dials a unix socket: the path as authority, indexed into the dynamic
    // table by the first request and referred to by the second.
    let path_authority = "/run/capstan/capstan.sock";
    let first = request(path_authority, "/runtime.v1.RuntimeService/Version");
    let second = request(path_authority, "/runtime.v1.RuntimeService/ListPodSandbox");
    let mut encoder = loona_hpack::Encoder::new();
    let first_block = encode(&mut encoder, &first);
    let second_block = encode(&mut encoder, &second);
    assert!(
        second_block.len() < first_block.len(),
        "the second block uses the table"
    );

    let data = frame(0x0, END_STREAM, 1, b"\0\0\0\0\0");
    let mut client = PREFACE.to_vec();
    client.extend(frame(0x4, 0, 0, b"")); // SETTINGS
    client.extend(frame(HEADERS, END_HEADERS, 1, &first_block));
    client.extend(&data);
    client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second_block));

    let frames = parse_frames(&through_layer(&client).await);
    let kinds: Vec<u8> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [0x4, HEADERS, 0x0, HEADERS]);
    assert_eq!(frames[2].payload, &data[9..], "DATA passes untouched");
    assert_eq!(frames[3].flags, END_HEADERS | END_STREAM);
    assert_eq!(frames[3].stream_id, 3);

    let mut want_first = owned(&first);
    let mut want_second = owned(&second);
    want_first[3].1 = "localhost".into();
    want_second[3].1 = "localhost".into();
    assert_eq!(header_lists(&frames), [want_first, want_second]);
}

#[tokio::test]
async fn a_valid_authority_is_kept_and_huffman_coded_blocks_decode() {
    // RFC 7541 C.4.1 and C.4.2: Huffman-coded literals, the second request indexing the first's
    // authority from the dynamic table.
    let first = hex::decode("828684418cf1e3c2e5f23a6ba0ab90f4ff").unwrap();
    let second = hex::decode("828684be5886a8eb10649cbf").unwrap();
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
    client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
    let lists = header_lists(&parse_frames(&through_layer(&client).await));
    let authority = |list: &Vec<(String, String)>| {
        list.iter()
            .find(|(n, _)| n == ":authority")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(authority(&lists[0]).as_deref(), Some("www.example.com"));
    assert_eq!(authority(&lists[1]).as_deref(), Some("www.example.com"));
    assert!(lists[1].contains(&("cache-control".into(), "no-cache".into())));
}

#[tokio::test]
async fn padding_priority_and_continuations_are_handled() {
    let fields = request("%2Frun%2Fsock.sock", "/runtime.v1.RuntimeService/Version");
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let (head, tail) = block.split_at(10);
    // PADDED + PRIORITY: pad length 3, stream dependency 0 with weight 16, padding at the end.
    let mut payload = vec![3, 0, 0, 0, 0, 16];
    payload.extend_from_slice(head);
    payload.extend_from_slice(&[0, 0, 0]);
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &payload));
    client.extend(frame(CONTINUATION, END_HEADERS, 5, tail));

    let frames = parse_frames(&through_layer(&client).await);
    assert_eq!(frames.len(), 1, "one HEADERS frame holds the whole block");
    assert_eq!(frames[0].flags, PRIORITY | END_STREAM | END_HEADERS);
    assert_eq!(&frames[0].payload[..5], &[0, 0, 0, 0, 16]);
    let mut want = owned(&fields);
    want[3].1 = "localhost".into();
    assert_eq!(header_lists(&frames), [want]);
}

#[tokio::test]
async fn a_block_larger_than_a_frame_is_split_into_continuations() {
    let mut fields = request("/run/x.sock", "/runtime.v1.RuntimeService/Version");
    fields.push(("x-large", "v".repeat(40_000)));
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let mut client = PREFACE.to_vec();
    // The client may send frames as large as the server allows; h2's default is 16 KiB, so a
    // client would split too, but the layer must not depend on it.
    client.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let frames = parse_frames(&through_layer(&client).await);
    assert!(frames.len() >= 3);
    assert!(frames.iter().all(|f| f.payload.len() <= MAX_FRAME_LEN));
    assert_eq!(frames[0].kind, HEADERS);
    assert!(frames[1..].iter().all(|f| f.kind == CONTINUATION));
    assert_eq!(frames.last().unwrap().flags, END_HEADERS);
    let mut want = owned(&fields);
    want[3].1 = "localhost".into();
    assert_eq!(header_lists(&frames), [want]);
}

#[tokio::test]
async fn what_is_not_http2_or_does_not_decode_passes_verbatim() {
    let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(through_layer(&http1).await, http1);

    // Index 70 is in neither table: h2 must see the block as sent, to answer it itself.
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]));
    client.extend(frame(0x0, 0, 1, b"abc"));
    assert_eq!(through_layer(&client).await, client);
}

#[tokio::test]
async fn bytes_arriving_one_at_a_time_come_out_the_same() {
    let fields = request(
        "/run/capstan/capstan.sock",
        "/runtime.v1.RuntimeService/Version",
    );
    let block = encode(&mut loona_hpack::Encoder::new(), &fields);
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, END_HEADERS, 1, &block));
    client.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
    let whole = through_layer(&client).await;

    let (mut writer, reader) = tokio::io::duplex(1);
    let feeder = tokio::spawn(async move {
        for byte in client {
            writer.write_all(&[byte]).await.unwrap();
        }
    });
    let mut layer = LenientAuthority::new(reader);
    let mut trickled = Vec::new();
    layer.read_to_end(&mut trickled).await.unwrap();
    feeder.await.unwrap();
    assert_eq!(trickled, whole);
}
