//! One request through the LLM filter, host-agnostic: every callback takes `&dyn Host`,
//! so the whole flow runs natively against `MemoryHost` in unit tests, and `filter.rs`
//! only maps these calls to proxy-wasm.
//!
//! Each callback reads the facts it needs from the host, asks the pure `decide` module what
//! to do, and applies the answer; what the exchange has seen is kept in a plain
//! [`ExchangeFacts`], from which the pure builders in `record.rs` make the records.
//!
//! Request headers: detect the client API from the path (unknown path: 404), continue the
//! W3C trace, resolve the caller (401 for an unknown key, and for no key when identity is
//! required), strip every client credential header, hold the headers (Pause).
//! Request body: buffered until complete (the model decides the route): 413 over the limit,
//! 400 for bad JSON / no model, 404 unknown model, 403 model not allowed for the key, 429
//! when a matching limit cannot take the request's estimate (reservations are taken here,
//! see `limits.rs`); then rewrite the model (alias) and inject `stream_options.include_usage`,
//! set the routing header (Envoy re-selects the route), the provider's credential and extra
//! headers.
//! Response: counted chunk by chunk while it streams through (never buffered).
//! End (`finish`, exactly once: end of response, or `on_log` / `on_done`): reservations
//! reconciled against the real usage, then one audit record and the metrics.

use crate::api::{self, ClientApi, Endpoint, Operation, RefusalKind};
use crate::config::State;
use crate::decide::{self, BodyDecision, Forward};
use crate::cache;
use crate::deployments;
use crate::guard;
use crate::guardrails;
use crate::endpoints;
use crate::fleet;
use crate::limits::{self, Actual, Exceeded, Held, Wanted};
use crate::routing::Provider;
use crate::record::{self, Accounting, ExchangeFacts, Labels, Phase, Refusal};
use crate::usage::{Framing, UsageTracker};
use std::rc::Rc;
use tollgate_core::observe::audit;
use tollgate_core::stream::{GrpcAnswer, HttpExchange, Step};
use tollgate_core::host::{BodyBuffer, Direction, HeaderMap, Host, HostExt, LogLevel};
use tollgate_core::identity;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::reply;
use tollgate_core::wire::trace;

/// Upstream error bodies kept for the record's error message.
const MAX_ERROR_BODY: usize = 8 * 1024;

/// Minimum time between two provisional records of one streaming response.
const PROVISIONAL_INTERVAL_NANOS: u64 = 250_000_000;

pub struct Exchange {
    state: Rc<State>,
    metrics: Rc<Metrics>,
    /// What the records are built from.
    facts: ExchangeFacts,
    endpoint: Option<Endpoint>,
    had_content_length: bool,
    tracker: Option<UsageTracker>,
    /// The response has a content-encoding: its bytes cannot be counted.
    encoded_response: bool,
    last_provisional_nanos: u64,
    /// The final record was written (`finish` ran).
    finished: bool,
    /// Reservations held until `finish` reconciles them (then emptied).
    held: Vec<Held>,
    /// `x-tollgate-ratelimit-*` headers for a successful response.
    ratelimit_headers: Vec<(String, String)>,
    /// The request waits for the fleet-wide store's admission (`fleet.rs`).
    awaiting: Option<Box<Awaiting>>,
    /// A virtual model's plan token: the key of its attempts in the attempt log.
    plan_token: Option<u64>,
    /// The answering attempt's number and duration (from the attempt role's header).
    answered_attempt: Option<(usize, u64)>,
    /// The request path as forwarded (a Gemini key taken out of the query).
    client_path: String,
    /// What the client said about caching (read with the request headers).
    cache_wish: cache::ClientWish,
    /// A cache miss to fill: the entry's key and the answer so far (dropped when too large).
    cache_fill: Option<([u8; 32], Vec<u8>)>,
    /// The provider's content type (for a cache entry).
    response_content_type: Option<String>,
    /// The moderation call in flight: its token and when it started.
    moderating: Option<(u32, u64)>,
    /// Response guardrails: the policies' stream guards (chained), or a JSON answer held
    /// whole to be judged at its end.
    response_guard: ResponseGuard,
    /// The error shape of a path no client API knows (`endpoints.rs`).
    shape: Option<ClientApi>,
}

/// How the response passes the guardrail policies.
enum ResponseGuard {
    None,
    /// A JSON answer, held whole: (policy index) of each policy to apply at its end.
    Json(Vec<usize>),
    /// A stream: one guard per policy, each fed the previous one's output.
    Stream(Vec<(usize, guard::response::SseGuard)>),
    /// The stream was blocked: everything after the error event is dropped.
    Blocked,
}

/// What a request paused for the store's answer goes on with.
struct Awaiting {
    /// The gRPC call's token.
    token: u32,
    /// The fleet counters asked for.
    wanted: Vec<Wanted>,
    body_size: usize,
    rewrites: Rewrites,
    provider: Provider,
}

/// The request rewrites of a [`Forward`], owned so they can wait for the store.
struct Rewrites {
    body: Result<Option<Vec<u8>>, Refusal>,
    usage_injected: bool,
    path: Option<String>,
    credential: Option<(&'static str, String)>,
    /// A virtual model's index: its deployments are planned instead.
    virtual_model: Option<usize>,
}

impl Exchange {
    pub fn new(state: Rc<State>, metrics: Rc<Metrics>) -> Self {
        Exchange {
            state,
            metrics,
            facts: ExchangeFacts::default(),
            endpoint: None,
            had_content_length: false,
            tracker: None,
            encoded_response: false,
            last_provisional_nanos: 0,
            finished: false,
            held: Vec::new(),
            ratelimit_headers: Vec::new(),
            awaiting: None,
            plan_token: None,
            answered_attempt: None,
            client_path: String::new(),
            cache_wish: cache::ClientWish::default(),
            cache_fill: None,
            response_content_type: None,
            moderating: None,
            response_guard: ResponseGuard::None,
            shape: None,
        }
    }

