//! The exchange's glue for credentials (a child of `exchange`, so it reaches the stream's
//! state without widening it): the OAuth protected-resource metadata answer and the refusal
//! of tokens `jwt_authn` could not verify (`oauth.rs`), and the upstream credential obtained
//! by token exchange (`tokenexchange.rs`): once a request is judged and allowed, it is held,
//! the token endpoint is called, and the request resumes with the exchanged token or is
//! refused (fail closed, audited).

use super::{Exchange, Phase};
use crate::config::Config;
use crate::message::codes;
use crate::oauth::OAuth;
use crate::replies::{self, Reply};
use crate::tokenexchange::{self, Failure, Pending, TokenExchange};
use serde_json::value::RawValue;
use tollgate_core::config::ConfigError;
use tollgate_core::host::{Direction, HeaderMap, Host, HostExt, LogLevel};
use tollgate_core::identity::Source;
use tollgate_core::observe::audit::Decision;
use tollgate_core::reply::rpc_error_body;
use tollgate_core::stream::{HttpAnswer, Step};

/// Compiles `oauth` and `token_exchange`; `resource_metadata` defaults to the metadata URL.
pub(super) fn compile(config: &mut Config) -> Result<(Option<OAuth>, Option<TokenExchange>), ConfigError> {
    let oauth = match &config.oauth {
        Some(c) => Some(OAuth::compile(c, "oauth")?),
        None => None,
    };
    if let (None, Some(o)) = (&config.resource_metadata, &oauth) {
        config.resource_metadata = Some(o.metadata_url.clone());
    }
    let token_exchange = match config.token_exchange.take() {
        Some(c) => Some(TokenExchange::compile(c, "token_exchange")?),
        None => None,
    };
    Ok((oauth, token_exchange))
}

/// What a stream keeps for its upstream credential.
#[derive(Debug, Default)]
pub(super) struct Upstream {
    /// The caller's bearer token, kept only for servers whose credential is exchanged.
    subject_token: Option<String>,
    /// The token request in flight.
    pending: Option<Pending>,
}

impl Exchange {
    /// A request for the protected-resource metadata document is answered here (no audit
    /// record: it is not an MCP message; counted in `tollgate.mcp.oauth_metadata`).
    pub(super) fn serve_metadata(&mut self, host: &dyn Host) -> Option<Step> {
        let shared = self.shared.clone();
        let oauth = shared.oauth.as_ref()?;
        let path = host.request_header(":path")?;
        if !oauth.serves(&path) {
            return None;
        }
        let reply = oauth.answer(&self.http_method);
        self.metrics.inc(host, "tollgate.mcp.oauth_metadata", &[("status", if reply.status == 200 { "200" } else { "405" })]);
        self.emitted = true;
        Some(self.reply(host, &reply))
    }

    /// A bearer token `jwt_authn` could not verify (let through by `allow_missing_or_failed`
    /// for this answer): 401 `invalid_token` with the metadata URL.
    pub(super) fn refuse_failed_token(&mut self, host: &dyn Host) -> Option<Step> {
        let shared = self.shared.clone();
        let why = shared.oauth.as_ref()?.jwt_failure(host)?;
        let reply = replies::unauthorized(true, self.config().resource_metadata.as_deref());
        let reason = format!("bearer token did not verify: {}", crate::message::truncate(&why, 256));
        Some(self.refuse_request(host, reply, Decision::Deny, &reason))
    }

    /// Keeps the caller's bearer token when this server's credential is exchanged (before
    /// the filter strips it from the request).
    pub(super) fn keep_subject_token(&mut self, host: &dyn Host) {
        if self.shared.token_exchange.as_ref().is_some_and(|t| t.applies(&self.server)) {
            self.upstream.subject_token = tokenexchange::bearer(host.request_header("authorization").as_deref());
        }
    }

