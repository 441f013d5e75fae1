//! Many MCP servers behind one endpoint: Envoy's own `envoy.filters.http.mcp_router`
//! (placed after this filter and Envoy's `envoy.filters.http.mcp`) aggregates several MCP
//! servers and tells them apart by a prefix the client sees in every name: tools and
//! prompts `<server>__<name>`, resources and resource templates `<server>+<scheme>://<rest>`.
//! This module reads that prefix so that the policy, the list filtering, the audit records and
//! the metrics see the backend server and the name that server knows.
//!
//! Pure: [`Router::route`] splits the messages of a POST body, [`Routed::rule`] refuses what
//! names no configured server (fail closed), [`Routed::restore`] gives the replies back the
//! names the client sent, [`Router::visible`] judges one item of an aggregated list.

use crate::judge::{Judgement, Ruling};
use crate::message::{Message, Target};
use crate::policy::{Policy, Subject};
use serde::Deserialize;
use std::borrow::Cow;
use tollgate_core::config::ConfigError;
use tollgate_core::observe::audit::Decision;

/// `server.routers.<name>`: the route whose server is `<name>` (route metadata, or the
/// cluster name, as for any route) is served by Envoy's `mcp_router` with these backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The backend servers, exactly as the router names them (its `servers[].name`, or the
    /// cluster name when that is empty): at least two (with one backend the router prefixes
    /// nothing; name that server with route metadata instead). Each 1 to 64 ASCII letters,
    /// digits, `-`, `_`, and readable back from a prefixed name (not containing the
    /// separator, nor ending with its first character: `a_` + `__` reads as `a`).
    pub servers: Vec<String>,
    /// Between server and tool or prompt name: `__` (what `mcp_router` uses).
    #[serde(default = "default_separator")]
    pub name_separator: String,
}

fn default_separator() -> String {
    "__".into()
}

/// Between server and URI scheme in resource URIs (`alpha+file:///data/x`), as `mcp_router`
/// writes them.
const URI_SEPARATOR: char = '+';

/// One compiled router.
#[derive(Debug)]
pub struct Router {
    servers: Vec<String>,
    separator: String,
}

/// What a target names behind the router.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// The backend server and the target as that server knows it.
    Backend { server: &'a str, target: Target<'static> },
    /// A name without a configured server's prefix: nothing the router can send anywhere.
    Unknown,
}

impl Router {
    pub fn compile(config: &RouterConfig, path: &str) -> Result<Router, ConfigError> {
        let sep = &config.name_separator;
        if sep.is_empty() || sep.len() > 8 {
            return Err(ConfigError::field(&format!("{path}.name_separator"), "must be 1 to 8 characters"));
        }
        if config.servers.len() < 2 {
            return Err(ConfigError::field(
                &format!("{path}.servers"),
                "needs at least two servers (with one, mcp_router prefixes nothing: name that server with route metadata instead)",
            ));
        }
        for (i, name) in config.servers.iter().enumerate() {
            let field = format!("{path}.servers[{i}]");
            let charset = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if name.is_empty() || name.len() > 64 || !charset {
                return Err(ConfigError::field(&field, format!("`{name}` must be 1 to 64 ASCII letters, digits, `-`, `_`")));
            }
            // The router splits at the first separator: the name must come back whole.
            let prefixed = format!("{name}{sep}x");
            if prefixed.find(sep.as_str()) != Some(name.len()) {
                return Err(ConfigError::field(&field, format!("`{name}` cannot be read back from `{prefixed}`: the router splits at the first `{sep}`")));
            }
            if config.servers.iter().take(i).any(|n| n == name) {
                return Err(ConfigError::field(&field, format!("`{name}` is listed twice")));
            }
        }
        Ok(Router { servers: config.servers.clone(), separator: sep.clone() })
    }

    fn known(&self, server: &str) -> Option<&str> {
        self.servers.iter().find(|s| *s == server).map(String::as_str)
    }

