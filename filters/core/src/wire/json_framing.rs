//! Streaming JSON framers: byte-level scanners that find pieces of a JSON document fed in
//! chunks, holding only the piece in progress (never the whole document). They know nothing
//! about what the JSON means; string bodies are skipped with [`StringBody`] (the same
//! string-run scanner as [`crate::wire::json_scan`]).
//!
//! - [`JsonArraySplitter`]: the top-level elements of a streamed JSON array, one at a time.
//! - [`TopLevelCapture`]: the raw values of chosen top-level members of a JSON object.
//! - [`append_bounded`]: the bounded capture buffer both use.

use crate::wire::json_scan::{Piece, StringBody};

/// Splits a streamed JSON array into its top-level elements, holding only the element in
/// progress. Elements that are not objects or arrays are skipped.
#[derive(Debug)]
pub struct JsonArraySplitter {
    depth: u32,
    in_string: bool,
    string: StringBody,
    capturing: bool,
    buf: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl JsonArraySplitter {
    pub fn new(max: usize) -> Self {
        JsonArraySplitter {
            depth: 0,
            in_string: false,
            string: StringBody::default(),
            capturing: false,
            buf: Vec::new(),
            max,
            overflowed: false,
        }
    }

    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn feed(&mut self, chunk: &[u8], mut on_element: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if self.in_string {
                // Every string byte, quote included, belongs to the element as written.
                let (piece, n) = self.string.next(rest);
                let (bytes, tail) = rest.split_at(n.min(rest.len()));
                self.push(bytes);
                if piece == Piece::End {
                    self.in_string = false;
                }
                rest = tail;
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.push(&[b]);
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        self.capturing = true;
                        self.overflowed = false;
                        self.buf.clear();
                    }
                    self.push(&[b]);
                }
                b'}' | b']' => {
                    self.push(&[b]);
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1 && self.capturing {
                        self.capturing = false;
                        if !self.overflowed {
                            on_element(&self.buf);
                        }
                        self.buf.clear();
                    }
                }
                _ => self.push(&[b]),
            }
            rest = tail;
        }
    }

    /// Adds `bytes` to the element being captured; drops the element once it outgrows `max`.
    fn push(&mut self, bytes: &[u8]) {
        if self.capturing && !self.overflowed {
            self.overflowed = !append_bounded(&mut self.buf, bytes, self.max);
        }
    }
}

/// Appends `bytes` to a capture of at most `max` bytes; past that the capture is dropped
/// (its memory freed) and false returned.
pub fn append_bounded(buf: &mut Vec<u8>, bytes: &[u8], max: usize) -> bool {
    if buf.len() + bytes.len() > max {
        *buf = Vec::new();
        return false;
    }
    buf.extend_from_slice(bytes);
    true
}

/// Captures the values of chosen top-level members of a JSON object streamed in chunks,
/// holding nothing else. Values over `max` bytes are dropped.
#[derive(Debug)]
pub struct TopLevelCapture {
    keys: &'static [&'static str],
    max: usize,
    depth: u32,
    in_string: bool,
    string: StringBody,
    /// The top-level value is an object (only then are depth-1 strings member names).
    object: bool,
    expect_key: bool,
    reading_key: bool,
    key: Vec<u8>,
    after_colon: bool,
    pending: Option<usize>,
    /// (member index, is a scalar) of the value being captured.
    capture: Option<(usize, bool)>,
    buf: Vec<u8>,
    found: Vec<Option<Vec<u8>>>,
}

