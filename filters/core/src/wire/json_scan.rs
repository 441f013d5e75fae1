//! Incremental JSON scanner: feed a document in chunks as it streams past, get a callback for
//! every scalar with its path (`result.task.id`), and keep only the current path and the
//! scalar in progress — never the document.
//!
//! It is a tokenizer with a path stack, not a validator: on malformed input it stops
//! (`failed()` turns true) and reports nothing more. Strings longer than `max_string` bytes
//! are skipped (not reported); nesting deeper than `max_depth` stops the scan.
//!
//! [`StringBody`] is the string/escape rule on its own, for other byte-level JSON readers
//! (the LLM filter's top-level member capture), so that rule and its run skipping live once.

/// The inside of a JSON string read in chunks, split into [`Piece`]s. It keeps only whether
/// the previous byte was a backslash, so a string may end in any later chunk.
#[derive(Debug, Default, Clone, Copy)]
pub struct StringBody {
    escaped: bool,
}

/// What [`StringBody::next`] found at the start of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A run without quotes or backslashes: taken at once rather than byte by byte.
    Text,
    /// One byte of an escape: the backslash, or the byte after it.
    Escape,
    /// The closing quote (one byte, not part of the string's content).
    End,
}

impl StringBody {
    /// The piece at the start of `rest` (read inside a string, after the opening quote) and
    /// its length in bytes; `(Piece::Text, 0)` only when `rest` is empty.
    pub fn next(&mut self, rest: &[u8]) -> (Piece, usize) {
        let Some(&b) = rest.first() else { return (Piece::Text, 0) };
        if self.escaped {
            self.escaped = false;
            return (Piece::Escape, 1);
        }
        match b {
            b'\\' => {
                self.escaped = true;
                (Piece::Escape, 1)
            }
            b'"' => (Piece::End, 1),
            // `b` is text already: the run goes on from the next byte.
            _ => (Piece::Text, 1 + text_run(rest.get(1..).unwrap_or_default())),
        }
    }
}

