//! One HTTP exchange through the A2A filter, written against the `Host` trait so it runs
//! natively against `MemoryHost` in unit tests; `filter.rs` only maps proxy-wasm callbacks
//! onto it.
//!
//! Each step reads the facts it needs from the host (`head.rs`: request head, route, the
//! signature's clock, the JWT claim; `conversations.rs`: the task's table entry), asks the
//! pure `decide::decide` what to do, and applies the answer: a local reply (`replies.rs`), or
//! the upstream headers (`upstream.rs`), the table write and the filter-state tags. What the exchange has seen
//! is kept in a plain [`ExchangeFacts`], from which `record.rs` builds the audit record.
//!
//! Request: classify from the headers; JSON-RPC and REST bodies are buffered (headers held)
//! only to read the method and ids; then one decision: identity, delegation context, trace,
//! loop/depth, authorization — and the upstream headers are set while still held.
//! Response: JSON and SSE bodies stream through untouched while ids and state are read
//! incrementally; only agent cards and filtered `ListTasks` answers are held (`response.rs`).

use crate::affinity;
use crate::chain::Presented;
use crate::credential;
use crate::classify::{self, Binding, Dialect, Head, Method};
use crate::config::State;
use crate::conversations::{self, Recorded};
use crate::decide::{self, Action, Decision, Facts};
use crate::grpc;
use crate::head::{self, RequestHead};
use crate::record::{self, CardAudit, ExchangeFacts, ResponseFacts, Tags};
use crate::replies::{self, Refusal};
use crate::response::{self, CardState, ListOutcome, ListState, ResponseHead};
use crate::push;
use crate::session::{self, ResponseTracker};
use crate::upstream;
use serde_json::value::RawValue;
use std::rc::Rc;
use tollgate_core::observe::audit;
use tollgate_core::stream::{HttpExchange, Step};
use tollgate_core::host::{BodyBuffer, HeaderMap, Host, HostExt, LogLevel};
use tollgate_core::identity::{self, IdentityError};
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not A2A (and not a POST to an agent): passed on, without gateway-owned headers (and,
    /// on agent routes, credentials), unrecorded.
    Passthrough,
    /// Holding headers until the body is complete.
    AwaitBody,
    /// Forwarded upstream; following the response.
    Forwarded,
    /// Answered locally (refused).
    Denied,
    /// The record was written (access-log time): nothing more to do.
    Logged,
}

pub struct Exchange {
    state: Rc<State>,
    metrics: Rc<Metrics>,
    phase: Phase,
    /// What the record is built from.
    facts: ExchangeFacts,
    head: Head,
    rpc_id: Option<Box<RawValue>>,
    /// The request presented an API key nobody has (refused once classified).
    unknown_credential: bool,
    presented: Presented,
    traceparent_in: Option<String>,
    tracestate_in: Option<String>,
    tracker: Option<ResponseTracker>,
    card: Option<CardState>,
    list: Option<ListState>,
    recorded: Recorded,
    tags: Tags,
    /// The request's push-notification webhook is refused (applied once the call is allowed).
    push_refused: Option<push::Why>,
    /// The context the table recorded for the task the call names (conversation routing).
    task_context: Option<String>,
    /// A gRPC call's answer, read message by message (`grpc.rs`).
    grpc_response: Option<grpc::ResponseReader>,
}

impl Exchange {
    pub fn new(state: Rc<State>, metrics: Rc<Metrics>) -> Self {
        let tags = Tags::new(state.filter_state_tags);
        Exchange {
            state,
            metrics,
            phase: Phase::Passthrough,
            facts: ExchangeFacts::default(),
            head: Head::Other,
            rpc_id: None,
            unknown_credential: false,
            presented: Presented::default(),
            traceparent_in: None,
            tracestate_in: None,
            tracker: None,
            card: None,
            list: None,
            recorded: Recorded::default(),
            tags,
            push_refused: None,
            task_context: None,
            grpc_response: None,
        }
    }

    /// Takes part in the trace (once): see `conversations::join_trace`.
    fn participate(&mut self, host: &dyn Host) {
        if self.facts.trace.is_none() {
            let (inbound, tracestate) = (self.traceparent_in.as_deref(), self.tracestate_in.as_deref());
            let (step, source) = conversations::join_trace(host, &self.state.table, inbound, tracestate, &self.facts.ids, &self.facts.target);
            self.facts.trace = Some(step);
            self.facts.trace_source = source;
        }
    }

