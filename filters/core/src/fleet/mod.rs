//! Counters shared by a fleet of Envoys: limits and budgets kept in a real store (Redis,
//! behind `services/limits`, or any server of Envoy's rate-limit service API), reached through
//! Envoy's own gRPC client (`dispatch_grpc_call` to a cluster named in config).
//!
//! - [`rls`]: the messages (Envoy's `ShouldRateLimit`, Tollgate's `Settle` extension), built
//!   and read without a generated-code crate (`docs/limits-protocol.md`);
//! - [`outbox`]: settlements queued by streams and sent by the plugin's root on its timer, so
//!   a settlement never dies with the stream that made it.
//!
//! Each filter keeps its own limit semantics (what is counted, in which window, who is the
//! subject) and asks the store to reserve at admission and settle at the end, as it does with
//! the per-Envoy shared-data counters; a failed or slow store is handled by the limit's
//! failure policy ([`OnFailure`]), never by a silent bypass.

pub mod outbox;
pub mod rls;

use crate::host::{GrpcCall, Host, HostResult};
use crate::stream::GrpcAnswer;
use outbox::Pending;
use serde::Deserialize;

/// Where a limit's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Counters {
    /// Envoy shared data: one Envoy's workers (lost on restart, not shared by replicas).
    #[default]
    Local,
    /// The fleet-wide store (`store` in the config).
    Fleet,
}

/// What a fleet-counted limit does when the store cannot answer (unreachable, an error, or
/// slower than `timeout_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refuse the request (the client API's own error shape; nothing forwarded).
    #[default]
    FailClosed,
    /// Count on this Envoy's shared-data counters instead, and record `limits_degraded`.
    FailOpenLocal,
}

/// What the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `tollgate-limits`: all-or-nothing reservations, `cap` and calendar `window`
    /// descriptors, and settlement (unused reservations returned).
    #[default]
    Tollgate,
    /// A plain rate-limit service (envoyproxy/ratelimit, Limitador): counting only; usage
    /// above a reservation is sent as more hits, unused reservations are never returned.
    EnvoyRls,
}

/// The `store` section of a filter's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The Envoy cluster of the store (HTTP/2, e.g. `tollgate_limits`).
    pub cluster: String,
    /// How long an admission waits for the store before the failure policy applies.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub protocol: Protocol,
    /// The rate-limit domain (counters of different domains never meet).
    #[serde(default = "default_domain")]
    pub domain: String,
}

fn default_timeout_ms() -> u64 {
    200
}

fn default_domain() -> String {
    "tollgate".into()
}

impl StoreConfig {
    /// Structural checks, naming the field.
    pub fn validate(&self, path: &str) -> Result<(), crate::config::ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(crate::config::ConfigError::field(&format!("{path}.cluster"), "must name an Envoy cluster"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(crate::config::ConfigError::field(&format!("{path}.timeout_ms"), "must be between 1 and 60000"));
        }
        if self.domain.is_empty() {
            return Err(crate::config::ConfigError::field(&format!("{path}.domain"), "must not be empty"));
        }
        Ok(())
    }

    /// Sends a `ShouldRateLimit` request to the store; its answer comes back, under the
    /// returned token, to the context that asked (see [`read_answer`]).
    pub fn ask(&self, host: &dyn Host, message: &[u8]) -> HostResult<u32> {
        host.dispatch_grpc(&GrpcCall {
            cluster: &self.cluster,
            service: rls::RLS_SERVICE,
            method: rls::RLS_METHOD,
            message,
            timeout_ms: self.timeout_ms,
        })
    }

    /// A call for the outbox: `Settle` (Tollgate's store) or, for the hits a plain rate-limit
    /// service counts, `ShouldRateLimit`.
    pub fn queued(&self, settle: bool, message: Vec<u8>) -> Pending {
        let (service, method) = if settle {
            (rls::SETTLE_SERVICE, rls::SETTLE_METHOD)
        } else {
            (rls::RLS_SERVICE, rls::RLS_METHOD)
        };
        Pending { cluster: self.cluster.clone(), service, method, timeout_ms: self.timeout_ms, message }
    }
}

/// The store's answer to a request of `asked` descriptors, or why it cannot be used (a gRPC
/// failure, a timeout, a message that does not read): what the limits' failure policy and
/// the log get.
pub fn read_answer(answer: GrpcAnswer<'_>, asked: usize) -> Result<rls::Answer, String> {
    match answer {
        Ok(bytes) => rls::answer(bytes, asked).map_err(|e| e.to_string()),
        Err(failure) => Err(format!("gRPC status {} {}", failure.status, failure.message)),
    }
}
