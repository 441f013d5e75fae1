//! Session ids: what a request names (messageId, contextId, taskId, referenceTaskIds) and
//! what the response reveals (contextId, taskId, task state, JSON-RPC error code), read from
//! JSON and SSE responses incrementally as they stream past. Pure: no host access.

use crate::classify::{Dialect, Method};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tollgate_core::wire::json_scan::{path_is as is, JsonScanner, Scalar, Seg};
use tollgate_core::wire::sse::{SseItem, SseParser};

/// Longest id kept; longer ids are ignored (ids are UUID-sized in practice).
pub const MAX_ID_BYTES: usize = 256;
/// Most referenceTaskIds kept from one message.
pub const MAX_REFERENCES: usize = 16;
/// Largest message `parts` copied into an audit record when that is enabled.
pub const MAX_PARTS_BYTES: usize = 4096;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestIds {
    pub message_id: Option<String>,
    pub context_id: Option<String>,
    pub task_id: Option<String>,
    pub reference_task_ids: Vec<String>,
    /// The message's `parts`, raw JSON, truncated — only filled when asked for.
    pub parts: Option<String>,
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(default, borrow, rename = "messageId")]
    message_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "contextId")]
    context_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "taskId")]
    task_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "referenceTaskIds")]
    reference_task_ids: Option<Vec<Cow<'a, str>>>,
    #[serde(default, borrow)]
    parts: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ParamsIn<'a> {
    #[serde(default, borrow)]
    message: Option<MessageIn<'a>>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "taskId")]
    task_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "contextId")]
    context_id: Option<Cow<'a, str>>,
}

fn keep(id: Option<Cow<'_, str>>) -> Option<String> {
    id.filter(|s| !s.is_empty() && s.len() <= MAX_ID_BYTES).map(Cow::into_owned)
}

/// Reads the ids from JSON-RPC `params` or a REST request body (same shape in both).
pub fn request_ids(params: &[u8], method: Method, dialect: Dialect, want_parts: bool) -> Result<RequestIds, String> {
    let p: ParamsIn<'_> = serde_json::from_slice(params).map_err(|e| e.to_string())?;
    let mut ids = RequestIds::default();
    if let Some(m) = p.message {
        ids.message_id = keep(m.message_id);
        ids.context_id = keep(m.context_id);
        ids.task_id = keep(m.task_id);
        ids.reference_task_ids = m
            .reference_task_ids
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| keep(Some(r)))
            .take(MAX_REFERENCES)
            .collect();
        if want_parts {
            ids.parts = m.parts.map(|raw| truncate(raw.get(), MAX_PARTS_BYTES));
        }
    }
    if ids.task_id.is_none() {
        ids.task_id = keep(p.task_id);
    }
    if ids.task_id.is_none() && method.id_is_task(dialect) {
        ids.task_id = p.id.and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()).and_then(|s| keep(Some(s)));
    }
    if ids.context_id.is_none() {
        // ListTasks filters by contextId.
        ids.context_id = keep(p.context_id);
    }
    Ok(ids)
}

fn truncate(s: &str, max: usize) -> String {
    let cut = tollgate_core::text::truncate(s, max);
    if cut.len() == s.len() {
        cut.to_string()
    } else {
        format!("{cut}…")
    }
}

/// Normalizes a task state across dialects: `TASK_STATE_INPUT_REQUIRED` and
/// `input-required` both become `input_required`.
pub fn normalize_state(state: &str) -> String {
    let s = state.strip_prefix("TASK_STATE_").unwrap_or(state);
    let mut out = String::with_capacity(s.len());
    out.extend(s.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_lowercase() }));
    out
}

/// A state as a metric label: one of the A2A states, else `other` (an upstream must not be
/// able to mint unbounded label values).
pub fn state_label(normalized: &str) -> &'static str {
    const STATES: [&str; 9] = [
        "submitted", "working", "input_required", "auth_required", "completed", "canceled", "failed", "rejected",
        "unknown",
    ];
    STATES.iter().find(|s| **s == normalized).copied().unwrap_or(match normalized {
        "unspecified" => "unspecified",
        _ => "other",
    })
}

