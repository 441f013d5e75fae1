//! The response side of an MCP exchange, given bytes: which responses the filter expects
//! ([`Expect`]), how it reads the body ([`ResponseMode`]), and the [`Reader`] that looks at
//! every server message (a JSON body, one message or a batch; or SSE events): records a tool
//! result's `isError` and error codes, filters list results by the policy, and replaces what
//! it must not pass with a JSON-RPC error. The exchange moves the bytes.

use crate::listfilter::{filter_list, id_key, IdKey, ListKind, ResponseHead, ServerMessage};
use crate::message::{self, codes, Target};
use crate::policy::{Policy, Subject};
use crate::record::MessageRecord;
use serde_json::value::RawValue;
use tollgate_core::observe::audit::Decision;
use tollgate_core::reply::rpc_error_body;
use tollgate_core::wire::sse::{SseEvent, SseItem, SseParser};

/// A response the filter expects for a forwarded request.
#[derive(Debug)]
pub struct Expect {
    pub key: IdKey<'static>,
    /// The list the request asked for.
    pub list: Option<ListKind>,
    /// The index of its audit record.
    pub record: usize,
}

#[derive(Debug)]
pub enum ResponseMode {
    /// Untouched.
    Pass,
    /// JSON: a copy is read for the audit (no rewriting possible).
    JsonCopy { copy: Vec<u8>, overflow: bool },
    /// JSON held by Envoy until the end, then rewritten.
    JsonBuffer,
    /// SSE rewritten event by event.
    Sse(Box<SseParser>),
    /// Failed closed mid-response: everything further is dropped.
    Dropped,
}

/// What becomes of one server message.
enum Outcome {
    Keep,
    Replace(String),
    /// Removed: a response that answers no request of this POST.
    Drop,
}

/// What the exchange knows when the response headers come.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The response of a GET (the server's stream), not of a POST.
    pub is_get: bool,
    pub expect: &'a [Expect],
    /// Lists are filtered (a policy is configured).
    pub policy: bool,
    pub dry_run: bool,
    pub content_type: Option<&'a str>,
    /// A `content-encoding` other than identity.
    pub encoded: bool,
    pub max_sse_event_bytes: usize,
}

/// How the exchange reads a response body.
#[derive(Debug)]
pub enum Plan {
    /// Not at all.
    Pass,
    /// A list was asked for and the body is neither JSON nor SSE: it cannot be filtered.
    Unfilterable,
    /// A list could be in it and it is encoded: it cannot be read, so it is never passed.
    DropEncoded,
    /// In this mode; `rewrite`: the body may change (its length and caching go).
    Read { mode: ResponseMode, rewrite: bool },
}

/// How to read the response that `head` describes.
pub fn plan(head: &Head<'_>) -> Plan {
    // A POST of only notifications or responses has no answer of its own (202, no body);
    // whatever body comes is read like a GET stream's when lists are filtered: a client
    // routes a message by its id, so a list result here would reach a pending tools/list.
    let answers_nothing = head.expect.is_empty() && !head.is_get;
    if answers_nothing && !head.policy {
        return Plan::Pass;
    }
    let sse = message::is_sse_content_type(head.content_type);
    let json = message::is_json_content_type(head.content_type);
    let lists_expected = head.expect.iter().any(|e| e.list.is_some());
    if !sse && !json {
        return if head.policy && lists_expected { Plan::Unfilterable } else { Plan::Pass };
    }
    // With a policy every JSON or SSE response is read before it is released: a list may be
    // in any of them (a list-shaped result under another request's id, or a response to no
    // request of this POST, found by fuzzing), and a JSON body's `id` may come after its
    // `result`, so a JSON body is held whole (bounded by `max_response_bytes`) to be judged.
    let lists_possible = head.policy;
    if head.encoded {
        return if lists_possible { Plan::DropEncoded } else { Plan::Pass };
    }
    let rewrite = lists_possible && !head.dry_run;
    let mode = if sse {
        ResponseMode::Sse(Box::new(SseParser::new(head.max_sse_event_bytes).keeping_raw()))
    } else if rewrite {
        ResponseMode::JsonBuffer
    } else {
        ResponseMode::JsonCopy { copy: Vec::new(), overflow: false }
    };
    Plan::Read { mode, rewrite }
}

