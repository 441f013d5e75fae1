//! Helpers shared by the fuzz targets: independent readings of JSON and SSE (written here,
//! not taken from the filters, so a differential target compares two implementations), and
//! ways to cut one fuzz input into several parts.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

// ---- input cutting ---------------------------------------------------------------------

/// Reads a fuzz input front to back: flag bytes, then parts separated by [`SEP`].
pub struct Input<'a> {
    pub data: &'a [u8],
}

/// Separator between the parts of a multi-part input (easy to write in a seed file).
pub const SEP: &[u8] = b"\n@@\n";

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    /// The bytes up to the next [`SEP`] (or all the rest).
    pub fn part(&mut self) -> &'a [u8] {
        match find(self.data, SEP) {
            Some(i) => {
                let (head, tail) = self.data.split_at(i);
                self.data = &tail[SEP.len()..];
                head
            }
            None => std::mem::take(&mut self.data),
        }
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits `data` into chunks at positions derived from `seed` (a few cuts, anywhere).
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 || data.is_empty() {
        return vec![data];
    }
    if seed == 0xff {
        return data.chunks(1).collect();
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = 1 + (x as usize) % (rest.len().min(usize::from(seed % 32) + 2));
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

// ---- an ordered JSON reading that keeps every member -----------------------------------

/// JSON as serde_json reads it, but objects keep every member in order (duplicates too):
/// what a first-wins and a last-wins parser each see can be computed from it.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn parse(bytes: &[u8]) -> Option<J> {
        serde_json::from_slice(bytes).ok()
    }
    /// The value a last-wins parser (Python `json`, JavaScript `JSON.parse`) gives `key`.
    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    pub fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn is_obj(&self) -> bool {
        matches!(self, J::Obj(_))
    }
    /// True when some object anywhere repeats a key.
    pub fn has_duplicates(&self) -> bool {
        match self {
            J::Arr(items) => items.iter().any(J::has_duplicates),
            J::Obj(m) => {
                let mut keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                keys.windows(2).any(|w| w[0] == w[1]) || m.iter().any(|(_, v)| v.has_duplicates())
            }
            _ => false,
        }
    }
    /// Nesting depth (a scalar is 0, `[]` is 1).
    pub fn depth(&self) -> usize {
        match self {
            J::Arr(items) => 1 + items.iter().map(J::depth).max().unwrap_or(0),
            J::Obj(m) => 1 + m.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            J::U(n) => Some(*n as f64),
            J::I(n) => Some(*n as f64),
            J::F(f) => Some(*f),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::U(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::I(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<J, E> {
                Ok(J::F(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
                let mut m = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, J>()? {
                    m.push((k, v));
                }
                Ok(J::Obj(m))
            }
        }
        d.deserialize_any(V)
    }
}

// ---- a reference SSE parser (WHATWG HTML, "event stream interpretation") ---------------

/// One dispatched event: (event type, data, id of this block).
pub type RefEvent = (Option<String>, String, Option<String>);

/// Parses a whole stream as the HTML standard says, except that `id` is this block's own
/// (not the stream's last event id) and no BOM is stripped, as Tollgate documents. The
/// incomplete event at the end is not dispatched.
pub fn reference_sse(stream: &[u8]) -> Vec<RefEvent> {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut complete = 0;
    while i < stream.len() {
        match stream[i] {
            b'\r' => {
                lines.push(&stream[start..i]);
                if stream.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
                complete = lines.len();
            }
            b'\n' => {
                lines.push(&stream[start..i]);
                start = i + 1;
                complete = lines.len();
            }
            _ => {}
        }
        i += 1;
    }
    lines.truncate(complete);
    let mut out = Vec::new();
    let (mut event, mut data, mut id): (Option<String>, Option<String>, Option<String>) = (None, None, None);
    for line in lines {
        if line.is_empty() {
            if let Some(d) = data.take() {
                out.push((event.take(), d, id.take()));
            }
            event = None;
            id = None;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match name {
            b"data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => data = Some(value),
            },
            b"event" => event = Some(value),
            b"id" if !value.contains('\0') => id = Some(value),
            _ => {}
        }
    }
    out
}

/// The data of every complete event of an SSE stream (reference reading).
pub fn sse_data(stream: &[u8]) -> Vec<String> {
    reference_sse(stream).into_iter().map(|(_, d, _)| d).collect()
}

// ---- configuration targets -------------------------------------------------------------

/// The properties every filter's configuration loading must have, given `load` (parse,
/// validate and build, as `on_configure` does) returning the error text on refusal:
/// - it never panics, and gives the same answer twice;
/// - a refusal says where and why: `<field path>: <why>` or `configuration: <why>`;
/// - formatting does not matter: the same JSON (no repeated keys) written another way
///   (serde_json's compact form, keys re-ordered) is accepted or refused alike.
///
/// Returns whether the configuration loaded.
pub fn check_config(data: &[u8], load: impl Fn(&[u8]) -> Result<(), String>) -> bool {
    let first = load(data);
    assert_eq!(first, load(data), "loading is not deterministic");
    if let Err(e) = &first {
        // (A field path may itself be odd: a key named ":" is named as it is.)
        assert!(e.contains(": ") && e.len() > 2, "error without a field or context: {e:?}");
    }
    if let Some(j) = J::parse(data) {
        if !j.has_duplicates() {
            let v: serde_json::Value = serde_json::from_slice(data).expect("J accepted it");
            let compact = serde_json::to_vec(&v).expect("serializable");
            let again = load(&compact);
            assert_eq!(first.is_ok(), again.is_ok(), "reformatting changed the outcome: {first:?} vs {again:?}");
        }
    }
    first.is_ok()
}

/// Whether any key of the top-level object is written with an escape (`"us\u0061ge"`);
/// `None` when `bytes` is not a JSON object.
pub fn top_level_key_escaped(bytes: &[u8]) -> Option<bool> {
    struct Key(bool);
    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
            struct KV;
            impl<'de> Visitor<'de> for KV {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Key, E> {
                    Ok(Key(false))
                }
                fn visit_str<E>(self, _: &str) -> Result<Key, E> {
                    Ok(Key(true))
                }
            }
            d.deserialize_str(KV)
        }
    }
    struct Top(bool);
    impl<'de> Deserialize<'de> for Top {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
            struct TV;
            impl<'de> Visitor<'de> for TV {
                type Value = Top;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                    let mut escaped = false;
                    while let Some(k) = map.next_key::<Key>()? {
                        escaped |= k.0;
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                    Ok(Top(escaped))
                }
            }
            d.deserialize_map(TV)
        }
    }
    serde_json::from_slice::<Top>(bytes).ok().map(|t| t.0)
}
