use super::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key(bytes: &[u8]) -> HmacKey {
    HmacKey::new(bytes).unwrap()
}

/// The hand-written HMAC-SHA256 (RFC 2104) this module used before the `hmac` crate: the
/// reference that signatures stay the same across the change (agents hand a signed context
/// back on the next hop, possibly to a gateway of the other build).
fn old_hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k.iter_mut().zip(Sha256::digest(key)).for_each(|(dst, src)| *dst = src);
    } else {
        k.iter_mut().zip(key).for_each(|(dst, src)| *dst = *src);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for ((i, o), kb) in ipad.iter_mut().zip(opad.iter_mut()).zip(k) {
        *i ^= kb;
        *o ^= kb;
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

#[test]
fn hmac_known_answer() {
    // RFC 4231 test case 2.
    let mac = key(b"Jefe").mac(b"what do ya want for nothing?");
    assert_eq!(
        tollgate_core::hash::hex(&mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Keys longer than a block are hashed first (RFC 4231 test case 6).
    let mac = key(&[0xaa; 131]).mac(b"Test Using Larger Than Block-Size Key - Hash Key First");
    assert_eq!(
        tollgate_core::hash::hex(&mac),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn hmac_equals_the_old_implementation() {
    let long_key = [0x5au8; 200];
    let keys: [&[u8]; 5] = [KEY, b"", b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &long_key, &[0u8; 65]];
    let messages: [&[u8]; 4] = [b"", b"tollgate-a2a/v1\n12\nagent-a,agent-b\nalice\n1700000600", &[0xffu8; 1000], b"x"];
    for k in keys {
        for m in messages {
            assert_eq!(key(k).mac(m), old_hmac(k, m), "key {} bytes, message {} bytes", k.len(), m.len());
            assert!(key(k).verify(m, &old_hmac(k, m)));
        }
    }
    // The signature value over fixed inputs, as the old build wrote it.
    let sig = sign(&key(KEY), 3, "agent-a,agent-b", Some("alice"), 1_700_000_600);
    let old = old_hmac(KEY, b"tollgate-a2a/v1\n3\nagent-a,agent-b\nalice\n1700000600");
    assert_eq!(sig, format!("v1.1700000600.{}", tollgate_core::hash::hex(&old)));
}

#[test]
fn only_the_lower_case_hex_mac_verifies() {
    let p = presented(1, "agent-a", None, 1000);
    let sig = p.sig.clone().unwrap();
    assert!(verify(&key(KEY), &p, 10));
    for bad in [sig.to_uppercase().replace("V1.", "v1."), format!("{sig}0"), sig[..sig.len() - 1].to_string(), format!("{}g", &sig[..sig.len() - 1])] {
        assert!(!verify(&key(KEY), &Presented { sig: Some(bad.clone()), ..p.clone() }, 10), "{bad}");
    }
}

#[test]
fn chain_elements_encode_as_before() {
    // The hand-written encoder this replaced, as the reference.
    let reference = |s: &str| -> String {
        let mut out = String::new();
        for c in s.chars() {
            if c.is_ascii_graphic() && c != ',' && c != '%' {
                out.push(c);
            } else {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        out
    };
    let all: String = (0u8..=127).map(char::from).collect();
    for s in ["agent-a", "spiffe://x/ns/a,b", "100%", "\u{fc} \u{1f600}", "a\u{1f}\n\u{7f}", all.as_str()] {
        let mut out = String::new();
        encode_element(s, &mut out);
        assert_eq!(out, reference(s), "{s:?}");
    }
}

#[test]
fn signature_value_is_stable() {
    // The exact bytes signed and the value's shape: agents hand it back on the next hop,
    // possibly to a gateway of another build.
    let key = key(KEY);
    let mac = key.mac(b"tollgate-a2a/v1\n12\nagent-a,agent-b\nalice\n1700000600");
    let expected = format!("v1.1700000600.{}", tollgate_core::hash::hex(&mac));
    assert_eq!(sign(&key, 12, "agent-a,agent-b", Some("alice"), 1_700_000_600), expected);
    let mac = key.mac(b"tollgate-a2a/v1\n0\n\n\n0");
    assert_eq!(sign(&key, 0, "", None, 0), format!("v1.0.{}", tollgate_core::hash::hex(&mac)));
    for n in [0, 7, 10, 99, 12_345, u64::MAX / 10, u64::MAX] {
        let mut s = String::from("x");
        push_decimal(&mut s, n);
        assert_eq!(s, format!("x{n}"));
    }
}

#[test]
fn context_expiry_saturates() {
    assert_eq!(context_expiry(1_700_000_000_999_999_999, 600), 1_700_000_600);
    assert_eq!(context_expiry(0, 1), 1);
    assert_eq!(context_expiry(u64::MAX, 600), u64::MAX / 1_000_000_000 + 600);
    assert_eq!(context_expiry(u64::MAX, u64::MAX), u64::MAX, "saturates, never wraps into the past");
    assert_eq!(context_expiry(1_000_000_000, u64::MAX - 1), u64::MAX);
}

#[test]
fn chain_encoding_round_trips() {
    let chain = vec!["agent-a".to_string(), "spiffe://x/ns/a,b".to_string(), "100%".to_string(), "ü".to_string(), "a\u{1f}\n".to_string()];
    let encoded = encode_chain(&chain);
    assert_eq!(encoded, "agent-a,spiffe://x/ns/a%2Cb,100%25,%C3%BC,a%1F%0A");
    assert_eq!(decode_chain(&encoded), Some(chain));
    assert_eq!(decode_chain(""), Some(vec![]));
    assert_eq!(decode_chain("a,,b"), None);
    assert_eq!(decode_chain("a,b%zz"), None, "invalid escapes are refused, not kept");
    assert_eq!(decode_chain("a,%FF"), None);
    assert_eq!(decode_chain(&vec!["a"; MAX_CHAIN + 1].join(",")), None);
}

fn presented(hop: u32, chain: &str, obo: Option<&str>, expiry: u64) -> Presented {
    Presented {
        hop: Some(hop.to_string()),
        chain: Some(chain.into()),
        on_behalf_of: obo.map(String::from),
        sig: Some(sign(&key(KEY), hop, chain, obo, expiry)),
    }
}

#[test]
fn signatures_verify_and_expire_and_bind_every_field() {
    let p = presented(1, "agent-a", Some("alice"), 1000);
    assert!(verify(&key(KEY), &p, 999));
    assert!(!verify(&key(KEY), &p, 1000), "expired");
    assert!(!verify(&key(b"another key another key another!"), &p, 10));
    for tamper in [
        Presented { hop: Some("0".into()), ..p.clone() },
        Presented { chain: Some("agent-b".into()), ..p.clone() },
        Presented { on_behalf_of: Some("mallory".into()), ..p.clone() },
        Presented { on_behalf_of: None, ..p.clone() },
        Presented { sig: Some(p.sig.clone().unwrap().replace("v1.1000.", "v1.9999.")), ..p.clone() },
        Presented { sig: None, ..p.clone() },
    ] {
        assert!(!verify(&key(KEY), &tamper, 10), "{tamper:?}");
    }
}

#[test]
fn untrusted_context_is_discarded() {
    let p = presented(5, "x,y", Some("mallory"), 1000);
    assert_eq!(accept(&p, None, false), Inbound::untrusted());
}

#[test]
fn signed_context_names_the_caller() {
    let inbound = accept(&presented(1, "agent-a", Some("alice"), 1000), None, true);
    assert_eq!(inbound.trust, Trust::Signature);
    assert_eq!(inbound.caller_agent.as_deref(), Some("agent-a"));
    assert_eq!(inbound.hop, 1);
    assert_eq!(inbound.on_behalf_of.as_deref(), Some("alice"));
    // A signed but empty chain names nobody: not trusted.
    assert_eq!(accept(&presented(1, "", None, 1000), None, true).trust, Trust::None);
}

#[test]
fn trusted_agent_joins_its_own_chain() {
    let inbound = accept(&Presented::default(), Some("agent-a"), false);
    assert_eq!(inbound.chain, vec!["agent-a"]);
    assert_eq!(inbound.hop, 0);
    let inbound = accept(&presented(1, "agent-a", None, 1), Some("agent-a"), false);
    assert_eq!(inbound.chain, vec!["agent-a"]);
    assert_eq!(inbound.hop, 1);
}

#[test]
fn hops_loops_and_depth() {
    let start = Inbound::untrusted();
    let hop1 = decide(&start, "agent-a", 3, false).unwrap();
    assert_eq!(hop1, Outgoing { hop: 1, chain: vec!["agent-a".into()] });
    let at_a = Inbound { hop: 1, chain: hop1.chain, on_behalf_of: None, caller_agent: Some("agent-a".into()), trust: Trust::Signature };
    let hop2 = decide(&at_a, "agent-b", 3, false).unwrap();
    assert_eq!(hop2.hop, 2);
    let at_b = Inbound { hop: 2, chain: hop2.chain, ..at_a.clone() };
    assert_eq!(decide(&at_b, "agent-a", 3, false), Err(Violation::Loop));
    assert!(decide(&at_b, "agent-a", 3, true).is_ok(), "continuing agent-a's own task is not a loop");
    assert_eq!(decide(&at_b, "agent-c", 3, false).map(|o| o.hop), Ok(3));
    assert_eq!(decide(&at_b, "agent-c", 2, false), Err(Violation::MaxDepth));
    assert_eq!(decide(&at_a, "agent-a", 8, false), Err(Violation::Loop), "calling itself");
}

#[test]
fn the_signing_memo_gives_what_sign_gives() {
    let k = key(&[7u8; 32]);
    let memo = SignMemo::default();
    let cases: [(u32, &str, Option<&str>, u64); 7] = [
        (1, "alice", None, 100),
        (1, "alice", None, 100),
        (1, "alice", None, 101),
        (2, "alice", None, 101),
        (2, "alice,a", None, 101),
        (2, "alice,a", Some("bob"), 101),
        (2, "alice,a", Some("bob"), 101),
    ];
    for (hop, chain, obo, expiry) in cases {
        assert_eq!(memo.sign(&k, hop, chain, obo, expiry), sign(&k, hop, chain, obo, expiry), "{hop} {chain} {obo:?} {expiry}");
    }
    // A repeated message is answered from the memo, not signed again: shown by a memo asked
    // with another key (never the case in the filter: the memo lives in the per-VM State,
    // which a new key replaces whole).
    let other = key(&[9u8; 32]);
    assert_eq!(memo.sign(&other, 2, "alice,a", Some("bob"), 101), sign(&k, 2, "alice,a", Some("bob"), 101));
    assert_eq!(memo.sign(&other, 2, "alice,a", Some("bob"), 102), sign(&other, 2, "alice,a", Some("bob"), 102));
}
