//! Per-user upstream credentials by OAuth 2.0 Token Exchange (RFC 8693; issue 18 item 7).
//!
//! For a server so configured, the caller's bearer token (the JWT `jwt_authn` verified) is
//! exchanged at the authorization server's token endpoint for a token whose audience is that
//! server; the request goes upstream with `authorization: Bearer <exchanged>` and never with
//! the caller's token. Exchanged tokens are cached per caller token and server in shared data
//! (a bounded table, keyed by the SHA-256 of server and caller token) until `expires_in` minus
//! a skew. Any failure fails closed: the request is answered by the filter, never forwarded.
//!
//! Pure parts here: the configuration, the form body, reading the endpoint's answer, the cache
//! entry's encoding. [`Pending`] is a small "pause, call out, then resume or refuse" record a
//! stream keeps while the call is out; the exchange applies the answer.

use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use tollgate_core::config::ConfigError;
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::{Host, HostExt, HttpCall};
use tollgate_core::shared_data::table::SharedTable;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// `token_exchange`: where and how to exchange, and for which servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// Envoy cluster of the authorization server's token endpoint.
    pub cluster: String,
    /// `:authority` of the token request (the authorization server's host).
    pub authority: String,
    /// Path of the token endpoint (default `/token`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// The gateway's client secret.
    pub client_secret: String,
    /// How the client authenticates: `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Longest wait for the token endpoint (ms, default 2000); then the request is refused.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Exchanged tokens kept (default 1024); the oldest is replaced when full.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: u32,
    /// An exchanged token is used until `expires_in` minus this many seconds (default 30).
    /// A token without `expires_in` is used once, never cached.
    #[serde(default = "default_skew")]
    pub expiry_skew_secs: u64,
    /// Longest a cached token is used, whatever its `expires_in` (seconds, default 3600).
    #[serde(default = "default_max_cache")]
    pub max_cache_secs: u64,
    /// MCP server name (as policy rules name servers) → what to ask for it. Requests to
    /// other servers are not exchanged.
    pub servers: BTreeMap<String, ServerExchange>,
}

/// What to ask the token endpoint for one server: `audience` and/or `resource` (at least
/// one), `scope` optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerExchange {
    /// RFC 8693 `audience`: the logical name of the server.
    #[serde(default)]
    pub audience: Option<String>,
    /// RFC 8693 / RFC 8707 `resource`: the server's URI.
    #[serde(default)]
    pub resource: Option<String>,
    /// Space-separated scopes asked for.
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

fn default_path() -> String {
    "/token".into()
}
fn default_timeout() -> u64 {
    2000
}
fn default_cache_entries() -> u32 {
    1024
}
fn default_skew() -> u64 {
    30
}
fn default_max_cache() -> u64 {
    3600
}

/// The compiled configuration.
#[derive(Debug)]
pub struct TokenExchange {
    config: TokenExchangeConfig,
    cache: SharedTable,
}

impl TokenExchange {
    pub fn compile(config: TokenExchangeConfig, at: &str) -> Result<TokenExchange, ConfigError> {
        let nonempty = [("cluster", &config.cluster), ("authority", &config.authority), ("client_id", &config.client_id)];
        for (name, value) in nonempty {
            if value.is_empty() {
                return Err(ConfigError::field(&format!("{at}.{name}"), "must not be empty"));
            }
        }
        if !config.path.starts_with('/') {
            return Err(ConfigError::field(&format!("{at}.path"), "must start with `/`"));
        }
        if config.timeout_ms == 0 {
            return Err(ConfigError::field(&format!("{at}.timeout_ms"), "must be greater than 0"));
        }
        if config.cache_entries == 0 || config.cache_entries > 65536 {
            return Err(ConfigError::field(&format!("{at}.cache_entries"), "must be between 1 and 65536"));
        }
        if config.servers.is_empty() {
            return Err(ConfigError::field(&format!("{at}.servers"), "name at least one server"));
        }
        for (name, s) in &config.servers {
            if s.audience.is_none() && s.resource.is_none() {
                return Err(ConfigError::field(&format!("{at}.servers.{name}"), "needs `audience` or `resource`"));
            }
        }
        let cache = SharedTable::new("tollgate.mcp.token_exchange", config.cache_entries, config.max_cache_secs.max(1));
        Ok(TokenExchange { config, cache })
    }

    /// Whether requests to `server` are exchanged.
    pub fn applies(&self, server: &str) -> bool {
        self.config.servers.contains_key(server)
    }

    fn cache_key(server: &str, subject_token: &str) -> String {
        let mut material = Vec::with_capacity(server.len() + subject_token.len() + 1);
        material.extend_from_slice(server.as_bytes());
        material.push(0);
        material.extend_from_slice(subject_token.as_bytes());
        sha256_hex(&material)
    }

    /// A cached token for this caller token and server, still valid at `now_secs`.
    pub fn cached(&self, host: &dyn Host, server: &str, subject_token: &str) -> Option<String> {
        let value = self.cache.get(host, &Self::cache_key(server, subject_token))?;
        decode_entry(&value, host.now_millis() / 1000)
    }

    /// Keeps a token the endpoint granted, unless it expires too soon to be worth it.
    pub fn remember(&self, host: &dyn Host, server: &str, subject_token: &str, granted: &Granted) {
        let Some(expires_in) = granted.expires_in else { return };
        let lifetime = expires_in.saturating_sub(self.config.expiry_skew_secs).min(self.config.max_cache_secs);
        if lifetime == 0 {
            return;
        }
        let until = host.now_millis() / 1000 + lifetime;
        if !self.cache.put(host, &Self::cache_key(server, subject_token), &encode_entry(until, &granted.access_token)) {
            host.log(tollgate_core::host::LogLevel::Warn, "tollgate-mcp: could not cache an exchanged token");
        }
    }

