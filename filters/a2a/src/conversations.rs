//! The conversation table: what the gateway remembers across requests (shared data, per
//! Envoy), keyed by contextId, by (agent, taskId) and by referenced taskId. An entry holds the
//! traceparent the gateway sent on the hop that recorded it and, for tasks, the owning agent
//! and the originator. This module owns the schema, the keys and the table I/O.

use crate::classify::Method;
use crate::session::{RequestIds, ResponseTracker};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use tollgate_core::host::{Host, LogLevel};
use tollgate_core::shared_data::table::{Put, SharedTable};
use tollgate_core::wire::trace::{self, TraceParent, TraceStep};

/// What the table stores per contextId / (agent, taskId) / referenced taskId (JSON),
/// borrowed from the stored bytes when read and from the exchange when written.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The traceparent the gateway sent upstream on the hop that recorded it.
    #[serde(borrow)]
    pub tp: Cow<'a, str>,
    /// Task entries: the agent that owns the task.
    #[serde(default, borrow, deserialize_with = "borrowed", skip_serializing_if = "Option::is_none")]
    pub agent: Option<Cow<'a, str>>,
    /// Task entries: who created it (on-behalf-of user, else caller).
    #[serde(default, borrow, deserialize_with = "borrowed", skip_serializing_if = "Option::is_none")]
    pub orig: Option<Cow<'a, str>>,
    /// Task entries: the task's contextId (conversation routing, `affinity.rs`).
    #[serde(default, borrow, deserialize_with = "borrowed", skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Cow<'a, str>>,
}

/// An optional string borrowed from the input when it has no escapes (serde borrows a bare
/// `Cow` field, but copies one inside an `Option`).
fn borrowed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'de>>::deserialize(d)?.map(|t| t.0))
}

impl<'a> Entry<'a> {
    pub fn trace(tp: &'a str) -> Self {
        Entry { tp: Cow::Borrowed(tp), agent: None, orig: None, ctx: None }
    }
}

pub fn ctx_key(id: &str) -> String {
    ["ctx:", id].concat()
}

/// A task as one agent knows it: task ids are unique only per agent, so two agents returning
/// the same id are two entries (ownership and originator never leak between them).
/// `task:<agent length>:<agent>:<id>`.
pub fn task_key(agent: &str, id: &str) -> String {
    let mut key = String::with_capacity(agent.len() + id.len() + 16);
    key.push_str("task:");
    crate::chain::push_decimal(&mut key, agent.len() as u64);
    key.push(':');
    key.push_str(agent);
    key.push(':');
    key.push_str(id);
    key
}

/// A task id → trace only (for `referenceTaskIds`, which do not say which agent owns them):
/// never used for ownership or originator decisions.
pub fn task_ref_key(id: &str) -> String {
    ["tref:", id].concat()
}

/// Reads the live entry under `key` (`None`: absent or unreadable) through `read`.
pub fn lookup<T>(host: &dyn Host, table: &SharedTable, key: &str, read: impl FnOnce(Entry<'_>) -> T) -> Option<T> {
    let raw = table.get(host, key)?;
    serde_json::from_slice(&raw).ok().map(read)
}

pub fn store(host: &dyn Host, table: &SharedTable, key: &str, entry: &Entry<'_>) {
    store_unless(host, table, key, entry, |_| false);
}

/// Stores `entry` unless the live entry under `key` makes `keep` true (judged and written in
/// one compare-and-swap once the slot exists, see [`SharedTable::put_unless`]; an entry that
/// does not parse is replaced).
pub fn store_unless(host: &dyn Host, table: &SharedTable, key: &str, entry: &Entry<'_>, keep: impl Fn(Entry<'_>) -> bool) -> Put {
    let put = match serde_json::to_vec(entry) {
        Ok(bytes) => table.put_unless(host, key, &bytes, |raw| serde_json::from_slice(raw).is_ok_and(&keep)),
        Err(_) => Put::Failed,
    };
    if put == Put::Failed {
        host.log(LogLevel::Debug, &format!("tollgate-a2a: conversation table did not store {key}"));
    }
    put
}

/// The trace a call without a valid traceparent joins: its contextId's, else its taskId's at
/// `target`, else the first of its `referenceTaskIds` recorded.
pub fn recorded_trace(host: &dyn Host, table: &SharedTable, ids: &RequestIds, target: &str) -> Option<TraceParent> {
    let keys = ids
        .context_id
        .iter()
        .map(|c| ctx_key(c))
        .chain(ids.task_id.iter().map(|t| task_key(target, t)))
        .chain(ids.reference_task_ids.iter().map(|r| task_ref_key(r)));
    keys.into_iter().find_map(|k| lookup(host, table, &k, |e| TraceParent::parse(&e.tp))).flatten()
}

