use super::*;
use tollgate_core::config::load;

#[test]
fn empty_config_is_valid() {
    let c = load::<Config>(b"").unwrap().compile().unwrap();
    assert_eq!(c.delegation.max_hops, 8);
    assert!(c.cards.rewrite);
    assert_eq!(c.routes.agent_key, "agent");
}

#[test]
fn bad_fields_are_named() {
    let cases: &[(&str, &str)] = &[
        (r#"{"delegation":{"max_hops":0}}"#, "delegation.max_hops"),
        (r#"{"delegation":{"signing_key":"short"}}"#, "delegation.signing_key"),
        (r#"{"delegation":{"context_ttl_secs":0}}"#, "delegation.context_ttl_secs"),
        (r#"{"delegation":{"context_ttl_secs":86401}}"#, "delegation.context_ttl_secs"),
        (r#"{"delegation":{"context_ttl_secs":18446744073709551615}}"#, "delegation.context_ttl_secs"),
        (r#"{"delegation":{"trusted_agents":[{"principal":"p","agent":"a,b"}]}}"#, "delegation.trusted_agents[0].agent"),
        (r#"{"cards":{"public_base_url":"gw.example.com"}}"#, "cards.public_base_url"),
        (r#"{"cards":{"public_base_url":"https://user@gw.example.com"}}"#, "cards.public_base_url"),
        (r#"{"cards":{"public_base_url":"https://gw.example.com/a b"}}"#, "cards.public_base_url"),
        (r#"{"authz":{"rules":[{"effect":"deny","methods":["SendMesage"]}]}}"#, "authz.rules[0].methods[0]"),
        (r#"{"authz":{"rules":[{"effect":"nope"}]}}"#, "authz.rules[0].effect"),
        (r#"{"authz":{"combining":"deny_overrides"}}"#, "authz.combining"),
        (r#"{"authz":{"combining":"deny_wins"}}"#, "authz.combining"),
        (r#"{"on_behalf_of":{"jwt_claim":"sub"}}"#, "on_behalf_of.jwt_claim"),
        (r#"{"cards":{"signed":"resign"}}"#, "cards.signed"),
        (r#"{"routes":{"agnet_key":"x"}}"#, "routes.agnet_key"),
        (r#"{"push_notifications":{"allowed_hosts":["http://x.example"]}}"#, "push_notifications.allowed_hosts[0]"),
        (r#"{"push_notifications":{"allowed_hosts":["ok.example","Hooks.Example"]}}"#, "push_notifications.allowed_hosts[1]"),
        (r#"{"push_notifications":{"refused_hosts":[""]}}"#, "push_notifications.refused_hosts[0]"),
        (r#"{"push_notifications":{"allow_privat":true}}"#, "push_notifications.allow_privat"),
    ];
    for (json, field) in cases {
        let err = load::<Config>(json.as_bytes()).unwrap_err();
        assert!(err.0.starts_with(field), "{json}: {err}");
    }
}

#[test]
fn context_ttl_is_bounded_to_a_day() {
    let ok: Config = load(br#"{"delegation":{"context_ttl_secs":86400}}"#).unwrap();
    assert_eq!(ok.delegation.context_ttl_secs, MAX_CONTEXT_TTL_SECS);
    let err = load::<Config>(br#"{"delegation":{"context_ttl_secs":86401}}"#).unwrap_err();
    assert!(err.0.starts_with("delegation.context_ttl_secs") && err.0.contains("86400"), "{err}");
}

#[test]
fn rule_methods_accept_both_dialects() {
    let c: Config = load(
        br#"{"authz":{"rules":[{"effect":"allow_originator","methods":["tasks/cancel","GetTask","*PushNotification*","AgentCard"]}]}}"#,
    )
    .unwrap();
    let state = c.compile().unwrap();
    let names: Vec<&str> = state.authz.rules()[0].methods.iter().map(|g| g.pattern()).collect();
    assert_eq!(names, vec!["CancelTask", "GetTask", "*PushNotification*", "AgentCard"]);
}

#[test]
fn rules_combine_by_first_match_also_when_named() {
    let named = load::<Config>(br#"{"authz":{"combining":"first_match","rules":[{"effect":"deny"}]}}"#).unwrap();
    assert_eq!(named.authz.combining, Some(crate::authz::Combining::FirstMatch));
}


#[test]
fn field_paths_match_serde_path_to_error() {
    // The demo configuration (envoy/), each value made wrong in turn: the same field path as
    // serde_path_to_error names.
    let valid = serde_json::json!({
        "identity": {"api_keys": {"headers": ["x-api-key", "authorization"], "keys": [{"name": "planner-agent", "principal": "svc-planner", "sha256": "445d8701922cebc393619eeb33b10b97e4f0ef01b4970262df5826d2eea9b94b"}]}},
        "delegation": {"max_hops": 5, "trusted_agents": [{"principal": "svc-planner", "agent": "planner"}], "signing_key": "CHANGE-ME-a-random-secret-of-32-bytes-or-more", "context_ttl_secs": 600},
        "authz": {"default": "allow", "rules": [{"id": "cancel-own-tasks", "methods": ["CancelTask"], "effect": "allow_originator"},
                                                {"id": "researcher-only-via-planner", "targets": ["researcher"], "callers": ["planner"], "effect": "allow"}]},
        "cards": {"rewrite": true, "public_base_url": null, "trust_forwarded_proto": true, "signed": "keep", "max_bytes": 65536},
        "conversations": {"capacity": 4096, "ttl_secs": 3600},
        "limits": {"max_request_body_bytes": 1048576, "max_sse_event_bytes": 1048576, "max_list_response_bytes": 1048576},
        "log_message_parts": false, "forward_credentials": false, "audit": {"log": false}
    });
    let refused = tollgate_core::config::paths_agree::<Config>(&valid, tollgate_core::config::reference_error::<Config>);
    assert!(refused > 300, "{refused}");
}
