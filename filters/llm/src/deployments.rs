//! Virtual models: one model name served by several *deployments* (provider + upstream model
//! + weight + priority), with fallback between them run by Envoy's own retries.
//!
//! How a request is served (the design; `README.md` explains the Envoy side):
//! 1. The gateway role (the HTTP filter, `exchange.rs`) picks an order of deployments for the
//!    request — [`plan`]: deployments cooling down are put last, then lowest `priority`
//!    first, and within a priority a smooth weighted round robin picks who goes first — and
//!    writes it into request headers: the provider hosts in that order for Envoy's
//!    `override_host` load-balancing policy ([`HOSTS_HEADER`]), the deployments for the
//!    attempt role ([`PLAN_HEADER`]), and Envoy's retry headers (`x-envoy-max-retries`,
//!    `x-envoy-retry-on`, `x-envoy-retriable-status-codes`,
//!    `x-envoy-upstream-rq-per-try-timeout-ms`).
//! 2. Envoy's router runs the attempts: attempt *n* goes to the *n*-th host of the list; a
//!    retriable status, a connect failure, a reset or no response headers within the
//!    per-try timeout moves on to the next one — only before any response byte reached the
//!    client (Envoy commits to an attempt at its response headers).
//! 3. The attempt role (the same module as an *upstream* HTTP filter on the deployments
//!    cluster, `attempt.rs`) runs once per attempt: it reads the attempt number
//!    (`x-envoy-attempt-count`), finds its deployment in the plan, and writes the request
//!    for that deployment's API, model and credential; it translates the response back to
//!    the client's API, notes cooldowns ([`cooldown_for`]) in shared data for every worker,
//!    and logs the attempt ([`attempt_log`]) for the gateway role's audit record.

use crate::api::ClientApi;
use std::cell::RefCell;
use tollgate_core::host::{Host, HostResult};

/// Request header with the provider hosts (`ip:port,...`) Envoy's `override_host` policy
/// tries in order.
pub const HOSTS_HEADER: &str = "x-tollgate-hosts";
/// Request header with the plan: `<virtual model>;<stream 0|1>;<deployment>,...;<token>;<requested model, hex>;<client path>`
/// (the token keys the request's attempts in [`attempt_log`]; the client's path says its
/// API, as the attempts rewrite `:path`).
///
/// Envoy's upstream filters share one request header map across the attempts of a request:
/// what one attempt changes, the next one sees. So every attempt sets every header it
/// depends on, and the plan and host list stay until the last attempt (the load balancer
/// reads the host list again for each retry): providers of earlier attempts receive them.
pub const PLAN_HEADER: &str = "x-tollgate-plan";
/// Response header naming the deployment that answered (removed before the client):
/// `<deployment>;<attempt>;<duration ms>`.
pub const ANSWERED_BY_HEADER: &str = "x-tollgate-deployment";

pub fn answered_by(deployment: &str, attempt: usize, duration_ms: u64) -> String {
    format!("{deployment};{attempt};{duration_ms}")
}

/// (deployment, attempt, duration ms) of an answered-by header.
pub fn parse_answered_by(value: &str) -> Option<(&str, usize, u64)> {
    let mut parts = value.rsplitn(3, ';');
    let duration = parts.next()?.trim().parse().ok()?;
    let attempt = parts.next()?.trim().parse().ok()?;
    Some((parts.next()?, attempt, duration))
}

/// One deployment of a virtual model, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// `<provider>/<upstream model>` unless named in config.
    pub name: String,
    /// Index into the router's providers.
    pub provider: usize,
    /// The model sent to the provider; `None`: the requested one (a glob route).
    pub upstream_model: Option<String>,
    pub weight: u32,
    pub priority: u32,
}

impl Deployment {
    /// The model this deployment is sent for a request of `requested`.
    pub fn model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.upstream_model.as_deref().unwrap_or(requested)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualModel {
    pub deployments: Vec<Deployment>,
}

/// Fallback settings (config `fallback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The value of the provider header that routes to the deployments cluster.
    pub route: String,
    pub retry_on_status: Vec<u16>,
    pub first_byte_timeout_ms: u64,
    pub cooldown_secs: u64,
    pub max_cooldown_secs: u64,
    pub max_attempts: usize,
}

