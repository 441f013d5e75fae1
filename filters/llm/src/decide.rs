//! The LLM filter's decisions, pure: `exchange.rs` reads the facts from the host (path,
//! method, the caller, the body), these functions decide without touching the host, and the
//! exchange applies the decision (local reply, header and body writes, reservations, records).
//!
//! Request headers: [`request_path`] (404 unknown path, 405 method), then, once the caller is
//! resolved, [`caller`] (401) and [`request_framing`] (400 no body, 413 by `content-length`).
//! Request body: [`request_body`] (413, 400, 404, 403; routing, the admission estimate to
//! reserve, the body and header rewrites). A limit's 429 needs the shared counters, so it is
//! decided by `limits::admit` while the decision is applied ([`rate_limited`] words it).

use crate::api::{self, ClientApi, Endpoint, GeminiAction, Operation, RefusalKind};
use crate::config::State;
use crate::deployments::{target_for, VirtualModel};
use crate::limits::{self, Exceeded, Estimate};
use crate::record::Refusal;
use crate::routing::{model_allowed, Provider};
use tollgate_core::glob::Glob;
use tollgate_core::identity::{Identity, IdentityError};

/// Requested model names are cut to this length in records and messages.
pub const MAX_MODEL_CHARS: usize = 256;

/// What the request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct PathDecision {
    /// The client API, when the path is one.
    pub endpoint: Option<Endpoint>,
    /// A Gemini key given in the query (`?key=`), to be read like the header (and never
    /// forwarded in the path); `Err`: refused.
    pub verdict: Result<Option<QueryKey>, Refusal>,
}

/// The rewrite of a Gemini request that carried its key in the query.
#[derive(Debug, PartialEq, Eq)]
pub struct QueryKey {
    /// Set `x-goog-api-key` to this (unless the request has that header).
    pub key: String,
    /// The path without the key.
    pub path: String,
}

/// The path and method of a request.
pub fn request_path(path: &str, method: &str) -> PathDecision {
    let Some(endpoint) = api::detect(path) else {
        let shown: String = path.split('?').next().unwrap_or("").chars().take(200).collect();
        let refused = Refusal::new(RefusalKind::NotFound, "unknown_path", format!("no LLM API at {shown}"));
        return PathDecision { endpoint: None, verdict: Err(refused) };
    };
    if method != "POST" {
        let refused = Refusal::new(RefusalKind::MethodNotAllowed, "method_not_allowed", format!("method {method} not allowed"));
        return PathDecision { endpoint: Some(endpoint), verdict: Err(refused) };
    }
    let query_key = endpoint
        .gemini
        .as_ref()
        .and_then(|g| g.key.as_ref().map(|key| QueryKey { key: key.clone(), path: g.to_path(&g.model) }));
    PathDecision { endpoint: Some(endpoint), verdict: Ok(query_key) }
}

/// Whether the endpoint is a Gemini stream (`streamGenerateContent`).
pub fn gemini_stream(endpoint: &Endpoint) -> bool {
    endpoint.gemini.as_ref().is_some_and(|g| g.action == GeminiAction::Stream)
}

/// The caller as resolved from its credentials.
pub fn caller(resolved: Result<Option<Identity>, IdentityError>, require_identity: bool) -> Result<Option<Identity>, Refusal> {
    match resolved {
        Ok(None) if require_identity => Err(Refusal::new(RefusalKind::Unauthenticated, "missing_key", "no API key presented")),
        Ok(identity) => Ok(identity),
        Err(IdentityError::UnknownApiKey) => Err(Refusal::new(RefusalKind::Unauthenticated, "unknown_key", "invalid API key")),
        Err(IdentityError::Gateway(why)) => Err(Refusal::new(RefusalKind::Unauthenticated, "invalid_gateway_credential", why.reason())),
    }
}

