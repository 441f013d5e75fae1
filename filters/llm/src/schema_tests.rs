//! `schemas/llm-config.schema.json` against the config types (issue 21 item 8): every schema
//! object and enum is checked against the serde type it describes (fields, `required`,
//! defaults, unknown fields refused, variants), and every schema object must be in this
//! table. A field added to a config struct without a schema entry fails here, naming it.

use serde_json::{json, Value};
use tollgate_core::schema_check::{check_enum, check_type, enums, objects};

const FILE: &str = "schemas/llm-config.schema.json";

fn schema() -> Value {
    serde_json::from_str(include_str!("../../../schemas/llm-config.schema.json")).expect("the schema is JSON")
}

#[test]
fn the_config_schema_matches_the_config_types() {
    use tollgate_core::identity as id;
    let s = schema();
    let mut problems = Vec::new();
    let mut checked: Vec<&str> = Vec::new();
    macro_rules! object {
        ($pointer:expr, $ty:ty, $minimal:tt) => {{
            problems.extend(check_type::<$ty>(&s, FILE, $pointer, &json!($minimal)));
            checked.push($pointer);
        }};
    }
    macro_rules! variants {
        ($pointer:expr, $ty:ty) => {{
            problems.extend(check_enum::<$ty>(&s, FILE, $pointer));
            checked.push($pointer);
        }};
    }
    let sha = "0".repeat(64);
    let signing_key = "k".repeat(32);
    object!("", crate::config::Config, {});
    object!("/$defs/IdentityConfig", id::IdentityConfig, {});
    object!("/$defs/JwtSource", id::JwtSource, {"payload_key": "p"});
    object!("/$defs/ApiKeySource", id::ApiKeySource, {"keys": []});
    object!("/$defs/ApiKeyEntry", id::ApiKeyEntry, {"sha256": sha, "name": "n", "principal": "p"});
    object!("/$defs/HeaderSource", id::HeaderSource, {"principal": "x-p"});
    object!("/$defs/GatewaySource", id::GatewaySource, {"signing_key": signing_key});
    object!("/$defs/AuditConfig", tollgate_core::observe::audit::AuditConfig, {});
    object!("/$defs/OtlpConfig", tollgate_core::observe::otlp::OtlpConfig, {"cluster": "c"});
    object!("/$defs/StoreConfig", tollgate_core::fleet::StoreConfig, {"cluster": "c"});
    object!("/$defs/CacheConfig", crate::cache::CacheConfig, {});
    object!("/$defs/CredentialConfig", crate::config::CredentialConfig, {});
    object!("/$defs/DeploymentConfig", crate::config::DeploymentConfig, {"provider": "p"});
    object!("/$defs/FallbackConfig", crate::config::FallbackConfig, {});
    object!("/$defs/LimitConfig", crate::config::LimitConfig, {"id": "l", "scope": "key"});
    object!("/$defs/ModelRoute", crate::config::ModelRoute, {"model": "m"});
    object!("/$defs/PriceConfig", crate::config::PriceConfig, {"model": "m", "input": 1.0, "output": 1.0});
    object!("/$defs/ProviderConfig", crate::config::ProviderConfig, {"name": "p"});
    object!("/$defs/GuardrailsConfig", crate::guardrails::GuardrailsConfig, {});
    object!("/$defs/PolicyConfig", crate::guardrails::PolicyConfig, {"id": "p", "action": "log"});
    object!("/$defs/ModerationConfig", crate::guardrails::ModerationConfig, {"cluster": "c"});
    object!("/$defs/DetectorsConfig", crate::guard::DetectorsConfig, {});
    object!("/$defs/EntropyConfig", crate::guard::EntropyConfig, {});
    object!("/$defs/CustomPattern", crate::guard::CustomPattern, {"name": "n", "pattern": "p"});
    object!("/$defs/WordListConfig", crate::guard::WordListConfig, {"name": "n", "words": []});
    variants!("/$defs/AuthScheme", crate::api::AuthScheme);
    variants!("/$defs/ClientApi", crate::api::ClientApi);
    variants!("/$defs/Scope", crate::limits::Scope);
    variants!("/$defs/Unpriced", crate::config::Unpriced);
    variants!("/$defs/Counters", tollgate_core::fleet::Counters);
    variants!("/$defs/OnFailure", tollgate_core::fleet::OnFailure);
    variants!("/$defs/Protocol", tollgate_core::fleet::Protocol);
    variants!("/$defs/CacheScope", crate::cache::CacheScope);
    variants!("/$defs/CacheWhen", crate::cache::CacheWhen);
    variants!("/$defs/Side", crate::guardrails::Side);
    variants!("/$defs/ModerationOnFailure", crate::guardrails::OnFailure);
    variants!("/$defs/GuardAction", crate::guard::action::GuardAction);
    variants!("/$defs/Builtin", crate::guard::Builtin);
    for pointer in objects(&s).iter().chain(enums(&s).iter()) {
        if !checked.contains(&pointer.as_str()) {
            problems.push(format!(
                "{FILE} `{pointer}` is checked against no type: add it to the table in filters/llm/src/schema_tests.rs"
            ));
        }
    }
    assert!(problems.is_empty(), "the schema and the config types disagree:\n  {}", problems.join("\n  "));
}
