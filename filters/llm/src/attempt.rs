//! The attempt role: the LLM module as an *upstream* HTTP filter on the deployments
//! cluster, run by Envoy once per attempt of a virtual model's request (`deployments.rs`
//! has the design).
//!
//! Request: find this attempt's deployment (the plan header and `x-envoy-attempt-count`),
//! check Envoy picked that deployment's host, and write the request for it — the path and
//! body of its API (translated when it is not the client's), its model, its credential and
//! headers. Response: note a cooldown when the status says so, log the attempt for the
//! gateway role's record, and translate the answer back to the client's API (JSON whole;
//! SSE event by event, never buffered). A request that reached this cluster without a plan
//! is refused (fail closed): only the gateway role may send here.

use crate::api::{self, ClientApi, Endpoint, RefusalKind};
use crate::config::State;
use crate::deployments::{self, attempt_log, Attempt, Deployment, Plan};
use crate::routing::Provider;
use crate::translate::{self, RequestOptions, StreamTranslator};
use crate::usage::{Framing, UsageTracker};
use std::rc::Rc;
use tollgate_core::host::{BodyBuffer, HeaderMap, Host, HostExt, LogLevel};
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::reply;
use tollgate_core::stream::{HttpExchange, Step};

pub const FAILURES: &str = "tollgate.llm.deployment_failures";
pub const COOLDOWNS: &str = "tollgate.llm.deployment_cooldowns";
pub const ATTEMPTS: &str = "tollgate.llm.deployment_attempts";

/// Envoy's retry headers: read by the router before the first attempt, never sent on.
const ENVOY_RETRY_HEADERS: [&str; 4] = [
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-upstream-rq-per-try-timeout-ms",
];

/// Where a provider credential may sit: cleared before each attempt sets its own, since an
/// earlier attempt's credential stays in the header map Envoy reuses for the retry.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-goog-api-key"];

/// What the response needs done.
enum Answer {
    /// Passed as it is (same API, or not yet known).
    AsIs,
    /// Translated event by event.
    Stream(Box<StreamTranslator>),
    /// Held whole (up to `max_request_bytes`), then translated: a JSON answer or an error.
    Whole { error_status: Option<u16> },
}

pub struct AttemptExchange {
    state: Rc<State>,
    metrics: Rc<Metrics>,
    started_nanos: u64,
    plan: Option<Plan>,
    /// (virtual model, deployment) indices.
    deployment: Option<(usize, usize)>,
    client: Option<Endpoint>,
    target: Option<ClientApi>,
    answer: Answer,
    /// A translated 2xx answer's usage, read in the provider's own API before translation.
    provider_usage: Option<UsageTracker>,
    /// The attempt was logged (at its response headers, or at its end without them).
    logged: bool,
    /// Which attempt this is (1: the first).
    attempt: usize,
    /// The request goes as the client sent it (same API and model): the body is neither held
    /// nor rewritten.
    passthrough: bool,
    replied: bool,
}

impl AttemptExchange {
    pub fn new(state: Rc<State>, metrics: Rc<Metrics>) -> Self {
        AttemptExchange {
            state,
            metrics,
            started_nanos: 0,
            plan: None,
            deployment: None,
            client: None,
            target: None,
            answer: Answer::AsIs,
            provider_usage: None,
            logged: false,
            attempt: 1,
            passthrough: false,
            replied: false,
        }
    }

    fn deployment(&self) -> Option<&Deployment> {
        let (vm, d) = self.deployment?;
        self.state.router.virtual_model(vm)?.deployments.get(d)
    }

    /// The model this attempt's deployment is sent.
    fn upstream_model(&self) -> String {
        match (self.deployment(), &self.plan) {
            (Some(d), Some(plan)) => d.model(&plan.model).to_string(),
            _ => String::new(),
        }
    }

    fn provider(&self) -> Option<&Provider> {
        self.state.router.provider_at(self.deployment()?.provider)
    }