    /// Answers locally in the client API's error shape; the request never goes upstream.
    fn refuse(&mut self, host: &dyn Host, refused: Refusal) -> Step {
        let limit_headers = refused.limit.as_deref().map(Exceeded::headers).unwrap_or_default();
        let mut headers: Vec<(&str, &str)> = limit_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if refused.refusal == RefusalKind::Unauthenticated {
            headers.push(("www-authenticate", "Bearer"));
        }
        if refused.refusal == RefusalKind::MethodNotAllowed {
            headers.push(("allow", if self.facts.operation == Operation::ListModels { "GET" } else { "POST" }));
        }
        let body = api::error_body(self.shape.or(self.facts.api), refused.refusal, &refused.message);
        if let Err(e) = reply::send_json(host, refused.refusal.status(), &headers, &body) {
            host.log(LogLevel::Error, &format!("tollgate-llm: cannot send local reply: {e}"));
        }
        self.facts.phase = Phase::Refused(refused);
        self.finish(host);
        Step::Pause
    }

    /// Applies a body decision: records what the body said, then refuses, or reserves on the
    /// matching limits (429 when one cannot take the estimate) and forwards with the rewrites.
    fn apply_body(&mut self, host: &dyn Host, body_size: usize, decision: BodyDecision<'_>) -> Step {
        if let Some(request) = decision.request {
            self.facts.stream = request.stream;
            self.facts.max_output_tokens = request.max_output_tokens;
            if let Some(route) = request.route {
                self.facts.provider = Some(route.provider.name.clone());
                self.facts.upstream_model = Some(route.upstream_model);
            }
            self.facts.model = Some(request.model);
        }
        match decision.verdict {
            Err(refused) => self.refuse(host, refused),
            Ok(forward) => self.forward(host, body_size, forward),
        }
    }

    fn forward(&mut self, host: &dyn Host, body_size: usize, forward: Forward<'_>) -> Step {
        let state = self.state.clone();
        let Forward { reserve, body, usage_injected, path, provider, credential, virtual_model } = forward;
        let rewrites = Rewrites { body, usage_injected, path, credential, virtual_model: virtual_model.map(|(i, _)| i) };
        if let Some(estimate) = reserve {
            self.facts.reserved = Some(estimate);
            let model = self.facts.model.as_deref().unwrap_or_default();
            let upstream_model = self.facts.upstream_model.as_deref().unwrap_or_default();
            let wanted = limits::wanted(&state.limits, self.facts.identity.as_ref(), model, upstream_model, &estimate);
            let in_fleet = |w: &&Wanted| state.store.is_some() && state.limits.get(w.limit).is_some_and(|l| l.fleet.is_some());
            if let Some(never) = limits::never_fitting(&state.limits, &wanted, host.now_nanos() / 1_000_000_000) {
                return self.refuse(host, decide::rate_limited(never));
            }
            let (fleet_wanted, local): (Vec<&Wanted>, Vec<&Wanted>) = wanted.iter().partition(in_fleet);
            match limits::reserve_local(host, &state.limits, &local) {
                Ok(held) => self.held = held,
                Err(exceeded) => return self.refuse(host, decide::rate_limited(exceeded)),
            }
            if let (Some(store), false) = (&state.store, fleet_wanted.is_empty()) {
                let message = fleet::reservation_request(store, &state.limits, &fleet_wanted);
                match store.ask(host, &message) {
                    Ok(token) => {
                        let wanted = fleet_wanted.into_iter().cloned().collect();
                        let provider = provider.clone();
                        self.awaiting = Some(Box::new(Awaiting { token, wanted, body_size, rewrites, provider }));
                        // Headers and body stay held until the store answers.
                        return Step::Pause;
                    }
                    Err(e) => {
                        host.log(LogLevel::Warn, &format!("tollgate-llm: cannot reach the limits store `{}`: {e}", store.cluster));
                        if let Err(exceeded) = self.store_failed(host, &fleet_wanted) {
                            return self.refuse(host, decide::rate_limited(exceeded));
                        }
                    }
                }
            }
            self.ratelimit_headers = limits::client_headers(&state.limits, &self.held);
        }
        self.rewrite_and_route(host, body_size, rewrites, provider)
    }

    /// The store did not answer: refuse (a `fail_closed` limit), or take the counters in
    /// this Envoy's shared data and record the degradation.
    fn store_failed(&mut self, host: &dyn Host, wanted: &[&Wanted]) -> Result<(), Exceeded> {
        let state = self.state.clone();
        fleet::failed(&state.limits, wanted, host.now_nanos() / 1_000_000_000)?;
        self.facts.limits_degraded = true;
        let held = limits::reserve_local(host, &state.limits, wanted)?;
        self.held.extend(held);
        Ok(())
    }

    /// The store's answer to an admission: forward (and let the request go on) or refuse.
    fn admitted_by_store(&mut self, host: &dyn Host, awaiting: Awaiting, answer: GrpcAnswer<'_>) {
        let state = self.state.clone();
        let wanted: Vec<&Wanted> = awaiting.wanted.iter().collect();
        let now_ms = host.now_nanos() / 1_000_000;
        let read = tollgate_core::fleet::read_answer(answer, wanted.len());
        let admitted = match read {
            Ok(answer) => fleet::answered(&state.limits, &wanted, &answer, now_ms).map(|held| self.held.extend(held)),
            Err(why) => {
                let cluster = state.store.as_ref().map(|s| s.cluster.as_str()).unwrap_or_default();
                host.log(LogLevel::Warn, &format!("tollgate-llm: the limits store `{cluster}` did not answer: {why}"));
                self.store_failed(host, &wanted)
            }
        };
        if let Err(exceeded) = admitted {
            self.refuse(host, decide::rate_limited(exceeded));
            return;
        }
        self.ratelimit_headers = limits::client_headers(&state.limits, &self.held);
        if self.rewrite_and_route(host, awaiting.body_size, awaiting.rewrites, &awaiting.provider) == Step::Continue {
            if let Err(e) = host.resume(Direction::Request) {
                host.log(LogLevel::Error, &format!("tollgate-llm: cannot resume the request: {e}"));
            }
        }
    }

