//! Sessions bound to the caller and the server (issue 18 item 1; agentgateway's advisory
//! GHSA-mvgg-jvj2-4frq was a session reused on another route).
//!
//! When a server issues `Mcp-Session-Id: S` (the answer to `initialize`), the client gets
//! `S.<tag>`: `tag` is the first 16 bytes, hex, of HMAC-SHA256(key, framing ‖ server ‖
//! principal ‖ S) with every field length-prefixed. Nothing is stored: the id carries its
//! binding, so it holds on every worker, across restarts and across a fleet sharing the key.
//! Every request, GET and DELETE carrying a session id is checked against the caller's
//! principal and the route's server: a match forwards the server's own `S`; anything else
//! (another principal, another server, a raw or malformed id) is refused with 404 and the
//! SDK server's body for an unknown session, never forwarded.
//!
//! The key: `sessions.binding_key` (fleet-wide), else one random key per Envoy, kept in shared
//! data so every worker uses the same one (it dies with the Envoy: sessions then answer 404
//! and clients start new ones, as they must for an expired session).

use serde::Deserialize;
use tollgate_core::config::ConfigError;
use tollgate_core::hash::{push_hex, HmacKey};
use tollgate_core::host::{Host, HostError};
use tollgate_core::identity::Identity;

/// Bytes of MAC kept in the tag (hex: twice as many characters).
pub const TAG_BYTES: usize = 16;
/// Between the server's id and the tag.
pub const SEPARATOR: char = '.';
/// Longest server-issued session id the gateway binds (a longer one is not passed on).
pub const MAX_SERVER_ID: usize = 1024;
/// Shortest configured key.
pub const MIN_KEY_BYTES: usize = 32;
/// Shared-data key of the per-Envoy random key.
pub const ENVOY_KEY_NAME: &str = "tollgate.mcp.session_binding_key.v1";
/// The audit `reason` of a refused session.
pub const REASON: &str = "session_binding";

/// `sessions:` in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Bind session ids to the caller and the server (default true). `false` passes session
    /// ids as the server issued them: only for servers that keep no state per session, or
    /// behind a gateway that already binds them; any caller who learns an id can use it.
    #[serde(default = "yes")]
    pub bind: bool,
    /// HMAC key (at least 32 bytes) for the binding tag. Give the same key to every Envoy of
    /// a fleet so a session works through any of them (and survives restarts). Absent: a
    /// random key per Envoy (shared by its workers). Treat it as a secret.
    #[serde(default)]
    pub binding_key: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig { bind: true, binding_key: None }
    }
}

/// The compiled binding.
#[derive(Debug)]
pub enum Binding {
    /// `bind: false`.
    Off,
    /// The configured key.
    Key(HmacKey),
    /// The per-Envoy random key in shared data.
    PerEnvoy,
}

impl Binding {
    pub fn compile(config: &SessionsConfig, field: &str) -> Result<Binding, ConfigError> {
        match (&config.binding_key, config.bind) {
            (Some(_), false) => Err(ConfigError::field(&format!("{field}.binding_key"), "given with `bind: false`")),
            (None, false) => Ok(Binding::Off),
            (None, true) => Ok(Binding::PerEnvoy),
            (Some(k), true) if k.len() < MIN_KEY_BYTES => {
                Err(ConfigError::field(&format!("{field}.binding_key"), format!("must be at least {MIN_KEY_BYTES} bytes")))
            }
            (Some(k), true) => HmacKey::new(k.as_bytes())
                .map(Binding::Key)
                .ok_or_else(|| ConfigError::field(&format!("{field}.binding_key"), "unusable as an HMAC key")),
        }
    }

    /// The key to sign or check with now; `None`: binding is off. `Some(Err)`: the per-Envoy
    /// key cannot be had (the caller fails closed).
    pub fn key(&self, host: &dyn Host) -> Option<Result<HmacKey, String>> {
        match self {
            Binding::Off => None,
            Binding::Key(k) => Some(Ok(k.clone())),
            Binding::PerEnvoy => Some(envoy_key(host)),
        }
    }
}

