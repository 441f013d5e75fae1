use super::*;
use crate::limits::{Scope, Wanted};
use tollgate_core::fleet::rls::{Answer, Status};
use tollgate_core::wire::protobuf::{Reader, Value};

fn rule(id: &str, window: Window, on_failure: OnFailure) -> Limit {
    Limit {
        id: id.into(),
        scope: Scope::Team,
        models: None,
        requests: Some(10),
        tokens: None,
        cost_micro_usd: Some(5_000),
        window,
        fleet: Some(on_failure),
        delegated: Default::default(),
    }
}

fn want(limit: usize, dimension: Dimension, amount: u64, cap: u64) -> Wanted {
    Wanted { limit, dimension, subject: "payments".into(), key: format!("k{limit}{dimension:?}"), amount, cap }
}

fn store(protocol: Protocol) -> StoreConfig {
    StoreConfig { cluster: "tollgate_limits".into(), timeout_ms: 150, protocol, domain: "tollgate".into() }
}

fn strings(bytes: &[u8]) -> Vec<String> {
    // Every length-delimited field that reads as UTF-8 text, depth-first: enough to see
    // which names a message carries.
    let mut out = Vec::new();
    for (_, v) in Reader::new(bytes).flatten() {
        if let Value::Bytes(b) = v {
            match std::str::from_utf8(b) {
                Ok(t) if !t.is_empty() && t.bytes().all(|c| c.is_ascii_graphic()) => out.push(t.to_string()),
                _ => out.extend(strings(b)),
            }
        }
    }
    out
}

#[test]
fn admission_asks_one_descriptor_per_counter() {
    let rules = [rule("team-month", Window::parse("month").unwrap(), OnFailure::FailClosed)];
    let wanted = [want(0, Dimension::Requests, 1, 10), want(0, Dimension::CostMicroUsd, 1_200, 5_000)];
    let refs: Vec<&Wanted> = wanted.iter().collect();
    let message = reservation_request(&store(Protocol::Tollgate), &rules, &refs);
    let text = strings(&message);
    for expected in ["tollgate", "llm.team-month.requests", "llm.team-month.cost", "payments", "month", "5000"] {
        assert!(text.iter().any(|t| t == expected), "{expected} in {text:?}");
    }
}

#[test]
fn an_answer_becomes_holds_or_the_refusal_of_the_counter_over() {
    let rules = [rule("team", Window::fixed(60), OnFailure::FailClosed)];
    let wanted = [want(0, Dimension::Requests, 1, 10), want(0, Dimension::CostMicroUsd, 1_200, 5_000)];
    let refs: Vec<&Wanted> = wanted.iter().collect();
    let now_ms = 1_000_030_000;
    let ok = Answer {
        over_limit: false,
        statuses: vec![
            Status { over_limit: false, remaining: 7, reset_secs: Some(30) },
            Status { over_limit: false, remaining: 800, reset_secs: Some(30) },
        ],
        reserved_at_ms: Some(1_000_029_000),
    };
    let held = answered(&rules, &refs, &ok, now_ms).unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!((held[1].reservation.amount, held[1].reservation.used, held[1].reservation.reset_secs), (1_200, 4_200, 30));
    assert_eq!(held[1].reservation.window_start_secs, 1_000_020, "the store's clock picks the window");
    assert_eq!(held[0].fleet, Some(FleetHold { reserved_at_ms: 1_000_029_000, subject: "payments".into(), cap: 10 }));

    let over = Answer {
        over_limit: true,
        statuses: vec![
            Status { over_limit: false, remaining: 9, reset_secs: Some(30) },
            Status { over_limit: true, remaining: 300, reset_secs: Some(29) },
        ],
        reserved_at_ms: None,
    };
    let refused = answered(&rules, &refs, &over, now_ms).unwrap_err();
    assert_eq!((refused.dimension, refused.limit, refused.used, refused.requested, refused.reset_secs), (Dimension::CostMicroUsd, 5_000, 4_700, 1_200, 29));
    assert!(!refused.unavailable);
    // A plain server: OVER_LIMIT with no statuses names the first counter, full.
    let plain = answered(&rules, &refs, &Answer { over_limit: true, ..Answer::default() }, now_ms).unwrap_err();
    assert_eq!((plain.dimension, plain.used, plain.reset_secs), (Dimension::Requests, 10, 50));
}

