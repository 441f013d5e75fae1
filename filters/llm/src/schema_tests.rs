//! `schemas/llm-config.schema.json` against the config types (issue 21 item 8): every schema
//! object and enum is checked against the serde type it describes (fields, `required`,
//! defaults, unknown fields refused, variants), and every schema object must be in this
//! table. A field added to a config struct without a schema entry fails here, naming it.
//! The rows for core's types are `SchemaCheck::core_types` and its neighbours.

use serde_json::json;
use tollgate_core::schema_check::SchemaCheck;

#[test]
fn the_config_schema_matches_the_config_types() {
    let mut check = SchemaCheck::new(
        include_str!("../../../schemas/llm-config.schema.json"),
        "schemas/llm-config.schema.json",
        "filters/llm/src/schema_tests.rs",
    );
    check.object::<crate::config::Config>("", json!({})).core_types().gateway_identity().fleet_store();
    check.object::<crate::cache::CacheConfig>("/$defs/CacheConfig", json!({}));
    check.object::<crate::config::CredentialConfig>("/$defs/CredentialConfig", json!({}));
    check.object::<crate::config::DeploymentConfig>("/$defs/DeploymentConfig", json!({"provider": "p"}));
    check.object::<crate::config::FallbackConfig>("/$defs/FallbackConfig", json!({}));
    check.object::<crate::config::LimitConfig>("/$defs/LimitConfig", json!({"id": "l", "scope": "key"}));
    check.object::<crate::config::ModelRoute>("/$defs/ModelRoute", json!({"model": "m"}));
    check.object::<crate::config::PriceConfig>("/$defs/PriceConfig", json!({"model": "m", "input": 1.0, "output": 1.0}));
    check.object::<crate::config::ProviderConfig>("/$defs/ProviderConfig", json!({"name": "p"}));
    check.object::<crate::guardrails::GuardrailsConfig>("/$defs/GuardrailsConfig", json!({}));
    check.object::<crate::guardrails::PolicyConfig>("/$defs/PolicyConfig", json!({"id": "p", "action": "log"}));
    check.object::<crate::guardrails::ModerationConfig>("/$defs/ModerationConfig", json!({"cluster": "c"}));
    check.object::<crate::guard::DetectorsConfig>("/$defs/DetectorsConfig", json!({}));
    check.object::<crate::guard::EntropyConfig>("/$defs/EntropyConfig", json!({}));
    check.object::<crate::guard::CustomPattern>("/$defs/CustomPattern", json!({"name": "n", "pattern": "p"}));
    check.object::<crate::guard::WordListConfig>("/$defs/WordListConfig", json!({"name": "n", "words": []}));
    check.variants::<crate::api::AuthScheme>("/$defs/AuthScheme");
    check.variants::<crate::api::ClientApi>("/$defs/ClientApi");
    check.variants::<crate::limits::Scope>("/$defs/Scope");
    check.variants::<crate::config::Unpriced>("/$defs/Unpriced");
    check.variants::<crate::cache::CacheScope>("/$defs/CacheScope");
    check.variants::<crate::cache::CacheWhen>("/$defs/CacheWhen");
    check.variants::<crate::guardrails::Side>("/$defs/Side");
    check.variants::<crate::guardrails::OnFailure>("/$defs/ModerationOnFailure");
    check.variants::<crate::guard::action::GuardAction>("/$defs/GuardAction");
    check.variants::<crate::guard::Builtin>("/$defs/Builtin");
    let problems = check.problems();
    assert!(problems.is_empty(), "the schema and the config types disagree:\n  {}", problems.join("\n  "));
}