/// The order in which deployments `0..n` are tried: deployments not cooling down first,
/// by priority, the first of each priority chosen by smooth weighted round robin over
/// `current` (one cell per deployment, kept per VM), the rest of that priority by weight;
/// deployments cooling down last, the soonest available first. `cooling[i]`: deployment
/// `i` cools down until that many ms. At most `max` deployments.
pub fn plan(deployments: &[Deployment], cooling_until_ms: &[u64], now_ms: u64, current: &mut [i64], max: usize) -> Vec<usize> {
    let cool = |i: usize| cooling_until_ms.get(i).copied().unwrap_or(0) > now_ms;
    let mut ready: Vec<usize> = (0..deployments.len()).filter(|&i| !cool(i)).collect();
    let mut order = Vec::with_capacity(deployments.len());
    let mut priorities: Vec<u32> = ready.iter().filter_map(|&i| deployments.get(i).map(|d| d.priority)).collect();
    priorities.sort_unstable();
    priorities.dedup();
    for priority in priorities {
        let group: Vec<usize> = ready.iter().copied().filter(|&i| deployments.get(i).is_some_and(|d| d.priority == priority)).collect();
        if let Some(first) = weighted_pick(deployments, &group, current) {
            order.push(first);
            let mut rest: Vec<usize> = group.into_iter().filter(|&i| i != first).collect();
            rest.sort_by_key(|&i| std::cmp::Reverse(deployments.get(i).map(|d| d.weight).unwrap_or(0)));
            order.extend(rest);
        }
    }
    ready.clear();
    let mut cooling: Vec<usize> = (0..deployments.len()).filter(|&i| cool(i)).collect();
    cooling.sort_by_key(|&i| (cooling_until_ms.get(i).copied().unwrap_or(0), deployments.get(i).map(|d| d.priority).unwrap_or(0)));
    order.extend(cooling);
    order.truncate(max.max(1));
    order
}

/// Smooth weighted round robin (as nginx does it): every candidate gains its weight, the
/// largest wins and pays back the group's total. Over any run of `total` picks each
/// candidate wins exactly `weight` times, on every worker.
fn weighted_pick(deployments: &[Deployment], group: &[usize], current: &mut [i64]) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<(usize, i64)> = None;
    for &i in group {
        let weight = i64::from(deployments.get(i).map(|d| d.weight).unwrap_or(0));
        total = total.saturating_add(weight);
        let Some(cell) = current.get_mut(i) else { continue };
        *cell = cell.saturating_add(weight);
        if best.is_none_or(|(_, b)| *cell > b) {
            best = Some((i, *cell));
        }
    }
    let (winner, _) = best?;
    if let Some(cell) = current.get_mut(winner) {
        *cell = cell.saturating_sub(total);
    }
    Some(winner)
}

/// The plan header's value.
pub fn plan_header(virtual_model: usize, stream: bool, order: &[usize], token: u64, model: &str, client_path: &str) -> String {
    let order: Vec<String> = order.iter().map(usize::to_string).collect();
    let model: String = model.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{virtual_model};{};{};{token:x};{model};{client_path}", u8::from(stream), order.join(","))
}

fn unhex(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let decoded: Option<Vec<u8>> = bytes
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect();
    String::from_utf8(decoded?).ok()
}

/// A parsed plan header.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub virtual_model: usize,
    pub stream: bool,
    pub order: Vec<usize>,
    pub token: u64,
    /// The model the client asked for.
    pub model: String,
    pub client_path: String,
}