#[test]
fn a_silent_store_fails_closed_unless_every_limit_may_count_locally() {
    let rules = [rule("closed", Window::fixed(60), OnFailure::FailClosed), rule("open", Window::fixed(60), OnFailure::FailOpenLocal)];
    let wanted = [want(1, Dimension::Requests, 1, 10), want(0, Dimension::Requests, 1, 10)];
    let refused = failed(&rules, &wanted.iter().collect::<Vec<_>>(), 100).unwrap_err();
    assert!(refused.unavailable && refused.id == "closed");
    assert!(failed(&rules, &[&wanted[0]], 100).is_ok());
}

#[test]
fn settlements_return_the_unused_part_or_count_overage_on_a_plain_server() {
    let rules = [rule("team", Window::fixed(60), OnFailure::FailClosed)];
    let wanted = [want(0, Dimension::Requests, 1, 10), want(0, Dimension::CostMicroUsd, 1_200, 5_000)];
    let refs: Vec<&Wanted> = wanted.iter().collect();
    let ok = Answer { over_limit: false, statuses: vec![], reserved_at_ms: Some(5_000) };
    let held = answered(&rules, &refs, &ok, 6_000).unwrap();

    let exact = Actual { requests: 1, tokens: 0, cost_micro_usd: 1_200 };
    assert!(settlements(&store(Protocol::Tollgate), &rules, &held, exact).is_empty(), "nothing to change");

    let cheaper = Actual { requests: 1, tokens: 0, cost_micro_usd: 300 };
    let calls = settlements(&store(Protocol::Tollgate), &rules, &held, cheaper);
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].service, calls[0].method, calls[0].cluster.as_str()), (rls::SETTLE_SERVICE, rls::SETTLE_METHOD, "tollgate_limits"));
    let top: Vec<_> = Reader::new(&calls[0].message).flatten().collect();
    assert_eq!(top.last(), Some(&(3, Value::Varint(5_000))), "settled in the reservation's window");
    let items: Vec<_> = top.iter().filter(|(n, _)| *n == 2).collect();
    assert_eq!(items.len(), 1, "only the counter that changed");
    let item: Vec<_> = Reader::new(items[0].1.as_bytes().unwrap()).flatten().collect();
    assert_eq!((item[1], item[2]), ((2, Value::Varint(1_200)), (3, Value::Varint(300))));

    // A plain rate-limit service: refunds are impossible, overage is more hits.
    assert!(settlements(&store(Protocol::EnvoyRls), &rules, &held, cheaper).is_empty());
    let dearer = Actual { requests: 1, tokens: 0, cost_micro_usd: 2_000 };
    let calls = settlements(&store(Protocol::EnvoyRls), &rules, &held, dearer);
    assert_eq!((calls.len(), calls[0].method), (1, rls::RLS_METHOD));
    assert!(strings(&calls[0].message).iter().any(|t| t == "llm.team.cost"));
}

#[test]
fn usage_above_the_reservation_over_the_fleet_cap_is_an_overshoot() {
    let rules = [rule("team", Window::fixed(60), OnFailure::FailClosed), rule("other", Window::fixed(60), OnFailure::FailClosed)];
    let wanted = [want(0, Dimension::CostMicroUsd, 1_200, 5_000), want(1, Dimension::Requests, 1, 10)];
    let refs: Vec<&Wanted> = wanted.iter().collect();
    // The store holds 4_200 of the 5_000 with this reservation in.
    let ok = Answer {
        over_limit: false,
        statuses: vec![Status { over_limit: false, remaining: 800, reset_secs: Some(30) }, Status { over_limit: false, remaining: 9, reset_secs: Some(30) }],
        reserved_at_ms: Some(5_000),
    };
    let held = answered(&rules, &refs, &ok, 6_000).unwrap();
    let actual = |cost| Actual { requests: 1, tokens: 0, cost_micro_usd: cost };
    assert!(overshot(&rules, &held, actual(300)).is_empty(), "a refund");
    assert!(overshot(&rules, &held, actual(2_000)).is_empty(), "800 more: exactly the cap");
    assert_eq!(overshot(&rules, &held, actual(2_001)), vec![0], "one micro-USD over the cap");
    // Local holds are reconciled (and judged) by limits::reconcile.
    let local: Vec<Held> = held.iter().cloned().map(|h| Held { fleet: None, ..h }).collect();
    assert!(overshot(&rules, &local, actual(9_000)).is_empty());
}
