//! The two RPCs: `ShouldRateLimit` (reserve, all-or-nothing) and `Settle` (return the unused part
//! of a reservation, or record an overage).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Status;

use crate::counter::{amount, plan, Counter, Plan, MAX_EXACT};
use crate::proto::{
    code, serving, DescriptorStatus, Duration, HealthCheckRequest, HealthCheckResponse, HeaderValue, RateLimit,
    RateLimitRequest, RateLimitResponse, SettleRequest, SettleResponse,
};
use crate::store::{Reserve, Settle, Store, GRACE_MS};

/// Response header carrying the service clock (Unix ms) the windows were computed with; a filter
/// sends it back as `reserved_at_unix_ms` when it settles.
pub const RESERVED_AT_HEADER: &str = "x-tollgate-reserved-at";

pub struct Limits {
    pub store: Store,
    pub key_prefix: String,
    /// Added to the real clock (test hook: `--clock-offset-ms`).
    pub clock_offset_ms: i64,
}

impl Limits {
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        real.saturating_add(self.clock_offset_ms)
    }

    pub async fn should_rate_limit(self: Arc<Self>, req: RateLimitRequest) -> Result<RateLimitResponse, Status> {
        let now = self.now_ms();
        let mut plans = Vec::with_capacity(req.descriptors.len());
        for (i, d) in req.descriptors.iter().enumerate() {
            let p = plan(&self.key_prefix, &req.domain, d)
                .map_err(|e| Status::invalid_argument(format!("descriptor {i}: {e}")))?;
            plans.push((p, amount(d, req.hits_addend)));
        }
        // Counted descriptors, in request order, with their window.
        let mut reserve = Vec::new();
        let mut spans = Vec::new();
        for (p, amt) in &plans {
            if let Plan::Counted(c) = p {
                let span = c.window.span(now);
                reserve.push(Reserve {
                    key: c.key(&span.id),
                    amount: (*amt).min(MAX_EXACT),
                    cap: c.cap_exact(),
                    expire_at_ms: span.end_ms.saturating_add(GRACE_MS),
                });
                spans.push(span);
            }
        }
        let (granted, counted) = if reserve.is_empty() {
            (true, Vec::new())
        } else {
            self.store.reserve(&reserve).await.map_err(|e| {
                eprintln!("tollgate-limits: redis error on ShouldRateLimit: {e}");
                Status::unavailable(format!("counter store: {e}"))
            })?
        };
        let mut statuses = Vec::with_capacity(plans.len());
        let mut results = counted.iter().zip(spans.iter());
        for (p, _) in &plans {
            let status = match p {
                Plan::Uncounted => DescriptorStatus { code: code::OK, ..Default::default() },
                Plan::Counted(c) => match results.next() {
                    Some((r, span)) => status_of(c, r.current, r.over, span.end_ms - now),
                    None => return Err(Status::internal("reserve reply shorter than the request")),
                },
            };
            statuses.push(status);
        }
        Ok(RateLimitResponse {
            overall_code: if granted { code::OK } else { code::OVER_LIMIT },
            statuses,
            response_headers_to_add: vec![HeaderValue { key: RESERVED_AT_HEADER.to_string(), value: now.to_string() }],
            request_headers_to_add: Vec::new(),
        })
    }

    pub async fn settle(self: Arc<Self>, req: SettleRequest) -> Result<SettleResponse, Status> {
        let at = match i64::try_from(req.reserved_at_unix_ms) {
            Ok(0) => self.now_ms(),
            Ok(at) => at,
            Err(_) => return Err(Status::invalid_argument("reserved_at_unix_ms out of range")),
        };
        let mut items = Vec::with_capacity(req.settlements.len());
        for (i, s) in req.settlements.iter().enumerate() {
            let d = s
                .descriptor
                .as_ref()
                .ok_or_else(|| Status::invalid_argument(format!("settlement {i}: no descriptor")))?;
            let p = plan(&self.key_prefix, &req.domain, d)
                .map_err(|e| Status::invalid_argument(format!("settlement {i}: {e}")))?;
            let Plan::Counted(c) = p else { continue };
            let reserved = i64::try_from(s.reserved.min(MAX_EXACT)).unwrap_or(0);
            let actual = i64::try_from(s.actual.min(MAX_EXACT)).unwrap_or(0);
            let span = c.window.span(at);
            items.push(Settle { key: c.key(&span.id), delta: actual - reserved, expire_at_ms: span.end_ms.saturating_add(GRACE_MS) });
        }
        if items.is_empty() {
            return Ok(SettleResponse { settled: 0 });
        }
        let settled = self.store.settle(&items).await.map_err(|e| {
            eprintln!("tollgate-limits: redis error on Settle: {e}");
            Status::unavailable(format!("counter store: {e}"))
        })?;
        Ok(SettleResponse { settled })
    }
}

impl Limits {
    /// `grpc.health.v1.Health/Check`: SERVING while Redis answers PING, NOT_SERVING otherwise.
    /// Service names: "" (the server), the two services it serves; any other is NOT_FOUND.
    pub async fn health(self: Arc<Self>, req: HealthCheckRequest) -> Result<HealthCheckResponse, Status> {
        match req.service.as_str() {
            "" | "envoy.service.ratelimit.v3.RateLimitService" | "tollgate.limits.v1.Settlement" => {}
            other => return Err(Status::not_found(format!("unknown service {other:?}"))),
        }
        let status = match self.store.ping().await {
            Ok(()) => serving::SERVING,
            Err(_) => serving::NOT_SERVING,
        };
        Ok(HealthCheckResponse { status })
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn status_of(c: &Counter, current: u64, over: bool, until_reset_ms: i64) -> DescriptorStatus {
    let until = until_reset_ms.max(0);
    DescriptorStatus {
        code: if over { code::OVER_LIMIT } else { code::OK },
        current_limit: Some(RateLimit { requests_per_unit: clamp_u32(c.cap), unit: c.window.unit(), name: c.name.clone() }),
        limit_remaining: clamp_u32(c.cap_exact().saturating_sub(current)),
        duration_until_reset: Some(Duration {
            seconds: until / 1000,
            nanos: i32::try_from((until % 1000) * 1_000_000).unwrap_or(0),
        }),
    }
}
