//! Plugin configuration: JSON, strictly typed, refused at load with the bad field named.

use serde::de::DeserializeOwned;

/// A configuration error whose message names the field path, e.g.
/// `routes[1].provider: unknown field `clster`, expected one of ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn field(path: &str, message: impl std::fmt::Display) -> Self {
        ConfigError(format!("{path}: {message}"))
    }
}

/// Parses plugin configuration. An empty configuration parses as `{}` so every field's
/// default applies. The error names the path of the offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError(format!("configuration is not UTF-8: {e}")))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ConfigError(format!("configuration: {inner}"))
        } else {
            ConfigError(format!("{path}: {inner}"))
        }
    })
}

/// Validation after parsing: each filter's config implements it to check what types
/// cannot (globs, regexes, JSONPaths, cross references), naming the field on failure.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses then validates.
pub fn load<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ConfigError> {
    let config: T = parse(bytes)?;
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        cluster: String,
    }
    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        routes: Vec<Inner>,
        max_body_bytes: u32,
    }
    impl Validate for Outer {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.max_body_bytes > 10 {
                return Err(ConfigError::field("max_body_bytes", "must be at most 10"));
            }
            Ok(())
        }
    }

    #[test]
    fn unknown_nested_field_is_named_with_its_path() {
        let err = parse::<Outer>(br#"{"routes":[{"cluster":"a"},{"clster":"b"}]}"#).unwrap_err();
        assert!(err.0.starts_with("routes[1]"), "{err}");
        assert!(err.0.contains("clster"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse::<Outer>(br#"{"max_body_bytes":"big"}"#).unwrap_err();
        assert!(err.0.starts_with("max_body_bytes:"), "{err}");
    }

    #[test]
    fn empty_config_gets_defaults_and_validation_runs() {
        assert!(load::<Outer>(b"").is_ok());
        let err = load::<Outer>(br#"{"max_body_bytes":11}"#).unwrap_err();
        assert_eq!(err.0, "max_body_bytes: must be at most 10");
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(parse::<Outer>(b"{").is_err());
    }
}