    /// The token request for `server`: headers and the form body.
    pub fn request(&self, server: &str, subject_token: &str) -> (Vec<(String, String)>, Vec<u8>) {
        let c = &self.config;
        let mut form: Vec<(&str, &str)> =
            vec![("grant_type", GRANT_TYPE), ("subject_token", subject_token), ("subject_token_type", ACCESS_TOKEN_TYPE)];
        if let Some(s) = c.servers.get(server) {
            if let Some(a) = &s.audience {
                form.push(("audience", a));
            }
            if let Some(r) = &s.resource {
                form.push(("resource", r));
            }
            if let Some(scope) = &s.scope {
                form.push(("scope", scope));
            }
        }
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), c.path.clone()),
            (":authority".to_string(), c.authority.clone()),
            ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        match c.client_auth {
            ClientAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret form-encoded, then Basic.
                let pair = format!("{}:{}", form_encode(&c.client_id), form_encode(&c.client_secret));
                let b64 = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
                headers.push(("authorization".to_string(), format!("Basic {b64}")));
            }
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", &c.client_id));
                form.push(("client_secret", &c.client_secret));
            }
        }
        (headers, form_body(&form))
    }

    /// Sends the token request; the call's token, or why it could not be sent.
    pub fn dispatch(&self, host: &dyn Host, server: &str, subject_token: &str) -> Result<u32, String> {
        let (headers, body) = self.request(server, subject_token);
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let call = HttpCall { cluster: &self.config.cluster, headers: &pairs, body: &body, timeout_ms: self.config.timeout_ms };
        host.dispatch_http(&call).map_err(|e| format!("cannot call the token endpoint `{}`: {e}", self.config.cluster))
    }
}

/// A request held while its token is being exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The HTTP call's token.
    pub call: u32,
    pub subject_token: String,
}

/// A token the endpoint granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub access_token: String,
    pub expires_in: Option<u64>,
}

/// Why no token was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The authorization server refused the caller's token (`invalid_request` /
    /// `invalid_grant`, RFC 8693 §2.2.2): the caller gets 401 `invalid_token`.
    Rejected(String),
    /// No usable answer: 503 when none came or the endpoint answered 5xx, 502 for another
    /// error or a malformed answer.
    Unavailable { status: u32, reason: String },
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Number>,
    issued_token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
}

/// Reads the token endpoint's answer (`None`: none came: timeout, reset, unknown cluster).
pub fn read_answer(answer: Option<(u16, &[u8])>) -> Result<Granted, Failure> {
    let Some((status, body)) = answer else {
        return Err(Failure::Unavailable { status: 503, reason: "the token endpoint did not answer".into() });
    };
    if !(200..300).contains(&status) {
        let error = serde_json::from_slice::<ErrorResponse>(body).ok().and_then(|e| e.error);
        // The endpoint (or Envoy on its behalf: no healthy host, connection refused) is down:
        // 503; it answered with an error that is not about the caller's token: 502.
        let out = if status >= 500 { 503 } else { 502 };
        return Err(match error.as_deref() {
            Some(e @ ("invalid_request" | "invalid_grant")) if status == 400 => {
                Failure::Rejected(format!("the token endpoint refused the caller's token: {e}"))
            }
            Some(e) => Failure::Unavailable { status: out, reason: format!("token endpoint error {status} `{}`", crate::message::truncate(e, 64)) },
            None => Failure::Unavailable { status: out, reason: format!("token endpoint status {status}") },
        });
    }
    let bad = |reason: &str| Failure::Unavailable { status: 502, reason: reason.to_string() };
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| bad("token endpoint answer is not a token response"))?;
    let token = parsed.access_token.filter(|t| !t.is_empty()).ok_or_else(|| bad("token endpoint answer has no access_token"))?;
    // RFC 6750 b64token: safe in a header.
    if !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)) {
        return Err(bad("token endpoint issued a token that is not a bearer token"));
    }
    if !parsed.token_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err(bad("token endpoint issued a token that is not of type Bearer"));
    }
    if parsed.issued_token_type.as_deref().is_some_and(|t| t != ACCESS_TOKEN_TYPE && t != "urn:ietf:params:oauth:token-type:jwt") {
        return Err(bad("token endpoint issued a token that is not an access token"));
    }
    let expires_in = parsed.expires_in.and_then(|n| n.as_u64());
    Ok(Granted { access_token: token, expires_in })
}

/// The bearer token of an `authorization` header value.
pub fn bearer(authorization: Option<&str>) -> Option<String> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

fn encode_entry(until_secs: u64, token: &str) -> Vec<u8> {
    format!("{until_secs} {token}").into_bytes()
}

fn decode_entry(value: &[u8], now_secs: u64) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let (until, token) = text.split_once(' ')?;
    let until: u64 = until.parse().ok()?;
    (until > now_secs && !token.is_empty()).then(|| token.to_string())
}

/// `application/x-www-form-urlencoded` (WHATWG): unreserved bytes as is, space as `+`,
/// everything else percent-encoded.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form_body(pairs: &[(&str, &str)]) -> Vec<u8> {
    let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect();
    parts.join("&").into_bytes()
}

#[cfg(test)]
#[path = "tokenexchange_tests.rs"]
mod tests;
