//! The protobuf wire format, read field by field: keys, varints, fixed-width values and
//! length-delimited bytes, with every length checked against what is left.

use std::fmt;

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: strings, bytes, messages, packed repeated scalars.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

impl Wire<'_> {
    /// The wire type's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Wire::Varint(_) => "varint",
            Wire::Fixed64(_) => "64-bit",
            Wire::Bytes(_) => "length-delimited",
            Wire::Fixed32(_) => "32-bit",
        }
    }
}

/// Why bytes are not protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The highest field number protobuf allows (2^29 - 1).
const MAX_FIELD: u64 = (1 << 29) - 1;

/// Reads the fields of one message in order.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over one message's bytes.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// The next field number and value, `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > MAX_FIELD {
            return Err(WireError(format!("invalid field number {number}")));
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.array::<8>()?)),
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| *l <= self.buf.len())
                    .ok_or_else(|| {
                        WireError(format!(
                            "field {number}: length {len} runs past the end of the message"
                        ))
                    })?;
                let (bytes, rest) = self.buf.split_at(len);
                self.buf = rest;
                Wire::Bytes(bytes)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.array::<4>()?)),
            3 | 4 => {
                return Err(WireError(format!(
                    "field {number}: groups are not used by Kubernetes"
                )));
            }
            other => {
                return Err(WireError(format!(
                    "field {number}: invalid wire type {other}"
                )));
            }
        };
        // The field number fits u32: checked against MAX_FIELD above.
        Ok(Some((number as u32, value)))
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        prost::encoding::decode_varint(&mut self.buf)
            .map_err(|_| WireError("truncated or overlong varint".into()))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let Some((head, rest)) = self.buf.split_first_chunk::<N>() else {
            return Err(WireError(format!("truncated {}-byte value", N)));
        };
        self.buf = rest;
        Ok(*head)
    }
}

/// The varints packed in a length-delimited field (packed repeated scalars).
pub fn packed_varints(mut buf: &[u8]) -> Result<Vec<u64>, WireError> {
    let mut values = Vec::new();
    while !buf.is_empty() {
        values.push(
            prost::encoding::decode_varint(&mut buf)
                .map_err(|_| WireError("truncated varint in a packed field".into()))?,
        );
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // 1: varint 150, 2: "hi", 3: fixed64 1, 4: fixed32 2.
        let bytes = [
            0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0, 0,
        ];
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.next_field(), Ok(Some((1, Wire::Varint(150)))));
        assert_eq!(reader.next_field(), Ok(Some((2, Wire::Bytes(b"hi")))));
        assert_eq!(reader.next_field(), Ok(Some((3, Wire::Fixed64(1)))));
        assert_eq!(reader.next_field(), Ok(Some((4, Wire::Fixed32(2)))));
        assert_eq!(reader.next_field(), Ok(None));
    }

    #[test]
    fn multi_byte_varints_and_big_field_numbers() {
        // Field 1000 (key 8000 = 0xc0 0x3e), value 2^35.
        let bytes = [0xc0, 0x3e, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.next_field(), Ok(Some((1000, Wire::Varint(1 << 35)))));
    }

    #[test]
    fn refuses_truncation_and_bad_keys() {
        for bad in [
            &[0x12, 5, b'a'][..], // length past the end
            &[0x08, 0x80][..],    // varint cut short
            &[0x19, 1, 2][..],    // fixed64 cut short
            &[0x0b][..],          // start group
            &[0x0e, 0][..],       // wire type 6
            &[0x00, 0][..],       // field 0
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
        ] {
            assert!(Reader::new(bad).next_field().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn packed_varints_unpack() {
        assert_eq!(packed_varints(&[1, 0x96, 0x01, 3]), Ok(vec![1, 150, 3]));
        assert!(packed_varints(&[0x80]).is_err());
    }
}
