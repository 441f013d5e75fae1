//! `tollgate-limits`: Tollgate's fleet-wide counter store. It serves Envoy's rate-limit service
//! API (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) with all-or-nothing
//! reservations, plus `tollgate.limits.v1.Settlement/Settle` to return the unused part of a
//! reservation, on Redis. It keeps no state of its own: run as many replicas as you like against
//! one Redis. The protocol is in docs/limits-protocol.md.

pub mod config;
pub mod counter;
pub mod grpc;
pub mod proto;
pub mod service;
pub mod store;
pub mod window;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;
use crate::grpc::LimitsServer;
use crate::service::Limits;
use crate::store::Store;

/// Binds, logs one start line, and serves until `shutdown` completes. Redis is connected lazily
/// (and reconnected by the connection manager after a Redis restart): while it is unreachable, the
/// RPCs answer UNAVAILABLE.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let client = redis::Client::open(config.redis.as_str()).map_err(|e| format!("--redis {:?}: {e}", config.redis))?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(1000)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(200));
    let conn = ConnectionManager::new_lazy_with_config(client, manager_config).map_err(|e| format!("redis: {e}"))?;
    let limits = Arc::new(Limits {
        store: Store::new(conn),
        key_prefix: config.key_prefix.clone(),
        clock_offset_ms: config.clock_offset_ms,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let local = listener.local_addr().map_err(|e| format!("listen on {}: {e}", config.listen))?;
    eprintln!(
        "tollgate-limits {} listening on {local} redis={} key-prefix={:?} clock-offset-ms={}",
        env!("CARGO_PKG_VERSION"),
        redact(&config.redis),
        config.key_prefix,
        config.clock_offset_ms
    );
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(
            LimitsServer(limits),
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| format!("serve: {e}"))
}

/// The Redis URL without a password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", url.get(..s + 3).unwrap_or(""), url.get(at..).unwrap_or("")),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_credentials() {
        assert_eq!(super::redact("redis://:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(super::redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }
}
