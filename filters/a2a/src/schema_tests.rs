//! `schemas/a2a-config.schema.json` against the config types (issue 21 item 8): every schema
//! object and enum is checked against the serde type it describes (fields, `required`,
//! defaults, unknown fields refused, variants), and every schema object must be in this
//! table. A field added to a config struct without a schema entry fails here, naming it.

use serde_json::{json, Value};
use tollgate_core::schema_check::{check_enum, check_type, enums, objects};

const FILE: &str = "schemas/a2a-config.schema.json";

fn schema() -> Value {
    serde_json::from_str(include_str!("../../../schemas/a2a-config.schema.json")).expect("the schema is JSON")
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
    object!("", crate::config::Config, {});
    object!("/$defs/IdentityConfig", id::IdentityConfig, {});
    object!("/$defs/JwtSource", id::JwtSource, {"payload_key": "p"});
    object!("/$defs/ApiKeySource", id::ApiKeySource, {"keys": []});
    object!("/$defs/ApiKeyEntry", id::ApiKeyEntry, {"sha256": sha, "name": "n", "principal": "p"});
    object!("/$defs/HeaderSource", id::HeaderSource, {"principal": "x-p"});
    object!("/$defs/AuditConfig", tollgate_core::observe::audit::AuditConfig, {});
    object!("/$defs/OtlpConfig", tollgate_core::observe::otlp::OtlpConfig, {"cluster": "c"});
    object!("/$defs/RoutesConfig", crate::config::RoutesConfig, {});
    object!("/$defs/DelegationConfig", crate::config::DelegationConfig, {});
    object!("/$defs/TrustedAgent", crate::config::TrustedAgent, {"principal": "p"});
    object!("/$defs/OnBehalfOfConfig", crate::config::OnBehalfOfConfig, {});
    object!("/$defs/AuthzConfig", crate::config::AuthzConfig, {});
    object!("/$defs/Rule", crate::config::Rule, {"effect": "allow"});
    object!("/$defs/CardsConfig", crate::config::CardsConfig, {});
    object!("/$defs/ConversationsConfig", crate::config::ConversationsConfig, {});
    object!("/$defs/LimitsConfig", crate::config::LimitsConfig, {});
    object!("/$defs/PushNotificationsConfig", crate::config::PushNotificationsConfig, {});
    variants!("/$defs/Combining", tollgate_core::decision::Combining);
    variants!("/$defs/RuleEffect", crate::authz::RuleEffect);
    variants!("/$defs/SignedCards", crate::config::SignedCards);
    for pointer in objects(&s).iter().chain(enums(&s).iter()) {
        if !checked.contains(&pointer.as_str()) {
            problems.push(format!(
                "{FILE} `{pointer}` is checked against no type: add it to the table in filters/a2a/src/schema_tests.rs"
            ));
        }
    }
    assert!(problems.is_empty(), "the schema and the config types disagree:\n  {}", problems.join("\n  "));
}