    /// Rewrites the request for its provider and lets it go.
    fn rewrite_and_route(&mut self, host: &dyn Host, body_size: usize, rewrites: Rewrites, provider: &Provider) -> Step {
        let state = self.state.clone();
        if let Some(index) = rewrites.virtual_model {
            return self.route_to_deployments(host, index);
        }
        match rewrites.body {
            Ok(Some(new_body)) => {
                if let Err(e) = host.set_body(BodyBuffer::Request, 0, body_size, &new_body) {
                    host.log(LogLevel::Error, &format!("tollgate-llm: cannot rewrite request body: {e}"));
                } else {
                    self.facts.usage_injected = rewrites.usage_injected;
                    if self.had_content_length {
                        host.try_set_header(HeaderMap::Request, "content-length", Some(&new_body.len().to_string()));
                    }
                }
            }
            Ok(None) => {}
            Err(refused) => return self.refuse(host, refused),
        }
        if let Some(path) = &rewrites.path {
            host.try_set_header(HeaderMap::Request, ":path", Some(path));
        }
        host.try_set_header(HeaderMap::Request, &state.provider_header, Some(&provider.name));
        if let Some((name, value)) = &rewrites.credential {
            host.try_set_header(HeaderMap::Request, name, Some(value));
        }
        if state.upstream_identity_encoding {
            host.try_set_header(HeaderMap::Request, "accept-encoding", Some("identity"));
        }
        for (name, value) in &provider.headers {
            host.try_set_header(HeaderMap::Request, name, Some(value));
        }
        self.facts.phase = Phase::Forwarded;
        self.provisional(host);
        Step::Continue
    }

    /// A virtual model: plans the deployments (cooling ones last) and hands the plan to
    /// Envoy, which runs the attempts (`deployments.rs`); each attempt's request is written
    /// by the attempt role.
    fn route_to_deployments(&mut self, host: &dyn Host, index: usize) -> Step {
        let state = self.state.clone();
        let (Some(vm), Some(endpoint)) = (state.router.virtual_model(index), self.endpoint.clone()) else {
            return self.refuse(host, Refusal::new(api::RefusalKind::NotFound, "unknown_model", "model has no deployments"));
        };
        let servable = |d: &deployments::Deployment| {
            state.router.provider_at(d.provider).and_then(|p| deployments::target_for(&endpoint, p.apis.as_deref()).and(p.address.as_deref()))
        };
        // A deployment that cannot serve this client API is never planned.
        let cooling: Vec<u64> = vm
            .deployments
            .iter()
            .map(|d| if servable(d).is_some() { deployments::cooling_until(host, &d.name) } else { u64::MAX })
            .collect();
        let now_ms = host.now_millis();
        let order: Vec<usize> = deployments::balance::with(index, vm.deployments.len(), |current| {
            deployments::plan(&vm.deployments, &cooling, now_ms, current, vm.deployments.len())
        })
        .into_iter()
        .filter(|&i| cooling.get(i) != Some(&u64::MAX))
        .take(state.fallback.max_attempts)
        .collect();
        let hosts: Vec<&str> = order.iter().filter_map(|&i| vm.deployments.get(i).and_then(servable)).collect();
        if hosts.is_empty() {
            let message = format!("no deployment of this model serves the {}", endpoint.api.title());
            return self.refuse(host, Refusal::new(api::RefusalKind::NotFound, "unsupported_api", message));
        }
        let mut token = [0u8; 8];
        if host.random_bytes(&mut token).is_err() {
            token = host.now_nanos().to_be_bytes();
        }
        let token = u64::from_be_bytes(token);
        self.plan_token = Some(token);
        self.facts.planned = order.iter().filter_map(|&i| vm.deployments.get(i).map(|d| d.name.clone())).collect();
        let fallback = &state.fallback;
        let statuses: Vec<String> = fallback.retry_on_status.iter().map(u16::to_string).collect();
        let retries = (hosts.len() - 1).to_string();
        let headers = [
            (state.provider_header.as_str(), fallback.route.clone()),
            (deployments::HOSTS_HEADER, hosts.join(",")),
            (deployments::PLAN_HEADER, deployments::plan_header(index, self.facts.stream, &order, token, self.facts.model.as_deref().unwrap_or_default(), &self.client_path)),
            ("x-envoy-max-retries", retries),
            ("x-envoy-retry-on", "connect-failure,refused-stream,reset,retriable-status-codes".to_string()),
            ("x-envoy-retriable-status-codes", statuses.join(",")),
            ("x-envoy-upstream-rq-per-try-timeout-ms", fallback.first_byte_timeout_ms.to_string()),
        ];
        for (name, value) in &headers {
            host.try_set_header(HeaderMap::Request, name, Some(value));
        }
        self.facts.phase = Phase::Forwarded;
        self.provisional(host);
        Step::Continue
    }

    /// The final record and the metrics. Runs once.
    fn finish(&mut self, host: &dyn Host) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(token) = self.plan_token {
            self.facts.attempts = match (self.answered_attempt, &self.facts.deployment) {
                // A first attempt that answered untranslated logs nothing: it is all there is.
                (Some((1, duration_ms)), Some(name)) if !self.translated_answer() => vec![deployments::Attempt {
                    deployment: name.clone(),
                    status: self.facts.response_status.and_then(|s| u16::try_from(s).ok()),
                    duration_ms,
                    error: self.facts.response_status.filter(|s| *s >= 400).map(|_| "status".to_string()),
                    cooldown_ms: None,
                    tokens: None,
                }],
                _ => deployments::attempt_log::take(host, token),
            };
        }
        // The stream's terminal event passed through: the client has the whole answer even
        // when it closed before Envoy's end of stream reached this filter (issue 21 item 9).
        if self.tracker.as_ref().is_some_and(UsageTracker::ended) {
            self.facts.response_complete = true;
        }
        let accounting = record::accounting(&self.facts, self.tracker.as_ref(), &self.state);
        self.reconcile(host, accounting);
        self.fill_cache(host, accounting);
        self.write_record(host, true, accounting);
    }

