//! The OAuth 2.1 resource-server role (issue 18 item 4): the filter publishes the OAuth 2.0
//! Protected Resource Metadata document (RFC 9728) for the MCP endpoint, names its URL in
//! every 401/403 `WWW-Authenticate` (`resource_metadata="…"`), and refuses a bearer token
//! that `jwt_authn` could not verify with 401 `error="invalid_token"` (jwt_authn's own 401
//! does not carry the metadata URL, so the shipped configuration lets failed tokens through
//! to this filter with `allow_missing_or_failed` and `failed_status_in_metadata`).
//!
//! Pure: the configuration is compiled once into the document's bytes and the paths that
//! serve it; [`answer`] decides what a request for one of those paths gets.

use crate::replies::Reply;
use serde::{Deserialize, Serialize};
use tollgate_core::config::ConfigError;
use tollgate_core::host::{Host, HostExt};

/// The well-known path prefix of RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// `oauth`: the protected resource this MCP endpoint is (field names as in RFC 9728 §2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The resource identifier: the MCP endpoint's absolute `http(s)` URL, without fragment
    /// (e.g. `https://gw.example/mcp`). Tokens must carry it as their audience (the shipped
    /// `jwt_authn` checks it); the metadata is served at `/.well-known/oauth-protected-resource`
    /// followed by this URL's path (RFC 9728 §3.1), and at the bare well-known path.
    pub resource: String,
    /// Issuer URLs of the authorization servers that issue tokens for this resource (at
    /// least one).
    pub authorization_servers: Vec<String>,
    /// Scopes a client may request for this resource (published as is).
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// Human-readable name of the resource (published as is).
    #[serde(default)]
    pub resource_name: Option<String>,
    /// How a token may be presented: `header` (the default, and what the shipped
    /// `jwt_authn` reads), `body`, `query`.
    #[serde(default = "default_bearer_methods")]
    pub bearer_methods_supported: Vec<String>,
    /// The name the `jwt_authn` providers give `failed_status_in_metadata`: when that
    /// dynamic metadata is present (a token was presented and did not verify, let through by
    /// an `allow_missing_or_failed` requirement), the request is refused with 401
    /// `error="invalid_token"` and the metadata URL. Absent: not checked (then `jwt_authn`
    /// must refuse failed tokens itself, e.g. with `allow_missing`).
    #[serde(default)]
    pub jwt_failed_status_key: Option<String>,
    /// The `jwt_authn` dynamic-metadata namespace (default `envoy.filters.http.jwt_authn`).
    #[serde(default = "default_jwt_namespace")]
    pub jwt_metadata_namespace: String,
}

fn default_bearer_methods() -> Vec<String> {
    vec!["header".into()]
}

fn default_jwt_namespace() -> String {
    "envoy.filters.http.jwt_authn".into()
}

/// The published document (RFC 9728 §2; absent members omitted).
#[derive(Serialize)]
struct Document<'a> {
    resource: &'a str,
    authorization_servers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes_supported: Option<&'a [String]>,
    bearer_methods_supported: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<&'a str>,
}

/// The compiled role: what is served where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth {
    /// The document, serialized once.
    document: Vec<u8>,
    /// Paths that serve it: the path-inserted form first (when the resource has a path),
    /// then the bare well-known path.
    paths: Vec<String>,
    /// The document's URL (path-inserted form), the default `resource_metadata`.
    pub metadata_url: String,
    jwt_failed_status: Option<(String, String)>,
}

/// `scheme://authority` and the path (`""` for none or `/`) of an absolute http(s) URL
/// without fragment, whitespace or control characters.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    if url.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'#' || b == b'"' || b == b'\\') {
        return None;
    }
    let scheme_len = url.len() - rest.len();
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    if authority_len == 0 {
        return None;
    }
    let origin = url.get(..scheme_len + authority_len)?;
    let tail = rest.get(authority_len..)?;
    let path = tail.split('?').next().unwrap_or("");
    Some((origin, path.strip_suffix('/').unwrap_or(path)))
}

