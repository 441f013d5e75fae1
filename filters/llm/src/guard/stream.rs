//! [`StreamGuard`]: the scanner over streamed text deltas (see the module documentation of
//! [`super`], "Streaming").
//!
//! Positions are absolute (bytes of the concatenated input). The guard keeps `buf`, the text
//! from `base` on: a few bytes of look-behind before the oldest undecided position, then the
//! held-back tail. On each push the release point `cut` moves to `window` bytes before the
//! end; every candidate starting before `cut` is decided then (its reach fits in the window),
//! its hits go to the [`Redactor`] in order, and the text before `cut` is released.

use super::builtin::{self, Cur, LOOK_BEHIND};
use super::{next_pem_begin, sort_hits, Builtin, Detector, Hit, Redactor, Scanner};
use std::rc::Rc;

/// What a push releases: text safe to emit now (redacted in redact mode) and the hits
/// decided by this push (absolute ranges; a private key block is reported once its END
/// line, or the end of the stream, is seen).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    pub hits: Vec<Hit>,
}

#[derive(Debug)]
pub struct StreamGuard {
    scanner: Rc<Scanner>,
    window: usize,
    buf: String,
    /// Absolute position of `buf[0]`.
    base: usize,
    /// Built-ins and word lists: every candidate starting before this is decided.
    scanned: usize,
    /// Per user regex: where its next search starts.
    regex_next: Vec<usize>,
    /// Where the search for a private key BEGIN line resumes (`usize::MAX` inside a block).
    pem_next: usize,
    /// An open private key block: (start, where to look for its END line).
    pem_open: Option<(usize, usize)>,
    red: Redactor,
    finished: bool,
}

impl StreamGuard {
    /// A guard with the scanner's window; `redact`: released text is redacted (otherwise
    /// it is released as is and only the hits are reported).
    pub fn new(scanner: Rc<Scanner>, redact: bool) -> Self {
        let window = scanner.window();
        Self::with_window(scanner, redact, window)
    }

    pub fn with_window(scanner: Rc<Scanner>, redact: bool, window: usize) -> Self {
        let regex_next = vec![0; scanner.regexes.len()];
        StreamGuard {
            scanner,
            window,
            buf: String::new(),
            base: 0,
            scanned: 0,
            regex_next,
            pem_next: 0,
            pem_open: None,
            red: Redactor::new(redact),
            finished: false,
        }
    }

    /// The hold-back window (bytes).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Bytes received but not released yet.
    pub fn held(&self) -> usize {
        (self.base + self.buf.len()).saturating_sub(self.red.out_pos())
    }

    /// Adds a delta; releases all but the last `window` bytes.
    pub fn push(&mut self, delta: &str) -> Released {
        if self.finished {
            return Released::default();
        }
        self.buf.push_str(delta);
        let rel = floor_boundary(&self.buf, self.buf.len().saturating_sub(self.window));
        let cut = (self.base + rel).max(self.red.out_pos());
        if cut <= self.scanned {
            return Released::default();
        }
        self.step(cut, false)
    }

    /// Ends the stream: releases everything held.
    pub fn finish(&mut self) -> Released {
        if self.finished {
            return Released::default();
        }
        let end = self.base + self.buf.len();
        let r = self.step(end, true);
        self.finished = true;
        r
    }

    fn step(&mut self, cut: usize, eof: bool) -> Released {
        let scanner = Rc::clone(&self.scanner);
        let base = self.base;
        let end = base + self.buf.len();
        let text = self.buf.as_str();
        let c = Cur { t: text.as_bytes(), eof };
        let mut released = Released::default();
        let pk = Detector::Builtin(Builtin::PrivateKey);

        // An open private key block: has its END line arrived?
        if let Some((start, from)) = self.pem_open {
            let close = match builtin::pem_end(&c, from.saturating_sub(base)) {
                Ok(Some(e)) => Some(base + e),
                Ok(None) if eof => Some(end),
                Ok(None) => {
                    self.pem_open = Some((start, end));
                    None
                }
                Err(q) => {
                    self.pem_open = Some((start, base + q));
                    None
                }
            };
            if let Some(e) = close {
                released.hits.push(Hit { start, end: e, detector: pk });
                self.red.close(e);
                self.pem_open = None;
                self.pem_next = e;
            }
        }

        // Candidates starting in scanned..cut.
        let mut new = Vec::new();
        let (from, to) = (self.scanned - base, cut - base);
        scanner.find_local(text, from, to, eof, &mut new);
        for (k, next) in self.regex_next.iter_mut().enumerate() {
            *next = base + scanner.find_regex(k, text, next.saturating_sub(base).max(from), to, eof, &mut new);
        }
        for h in &mut new {
            h.start += base;
            h.end += base;
        }
        // Private keys: a block whose END line has not arrived yet opens (its BEGIN line is
        // decided); it sorts as the longest hit at its start, like the whole block would.
        let mut opened = None;
        if scanner.is_on(Builtin::PrivateKey) && self.pem_open.is_none() {
            let mut pos = self.pem_next.max(self.scanned);
            while let Some((start, begin_end)) = next_pem_begin(&c, pos - base, to) {
                let start = base + start;
                let search_from = match builtin::pem_end(&c, begin_end) {
                    Ok(Some(e)) => {
                        new.push(Hit { start, end: base + e, detector: pk });
                        pos = base + e;
                        continue;
                    }
                    Ok(None) if eof => {
                        new.push(Hit { start, end, detector: pk });
                        pos = end;
                        continue;
                    }
                    Ok(None) => end,
                    Err(q) => base + q,
                };
                opened = Some((start, base + begin_end, search_from));
                new.push(Hit { start, end: usize::MAX, detector: pk });
                break;
            }
            self.pem_next = if opened.is_some() { usize::MAX } else { pos.max(cut) };
        }
        sort_hits(&mut new);
        for h in &new {
            let label = scanner.name(h.detector);
            match opened {
                Some((start, begin_end, search_from)) if h.end == usize::MAX && h.start == start && h.detector == pk => {
                    self.red.hit(&Hit { end: begin_end, ..*h }, label, text, base, &mut released.text);
                    self.red.open();
                    self.pem_open = Some((start, search_from));
                }
                _ => {
                    self.red.hit(h, label, text, base, &mut released.text);
                    released.hits.push(*h);
                }
            }
        }
        self.red.advance(cut, text, base, &mut released.text);
        if eof {
            if let Some((start, _)) = self.pem_open.take() {
                released.hits.push(Hit { start, end, detector: pk });
                self.red.close(end);
            }
        }
        self.scanned = cut;
        self.trim();
        sort_hits(&mut released.hits);
        released
    }

    /// Drops text nothing will read again (keeping the look-behind).
    fn trim(&mut self) {
        let mut keep = self.scanned.min(self.red.out_pos());
        for n in &self.regex_next {
            keep = keep.min(*n);
        }
        if let Some((_, from)) = self.pem_open {
            keep = keep.min(from);
        }
        keep = keep.saturating_sub(LOOK_BEHIND);
        if keep <= self.base {
            return;
        }
        let rel = floor_boundary(&self.buf, keep - self.base);
        self.buf.drain(..rel);
        self.base += rel;
    }
}

/// The largest character boundary of `s` at or below `i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