    /// Replaces the reservations by what the request really took (see `limits.rs`). Runs
    /// once, from `finish`.
    fn reconcile(&mut self, host: &dyn Host, accounting: Accounting) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let actual = Actual {
            requests: u64::from(self.facts.forwarded()),
            tokens: accounting.tokens.total(),
            cost_micro_usd: accounting.cost_micro_usd.unwrap_or(0),
        };
        let state = self.state.clone();
        if let Some(store) = &state.store {
            for pending in fleet::settlements(store, &state.limits, &held, actual) {
                tollgate_core::fleet::outbox::push(pending);
            }
        }
        let mut overshot = limits::reconcile(host, &state.limits, &held, actual);
        for limit in fleet::overshot(&state.limits, &held, actual) {
            if !overshot.contains(&limit) {
                overshot.push(limit);
            }
        }
        self.facts.overshot = overshot.iter().filter_map(|&i| state.limits.get(i).map(|l| l.id.clone())).collect();
    }

    /// A provisional record in filter state: what the access log shows if the request ends
    /// before [`Exchange::finish`] (client gone mid-stream): the estimate so far.
    fn provisional(&mut self, host: &dyn Host) {
        if self.finished {
            return;
        }
        self.last_provisional_nanos = host.now_nanos();
        let accounting = record::accounting(&self.facts, self.tracker.as_ref(), &self.state);
        self.write_record(host, false, accounting);
    }

    /// Writes the record built by `record::build`: the final one to the log (and filter
    /// state) with the metrics, a provisional one to filter state only.
    fn write_record(&self, host: &dyn Host, is_final: bool, accounting: Accounting) {
        let state = &self.state;
        let facts = &self.facts;
        let outcome = record::outcome(facts);
        let overshot: Vec<&str> = facts.overshot.iter().map(String::as_str).collect();
        let rec = record::build(facts, &outcome, accounting, &overshot, host.now_nanos());
        if !is_final {
            // Filter state only: the Envoy log gets the final record, once.
            if let Some(json) = audit::to_json(host, &rec) {
                if let Err(e) = host.set_property(&[&state.audit.filter_state_key], &json) {
                    host.log(LogLevel::Warn, &format!("tollgate-llm: cannot set audit filter state: {e}"));
                }
            }
            return;
        }
        audit::emit(host, &state.audit, &rec);
        let labels = Labels {
            team: rec.detail.team.map(|t| state.team_labels.label(t)).unwrap_or("none"),
            model: match (&facts.model, &facts.provider) {
                (Some(model), Some(_)) => state.model_labels.label(model),
                _ => "none",
            },
            provider: facts.provider.as_deref().unwrap_or("none"),
            upstream_model: rec.detail.upstream_model.map(|m| state.upstream_model_labels.label(m)).unwrap_or("none"),
            key: facts.identity.as_ref().and_then(|i| i.key_name.as_deref()).map(|k| state.key_labels.label(k)).unwrap_or("none"),
            // No agent identity in this base: the caller's principal stands for the agent.
            agent: facts.identity.as_ref().map(|i| state.agent_labels.label(&i.principal)).unwrap_or("none"),
        };
        let duration_ms = rec.duration_ms.unwrap_or(0);
        record::emit_metrics(host, &self.metrics, labels, &rec.detail, duration_ms);
    }

    /// A virtual model's answer: which deployment gave it (the attempt role says so in a
    /// response header, removed here), so the record prices its upstream model.
    fn answered_by(&mut self, host: &dyn Host) {
        let Some(value) = host.response_header(deployments::ANSWERED_BY_HEADER) else { return };
        host.try_set_header(HeaderMap::Response, deployments::ANSWERED_BY_HEADER, None);
        let Some((name, attempt, duration_ms)) = deployments::parse_answered_by(&value) else { return };
        self.answered_attempt = Some((attempt, duration_ms));
        let state = self.state.clone();
        let found = self.facts.model.as_deref().and_then(|m| state.router.route(m)).and_then(|r| r.virtual_model).and_then(|(_, vm)| {
            vm.deployments.iter().find(|d| d.name == name)
        });
        if let Some(d) = found {
            self.facts.upstream_model = Some(d.model(self.facts.model.as_deref().unwrap_or_default()).to_string());
            self.facts.provider = state.router.provider_at(d.provider).map(|p| p.name.clone());
            self.facts.deployment = Some(d.name.clone());
        }
    }

    /// Whether the answering deployment's provider speaks another API than the client (its
    /// answer was translated, and its attempt logged with the provider's own usage).
    fn translated_answer(&self) -> bool {
        let (Some(api), Some(name)) = (self.facts.api, &self.facts.deployment) else { return false };
        let state = &self.state;
        let found = self.facts.model.as_deref().and_then(|m| state.router.route(m)).and_then(|r| r.virtual_model).and_then(|(_, vm)| {
            vm.deployments.iter().find(|d| &d.name == name)
        });
        found
            .and_then(|d| state.router.provider_at(d.provider))
            .is_some_and(|p| self.endpoint.as_ref().and_then(|e| deployments::target_for(e, p.apis.as_deref())) != Some(api))
    }

    /// A path no client API knows (`endpoints.rs`): the model list, answered here after the
    /// caller is checked like any other, or 404 / 405 in the shape of the path's API.
    fn gateway_endpoint(&mut self, host: &dyn Host, path: &str, method: &str) -> Step {
        let state = self.state.clone();
        let hints = endpoints::Hints {
            anthropic_version: host.request_header("anthropic-version").is_some(),
            x_api_key: host.request_header("x-api-key").is_some(),
            authorization: host.request_header("authorization").is_some(),
            x_goog_api_key: host.request_header("x-goog-api-key").is_some(),
        };
        let query = match endpoints::classify(path, method, &hints) {
            endpoints::Local::Unknown(shape, refused) => {
                self.shape = Some(shape);
                return self.refuse(host, refused);
            }
            endpoints::Local::WrongMethod(query, refused) => {
                self.facts.api = Some(query.shape);
                self.facts.operation = Operation::ListModels;
                return self.refuse(host, refused);
            }
            endpoints::Local::Models(query) => query,
        };
        self.facts.api = Some(query.shape);
        self.facts.operation = Operation::ListModels;
        if let (Some(key), false) = (&query.key, hints.x_goog_api_key) {
            host.try_set_header(HeaderMap::Request, "x-goog-api-key", Some(key));
        }
        match decide::caller(identity::resolve(host, &state.identity), state.require_identity) {
            Ok(identity) => self.facts.identity = identity,
            Err(refused) => return self.refuse(host, refused),
        }
        let allowed = self.facts.identity.as_ref().and_then(|i| i.allowed_models.as_deref());
        let body = match endpoints::answer(&query, &endpoints::visible(&state, allowed)) {
            Ok(body) => body,
            Err(refused) => return self.refuse(host, refused),
        };
        if let Err(e) = reply::send_json(host, 200, &[], &body) {
            host.log(LogLevel::Error, &format!("tollgate-llm: cannot send the model list: {e}"));
        }
        self.facts.phase = Phase::Answered;
        self.facts.response_status = Some(200);
        self.facts.response_bytes = body.len() as u64;
        self.facts.response_complete = true;
        self.finish(host);
        Step::Pause
    }

    /// The guardrail policies that apply to this caller and `model` on `side`.
    fn policies(&self, model: &str, request_side: bool) -> Vec<usize> {
        let Some(g) = self.state.guardrails.as_ref() else { return Vec::new() };
        let who = self.facts.identity.as_ref();
        (0..g.policies.len())
            .filter(|&i| g.policies.get(i).is_some_and(|p| (if request_side { p.request } else { p.response }) && p.applies(who, model)))
            .collect()
    }

    fn note_findings(&mut self, host: &dyn Host, policy: &guardrails::Policy, hits: Vec<guard::action::GuardHit>) {
        let team = self.facts.identity.as_ref().and_then(|i| i.team.as_deref()).map(|t| self.state.team_labels.label(t)).unwrap_or("none");
        for hit in hits {
            self.metrics.add(
                host,
                record::GUARDRAIL_HITS,
                &[("detector", &hit.detector), ("action", policy.action.name()), ("team", team)],
                u64::from(hit.count),
            );
            self.facts.guardrails.push(record::GuardFinding { policy: policy.id.clone(), action: policy.action.name(), hit });
        }
    }

    /// Request guardrails: each applying policy scans the request's texts; `block` refuses
    /// (nothing is forwarded), `redact` rewrites the body (the provider never sees the match),
    /// `log` records. Returns the body to go on with and its size.
    fn guard_request(&mut self, host: &dyn Host, endpoint: &api::Endpoint, mut body: Vec<u8>, body_size: usize) -> Result<(Vec<u8>, usize), Step> {
        // Most configurations have no request policy: then the body is not read again here.
        let any_request_policy = self.state.guardrails.as_ref().is_some_and(|g| g.policies.iter().any(|p| p.request));
        // After moderation the request comes through again, already judged (and redacted).
        let judged = self.facts.moderation.is_some();
        if !any_request_policy || judged || !matches!(endpoint.operation, api::Operation::Generate | api::Operation::Embeddings) {
            return Ok((body, body_size));
        }
        let model = match &endpoint.gemini {
            Some(g) => g.model.clone(),
            None => api::parse_request(endpoint, &body).ok().and_then(|i| i.model.map(|m| m.to_string())).unwrap_or_default(),
        };
        let applying = self.policies(&model, true);
        if applying.is_empty() {
            return Ok((body, body_size));
        }
        let state = self.state.clone();
        let mut changed = false;
        for i in applying {
            let Some(policy) = state.guardrails.as_ref().and_then(|g| g.policies.get(i)) else { continue };
            let outcome = guard::request::apply(endpoint.api, &body, &policy.scanner, policy.action);
            let message = outcome.blocked.then(|| outcome.message());
            self.note_findings(host, policy, outcome.hits);
            if let Some(message) = message {
                let refused = Refusal::new(api::RefusalKind::Guarded(policy.status), "guardrail_blocked", format!("{message} (policy `{}`)", policy.id));
                return Err(self.refuse(host, refused));
            }
            if let Some(redacted) = outcome.body {
                body = redacted;
                changed = true;
            }
        }
        if !changed {
            return Ok((body, body_size));
        }
        if let Err(e) = host.set_body(BodyBuffer::Request, 0, body_size, &body) {
            host.log(LogLevel::Error, &format!("tollgate-llm: cannot write the redacted request: {e}"));
        }
        if self.had_content_length {
            host.try_set_header(HeaderMap::Request, "content-length", Some(&body.len().to_string()));
        }
        self.facts.request_bytes = body.len() as u64;
        let size = body.len();
        Ok((body, size))
    }

    /// Response guardrails, decided at the response headers: a stream gets one guard per
    /// policy; a JSON answer is held whole (headers too, so a block can still answer with
    /// its own status).
    fn guard_response(&mut self, host: &dyn Host, endpoint: &api::Endpoint) -> Step {
        let model = self.facts.model.clone().unwrap_or_default();
        let applying = self.policies(&model, false);
        if applying.is_empty() || self.encoded_response {
            return Step::Continue;
        }
        host.try_set_header(HeaderMap::Response, "content-length", None);
        // A guarded answer is not cached (the cache would keep what the provider said).
        self.cache_fill = None;
        if !self.facts.stream {
            self.response_guard = ResponseGuard::Json(applying);
            return Step::Pause;
        }
        let state = self.state.clone();
        let json_array = endpoint.api == api::ClientApi::Gemini && !tollgate_core::text::is_sse(self.response_content_type.as_deref());
        let guards = applying
            .into_iter()
            .filter_map(|i| {
                let p = state.guardrails.as_ref()?.policies.get(i)?;
                Some((i, guard::response::SseGuard::new(endpoint.api, p.scanner.clone(), p.action, p.scanner.window(), json_array)))
            })
            .collect();
        self.response_guard = ResponseGuard::Stream(guards);
        Step::Continue
    }

    /// A chunk of a guarded stream through every policy's guard; returns what the client gets.
    fn guard_stream_chunk(&mut self, host: &dyn Host, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let state = self.state.clone();
        let ResponseGuard::Stream(guards) = &mut self.response_guard else { return Vec::new() };
        let mut data = chunk.to_vec();
        let mut findings = Vec::new();
        let mut blocked = false;
        for (i, g) in guards.iter_mut() {
            let mut out = g.feed(&data);
            if end_of_stream && !out.blocked {
                let tail = g.finish();
                out.bytes.extend(tail.bytes);
                out.hits.extend(tail.hits);
                out.blocked |= tail.blocked;
            }
            findings.push((*i, out.hits));
            data = out.bytes;
            if out.blocked {
                blocked = true;
                break;
            }
        }
        for (i, hits) in findings {
            if let Some(policy) = state.guardrails.as_ref().and_then(|g| g.policies.get(i)) {
                self.note_findings(host, policy, hits);
            }
        }
        if blocked {
            self.response_guard = ResponseGuard::Blocked;
            self.facts.guard_blocked_stream = true;
        }
        data
    }

    /// A held JSON answer at its end: block (the policy's status, the client API's error
    /// shape), redact, or log.
    fn guard_json_answer(&mut self, host: &dyn Host, body: &[u8], body_size: usize, policies: &[usize]) {
        let state = self.state.clone();
        let Some(api) = self.facts.api else { return };
        let mut current = body.to_vec();
        let mut changed = false;
        for &i in policies {
            let Some(policy) = state.guardrails.as_ref().and_then(|g| g.policies.get(i)) else { continue };
            let outcome = guard::response::apply_json(api, &current, &policy.scanner, policy.action);
            let message = outcome.blocked.then(|| outcome.message());
            self.note_findings(host, policy, outcome.hits);
            if let Some(message) = message {
                let message = format!("{message} (policy `{}`)", policy.id);
                let error = api::error_body(Some(api), api::RefusalKind::Guarded(policy.status), &message);
                if let Err(e) = reply::send_json(host, u32::from(policy.status), &[], &error) {
                    host.log(LogLevel::Error, &format!("tollgate-llm: cannot replace a blocked answer: {e}"));
                }
                self.facts.guard_blocked_answer = Some((policy.status, message));
                return;
            }
            if let Some(redacted) = outcome.body {
                current = redacted;
                changed = true;
            }
        }
        if changed {
            if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, &current) {
                host.log(LogLevel::Error, &format!("tollgate-llm: cannot write the redacted answer: {e}"));
            }
        }
        host.try_set_header(HeaderMap::Response, "content-length", Some(&current.len().to_string()));
    }

    /// External moderation (`guardrails.rs`): sends the request's texts and holds the request
    /// until the answer (`Some(Pause)`), or refuses it at once when the call cannot be made
    /// and the guardrail fails closed. `None`: no moderation applies (or it failed open).
    fn moderate(&mut self, host: &dyn Host, body: &[u8]) -> Option<Step> {
        let state = self.state.clone();
        let guardrails = state.guardrails.as_ref()?;
        let config = guardrails.moderation.as_ref()?;
        let texts = serde_json::from_slice::<serde_json::Value>(body).map(|v| guardrails::texts(&v)).unwrap_or_default();
        if texts.is_empty() {
            return None;
        }
        let call_body = guardrails::request_body(&texts, config.model.as_deref());
        let authorization = guardrails.moderation_token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            (":method", "POST"),
            (":path", config.path.as_str()),
            (":authority", config.authority.as_deref().unwrap_or(&config.cluster)),
            ("content-type", "application/json"),
        ];
        if let Some(auth) = &authorization {
            headers.push(("authorization", auth.as_str()));
        }
        let call = tollgate_core::host::HttpCall { cluster: &config.cluster, headers: &headers, body: &call_body, timeout_ms: config.timeout_ms };
        match host.dispatch_http(&call) {
            Ok(token) => {
                self.moderating = Some((token, host.now_nanos()));
                Some(Step::Pause)
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("tollgate-llm: cannot call the moderation service `{}`: {e}", config.cluster));
                self.moderation_failed(host, 0)
            }
        }
    }

    /// No usable moderation answer: refuse (`fail_closed`) or go on (`fail_open`), recorded.
    fn moderation_failed(&mut self, host: &dyn Host, latency_ms: u64) -> Option<Step> {
        let fail_open = self.state.guardrails.as_ref().and_then(|g| g.moderation.as_ref()).is_some_and(|m| m.on_failure == guardrails::OnFailure::FailOpen);
        self.facts.moderation = Some(record::ModerationFact { decision: "failed", categories: Vec::new(), latency_ms });
        if fail_open {
            return None;
        }
        let refused = Refusal::new(api::RefusalKind::GuardUnavailable, "moderation_unavailable", "the content moderation service cannot be reached");
        Some(self.refuse(host, refused))
    }

    /// The moderation service's answer: refuse flagged content, else let the request go on
    /// (its body is decided again, now moderated).
    fn moderated(&mut self, host: &dyn Host, answer: tollgate_core::stream::HttpAnswer<'_>, started_nanos: u64) {
        let latency_ms = host.now_nanos().saturating_sub(started_nanos) / 1_000_000;
        let verdict = match answer {
            Ok((status, body)) => guardrails::verdict(status, body),
            Err(()) => Err("no answer (timeout or unreachable)".into()),
        };
        let status = self.state.guardrails.as_ref().and_then(|g| g.moderation.as_ref()).map(|m| m.status).unwrap_or(400);
        match verdict {
            Ok(guardrails::Moderated::Flagged(categories)) => {
                let message = format!("the request was flagged by content moderation ({})", categories.join(", "));
                self.facts.moderation = Some(record::ModerationFact { decision: "flagged", categories, latency_ms });
                self.refuse(host, Refusal::new(api::RefusalKind::Guarded(status), "moderation_flagged", message));
                return;
            }
            Ok(guardrails::Moderated::Clean) => {
                self.facts.moderation = Some(record::ModerationFact { decision: "clean", categories: Vec::new(), latency_ms });
            }
            Err(why) => {
                host.log(LogLevel::Warn, &format!("tollgate-llm: moderation failed: {why}"));
                if self.moderation_failed(host, latency_ms).is_some() {
                    return;
                }
            }
        }
        let size = self.facts.request_bytes as usize;
        if self.on_request_body(host, size, true) == Step::Continue {
            if let Err(e) = host.resume(Direction::Request) {
                host.log(LogLevel::Error, &format!("tollgate-llm: cannot resume the request: {e}"));
            }
        }
    }

    /// The response cache (`cache.rs`): answers a hit here (nothing reserved, nothing
    /// forwarded: it costs 0 against every limit) and returns true; on a miss of an eligible
    /// request, arranges for the answer to be stored.
    fn answer_from_cache(&mut self, host: &dyn Host, endpoint: &api::Endpoint, body: &[u8], routed_model: Option<&str>) -> bool {
        let state = self.state.clone();
        let Some(config) = &state.cache else { return false };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
        let (read, write) = cache::usable(config, self.cache_wish, &value);
        if !read && !write {
            return false;
        }
        let scope = match config.scope {
            cache::CacheScope::Key => limits::scope_segment(limits::Scope::Key, self.facts.identity.as_ref()),
            cache::CacheScope::Team => limits::scope_segment(limits::Scope::Team, self.facts.identity.as_ref()),
            cache::CacheScope::Global => String::new(),
        };
        // Gemini names the model in the path, which the body does not hold.
        let model = routed_model.or(endpoint.gemini.as_ref().map(|g| g.model.as_str())).unwrap_or_default();
        let stream = value.get("stream").and_then(serde_json::Value::as_bool).unwrap_or(false) || decide::gemini_stream(endpoint);
        let key = cache::key(&scope, endpoint.api.name(), model, stream, &value);
        let now_ms = host.now_millis();
        if read {
            if let Some(entry) = cache::get(host, config, &key, now_ms) {
                let headers = [("content-type", entry.content_type.as_str()), (cache::CACHE_HEADER, "hit")];
                if let Err(e) = host.send_local_reply(200, &headers, &entry.body) {
                    host.log(LogLevel::Error, &format!("tollgate-llm: cannot answer from the cache: {e}"));
                }
                self.facts.phase = Phase::Answered;
                self.facts.cache = Some("hit");
                self.facts.cache_saved_micro_usd = Some(entry.cost_micro_usd);
                self.facts.response_status = Some(200);
                self.facts.response_bytes = entry.body.len() as u64;
                self.facts.response_complete = true;
                self.finish(host);
                return true;
            }
        }
        self.facts.cache = Some(if read { "miss" } else { "bypass" });
        if write {
            self.cache_fill = Some((key, Vec::new()));
        }
        false
    }

    /// A complete 2xx answer of a cache miss is stored (errors and broken streams never).
    fn fill_cache(&mut self, host: &dyn Host, accounting: Accounting) {
        let Some((key, body)) = self.cache_fill.take() else { return };
        let state = self.state.clone();
        let Some(config) = &state.cache else { return };
        let ok = self.facts.response_complete && self.facts.response_status.is_some_and(|s| (200..300).contains(&s));
        if !ok || accounting.estimated || self.encoded_response {
            return;
        }
        let content_type = self.response_content_type.clone().unwrap_or_else(|| "application/json".into());
        let entry = cache::Entry {
            content_type,
            body,
            cost_micro_usd: accounting.cost_micro_usd.unwrap_or(0),
            tokens: accounting.tokens.total(),
        };
        if let Err(e) = cache::put(host, config, &key, &entry, host.now_millis()) {
            host.log(LogLevel::Warn, &format!("tollgate-llm: cannot store a cache entry: {e}"));
        }
    }

    /// Token counts recorded so far (for tests).
    #[cfg(test)]
    fn tokens(&self) -> Option<crate::usage::Tokens> {
        self.tracker.as_ref().map(|t| t.report(self.facts.request_bytes, self.state.estimate_bytes_per_token).tokens)
    }
}