pub fn parse_plan(value: &str) -> Option<Plan> {
    let mut parts = value.splitn(6, ';');
    let virtual_model = parts.next()?.trim().parse().ok()?;
    let stream = match parts.next()?.trim() {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let order = parts.next()?.split(',').map(|d| d.trim().parse().ok()).collect::<Option<Vec<usize>>>()?;
    let token = u64::from_str_radix(parts.next()?.trim(), 16).ok()?;
    let model = unhex(parts.next()?.trim())?;
    let client_path = parts.next()?.to_string();
    if order.is_empty() || !client_path.starts_with('/') {
        return None;
    }
    Some(Plan { virtual_model, stream, order, token, model, client_path })
}

/// How long a deployment that answered `status` with these headers should rest, in ms:
/// the provider's `Retry-After` (seconds, or an HTTP date is not parsed: default), else
/// OpenAI's `x-ratelimit-reset-requests` / `-tokens` (`1s`, `6m0s`, `250ms`), else
/// `default_secs`; capped at `max_secs`. `None`: the status is not one that cools down.
pub fn cooldown_for(status: u16, retry_on: &[u16], headers: &dyn Fn(&str) -> Option<String>, default_secs: u64, max_secs: u64) -> Option<u64> {
    if !retry_on.contains(&status) {
        return None;
    }
    let from_retry_after = headers("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(|s| s.saturating_mul(1000));
    let from_reset = || {
        ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
            .iter()
            .filter_map(|name| headers(name).and_then(|v| parse_duration_ms(&v)))
            .max()
    };
    let ms = from_retry_after.or_else(from_reset).unwrap_or(default_secs.saturating_mul(1000));
    Some(ms.min(max_secs.saturating_mul(1000)))
}

/// OpenAI's reset durations: `1s`, `6m0s`, `1h2m3.5s`, `250ms`.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        let unit_ms = match c {
            'h' => 3_600_000.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1.0
            }
            'm' => 60_000.0,
            's' => 1000.0,
            _ => return None,
        };
        total += value * unit_ms;
    }
    if !number.is_empty() || !total.is_finite() || total < 0.0 {
        return None;
    }
    Some(total.ceil() as u64)
}

/// [`target_api`] for a request: only generation is translated; embeddings and token counts
/// go to providers that speak the client's own API.
pub fn target_for(client: &crate::api::Endpoint, provider_apis: Option<&[ClientApi]>) -> Option<ClientApi> {
    match client.operation {
        crate::api::Operation::Generate => target_api(client.api, provider_apis),
        _ => provider_apis.is_none_or(|apis| apis.contains(&client.api)).then_some(client.api),
    }
}

/// The API a deployment's provider is sent: the client's own when the provider speaks it,
/// else the first translatable API it lists. `None`: no API of the provider can serve this
/// client (the OpenAI Responses API is a client API only: it is never a translation target).
pub fn target_api(client: ClientApi, provider_apis: Option<&[ClientApi]>) -> Option<ClientApi> {
    let Some(apis) = provider_apis else { return Some(client) };
    if apis.contains(&client) {
        return Some(client);
    }
    apis.iter().copied().find(|api| matches!(api, ClientApi::OpenaiChat | ClientApi::AnthropicMessages | ClientApi::Gemini))
}

fn cooldown_key(deployment: &str) -> String {
    format!("tollgate.llm.cooldown.{deployment}")
}

/// Until when (epoch ms) a deployment cools down; 0: it does not. A shared-data failure
/// reads as "not cooling" (the attempt is then made and fails over as usual).
pub fn cooling_until(host: &dyn Host, deployment: &str) -> u64 {
    match host.shared_data(&cooldown_key(deployment)) {
        Ok((Some(bytes), _)) => bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0),
        _ => 0,
    }
}

/// Sets a deployment's cooldown to end at `until_ms` unless it already ends later (compare
/// and swap, so two workers never shorten each other's).
pub fn cool_down(host: &dyn Host, deployment: &str, until_ms: u64) -> HostResult<()> {
    let key = cooldown_key(deployment);
    for _ in 0..4 {
        let (current, cas) = host.shared_data(&key)?;
        let current = current.and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)).unwrap_or(0);
        if current >= until_ms {
            return Ok(());
        }
        if host.set_shared_data(&key, &until_ms.to_be_bytes(), cas).is_ok() {
            return Ok(());
        }
    }
    host.set_shared_data(&key, &until_ms.to_be_bytes(), None)
}

/// One attempt as the audit record lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    pub deployment: String,
    /// The response status; absent when none came (connect failure, reset, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The cooldown this attempt started, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
    /// The usage its provider reported, in the provider's own API (set when the answer was
    /// translated: the client-API answer may lack a field, e.g. reasoning for Anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<crate::record::TokenCounts>,
}

/// The attempts of the requests in flight, by plan token: written by the attempt role,
/// read by the gateway role when it writes the record. In shared data, so the two roles may
/// run in different VMs (Envoy keys shared data by `vm_id`: both filters name the same one)
/// and on any worker. Bounded: `SLOTS` entries, a request's slot chosen by its token; a slot
/// reused by a later request simply no longer matches the earlier token (64 random bits).
pub mod attempt_log {
    use super::*;

    const SLOTS: u64 = 1024;
    const MAX_ATTEMPTS: usize = 16;

    fn slot(token: u64) -> String {
        format!("tollgate.llm.attempts.{}", token % SLOTS)
    }