/// What the response revealed so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseIds {
    pub context_id: Option<String>,
    pub task_id: Option<String>,
    /// Normalized; the last status seen.
    pub state: Option<String>,
    pub error_code: Option<i64>,
    /// `task`, `message`, `status-update`, `artifact-update` (of the first event).
    pub kind: Option<String>,
}

/// Ids found in one JSON document (a whole response or one SSE event).
#[derive(Debug, Default)]
struct DocIds {
    root_id: Option<String>,
    kind: Option<String>,
    context_id: Option<String>,
    task_id: Option<String>,
    state: Option<String>,
    error_code: Option<i64>,
}

const WRAPPERS: [&str; 4] = ["task", "message", "statusUpdate", "artifactUpdate"];

/// A path step's key (`""` for an array index; callers rule those out first).
fn key(seg: &Seg) -> &str {
    match seg {
        Seg::Key(k) => k,
        Seg::Index(_) => "",
    }
}

impl DocIds {
    /// `rest`: the document is the result itself (HTTP+JSON), not a JSON-RPC envelope.
    /// Called for every scalar of the response: it allocates only for a value it keeps.
    fn observe(&mut self, rest: bool, path: &[Seg], value: Scalar<'_>) {
        if path.iter().any(|s| matches!(s, Seg::Index(_))) {
            return; // inside an array: history, artifacts, task lists
        }
        if !rest && is(path, &["error", "code"]) {
            if let Scalar::Num(n) = value {
                self.error_code = n.parse().ok();
            }
            return;
        }
        let rel: &[Seg] = if rest {
            path
        } else {
            match path.split_first() {
                Some((first, rel)) if key(first) == "result" => rel,
                _ => return,
            }
        };
        let Scalar::Str(s) = value else { return };
        let keep = s.len() <= MAX_ID_BYTES && !s.is_empty();
        let owned = || keep.then(|| s.to_string());
        // A bare Task / Message / 0.3 event, or one wrapped in a 1.0 StreamResponse field.
        let (wrapper, rel) = match rel.split_first() {
            Some((first, rest_of)) if WRAPPERS.contains(&key(first)) && !rest_of.is_empty() => (Some(key(first)), rest_of),
            _ => (None, rel),
        };
        match wrapper {
            None if is(rel, &["id"]) => self.root_id = owned(),
            Some("task") if is(rel, &["id"]) => self.task_id = owned(),
            None if is(rel, &["kind"]) => self.kind = owned(),
            _ if is(rel, &["contextId"]) => self.context_id = self.context_id.take().or_else(owned),
            Some(w) if w != "task" && is(rel, &["taskId"]) => self.task_id = self.task_id.take().or_else(owned),
            None if is(rel, &["taskId"]) => self.task_id = self.task_id.take().or_else(owned),
            None | Some("task") | Some("statusUpdate") if is(rel, &["status", "state"]) => {
                self.state = keep.then(|| normalize_state(s));
            }
            _ => {}
        }
        if let Some(w) = wrapper {
            if self.kind.is_none() {
                self.kind = Some(
                    match w {
                        "statusUpdate" => "status-update",
                        "artifactUpdate" => "artifact-update",
                        other => other,
                    }
                    .to_string(),
                );
            }
        }
    }

    fn resolve(mut self) -> DocIds {
        // A bare `id` is a task's id (0.3 Task, 1.0 GetTask result); messages use `messageId`.
        if self.task_id.is_none() && matches!(self.kind.as_deref(), None | Some("task")) {
            self.task_id = self.root_id.take();
        }
        self
    }
}

/// Follows a response body chunk by chunk: a JSON document or an SSE stream of them.
#[derive(Debug)]
pub struct ResponseTracker {
    rest: bool,
    mode: Mode,
    pub ids: ResponseIds,
    /// SSE events (or 1 for a JSON document) seen.
    pub events: u32,
    /// Parsing gave up (oversized event, malformed JSON); the stream itself is unaffected.
    pub gave_up: bool,
    /// Bumped whenever `ids` change, so callers redo work only when there is news.
    pub version: u32,
}

