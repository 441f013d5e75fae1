//! Delegation chain: the gateway-owned `x-tollgate-a2a-*` headers carrying the hop count,
//! the chain of agent identities and the on-behalf-of user; who is trusted to assert them;
//! and the loop and depth decisions. Pure: no host access.
//!
//! Trust model. The gateway sets these headers on every A2A call it forwards; agents copy
//! `x-tollgate-*` headers from their inbound request onto their outbound calls. On the next
//! hop the gateway believes the copy only if the caller is trusted:
//! - by identity: the authenticated principal (API key, mTLS SPIFFE id, JWT, trusted header)
//!   is listed in `delegation.trusted_agents` (and maps to an agent identity), or
//! - by signature: with `delegation.signing_key`, the gateway signs (HMAC-SHA256) the hop,
//!   chain, on-behalf-of and an expiry it sends to an agent; a request presenting that
//!   context back with a valid signature before expiry comes from the agent it was issued to
//!   (the chain's last element), which is then the caller.
//!
//! From anyone else the headers are dropped and replaced: the call starts a new chain at hop 1.

use percent_encoding::{AsciiSet, CONTROLS};
use std::cell::RefCell;

pub const PREFIX: &str = "x-tollgate-a2a-";
pub const HOP: &str = "x-tollgate-a2a-hop";
pub const CHAIN: &str = "x-tollgate-a2a-chain";
pub const SIG: &str = "x-tollgate-a2a-sig";
pub const ON_BEHALF_OF: &str = "x-tollgate-a2a-on-behalf-of";
pub const CALLER: &str = "x-tollgate-a2a-caller";
pub const CONTEXT_ID: &str = "x-tollgate-a2a-context-id";
pub const TASK_ID: &str = "x-tollgate-a2a-task-id";
pub const MESSAGE_ID: &str = "x-tollgate-a2a-message-id";

/// Longest chain accepted from a caller (more elements: the header is treated as garbage).
pub const MAX_CHAIN: usize = 64;

/// The gateway-owned context as a caller presented it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Presented {
    pub hop: Option<String>,
    pub chain: Option<String>,
    pub on_behalf_of: Option<String>,
    pub sig: Option<String>,
}

impl Presented {
    pub fn is_empty(&self) -> bool {
        self.hop.is_none() && self.chain.is_none() && self.on_behalf_of.is_none() && self.sig.is_none()
    }
}

/// What a chain element may not carry literally: `,` (the separator), `%` (the escape), space
/// and control characters; non-ASCII is always encoded (what is left is ASCII graphic).
const ELEMENT: &AsciiSet = &CONTROLS.add(b' ').add(b',').add(b'%');

/// Appends `s` with `,` `%` and non-printable characters percent-encoded.
fn encode_element(s: &str, out: &mut String) {
    out.extend(percent_encoding::utf8_percent_encode(s, ELEMENT));
}

pub(crate) use tollgate_core::gateway::push_decimal;

/// One chain element; `None` for an invalid escape (the whole chain is then garbage).
fn decode_element(s: &str) -> Option<String> {
    tollgate_core::text::percent_decode(s.trim()).ok()
}

/// `a,b,c` with `,` `%` and non-printable characters percent-encoded in each identity.
pub fn encode_chain(chain: &[String]) -> String {
    let mut out = String::with_capacity(chain.iter().map(|s| s.len() + 1).sum());
    for (i, element) in chain.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_element(element, &mut out);
    }
    out
}

pub fn decode_chain(value: &str) -> Option<Vec<String>> {
    if value.trim().is_empty() {
        return Some(Vec::new());
    }
    let chain: Vec<String> = value.split(',').map(decode_element).collect::<Option<_>>()?;
    if chain.len() > MAX_CHAIN || chain.iter().any(String::is_empty) {
        return None;
    }
    Some(chain)
}

/// The fleet's HMAC key (core), shared with the gateway credential and the MCP session binding.
pub use tollgate_core::hash::HmacKey;

/// The signed message: `tollgate-a2a/v1\n<hop>\n<chain>\n<on-behalf-of>\n<expiry>`, in `buf`.
fn signed_message(buf: &mut String, hop: u32, chain: &str, on_behalf_of: Option<&str>, expiry: u64) {
    buf.push_str("tollgate-a2a/v1\n");
    push_decimal(buf, u64::from(hop));
    buf.push('\n');
    buf.push_str(chain);
    buf.push('\n');
    buf.push_str(on_behalf_of.unwrap_or(""));
    buf.push('\n');
    push_decimal(buf, expiry);
}

use tollgate_core::gateway::parse_mac;

/// The `x-tollgate-a2a-sig` value: `v1.<expiry secs>.<hex hmac>` over
/// `tollgate-a2a/v1\n<hop>\n<chain>\n<on-behalf-of>\n<expiry>`. One buffer holds the
/// message, then the value.
pub fn sign(key: &HmacKey, hop: u32, chain: &str, on_behalf_of: Option<&str>, expiry: u64) -> String {
    let mut buf = String::with_capacity(chain.len() + on_behalf_of.map_or(0, str::len) + 96);
    signed_message(&mut buf, hop, chain, on_behalf_of, expiry);
    let mac = key.mac(buf.as_bytes());
    buf.clear();
    signed_value(&mut buf, expiry, &mac);
    buf
}

fn signed_value(buf: &mut String, expiry: u64, mac: &[u8]) {
    buf.push_str("v1.");
    push_decimal(buf, expiry);
    buf.push('.');
    tollgate_core::hash::push_hex(buf, mac);
}

