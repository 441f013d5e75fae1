//! The gateway credential (filters/core/src/gateway.rs), a header value every LLM and MCP
//! request may carry. Asserts:
//! - `verify` never panics on any value, and accepts nothing the fleet's key did not sign;
//! - whatever content the key signs (the parser sees only signed content), `verify` either
//!   reads a credential whose re-signing verifies to the same credential, or says malformed
//!   or expired;
//! - any credential built from arbitrary claims (its chain ending with its agent, as the
//!   gateway writes it) signs and verifies back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::gateway::{sign, verify, Credential, HmacKey, Rejection};
use tollgate_fuzz::Input;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let key = HmacKey::new(KEY).unwrap();
    let mut input = Input::new(data);
    let now = u64::from(input.byte()) * 1000;
    let raw = text(input.part());

    // Anything presented: no panic; never accepted unless it carries the key's MAC.
    // Re-signed values escape what the gateway never writes raw, so may grow past MAX_LEN.
    let round_trips = |c: &Credential| {
        let again = sign(&key, c);
        again.len() > tollgate_core::gateway::MAX_LEN || verify(&key, &again, now).as_ref() == Ok(c)
    };
    if let Ok(c) = verify(&key, &raw, now) {
        assert!(round_trips(&c), "{c:?}");
    }
    let other = HmacKey::new(b"another key, also thirty-two bytes").unwrap();
    if verify(&other, &raw, now).is_ok() {
        panic!("accepted under another key: {raw:?}");
    }

    // The same bytes signed by the key (as if the gateway had written them).
    let mut signed = raw.clone();
    if let Some((content, _)) = raw.rsplit_once(";sig=") {
        signed = content.to_string();
    }
    // Header values reach the filter trimmed: leading whitespace is no part of what is signed.
    let signed = signed.trim_start().to_string();
    let mac = key.mac(&[b"tollgate-gateway/v1\n".as_slice(), signed.as_bytes()].concat());
    let value = format!("{signed};sig={}", tollgate_core::hash::hex(&mac));
    match verify(&key, &value, now) {
        Ok(c) => {
            assert!(c.expiry > now && !c.agent.is_empty() && !c.trace_id.is_empty());
            assert!(round_trips(&c), "{c:?}");
        }
        Err(e) => assert!(matches!(e, Rejection::Malformed | Rejection::Expired), "{e:?} for {value:?}"),
    }

    // Claims of any content round-trip.
    let nonempty = |s: String| if s.is_empty() { "x".to_string() } else { s };
    let optional = |s: String| (!s.is_empty()).then_some(s);
    let trace_id = nonempty(text(input.part()));
    let agent = nonempty(text(input.part()));
    let (on_behalf_of, team, tier) = (optional(text(input.part())), optional(text(input.part())), optional(text(input.part())));
    // A chain the gateway writes ends with the agent it was issued to (the parser refuses others).
    let mut chain: Vec<String> = input.rest().split(|b| *b == b'\n').map(|e| nonempty(text(e))).take(64).collect();
    if let Some(last) = chain.last_mut() {
        last.clone_from(&agent);
    }
    let claims = Credential { expiry: now + 1, trace_id, agent, on_behalf_of, team, tier, chain };
    let value = sign(&key, &claims);
    if value.len() <= tollgate_core::gateway::MAX_LEN {
        assert_eq!(verify(&key, &value, now), Ok(claims));
    }
});