#[derive(Debug)]
enum Mode {
    Json { scanner: JsonScanner, doc: DocIds },
    Sse { parser: SseParser },
    /// Ids read by another reader (the gRPC binding, `grpc.rs`) and given through
    /// [`ResponseTracker::observe`]; `feed` reads nothing.
    External { stream: bool },
}

/// What a chunk changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The first event (or the JSON document) completed in this chunk.
    pub first_event: bool,
    /// The context or task id became known in this chunk.
    pub new_ids: bool,
}

impl ResponseTracker {
    pub fn json(rest: bool) -> Self {
        ResponseTracker {
            rest,
            mode: Mode::Json { scanner: JsonScanner::new(MAX_ID_BYTES, 64), doc: DocIds::default() },
            ids: ResponseIds::default(),
            events: 0,
            gave_up: false,
            version: 0,
        }
    }

    pub fn sse(rest: bool, max_event_bytes: usize) -> Self {
        ResponseTracker {
            rest,
            mode: Mode::Sse { parser: SseParser::new(max_event_bytes) },
            ids: ResponseIds::default(),
            events: 0,
            gave_up: false,
            version: 0,
        }
    }

    /// A tracker whose ids another reader finds (`grpc.rs`); `stream`: a streaming call.
    pub fn external(stream: bool) -> Self {
        ResponseTracker { rest: false, mode: Mode::External { stream }, ids: ResponseIds::default(), events: 0, gave_up: false, version: 0 }
    }

    /// An SSE stream (as opposed to one JSON document).
    pub fn is_stream(&self) -> bool {
        matches!(self.mode, Mode::Sse { .. } | Mode::External { stream: true })
    }

    /// One response message's ids, read elsewhere (first ids win, the last state stays).
    pub fn observe(&mut self, context_id: Option<String>, task_id: Option<String>, state: Option<String>) -> Progress {
        let mut progress = Progress::default();
        self.events = self.events.saturating_add(1);
        progress.first_event = self.events == 1;
        let doc = DocIds { context_id, task_id, state, ..DocIds::default() };
        if Self::merge(&mut self.ids, doc, &mut progress) {
            self.version = self.version.wrapping_add(1);
        }
        progress
    }

    /// Merges one document's ids; true when `ids` changed.
    fn merge(ids: &mut ResponseIds, doc: DocIds, progress: &mut Progress) -> bool {
        let doc = doc.resolve();
        let had = (ids.context_id.is_some(), ids.task_id.is_some());
        let mut changed = false;
        // Ids from the first event that has them; the state from the last status.
        if ids.context_id.is_none() && doc.context_id.is_some() {
            ids.context_id = doc.context_id;
            changed = true;
        }
        if ids.task_id.is_none() && doc.task_id.is_some() {
            ids.task_id = doc.task_id;
            changed = true;
        }
        if ids.kind.is_none() && doc.kind.is_some() {
            ids.kind = doc.kind;
            changed = true;
        }
        if doc.state.is_some() && doc.state != ids.state {
            ids.state = doc.state;
            changed = true;
        }
        if doc.error_code.is_some() && doc.error_code != ids.error_code {
            ids.error_code = doc.error_code;
            changed = true;
        }
        if had != (ids.context_id.is_some(), ids.task_id.is_some()) {
            progress.new_ids = true;
        }
        changed
    }

    /// Feeds a chunk as it passes; never keeps more than the SSE event in progress.
    pub fn feed(&mut self, chunk: &[u8]) -> Progress {
        let mut progress = Progress::default();
        if self.gave_up {
            return progress;
        }
        let rest = self.rest;
        match &mut self.mode {
            Mode::Json { scanner, doc } => {
                scanner.feed(chunk, |path, value| doc.observe(rest, path, value));
                if scanner.failed() {
                    self.gave_up = true;
                } else if scanner.done() && self.events == 0 {
                    self.events = 1;
                    progress.first_event = true;
                    let doc = std::mem::take(doc);
                    if Self::merge(&mut self.ids, doc, &mut progress) {
                        self.version = self.version.wrapping_add(1);
                    }
                }
            }
            Mode::Sse { parser } => {
                let ids = &mut self.ids;
                let events = &mut self.events;
                let version = &mut self.version;
                let result = parser.feed(chunk, |item, _| {
                    if let SseItem::Event(event) = item {
                        let mut scanner = JsonScanner::new(MAX_ID_BYTES, 64);
                        let mut doc = DocIds::default();
                        scanner.feed(event.data.as_bytes(), |path, value| doc.observe(rest, path, value));
                        scanner.finish(|path, value| doc.observe(rest, path, value));
                        *events = events.saturating_add(1);
                        if *events == 1 {
                            progress.first_event = true;
                        }
                        if Self::merge(ids, doc, &mut progress) {
                            *version = version.wrapping_add(1);
                        }
                    }
                });
                if result.is_err() {
                    self.gave_up = true;
                }
            }
            Mode::External { .. } => {}
        }
        progress
    }

