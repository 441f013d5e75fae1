//! Conversation routing: one A2A conversation (`contextId`) sticks to one agent replica. The
//! filter sets [`ROUTE_KEY`] on every forwarded call — the request's contextId; for a call
//! that names only a task (`GetTask`, `CancelTask`, `SubscribeToTask`, push configs), the
//! context the gateway saw that task answered in; else the task id itself — and the route's
//! `hash_policy` (ring hash or maglev) hashes it. The header is set while the request is still
//! held, before Envoy's router picks the host (the hash is computed when the router runs).
//!
//! The task → context link is the task's entry in the conversation table (`ctx`, written with
//! the task when its answer reveals both). A call with neither a context nor a task (a
//! conversation's first turn, when the server generates the contextId) carries no key: Envoy
//! picks any replica.

/// The request header a route's `hash_policy` uses. Gateway-owned (`x-tollgate-a2a-*`): a
/// caller's own value is removed with the request head.
pub const ROUTE_KEY: &str = "x-tollgate-a2a-route-key";

/// The route key of a call, from its ids and the context recorded for its task. Pure.
pub fn route_key<'a>(context_id: Option<&'a str>, task_id: Option<&'a str>, task_context: Option<&'a str>) -> Option<&'a str> {
    let usable = |v: &&str| !v.is_empty() && !v.chars().any(char::is_control);
    context_id.filter(usable).or(task_context.filter(usable)).or(task_id.filter(usable))
}

#[cfg(test)]
#[path = "affinity_tests.rs"]
mod tests;