    /// Reads what the decision needs, decides, applies.
    fn decide(&mut self, host: &dyn Host) -> Step {
        self.participate(host);
        let state = self.state.clone();
        let card = self.facts.binding == Some(Binding::Card);
        let identity = self.facts.identity.as_ref();
        let known = !self.unknown_credential;
        let signature_ok = known && !card && head::signature_valid(host, &state, identity, &self.presented);
        let jwt_on_behalf_of = if known { head::jwt_on_behalf_of(host, &state) } else { None };
        // Keyed by the target: a task id some other agent returned says nothing about this one.
        let task = match self.facts.ids.task_id.as_deref() {
            Some(t) if known && !card => conversations::task_entry(host, &state.table, &self.facts.target, t),
            _ => None,
        };
        let facts = Facts {
            card,
            target: &self.facts.target,
            identity,
            unknown_credential: self.unknown_credential,
            presented: &self.presented,
            signature_ok,
            jwt_on_behalf_of: jwt_on_behalf_of.as_deref(),
            method: self.facts.method_name(),
            names_task: self.facts.ids.task_id.is_some(),
        };
        let decision = decide::decide(&facts, task.as_ref(), &state);
        self.task_context = task.and_then(|t| t.context);
        self.apply(host, decision)
    }

    fn apply(&mut self, host: &dyn Host, decision: Decision) -> Step {
        self.facts.caller = decision.caller;
        self.facts.trust = decision.trust;
        self.facts.on_behalf_of = decision.on_behalf_of;
        self.facts.hop = decision.hop;
        self.facts.chain = decision.chain;
        self.facts.rule_id = decision.rule_id;
        let list_owner = match decision.action {
            Action::Refuse(why) => return self.deny(host, why),
            Action::Forward { list_owner } => list_owner,
        };
        if let Some(why) = self.push_refused {
            self.facts.push_url_refused = Some(why.as_str());
            host.log(LogLevel::Info, &format!("tollgate-a2a: refused push-notification URL ({})", why.as_str()));
            return self.deny(host, Refusal::PushUrl);
        }
        self.phase = Phase::Forwarded;
        if self.facts.binding == Some(Binding::Card) {
            self.prepare_card(host);
            upstream::set_headers(host, &self.state, &self.facts, false);
            return Step::Continue;
        }
        if list_owner.is_some() && self.facts.binding == Some(Binding::Grpc) {
            // A task list is filtered as JSON only: over gRPC it cannot be, so never passed.
            return self.deny(host, Refusal::Unfilterable);
        }
        self.list = list_owner.map(ListState::new);
        if self.card.is_some() {
            self.prepare_card(host);
        }
        upstream::set_headers(host, &self.state, &self.facts, true);
        let ids = &self.facts.ids;
        let route_key = affinity::route_key(ids.context_id.as_deref(), ids.task_id.as_deref(), self.task_context.as_deref());
        host.try_set_header(HeaderMap::Request, affinity::ROUTE_KEY, route_key);
        // A client-chosen contextId is known now: later turns and downstream hops find it.
        if let (Some(ctx), Some(step)) = (&self.facts.ids.context_id, &self.facts.trace) {
            conversations::record_request_context(host, &self.state.table, &mut self.recorded, ctx, &step.traceparent);
        }
        self.tags.publish(host, &self.facts, self.tracker.as_ref());
        Step::Continue
    }

    /// Refuses a request on an agent route that is not a classifiable A2A call (or whose
    /// path or body is ambiguous). An unknown credential is reported as such first.
    fn refuse_unclassified(&mut self, host: &dyn Host, binding: Binding, why: Refusal) -> Step {
        self.facts.binding = Some(binding);
        self.participate(host);
        self.deny(host, if self.unknown_credential { Refusal::Unauthenticated } else { why })
    }

    fn prepare_card(&mut self, host: &dyn Host) {
        if let Some(card) = self.card.as_mut() {
            card.prepare(host, &self.state);
        }
    }

    fn deny(&mut self, host: &dyn Host, why: Refusal) -> Step {
        self.phase = Phase::Denied;
        // The refusal names the gateway's span like a forwarded call's response does: the
        // local reply's correlation headers are read from the request (`correlate.rs`).
        if let Some(step) = &self.facts.trace {
            host.try_set_header(HeaderMap::Request, "traceparent", Some(&step.traceparent));
        }
        if self.facts.binding == Some(Binding::Grpc) {
            return self.deny_grpc(host, why);
        }
        let (status, body) = self.refusal(why);
        if let Err(e) = reply::send_json(host, status, why.reply_headers(), &body) {
            host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot send local reply: {e}"));
        }
        Step::Pause
    }