    /// The body ended (a trailing number in a JSON document completes here).
    pub fn finish(&mut self) -> Progress {
        let mut progress = Progress::default();
        let rest = self.rest;
        if let Mode::Json { scanner, doc } = &mut self.mode {
            if self.events == 0 && !self.gave_up {
                scanner.finish(|path, value| doc.observe(rest, path, value));
                if scanner.done() {
                    self.events = 1;
                    progress.first_event = true;
                    let doc = std::mem::take(doc);
                    if Self::merge(&mut self.ids, doc, &mut progress) {
                        self.version = self.version.wrapping_add(1);
                    }
                }
            }
        }
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_1_0_and_0_3() {
        let p = br#"{"message":{"messageId":"m1","contextId":"c1","taskId":"t1","referenceTaskIds":["r1","r2"],
                     "role":"ROLE_USER","parts":[{"text":"secret"}]},"configuration":{}}"#;
        let ids = request_ids(p, Method::SendMessage, Dialect::V10, false).unwrap();
        assert_eq!(ids.message_id.as_deref(), Some("m1"));
        assert_eq!(ids.context_id.as_deref(), Some("c1"));
        assert_eq!(ids.task_id.as_deref(), Some("t1"));
        assert_eq!(ids.reference_task_ids, vec!["r1", "r2"]);
        assert_eq!(ids.parts, None);
        let with_parts = request_ids(p, Method::SendMessage, Dialect::V10, true).unwrap();
        assert_eq!(with_parts.parts.as_deref(), Some(r#"[{"text":"secret"}]"#));

        let p03 = br#"{"message":{"kind":"message","messageId":"m3","role":"user","parts":[]}}"#;
        let ids = request_ids(p03, Method::SendMessage, Dialect::V03, false).unwrap();
        assert_eq!(ids.message_id.as_deref(), Some("m3"));
        assert_eq!(ids.context_id, None);

        let get = request_ids(br#"{"id":"t9","historyLength":2}"#, Method::GetTask, Dialect::V10, false).unwrap();
        assert_eq!(get.task_id.as_deref(), Some("t9"));
        let push10 = request_ids(br#"{"taskId":"t8","id":"cfg"}"#, Method::GetTaskPushNotificationConfig, Dialect::V10, false).unwrap();
        assert_eq!(push10.task_id.as_deref(), Some("t8"));
        let push03 = request_ids(br#"{"id":"t7"}"#, Method::GetTaskPushNotificationConfig, Dialect::V03, false).unwrap();
        assert_eq!(push03.task_id.as_deref(), Some("t7"));
        let list = request_ids(br#"{"contextId":"c5"}"#, Method::ListTasks, Dialect::V10, false).unwrap();
        assert_eq!(list.context_id.as_deref(), Some("c5"));
        assert!(request_ids(b"[1]", Method::SendMessage, Dialect::V10, false).is_err());
        let long = format!(r#"{{"message":{{"contextId":"{}"}}}}"#, "x".repeat(MAX_ID_BYTES + 1));
        assert_eq!(request_ids(long.as_bytes(), Method::SendMessage, Dialect::V10, false).unwrap().context_id, None);
    }

    #[test]
    fn states_normalize() {
        assert_eq!(normalize_state("TASK_STATE_INPUT_REQUIRED"), "input_required");
        assert_eq!(normalize_state("input-required"), "input_required");
        assert_eq!(normalize_state("completed"), "completed");
        assert_eq!(state_label("input_required"), "input_required");
        assert_eq!(state_label("evil.label.injection"), "other");
    }

    fn feed_all(tracker: &mut ResponseTracker, body: &[u8], chunk: usize) -> Vec<Progress> {
        let mut out: Vec<Progress> = body.chunks(chunk.max(1)).map(|c| tracker.feed(c)).collect();
        out.push(tracker.finish());
        out
    }

    const V10_JSON: &[u8] = br#"{"result":{"task":{"id":"t1","contextId":"c1","status":{"state":"TASK_STATE_COMPLETED"},
        "history":[{"messageId":"m1","contextId":"WRONG","taskId":"WRONG"}]}},"id":1,"jsonrpc":"2.0"}"#;
    const V03_JSON: &[u8] = br#"{"id":3,"jsonrpc":"2.0","result":{"artifacts":[{"parts":[{"kind":"text","text":"x"}]}],
        "contextId":"c3","history":[{"contextId":"c3","kind":"message","taskId":"t3"}],"id":"t3","kind":"task","status":{"state":"completed"}}}"#;

    #[test]
    fn json_responses_both_dialects_any_chunking() {
        for chunk in [1, 7, 4096] {
            let mut t = ResponseTracker::json(false);
            let progress = feed_all(&mut t, V10_JSON, chunk);
            assert_eq!(t.ids.context_id.as_deref(), Some("c1"));
            assert_eq!(t.ids.task_id.as_deref(), Some("t1"));
            assert_eq!(t.ids.state.as_deref(), Some("completed"));
            assert_eq!(progress.iter().filter(|p| p.first_event).count(), 1);
            let mut t = ResponseTracker::json(false);
            feed_all(&mut t, V03_JSON, chunk);
            assert_eq!(t.ids.context_id.as_deref(), Some("c3"));
            assert_eq!(t.ids.task_id.as_deref(), Some("t3"));
            assert_eq!(t.ids.state.as_deref(), Some("completed"));
            assert_eq!(t.ids.kind.as_deref(), Some("task"));
        }
    }

    #[test]
    fn message_results_and_errors() {
        let mut t = ResponseTracker::json(false);
        feed_all(&mut t, br#"{"jsonrpc":"2.0","id":1,"result":{"message":{"messageId":"m","contextId":"c","taskId":"t"}}}"#, 5);
        assert_eq!((t.ids.context_id.as_deref(), t.ids.task_id.as_deref()), (Some("c"), Some("t")));
        assert_eq!(t.ids.kind.as_deref(), Some("message"));
        let mut t = ResponseTracker::json(false);
        feed_all(&mut t, br#"{"jsonrpc":"2.0","id":1,"result":{"kind":"message","messageId":"m","contextId":"c"}}"#, 5);
        assert_eq!(t.ids.task_id, None, "a 0.3 message's messageId is not a task id");
        let mut t = ResponseTracker::json(false);
        feed_all(&mut t, br#"{"error":{"code":-32001,"message":"Task not found"},"id":1,"jsonrpc":"2.0"}"#, 3);
        assert_eq!(t.ids.error_code, Some(-32001));
        let mut t = ResponseTracker::json(false);
        feed_all(&mut t, br#"{"jsonrpc":"2.0","id":1,"result":{"tasks":[{"id":"x","contextId":"y"}]}}"#, 3);
        assert_eq!(t.ids, ResponseIds::default());
    }

    #[test]
    fn rest_results_are_unwrapped() {
        let mut t = ResponseTracker::json(true);
        feed_all(&mut t, br#"{"task":{"id":"t","contextId":"c","status":{"state":"TASK_STATE_WORKING"}}}"#, 4);
        assert_eq!(t.ids.task_id.as_deref(), Some("t"));
        assert_eq!(t.ids.state.as_deref(), Some("working"));
        let mut t = ResponseTracker::json(true);
        feed_all(&mut t, br#"{"id":"t2","contextId":"c2","status":{"state":"TASK_STATE_CANCELED"}}"#, 4);
        assert_eq!(t.ids.task_id.as_deref(), Some("t2"));
        assert_eq!(t.ids.state.as_deref(), Some("canceled"));
    }

    const V10_SSE: &[u8] = b"data: {\"result\": {\"task\": {\"id\": \"t1\", \"contextId\": \"c1\", \"status\": {\"state\": \"TASK_STATE_SUBMITTED\"}}}, \"id\": 2, \"jsonrpc\": \"2.0\"}\n\n\
data: {\"result\": {\"statusUpdate\": {\"taskId\": \"t1\", \"contextId\": \"c1\", \"status\": {\"state\": \"TASK_STATE_WORKING\"}}}, \"id\": 2, \"jsonrpc\": \"2.0\"}\n\n\
data: {\"result\": {\"artifactUpdate\": {\"taskId\": \"t1\", \"contextId\": \"c1\", \"artifact\": {\"parts\": [{\"text\": \"hi\"}]}}}, \"id\": 2, \"jsonrpc\": \"2.0\"}\n\n\
data: {\"result\": {\"statusUpdate\": {\"taskId\": \"t1\", \"contextId\": \"c1\", \"status\": {\"state\": \"TASK_STATE_COMPLETED\"}}}, \"id\": 2, \"jsonrpc\": \"2.0\"}\n\n";

    const V03_SSE: &[u8] = b"data: {\"id\":4,\"jsonrpc\":\"2.0\",\"result\":{\"contextId\":\"c4\",\"id\":\"t4\",\"kind\":\"task\",\"status\":{\"state\":\"submitted\"}}}\r\n\r\n\
data: {\"id\":4,\"jsonrpc\":\"2.0\",\"result\":{\"contextId\":\"c4\",\"final\":false,\"kind\":\"status-update\",\"status\":{\"state\":\"working\"},\"taskId\":\"t4\"}}\r\n\r\n\
data: {\"id\":4,\"jsonrpc\":\"2.0\",\"result\":{\"contextId\":\"c4\",\"final\":true,\"kind\":\"status-update\",\"status\":{\"state\":\"completed\"},\"taskId\":\"t4\"}}\r\n\r\n";

    #[test]
    fn sse_ids_from_first_event_state_from_last() {
        for (body, ctx, task) in [(V10_SSE, "c1", "t1"), (V03_SSE, "c4", "t4")] {
            for chunk in [1, 13, 100_000] {
                let mut t = ResponseTracker::sse(false, 1 << 20);
                let progress = feed_all(&mut t, body, chunk);
                assert_eq!(t.ids.context_id.as_deref(), Some(ctx));
                assert_eq!(t.ids.task_id.as_deref(), Some(task));
                assert_eq!(t.ids.state.as_deref(), Some("completed"));
                assert_eq!(t.ids.kind.as_deref(), Some("task"));
                assert_eq!(progress.iter().filter(|p| p.first_event).count(), 1);
                assert_eq!(progress.iter().filter(|p| p.new_ids).count(), 1);
            }
        }
        let mut t = ResponseTracker::sse(false, 1 << 20);
        let first_event_end = V10_SSE.iter().position(|b| *b == b'\n').unwrap() + 2;
        let p = t.feed(&V10_SSE[..first_event_end]);
        assert!(p.first_event && p.new_ids, "ids are known as soon as the first event completes");
        assert_eq!(t.ids.state.as_deref(), Some("submitted"));
    }

    #[test]
    fn oversized_sse_event_gives_up_tagging_only() {
        let mut t = ResponseTracker::sse(false, 32);
        t.feed(V10_SSE);
        assert!(t.gave_up);
    }

    #[test]
    fn rest_sse_events() {
        let body = b"data: {\"task\": {\"id\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_SUBMITTED\"}}}\n\n\
data: {\"statusUpdate\": {\"taskId\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_FAILED\"}}}\n\n";
        let mut t = ResponseTracker::sse(true, 1 << 20);
        feed_all(&mut t, body, 9);
        assert_eq!(t.ids.task_id.as_deref(), Some("t"));
        assert_eq!(t.ids.state.as_deref(), Some("failed"));
        assert_eq!(t.events, 2);
    }
}