    /// Answers this attempt locally, in the client API's shape (Envoy does not retry it).
    fn refuse(&mut self, host: &dyn Host, kind: RefusalKind, message: &str) -> Step {
        host.log(LogLevel::Warn, &format!("tollgate-llm attempt: {message}"));
        let body = api::error_body(self.client.as_ref().map(|e| e.api), kind, message);
        // The gateway's record names the deployment and lists the refused attempt.
        let name = self.deployment().map(|d| d.name.clone());
        let status = u16::try_from(kind.status()).ok();
        self.replied = true;
        self.log_attempt(host, status, None);
        let answered = name.as_deref().map(|n| deployments::answered_by(n, self.attempt, self.elapsed_ms(host)));
        let headers: Vec<(&str, &str)> = answered.as_deref().map(|v| (deployments::ANSWERED_BY_HEADER, v)).into_iter().collect();
        if let Err(e) = reply::send_json(host, kind.status(), &headers, &body) {
            host.log(LogLevel::Error, &format!("tollgate-llm attempt: cannot send local reply: {e}"));
        }
        Step::Pause
    }

    fn elapsed_ms(&self, host: &dyn Host) -> u64 {
        host.now_nanos().saturating_sub(self.started_nanos) / 1_000_000
    }

    fn log_attempt(&mut self, host: &dyn Host, status: Option<u16>, cooldown_ms: Option<u64>) {
        if self.logged {
            return;
        }
        self.logged = true;
        let (Some(plan), Some(d)) = (&self.plan, self.deployment()) else { return };
        let error = match status {
            None => Some("no_response"),
            Some(_) if self.replied => Some("refused_by_gateway"),
            Some(s) if s >= 400 => Some("status"),
            Some(_) => None,
        }
        .map(str::to_string);
        let failed = error.is_some();
        let translated = self.target.is_some() && self.target != self.client.as_ref().map(|c| c.api);
        let attempt = Attempt { deployment: d.name.clone(), status, duration_ms: self.elapsed_ms(host), error, cooldown_ms, tokens: None };
        let label = d.name.clone();
        // A first attempt that answered, untranslated, is all the answered-by header says:
        // the gateway's record takes it from there, without a shared-data round trip.
        if failed || self.attempt > 1 || translated {
            attempt_log::push(host, plan.token, attempt);
        }
        let outcome = match status {
            None => "no_response".to_string(),
            Some(s) => s.to_string(),
        };
        self.metrics.inc(host, ATTEMPTS, &[("deployment", &label), ("status", &outcome)]);
        if failed {
            self.metrics.inc(host, FAILURES, &[("deployment", &label)]);
        }
        if cooldown_ms.is_some() {
            self.metrics.inc(host, COOLDOWNS, &[("deployment", &label)]);
        }
    }

    /// Starts a cooldown of `ms` for this attempt's deployment, shared by the workers.
    fn cool_down(&self, host: &dyn Host, ms: u64) {
        let Some(d) = self.deployment() else { return };
        let until = host.now_millis().saturating_add(ms);
        if let Err(e) = deployments::cool_down(host, &d.name, until) {
            host.log(LogLevel::Warn, &format!("tollgate-llm attempt: cannot record the cooldown of `{}`: {e}", d.name));
        }
    }

    /// Feeds the provider's own bytes (before translation) to its usage parser; at the end,
    /// hands the reported usage to the gateway's record through the attempt log. A chunk of a
    /// held JSON answer is read once, when it is whole.
    fn read_provider_usage(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) {
        let holding = matches!(self.answer, Answer::Whole { .. });
        if holding && !end_of_stream {
            return;
        }
        let Some(tracker) = &mut self.provider_usage else { return };
        if body_size > 0 {
            let chunk = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
            tracker.feed(&chunk);
        }
        if end_of_stream {
            let report = tracker.report(0, self.state.estimate_bytes_per_token);
            if let (false, Some(plan)) = (report.estimated, &self.plan) {
                attempt_log::set_tokens(host, plan.token, report.tokens);
            }
        }
    }

