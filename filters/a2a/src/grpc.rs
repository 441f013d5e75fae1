//! The A2A gRPC binding: `POST /lf.a2a.v1.A2AService/<Method>` (1.0; 0.3: `a2a.v1`) with
//! `content-type: application/grpc`. What a call is (its path), its one request message
//! (length-prefixed gRPC frames: 1-byte compressed flag, 4-byte big-endian length), the ids
//! and push-notification URLs in it (a minimal protobuf reader over the few fields needed, no
//! generated code), the ids in the answer's messages (read frame by frame as they stream),
//! and a refusal's gRPC status. Pure: no host access.
//!
//! Field numbers are a2a-sdk 1.3's `a2a.types.a2a_pb2` (1.0) and `a2a.compat.v0_3` (0.3).
//! Protobuf semantics are followed where they decide what the agent reads: the last value of
//! a repeated scalar field wins, a repeated message field is merged; every push URL present
//! is checked (not only the one the agent keeps).

use crate::classify::{Dialect, Method};
use crate::replies::Refusal;
use crate::session::{RequestIds, ResponseTracker};
use tollgate_core::wire::protobuf::{Malformed, Reader, Value};

pub const SERVICE_V10: &str = "lf.a2a.v1.A2AService";
pub const SERVICE_V03: &str = "a2a.v1.A2AService";

/// `application/grpc` or `application/grpc+<codec>`.
pub fn is_grpc(content_type: Option<&str>) -> bool {
    tollgate_core::text::media_type(content_type).is_some_and(|m| m == "application/grpc" || m.starts_with("application/grpc+"))
}

/// What a gRPC path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// An A2A method of the service of that dialect.
    Call { dialect: Dialect, method: Method },
    /// A method of the A2A service that is not A2A (refused: nothing unknown passes).
    UnknownMethod { dialect: Dialect, name: String },
    /// Not the A2A service.
    Other,
}

const V03_METHODS: &[(&str, Method)] = &[
    ("SendMessage", Method::SendMessage),
    ("SendStreamingMessage", Method::SendStreamingMessage),
    ("GetTask", Method::GetTask),
    ("CancelTask", Method::CancelTask),
    ("TaskSubscription", Method::SubscribeToTask),
    ("CreateTaskPushNotificationConfig", Method::CreateTaskPushNotificationConfig),
    ("GetTaskPushNotificationConfig", Method::GetTaskPushNotificationConfig),
    ("ListTaskPushNotificationConfig", Method::ListTaskPushNotificationConfigs),
    ("DeleteTaskPushNotificationConfig", Method::DeleteTaskPushNotificationConfig),
    ("GetAgentCard", Method::GetExtendedAgentCard),
];

/// Classifies `:path` (exactly `/<service>/<method>`, as gRPC clients send it).
pub fn classify_path(path: &str) -> Path {
    let Some(rest) = path.strip_prefix('/') else { return Path::Other };
    let Some((service, name)) = rest.split_once('/') else { return Path::Other };
    let dialect = match service {
        SERVICE_V10 => Dialect::V10,
        SERVICE_V03 => Dialect::V03,
        _ => return Path::Other,
    };
    let method = match dialect {
        // The 1.0 gRPC method names are the 1.0 JSON-RPC names (which never contain `/`).
        Dialect::V10 => Method::from_name(name).filter(|m| m.name() == name),
        Dialect::V03 => V03_METHODS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m),
    };
    match method {
        Some(method) => Path::Call { dialect, method },
        None => Path::UnknownMethod { dialect, name: name.chars().take(64).collect() },
    }
}

/// Why a request body is not one readable gRPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A compressed message (`grpc-encoding`): the gateway does not decompress.
    Compressed,
    /// A frame cut short, or a reserved flag bit set.
    Malformed,
    /// No message, or several (A2A's methods are unary on the request side).
    NotOne,
}

/// The next frame of `bytes`: `Ok(None)` when `bytes` does not hold a whole frame yet.
fn next_frame(bytes: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = bytes.get(..5) else { return Ok(None) };
    let flag = header.first().copied().unwrap_or(0);
    let len = header.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes).unwrap_or(0) as usize;
    if flag & 1 != 0 {
        return Err(FrameError::Compressed);
    }
    if flag != 0 {
        return Err(FrameError::Malformed);
    }
    let end = 5usize.saturating_add(len);
    Ok(bytes.get(5..end).map(|message| (message, end)))
}

/// The one message of a whole request body.
pub fn single_message(body: &[u8]) -> Result<&[u8], FrameError> {
    let mut rest = body;
    let mut found = None;
    while !rest.is_empty() {
        let (message, used) = next_frame(rest)?.ok_or(FrameError::Malformed)?;
        if found.replace(message).is_some() {
            return Err(FrameError::NotOne);
        }
        rest = rest.get(used..).unwrap_or_default();
    }
    found.ok_or(FrameError::NotOne)
}

/// What a request message says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub ids: RequestIds,
    /// Every push-notification URL present.
    pub push_urls: Vec<String>,
    /// A create naming no URL.
    pub push_missing: bool,
}

