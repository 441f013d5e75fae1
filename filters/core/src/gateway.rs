//! The gateway credential: the signed identity the A2A filter gives an agent with every call
//! it forwards, which the LLM and MCP filters of the same fleet accept as the identity source
//! `gateway` on that agent's own calls. Pure: no host access.
//!
//! One header, `x-tollgate-a2a-credential`, carries every claim and the MAC:
//!
//! ```text
//! v1;exp=<unix secs>;trace=<32 hex>;agent=<a>;obo=<p>;team=<t>;tier=<t>;chain=<a>,<b>;sig=<64 hex>
//! ```
//!
//! `obo`, `team`, `tier` and `chain` are left out when empty; values are percent-encoded
//! (`;` `=` `,` `%`, space, control and non-ASCII bytes), chain elements one by one. `sig` is
//! HMAC-SHA256 with the fleet's signing key (the A2A filter's `delegation.signing_key`, the
//! LLM and MCP filters' `identity.gateway.signing_key`) over `tollgate-gateway/v1\n` followed
//! by the value up to `;sig=`, so every byte the verifier parses was signed. It is bound to
//! the trace (`trace`: the trace id of the `traceparent` the gateway sent with the hop; the
//! agent's calls must carry the same trace id), to the agent it was issued to, the
//! on-behalf-of principal, the team/tier and the chain, and it expires at `exp`.
//!
//! The same key also signs the A2A filter's own delegation context (`x-tollgate-a2a-sig`),
//! with [`HmacKey`] from here.




/// The header carrying the credential (gateway-owned: the A2A filter removes it from what a
/// caller sends and sets its own; the LLM and MCP filters remove it before the upstream).
pub const HEADER: &str = "x-tollgate-a2a-credential";

/// Longest credential value accepted (anything longer is malformed, never parsed).
pub const MAX_LEN: usize = 8192;

/// Longest chain accepted.
pub const MAX_CHAIN: usize = 64;

const DOMAIN: &str = "tollgate-gateway/v1\n";
const SIG_SEPARATOR: &str = ";sig=";

/// The fleet's HMAC key (one type in core, [`crate::hash::HmacKey`]; the MCP filter's session
/// binding uses it too).
pub use crate::hash::HmacKey;

/// Appends `n` in decimal, without the formatting machinery.
pub fn push_decimal(out: &mut String, n: u64) {
    // Filled from the end; 20 digits hold any u64, so the loop always ends on `rest == 0`.
    let mut digits = [0u8; 20];
    let mut used = 0;
    let mut rest = n;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        used += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend(digits.iter().skip(digits.len().saturating_sub(used)).map(|&d| char::from(d)));
}

/// A lower-case hex MAC as the gateway writes it (anything else: `None`, never equal).
pub fn parse_mac(hex: &str) -> Option<[u8; 32]> {
    crate::hash::parse_hex(hex)
}

/// What the gateway asserts about the agent holding the credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// Expiry, Unix seconds.
    pub expiry: u64,
    /// The trace id (32 lowercase hex) of the hop the credential was issued with.
    pub trace_id: String,
    /// The agent it was issued to (the chain's last element).
    pub agent: String,
    pub on_behalf_of: Option<String>,
    pub team: Option<String>,
    pub tier: Option<String>,
    /// The delegation chain, first caller first, ending with `agent`.
    pub chain: Vec<String>,
}

/// Why a presented credential is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not in the gateway's format (or too long).
    Malformed,
    /// The MAC does not verify: forged, altered, or signed with another key.
    BadSignature,
    Expired,
    /// The request carries no valid `traceparent` to bind the credential to.
    NoTrace,
    /// The request's trace id is not the one the credential was issued for (replayed).
    OtherTrace,
    /// The connection's peer certificate names another agent than the credential (or a
    /// SPIFFE id outside the configured trust domain).
    PeerMismatch,
    /// `require_peer_certificate`: the connection has no verified peer certificate with a
    /// URI SAN to bind the credential to.
    NoPeer,
}

impl Rejection {
    /// The reason in audit records and replies.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Malformed => "gateway credential malformed",
            Rejection::BadSignature => "gateway credential signature invalid",
            Rejection::Expired => "gateway credential expired",
            Rejection::NoTrace => "gateway credential without a trace to bind it to",
            Rejection::OtherTrace => "gateway credential replayed on another trace",
            Rejection::PeerMismatch => "gateway credential held by another peer than its agent",
            Rejection::NoPeer => "gateway credential without a peer certificate to bind it to",
        }
    }

    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NoTrace => "no_trace",
            Rejection::OtherTrace => "other_trace",
            Rejection::PeerMismatch => "peer_mismatch",
            Rejection::NoPeer => "no_peer",
        }
    }
}

fn is_literal(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b';' | b'=' | b',' | b'%')
}

fn push_encoded(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if is_literal(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            crate::hash::push_hex(out, &[b]);
        }
    }
}

fn decode(s: &str) -> Option<String> {
    let value = crate::text::percent_decode(s).ok()?;
    (!value.is_empty()).then_some(value)
}

fn push_field(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        out.push(';');
        out.push_str(key);
        out.push('=');
        push_encoded(out, v);
    }
}