impl TopLevelCapture {
    pub fn new(keys: &'static [&'static str], max: usize) -> Self {
        TopLevelCapture {
            keys,
            max,
            depth: 0,
            in_string: false,
            string: StringBody::default(),
            object: false,
            expect_key: false,
            reading_key: false,
            key: Vec::new(),
            after_colon: false,
            pending: None,
            capture: None,
            buf: Vec::new(),
            found: vec![None; keys.len()],
        }
    }

    /// The raw value of `keys[index]`, if seen (the last one, for duplicates).
    pub fn value(&self, index: usize) -> Option<&[u8]> {
        self.found.get(index).and_then(|v| v.as_deref())
    }

    pub fn pending_bytes(&self) -> usize {
        self.buf.len() + self.key.len()
    }

    fn finish(&mut self, drop_last: bool) {
        if let Some((index, _)) = self.capture.take() {
            let mut value = std::mem::take(&mut self.buf);
            if drop_last {
                value.pop();
            }
            if let Some(slot) = self.found.get_mut(index) {
                *slot = Some(value);
            }
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if !self.in_string {
                self.byte(b);
                rest = tail;
                continue;
            }
            let (piece, n) = self.string.next(rest);
            let (bytes, tail) = rest.split_at(n.min(rest.len()));
            self.keep(bytes);
            match piece {
                // A key keeps only its text bytes (escapes left out, as before), at most 64: enough
                // for the names looked for, and a long key costs no memory.
                Piece::Text if self.reading_key => {
                    let room = 64usize.saturating_sub(self.key.len());
                    self.key.extend(bytes.iter().take(room));
                }
                Piece::End => {
                    self.in_string = false;
                    if self.reading_key {
                        self.reading_key = false;
                    } else if self.depth == 1 && self.capture.is_some() {
                        self.finish(false);
                    }
                }
                _ => {}
            }
            rest = tail;
        }
    }

    /// Adds `bytes` to the value being captured; drops the value once it outgrows `max`.
    fn keep(&mut self, bytes: &[u8]) {
        if self.capture.is_some() && !append_bounded(&mut self.buf, bytes, self.max) {
            self.capture = None;
        }
    }

    /// One byte outside any string.
    fn byte(&mut self, b: u8) {
        if self.after_colon && !b.is_ascii_whitespace() {
            self.after_colon = false;
            if let Some(index) = self.pending.take() {
                self.capture = Some((index, !matches!(b, b'{' | b'[' | b'"')));
                self.buf.clear();
            }
        }
        self.keep(&[b]);
        let scalar_capture = matches!(self.capture, Some((_, true)));
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.expect_key = false;
                    self.reading_key = true;
                    self.key.clear();
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.object = b == b'{';
                    self.expect_key = self.object;
                }
            }
            b'}' | b']' => {
                if self.depth == 1 && scalar_capture {
                    self.finish(true);
                }
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 && self.capture.is_some() {
                    self.finish(false);
                }
            }
            b',' if self.depth == 1 => {
                if scalar_capture {
                    self.finish(true);
                }
                self.expect_key = self.object;
            }
            b':' if self.depth == 1 => {
                self.pending = self.keys.iter().position(|k| k.as_bytes() == self.key.as_slice());
                self.key.clear();
                self.after_colon = true;
            }
            b' ' | b'\t' | b'\r' | b'\n' if self.depth == 1 && scalar_capture => self.finish(true),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_capture_handles_scalars_strings_nesting_and_escapes() {
        let mut c = TopLevelCapture::new(&["a", "b", "c", "d"], 1024);
        c.feed(br#" { "x": {"a": 1}, "a" : 42 , "b":"q\"}\\" ,"c":[1,{"a":[]}],"d":true}"#);
        assert_eq!(c.value(0), Some(&b"42"[..]));
        assert_eq!(c.value(1), Some(&br#""q\"}\\""#[..]));
        assert_eq!(c.value(2), Some(&br#"[1,{"a":[]}]"#[..]));
        assert_eq!(c.value(3), Some(&b"true"[..]));
        let mut c = TopLevelCapture::new(&["a"], 4);
        c.feed(br#"{"a":"too long for the cap"}"#);
        assert_eq!(c.value(0), None);
        let mut c = TopLevelCapture::new(&["a"], 64);
        c.feed(br#"["a", {"a": 1}]"#);
        assert_eq!(c.value(0), None);
    }

    #[test]
    fn top_level_capture_skips_string_runs_exactly_as_byte_by_byte() {
        let docs: [&[u8]; 4] = [
            br#" { "x": {"a": "s\"t"}, "a" : 42 , "b":"q\"}\\ long text here" ,"c":[1,{"a":"]"}],"d":true}"#,
            br#"{"usage":{"prompt_tokens":9},"choices":[{"message":{"content":"hello \u00e9 \" world"}}]}"#,
            br#"{"a":"0123456789abcdef","b":"x"}"#,
            br#"{"ke\"y":"v","a":"w"}"#,
        ];
        for doc in docs {
            for max in [4, 16, 17, 18, 1024] {
                for split in 0..doc.len() {
                    let mut fast = TopLevelCapture::new(&["a", "b", "c", "d", "usage", "choices"], max);
                    fast.feed(&doc[..split]);
                    fast.feed(&doc[split..]);
                    let mut slow = TopLevelCapture::new(&["a", "b", "c", "d", "usage", "choices"], max);
                    for b in doc.chunks(1) {
                        slow.feed(b);
                    }
                    assert_eq!(fast.found, slow.found, "{} max {max} split {split}", String::from_utf8_lossy(doc));
                }
            }
        }
    }

    #[test]
    fn array_splitter_holds_one_element() {
        let mut s = JsonArraySplitter::new(1024);
        let mut out = Vec::new();
        s.feed(br#"[{"a":"]}"},"#, |e| out.push(e.to_vec()));
        s.feed(br#" {"b":[1,2]"#, |e| out.push(e.to_vec()));
        assert_eq!(s.pending_bytes(), 10);
        s.feed(b"}]", |e| out.push(e.to_vec()));
        assert_eq!(out, vec![br#"{"a":"]}"}"#.to_vec(), br#"{"b":[1,2]}"#.to_vec()]);
    }

    #[test]
    fn array_splitter_gives_the_same_elements_for_any_split() {
        // Escaped quotes and backslashes, brackets inside strings, skipped top-level scalars and
        // an unfinished last element; every split puts some string state at a chunk boundary.
        let docs: [&[u8]; 4] = [
            br#"[{"a":"]}"},"x\"]",{"b":[1,2,{"c":"\\"}]}, 3, "s\\\"{", [ "\\\\" ,"q\"}"] ]"#,
            br#"[ {"k":"long text \" with [brackets] and \\ slashes","n":[{"m":"\\\""}]} ,{"x":"\u00e9"}]"#,
            br#"[{"a":"0123456789"},{"b":"01234567890123456789"},{"c":1}]"#,
            br#"[{"a":"\\"},{"b":"unterminated \"#,
        ];
        let run = |max: usize, chunks: &[&[u8]]| {
            let mut s = JsonArraySplitter::new(max);
            let mut out = Vec::new();
            for c in chunks {
                s.feed(c, |e| out.push(e.to_vec()));
            }
            (out, s.pending_bytes())
        };
        for doc in docs {
            for max in [4, 12, 13, 14, 24, 1024] {
                let whole = run(max, &[doc]);
                let bytes: Vec<&[u8]> = doc.chunks(1).collect();
                assert_eq!(run(max, &bytes), whole, "{} max {max} byte by byte", String::from_utf8_lossy(doc));
                for split in 0..=doc.len() {
                    let (a, b) = doc.split_at(split);
                    assert_eq!(run(max, &[a, b]), whole, "{} max {max} split {split}", String::from_utf8_lossy(doc));
                }
            }
        }
        let (out, _) = run(1024, &[docs[0]]);
        assert_eq!(
            out,
            vec![
                br#"{"a":"]}"}"#.to_vec(),
                br#"{"b":[1,2,{"c":"\\"}]}"#.to_vec(),
                br#"[ "\\\\" ,"q\"}"]"#.to_vec(),
            ]
        );
        // An element longer than `max` is dropped whole; the next one is still found.
        let (out, pending) = run(13, &[docs[2]]);
        assert_eq!((out, pending), (vec![br#"{"c":1}"#.to_vec()], 0));
        let (out, _) = run(18, &[docs[2]]);
        assert_eq!(out, vec![br#"{"a":"0123456789"}"#.to_vec(), br#"{"c":1}"#.to_vec()]);
    }
}