fn fields(message: &[u8]) -> impl Iterator<Item = Result<(u32, Value<'_>), Malformed>> {
    Reader::new(message)
}

fn text(value: Value<'_>) -> Result<String, Malformed> {
    let bytes = value.as_bytes().ok_or(Malformed)?;
    std::str::from_utf8(bytes).map(str::to_string).map_err(|_| Malformed)
}

fn sub(value: Value<'_>) -> Result<&[u8], Malformed> {
    value.as_bytes().ok_or(Malformed)
}

fn keep(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A2A `Message`: 1 message_id, 2 context_id, 3 task_id, 8 reference_task_ids (1.0).
fn message_ids(message: &[u8], ids: &mut RequestIds) -> Result<(), Malformed> {
    for field in fields(message) {
        match field? {
            (1, v) => ids.message_id = keep(text(v)?),
            (2, v) => ids.context_id = keep(text(v)?),
            (3, v) => ids.task_id = keep(text(v)?),
            (8, v) => {
                let r = text(v)?;
                if !r.is_empty() && ids.reference_task_ids.len() < 16 {
                    ids.reference_task_ids.push(r);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The URLs at field `url` of a push config message.
fn push_urls(config: &[u8], url: u32, out: &mut Vec<String>) -> Result<(), Malformed> {
    for field in fields(config) {
        let (n, v) = field?;
        if n == url {
            out.push(text(v)?);
        }
    }
    Ok(())
}

/// `tasks/{id}[/…]` (0.3 resource names): the task id.
fn task_from_name(name: &str) -> Option<String> {
    let id = name.strip_prefix("tasks/")?.split('/').next()?;
    keep(id.to_string())
}

/// Reads a request message of `method` in `dialect`.
pub fn read_request(method: Method, dialect: Dialect, message: &[u8]) -> Result<Request, Malformed> {
    let mut out = Request::default();
    let send = matches!(method, Method::SendMessage | Method::SendStreamingMessage);
    match dialect {
        Dialect::V10 => {
            for field in fields(message) {
                let (n, v) = field?;
                match (method, n) {
                    // SendMessageRequest: 2 message, 3 configuration { 2 task_push_notification_config { 4 url } }
                    (_, 2) if send => message_ids(sub(v)?, &mut out.ids)?,
                    (_, 3) if send => {
                        for f in fields(sub(v)?) {
                            if let (2, cfg) = f? {
                                push_urls(sub(cfg)?, 4, &mut out.push_urls)?;
                            }
                        }
                    }
                    // GetTaskRequest, CancelTaskRequest, SubscribeToTaskRequest: 2 id
                    (Method::GetTask | Method::CancelTask | Method::SubscribeToTask, 2) => out.ids.task_id = keep(text(v)?),
                    // ListTasksRequest: 2 context_id
                    (Method::ListTasks, 2) => out.ids.context_id = keep(text(v)?),
                    // TaskPushNotificationConfig: 3 task_id, 4 url
                    (Method::CreateTaskPushNotificationConfig, 3) => out.ids.task_id = keep(text(v)?),
                    (Method::CreateTaskPushNotificationConfig, 4) => out.push_urls.push(text(v)?),
                    // Get/Delete…Request: 2 task_id; List…Request: 1 task_id
                    (Method::GetTaskPushNotificationConfig | Method::DeleteTaskPushNotificationConfig, 2) => out.ids.task_id = keep(text(v)?),
                    (Method::ListTaskPushNotificationConfigs, 1) => out.ids.task_id = keep(text(v)?),
                    _ => {}
                }
            }
        }
        Dialect::V03 => {
            for field in fields(message) {
                let (n, v) = field?;
                match (method, n) {
                    // SendMessageRequest: 1 request (Message), 2 configuration { 2 push_notification { 2 url } }
                    (_, 1) if send => message_ids(sub(v)?, &mut out.ids)?,
                    (_, 2) if send => {
                        for f in fields(sub(v)?) {
                            if let (2, cfg) = f? {
                                push_urls(sub(cfg)?, 2, &mut out.push_urls)?;
                            }
                        }
                    }
                    // CreateTaskPushNotificationConfigRequest: 1 parent, 3 config { 2 push_notification_config { 2 url } }
                    (Method::CreateTaskPushNotificationConfig, 3) => {
                        for f in fields(sub(v)?) {
                            if let (2, cfg) = f? {
                                push_urls(sub(cfg)?, 2, &mut out.push_urls)?;
                            }
                        }
                    }
                    // Every other request names its task in field 1 (`name` / `parent`).
                    (_, 1) if !send && method != Method::GetExtendedAgentCard => out.ids.task_id = task_from_name(&text(v)?),
                    _ => {}
                }
            }
        }
    }
    out.push_missing = method == Method::CreateTaskPushNotificationConfig && out.push_urls.is_empty();
    Ok(out)
}

const STATES: [&str; 9] =
    ["unspecified", "submitted", "working", "completed", "failed", "canceled", "input_required", "rejected", "auth_required"];

/// Ids in one response message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub context_id: Option<String>,
    pub task_id: Option<String>,
    pub state: Option<String>,
}

/// `TaskStatus { 1 state }`.
fn status_state(status: &[u8], found: &mut Found) -> Result<(), Malformed> {
    for f in fields(status) {
        if let (1, v) = f? {
            let n = v.as_u64().ok_or(Malformed)?;
            found.state = Some(STATES.get(n as usize).copied().unwrap_or("unknown").to_string());
        }
    }
    Ok(())
}

/// `Task { 1 id, 2 context_id, 3 status }` and `TaskStatusUpdateEvent { 1 task_id,
/// 2 context_id, 3 status }` share their numbering; `TaskArtifactUpdateEvent { 1 task_id,
/// 2 context_id, 3 artifact }` has no status (`with_status: false`).
fn task_like(task: &[u8], found: &mut Found, with_status: bool) -> Result<(), Malformed> {
    for f in fields(task) {
        match f? {
            (1, v) => found.task_id = keep(text(v)?),
            (2, v) => found.context_id = keep(text(v)?),
            (3, v) if with_status => status_state(sub(v)?, found)?,
            _ => {}
        }
    }
    Ok(())
}

/// `Message { 2 context_id, 3 task_id }`.
fn message_like(message: &[u8], found: &mut Found) -> Result<(), Malformed> {
    for f in fields(message) {
        match f? {
            (2, v) => found.context_id = keep(text(v)?),
            (3, v) => found.task_id = keep(text(v)?),
            _ => {}
        }
    }
    Ok(())
}

/// The ids in one response message of `method` (both dialects number these alike).
pub fn read_response(method: Method, message: &[u8]) -> Result<Found, Malformed> {
    let mut found = Found::default();
    match method {
        Method::GetTask | Method::CancelTask => task_like(message, &mut found, true)?,
        // SendMessageResponse { 1 task, 2 message }; StreamResponse adds 3 status_update, 4 artifact_update.
        Method::SendMessage | Method::SendStreamingMessage | Method::SubscribeToTask => {
            for f in fields(message) {
                match f? {
                    (1 | 3, v) => task_like(sub(v)?, &mut found, true)?,
                    (4, v) => task_like(sub(v)?, &mut found, false)?,
                    (2, v) => message_like(sub(v)?, &mut found)?,
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(found)
}

/// Reads an answer's messages as they stream by (keeps only a frame in progress).
#[derive(Debug)]
pub struct ResponseReader {
    method: Method,
    buffer: Vec<u8>,
    max_message_bytes: usize,
    /// Gave up (compressed, malformed, too large): the stream itself is unaffected.
    pub gave_up: bool,
}

impl ResponseReader {
    pub fn new(method: Method, max_message_bytes: usize) -> Self {
        ResponseReader { method, buffer: Vec::new(), max_message_bytes, gave_up: false }
    }

    /// Feeds a chunk; each whole message's ids go to `tracker`.
    pub fn feed(&mut self, chunk: &[u8], tracker: &mut ResponseTracker) -> crate::session::Progress {
        let mut progress = crate::session::Progress::default();
        if self.gave_up {
            return progress;
        }
        self.buffer.extend_from_slice(chunk);
        let mut used = 0;
        loop {
            let rest = self.buffer.get(used..).unwrap_or_default();
            let pending = rest.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
            if pending.is_some_and(|len| len as usize > self.max_message_bytes) {
                self.gave_up = true;
                break;
            }
            match next_frame(rest) {
                Ok(Some((message, n))) => {
                    match read_response(self.method, message) {
                        Ok(found) => {
                            let p = tracker.observe(found.context_id, found.task_id, found.state);
                            progress.first_event |= p.first_event;
                            progress.new_ids |= p.new_ids;
                        }
                        Err(_) => self.gave_up = true,
                    }
                    used += n;
                    if self.gave_up {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.gave_up = true;
                    break;
                }
            }
        }
        if self.gave_up {
            self.buffer = Vec::new();
        } else {
            self.buffer.drain(..used.min(self.buffer.len()));
        }
        progress
    }
}

/// The gRPC status code of a refusal (from its google.rpc status name).
pub fn status_code(why: Refusal) -> u32 {
    match why.rest_status().1 {
        "CANCELLED" => 1,
        "INVALID_ARGUMENT" => 3,
        "DEADLINE_EXCEEDED" => 4,
        "NOT_FOUND" => 5,
        "ALREADY_EXISTS" => 6,
        "PERMISSION_DENIED" => 7,
        "RESOURCE_EXHAUSTED" => 8,
        "FAILED_PRECONDITION" => 9,
        "ABORTED" => 10,
        "OUT_OF_RANGE" => 11,
        "UNIMPLEMENTED" => 12,
        "INTERNAL" => 13,
        "UNAVAILABLE" => 14,
        "UNAUTHENTICATED" => 16,
        _ => 2,
    }
}

/// The `grpc-message` of a refusal: its reason and message (printable ASCII; Envoy
/// percent-encodes what gRPC requires).
pub fn status_message(why: Refusal) -> String {
    format!("{}: {}", why.reason(), why.message())
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
