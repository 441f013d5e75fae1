//! `schemas/mcp-config.schema.json` against the config types (issue 21 item 8): every schema
//! object and enum is checked against the serde type it describes (fields, `required`,
//! defaults, unknown fields refused, variants), and every schema object must be in this
//! table. A field added to a config struct without a schema entry fails here, naming it.

use serde_json::{json, Value};
use tollgate_core::schema_check::{check_enum, check_type, enums, objects};

const FILE: &str = "schemas/mcp-config.schema.json";

fn schema() -> Value {
    serde_json::from_str(include_str!("../../../schemas/mcp-config.schema.json")).expect("the schema is JSON")
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
    object!("/$defs/ServerConfig", crate::config::ServerConfig, {});
    object!("/$defs/PolicyConfig", crate::config::PolicyConfig, {});
    object!("/$defs/RuleConfig", crate::config::RuleConfig, {"id": "r", "effect": "allow"});
    object!("/$defs/ArgumentConfig", crate::config::ArgumentConfig, {"path": "$.a"});
    object!("/$defs/RateLimitConfig", crate::config::RateLimitConfig, {"id": "r", "max_calls": 1, "window_secs": 1, "per": "principal"});
    object!("/$defs/ApprovalConfig", crate::approval::ApprovalConfig, {"cluster": "c"});
    object!("/$defs/OAuthConfig", crate::oauth::OAuthConfig, {"resource": "https://gw/mcp", "authorization_servers": ["https://as"]});
    object!("/$defs/RouterConfig", crate::router::RouterConfig, {"servers": []});
    object!("/$defs/TokenExchangeConfig", crate::tokenexchange::TokenExchangeConfig,
            {"cluster": "c", "authority": "a", "client_id": "i", "client_secret": "s", "servers": {}});
    object!("/$defs/ServerExchange", crate::tokenexchange::ServerExchange, {});
    object!("/$defs/ToolPinningConfig", crate::pinning::ToolPinningConfig, {});
    object!("/$defs/SessionsConfig", crate::sessions::SessionsConfig, {});
    variants!("/$defs/ChangedTool", crate::pinning::ChangedTool);
    variants!("/$defs/ClientAuth", crate::tokenexchange::ClientAuth);
    variants!("/$defs/Combining", tollgate_core::decision::Combining);
    variants!("/$defs/Counters", tollgate_core::fleet::Counters);
    variants!("/$defs/OnFailure", tollgate_core::fleet::OnFailure);
    variants!("/$defs/Protocol", tollgate_core::fleet::Protocol);
    variants!("/$defs/DenyStyle", crate::config::DenyStyle);
    variants!("/$defs/Per", crate::config::Per);
    variants!("/$defs/Quantifier", crate::config::Quantifier);
    variants!("/$defs/RuleEffect", crate::config::RuleEffect);
    for pointer in objects(&s).iter().chain(enums(&s).iter()) {
        if !checked.contains(&pointer.as_str()) {
            problems.push(format!(
                "{FILE} `{pointer}` is checked against no type: add it to the table in filters/mcp/src/schema_tests.rs"
            ));
        }
    }
    assert!(problems.is_empty(), "the schema and the config types disagree:\n  {}", problems.join("\n  "));
}