/// The last delegation context this VM signed, with its value: the same context (hop, chain,
/// on-behalf-of and expiry, so the same caller within the same second) signed again gets the
/// same value without a second HMAC (two SHA-256 compressions). The value is a pure function
/// of the key and the message, so nothing changes for an agent; the memo holds only what was
/// already sent upstream. Lives in the per-VM `State`: a new configuration (a new key)
/// starts empty.
#[derive(Debug, Default)]
pub struct SignMemo {
    last: RefCell<Option<(String, String)>>,
}

impl SignMemo {
    /// [`sign`], or the value signed last when the message is the same.
    pub fn sign(&self, key: &HmacKey, hop: u32, chain: &str, on_behalf_of: Option<&str>, expiry: u64) -> String {
        let mut message = String::with_capacity(chain.len() + on_behalf_of.map_or(0, str::len) + 48);
        signed_message(&mut message, hop, chain, on_behalf_of, expiry);
        if let Ok(last) = self.last.try_borrow() {
            if let Some((_, value)) = last.as_ref().filter(|(signed, _)| *signed == message) {
                return value.clone();
            }
        }
        let mut value = String::with_capacity(96);
        signed_value(&mut value, expiry, &key.mac(message.as_bytes()));
        if let Ok(mut last) = self.last.try_borrow_mut() {
            *last = Some((message, value.clone()));
        }
        value
    }
}

/// When a context signed now expires: `now + ttl` in whole seconds, saturating (a clock or a
/// TTL near `u64::MAX` must neither wrap into the past nor trap).
pub fn context_expiry(now_nanos: u64, ttl_secs: u64) -> u64 {
    (now_nanos / 1_000_000_000).saturating_add(ttl_secs)
}

/// Checks a presented context's signature and expiry. Constant time over the MAC.
pub fn verify(key: &HmacKey, presented: &Presented, now_secs: u64) -> bool {
    let (Some(sig), Some(hop), Some(chain)) = (&presented.sig, &presented.hop, &presented.chain) else {
        return false;
    };
    let mut parts = sig.trim().splitn(3, '.');
    let (Some("v1"), Some(expiry), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<u64>() else { return false };
    let Ok(hop) = hop.trim().parse::<u32>() else { return false };
    if expiry <= now_secs {
        return false;
    }
    let Some(tag) = parse_mac(mac) else { return false };
    let chain = chain.trim();
    let on_behalf_of = presented.on_behalf_of.as_deref();
    let mut message = String::with_capacity(chain.len() + on_behalf_of.map_or(0, str::len) + 64);
    signed_message(&mut message, hop, chain, on_behalf_of, expiry);
    key.verify(message.as_bytes(), &tag)
}

/// How the inbound context was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The caller's authenticated identity is a trusted agent.
    Identity,
    /// The context carries the gateway's valid signature.
    Signature,
    /// Not trusted: any presented context was discarded.
    None,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Identity => "identity",
            Trust::Signature => "signature",
            Trust::None => "none",
        }
    }
}

/// The context the gateway accepts for this call, before adding the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The previous hop's number (0: this call starts a chain).
    pub hop: u32,
    pub chain: Vec<String>,
    pub on_behalf_of: Option<String>,
    /// The agent identity of the caller when it is an agent (trusted).
    pub caller_agent: Option<String>,
    pub trust: Trust,
}

impl Inbound {
    pub fn untrusted() -> Inbound {
        Inbound { hop: 0, chain: Vec::new(), on_behalf_of: None, caller_agent: None, trust: Trust::None }
    }
}

/// Accepts the presented context from a trusted caller. `agent_identity`: the caller's
/// agent identity when its principal is a trusted agent; `signature_ok`: the presented
/// context verified against the signing key.
pub fn accept(presented: &Presented, agent_identity: Option<&str>, signature_ok: bool) -> Inbound {
    let trust = if agent_identity.is_some() {
        Trust::Identity
    } else if signature_ok {
        Trust::Signature
    } else {
        return Inbound::untrusted();
    };
    let hop = presented.hop.as_deref().and_then(|h| h.trim().parse::<u32>().ok()).unwrap_or(0);
    let Some(mut chain) = decode_chain(presented.chain.as_deref().unwrap_or("")) else {
        return Inbound::untrusted();
    };
    let on_behalf_of = presented.on_behalf_of.clone().filter(|s| !s.trim().is_empty());
    let caller_agent = match agent_identity {
        Some(agent) => {
            // A trusted agent calling on its own (or whose chain does not end with itself):
            // it is the chain's latest member.
            if chain.last().map(String::as_str) != Some(agent) {
                chain.push(agent.to_string());
            }
            Some(agent.to_string())
        }
        None => chain.last().cloned(),
    };
    if trust == Trust::Signature && caller_agent.is_none() {
        return Inbound::untrusted();
    }
    Inbound { hop, chain, on_behalf_of, caller_agent, trust }
}

/// Why a delegation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Loop,
    MaxDepth,
}

impl Violation {
    pub fn reason(self) -> &'static str {
        match self {
            Violation::Loop => "A2A_DELEGATION_LOOP",
            Violation::MaxDepth => "A2A_MAX_DEPTH",
        }
    }
}

/// The outgoing context of an allowed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub hop: u32,
    pub chain: Vec<String>,
}

/// Decides a call to `target`. `continues_task`: the call continues a task the target
/// already owns (e.g. answering its input-required), which is not a loop.
pub fn decide(inbound: &Inbound, target: &str, max_hops: u32, continues_task: bool) -> Result<Outgoing, Violation> {
    let hop = inbound.hop.saturating_add(1);
    if inbound.chain.iter().any(|a| a == target) && !continues_task {
        return Err(Violation::Loop);
    }
    if hop > max_hops {
        return Err(Violation::MaxDepth);
    }
    let mut chain = inbound.chain.clone();
    chain.push(target.to_string());
    Ok(Outgoing { hop, chain })
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