/// The per-Envoy key: read from shared data, created when absent. Envoy's shared data cannot
/// create a key only if it is absent, so two workers may both create one at the very start:
/// the key is read back after writing and at every use, so they agree from then on (an id
/// signed in that instant with the overwritten key answers 404, and the client starts again).
pub fn envoy_key(host: &dyn Host) -> Result<HmacKey, String> {
    let usable = |bytes: Option<Vec<u8>>| bytes.filter(|b| b.len() == MIN_KEY_BYTES).and_then(|b| HmacKey::new(&b));
    match host.shared_data(ENVOY_KEY_NAME) {
        Ok((bytes, _)) => {
            if let Some(key) = usable(bytes) {
                return Ok(key);
            }
        }
        Err(HostError::NotFound) => {}
        Err(e) => return Err(format!("cannot read the session binding key: {e}")),
    }
    let mut fresh = [0u8; MIN_KEY_BYTES];
    host.random_bytes(&mut fresh).map_err(|e| format!("no random bytes for the session binding key: {e}"))?;
    if fresh.iter().all(|b| *b == 0) {
        return Err("the host's random bytes are all zero".into());
    }
    host.set_shared_data(ENVOY_KEY_NAME, &fresh, None)
        .map_err(|e| format!("cannot store the session binding key: {e}"))?;
    match host.shared_data(ENVOY_KEY_NAME) {
        Ok((bytes, _)) => usable(bytes).ok_or_else(|| "the stored session binding key is unusable".into()),
        Err(e) => Err(format!("cannot read back the session binding key: {e}")),
    }
}

/// Who the session is bound to: the principal, or anonymous (a value of its own, never equal
/// to any principal).
fn principal_of(identity: Option<&Identity>) -> Option<&str> {
    identity.map(|i| i.principal.as_str())
}

/// The signed message: a version line, then server, principal (a presence byte first) and
/// the server's id, each with its length as 4 bytes big-endian: no two different triples
/// frame to the same bytes.
fn message(server: &str, principal: Option<&str>, server_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + server.len() + principal.map_or(0, str::len) + server_id.len());
    out.extend_from_slice(b"tollgate-mcp-session/v1\n");
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(server.as_bytes());
    match principal {
        None => field(b"\x00"),
        Some(p) => {
            let mut named = Vec::with_capacity(p.len() + 1);
            named.push(1u8);
            named.extend_from_slice(p.as_bytes());
            field(&named);
        }
    }
    field(server_id.as_bytes());
    out
}

/// A session id as the spec allows it: visible ASCII (0x21-0x7E), not empty.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The id the client gets for the server's `server_id`: `server_id.<32 hex>`. `None` when the
/// server's id is not one the spec allows or is longer than [`MAX_SERVER_ID`].
pub fn bind(key: &HmacKey, server: &str, identity: Option<&Identity>, server_id: &str) -> Option<String> {
    if !is_valid_id(server_id) || server_id.len() > MAX_SERVER_ID {
        return None;
    }
    let mac = key.mac(&message(server, principal_of(identity), server_id));
    let mut out = String::with_capacity(server_id.len() + 1 + TAG_BYTES * 2);
    out.push_str(server_id);
    out.push(SEPARATOR);
    push_hex(&mut out, mac.get(..TAG_BYTES).unwrap_or(&mac));
    Some(out)
}

/// Why a presented session id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// No `.<tag>` (e.g. the server's raw id).
    Untagged,
    /// Not an id the spec allows, or a tag that is not 32 lowercase hex digits.
    Malformed,
    /// A well-formed tag for another caller, another server, or another key.
    WrongBinding,
}

impl Mismatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::Untagged => "session id carries no binding",
            Mismatch::Malformed => "session id is malformed",
            Mismatch::WrongBinding => "session id is bound to another caller or server",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Mismatch::Untagged => "untagged",
            Mismatch::Malformed => "malformed",
            Mismatch::WrongBinding => "wrong_binding",
        }
    }
}