/// A request must have a body, within the size limit. `Ok`: whether it declared its length.
pub fn request_framing(end_of_stream: bool, content_length: Option<&str>, max_request_bytes: usize) -> Result<bool, Refusal> {
    if end_of_stream {
        return Err(Refusal::new(RefusalKind::BadRequest, "invalid_request", "request body required"));
    }
    match content_length {
        Some(length) if length.trim().parse::<u64>().is_ok_and(|n| n > max_request_bytes as u64) => {
            Err(too_large(max_request_bytes))
        }
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

pub fn too_large(max_request_bytes: usize) -> Refusal {
    Refusal::new(RefusalKind::TooLarge, "request_too_large", format!("request body exceeds {max_request_bytes} bytes"))
}

/// A limit's refusal: 429 (retry after the reset), or 400 `exceeds_limit` for a request
/// that can never fit (it alone asks more than the cap).
pub fn rate_limited(denial: Exceeded) -> Refusal {
    let (refusal, error_type) = if denial.never_fits() {
        (RefusalKind::ExceedsLimit, "exceeds_limit")
    } else {
        (RefusalKind::RateLimited(denial.dimension.openai_type()), "rate_limited")
    };
    Refusal {
        refusal,
        error_type,
        message: denial.message(),
        limit: Some(Box::new(denial)),
    }
}

/// What a readable request body says (recorded whatever the verdict).
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'s> {
    pub model: String,
    pub stream: bool,
    pub max_output_tokens: Option<u64>,
    /// Set once the model matched a route the client API can use.
    pub route: Option<Route<'s>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Route<'s> {
    pub provider: &'s Provider,
    pub upstream_model: String,
}

/// What to do with the request upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct Forward<'s> {
    /// The estimate to reserve on every matching limit first (`None`: no limit applies).
    pub reserve: Option<Estimate>,
    /// The rewritten body (`None`: unchanged); `Err`: it cannot be rewritten, refused (400)
    /// after admission.
    pub body: Result<Option<Vec<u8>>, Refusal>,
    /// The rewrite adds `stream_options.include_usage`.
    pub usage_injected: bool,
    /// A new `:path` (a Gemini alias).
    pub path: Option<String>,
    pub provider: &'s Provider,
    /// The provider's credential header.
    pub credential: Option<(&'static str, String)>,
    /// A virtual model (its index and deployments): the attempts are planned and sent by
    /// `deployments.rs`; body, path and credential are then each attempt's business.
    pub virtual_model: Option<(usize, &'s VirtualModel)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BodyDecision<'s> {
    /// `None`: the body could not be read.
    pub request: Option<Request<'s>>,
    pub verdict: Result<Forward<'s>, Refusal>,
}

/// The whole request body: parse, route, check the caller's model list, plan the rewrites.
pub fn request_body<'s>(state: &'s State, endpoint: &Endpoint, body: &[u8], allowed: Option<&[Glob]>) -> BodyDecision<'s> {
    let info = match api::parse_request(endpoint, body) {
        Ok(info) => info,
        Err(e) => {
            return BodyDecision { request: None, verdict: Err(Refusal::new(RefusalKind::BadRequest, "invalid_request", e.0)) }
        }
    };
    // Kept for records and messages; a model name longer than this is not a real one.
    let model: String = info.model.as_deref().unwrap_or_default().chars().take(MAX_MODEL_CHARS).collect();
    let mut request = Request { model, stream: info.stream, max_output_tokens: info.max_output_tokens, route: None };
    let refuse = |request, refusal, error_type, message: String| BodyDecision {
        request: Some(request),
        verdict: Err(Refusal::new(refusal, error_type, message)),
    };
    let model = request.model.as_str();
    let Some(route) = state.router.route(model) else {
        let message = format!("model `{model}` does not exist");
        return refuse(request, RefusalKind::NotFound, "unknown_model", message);
    };
    let servable = match route.virtual_model {
        // A deployment serves any client API its provider speaks or can be translated to.
        Some((_, vm)) => vm.deployments.iter().any(|d| {
            state.router.provider_at(d.provider).is_some_and(|p| target_for(endpoint, p.apis.as_deref()).is_some())
        }),
        None => route.provider.speaks(endpoint.api),
    };
    if !servable {
        let message = format!("model `{model}` is not available through the {}", endpoint.api.title());
        return refuse(request, RefusalKind::NotFound, "unsupported_api", message);
    }
    let (provider, rewritten, virtual_model) = (route.provider, route.rewritten, route.virtual_model);
    // Admission prices a virtual model at its dearest deployment (what it may cost).
    let upstream_model = match virtual_model {
        Some((_, vm)) => dearest(state, vm, model).unwrap_or(route.upstream_model).to_string(),
        None => route.upstream_model.to_string(),
    };
    if !model_allowed(allowed, model) {
        let message = format!("this key may not use model `{model}`");
        request.route = Some(Route { provider, upstream_model });
        return refuse(request, RefusalKind::Forbidden, "model_not_allowed", message);
    }
    // count_tokens is never charged, so a missing price does not matter to it.
    if state.deny_unpriced && endpoint.operation.charged() && unpriced_budgeted(state, model, &upstream_model) {
        let message = format!("model `{model}` has no price and a cost budget applies to it: refused (`unpriced: deny`)");
        request.route = Some(Route { provider, upstream_model });
        return refuse(request, RefusalKind::NotPriced, "model_not_priced", message);
    }
    // Embeddings generate nothing (no output reserved); count_tokens is not reserved at all.
    let reserve = match endpoint.operation {
        Operation::Embeddings => admission(state, model, &upstream_model, body.len() as u64, Some(0)),
        operation if operation.charged() => admission(state, model, &upstream_model, body.len() as u64, info.max_output_tokens),
        _ => None,
    };
    if virtual_model.is_some() {
        let forward = Forward {
            reserve,
            body: Ok(None),
            usage_injected: false,
            path: None,
            provider,
            credential: None,
            virtual_model,
        };
        request.route = Some(Route { provider, upstream_model });
        return BodyDecision { request: Some(request), verdict: Ok(forward) };
    }
    let inject = endpoint.api == ClientApi::OpenaiChat && info.stream && state.inject_stream_usage && !info.include_usage;
    let body_model = (rewritten && endpoint.api != ClientApi::Gemini).then_some(upstream_model.as_str());
    let body = match &endpoint.gemini {
        // Its requests name the model too: they must name the path's.
        Some(g) if rewritten && g.action == GeminiAction::BatchEmbedContents => {
            crate::endpoints::gemini_batch_body(body, &upstream_model)
        }
        _ => api::rewrite_body(body, &info, body_model, inject),
    }
    .map_err(|e| Refusal::new(RefusalKind::BadRequest, "invalid_request", format!("request body: {e}")));
    let path = match (&endpoint.gemini, rewritten) {
        (Some(g), true) => Some(g.to_path(&upstream_model)),
        _ => None,
    };
    let forward = Forward {
        reserve,
        body,
        usage_injected: inject,
        path,
        provider,
        credential: provider.credential_header(endpoint.api),
        virtual_model: None,
    };
    request.route = Some(Route { provider, upstream_model });
    BodyDecision { request: Some(request), verdict: Ok(forward) }
}

/// The upstream model of a virtual model's dearest priced deployment (by output price,
/// then input price); `None` when none is priced.
fn dearest<'a>(state: &State, vm: &'a VirtualModel, requested: &'a str) -> Option<&'a str> {
    vm.deployments
        .iter()
        .filter_map(|d| state.prices.lookup(d.model(requested)).map(|p| (d, (p.output.max(p.reasoning), p.input))))
        .max_by_key(|(_, key)| *key)
        .map(|(d, _)| d.model(requested))
}

/// Whether a cost budget applies to the model while no price matches it.
pub fn unpriced_budgeted(state: &State, model: &str, upstream_model: &str) -> bool {
    state.prices.lookup(upstream_model).is_none()
        && state.limits.iter().any(|l| l.cost_micro_usd.is_some() && l.applies_to(model, upstream_model))
}

/// The estimate admission reserves, when any limit applies to the model (its cost only when
/// a money budget applies).
pub fn admission(state: &State, model: &str, upstream_model: &str, request_bytes: u64, max_output_tokens: Option<u64>) -> Option<Estimate> {
    let applies = |l: &&limits::Limit| l.applies_to(model, upstream_model);
    if !state.limits.iter().any(|l| applies(&l)) {
        return None;
    }
    let budget = state.limits.iter().filter(applies).any(|l| l.cost_micro_usd.is_some());
    Some(limits::admission_estimate(
        request_bytes,
        state.estimate_bytes_per_token,
        max_output_tokens.unwrap_or(state.default_max_output_tokens),
        state.prices.lookup(upstream_model).filter(|_| budget),
    ))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