    /// Refuses a gRPC call in gRPC's shape: trailers-only, `grpc-status` and `grpc-message`.
    fn deny_grpc(&mut self, host: &dyn Host, why: Refusal) -> Step {
        self.facts.refusal = Some(why);
        self.facts.status = Some(200);
        self.facts.grpc_status = Some(i64::from(grpc::status_code(why)));
        if let Err(e) = host.send_grpc_reply(grpc::status_code(why), &grpc::status_message(why)) {
            host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot send local reply: {e}"));
        }
        Step::Pause
    }

    /// A gRPC call's head (`grpc.rs`): an A2A method waits for its message; anything else
    /// on an agent route is refused (INVALID_ARGUMENT), never passed unchecked.
    fn grpc_head(&mut self, host: &dyn Host, path: &str, end_of_stream: bool) -> Step {
        self.facts.binding = Some(Binding::Grpc);
        match grpc::classify_path(path) {
            grpc::Path::Call { dialect, method } => {
                self.facts.dialect = dialect;
                self.facts.method = Some(method);
                if end_of_stream {
                    return self.refuse_unclassified(host, Binding::Grpc, Refusal::Invalid);
                }
                self.phase = Phase::AwaitBody;
                Step::Pause
            }
            grpc::Path::UnknownMethod { dialect, name } => {
                self.facts.dialect = dialect;
                self.facts.raw_method = Some(name);
                self.refuse_unclassified(host, Binding::Grpc, Refusal::Invalid)
            }
            grpc::Path::Other => {
                host.log(LogLevel::Info, &format!("tollgate-a2a: refused gRPC call {path:?}: not the A2A service"));
                self.refuse_unclassified(host, Binding::Grpc, Refusal::Invalid)
            }
        }
    }

    /// A gRPC call's one request message: its ids and push URLs, then the decision.
    fn grpc_body(&mut self, host: &dyn Host, body: &[u8]) -> Step {
        let Some(method) = self.facts.method else { return self.refuse_unclassified(host, Binding::Grpc, Refusal::Invalid) };
        let request = grpc::single_message(body)
            .map_err(|e| format!("{e:?}"))
            .and_then(|m| grpc::read_request(method, self.facts.dialect, m).map_err(|e| e.to_string()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                host.log(LogLevel::Info, &format!("tollgate-a2a: refused gRPC request: {e}"));
                return self.refuse_unclassified(host, Binding::Grpc, Refusal::Invalid);
            }
        };
        self.push_refused = if request.push_missing {
            Some(push::Why::Unreadable)
        } else {
            push::check_all(&request.push_urls, &self.state.push).err().map(|(_, why)| why)
        };
        self.facts.ids = request.ids;
        self.decide(host)
    }

    /// Records the refusal `why` and returns its HTTP status and body.
    fn refusal(&mut self, why: Refusal) -> (u32, Vec<u8>) {
        let facts = &self.facts;
        let call = replies::Call {
            binding: facts.binding,
            dialect: facts.dialect,
            rpc_id: self.rpc_id.as_deref(),
            target: &facts.target,
            hop: facts.hop,
            chain: &facts.chain,
            method: facts.method,
        };
        let (status, body) = replies::body(why, &call);
        self.facts.refusal = Some(why);
        self.facts.status = Some(status);
        (status, body)
    }

    fn response_done(&mut self, host: &dyn Host) {
        if let Some(tracker) = self.tracker.as_mut() {
            let progress = tracker.finish();
            if progress.first_event && self.facts.ttfe_nanos.is_none() {
                self.facts.ttfe_nanos = Some(host.now_nanos());
            }
        }
        self.record_response_ids(host);
    }

    /// Records what the response revealed (see `conversations::record_response`) and, when
    /// that changed, publishes the tags again.
    fn record_response_ids(&mut self, host: &dyn Host) {
        let Some(method) = self.facts.method.filter(|m| m.returns_task()) else { return };
        let (Some(step), Some(tracker)) = (&self.facts.trace, &self.tracker) else { return };
        let call = conversations::Call {
            method,
            request: &self.facts.ids,
            target: &self.facts.target,
            originator: self.facts.acting(),
            tp: &step.traceparent,
        };
        if conversations::record_response(host, &self.state.table, &mut self.recorded, &call, tracker) {
            self.tags.publish(host, &self.facts, Some(tracker));
        }
    }

