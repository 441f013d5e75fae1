//! Incremental Server-Sent Events parser.
//!
//! Feed it response body chunks as they pass; it calls back once per complete event and
//! keeps only the event in progress (events may be split anywhere, even inside a CRLF).
//! With `keep_raw`, each callback also gets the event's exact bytes, so a rewriter can
//! pass untouched events through verbatim and replace only the ones it changes.
//!
//! A stream may begin with a UTF-8 byte-order mark (the SSE spec says readers strip one):
//! the parser strips it, else a reader that does (browsers, the MCP TypeScript SDK) would
//! see an event the parser did not, e.g. a `tools/list` answer that was never filtered.

/// U+FEFF in UTF-8.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type `message`.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

impl SseEvent {
    /// Serializes a replacement for the block whose raw bytes were `original`, in the same
    /// line-ending style: for a block that ended at the CR of a CRLF, CRLF lines and a final
    /// lone CR (the parser hands on that CR's LF as the next block).
    pub fn to_bytes_replacing(&self, original: &[u8]) -> Vec<u8> {
        if original.last() != Some(&b'\r') {
            return self.to_bytes();
        }
        let lf = self.to_bytes();
        let mut out = Vec::with_capacity(lf.len() + 8);
        // `to_bytes` ends with the blank line's LF: that one becomes the lone CR below.
        for &b in lf.get(..lf.len().saturating_sub(1)).unwrap_or_default() {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out.push(b'\r');
        out
    }

    /// Serializes the event back to the wire (LF line endings).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 32);
        if let Some(id) = &self.id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        for line in self.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

/// What a block of SSE bytes up to a blank line turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum SseItem<'a> {
    /// A dispatched event.
    Event(&'a SseEvent),
    /// A block with no data (comments, keep-alives, a lone `retry:`): nothing to dispatch.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// The event in progress grew past the configured maximum.
    EventTooLarge,
}

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    event: SseEvent,
    has_data: bool,
    last_was_cr: bool,
    keep_raw: bool,
    raw: Vec<u8>,
    max_event_bytes: usize,
    event_bytes: usize,
    /// Bytes of [`UTF8_BOM`] matched at the stream's start; its length once past the start.
    bom_matched: usize,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            event: SseEvent::default(),
            has_data: false,
            last_was_cr: false,
            keep_raw: false,
            raw: Vec::new(),
            max_event_bytes,
            event_bytes: 0,
            bom_matched: 0,
        }
    }

    /// Also hand each event's exact bytes to the callback.
    pub fn keeping_raw(mut self) -> Self {
        self.keep_raw = true;
        self
    }

    /// Bytes held for the event in progress (the parser's whole memory footprint).
    pub fn pending_bytes(&self) -> usize {
        self.event_bytes
    }

    /// Raw bytes of the incomplete event in progress (only with `keeping_raw`).
    pub fn pending_raw(&self) -> &[u8] {
        &self.raw
    }

    /// Parses `chunk`; calls `on_item(item, raw)` per complete block. `raw` is empty unless
    /// `keeping_raw` was set. A block ending in CRLF is dispatched at its CR (the event is
    /// complete there); the LF that follows is handed on at once as an `Other` block of its
    /// own, so a rewriter never holds a byte a client waits for.
    pub fn feed(&mut self, chunk: &[u8], mut on_item: impl FnMut(SseItem<'_>, &[u8])) -> Result<(), SseError> {
        for &byte in chunk {
            if self.keep_raw {
                self.raw.push(byte);
            }
            self.event_bytes += 1;
            if self.event_bytes > self.max_event_bytes {
                return Err(SseError::EventTooLarge);
            }
            if self.bom_matched < UTF8_BOM.len() {
                if UTF8_BOM.get(self.bom_matched) == Some(&byte) {
                    self.bom_matched += 1;
                    continue;
                }
                // Not a byte-order mark after all: what looked like one starts the first line.
                self.line.extend_from_slice(UTF8_BOM.get(..self.bom_matched).unwrap_or_default());
                self.bom_matched = UTF8_BOM.len();
            }
            match byte {
                b'\n' if self.last_was_cr => {
                    self.last_was_cr = false;
                    if self.keep_raw && self.raw.len() == 1 {
                        // The CR before it dispatched a block: pass this LF on now.
                        on_item(SseItem::Other, &self.raw);
                        self.raw.clear();
                        self.event_bytes = 0;
                    }
                }
                b'\n' | b'\r' => {
                    self.last_was_cr = byte == b'\r';
                    self.end_line(&mut on_item);
                }
                _ => {
                    self.last_was_cr = false;
                    self.line.push(byte);
                }
            }
        }
        Ok(())
    }

    fn end_line(&mut self, on_item: &mut impl FnMut(SseItem<'_>, &[u8])) {
        if self.line.is_empty() {
            self.dispatch(on_item);
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.first() != Some(&b':') {
            let (name, value) = match line.iter().position(|b| *b == b':').map(|i| line.split_at(i)) {
                // `value` starts at the colon; one space after it is not part of the value.
                Some((name, value)) => {
                    let value = value.get(1..).unwrap_or_default();
                    (name, value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (&line[..], &b""[..]),
            };
            let value = String::from_utf8_lossy(value);
            match name {
                b"data" => {
                    if self.has_data {
                        self.event.data.push('\n');
                    }
                    self.event.data.push_str(&value);
                    self.has_data = true;
                }
                b"event" => self.event.event = Some(value.into_owned()),
                b"id" if !value.contains('\0') => self.event.id = Some(value.into_owned()),
                _ => {}
            }
        }
        // Reuse the line's allocation.
        self.line = line;
        self.line.clear();
    }

    fn dispatch(&mut self, on_item: &mut impl FnMut(SseItem<'_>, &[u8])) {
        if self.has_data {
            on_item(SseItem::Event(&self.event), &self.raw);
        } else {
            on_item(SseItem::Other, &self.raw);
        }
        self.event = SseEvent::default();
        self.has_data = false;
        self.raw.clear();
        self.event_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for c in chunks {
            parser
                .feed(c, |item, _| {
                    if let SseItem::Event(e) = item {
                        out.push(e.clone())
                    }
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn events_split_anywhere() {
        let stream = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: line1\ndata: line2\nid: 7\n\ndata: [DONE]\n\n";
        let whole = collect(&mut SseParser::new(1 << 20), &[stream]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[0].data, "{\"a\":1}");
        assert_eq!(whole[1].data, "line1\nline2");
        assert_eq!(whole[1].id.as_deref(), Some("7"));
        assert_eq!(whole[2].data, "[DONE]");
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(collect(&mut SseParser::new(1 << 20), &[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(collect(&mut SseParser::new(1 << 20), &bytes), whole);
    }

    #[test]
    fn cr_only_and_no_space_after_colon() {
        let events = collect(&mut SseParser::new(1024), &[b"data:x\r\revent:y\rdata:z\r\r"]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "x");
        assert_eq!(events[1].event.as_deref(), Some("y"));
    }

    #[test]
    fn holds_only_the_event_in_progress() {
        let mut parser = SseParser::new(1 << 20);
        for _ in 0..1000 {
            collect(&mut parser, &[b"data: {\"chunk\":\"aaaaaaaaaaaaaaaaaaaaaaaa\"}\n\n"]);
        }
        collect(&mut parser, &[b"data: part"]);
        assert_eq!(parser.pending_bytes(), 10);
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut parser = SseParser::new(8);
        assert_eq!(parser.feed(b"data: 0123456789", |_, _| {}), Err(SseError::EventTooLarge));
    }

    #[test]
    fn raw_bytes_reproduce_the_stream() {
        let stream = b"event: a\r\ndata: 1\r\n\r\n: ping\n\ndata: 2\n\n";
        let mut parser = SseParser::new(1024).keeping_raw();
        let mut out = Vec::new();
        for c in stream.chunks(3) {
            parser.feed(c, |_, raw| out.extend_from_slice(raw)).unwrap();
        }
        out.extend_from_slice(parser.pending_raw());
        assert_eq!(out, stream.to_vec());
    }

    #[test]
    fn crlf_blank_line_is_handed_on_without_waiting_for_the_next_event() {
        let mut parser = SseParser::new(1024).keeping_raw();
        let mut out = Vec::new();
        parser.feed(b"data: 1\r\n\r\n", |_, raw| out.extend_from_slice(raw)).unwrap();
        assert_eq!(out, b"data: 1\r\n\r\n".to_vec());
        assert!(parser.pending_raw().is_empty());
    }

    #[test]
    fn replacement_keeps_crlf_style() {
        let e = SseEvent { event: None, data: "x".into(), id: None };
        assert_eq!(e.to_bytes_replacing(b"data: y\r\n\r"), b"data: x\r\n\r".to_vec());
        assert_eq!(e.to_bytes_replacing(b"data: y\n\n"), b"data: x\n\n".to_vec());
    }

    #[test]
    fn a_leading_byte_order_mark_is_stripped_however_split() {
        let stream = b"\xEF\xBB\xBFdata: {\"a\":1}\n\n\xEF\xBB\xBFdata: 2\n\n";
        let expected = vec![
            SseEvent { data: "{\"a\":1}".into(), ..SseEvent::default() },
            // Only at the start: a later U+FEFF is part of its line (here, of the field name).
        ];
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(collect(&mut SseParser::new(1024), &[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(collect(&mut SseParser::new(1024), &bytes), expected);
        // Raw bytes keep it: a pass-through stays byte-exact.
        let mut parser = SseParser::new(1024).keeping_raw();
        let mut out = Vec::new();
        parser.feed(stream, |_, raw| out.extend_from_slice(raw)).unwrap();
        assert_eq!(out, stream.to_vec());
    }

    #[test]
    fn a_partial_byte_order_mark_is_line_content() {
        let events = collect(&mut SseParser::new(1024), &[b"\xEF\xBB", b"data: x\n\n"]);
        assert!(events.is_empty(), "the field name is not `data`: {events:?}");
        let events = collect(&mut SseParser::new(1024), &[b"\xEFdata: x\n\ndata: y\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "y");
    }

    #[test]
    fn serialize_round_trips() {
        let e = SseEvent { event: Some("x".into()), data: "a\nb".into(), id: Some("1".into()) };
        assert_eq!(collect(&mut SseParser::new(1024), &[&e.to_bytes()]), vec![e]);
    }
}