    /// `alpha__echo` -> (`alpha`, `echo`), split at the first separator as the router does.
    pub fn split_name<'n>(&self, name: &'n str) -> Option<(&str, &'n str)> {
        let at = name.find(self.separator.as_str())?;
        let server = self.known(name.get(..at)?)?;
        Some((server, name.get(at + self.separator.len()..)?))
    }

    /// `alpha+file:///data/x` -> (`alpha`, `file:///data/x`), as the router reads it: the part
    /// before the first `://`, split at its first `+`.
    pub fn split_uri(&self, uri: &str) -> Option<(&str, String)> {
        let scheme_end = uri.find("://")?;
        let head = uri.get(..scheme_end)?;
        let plus = head.find(URI_SEPARATOR)?;
        let server = self.known(head.get(..plus)?)?;
        let scheme = head.get(plus + 1..)?;
        Some((server, format!("{scheme}{}", uri.get(scheme_end..)?)))
    }

    /// The backend a target names, `None` for a message that targets nothing.
    pub fn route_target(&self, target: &Target<'_>) -> Option<Route<'_>> {
        let routed = match target {
            Target::None => return None,
            Target::Tool(n) => self.split_name(n).map(|(s, n)| (s, Target::Tool(Cow::Owned(n.to_string())))),
            Target::Prompt(n) => self.split_name(n).map(|(s, n)| (s, Target::Prompt(Cow::Owned(n.to_string())))),
            Target::Resource(u) => self.split_uri(u).map(|(s, u)| (s, Target::Resource(Cow::Owned(u)))),
        };
        Some(match routed {
            Some((server, target)) => Route::Backend { server, target },
            None => Route::Unknown,
        })
    }

    /// Whether one item of an aggregated list is shown: judged as a use of it on its backend
    /// server, by the name that server knows; an item without a known prefix is hidden.
    pub fn visible(&self, policy: &Policy, subject: Subject<'_>, method: &str, target: &Target<'_>) -> bool {
        match self.route_target(target) {
            Some(Route::Backend { server, target }) => {
                let subject = Subject { identity: subject.identity, server };
                policy.visible(subject, method, &target).allowed()
            }
            _ => false,
        }
    }

    /// Routes the messages of one POST body: every targeted message is given the name its
    /// backend knows. All of them must name the same known backend (the router sends a
    /// request to one server); the others are marked unroutable, to be refused.
    pub fn route<'a>(&self, mut messages: Vec<Message<'a>>) -> (Vec<Message<'a>>, Routed<'a>) {
        let mut routed = Routed { server: None, sent: Vec::with_capacity(messages.len()), unroutable: Vec::new() };
        for (i, m) in messages.iter_mut().enumerate() {
            let route = self.route_target(&m.target);
            match route {
                None => routed.sent.push(None),
                Some(Route::Unknown) => {
                    routed.sent.push(None);
                    routed.unroutable.push((i, UNKNOWN_PREFIX));
                }
                Some(Route::Backend { server, target }) => {
                    match &routed.server {
                        Some(first) if first != server => {
                            routed.sent.push(None);
                            routed.unroutable.push((i, MIXED_SERVERS));
                            continue;
                        }
                        Some(_) => {}
                        None => routed.server = Some(server.to_string()),
                    }
                    routed.sent.push(Some(std::mem::replace(&mut m.target, target)));
                }
            }
        }
        (messages, routed)
    }
}

/// Audit `reason` of a message whose name has no configured server's prefix.
pub const UNKNOWN_PREFIX: &str = "names no server behind the router";
/// Audit `reason` of a message of a batch naming another server than the batch's first.
pub const MIXED_SERVERS: &str = "names another server than the rest of the batch";

/// The routing of one POST body.
#[derive(Debug)]
pub struct Routed<'a> {
    /// The backend server the body's targeted messages go to (none: nothing targeted).
    pub server: Option<String>,
    /// Per message, the target as the client sent it, where it was rewritten.
    sent: Vec<Option<Target<'a>>>,
    /// Messages that cannot be routed, with why.
    unroutable: Vec<(usize, &'static str)>,
}

impl<'a> Routed<'a> {
    /// Completes the judgement of the routed messages: each record names the prefixed name
    /// the client used (`routed_as`); an unroutable message is denied (enforced unless
    /// `dry_run`), whatever the policy said: the gateway cannot tell which server it is for.
    pub fn rule(&self, judgement: &mut Judgement, dry_run: bool) {
        for (record, sent) in judgement.records.iter_mut().zip(self.sent.iter()) {
            if let Some(name) = sent.as_ref().and_then(Target::name) {
                record.detail.routed_as = Some(name.to_string());
            }
        }
        for &(i, reason) in &self.unroutable {
            if let Some(record) = judgement.records.get_mut(i) {
                record.decision = Decision::Deny;
                record.enforced = !dry_run;
                record.rule_id = None;
                record.detail.reason = Some(reason.to_string());
            }
            if let Some(ruling) = judgement.rulings.get_mut(i) {
                *ruling = Ruling::Denied { rule_id: None };
            }
        }
    }

    /// The messages with the names the client sent, for replies (a hidden tool is answered
    /// as `Unknown tool: alpha__delete_row`, the name the client asked for).
    pub fn restore(self, mut messages: Vec<Message<'a>>) -> Vec<Message<'a>> {
        for (m, sent) in messages.iter_mut().zip(self.sent) {
            if let Some(target) = sent {
                m.target = target;
            }
        }
        messages
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "router_exchange_tests.rs"]
mod exchange_tests;
