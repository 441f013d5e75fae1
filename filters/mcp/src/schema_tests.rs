//! `schemas/mcp-config.schema.json` against the config types (issue 21 item 8): every schema
//! object and enum is checked against the serde type it describes (fields, `required`,
//! defaults, unknown fields refused, variants), and every schema object must be in this
//! table. A field added to a config struct without a schema entry fails here, naming it.
//! The rows for core's types are `SchemaCheck::core_types` and its neighbours.

use serde_json::json;
use tollgate_core::schema_check::SchemaCheck;

#[test]
fn the_config_schema_matches_the_config_types() {
    let mut check = SchemaCheck::new(
        include_str!("../../../schemas/mcp-config.schema.json"),
        "schemas/mcp-config.schema.json",
        "filters/mcp/src/schema_tests.rs",
    );
    check.object::<crate::config::Config>("", json!({})).core_types().gateway_identity().fleet_store();
    check.object::<crate::config::ServerConfig>("/$defs/ServerConfig", json!({}));
    check.object::<crate::config::PolicyConfig>("/$defs/PolicyConfig", json!({}));
    check.object::<crate::config::RuleConfig>("/$defs/RuleConfig", json!({"id": "r", "effect": "allow"}));
    check.object::<crate::config::ArgumentConfig>("/$defs/ArgumentConfig", json!({"path": "$.a"}));
    check.object::<crate::config::RateLimitConfig>("/$defs/RateLimitConfig", json!({"id": "r", "max_calls": 1, "window_secs": 1, "per": "principal"}));
    check.object::<crate::approval::ApprovalConfig>("/$defs/ApprovalConfig", json!({"cluster": "c"}));
    check.object::<crate::oauth::OAuthConfig>("/$defs/OAuthConfig", json!({"resource": "https://gw/mcp", "authorization_servers": ["https://as"]}));
    check.object::<crate::router::RouterConfig>("/$defs/RouterConfig", json!({"servers": []}));
    check.object::<crate::tokenexchange::TokenExchangeConfig>("/$defs/TokenExchangeConfig", json!({"cluster": "c", "authority": "a", "client_id": "i", "client_secret": "s", "servers": {}}));
    check.object::<crate::tokenexchange::ServerExchange>("/$defs/ServerExchange", json!({}));
    check.object::<crate::pinning::ToolPinningConfig>("/$defs/ToolPinningConfig", json!({}));
    check.object::<crate::sessions::SessionsConfig>("/$defs/SessionsConfig", json!({}));
    check.variants::<crate::pinning::ChangedTool>("/$defs/ChangedTool");
    check.variants::<crate::tokenexchange::ClientAuth>("/$defs/ClientAuth");
    check.variants::<tollgate_core::decision::Combining>("/$defs/Combining");
    check.variants::<crate::config::DenyStyle>("/$defs/DenyStyle");
    check.variants::<crate::config::Per>("/$defs/Per");
    check.variants::<crate::config::Quantifier>("/$defs/Quantifier");
    check.variants::<crate::config::RuleEffect>("/$defs/RuleEffect");
    let problems = check.problems();
    assert!(problems.is_empty(), "the schema and the config types disagree:\n  {}", problems.join("\n  "));
}
