//! JSON reading and surgical rewriting for the appliers: values are read as raw slices of the
//! document (`&RawValue`, which borrow from it), so a rewrite replaces exactly the string
//! literals that change and keeps every other byte — member order, numbers as written,
//! whitespace, images — as it was.

use super::action::{GuardAction, HitLog, Place};
use super::Scanner;
use serde_json::value::RawValue;
use tollgate_core::wire::raw_object::RawMembers;

/// Nesting followed by [`Walk::strings`] (serde_json itself stops at 128).
const MAX_DEPTH: usize = 64;

/// Replacements of raw values of one document, applied at once.
#[derive(Debug)]
pub(crate) struct Edits<'a> {
    src: &'a str,
    edits: Vec<(usize, usize, String)>,
}

impl<'a> Edits<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Edits { src, edits: Vec::new() }
    }

    /// Where `raw` lies in the document (`None` if it is not a slice of it).
    fn span(&self, raw: &RawValue) -> Option<(usize, usize)> {
        let s = raw.get();
        let start = (s.as_ptr() as usize).checked_sub(self.src.as_ptr() as usize)?;
        let end = start.checked_add(s.len())?;
        (end <= self.src.len()).then_some((start, end))
    }

    /// Replaces `raw` (a value of this document) with the JSON text `json`.
    pub(crate) fn replace(&mut self, raw: &RawValue, json: String) {
        if let Some((start, end)) = self.span(raw) {
            self.edits.push((start, end, json));
        }
    }

    /// The rewritten document (`None`: nothing changed). Overlapping edits keep the first.
    pub(crate) fn apply(mut self) -> Option<String> {
        if self.edits.is_empty() {
            return None;
        }
        self.edits.sort_by_key(|e| (e.0, e.1));
        let mut out = String::with_capacity(self.src.len() + 64);
        let mut pos = 0;
        for (start, end, text) in &self.edits {
            if *start < pos {
                continue;
            }
            out.push_str(self.src.get(pos..*start)?);
            out.push_str(text);
            pos = *end;
        }
        out.push_str(self.src.get(pos..)?);
        Some(out)
    }
}

/// The members of an object (every occurrence of a repeated key), `None` if not an object.
pub(crate) fn members(raw: &RawValue) -> Option<RawMembers<'_>> {
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The elements of an array, `None` if not an array.
pub(crate) fn items(raw: &RawValue) -> Option<Vec<&RawValue>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// A string value, decoded.
pub(crate) fn string(raw: &RawValue) -> Option<String> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// A non-negative integer value.
pub(crate) fn uint(raw: &RawValue) -> Option<u64> {
    serde_json::from_str(raw.get()).ok()
}

/// Every value of `key` in `m`.
pub(crate) fn all<'m, 'a>(m: &'m RawMembers<'a>, key: &'m str) -> impl Iterator<Item = &'a RawValue> + 'm {
    m.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| *v)
}

/// The last value of `key` (what most readers keep).
pub(crate) fn last<'a>(m: &RawMembers<'a>, key: &str) -> Option<&'a RawValue> {
    m.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// The last value of `key` as a string.
pub(crate) fn last_str(m: &RawMembers<'_>, key: &str) -> Option<String> {
    last(m, key).and_then(string)
}

/// Every value of `key` that is an array, flattened.
pub(crate) fn all_items<'a>(m: &RawMembers<'a>, key: &str) -> Vec<&'a RawValue> {
    all(m, key).filter_map(items).flatten().collect()
}

/// The members of the document `src` (a top-level object).
pub(crate) fn top(src: &str) -> Option<(&RawValue, RawMembers<'_>)> {
    let raw: &RawValue = serde_json::from_str(src).ok()?;
    let m = members(raw)?;
    Some((raw, m))
}

/// Scans texts of one document, counts hits and (redact mode) records their redactions.
pub(crate) struct Walk<'s> {
    pub scanner: &'s Scanner,
    pub action: GuardAction,
    pub place: Place,
    pub log: HitLog,
}

impl<'s> Walk<'s> {
    pub(crate) fn new(scanner: &'s Scanner, action: GuardAction, place: Place) -> Self {
        Walk { scanner, action, place, log: HitLog::default() }
    }

    /// Scans a text; its redaction when it changes (redact mode).
    pub(crate) fn scan_str(&mut self, index: i64, text: &str) -> Option<String> {
        let hits = self.scanner.scan(text);
        if hits.is_empty() {
            return None;
        }
        self.log.add_hits(self.scanner, self.place, index, &hits);
        (self.action == GuardAction::Redact).then(|| self.scanner.redact(text, &hits))
    }

    /// A string value read as text.
    pub(crate) fn text(&mut self, index: i64, raw: &RawValue, edits: &mut Edits<'_>) {
        let Some(s) = string(raw) else { return };
        if let Some(new) = self.scan_str(index, &s) {
            if let Ok(json) = serde_json::to_string(&new) {
                edits.replace(raw, json);
            }
        }
    }

    /// Every string value inside `raw` (object member values and array elements, not keys).
    pub(crate) fn strings(&mut self, index: i64, raw: &RawValue, edits: &mut Edits<'_>) {
        self.strings_at(index, raw, edits, 0);
    }

    fn strings_at(&mut self, index: i64, raw: &RawValue, edits: &mut Edits<'_>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match raw.get().as_bytes().first() {
            Some(b'"') => self.text(index, raw, edits),
            Some(b'{') => {
                if let Some(m) = members(raw) {
                    for (_, v) in &m.0 {
                        self.strings_at(index, v, edits, depth + 1);
                    }
                }
            }
            Some(b'[') => {
                for v in items(raw).unwrap_or_default() {
                    self.strings_at(index, v, edits, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// Tool-call arguments: a string holding JSON. When it is JSON, its string values are
    /// scanned (a redaction keeps it JSON); otherwise the whole string is text.
    pub(crate) fn arguments(&mut self, index: i64, raw: &RawValue, edits: &mut Edits<'_>) {
        let Some(s) = string(raw) else { return };
        if let Some(new) = self.arguments_str(index, &s) {
            if let Ok(json) = serde_json::to_string(&new) {
                edits.replace(raw, json);
            }
        }
    }

    /// [`Walk::arguments`] on the decoded string: its redaction when it changes.
    pub(crate) fn arguments_str(&mut self, index: i64, s: &str) -> Option<String> {
        match serde_json::from_str::<&RawValue>(s) {
            Ok(inner) => {
                // `from_str` trims surrounding whitespace: the edits address `s` itself.
                let mut inner_edits = Edits::new(s);
                self.strings(index, inner, &mut inner_edits);
                inner_edits.apply()
            }
            Err(_) => self.scan_str(index, s),
        }
    }
}