    /// The path of the target API for this deployment.
    fn target_path(&self, client: &Endpoint, target: ClientApi, stream: bool, model: &str) -> Option<String> {
        match (target, &client.gemini) {
            (ClientApi::Gemini, Some(g)) => Some(g.to_path(model)),
            (ClientApi::Gemini, None) => {
                let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
                Some(format!("/v1beta/models/{}:{action}", api::encode_segment(model)))
            }
            (ClientApi::OpenaiChat, _) if target != client.api => Some("/v1/chat/completions".into()),
            (ClientApi::AnthropicMessages, _) if target != client.api => Some("/v1/messages".into()),
            _ => None,
        }
    }

    /// The request body for the target: the client's own with the model (and OpenAI's
    /// `include_usage`) rewritten, or its translation.
    fn rewrite_body(&self, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let (Some(client), Some(target), Some(d), Some(plan)) = (&self.client, self.target, self.deployment(), &self.plan) else {
            return Ok(None);
        };
        if target == client.api {
            if client.api == ClientApi::Gemini {
                return Ok(None);
            }
            let info = api::parse_request(client, body).map_err(|e| e.0)?;
            let inject = client.api == ClientApi::OpenaiChat && info.stream && !info.include_usage;
            return api::rewrite_body(body, &info, Some(d.model(&plan.model)), inject).map_err(|e| format!("request body: {e}"));
        }
        let options = RequestOptions {
            default_max_tokens: u32::try_from(self.state.default_max_output_tokens).unwrap_or(u32::MAX),
            include_usage: true,
        };
        translate::request(client.api, target, body, plan.stream, d.model(&plan.model), &options)
            .map(|t| Some(t.body))
            .map_err(|u| format!("`{}`: {}", u.field, u.message))
    }
}