    /// A JSON-RPC body, classified: the call's method and ids, or why it is refused.
    fn rpc_body(&mut self, host: &dyn Host, body: &[u8]) -> Step {
        let call = match classify::classify_rpc(body) {
            Ok(call) => call,
            Err(class) => {
                let why = Refusal::for_body(&class);
                if let Some(detail) = class.detail() {
                    host.log(LogLevel::Info, &format!("tollgate-a2a: refused {detail}"));
                }
                // The error answers the request's id when it could be read (JSON-RPC).
                self.rpc_id = class.into_id();
                return self.refuse_unclassified(host, Binding::JsonRpc, why);
            }
        };
        self.facts.binding = Some(Binding::JsonRpc);
        self.facts.method = call.method;
        self.facts.raw_method = Some(call.raw_method.to_string());
        self.rpc_id = call.id.map(|r| r.to_owned());
        if let Some(method) = call.method {
            if method == Method::GetExtendedAgentCard {
                let path = host.request_header(":path").unwrap_or_else(|| "/".into());
                let prefix = classify::decode_path(&path).map(|p| classify::encode_path(&p)).unwrap_or_else(|_| "/".into());
                self.card = Some(CardState::with_prefix(prefix, true));
            }
            if let Some(params) = call.params {
                self.push_refused = push::refusal_in_json(params.get().as_bytes(), method, &self.state.push);
                match session::request_ids(params.get().as_bytes(), method, self.facts.dialect, self.state.log_message_parts) {
                    Ok(ids) => self.facts.ids = ids,
                    Err(e) => host.log(LogLevel::Debug, &format!("tollgate-a2a: params not read: {e}")),
                }
            }
        }
        self.decide(host)
    }
}