impl OAuth {
    pub fn compile(c: &OAuthConfig, at: &str) -> Result<OAuth, ConfigError> {
        let Some((origin, path)) = split_url(&c.resource) else {
            return Err(ConfigError::field(
                &format!("{at}.resource"),
                format!("`{}` must be an absolute http(s) URL without fragment", c.resource),
            ));
        };
        if c.resource.contains('?') {
            return Err(ConfigError::field(&format!("{at}.resource"), "must not have a query (RFC 9728 §1.2)"));
        }
        if c.authorization_servers.is_empty() {
            return Err(ConfigError::field(&format!("{at}.authorization_servers"), "at least one authorization server is needed"));
        }
        for (i, s) in c.authorization_servers.iter().enumerate() {
            if split_url(s).is_none() || s.contains('?') {
                return Err(ConfigError::field(
                    &format!("{at}.authorization_servers[{i}]"),
                    format!("`{s}` must be an issuer URL: http(s), no query or fragment"),
                ));
            }
        }
        for (i, m) in c.bearer_methods_supported.iter().enumerate() {
            if !matches!(m.as_str(), "header" | "body" | "query") {
                return Err(ConfigError::field(
                    &format!("{at}.bearer_methods_supported[{i}]"),
                    format!("`{m}` is not one of header, body, query"),
                ));
            }
        }
        if c.jwt_failed_status_key.as_deref() == Some("") {
            return Err(ConfigError::field(&format!("{at}.jwt_failed_status_key"), "must not be empty"));
        }
        let document = serde_json::to_vec(&Document {
            resource: &c.resource,
            authorization_servers: &c.authorization_servers,
            scopes_supported: c.scopes_supported.as_deref(),
            bearer_methods_supported: &c.bearer_methods_supported,
            resource_name: c.resource_name.as_deref(),
        })
        .map_err(|e| ConfigError::field(at, e.to_string()))?;
        let inserted = format!("{WELL_KNOWN}{path}");
        let metadata_url = format!("{origin}{inserted}");
        let mut paths = vec![inserted];
        if !path.is_empty() {
            paths.push(WELL_KNOWN.to_string());
        }
        let jwt_failed_status = c.jwt_failed_status_key.clone().map(|k| (c.jwt_metadata_namespace.clone(), k));
        Ok(OAuth { document, paths, metadata_url, jwt_failed_status })
    }

    /// Whether `path` (as requested, query and all) is one of the metadata paths.
    pub fn serves(&self, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        self.paths.iter().any(|p| p == path)
    }

    /// The answer to a request for a metadata path: `GET` gets the document (200, cacheable,
    /// readable from any origin: it is public), any other method 405.
    pub fn answer(&self, method: &str) -> Reply {
        if method == "GET" {
            Reply {
                status: 200,
                headers: vec![
                    ("cache-control".into(), "public, max-age=3600".into()),
                    ("access-control-allow-origin".into(), "*".into()),
                ],
                body: self.document.clone(),
            }
        } else {
            Reply {
                status: 405,
                headers: vec![("allow".into(), "GET".into())],
                body: tollgate_core::reply::rpc_error_body::<()>(None, crate::message::codes::INVALID_REQUEST, "Method not allowed", None),
            }
        }
    }

    /// The `jwt_authn` failure status of this request's token, when configured and a token
    /// was presented that did not verify (its message). `jwt_authn` also records a missing
    /// token (`Jwt is missing`): that is no failed token (the caller is anonymous, and
    /// `require_identity` answers it).
    pub fn jwt_failure(&self, host: &dyn Host) -> Option<String> {
        let (namespace, key) = self.jwt_failed_status.as_ref()?;
        let base = ["metadata", "filter_metadata", namespace.as_str(), key.as_str()];
        match host.property_string(&[base[0], base[1], base[2], base[3], "message"]) {
            Some(m) if m == JWT_MISSING => None,
            Some(m) if !m.is_empty() => Some(m),
            // A status without a message still says the token failed.
            _ => host.property(&base).ok().flatten().filter(|v| !v.is_empty()).map(|_| "token did not verify".to_string()),
        }
    }
}

/// jwt_verify's message for a request without a token (`Status::JwtMissed`).
const JWT_MISSING: &str = "Jwt is missing";

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
