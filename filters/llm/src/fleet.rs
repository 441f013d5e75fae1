//! LLM limits counted in the fleet-wide store (`store` in the config, `counters: fleet` on a
//! limit): the same semantics as the per-Envoy counters of `limits.rs` — the estimate
//! reserved at admission, all or nothing, and settled against real usage at the end — with
//! the counters in Redis behind `tollgate-limits` (`docs/limits-protocol.md`), so every Envoy
//! of the fleet, and every restart, sees one count.
//!
//! Pure: each function turns limits, the counters wanted and the store's answer into
//! messages, holds or refusals; the exchange sends and waits.
//!
//! - Admission: one `ShouldRateLimit` with a descriptor per counter (`limit` =
//!   `llm.<id>.<requests|tokens|cost>`, `subject` = the scope value, `window`, `cap`, amount).
//! - Settlement (Tollgate's store): one `Settle` with `actual` and `reserved` per counter,
//!   queued in the outbox and sent by the plugin's root. Against a plain rate-limit service
//!   (`protocol: envoy_rls`) only usage above the reservation is sent (as more hits);
//!   unused reservations are never returned.
//! - Overshoot: usage above the reservation is settled even over the cap (it happened); the
//!   record lists the limit in `limits_overshot` when the store's count at admission plus
//!   that overage exceeds the cap ([`overshot`]), and the store refuses the next request.
//! - The store cannot answer (unreachable, an error status, a timeout, an answer that does
//!   not read): a limit with `on_store_failure: fail_closed` refuses the request; with
//!   `fail_open_local` its counters are taken in this Envoy's shared data instead and the
//!   record says `limits_degraded: true`.

use crate::limits::{Actual, Dimension, Exceeded, FleetHold, Held, Limit, Wanted};
use tollgate_core::fleet::outbox::Pending;
use tollgate_core::fleet::rls::{self, Descriptor};
use tollgate_core::fleet::{OnFailure, Protocol, StoreConfig};
use tollgate_core::shared_data::window::Window;
use tollgate_core::shared_data::window_counter::Reservation;

/// The store's name of a counter of a limit.
fn limit_name(rule: &Limit, dimension: Dimension) -> String {
    let suffix = match dimension {
        Dimension::Requests => "requests",
        Dimension::Tokens => "tokens",
        Dimension::CostMicroUsd => "cost",
    };
    format!("llm.{}.{suffix}", rule.id)
}

fn window_of(rules: &[Limit], w: &Wanted) -> Window {
    rules.get(w.limit).map(|r| r.window).unwrap_or(Window::fixed(1))
}

/// The `ShouldRateLimit` request reserving every `wanted` counter.
pub fn reservation_request(store: &StoreConfig, rules: &[Limit], wanted: &[&Wanted]) -> Vec<u8> {
    let names: Vec<String> = wanted
        .iter()
        .map(|w| rules.get(w.limit).map(|r| limit_name(r, w.dimension)).unwrap_or_default())
        .collect();
    let descriptors: Vec<Descriptor<'_>> = wanted
        .iter()
        .zip(&names)
        .map(|(w, name)| Descriptor {
            limit: name,
            subject: &w.subject,
            window: window_of(rules, w),
            cap: w.cap,
            amount: w.amount,
        })
        .collect();
    rls::should_rate_limit(&store.domain, &descriptors)
}

/// The holds of an admitted request, or the refusal of the first counter over its cap.
/// `used` is the cap minus what the store says is left, which is never below 0: a counter
/// pushed over its cap by an overage reads as full (the cap), not as its real count.
pub fn answered(rules: &[Limit], wanted: &[&Wanted], answer: &rls::Answer, now_ms: u64) -> Result<Vec<Held>, Exceeded> {
    let now_secs = now_ms / 1000;
    let status = |i: usize| answer.statuses.get(i).copied();
    if answer.over_limit {
        // The first counter the store marks over; a plain server may send no statuses.
        let index = answer.statuses.iter().position(|s| s.over_limit).unwrap_or(0);
        let Some(w) = wanted.get(index) else { return Err(Exceeded::unavailable()) };
        let Some(rule) = rules.get(w.limit) else { return Err(Exceeded::unavailable()) };
        let (used, reset) = match status(index) {
            Some(s) => (w.cap.saturating_sub(s.remaining), s.reset_secs.unwrap_or_else(|| rule.window.reset_secs(now_secs))),
            None => (w.cap, rule.window.reset_secs(now_secs)),
        };
        return Err(rule.exceeded(w, used, reset.max(1), false, now_secs));
    }
    let reserved_at_ms = answer.reserved_at_ms.unwrap_or(now_ms);
    Ok(wanted
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let window = window_of(rules, w);
            let (used, reset_secs) = match status(i) {
                Some(s) => (w.cap.saturating_sub(s.remaining), s.reset_secs.unwrap_or_else(|| window.reset_secs(now_secs))),
                None => (w.amount, window.reset_secs(now_secs)),
            };
            Held {
                limit: w.limit,
                dimension: w.dimension,
                key: w.key.clone(),
                reservation: Reservation {
                    window_start_secs: window.bounds(reserved_at_ms / 1000).0,
                    window,
                    amount: w.amount,
                    used,
                    reset_secs,
                },
                fleet: Some(FleetHold { reserved_at_ms, subject: w.subject.clone(), cap: w.cap }),
            }
        })
        .collect())
}

