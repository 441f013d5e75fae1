//! `schemas/a2a-config.schema.json` against the config types (issue 21 item 8): every schema
//! object and enum is checked against the serde type it describes (fields, `required`,
//! defaults, unknown fields refused, variants), and every schema object must be in this
//! table. A field added to a config struct without a schema entry fails here, naming it.
//! The rows for core's types are `SchemaCheck::core_types` and its neighbours.

use serde_json::json;
use tollgate_core::schema_check::SchemaCheck;

#[test]
fn the_config_schema_matches_the_config_types() {
    let mut check = SchemaCheck::new(
        include_str!("../../../schemas/a2a-config.schema.json"),
        "schemas/a2a-config.schema.json",
        "filters/a2a/src/schema_tests.rs",
    );
    check.object::<crate::config::Config>("", json!({})).core_types();
    check.object::<crate::config::RoutesConfig>("/$defs/RoutesConfig", json!({}));
    check.object::<crate::config::DelegationConfig>("/$defs/DelegationConfig", json!({}));
    check.object::<crate::config::TrustedAgent>("/$defs/TrustedAgent", json!({"principal": "p"}));
    check.object::<crate::config::OnBehalfOfConfig>("/$defs/OnBehalfOfConfig", json!({}));
    check.object::<crate::config::AuthzConfig>("/$defs/AuthzConfig", json!({}));
    check.object::<crate::config::Rule>("/$defs/Rule", json!({"effect": "allow"}));
    check.object::<crate::config::CardsConfig>("/$defs/CardsConfig", json!({}));
    check.object::<crate::config::ConversationsConfig>("/$defs/ConversationsConfig", json!({}));
    check.object::<crate::config::LimitsConfig>("/$defs/LimitsConfig", json!({}));
    check.object::<crate::config::PushNotificationsConfig>("/$defs/PushNotificationsConfig", json!({}));
    check.variants::<tollgate_core::decision::Combining>("/$defs/Combining");
    check.variants::<crate::authz::RuleEffect>("/$defs/RuleEffect");
    check.variants::<crate::config::SignedCards>("/$defs/SignedCards");
    let problems = check.problems();
    assert!(problems.is_empty(), "the schema and the config types disagree:\n  {}", problems.join("\n  "));
}