impl HttpExchange for Exchange {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.metrics.inc(host, record::REQUESTS, &[]);
        self.facts.start_nanos = host.now_nanos();
        let head = RequestHead::read(host);
        self.facts.request_id = head.request_id;
        // The caller's copy of the gateway-owned context is read, then removed from every
        // request whatever it turns out to be: only the gateway's own values reach an agent.
        self.presented = head.presented;
        for name in &head.gateway_owned {
            host.try_set_header(HeaderMap::Request, name, None);
        }
        let Some(target) = head::route_target(host, &self.state) else {
            self.phase = Phase::Passthrough;
            return Step::Continue;
        };
        self.facts.target = target;
        let method = head.method.unwrap_or_default();
        let path = head.path.unwrap_or_default();
        let content_type = head.content_type;
        self.facts.dialect = Dialect::from_header(head.a2a_version.as_deref());
        let tier = head::jwt_tier(host, &self.state);
        self.facts.carried = credential::carried(host, &self.state, head.credential.as_deref(), head.traceparent.as_deref(), tier);
        self.traceparent_in = head.traceparent;
        self.tracestate_in = head.tracestate;
        match identity::resolve(host, &self.state.identity) {
            Ok(id) => self.facts.identity = id,
            Err(IdentityError::UnknownApiKey | IdentityError::Gateway(_)) => self.unknown_credential = true,
        }
        if !self.state.forward_credentials {
            identity::strip_credentials(host, &self.state.credential_headers);
        }
        // A2A uses GET, POST and DELETE only: anything else (PUT, PATCH...) is refused, never
        // passed unclassified (the agent's server might still run the body it carries).
        if !classify::http_method_allowed(&method, !end_of_stream) {
            host.log(LogLevel::Info, &format!("tollgate-a2a: refused HTTP method {method:?} on an agent route"));
            let binding = if tollgate_core::text::media_type_is(content_type.as_deref(), "application/json") {
                Binding::JsonRpc
            } else {
                Binding::Rest
            };
            self.facts.refused_http_method = Some(method);
            return self.refuse_unclassified(host, binding, Refusal::HttpMethod);
        }
        let post = method.eq_ignore_ascii_case("POST");
        if post && grpc::is_grpc(content_type.as_deref()) {
            return self.grpc_head(host, &path, end_of_stream);
        }
        self.head = match classify::classify_head(&method, &path, content_type.as_deref()) {
            Ok(head) => head,
            Err(e) => {
                host.log(LogLevel::Info, &format!("tollgate-a2a: refused path {path:?}: {e:?}"));
                return self.refuse_unclassified(host, Binding::Rest, Refusal::BadPath);
            }
        };
        match self.head.clone() {
            Head::Card { prefix, .. } => {
                self.facts.binding = Some(Binding::Card);
                self.card = Some(CardState::with_prefix(prefix, false));
                self.decide(host)
            }
            Head::Rest { method, task_id, base, .. } => {
                self.facts.binding = Some(Binding::Rest);
                self.facts.method = Some(method);
                self.facts.ids.task_id = task_id;
                if method == Method::GetExtendedAgentCard {
                    self.card = Some(CardState::with_prefix(base, false));
                }
                if end_of_stream {
                    self.decide(host)
                } else {
                    self.phase = Phase::AwaitBody;
                    Step::Pause
                }
            }
            // A POST to an agent that is not A2A is refused, never passed unchecked: the SDK
            // runs a JSON-RPC body whatever its content type says.
            // An empty body is not JSON: a Parse error, as the agent answers.
            Head::JsonPost if end_of_stream => self.refuse_unclassified(host, Binding::JsonRpc, Refusal::Parse),
            Head::JsonPost => {
                self.phase = Phase::AwaitBody;
                Step::Pause
            }
            Head::Other if post => self.refuse_unclassified(host, Binding::JsonRpc, Refusal::MediaType),
            Head::Other => {
                // Neither A2A nor a POST (another GET, OPTIONS...): passed on, without the
                // caller's credentials and gateway-owned headers, unrecorded.
                self.phase = Phase::Passthrough;
                Step::Continue
            }
        }
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.phase != Phase::AwaitBody {
            return Step::Continue;
        }
        if body_size > self.state.limits.max_request_body_bytes {
            self.facts.binding.get_or_insert(Binding::JsonRpc);
            self.participate(host);
            return self.deny(host, Refusal::TooLarge);
        }
        if !end_of_stream {
            return Step::Pause;
        }
        let body = match host.body(BodyBuffer::Request, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot read request body: {e}"));
                Vec::new()
            }
        };
        if self.facts.binding == Some(Binding::Grpc) {
            return self.grpc_body(host, &body);
        }
        match self.head {
            Head::Rest { .. } => {
                // Duplicate keys: the agent's parser may read another method or id than ours
                // (JSON-RPC bodies are checked while they are classified).
                if !body.is_empty() {
                    if let Err(e) = tollgate_core::wire::jsonrpc::check_no_duplicate_keys(&body) {
                        host.log(LogLevel::Info, &format!("tollgate-a2a: refused ambiguous request: {e}"));
                        let binding = *self.facts.binding.get_or_insert(Binding::JsonRpc);
                        return self.refuse_unclassified(host, binding, Refusal::Invalid);
                    }
                }
                if let Some(method) = self.facts.method {
                    if push::carries_webhook(method) {
                        self.push_refused = push::refusal_in_json(&body, method, &self.state.push);
                    }
                    if let Ok(ids) = session::request_ids(&body, method, self.facts.dialect, self.state.log_message_parts) {
                        let path_task = self.facts.ids.task_id.take();
                        self.facts.ids = ids;
                        self.facts.ids.task_id = path_task.or(self.facts.ids.task_id.take());
                    }
                }
                self.decide(host)
            }
            Head::JsonPost => self.rpc_body(host, &body),
            _ => Step::Continue,
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        if self.phase != Phase::Forwarded {
            return Step::Continue;
        }
        let head = ResponseHead::read(host);
        self.facts.status = head.status;
        let card_fetch = self.facts.binding == Some(Binding::Card);
        if let Some(card) = self.card.as_mut() {
            if card.hold(&head, &self.state.cards, end_of_stream) {
                return Step::Pause;
            }
            if card_fetch {
                return Step::Continue;
            }
        }
        // Only a successful answer with a body lists tasks; errors pass. Held until complete
        // (or, unfilterable, until its first bytes are replaced).
        if let Some(list) = self.list.as_mut() {
            if list.hold(&head, self.state.limits.max_list_response_bytes, end_of_stream) {
                return Step::Pause;
            }
        }
        if let (Some(Binding::Grpc), Some(method)) = (self.facts.binding, self.facts.method) {
            if grpc::is_grpc(Some(&head.content_type)) {
                self.tracker = Some(ResponseTracker::external(method.streams()));
                self.grpc_response = Some(grpc::ResponseReader::new(method, self.state.limits.max_sse_event_bytes));
            }
        } else if !card_fetch && self.facts.method.is_some() {
            let rest = self.facts.binding == Some(Binding::Rest);
            if head.content_type.starts_with("text/event-stream") {
                self.tracker = Some(ResponseTracker::sse(rest, self.state.limits.max_sse_event_bytes));
            } else if head.is_json() {
                self.tracker = Some(ResponseTracker::json(rest));
            }
        }
        if end_of_stream {
            self.response_done(host);
        }
        Step::Continue
    }

    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.phase != Phase::Forwarded {
            return Step::Continue;
        }
        if let Some(card) = self.card.as_mut().filter(|c| c.buffering) {
            return card.body(host, &self.state.cards, body_size, end_of_stream);
        }
        if let Some(list) = self.list.as_mut().filter(|l| l.held()) {
            let rest = self.facts.binding == Some(Binding::Rest);
            match list.body(host, &self.state, &self.facts.target, rest, body_size, end_of_stream) {
                ListOutcome::Step(step) => return step,
                ListOutcome::Passed(body) => {
                    // The answer as it goes out: its JSON-RPC error code, if any.
                    let mut tracker = ResponseTracker::json(rest);
                    tracker.feed(&body);
                    tracker.finish();
                    self.tracker = Some(tracker);
                    self.facts.ttfe_nanos = Some(host.now_nanos());
                    if end_of_stream {
                        self.response_done(host);
                    }
                }
                ListOutcome::Unfilterable => {
                    let (status, error) = self.refusal(Refusal::Unfilterable);
                    response::replace_response(host, status, &error, body_size);
                }
            }
            return Step::Continue;
        }
        if let Some(tracker) = self.tracker.as_mut() {
            // Time to first event: a JSON body's first byte; an SSE stream's first whole event.
            if self.facts.ttfe_nanos.is_none() && body_size > 0 && !tracker.is_stream() {
                self.facts.ttfe_nanos = Some(host.now_nanos());
            }
            let chunk = if body_size > 0 { host.body(BodyBuffer::Response, 0, body_size).ok().flatten() } else { None };
            let progress = match (chunk, self.grpc_response.as_mut()) {
                (Some(c), Some(reader)) => reader.feed(&c, tracker),
                (Some(c), None) => tracker.feed(&c),
                (None, _) => Default::default(),
            };
            if progress.first_event && self.facts.ttfe_nanos.is_none() {
                self.facts.ttfe_nanos = Some(host.now_nanos());
            }
            if progress.new_ids {
                self.record_response_ids(host);
            }
        }
        if end_of_stream {
            self.response_done(host);
        }
        Step::Continue
    }

    /// Called once when the stream ends (access-log time): audit record and metrics.
    fn on_log(&mut self, host: &dyn Host) {
        let forwarded = match self.phase {
            Phase::Passthrough | Phase::AwaitBody | Phase::Logged => return,
            Phase::Forwarded => true,
            Phase::Denied => false,
        };
        self.phase = Phase::Logged;
        if forwarded {
            self.response_done(host);
            if self.facts.binding == Some(Binding::Grpc) {
                // Envoy's `response.grpc_status` (trailers, or a trailers-only answer's headers).
                self.facts.grpc_status = host
                    .property(&["response", "grpc_status"])
                    .ok()
                    .flatten()
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(i64::from_le_bytes);
            }
        }
        let card = self.card.as_ref().map(|c| CardAudit {
            result: c.result.unwrap_or("unchanged"),
            urls_rewritten: c.urls_rewritten,
            public_base: c.public_base.as_deref(),
        });
        let response = ResponseFacts {
            tracker: self.tracker.as_ref(),
            card,
            tasks_withheld: self.list.as_ref().and_then(|l| l.withheld),
        };
        let record = record::build(&self.facts, response, host.now_nanos());
        audit::emit(host, &self.state.audit, &record);
        self.tags.publish(host, &self.facts, self.tracker.as_ref());
        let state = record::state_label(&self.facts, self.tracker.as_ref());
        let card_result = self.card.as_ref().and_then(|c| c.result);
        record::emit_metrics(host, &self.metrics, &self.facts, &record, state, card_result);
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
