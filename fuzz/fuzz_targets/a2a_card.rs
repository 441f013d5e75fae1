//! A2A agent-card rewriting (filters/a2a/src/card.rs). The card comes from the agent; the
//! mapping from configuration or the request (fuzzed too, in their documented shapes).
//! Asserts:
//! - every http(s) interface URL of a rewritten card (`url`, `additionalInterfaces[].url`,
//!   `supportedInterfaces[].url`) names the gateway: it starts with the public base's
//!   origin followed by `/`;
//! - a signed card is never rewritten with its signatures left: kept untouched
//!   (`SignedCards::Keep`) or served without `signatures` (`Strip`);
//! - members other than those URLs and `signatures` are unchanged;
//! - rewriting is idempotent when the public prefix is not `/`: a rewritten card rewrites
//!   to itself (no prefix doubled);
//! - `map_url` never panics on any URL (multi-byte characters anywhere).
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_a2a::card::{map_url, normalize_prefix, public_base, rewrite_body, Mapping};
use tollgate_a2a::config::SignedCards;
use tollgate_fuzz::Input;

fn urls(card: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::String(u)) = card.get("url") {
        out.push(u.clone());
    }
    for list in ["additionalInterfaces", "supportedInterfaces"] {
        if let Some(Value::Array(items)) = card.get(list) {
            for i in items {
                if let Some(Value::String(u)) = i.get("url") {
                    out.push(u.clone());
                }
            }
        }
    }
    out
}

fn is_http(u: &str) -> bool {
    let b = u.as_bytes();
    b.get(..7).is_some_and(|s| s.eq_ignore_ascii_case(b"http://")) || b.get(..8).is_some_and(|s| s.eq_ignore_ascii_case(b"https://"))
}

/// The card with its URLs and signatures blanked: what must not change.
fn rest(card: &Value) -> Value {
    let mut c = card.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("signatures");
        if o.get("url").is_some_and(Value::is_string) {
            o.insert("url".into(), Value::Null);
        }
        for list in ["additionalInterfaces", "supportedInterfaces"] {
            if let Some(Value::Array(items)) = o.get_mut(list) {
                for i in items {
                    if let Some(io) = i.as_object_mut() {
                        if io.get("url").is_some_and(Value::is_string) {
                            io.insert("url".into(), Value::Null);
                        }
                    }
                }
            }
        }
    }
    c
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let authority = String::from_utf8_lossy(input.part()).into_owned();
    let prefix_in = String::from_utf8_lossy(input.part()).into_owned();
    let upstream_in = String::from_utf8_lossy(input.part()).into_owned();
    let body = input.rest();

    // A configured base passed the config's check (`check_base_url`): host[:port] only.
    let configured = (flags & 1 != 0 && tollgate_a2a::card::is_host_port(authority.trim())).then(|| format!("https://{}", authority.trim()));
    let Some(base) = public_base(configured.as_deref(), None, Some(if flags & 2 != 0 { "https" } else { "http" }), Some(&authority)) else {
        return;
    };
    // The origin: scheme and authority, up to the base's path.
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let origin_end = base[after_scheme..].find('/').map(|j| after_scheme + j).unwrap_or(base.len());
    let origin = &base[..origin_end];
    let public_prefix = normalize_prefix(&prefix_in);
    let upstream_prefix = normalize_prefix(&upstream_in);
    let m = Mapping { public_base: &base, public_prefix: &public_prefix, upstream_prefix: &upstream_prefix };
    let signed = if flags & 4 != 0 { SignedCards::Strip } else { SignedCards::Keep };
    let in_result = flags & 8 != 0;

    if let Ok(text) = std::str::from_utf8(body) {
        let _ = map_url(text, &m);
    }
    let Ok((new, outcome)) = rewrite_body(body, &m, signed, in_result) else { return };
    let doc: Value = serde_json::from_slice(body).expect("rewrite_body read it");
    let card_before = if in_result { doc.get("result").cloned() } else { Some(doc.clone()) };
    let Some(card_before) = card_before else {
        assert!(new.is_none());
        return;
    };
    if outcome.signed && signed == SignedCards::Keep {
        assert!(new.is_none(), "a signed card was rewritten");
        return;
    }
    let Some(new) = new else {
        // Unchanged: its URLs already name the gateway (or are not http URLs).
        if card_before.is_object() {
            for u in urls(&card_before) {
                if is_http(&u) {
                    assert_eq!(map_url(&u, &m).as_deref(), Some(u.as_str()), "a URL left that maps elsewhere");
                }
            }
        }
        return;
    };
    let after: Value = serde_json::from_slice(&new).expect("rewritten body is JSON");
    let card_after = if in_result { after.get("result").cloned().expect("result kept") } else { after.clone() };
    if outcome.signed {
        assert!(card_after.get("signatures").is_none(), "signatures left on a rewritten card");
    }
    for u in urls(&card_after) {
        if is_http(&u) {
            assert!(u.starts_with(&format!("{origin}/")), "URL {u:?} does not name the gateway {origin:?}");
        }
    }
    assert_eq!(rest(&card_before), rest(&card_after), "other members changed");
    // F2 (fuzz/regressions/a2a_card/, fixed): an authority with `#`, `?` or `\` once made
    // the base `http://#gw:1`, whose rewrites differed each time.
    if public_prefix != "/" {
        let (again, _) = rewrite_body(&new, &m, signed, in_result).expect("rewritten card reads");
        assert!(again.is_none(), "rewriting is not idempotent: {:?}", String::from_utf8_lossy(&again.unwrap()));
    }
});