/// The header value for `credential`, signed with `key`.
pub fn sign(key: &HmacKey, credential: &Credential) -> String {
    let mut out = String::with_capacity(160 + credential.chain.iter().map(|c| c.len() + 1).sum::<usize>());
    out.push_str("v1;exp=");
    push_decimal(&mut out, credential.expiry);
    out.push_str(";trace=");
    push_encoded(&mut out, &credential.trace_id);
    out.push_str(";agent=");
    push_encoded(&mut out, &credential.agent);
    push_field(&mut out, "obo", credential.on_behalf_of.as_deref());
    push_field(&mut out, "team", credential.team.as_deref());
    push_field(&mut out, "tier", credential.tier.as_deref());
    if !credential.chain.is_empty() {
        out.push_str(";chain=");
        for (i, element) in credential.chain.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_encoded(&mut out, element);
        }
    }
    let mac = key.mac(&[DOMAIN.as_bytes(), out.as_bytes()].concat());
    out.push_str(SIG_SEPARATOR);
    crate::hash::push_hex(&mut out, &mac);
    out
}

/// Checks the signature (constant time), then the format and the expiry (`now_secs`).
/// The trace binding is checked by [`check_trace`].
pub fn verify(key: &HmacKey, value: &str, now_secs: u64) -> Result<Credential, Rejection> {
    let value = value.trim();
    if value.len() > MAX_LEN {
        return Err(Rejection::Malformed);
    }
    let (signed, mac) = value.rsplit_once(SIG_SEPARATOR).ok_or(Rejection::Malformed)?;
    let tag = parse_mac(mac).ok_or(Rejection::Malformed)?;
    if !key.verify_parts(&[DOMAIN.as_bytes(), signed.as_bytes()], &tag) {
        return Err(Rejection::BadSignature);
    }
    let credential = parse(signed).ok_or(Rejection::Malformed)?;
    if credential.expiry <= now_secs {
        return Err(Rejection::Expired);
    }
    Ok(credential)
}

/// The signed part, `v1;exp=..;trace=..;agent=..[;obo=..][;team=..][;tier=..][;chain=..]`:
/// each key at most once, `exp`, `trace` and `agent` required, nothing else.
fn parse(signed: &str) -> Option<Credential> {
    let mut fields = signed.split(';');
    if fields.next() != Some("v1") {
        return None;
    }
    let mut credential = Credential::default();
    let (mut exp, mut trace, mut agent, mut obo, mut team, mut tier, mut chain) = (false, false, false, false, false, false, false);
    for field in fields {
        let (key, raw) = field.split_once('=')?;
        let seen = match key {
            "exp" => {
                credential.expiry = raw.parse().ok()?;
                &mut exp
            }
            "trace" => {
                credential.trace_id = decode(raw)?;
                &mut trace
            }
            "agent" => {
                credential.agent = decode(raw)?;
                &mut agent
            }
            "obo" => {
                credential.on_behalf_of = Some(decode(raw)?);
                &mut obo
            }
            "team" => {
                credential.team = Some(decode(raw)?);
                &mut team
            }
            "tier" => {
                credential.tier = Some(decode(raw)?);
                &mut tier
            }
            "chain" => {
                credential.chain = raw.split(',').map(decode).collect::<Option<_>>()?;
                if credential.chain.len() > MAX_CHAIN {
                    return None;
                }
                &mut chain
            }
            _ => return None,
        };
        if *seen {
            return None;
        }
        *seen = true;
    }
    // The chain, when present, ends with the agent it was issued to (the MAC already binds
    // both; this keeps a signer's mistake from naming one agent and delegating as another).
    let chain_ends_with_agent = credential.chain.last().is_none_or(|last| *last == credential.agent);
    (exp && trace && agent && chain_ends_with_agent).then_some(credential)
}

/// The credential must name the trace the request is on: `trace_id` is the trace id of the
/// request's valid `traceparent` (`None`: absent or invalid).
pub fn check_trace(credential: &Credential, trace_id: Option<&str>) -> Result<(), Rejection> {
    match trace_id {
        None => Err(Rejection::NoTrace),
        Some(t) if t.eq_ignore_ascii_case(&credential.trace_id) => Ok(()),
        Some(_) => Err(Rejection::OtherTrace),
    }
}

/// Whether a peer certificate's URI SAN names `agent`: the SAN itself, or a SPIFFE id whose
/// last path segment is the agent (`spiffe://<domain>/ns/<ns>/sa/<agent>`). With
/// `trust_domain`, only a SPIFFE id of that trust domain names anyone (compared without
/// case, as SPIFFE trust domains are): a certificate another domain's CA issued for an
/// agent of the same name is not that agent.
pub fn peer_names_agent(uri_san: &str, agent: &str, trust_domain: Option<&str>) -> bool {
    let spiffe = uri_san.get(..9).filter(|p| p.eq_ignore_ascii_case("spiffe://")).and_then(|_| uri_san.get(9..));
    match (spiffe, trust_domain) {
        (Some(rest), domain) => {
            let Some((host, path)) = rest.split_once('/') else { return false };
            if domain.is_some_and(|d| !host.eq_ignore_ascii_case(d)) {
                return false;
            }
            uri_san == agent || path.rsplit('/').next().is_some_and(|last| last == agent)
        }
        (None, Some(_)) => false,
        (None, None) => uri_san == agent,
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