impl HttpExchange for Exchange {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.metrics.inc(host, record::REQUESTS, &[]);
        self.facts.started_nanos = host.now_nanos();
        self.facts.request_id = host.request_header(audit::REQUEST_ID_HEADER);
        self.facts.trace = Some(trace::join_request(host, None));
        let state = self.state.clone();
        // Only the filter chooses the provider and plans the attempts.
        host.try_set_header(HeaderMap::Request, &state.provider_header, None);
        // A client's plan could only matter on the deployments route, where the gateway
        // writes both headers itself; without virtual models, no host call is spent on them.
        if state.router.has_virtual_models() {
            host.try_set_header(HeaderMap::Request, deployments::HOSTS_HEADER, None);
            host.try_set_header(HeaderMap::Request, deployments::PLAN_HEADER, None);
        }

        let path = host.request_header(":path").unwrap_or_default();
        self.client_path = path.clone();
        if state.cache.is_some() {
            self.cache_wish = cache::ClientWish::read(
                host.request_header("cache-control").as_deref(),
                host.request_header(cache::CACHE_HEADER).as_deref(),
            );
            host.try_set_header(HeaderMap::Request, cache::CACHE_HEADER, None);
        }
        let method = host.request_header(":method").unwrap_or_default();
        let decision = decide::request_path(&path, &method);
        if decision.endpoint.is_none() {
            return self.gateway_endpoint(host, &path, &method);
        }
        if let Some(endpoint) = decision.endpoint {
            self.facts.api = Some(endpoint.api);
            self.facts.operation = endpoint.operation;
            self.facts.stream = decide::gemini_stream(&endpoint);
            self.endpoint = Some(endpoint);
        }
        match decision.verdict {
            Err(refused) => return self.refuse(host, refused),
            // A Gemini key in the query is a client credential too: read it like the header
            // (the caller is resolved from headers), and never forward it.
            Ok(Some(query)) => {
                if host.request_header("x-goog-api-key").is_none() {
                    host.try_set_header(HeaderMap::Request, "x-goog-api-key", Some(&query.key));
                }
                host.try_set_header(HeaderMap::Request, ":path", Some(&query.path));
                self.client_path = query.path.clone();
            }
            Ok(None) => {}
        }
        match decide::caller(identity::resolve(host, &state.identity), state.require_identity) {
            Ok(identity) => self.facts.identity = identity,
            Err(refused) => return self.refuse(host, refused),
        }
        identity::strip_credentials(host, &state.client_credential_headers);
        let content_length = host.request_header("content-length");
        match decide::request_framing(end_of_stream, content_length.as_deref(), state.max_request_bytes) {
            Ok(had_content_length) => self.had_content_length = had_content_length,
            Err(refused) => return self.refuse(host, refused),
        }
        // Hold the headers: the route, credential and length are set once the body is read.
        Step::Pause
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        match self.facts.phase {
            Phase::Refused(_) | Phase::Answered => return Step::Pause,
            Phase::Forwarded => return Step::Continue,
            Phase::Deciding => {}
        }
        if body_size > self.state.max_request_bytes {
            return self.refuse(host, decide::too_large(self.state.max_request_bytes));
        }
        if !end_of_stream {
            return Step::Pause;
        }
        let body = host.body(BodyBuffer::Request, 0, body_size).ok().flatten().unwrap_or_default();
        self.facts.request_bytes = body.len() as u64;
        let Some(endpoint) = self.endpoint.clone() else { return Step::Continue };
        let state = self.state.clone();
        let (body, body_size) = match self.guard_request(host, &endpoint, body, body_size) {
            Ok(guarded) => guarded,
            Err(step) => return step,
        };
        let allowed = self.facts.identity.as_ref().and_then(|i| i.allowed_models.as_deref());
        let decision = decide::request_body(&state, &endpoint, &body, allowed);
        if decision.verdict.is_ok() && endpoint.operation == api::Operation::Generate && self.facts.moderation.is_none() {
            if let Some(step) = self.moderate(host, &body) {
                return step;
            }
        }
        if state.cache.is_some() && decision.verdict.is_ok() && endpoint.operation == api::Operation::Generate {
            let routed = decision.request.as_ref().and_then(|r| r.route.as_ref()).map(|r| r.upstream_model.clone());
            if self.answer_from_cache(host, &endpoint, &body, routed.as_deref()) {
                if let Some(request) = decision.request {
                    self.facts.stream = request.stream;
                    self.facts.model = Some(request.model);
                }
                return Step::Pause;
            }
        }
        self.apply_body(host, body_size, decision)
    }

    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        if self.facts.local() {
            return Step::Continue;
        }
        let now = host.now_nanos();
        self.facts.response_headers_nanos = Some(now);
        let status = host.response_header(":status").and_then(|s| s.trim().parse::<u32>().ok());
        self.facts.response_status = status;
        if self.plan_token.is_some() {
            self.answered_by(host);
        }
        if let (true, Some(status), Some(endpoint)) = (self.facts.forwarded(), status, &self.endpoint) {
            // A count_tokens answer is not usage: nothing to count.
            if status < 400 && endpoint.operation.accounted() {
                let content_type = host.response_header("content-type");
                let framing = Framing::detect(content_type.as_deref(), decide::gemini_stream(endpoint));
                self.response_content_type = content_type.clone();
                if let Some(outcome) = self.facts.cache {
                    host.try_set_header(HeaderMap::Response, cache::CACHE_HEADER, Some(outcome));
                }
                self.encoded_response =
                    !tollgate_core::text::is_identity_encoding(host.response_header("content-encoding").as_deref());
                self.tracker = Some(UsageTracker::new(endpoint.api, framing, self.state.max_event_bytes));
                for (name, value) in &self.ratelimit_headers {
                    host.try_set_header(HeaderMap::Response, name, Some(value));
                }
                if self.state.guardrails.as_ref().is_some_and(|g| g.policies.iter().any(|p| p.response)) {
                    let endpoint = endpoint.clone();
                    if self.guard_response(host, &endpoint) == Step::Pause && !end_of_stream {
                        return Step::Pause;
                    }
                }
            }
        }
        if end_of_stream {
            self.facts.response_complete = true;
            self.finish(host);
        } else if self.facts.stream {
            // A stream may run for minutes: the record shows it started. A plain JSON body
            // follows at once, and the forward-time record covers a client that leaves.
            self.provisional(host);
        }
        Step::Continue
    }

    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.facts.local() {
            return Step::Continue;
        }
        if let ResponseGuard::Json(policies) = &self.response_guard {
            if !end_of_stream {
                return Step::Pause;
            }
            let policies = policies.clone();
            self.response_guard = ResponseGuard::None;
            let body = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
            // Accounted as the provider sent it: its tokens were spent whatever happens next.
            self.facts.response_bytes += body.len() as u64;
            if let Some(tracker) = &mut self.tracker {
                if tracker.feed(&body) && self.facts.first_token_nanos.is_none() {
                    self.facts.first_token_nanos = Some(host.now_nanos());
                }
            }
            self.guard_json_answer(host, &body, body_size, &policies);
            self.facts.response_complete = true;
            self.finish(host);
            return Step::Continue;
        }
        if body_size == 0 && end_of_stream && matches!(self.response_guard, ResponseGuard::Stream(_)) {
            let tail = self.guard_stream_chunk(host, &[], true);
            if !tail.is_empty() {
                if let Err(e) = host.set_body(BodyBuffer::Response, 0, 0, &tail) {
                    host.log(LogLevel::Error, &format!("tollgate-llm: cannot write the guarded stream's end: {e}"));
                }
            }
        }
        if body_size > 0 {
            let chunk = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
            self.facts.response_bytes += chunk.len() as u64;
            let max_entry = self.state.cache.as_ref().map(|c| c.max_entry_bytes).unwrap_or(0);
            if let Some((_, copy)) = &mut self.cache_fill {
                // A copy for the cache, never holding the answer back; too large: not stored.
                if copy.len() + chunk.len() <= max_entry {
                    copy.extend_from_slice(&chunk);
                } else {
                    self.cache_fill = None;
                }
            }
            if let Some(tracker) = &mut self.tracker {
                // A compressed body is passed on but not parsed (counted as an estimate).
                let first = !self.encoded_response && tracker.feed(&chunk);
                if first && self.facts.first_token_nanos.is_none() {
                    self.facts.first_token_nanos = Some(host.now_nanos());
                }
                // Keep the provisional record current: at the first token, then at most
                // every PROVISIONAL_INTERVAL.
                let due = host.now_nanos().saturating_sub(self.last_provisional_nanos) >= PROVISIONAL_INTERVAL_NANOS;
                if !end_of_stream && (first || due) {
                    self.provisional(host);
                }
            }
            if matches!(self.response_guard, ResponseGuard::Stream(_) | ResponseGuard::Blocked) {
                let out = match self.response_guard {
                    ResponseGuard::Blocked => Vec::new(),
                    _ => self.guard_stream_chunk(host, &chunk, end_of_stream),
                };
                if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, &out) {
                    host.log(LogLevel::Error, &format!("tollgate-llm: cannot write the guarded stream: {e}"));
                }
            }
            // No tracker: an error answer, whose start the record quotes.
            if self.tracker.is_none() && self.facts.error_body.len() < MAX_ERROR_BODY {
                let room = MAX_ERROR_BODY - self.facts.error_body.len();
                self.facts.error_body.extend_from_slice(chunk.get(..room).unwrap_or(&chunk));
            }
        }
        if end_of_stream {
            self.facts.response_complete = true;
            self.finish(host);
        }
        Step::Continue
    }

    fn on_http_call_response(&mut self, host: &dyn Host, token: u32, answer: tollgate_core::stream::HttpAnswer<'_>) {
        match self.moderating.take() {
            Some((expected, started)) if expected == token => self.moderated(host, answer, started),
            other => self.moderating = other,
        }
    }

    /// The store's answer to the admission this request waits for (any other token: ignored).
    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, answer: GrpcAnswer<'_>) {
        match self.awaiting.take() {
            Some(awaiting) if awaiting.token == token => self.admitted_by_store(host, *awaiting, answer),
            other => self.awaiting = other,
        }
    }

    /// Envoy's log phase: also runs when the client went away mid-stream. Envoy's access log
    /// has already been written by then (filter state set here is not visible to it), so the
    /// final record is normally written earlier, at the end of the response; this only
    /// finishes requests that never got there (metrics, and Envoy's log with `audit.log`).
    fn on_log(&mut self, host: &dyn Host) {
        self.finish(host);
    }

    /// Normally `on_log` already ran; if Envoy skipped it, record here (`on_log` runs once).
    fn on_done(&mut self, host: &dyn Host) {
        self.on_log(host);
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
