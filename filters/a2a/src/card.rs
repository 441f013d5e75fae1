//! Agent-card rewriting: the card's interface URLs must name the gateway, or clients built
//! from it bypass it. Pure: no host access.
//!
//! Rewritten: 0.3 `url` and `additionalInterfaces[].url`, 1.0 `supportedInterfaces[].url`
//! (http and https URLs only). The agent's path is mapped from the route's upstream prefix to
//! its public prefix (`http://10.0.0.5:9101/` served at `/agents/echo/` becomes
//! `https://gw/agents/echo/`); a path already under the public prefix is kept, never doubled.
//! A signed card (`signatures`) is served untouched, or has its signatures removed and is
//! rewritten, per configuration — never rewritten with a signature left that no longer matches.

use crate::config::SignedCards;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping<'a> {
    /// `scheme://host[:port]` plus an optional base path without a trailing slash.
    pub public_base: &'a str,
    /// Public path prefix of the agent, starting and ending with `/`.
    pub public_prefix: &'a str,
    /// The upstream path the public prefix is rewritten to, starting and ending with `/`.
    pub upstream_prefix: &'a str,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub urls_rewritten: u32,
    pub signed: bool,
    pub signatures_removed: bool,
}

/// Splits an absolute http(s) URL into (origin, path-and-query). `None` for other schemes.
fn split_url(url: &str) -> Option<(&str, &str)> {
    // Byte comparisons: the URL comes from the agent and may put a multi-byte character
    // across byte 7 or 8 (slicing there would panic and trap the VM).
    let scheme_end = if url.as_bytes().get(..7).is_some_and(|s| s.eq_ignore_ascii_case(b"http://")) {
        7
    } else if url.as_bytes().get(..8).is_some_and(|s| s.eq_ignore_ascii_case(b"https://")) {
        8
    } else {
        return None;
    };
    let rest = &url[scheme_end..];
    let path_start = rest.find(['/', '?', '#']).map(|i| scheme_end + i).unwrap_or(url.len());
    Some((&url[..path_start], &url[path_start..]))
}

/// Maps one interface URL onto the gateway. `None`: not an http(s) URL, left alone.
pub fn map_url(url: &str, m: &Mapping<'_>) -> Option<String> {
    let (_, path) = split_url(url)?;
    let path = if path.is_empty() || !path.starts_with('/') { format!("/{path}") } else { path.to_string() };
    let base_path = m.public_base.find("://").and_then(|i| m.public_base[i + 3..].find('/').map(|j| i + 3 + j));
    let (origin, base_path) = match base_path {
        Some(i) => (&m.public_base[..i], m.public_base[i..].trim_end_matches('/')),
        None => (m.public_base.trim_end_matches('/'), ""),
    };
    let public_full = format!("{base_path}{}", m.public_prefix);
    let under_prefix = m.public_prefix != "/";
    let new_path = if under_prefix && (path.starts_with(&public_full) || path == public_full.trim_end_matches('/')) {
        // Already the public path (the agent knows where it is published): keep it.
        path
    } else if under_prefix && m.public_prefix != m.upstream_prefix && path.starts_with(m.public_prefix) {
        // The public path without the gateway's base path.
        format!("{base_path}{path}")
    } else if let Some(rest) = path.strip_prefix(m.upstream_prefix) {
        format!("{public_full}{rest}")
    } else if path == m.upstream_prefix.trim_end_matches('/') {
        public_full.clone()
    } else {
        // Outside the route's upstream prefix: keep the agent's path under the public prefix.
        format!("{}{}", public_full.trim_end_matches('/'), path)
    };
    Some(format!("{origin}{new_path}"))
}

fn rewrite_field(obj: &mut serde_json::Map<String, Value>, key: &str, m: &Mapping<'_>, count: &mut u32) {
    if let Some(Value::String(url)) = obj.get(key) {
        if let Some(new) = map_url(url, m) {
            if &new != url {
                *count = count.saturating_add(1);
            }
            obj.insert(key.to_string(), Value::String(new));
        }
    }
}

/// Rewrites a card in place.
pub fn rewrite_card(card: &mut Value, m: &Mapping<'_>, signed: SignedCards) -> Outcome {
    let mut outcome = Outcome::default();
    let Some(obj) = card.as_object_mut() else { return outcome };
    let has_signatures = match obj.get("signatures") {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    if has_signatures {
        outcome.signed = true;
        match signed {
            SignedCards::Keep => return outcome,
            SignedCards::Strip => {
                obj.remove("signatures");
                outcome.signatures_removed = true;
            }
        }
    }
    let mut count = 0;
    rewrite_field(obj, "url", m, &mut count);
    for list in ["additionalInterfaces", "supportedInterfaces"] {
        if let Some(Value::Array(items)) = obj.get_mut(list) {
            for item in items.iter_mut() {
                if let Some(o) = item.as_object_mut() {
                    rewrite_field(o, "url", m, &mut count);
                }
            }
        }
    }
    outcome.urls_rewritten = count;
    outcome
}

/// Rewrites a card response body: the card itself, or a JSON-RPC response whose `result`
/// is the card (the extended card). Returns the new body when anything changed.
pub fn rewrite_body(body: &[u8], m: &Mapping<'_>, signed: SignedCards, in_result: bool) -> Result<(Option<Vec<u8>>, Outcome), String> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let target = if in_result {
        match doc.get_mut("result") {
            Some(card) => card,
            None => return Ok((None, Outcome::default())),
        }
    } else {
        &mut doc
    };
    let outcome = rewrite_card(target, m, signed);
    if outcome.urls_rewritten == 0 && !outcome.signatures_removed {
        return Ok((None, outcome));
    }
    serde_json::to_vec(&doc).map(|b| (Some(b), outcome)).map_err(|e| e.to_string())
}

/// Whether `s` is a URL authority of host[:port] characters only (names, IPv4, bracketed
/// IPv6). A `#`, `?`, `\`, `@`, `%` or space would make URLs built on it name another host or
/// path than meant (found by fuzzing: `Host: #gw:10000` gave `http://#gw:10000/...`).
pub fn is_host_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// The gateway's public base: configured, else `<proto>://<host>` from the request.
pub fn public_base(configured: Option<&str>, forwarded_proto: Option<&str>, scheme: Option<&str>, authority: Option<&str>) -> Option<String> {
    if let Some(base) = configured {
        return Some(base.trim_end_matches('/').to_string());
    }
    let host = authority.map(str::trim).filter(|h| is_host_port(h))?;
    let proto = forwarded_proto
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .filter(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https"))
        .or(scheme.filter(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")))
        .unwrap_or("http")
        .to_ascii_lowercase();
    Some(format!("{proto}://{host}"))
}

/// Makes a prefix start and end with `/`.
pub fn normalize_prefix(p: &str) -> String {
    let trimmed = p.trim().trim_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        format!("/{trimmed}/")
    }
}

#[cfg(test)]
#[path = "card_tests.rs"]
mod tests;