    /// The attempts stored for `token`, and the slot's CAS.
    fn read(host: &dyn Host, token: u64) -> (Vec<Attempt>, Option<u32>) {
        let Ok((bytes, cas)) = host.shared_data(&slot(token)) else { return (Vec::new(), None) };
        let attempts = bytes
            .as_deref()
            .and_then(|b| b.split_at_checked(8))
            .filter(|(t, _)| <[u8; 8]>::try_from(*t).ok().map(u64::from_be_bytes) == Some(token))
            .and_then(|(_, json)| serde_json::from_slice(json).ok())
            .unwrap_or_default();
        (attempts, cas)
    }

    fn update(host: &dyn Host, token: u64, change: impl Fn(&mut Vec<Attempt>)) {
        for _ in 0..4 {
            let (mut attempts, cas) = read(host, token);
            change(&mut attempts);
            let mut value = token.to_be_bytes().to_vec();
            value.extend(serde_json::to_vec(&attempts).unwrap_or_default());
            if host.set_shared_data(&slot(token), &value, cas).is_ok() {
                return;
            }
        }
    }

    pub fn push(host: &dyn Host, token: u64, attempt: Attempt) {
        update(host, token, |attempts| {
            if attempts.len() < MAX_ATTEMPTS {
                attempts.push(attempt.clone());
            }
        });
    }

    /// Sets the provider-reported tokens of the request's latest attempt.
    pub fn set_tokens(host: &dyn Host, token: u64, tokens: crate::usage::Tokens) {
        update(host, token, |attempts| {
            if let Some(last) = attempts.last_mut() {
                last.tokens = Some(tokens.into());
            }
        });
    }

    pub fn take(host: &dyn Host, token: u64) -> Vec<Attempt> {
        read(host, token).0
    }
}

/// Per-VM smooth-weighted-round-robin state, one row per virtual model.
pub mod balance {
    use super::*;

