use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn key() -> HmacKey {
    HmacKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn credential() -> Credential {
    Credential {
        expiry: 1_000,
        trace_id: TRACE.into(),
        agent: "researcher".into(),
        on_behalf_of: Some("alice".into()),
        team: Some("analytics".into()),
        tier: Some("gold".into()),
        chain: vec!["planner".into(), "researcher".into()],
    }
}

#[test]
fn signed_credential_verifies_with_every_claim() {
    let value = sign(&key(), &credential());
    assert!(value.starts_with("v1;exp=1000;trace=4bf92f3577b34da6a3ce929d0e0e4736;agent=researcher;obo=alice;team=analytics;tier=gold;chain=planner,researcher;sig="), "{value}");
    assert_eq!(verify(&key(), &value, 999), Ok(credential()));
    assert_eq!(check_trace(&credential(), Some(TRACE)), Ok(()));
}

#[test]
fn optional_claims_are_left_out() {
    let c = Credential { on_behalf_of: None, team: None, tier: None, chain: vec![], ..credential() };
    let value = sign(&key(), &c);
    assert!(!value.contains("obo=") && !value.contains("chain="), "{value}");
    assert_eq!(verify(&key(), &value, 0), Ok(c));
}

#[test]
fn separators_in_values_are_encoded_and_read_back() {
    let c = Credential {
        agent: "spiffe://x/ns/a;b=c".into(),
        on_behalf_of: Some("a,lice %é".into()),
        chain: vec!["p,1".into(), "spiffe://x/ns/a;b=c".into()],
        ..credential()
    };
    let value = sign(&key(), &c);
    assert!(value.contains("agent=spiffe://x/ns/a%3bb%3dc"), "{value}");
    assert_eq!(verify(&key(), &value, 0), Ok(c));
}

#[test]
fn expired_at_and_after_expiry() {
    let value = sign(&key(), &credential());
    assert_eq!(verify(&key(), &value, 1_000), Err(Rejection::Expired));
    assert_eq!(verify(&key(), &value, 5_000), Err(Rejection::Expired));
}

#[test]
fn any_altered_claim_or_other_key_is_a_bad_signature() {
    let value = sign(&key(), &credential());
    for (from, to) in [("obo=alice", "obo=bob"), ("exp=1000", "exp=9000"), ("agent=researcher", "agent=planner"),
                       ("team=analytics", "team=admins"), ("trace=4bf9", "trace=4bf8"), (";tier=gold", "")] {
        let altered = value.replace(from, to);
        assert_ne!(altered, value);
        assert_eq!(verify(&key(), &altered, 0), Err(Rejection::BadSignature), "{from}");
    }
    let other = HmacKey::new(b"another key of thirty-two bytes!").unwrap();
    assert_eq!(verify(&other, &value, 0), Err(Rejection::BadSignature));
}

#[test]
fn malformed_values_are_refused_before_parsing() {
    for v in ["", "v1", "v1;exp=1;sig=zz", "garbage;sig=", &"a".repeat(MAX_LEN + 1)] {
        assert_eq!(verify(&key(), v, 0), Err(Rejection::Malformed), "{v}");
    }
}

#[test]
fn signed_but_malformed_content_is_refused() {
    // What the key signs but the gateway never writes: a missing agent, a duplicate or an
    // unknown claim, another version, a bad escape, a chain that does not end with the agent.
    for signed in ["v1;exp=5;trace=ab", "v1;exp=5;trace=ab;agent=a;agent=b", "v1;exp=5;trace=ab;agent=a;role=admin",
                   "v2;exp=5;trace=ab;agent=a", "v1;exp=5;trace=ab;agent=%zz", "v1;exp=x;trace=ab;agent=a",
                   "v1;exp=5;trace=ab;agent=a;chain=a,b"] {
        let mut value = signed.to_string();
        let mac = key().mac(&[DOMAIN.as_bytes(), signed.as_bytes()].concat());
        value.push_str(SIG_SEPARATOR);
        crate::hash::push_hex(&mut value, &mac);
        assert_eq!(verify(&key(), &value, 0), Err(Rejection::Malformed), "{signed}");
    }
}

#[test]
fn trace_binding() {
    let c = credential();
    assert_eq!(check_trace(&c, None), Err(Rejection::NoTrace));
    assert_eq!(check_trace(&c, Some("0af7651916cd43dd8448eb211c80319c")), Err(Rejection::OtherTrace));
}

#[test]
fn peer_certificate_names_the_agent() {
    assert!(peer_names_agent("spiffe://cluster.local/ns/agents/sa/researcher", "researcher", None));
    assert!(peer_names_agent("researcher", "researcher", None));
    assert!(!peer_names_agent("spiffe://cluster.local/ns/agents/sa/planner", "researcher", None));
    assert!(!peer_names_agent("https://x/researcher", "researcher", None));
    assert!(!peer_names_agent("spiffe://researcher", "researcher", None), "a trust domain, no workload");
    // With a trust domain, only its SPIFFE ids name anyone.
    let domain = Some("cluster.local");
    assert!(peer_names_agent("spiffe://Cluster.Local/ns/agents/sa/researcher", "researcher", domain));
    assert!(peer_names_agent("SPIFFE://cluster.local/ns/agents/sa/researcher", "researcher", domain));
    assert!(!peer_names_agent("spiffe://evil.example/ns/agents/sa/researcher", "researcher", domain));
    assert!(!peer_names_agent("spiffe://cluster.local.evil/sa/researcher", "researcher", domain));
    assert!(!peer_names_agent("researcher", "researcher", domain), "a bare SAN is in no trust domain");
}

#[test]
fn decimal_and_mac_helpers() {
    let mut s = String::new();
    push_decimal(&mut s, 0);
    s.push(' ');
    push_decimal(&mut s, u64::MAX);
    assert_eq!(s, "0 18446744073709551615");
    assert!(parse_mac(&"A".repeat(64)).is_none());
    assert_eq!(parse_mac(&"0f".repeat(32)), Some([15u8; 32]));
}