/// Takes part in the trace: the inbound traceparent if valid, else the conversation's
/// recorded trace ([`recorded_trace`]), else a new trace. Also says which (`inbound`,
/// `conversation`, `new`).
pub fn join_trace(
    host: &dyn Host,
    table: &SharedTable,
    inbound: Option<&str>,
    tracestate: Option<&str>,
    ids: &RequestIds,
    target: &str,
) -> (TraceStep, &'static str) {
    // A valid inbound traceparent is the usual case: tried first, so it is parsed once (a
    // step that had to start a new trace says it was not valid).
    let first = match inbound.map(|tp| trace::participate(host, Some(tp), tracestate, None)) {
        Some(step) if !step.started => return (step, "inbound"),
        first => first,
    };
    let fallback = recorded_trace(host, table, ids, target);
    let source = if fallback.is_some() { "conversation" } else { "new" };
    let step = match (first, fallback) {
        // No valid inbound trace and none recorded: the first step already started one.
        (Some(step), None) => step,
        (_, fallback) => trace::participate(host, inbound, tracestate, fallback),
    };
    (step, source)
}

/// What the table knows of a task at one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    /// The entry names this agent as the owner (a call continuing it is not a loop).
    pub owned_by_target: bool,
    /// Who created it.
    pub originator: Option<String>,
    /// Its contextId, when the answer that created it said.
    pub context: Option<String>,
}

/// The entry for `task` at `target` (`None`: no record).
pub fn task_entry(host: &dyn Host, table: &SharedTable, target: &str, task: &str) -> Option<TaskEntry> {
    lookup(host, table, &task_key(target, task), |e| TaskEntry {
        owned_by_target: e.agent.as_deref() == Some(target),
        originator: e.orig.map(Cow::into_owned),
        context: e.ctx.map(Cow::into_owned),
    })
}

/// Where recording a contextId stands for one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextRecord {
    /// Nothing recorded yet.
    #[default]
    None,
    /// The request's own contextId was recorded.
    ByRequest,
    /// The response's contextId was handled (recorded, or already recorded by the request).
    Done,
}

/// What one exchange has written to the table, so each fact is written once.
#[derive(Debug, Default)]
pub struct Recorded {
    pub context: ContextRecord,
    /// The task the call created was recorded.
    pub task: bool,
    /// The tracker version [`record_response`] last handled.
    pub version: Option<u32>,
}

/// Records a client-chosen contextId, known before forwarding: later turns and downstream
/// hops find it.
pub fn record_request_context(host: &dyn Host, table: &SharedTable, recorded: &mut Recorded, context_id: &str, tp: &str) {
    store(host, table, &ctx_key(context_id), &Entry::trace(tp));
    recorded.context = ContextRecord::ByRequest;
}

/// One forwarded call, as recording its response needs it.
pub struct Call<'a> {
    pub method: Method,
    pub request: &'a RequestIds,
    pub target: &'a str,
    /// The on-behalf-of user, else the caller.
    pub originator: &'a str,
    /// The traceparent sent upstream.
    pub tp: &'a str,
}

/// Records what the response revealed: contextId → trace (later turns join it), and a new
/// task → trace, owner agent and originator (continuations, originator rules). Runs for every
/// chunk that revealed ids, at the end of the body and at log time: `true` when the tracker
/// changed since the last run (the tags are then published again).
pub fn record_response(host: &dyn Host, table: &SharedTable, recorded: &mut Recorded, call: &Call<'_>, tracker: &ResponseTracker) -> bool {
    if recorded.version == Some(tracker.version) {
        return false;
    }
    recorded.version = Some(tracker.version);
    // The response's contextId (set once per response): recorded once, unless the request
    // already recorded that same one.
    if let Some(ctx) = tracker.ids.context_id.as_deref() {
        let already = match recorded.context {
            ContextRecord::Done => None,
            ContextRecord::ByRequest => Some(call.request.context_id.as_deref() == Some(ctx)),
            ContextRecord::None => Some(false),
        };
        if let Some(already) = already {
            recorded.context = ContextRecord::Done;
            if !already {
                store(host, table, &ctx_key(ctx), &Entry::trace(call.tp));
            }
        }
    }
    if let Some(task) = tracker.ids.task_id.as_deref() {
        // Only a message that started a new task makes its sender the originator.
        let created = matches!(call.method, Method::SendMessage | Method::SendStreamingMessage) && call.request.task_id.is_none();
        if created && !recorded.task {
            recorded.task = true;
            let orig = call.originator;
            let key = task_key(call.target, task);
            // A live entry with another originator is never replaced: an agent returning an
            // id it already gave someone else must not hand that task to this caller.
            let ctx = tracker.ids.context_id.as_deref().map(Cow::Borrowed);
            let entry = Entry { tp: Cow::Borrowed(call.tp), agent: Some(Cow::Borrowed(call.target)), orig: Some(Cow::Borrowed(orig)), ctx };
            if store_unless(host, table, &key, &entry, |existing| existing.orig.as_deref() != Some(orig)) == Put::Kept {
                host.log(LogLevel::Info, &format!("tollgate-a2a: task id {task} at {} already recorded for another originator; kept", call.target));
            }
            // The first trace recorded for a referenced task stays.
            store_unless(host, table, &task_ref_key(task), &Entry::trace(call.tp), |_| true);
        }
    }
    true
}

#[cfg(test)]
#[path = "conversations_tests.rs"]
mod tests;
