//! The few pieces of the protobuf wire format the filters speak (the rate-limit service API
//! and Tollgate's settlement extension, `docs/limits-protocol.md`): a writer for messages and a
//! reader over fields. Hand-written because the messages are small and fixed, and a
//! generated-code crate would cost far more module size than these ~150 lines.
//!
//! The reader never panics and never allocates: it walks fields of a byte slice and yields
//! `(field number, value)`, skipping what it does not know, and ends with an error on
//! truncated or malformed input (fuzzed: `fuzz/fuzz_targets/protobuf.rs`).

/// Builds one message. Nested messages are written into their own `Writer` and added with
/// [`Writer::message`] (length-delimited).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    bytes: Vec<u8>,
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    fn varint_raw(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u64) {
        self.varint_raw((u64::from(field) << 3) | wire_type);
    }

    /// An integer field (`uint32`, `uint64`, `int32` ≥ 0, enums, `bool`). Proto3 leaves
    /// zero values out.
    pub fn uint(&mut self, field: u32, value: u64) -> &mut Self {
        if value != 0 {
            self.tag(field, VARINT);
            self.varint_raw(value);
        }
        self
    }

    /// A `bytes` or `string` field (empty ones left out, as proto3 does).
    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        if !value.is_empty() {
            self.tag(field, LENGTH_DELIMITED);
            self.varint_raw(value.len() as u64);
            self.bytes.extend_from_slice(value);
        }
        self
    }

    pub fn string(&mut self, field: u32, value: &str) -> &mut Self {
        self.bytes(field, value.as_bytes())
    }

    /// A nested message field; written even when empty (presence matters for messages).
    pub fn message(&mut self, field: u32, message: &Writer) -> &mut Self {
        self.tag(field, LENGTH_DELIMITED);
        self.varint_raw(message.bytes.len() as u64);
        self.bytes.extend_from_slice(&message.bytes);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One field's value as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// Strings, bytes, nested messages and packed repeated fields.
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Value::Varint(v) | Value::Fixed64(v) => Some(v),
            Value::Fixed32(v) => Some(u64::from(v)),
            Value::Bytes(_) => None,
        }
    }

    pub fn as_bytes(self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// Malformed input: truncated, a varint over 10 bytes, a length past the end, a deprecated
/// group or an unknown wire type, or field number 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf message")]
pub struct Malformed;

/// Iterates the fields of one message. Yields `Err(Malformed)` once and then stops.
pub struct Reader<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes, failed: false }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i as u32);
            if byte & 0x80 == 0 {
                self.rest = self.rest.get(i + 1..)?;
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn field(&mut self) -> Option<(u32, Value<'a>)> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).ok().filter(|n| *n != 0)?;
        let value = match key & 7 {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                let b: [u8; 8] = self.take(8)?.try_into().ok()?;
                Value::Fixed64(u64::from_le_bytes(b))
            }
            LENGTH_DELIMITED => {
                let len = usize::try_from(self.varint()?).ok()?;
                Value::Bytes(self.take(len)?)
            }
            FIXED32 => {
                let b: [u8; 4] = self.take(4)?.try_into().ok()?;
                Value::Fixed32(u32::from_le_bytes(b))
            }
            _ => return None,
        };
        Some((number, value))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Value<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match self.field() {
            Some(field) => Some(Ok(field)),
            None => {
                self.failed = true;
                Some(Err(Malformed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_protoc_would() {
        // message { string domain = 1; uint32 hits = 3; Nested n = 2 { uint64 v = 1 } }
        let mut nested = Writer::new();
        nested.uint(1, 300);
        let mut w = Writer::new();
        w.string(1, "ab").message(2, &nested).uint(3, 1).uint(4, 0).string(5, "");
        assert_eq!(w.finish(), vec![0x0a, 2, b'a', b'b', 0x12, 3, 0x08, 0xac, 0x02, 0x18, 1]);
    }

    #[test]
    fn reads_every_wire_type_and_skips_nothing() {
        let bytes = [0x08, 0x96, 0x01, 0x11, 1, 0, 0, 0, 0, 0, 0, 0, 0x1a, 1, b'x', 0x25, 2, 0, 0, 0];
        let fields: Vec<_> = Reader::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            fields,
            vec![(1, Value::Varint(150)), (2, Value::Fixed64(1)), (3, Value::Bytes(b"x")), (4, Value::Fixed32(2))]
        );
    }

    #[test]
    fn malformed_input_ends_with_one_error() {
        for bad in [&[0x0a, 5, b'a'][..], &[0x08], &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &[0x03], &[0x00, 1], &[0x0f]] {
            let items: Vec<_> = Reader::new(bad).collect();
            assert_eq!(items.last(), Some(&Err(Malformed)), "{bad:?}");
            assert_eq!(items.iter().filter(|i| i.is_err()).count(), 1);
        }
        assert_eq!(Reader::new(&[]).count(), 0);
    }

    #[test]
    fn max_varint_round_trips() {
        let mut w = Writer::new();
        w.uint(7, u64::MAX);
        let bytes = w.finish();
        let fields: Vec<_> = Reader::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields, vec![(7, Value::Varint(u64::MAX))]);
    }
}
