//! Configuration of the LLM filter, validated once at load.

use serde::Deserialize;
use tollgate_core::audit::AuditConfig;
use tollgate_core::config::{ConfigError, Validate};
use tollgate_core::identity::IdentityConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub audit: AuditConfig,
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.identity.validate("identity")
    }
}