    thread_local! {
        static CURRENT: RefCell<Vec<Vec<i64>>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` with the state of virtual model `index` (`width` deployments).
    pub fn with<T>(index: usize, width: usize, f: impl FnOnce(&mut [i64]) -> T) -> T {
        CURRENT.with(|rows| {
            let mut rows = rows.borrow_mut();
            if rows.len() <= index {
                rows.resize(index + 1, Vec::new());
            }
            match rows.get_mut(index) {
                Some(row) => {
                    if row.len() != width {
                        *row = vec![0; width];
                    }
                    f(row)
                }
                None => f(&mut vec![0; width]),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, weight: u32, priority: u32) -> Deployment {
        Deployment { name: name.into(), provider: 0, upstream_model: Some(name.into()), weight, priority }
    }

    #[test]
    fn weights_are_exact_over_a_cycle_and_priorities_order_the_rest() {
        let ds = [d("a", 3, 0), d("b", 1, 0), d("c", 1, 1)];
        let mut current = vec![0; 3];
        let mut firsts = [0; 3];
        for _ in 0..400 {
            let order = plan(&ds, &[0, 0, 0], 1000, &mut current, 8);
            assert_eq!(order.len(), 3);
            assert_eq!(order.last(), Some(&2), "the lower priority always comes last");
            firsts[order[0]] += 1;
        }
        assert_eq!(firsts, [300, 100, 0]);
    }

    #[test]
    fn cooling_deployments_go_last_soonest_first() {
        let ds = [d("a", 1, 0), d("b", 1, 1), d("c", 1, 2)];
        let mut current = vec![0; 3];
        assert_eq!(plan(&ds, &[5000, 0, 0], 1000, &mut current, 8), vec![1, 2, 0]);
        assert_eq!(plan(&ds, &[5000, 0, 3000], 1000, &mut current, 8), vec![1, 2, 0]);
        assert_eq!(plan(&ds, &[5000, 4000, 3000], 1000, &mut current, 8), vec![2, 1, 0]);
        // A cooldown in the past is over.
        assert_eq!(plan(&ds, &[900, 0, 0], 1000, &mut current, 8), vec![0, 1, 2]);
        assert_eq!(plan(&ds, &[0, 0, 0], 1000, &mut current, 2), vec![0, 1]);
    }

    #[test]
    fn plan_header_round_trips_and_rejects_garbage() {
        let value = plan_header(3, true, &[1, 0], 0xbeef, "m;é", "/v1beta/models/m:streamGenerateContent?alt=sse;x");
        assert_eq!(value, "3;1;1,0;beef;6d3bc3a9;/v1beta/models/m:streamGenerateContent?alt=sse;x");
        let plan = Plan {
            virtual_model: 3,
            stream: true,
            order: vec![1, 0],
            token: 0xbeef,
            model: "m;é".into(),
            client_path: "/v1beta/models/m:streamGenerateContent?alt=sse;x".into(),
        };
        assert_eq!(parse_plan(&value), Some(plan));
        for bad in ["", "3", "3;1", "3;2;0;1;6d;/p", "x;1;0;1;6d;/p", "3;1;;1;6d;/p", "3;1;0,x;1;6d;/p", "3;1;0;1;6d", "3;1;0;1;6d;p",
                    "-1;0;0;1;6d;/p", "3;1;0;zz;6d;/p", "3;1;0;1;6;/p", "3;1;0;1;zz;/p", "3;1;0;1;ff;/p"] {
            assert_eq!(parse_plan(bad), None, "{bad}");
        }
    }

    #[test]
    fn cooldown_honours_retry_after_then_reset_headers_then_default_capped() {
        let retry = [429, 503];
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(cooldown_for(429, &retry, &h(&[("retry-after", "5")]), 2, 300), Some(5000));
        assert_eq!(cooldown_for(503, &retry, &h(&[]), 2, 300), Some(2000));
        assert_eq!(cooldown_for(500, &retry, &h(&[("retry-after", "5")]), 2, 300), None);
        assert_eq!(cooldown_for(429, &retry, &h(&[("retry-after", "99999")]), 2, 300), Some(300_000));
        assert_eq!(
            cooldown_for(429, &retry, &h(&[("x-ratelimit-reset-requests", "1m30s"), ("x-ratelimit-reset-tokens", "250ms")]), 2, 300),
            Some(90_000)
        );
        assert_eq!(cooldown_for(429, &retry, &h(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), 2, 300), Some(2000));
    }

    #[test]
    fn the_answered_by_header_round_trips_even_with_semicolons_in_names() {
        assert_eq!(parse_answered_by(&answered_by("a;b/c", 2, 17)), Some(("a;b/c", 2, 17)));
        assert_eq!(parse_answered_by("x"), None);
        assert_eq!(parse_answered_by("x;y;1"), None);
    }

    #[test]
    fn durations_parse_like_openai_writes_them() {
        assert_eq!(parse_duration_ms("1s"), Some(1000));
        assert_eq!(parse_duration_ms("6m0s"), Some(360_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("1h2m3.5s"), Some(3_723_500));
        for bad in ["", "5", "s", "1x", "1..2s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn target_api_prefers_the_clients_own() {
        use ClientApi::*;
        assert_eq!(target_api(OpenaiChat, None), Some(OpenaiChat));
        assert_eq!(target_api(OpenaiChat, Some(&[AnthropicMessages])), Some(AnthropicMessages));
        assert_eq!(target_api(Gemini, Some(&[OpenaiResponses, OpenaiChat])), Some(OpenaiChat));
        assert_eq!(target_api(OpenaiChat, Some(&[OpenaiResponses])), None);
    }

    #[test]
    fn attempt_log_keeps_attempts_per_request_and_forgets_them_when_taken() {
        let host = tollgate_core::host::MemoryHost::new();
        let a = |n: &str| Attempt { deployment: n.into(), status: Some(429), duration_ms: 1, error: None, cooldown_ms: None, tokens: None };
        attempt_log::push(&host, 1, a("x"));
        attempt_log::push(&host, 2, a("y"));
        attempt_log::push(&host, 1, a("z"));
        attempt_log::set_tokens(&host, 1, crate::usage::Tokens { input: 3, output: 4, ..Default::default() });
        let one = attempt_log::take(&host, 1);
        assert_eq!(one.iter().map(|a| a.deployment.as_str()).collect::<Vec<_>>(), ["x", "z"]);
        assert_eq!(one.last().and_then(|a| a.tokens).map(|t| t.total), Some(7));
        assert_eq!(attempt_log::take(&host, 2).len(), 1);
        // A later request in the same slot replaces the earlier one's entry.
        attempt_log::push(&host, 1 + 1024, a("w"));
        assert!(attempt_log::take(&host, 1).is_empty());
        assert_eq!(attempt_log::take(&host, 1 + 1024).len(), 1);
    }
}