/// A list response that cannot be filtered: the records of the lists asked for get the
/// error (and, unless `dry_run`, the `error` decision). Returns the error.
pub fn unfilterable(expect: &[Expect], records: &mut [MessageRecord], content_type: Option<&str>, dry_run: bool) -> String {
    let error = format!(
        "list response with content type `{}` cannot be filtered",
        message::truncate(content_type.unwrap_or(""), 64).escape_debug()
    );
    for e in expect.iter().filter(|e| e.list.is_some()) {
        if let Some(rec) = records.get_mut(e.record) {
            if !dry_run {
                rec.decision = Decision::Error;
            }
            rec.error = Some(error.clone());
        }
    }
    error
}

/// A JSON-RPC error for the (single) expected request, or `id: null`.
pub fn response_error(expect: &[Expect], records: &[MessageRecord], message: &str) -> Vec<u8> {
    let id = match expect {
        [only] => records.get(only.record).and_then(|r| r.detail.jsonrpc_id.as_deref()),
        _ => None,
    };
    rpc_error_body::<()>(id, codes::INTERNAL_ERROR, message, None)
}

/// Reads server messages for one exchange: what it expects, the records to complete.
pub struct Reader<'a> {
    pub expect: &'a [Expect],
    pub records: &'a mut [MessageRecord],
    pub policy: Option<&'a Policy>,
    pub subject: Subject<'a>,
    /// Behind Envoy's `mcp_router`: list items are judged on the backend their prefix names.
    pub router: Option<&'a crate::router::Router>,
    /// The JSON body is held to be rewritten ([`ResponseMode::JsonBuffer`]).
    pub held: bool,
    /// The response of a POST: its responses must answer the POST's requests (`expect`).
    /// False on a GET stream, where a server replays responses to earlier POSTs when a
    /// client resumes (`Last-Event-ID`).
    pub post: bool,
    /// Tool-definition pinning (`tool_pinning`), with the host its tables live in.
    pub pins: Option<(&'a crate::pinning::Pinning, &'a dyn tollgate_core::host::Host)>,
}