/// How many bytes of `bytes` come before the first quote or backslash (all of them if
/// none): eight bytes at a time, as most of a body is string text.
pub(crate) fn text_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The lowest flagged byte of `matching` is the first byte equal to `byte` (flags above
    // it may be false).
    let matching = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut n = 0;
    while let Some(chunk) = bytes.get(n..n + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let word = u64::from_le_bytes(chunk);
        let found = matching(word, b'"') | matching(word, b'\\');
        if found != 0 {
            return n + (found.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while bytes.get(n).is_some_and(|&c| c != b'"' && c != b'\\') {
        n += 1;
    }
    n
}

/// One step of a path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A scalar as found in the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(&'a str),
    /// The number's text, as written.
    Num(&'a str),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a value (document start, after `:` or after `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayStart,
    /// After `{`: a key or `}`.
    ObjectStart,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or a closing bracket.
    After,
    InString { key: bool },
    InNumber,
    InLiteral,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
enum Frame {
    Object,
    Array(usize),
}

#[derive(Debug)]
pub struct JsonScanner {
    state: State,
    frames: Vec<Frame>,
    path: Vec<Seg>,
    string: StringBody,
    buf: Vec<u8>,
    overflow: bool,
    max_string: usize,
    max_depth: usize,
}

/// True when `path` is exactly the keys `keys` (no array steps).
pub fn path_is(path: &[Seg], keys: &[&str]) -> bool {
    path.len() == keys.len() && path.iter().zip(keys).all(|(s, k)| matches!(s, Seg::Key(p) if p == k))
}

impl JsonScanner {
    pub fn new(max_string: usize, max_depth: usize) -> Self {
        const TYPICAL_DEPTH: usize = 8;
        // Room for a typical document's nesting and strings, so they do not regrow step by
        // step (a string longer than `max_string` is not kept anyway).
        JsonScanner {
            state: State::Value,
            frames: Vec::with_capacity(TYPICAL_DEPTH.min(max_depth)),
            path: Vec::with_capacity(TYPICAL_DEPTH.min(max_depth)),
            string: StringBody::default(),
            buf: Vec::with_capacity(max_string.clamp(16, 256)),
            overflow: false,
            max_string,
            max_depth,
        }
    }

    /// The scanner stopped on malformed or too deeply nested input.
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The top-level value is complete.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `chunk`, calling `on_scalar(path, value)` for each complete scalar.
    pub fn feed(&mut self, chunk: &[u8], mut on_scalar: impl FnMut(&[Seg], Scalar<'_>)) {
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            match self.state {
                State::Failed => return,
                State::InString { key } => {
                    let rest = chunk.get(i..).unwrap_or_default();
                    let (piece, n) = self.string.next(rest);
                    if piece == Piece::End {
                        self.end_string(key, &mut on_scalar);
                    } else {
                        self.push_run(rest.get(..n).unwrap_or(rest));
                    }
                    i += n;
                }
                State::InNumber => {
                    if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                        self.push_byte(b);
                        i += 1;
                    } else {
                        self.end_number(&mut on_scalar);
                        // Reprocess `b` as what follows a value.
                    }
                }
                State::InLiteral => {
                    if b.is_ascii_alphabetic() {
                        self.push_byte(b);
                        i += 1;
                    } else {
                        self.end_literal(&mut on_scalar);
                    }
                }
                _ if b.is_ascii_whitespace() => i += 1,
                State::Value | State::ArrayStart => {
                    if self.state == State::ArrayStart && b == b']' {
                        self.close(b']');
                    } else {
                        self.start_value(b);
                    }
                    i += 1;
                }
                State::ObjectStart | State::Key => {
                    match b {
                        b'"' => self.start_string(true),
                        b'}' if self.state == State::ObjectStart => self.close(b'}'),
                        _ => self.state = State::Failed,
                    }
                    i += 1;
                }
                State::Colon => {
                    self.state = if b == b':' { State::Value } else { State::Failed };
                    i += 1;
                }
                State::After => {
                    match (b, self.frames.last_mut()) {
                        (b',', Some(Frame::Object)) => self.state = State::Key,
                        (b',', Some(Frame::Array(n))) => {
                            *n += 1;
                            let n = *n;
                            if let Some(last) = self.path.last_mut() {
                                *last = Seg::Index(n);
                            }
                            self.state = State::Value;
                        }
                        (b'}', _) | (b']', _) => self.close(b),
                        _ => self.state = State::Failed,
                    }
                    i += 1;
                }
                State::Done => {
                    // Anything but whitespace after the document: stop.
                    self.state = State::Failed;
                    i += 1;
                }
            }
        }
    }

    /// Call when the input ended: completes a trailing top-level number or literal.
    pub fn finish(&mut self, mut on_scalar: impl FnMut(&[Seg], Scalar<'_>)) {
        match self.state {
            State::InNumber => self.end_number(&mut on_scalar),
            State::InLiteral => self.end_literal(&mut on_scalar),
            _ => {}
        }
    }

    /// [`JsonScanner::push_byte`] for each byte of `run`.
    fn push_run(&mut self, run: &[u8]) {
        let room = self.max_string.saturating_sub(self.buf.len());
        if let Some(head) = run.get(..room).filter(|_| run.len() > room) {
            self.buf.extend_from_slice(head);
            self.overflow = true;
        } else {
            self.buf.extend_from_slice(run);
        }
    }

    fn push_byte(&mut self, b: u8) {
        if self.buf.len() < self.max_string {
            self.buf.push(b);
        } else {
            self.overflow = true;
        }
    }

    fn start_value(&mut self, b: u8) {
        match b {
            b'{' | b'[' => {
                if self.frames.len() >= self.max_depth {
                    self.state = State::Failed;
                    return;
                }
                if b == b'{' {
                    self.frames.push(Frame::Object);
                    self.path.push(Seg::Key(String::new()));
                    self.state = State::ObjectStart;
                } else {
                    self.frames.push(Frame::Array(0));
                    self.path.push(Seg::Index(0));
                    self.state = State::ArrayStart;
                }
            }
            b'"' => self.start_string(false),
            b'-' | b'0'..=b'9' => {
                self.buf.clear();
                self.overflow = false;
                self.buf.push(b);
                self.state = State::InNumber;
            }
            b't' | b'f' | b'n' => {
                self.buf.clear();
                self.overflow = false;
                self.buf.push(b);
                self.state = State::InLiteral;
            }
            _ => self.state = State::Failed,
        }
    }

    fn start_string(&mut self, key: bool) {
        self.buf.clear();
        self.overflow = false;
        self.state = State::InString { key };
    }

    /// The path of the value that just ended: inside a container, the container's segment.
    fn value_done(&mut self) {
        self.state = if self.frames.is_empty() { State::Done } else { State::After };
    }

    /// A string without escapes is handed out borrowed from the scanner's buffer, and a key
    /// is decoded into its object's path segment (reused from key to key): no allocation
    /// per string.
    fn end_string(&mut self, key: bool, on_scalar: &mut impl FnMut(&[Seg], Scalar<'_>)) {
        let plain = !self.overflow && !self.buf.contains(&b'\\');
        if key {
            match self.path.last_mut() {
                Some(Seg::Key(k)) if plain => {
                    k.clear();
                    k.push_str(std::str::from_utf8(&self.buf).unwrap_or_default());
                }
                Some(last) => *last = Seg::Key(if self.overflow { None } else { decode_string(&self.buf) }.unwrap_or_default()),
                None => {}
            }
            self.state = State::Colon;
        } else {
            if plain {
                if let Ok(s) = std::str::from_utf8(&self.buf) {
                    on_scalar(&self.path, Scalar::Str(s));
                }
            } else if let Some(s) = if self.overflow { None } else { decode_string(&self.buf) } {
                on_scalar(&self.path, Scalar::Str(&s));
            }
            self.value_done();
        }
    }

    fn end_number(&mut self, on_scalar: &mut impl FnMut(&[Seg], Scalar<'_>)) {
        if let Ok(text) = std::str::from_utf8(&self.buf) {
            if !self.overflow {
                on_scalar(&self.path, Scalar::Num(text));
            }
        }
        self.value_done();
    }

    fn end_literal(&mut self, on_scalar: &mut impl FnMut(&[Seg], Scalar<'_>)) {
        let value = match self.buf.as_slice() {
            b"true" => Scalar::Bool(true),
            b"false" => Scalar::Bool(false),
            b"null" => Scalar::Null,
            _ => {
                self.state = State::Failed;
                return;
            }
        };
        on_scalar(&self.path, value);
        self.value_done();
    }

    fn close(&mut self, bracket: u8) {
        let ok = matches!(
            (bracket, self.frames.last()),
            (b'}', Some(Frame::Object)) | (b']', Some(Frame::Array(_)))
        );
        if !ok {
            self.state = State::Failed;
            return;
        }
        self.frames.pop();
        self.path.pop();
        self.value_done();
    }
}

/// Decodes a JSON string body (without quotes), escapes included.
fn decode_string(raw: &[u8]) -> Option<String> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(str::to_string);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> (Vec<(String, String)>, bool) {
        let mut out = Vec::new();
        let mut s = JsonScanner::new(64, 32);
        let mut cb = |path: &[Seg], v: Scalar<'_>| {
            let p: Vec<String> = path
                .iter()
                .map(|s| match s {
                    Seg::Key(k) => k.clone(),
                    Seg::Index(i) => format!("[{i}]"),
                })
                .collect();
            let v = match v {
                Scalar::Str(s) => format!("s:{s}"),
                Scalar::Num(n) => format!("n:{n}"),
                Scalar::Bool(b) => format!("b:{b}"),
                Scalar::Null => "null".into(),
            };
            out.push((p.join("."), v));
        };
        for c in chunks {
            s.feed(c, &mut cb);
        }
        s.finish(&mut cb);
        let ok = s.done() && !s.failed();
        (out, ok)
    }

    const DOC: &[u8] = br#" {"result": {"task": {"id": "t-1", "contextId": "c\"1", "status": {"state": "TASK_STATE_COMPLETED"},
        "artifacts": [{"parts": [{"text": "hi"}, {"n": -1.5e3}]}], "empty": {}, "arr": [], "x": [true, false, null]}},
        "id": 7, "jsonrpc": "2.0"} "#;

    #[test]
    fn scalars_with_paths() {
        let (out, ok) = scan(&[DOC]);
        assert!(ok);
        let find = |p: &str| out.iter().find(|(k, _)| k == p).map(|(_, v)| v.clone());
        assert_eq!(find("result.task.id").as_deref(), Some("s:t-1"));
        assert_eq!(find("result.task.contextId").as_deref(), Some("s:c\"1"));
        assert_eq!(find("result.task.status.state").as_deref(), Some("s:TASK_STATE_COMPLETED"));
        assert_eq!(find("result.task.artifacts.[0].parts.[0].text").as_deref(), Some("s:hi"));
        assert_eq!(find("result.task.artifacts.[0].parts.[1].n").as_deref(), Some("n:-1.5e3"));
        assert_eq!(find("result.task.x.[2]").as_deref(), Some("null"));
        assert_eq!(find("id").as_deref(), Some("n:7"));
        assert_eq!(find("jsonrpc").as_deref(), Some("s:2.0"));
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let (whole, _) = scan(&[DOC]);
        for split in 0..DOC.len() {
            let (a, b) = DOC.split_at(split);
            assert_eq!(scan(&[a, b]).0, whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = DOC.chunks(1).collect();
        assert_eq!(scan(&bytes).0, whole);
    }

    #[test]
    fn long_strings_are_skipped_not_held() {
        let long = format!(r#"{{"a": "{}", "b": "ok"}}"#, "x".repeat(1000));
        let (out, ok) = scan(&[long.as_bytes()]);
        assert!(ok);
        assert_eq!(out, vec![("b".to_string(), "s:ok".to_string())]);
    }

    #[test]
    fn malformed_input_stops() {
        for bad in [&b"{\"a\" 1}"[..], b"{\"a\":1,}", b"[1 2]", b"{\"a\":tru}", b"{}}", b"{\"a\":1}]"] {
            let mut s = JsonScanner::new(64, 8);
            s.feed(bad, |_, _| {});
            s.finish(|_, _| {});
            assert!(s.failed() || !s.done(), "{}", String::from_utf8_lossy(bad));
        }
        let mut s = JsonScanner::new(64, 2);
        s.feed(b"[[[1]]]", |_, _| {});
        assert!(s.failed());
    }

    #[test]
    fn string_body_splits_runs_escapes_and_the_end_across_chunks() {
        let mut s = StringBody::default();
        assert_eq!(s.next(br#"ab\"c"#), (Piece::Text, 2));
        assert_eq!(s.next(br#"\"c"#), (Piece::Escape, 1));
        // The escaped quote arrives in the next chunk: still an escape, not the end.
        assert_eq!(s.next(br#""c"#), (Piece::Escape, 1));
        assert_eq!(s.next(br#"c\\"#), (Piece::Text, 1));
        assert_eq!(s.next(br#"\\"#), (Piece::Escape, 1));
        assert_eq!(s.next(br#"\"#), (Piece::Escape, 1));
        assert_eq!(s.next(br#"" x"#), (Piece::End, 1));
        assert_eq!(s.next(b"no end"), (Piece::Text, 6));
        assert_eq!(s.next(b""), (Piece::Text, 0));
    }

    #[test]
    fn path_is_matches_keys_only() {
        let p = vec![Seg::Key("result".into()), Seg::Key("id".into())];
        assert!(path_is(&p, &["result", "id"]));
        assert!(!path_is(&p, &["result"]));
        assert!(!path_is(&[Seg::Index(0)], &["0"]));
    }
}