/// The server's id in a presented one (the part before the tag), whatever the tag says: what
/// an audit record can name (the record of the `initialize` that created it names the same
/// id and its caller).
pub fn server_part(presented: &str) -> &str {
    presented.rsplit_once(SEPARATOR).map_or(presented, |(id, _)| id)
}

fn parse_tag(hex: &str) -> Option<[u8; TAG_BYTES]> {
    tollgate_core::hash::parse_hex(hex)
}

/// Checks a presented id for this caller and server: the server's own id, or why not.
/// Constant time over the tag.
pub fn verify<'a>(key: &HmacKey, server: &str, identity: Option<&Identity>, presented: &'a str) -> Result<&'a str, Mismatch> {
    if !is_valid_id(presented) {
        return Err(Mismatch::Malformed);
    }
    let Some((server_id, tag)) = presented.rsplit_once(SEPARATOR) else { return Err(Mismatch::Untagged) };
    let Some(tag) = parse_tag(tag) else {
        // An id with a dot but no tag of ours (the server's own ids may hold dots).
        return Err(Mismatch::Untagged);
    };
    if server_id.is_empty() || server_id.len() > MAX_SERVER_ID {
        return Err(Mismatch::Malformed);
    }
    if key.verify_truncated(&message(server, principal_of(identity), server_id), &tag) {
        Ok(server_id)
    } else {
        Err(Mismatch::WrongBinding)
    }
}

/// What the gateway does with a request's `mcp-session-id`.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// No session id, or binding off: the request goes on as it is.
    Pass,
    /// Bound to this caller and server: forward the server's own id.
    Forward(String),
    /// Refused (never forwarded): the server's part of the id as presented (for the record),
    /// and why.
    Refuse { server_id: Option<String>, why: String, label: &'static str },
}

/// Decides on a request's session id (`presented`: the header as sent).
pub fn admit(host: &dyn Host, binding: &Binding, server: &str, identity: Option<&Identity>, presented: Option<&str>) -> Admit {
    let Some(presented) = presented.map(str::trim) else { return Admit::Pass };
    let key = match binding.key(host) {
        None => return Admit::Pass,
        Some(Ok(key)) => key,
        Some(Err(e)) => {
            return Admit::Refuse { server_id: None, why: e, label: "no_key" };
        }
    };
    let shown = |s: &str| is_valid_id(s).then(|| crate::message::truncate(s, 128).to_string());
    match verify(&key, server, identity, presented) {
        Ok(server_id) => Admit::Forward(server_id.to_string()),
        Err(m) => Admit::Refuse { server_id: shown(server_part(presented)), why: m.as_str().to_string(), label: m.label() },
    }
}

/// What the gateway does with a response's `mcp-session-id` (the server issuing a session).
#[derive(Debug, PartialEq, Eq)]
pub enum Issue {
    /// No session id, or binding off.
    Pass,
    /// Send the client this bound id; the server's own id is recorded.
    Bound { client_id: String, server_id: String },
    /// Cannot bind it (an id the spec does not allow, or no key): the header is removed, so
    /// the client never holds an id the gateway could not check.
    Strip { why: String },
}

pub fn issue(host: &dyn Host, binding: &Binding, server: &str, identity: Option<&Identity>, issued: Option<&str>) -> Issue {
    let Some(issued) = issued.map(str::trim) else { return Issue::Pass };
    let key = match binding.key(host) {
        None => return Issue::Pass,
        Some(Ok(key)) => key,
        Some(Err(why)) => return Issue::Strip { why },
    };
    match bind(&key, server, identity, issued) {
        Some(client_id) => Issue::Bound { client_id, server_id: issued.to_string() },
        None => Issue::Strip { why: "the server issued a session id the gateway cannot bind (not visible ASCII, or too long)".into() },
    }
}

/// The refusal: what the MCP Python SDK server answers for an unknown session (404,
/// `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}`).
pub fn not_found() -> crate::replies::Reply {
    crate::replies::refusal(404, None, crate::message::codes::INVALID_REQUEST, "Session not found")
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