    /// A judged, allowed request goes on, with its exchanged credential where one is needed:
    /// from the cache, else after the token endpoint answers (held meanwhile).
    pub(super) fn forward(&mut self, host: &dyn Host) -> Step {
        let shared = self.shared.clone();
        let Some(exchange) = shared.token_exchange.as_ref().filter(|t| t.applies(&self.server)) else {
            return Step::Continue;
        };
        let from_jwt = self.identity.as_ref().is_some_and(|i| i.source == Source::Jwt);
        let subject = match (&self.upstream.subject_token, from_jwt) {
            (Some(token), true) => token.clone(),
            _ => {
                // Only a verified OAuth token can be exchanged: no credential for the server.
                let reply = self.with_id(replies::unauthorized(false, self.config().resource_metadata.as_deref()));
                return self.refuse_credential(host, reply, Decision::Deny, "no verified bearer token to exchange for this server", "rejected");
            }
        };
        if let Some(token) = exchange.cached(host, &self.server, &subject) {
            self.count_exchange(host, "cached");
            host.try_set_header(HeaderMap::Request, "authorization", Some(&format!("Bearer {token}")));
            return Step::Continue;
        }
        match exchange.dispatch(host, &self.server, &subject) {
            Ok(call) => {
                self.upstream.pending = Some(Pending { call, subject_token: subject });
                self.phase = Phase::AwaitingCredential;
                Step::Pause
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("tollgate-mcp: {e}"));
                let reply = unavailable(self.request_id_for_reply().as_deref(), 503);
                self.refuse_credential(host, reply, Decision::Error, &e, "failed")
            }
        }
    }

    /// The token endpoint answered (or did not): resume with the exchanged token, or refuse.
    pub(super) fn credential_answer(&mut self, host: &dyn Host, call: u32, answer: HttpAnswer<'_>) {
        if !matches!(self.phase, Phase::AwaitingCredential) || self.upstream.pending.as_ref().map(|p| p.call) != Some(call) {
            return;
        }
        let Some(pending) = self.upstream.pending.take() else { return };
        let shared = self.shared.clone();
        let Some(exchange) = shared.token_exchange.as_ref() else { return };
        match tokenexchange::read_answer(answer.ok()) {
            Ok(granted) => {
                exchange.remember(host, &self.server, &pending.subject_token, &granted);
                self.count_exchange(host, "exchanged");
                host.try_set_header(HeaderMap::Request, "authorization", Some(&format!("Bearer {}", granted.access_token)));
                self.phase = Phase::Passed;
                if let Err(e) = host.resume(Direction::Request) {
                    host.log(LogLevel::Error, &format!("tollgate-mcp: cannot resume the request: {e}"));
                }
            }
            Err(Failure::Rejected(reason)) => {
                let reply = self.with_id(replies::unauthorized(true, self.config().resource_metadata.as_deref()));
                self.refuse_credential(host, reply, Decision::Deny, &reason, "rejected");
            }
            Err(Failure::Unavailable { status, reason }) => {
                host.log(LogLevel::Warn, &format!("tollgate-mcp: token exchange for `{}` failed: {reason}", self.server));
                let reply = unavailable(self.request_id_for_reply().as_deref(), status);
                self.refuse_credential(host, reply, Decision::Error, &reason, "failed");
            }
        }
    }

    /// The JSON-RPC id a refusal answers: the single request's (a batch gets one error
    /// without id).
    fn request_id_for_reply(&self) -> Option<String> {
        if self.batch {
            return None;
        }
        self.records.iter().find_map(|r| r.detail.jsonrpc_id.as_ref().map(|id| id.get().to_string()))
    }

    /// A 401 whose JSON-RPC error carries the request's id.
    fn with_id(&self, mut reply: Reply) -> Reply {
        let id = self.request_id_for_reply();
        let raw: Option<Box<RawValue>> = id.and_then(|t| RawValue::from_string(t).ok());
        reply.body = rpc_error_body::<()>(raw.as_deref(), codes::UNAUTHORIZED, "Unauthorized: no credential for this MCP server", None);
        reply
    }

    /// Refuses a judged request for want of an upstream credential: every message's record
    /// says why (the policy's rule ids kept), and the request is never forwarded.
    fn refuse_credential(&mut self, host: &dyn Host, reply: Reply, decision: Decision, reason: &str, result: &str) -> Step {
        self.count_exchange(host, result);
        let error = format!("upstream credential: {}", crate::message::truncate(reason, 400));
        if self.records.is_empty() {
            return self.refuse_request(host, reply, decision, &error);
        }
        for record in &mut self.records {
            record.decision = decision;
            record.error = Some(error.clone());
        }
        self.reply(host, &reply)
    }

    /// `tollgate.mcp.token_exchange{server, result}`: `cached`, `exchanged`, `rejected`, `failed`.
    fn count_exchange(&self, host: &dyn Host, result: &str) {
        self.metrics.inc(host, "tollgate.mcp.token_exchange", &[("server", &self.server), ("result", result)]);
    }
}

/// 502/503 with a JSON-RPC internal error under the request's id.
fn unavailable(id: Option<&str>, status: u32) -> Reply {
    let raw: Option<Box<RawValue>> = id.and_then(|t| RawValue::from_string(t.to_string()).ok());
    replies::refusal(status, raw.as_deref(), codes::INTERNAL_ERROR, "Gateway could not obtain a credential for this MCP server")
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