impl Reader<'_> {
    pub fn response_error(&self, message: &str) -> Vec<u8> {
        response_error(self.expect, self.records, message)
    }

    /// Reads (and, for lists, rewrites) a JSON response body: one message or a batch.
    pub fn inspect_json(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let Ok(text) = std::str::from_utf8(body) else {
            return self.unreadable_json(body);
        };
        if text.trim_start().starts_with('[') {
            let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) else {
                return self.unreadable_json(body);
            };
            let mut changed = false;
            let mut parts: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                match self.server_message(item.get()) {
                    Outcome::Keep => parts.push(item.get().to_string()),
                    Outcome::Replace(new) => {
                        changed = true;
                        parts.push(new);
                    }
                    Outcome::Drop => changed = true,
                }
            }
            if parts.is_empty() && changed {
                // Nothing left (an empty batch is not a JSON-RPC answer): an error instead.
                return Some(self.response_error(UNSOLICITED));
            }
            changed.then(|| format!("[{}]", parts.join(",")).into_bytes())
        } else {
            match self.server_message(text) {
                Outcome::Keep => None,
                Outcome::Replace(new) => Some(new.into_bytes()),
                // The body is the server's only answer: the client's request gets an error.
                Outcome::Drop => Some(self.response_error(UNSOLICITED)),
            }
        }
    }

    /// A response on a POST whose id names none of the POST's requests: not the answer to
    /// anything the client asked here (the server's requests and notifications carry a
    /// `method` and are not responses), so it is never released, whatever its result holds.
    /// Dropped (`None`: it does answer a request, or it is not on a POST); recorded as an
    /// error on the POST's first request (the first record when it has none). An error
    /// response with a null or absent id passes: JSON-RPC's answer to a request whose id the
    /// server could not read; it has no result to hide. Dry run: recorded, passed.
    fn unsolicited(&mut self, id: Option<&RawValue>, error_only: bool) -> Option<Outcome> {
        if !self.post {
            return None;
        }
        let policy = self.policy?;
        if let Some(key) = id.map(id_key) {
            if self.expect.iter().any(|e| e.key == key) {
                return None;
            }
        }
        if error_only && id.is_none_or(|i| i.get().trim() == "null") {
            return None;
        }
        let shown = id.map_or("absent", |i| message::truncate(i.get().trim(), 64));
        let error = format!("server response with id {shown} answers no request of this POST: dropped");
        let at = self.expect.first().map_or(0, |e| e.record);
        if let Some(rec) = self.records.get_mut(at) {
            if !policy.dry_run {
                rec.decision = Decision::Error;
            }
            // The first such response is named; later ones do not grow the record.
            rec.error.get_or_insert(error);
        }
        Some(if policy.dry_run { Outcome::Keep } else { Outcome::Drop })
    }

    /// A server message the gateway's reading refuses. Harmless when no client can read it
    /// either (not JSON); but JSON that repeats a key (`"result"` twice, `"id"` twice) is read
    /// by clients with the last value, and a list could hide behind the first: with a policy
    /// it is replaced by an error, never passed (found by fuzzing).
    fn unreadable_message(&mut self, text: &str) -> Outcome {
        // With a policy, or tool pinning (the server is who pinning guards against).
        if self.policy.is_none() && self.pins.is_none() {
            return Outcome::Keep;
        }
        if self.policy.is_some_and(|p| p.dry_run) || serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
            return Outcome::Keep;
        }
        let Err(why) = tollgate_core::wire::jsonrpc::check_no_duplicate_keys(text.as_bytes()) else { return Outcome::Keep };
        if let Some(rec) = self.expect.first().and_then(|e| self.records.get_mut(e.record)) {
            rec.error = Some(format!("server message refused: {}", message::truncate(&why, 256)));
        }
        let body = rpc_error_body::<()>(None, codes::INTERNAL_ERROR, "gateway could not read the server's message", None);
        Outcome::Replace(String::from_utf8_lossy(&body).into_owned())
    }

    /// A JSON body that is not JSON: harmless unless a list was expected in it.
    fn unreadable_json(&self, _body: &[u8]) -> Option<Vec<u8>> {
        if self.held && self.expect.iter().any(|e| e.list.is_some()) {
            return Some(self.response_error("gateway could not read the list response"));
        }
        None
    }

    /// Rewrites the complete events of one SSE chunk; holds the event in progress. Untouched
    /// blocks pass byte for byte (the core parser hands on a CRLF's final LF at once).
    /// `false` with the output: an event was too large, the stream ends with an error there.
    pub fn sse_chunk(&mut self, parser: &mut SseParser, chunk: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let result = parser.feed(chunk, |item, raw| {
            let replaced = match item {
                SseItem::Event(event) => match self.server_message(&event.data) {
                    Outcome::Keep => None,
                    Outcome::Replace(data) => Some(SseEvent { event: event.event.clone(), data, id: event.id.clone() }.to_bytes_replacing(raw)),
                    // Removed from the stream; its event id, if any, is kept in an event
                    // without data (the SSE standard sets the last event ID and dispatches
                    // nothing), so a client resuming the stream resumes after it.
                    Outcome::Drop => Some(id_only_event(event.id.as_deref(), raw)),
                },
                SseItem::Other => None,
            };
            match replaced {
                Some(new) => out.extend_from_slice(&new),
                None => out.extend_from_slice(raw),
            }
        });
        if result.is_err() {
            // An event larger than the limit cannot be judged: end the stream with an error.
            let error = self.response_error("SSE event too large for the gateway to inspect");
            let event = SseEvent { event: None, data: String::from_utf8_lossy(&error).into_owned(), id: None };
            out.extend_from_slice(&event.to_bytes());
            return (out, false);
        }
        (out, true)
    }

    /// Looks at one server message: records `isError` / error codes, filters lists.
    fn server_message(&mut self, text: &str) -> Outcome {
        // Most messages are read once; lists (and what the one reading cannot read) are
        // read again with the result kept raw, to be rewritten.
        let Some(head) = ResponseHead::parse(text) else { return self.server_message_in_full(text) };
        if !head.is_response() {
            return Outcome::Keep;
        }
        if let Some(outcome) = self.unsolicited(head.id, !head.has_result()) {
            return outcome;
        }
        let (list, record) = self.expected(head.id);
        let summary = head.summary();
        if list.is_some() || (self.policy.is_some() && summary.shape.is_some()) {
            return self.server_message_in_full(text);
        }
        if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
            if rec.detail.tool.is_some() {
                rec.detail.is_error = summary.is_error;
            }
            rec.detail.rpc_error_code = head.error_code();
        }
        Outcome::Keep
    }

    /// What the request a response answers expects: the list it asked for, and the index of
    /// its audit record.
    fn expected(&self, id: Option<&RawValue>) -> (Option<ListKind>, Option<usize>) {
        match id.map(id_key).and_then(|k| self.expect.iter().find(|e| e.key == k)) {
            Some(e) => (e.list, Some(e.record)),
            None => (None, None),
        }
    }

    /// [`Reader::server_message`] with the result kept raw: filters lists.
    fn server_message_in_full(&mut self, text: &str) -> Outcome {
        let Some(msg) = ServerMessage::parse(text) else { return self.unreadable_message(text) };
        if !msg.is_response() {
            return Outcome::Keep;
        }
        if let Some(outcome) = self.unsolicited(msg.id, msg.result.is_none()) {
            return outcome;
        }
        let (list, record) = self.expected(msg.id);
        let wants_is_error = record.and_then(|i| self.records.get(i)).is_some_and(|r| r.detail.tool.is_some());
        let wants_shape = (self.policy.is_some() || self.pins.is_some()) && list.is_none();
        // One reading of the result answers both questions.
        let summary = (wants_is_error || wants_shape).then(|| msg.summary());
        if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
            if rec.detail.tool.is_some() {
                rec.detail.is_error = summary.and_then(|s| s.is_error);
            }
            rec.detail.rpc_error_code = msg.error_code();
        }
        if self.policy.is_none() && self.pins.is_none() {
            return Outcome::Keep;
        }
        // The list the request asked for; otherwise (a request that is not a list, or an
        // unknown id, e.g. replayed on a GET stream) whatever has the shape of a list result
        // (`result.tools` ... an array) is filtered as one: fail closed, whatever the id says.
        let Some(kind) = list.or_else(|| summary.and_then(|s| s.shape)) else { return Outcome::Keep };
        let subject = self.subject;
        let (mut outcome, mut hidden, error) = match self.policy {
            None => (Outcome::Keep, 0, None),
            Some(policy) => {
                let router = self.router;
                let mut keep = |kind: ListKind, target: &Target<'_>| match router {
                    Some(router) => router.visible(policy, subject, kind.use_method(), target),
                    None => policy.visible(subject, kind.use_method(), target).allowed(),
                };
                match filter_list(&msg, Some(kind), &mut keep) {
                    Ok(None) => (Outcome::Keep, 0, None),
                    Ok(Some(rewritten)) if policy.dry_run => (Outcome::Keep, rewritten.hidden, None),
                    Ok(Some(rewritten)) => (Outcome::Replace(rewritten.text), rewritten.hidden, None),
                    Err(e) => {
                        // A list the gateway cannot read is not passed: the client gets an error.
                        let body = rpc_error_body::<()>(msg.id, codes::INTERNAL_ERROR, "gateway could not filter the list", None);
                        (Outcome::Replace(String::from_utf8_lossy(&body).into_owned()), 0, Some(e))
                    }
                }
            }
        };
        // Tool pinning reviews what the policy left (`pinning.rs`).
        let mut pinned = None;
        if let (Some((pins, host)), ListKind::Tools, None) = (self.pins, kind, &error) {
            let now = match &outcome {
                Outcome::Replace(t) => t.as_str(),
                _ => text,
            };
            let enforce = !self.policy.is_some_and(|p| p.dry_run);
            let reviewed = pins.review_list(host, subject, now, enforce);
            let unpinnable = reviewed.unpinnable_note();
            if let Some(new) = reviewed.text {
                outcome = Outcome::Replace(new);
            }
            if let Some(e) = reviewed.error {
                if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
                    rec.error = Some(e);
                }
                if enforce {
                    let body = rpc_error_body::<()>(msg.id, codes::INTERNAL_ERROR, "gateway could not review the tool list", None);
                    outcome = Outcome::Replace(String::from_utf8_lossy(&body).into_owned());
                }
            } else if let Some(note) = unpinnable {
                if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
                    rec.error = Some(note);
                }
            }
            hidden += reviewed.hidden;
            pinned = Some(reviewed.changed).filter(|c| !c.is_empty());
        }
        if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
            rec.detail.list_hidden = Some(hidden);
            if pinned.is_some() {
                rec.detail.tool_pins = pinned;
            }
            if error.is_some() {
                rec.error = error;
            }
        }
        outcome
    }
}

/// The error a client gets in place of a JSON body that held only responses to no request
/// of its POST.
pub const UNSOLICITED: &str = "the server's response answers no request of this POST";

/// What replaces a dropped SSE event: only its `id:` line, if it had one, then the blank
/// line (with the line ending `raw` ends with, as [`SseEvent::to_bytes_replacing`] does).
fn id_only_event(id: Option<&str>, raw: &[u8]) -> Vec<u8> {
    let Some(id) = id else { return Vec::new() };
    let event = format!("id: {id}");
    if raw.last() == Some(&b'\r') {
        // A CR of a CRLF pair: the LF that follows is handed on with the next block.
        format!("{event}\r\n\r").into_bytes()
    } else {
        format!("{event}\n\n").into_bytes()
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