impl HttpExchange for AttemptExchange {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.started_nanos = host.now_nanos();
        let Some(plan) = host.request_header(deployments::PLAN_HEADER).and_then(|v| deployments::parse_plan(&v)) else {
            self.client = host.request_header(":path").and_then(|p| api::detect(&p));
            return self.refuse(host, RefusalKind::BadGateway, "a request reached the deployments cluster without a Tollgate plan");
        };
        // The client's own path: `:path` may hold an earlier attempt's rewrite.
        self.client = api::detect(&plan.client_path);
        // Which attempt this is: Envoy's count (the virtual host's
        // `include_request_attempt_count: true`), else the first planned deployment on the
        // host Envoy picked.
        let upstream = host.property_string(&["upstream", "address"]);
        let counted = host.request_header("x-envoy-attempt-count").and_then(|v| v.trim().parse::<usize>().ok());
        let attempt = counted.unwrap_or_else(|| {
            let on_host = |&d: &usize| {
                self.state
                    .router
                    .virtual_model(plan.virtual_model)
                    .and_then(|vm| vm.deployments.get(d))
                    .and_then(|d| self.state.router.provider_at(d.provider))
                    .is_some_and(|p| p.address.is_some() && p.address == upstream)
            };
            plan.order.iter().position(on_host).map_or(1, |i| i + 1)
        });
        let index = plan.order.get(attempt.saturating_sub(1)).copied();
        self.attempt = attempt;
        let (virtual_model, last) = (plan.virtual_model, attempt >= plan.order.len());
        let client_path = plan.client_path.clone();
        self.plan = Some(plan);
        let Some(index) = index else {
            return self.refuse(host, RefusalKind::BadGateway, &format!("attempt {attempt} is beyond the plan"));
        };
        self.deployment = Some((virtual_model, index));
        let (Some(d), Some(provider), Some(client)) = (self.deployment().cloned(), self.provider().cloned(), self.client.clone()) else {
            return self.refuse(host, RefusalKind::BadGateway, "the plan names no deployment of this gateway");
        };
        // Envoy's override_host policy took the plan's host; if it fell back to another
        // host (the plan's is gone from the cluster), this attempt would reach the wrong
        // provider with this deployment's credential.
        if let Some(upstream) = upstream {
            if provider.address.as_deref() != Some(upstream.as_str()) {
                return self.refuse(host, RefusalKind::BadGateway, &format!("Envoy chose host {upstream}, not deployment `{}`", d.name));
            }
        }
        let Some(target) = deployments::target_for(&client, provider.apis.as_deref()) else {
            return self.refuse(host, RefusalKind::BadGateway, &format!("deployment `{}` cannot serve this API", d.name));
        };
        self.target = Some(target);
        for name in ENVOY_RETRY_HEADERS {
            host.try_set_header(HeaderMap::Request, name, None);
        }
        if last {
            // No retry follows: the load balancer and later attempts no longer need them.
            host.try_set_header(HeaderMap::Request, deployments::HOSTS_HEADER, None);
            host.try_set_header(HeaderMap::Request, deployments::PLAN_HEADER, None);
        }
        let stream = self.plan.as_ref().is_some_and(|p| p.stream);
        let requested = self.plan.as_ref().map(|p| p.model.clone()).unwrap_or_default();
        let path = self.target_path(&client, target, stream, d.model(&requested)).unwrap_or(client_path);
        host.try_set_header(HeaderMap::Request, ":path", Some(&path));
        // Same API and model (and no `include_usage` to add): the body goes as it came.
        let same_model = d.upstream_model.as_deref().is_none_or(|m| m == requested);
        self.passthrough = target == client.api
            && (client.api == ClientApi::Gemini || (same_model && !(client.api == ClientApi::OpenaiChat && stream)));
        if !self.passthrough {
            // The body is rewritten: its length is set again when it is known.
            host.try_set_header(HeaderMap::Request, "content-length", None);
        }
        if attempt > 1 {
            // An earlier attempt's credential and provider headers are in the shared map.
            for name in CREDENTIAL_HEADERS {
                host.try_set_header(HeaderMap::Request, name, None);
            }
            for other in self.state.router.providers() {
                for (name, _) in &other.headers {
                    host.try_set_header(HeaderMap::Request, name, None);
                }
            }
        }
        if let Some((name, value)) = provider.credential_header(target) {
            host.try_set_header(HeaderMap::Request, name, Some(&value));
        }
        // A client SDK's API-specific headers mean nothing to a provider of another API.
        if target != ClientApi::AnthropicMessages && client.api == ClientApi::AnthropicMessages {
            for name in ["anthropic-version", "anthropic-beta"] {
                host.try_set_header(HeaderMap::Request, name, None);
            }
        }
        let openai = |api: ClientApi| matches!(api, ClientApi::OpenaiChat | ClientApi::OpenaiResponses | ClientApi::OpenaiEmbeddings);
        if !openai(target) && openai(client.api) {
            for name in ["openai-organization", "openai-project"] {
                host.try_set_header(HeaderMap::Request, name, None);
            }
        }
        if target == ClientApi::AnthropicMessages && host.request_header("anthropic-version").is_none() {
            host.try_set_header(HeaderMap::Request, "anthropic-version", Some("2023-06-01"));
        }
        if self.state.upstream_identity_encoding {
            host.try_set_header(HeaderMap::Request, "accept-encoding", Some("identity"));
        }
        for (name, value) in &provider.headers {
            host.try_set_header(HeaderMap::Request, name, Some(value));
        }
        // The headers wait for the body (`allow_on_headers_stop_iteration: true`): a body that
        // cannot be translated is refused before anything reaches the provider, which would
        // otherwise get the headers (and credential) of a request then reset.
        if end_of_stream || self.passthrough {
            Step::Continue
        } else {
            Step::Pause
        }
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.replied {
            return Step::Pause;
        }
        if self.passthrough {
            return Step::Continue;
        }
        if !end_of_stream {
            return Step::Pause;
        }
        let body = host.body(BodyBuffer::Request, 0, body_size).ok().flatten().unwrap_or_default();
        match self.rewrite_body(&body) {
            Ok(Some(new_body)) => {
                if let Err(e) = host.set_body(BodyBuffer::Request, 0, body_size, &new_body) {
                    host.log(LogLevel::Error, &format!("tollgate-llm attempt: cannot rewrite the request body: {e}"));
                }
                Step::Continue
            }
            Ok(None) => Step::Continue,
            Err(message) => self.refuse(host, RefusalKind::BadRequest, &message),
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Step {
        if self.replied {
            return Step::Continue;
        }
        let status = host.response_header(":status").and_then(|s| s.trim().parse::<u16>().ok());
        let fallback = &self.state.fallback;
        let cooldown = status.and_then(|s| {
            let headers = |name: &str| host.response_header(name);
            deployments::cooldown_for(s, &fallback.retry_on_status, &headers, fallback.cooldown_secs, fallback.max_cooldown_secs)
        });
        if let Some(ms) = cooldown {
            self.cool_down(host, ms);
        }
        self.log_attempt(host, status, cooldown);
        if let Some(d) = self.deployment() {
            let value = deployments::answered_by(&d.name, self.attempt, self.elapsed_ms(host));
            host.try_set_header(HeaderMap::Response, deployments::ANSWERED_BY_HEADER, Some(&value));
        }
        let (Some(client), Some(target)) = (&self.client, self.target) else { return Step::Continue };
        if target == client.api {
            return Step::Continue;
        }
        let stream = self.plan.as_ref().is_some_and(|p| p.stream);
        let ok = status.is_some_and(|s| s < 400);
        if ok {
            let framing = Framing::detect(host.response_header("content-type").as_deref(), false);
            self.provider_usage = Some(UsageTracker::new(target, framing, self.state.max_event_bytes));
        }
        host.try_set_header(HeaderMap::Response, "content-length", None);
        self.answer = if ok && stream {
            let gemini_sse = client.gemini.as_ref().is_none_or(|g| g.query.iter().any(|q| q == "alt=sse"));
            let content_type = if client.api == ClientApi::Gemini && !gemini_sse { "application/json" } else { "text/event-stream" };
            host.try_set_header(HeaderMap::Response, "content-type", Some(content_type));
            let model = self.upstream_model();
            Answer::Stream(Box::new(StreamTranslator::new(target, client.api, &model, gemini_sse)))
        } else {
            host.try_set_header(HeaderMap::Response, "content-type", Some("application/json"));
            Answer::Whole { error_status: status.filter(|_| !ok) }
        };
        Step::Continue
    }

    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        let (Some(client), Some(target)) = (self.client.clone(), self.target) else { return Step::Continue };
        if self.provider_usage.is_some() {
            self.read_provider_usage(host, body_size, end_of_stream);
        }
        let model = self.upstream_model();
        let max_whole = self.state.max_request_bytes.saturating_mul(8);
        match &mut self.answer {
            Answer::AsIs => Step::Continue,
            Answer::Stream(translator) => {
                let chunk = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
                let mut out = translator.feed(&chunk);
                if end_of_stream {
                    out.extend(translator.finish());
                }
                if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, &out) {
                    host.log(LogLevel::Error, &format!("tollgate-llm attempt: cannot write the translated stream: {e}"));
                }
                Step::Continue
            }
            Answer::Whole { error_status } => {
                if !end_of_stream {
                    if body_size > max_whole {
                        // Too large to hold: passed on untranslated rather than cut.
                        self.answer = Answer::AsIs;
                        return Step::Continue;
                    }
                    return Step::Pause;
                }
                let body = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
                let out = match error_status {
                    Some(status) => translate::error_body(target, client.api, *status, &body),
                    None => match translate::response_json(target, client.api, &body, &model) {
                        Ok(out) => out,
                        Err(u) => {
                            let message = format!("the provider's answer cannot be translated: `{}`: {}", u.field, u.message);
                            host.log(LogLevel::Warn, &format!("tollgate-llm attempt: {message}"));
                            api::error_body(Some(client.api), RefusalKind::BadGateway, &message)
                        }
                    },
                };
                if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, &out) {
                    host.log(LogLevel::Error, &format!("tollgate-llm attempt: cannot write the translated answer: {e}"));
                }
                Step::Continue
            }
        }
    }

    /// An attempt that ends without response headers failed to connect, was reset or timed
    /// out (Envoy's per-try timeout): its deployment cools down for `cooldown_secs`.
    fn on_log(&mut self, host: &dyn Host) {
        if self.logged || self.replied || self.deployment.is_none() {
            return;
        }
        let ms = self.state.fallback.cooldown_secs.saturating_mul(1000);
        self.cool_down(host, ms);
        self.log_attempt(host, None, Some(ms));
    }

    fn on_done(&mut self, host: &dyn Host) {
        self.on_log(host);
    }
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;