/// The store could not answer: `Err` refuses the request (a counter of a `fail_closed`
/// limit), `Ok` lets the caller take every counter locally instead (all `fail_open_local`).
pub fn failed(rules: &[Limit], wanted: &[&Wanted], now_secs: u64) -> Result<(), Exceeded> {
    for w in wanted {
        let Some(rule) = rules.get(w.limit) else { return Err(Exceeded::unavailable()) };
        if rule.fleet != Some(OnFailure::FailOpenLocal) {
            return Err(rule.exceeded(w, 0, 1, true, now_secs));
        }
    }
    Ok(())
}

fn real(actual: Actual, dimension: Dimension) -> u64 {
    match dimension {
        Dimension::Requests => actual.requests,
        Dimension::Tokens => actual.tokens,
        Dimension::CostMicroUsd => actual.cost_micro_usd,
    }
}

/// The limits whose fleet counters this request pushed over their cap: real usage above the
/// reservation (settled even over the cap: it happened) on a counter that, as the store
/// reported it at admission with this reservation in, then stands above the cap. The store's
/// counter may have moved since (others' reservations and refunds), so this is the count as
/// of admission; a counter whose remaining amount the store clamped (caps above 2^32 − 1)
/// reads low and is never reported wrongly. Without duplicates, in hold order.
pub fn overshot(rules: &[Limit], held: &[Held], actual: Actual) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for h in held {
        let Some(f) = &h.fleet else { continue };
        let real = real(actual, h.dimension);
        let over = real.saturating_sub(h.reservation.amount);
        if over > 0 && h.reservation.used.saturating_add(over) > f.cap && rules.get(h.limit).is_some() && !out.contains(&h.limit) {
            out.push(h.limit);
        }
    }
    out
}

/// The settlement calls for a request's fleet holds (none when there is nothing to change).
pub fn settlements(store: &StoreConfig, rules: &[Limit], held: &[Held], actual: Actual) -> Vec<Pending> {
    let fleet: Vec<(&Held, &FleetHold, String, u64)> = held
        .iter()
        .filter_map(|h| {
            let f = h.fleet.as_ref()?;
            let rule = rules.get(h.limit)?;
            Some((h, f, limit_name(rule, h.dimension), real(actual, h.dimension)))
        })
        .filter(|(h, _, _, real)| *real != h.reservation.amount)
        .collect();
    let Some((_, first, _, _)) = fleet.first() else { return Vec::new() };
    fn descriptor<'a>(h: &Held, f: &'a FleetHold, name: &'a str, amount: u64) -> Descriptor<'a> {
        Descriptor { limit: name, subject: &f.subject, window: h.reservation.window, cap: f.cap, amount }
    }
    match store.protocol {
        Protocol::Tollgate => {
            let items: Vec<rls::Settlement<'_>> = fleet
                .iter()
                .map(|(h, f, name, real)| rls::Settlement {
                    descriptor: descriptor(h, f, name, h.reservation.amount),
                    reserved: h.reservation.amount,
                    actual: *real,
                })
                .collect();
            vec![store.queued(true, rls::settle(&store.domain, &items, first.reserved_at_ms))]
        }
        // A plain rate-limit service cannot return anything: only usage above the
        // reservation is counted, as more hits.
        Protocol::EnvoyRls => {
            let over: Vec<Descriptor<'_>> = fleet
                .iter()
                .filter(|(h, _, _, real)| *real > h.reservation.amount)
                .map(|(h, f, name, real)| descriptor(h, f, name, real - h.reservation.amount))
                .collect();
            if over.is_empty() {
                return Vec::new();
            }
            vec![store.queued(false, rls::should_rate_limit(&store.domain, &over))]
        }
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
