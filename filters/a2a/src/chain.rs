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

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, CONTROLS};
use sha2::Sha256;

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

/// Appends `n` in decimal, without the formatting machinery (it runs for every forwarded
/// request: hop, expiry, key lengths).
pub(crate) fn push_decimal(out: &mut String, n: u64) {
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

/// An HMAC-SHA256 key (RFC 2104, the `hmac` crate) with its padded inner and outer blocks
/// already hashed, so each MAC costs two SHA-256 blocks fewer (the key is fixed at configure
/// time): every MAC starts from a clone.
#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl HmacKey {
    /// `None` never happens for HMAC (any key length is valid), but the crate's API says it may.
    pub fn new(key: &[u8]) -> Option<Self> {
        Hmac::<Sha256>::new_from_slice(key).ok().map(HmacKey)
    }

    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

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

/// A lower-case hex MAC as the gateway writes it (anything else: `None`, never equal).
fn parse_mac(hex: &str) -> Option<[u8; 32]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (digit(*hi)? << 4) | digit(*lo)?;
    }
    Some(out)
}

/// The `x-tollgate-a2a-sig` value: `v1.<expiry secs>.<hex hmac>` over
/// `tollgate-a2a/v1\n<hop>\n<chain>\n<on-behalf-of>\n<expiry>`. One buffer holds the
/// message, then the value.
pub fn sign(key: &HmacKey, hop: u32, chain: &str, on_behalf_of: Option<&str>, expiry: u64) -> String {
    let mut buf = String::with_capacity(chain.len() + on_behalf_of.map_or(0, str::len) + 96);
    signed_message(&mut buf, hop, chain, on_behalf_of, expiry);
    let mac = key.mac(buf.as_bytes());
    buf.clear();
    buf.push_str("v1.");
    push_decimal(&mut buf, expiry);
    buf.push('.');
    tollgate_core::hash::push_hex(&mut buf, &mac);
    buf
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
pub enum Refusal {
    Loop,
    MaxDepth,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Loop => "A2A_DELEGATION_LOOP",
            Refusal::MaxDepth => "A2A_MAX_DEPTH",
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
pub fn decide(inbound: &Inbound, target: &str, max_hops: u32, continues_task: bool) -> Result<Outgoing, Refusal> {
    let hop = inbound.hop.saturating_add(1);
    if inbound.chain.iter().any(|a| a == target) && !continues_task {
        return Err(Refusal::Loop);
    }
    if hop > max_hops {
        return Err(Refusal::MaxDepth);
    }
    let mut chain = inbound.chain.clone();
    chain.push(target.to_string());
    Ok(Outgoing { hop, chain })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key(bytes: &[u8]) -> HmacKey {
        HmacKey::new(bytes).unwrap()
    }

    /// The hand-written HMAC-SHA256 (RFC 2104) this module used before the `hmac` crate: the
    /// reference that signatures stay the same across the change (agents hand a signed context
    /// back on the next hop, possibly to a gateway of the other build).
    fn old_hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        const BLOCK: usize = 64;
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            k.iter_mut().zip(Sha256::digest(key)).for_each(|(dst, src)| *dst = src);
        } else {
            k.iter_mut().zip(key).for_each(|(dst, src)| *dst = *src);
        }
        let mut ipad = [0x36u8; BLOCK];
        let mut opad = [0x5cu8; BLOCK];
        for ((i, o), kb) in ipad.iter_mut().zip(opad.iter_mut()).zip(k) {
            *i ^= kb;
            *o ^= kb;
        }
        let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
        Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2.
        let mac = key(b"Jefe").mac(b"what do ya want for nothing?");
        assert_eq!(
            tollgate_core::hash::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Keys longer than a block are hashed first (RFC 4231 test case 6).
        let mac = key(&[0xaa; 131]).mac(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            tollgate_core::hash::hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hmac_equals_the_old_implementation() {
        let long_key = [0x5au8; 200];
        let keys: [&[u8]; 5] = [KEY, b"", b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &long_key, &[0u8; 65]];
        let messages: [&[u8]; 4] = [b"", b"tollgate-a2a/v1\n12\nagent-a,agent-b\nalice\n1700000600", &[0xffu8; 1000], b"x"];
        for k in keys {
            for m in messages {
                assert_eq!(key(k).mac(m), old_hmac(k, m), "key {} bytes, message {} bytes", k.len(), m.len());
                assert!(key(k).verify(m, &old_hmac(k, m)));
            }
        }
        // The signature value over fixed inputs, as the old build wrote it.
        let sig = sign(&key(KEY), 3, "agent-a,agent-b", Some("alice"), 1_700_000_600);
        let old = old_hmac(KEY, b"tollgate-a2a/v1\n3\nagent-a,agent-b\nalice\n1700000600");
        assert_eq!(sig, format!("v1.1700000600.{}", tollgate_core::hash::hex(&old)));
    }

    #[test]
    fn only_the_lower_case_hex_mac_verifies() {
        let p = presented(1, "agent-a", None, 1000);
        let sig = p.sig.clone().unwrap();
        assert!(verify(&key(KEY), &p, 10));
        for bad in [sig.to_uppercase().replace("V1.", "v1."), format!("{sig}0"), sig[..sig.len() - 1].to_string(), format!("{}g", &sig[..sig.len() - 1])] {
            assert!(!verify(&key(KEY), &Presented { sig: Some(bad.clone()), ..p.clone() }, 10), "{bad}");
        }
    }

    #[test]
    fn chain_elements_encode_as_before() {
        // The hand-written encoder this replaced, as the reference.
        let reference = |s: &str| -> String {
            let mut out = String::new();
            for c in s.chars() {
                if c.is_ascii_graphic() && c != ',' && c != '%' {
                    out.push(c);
                } else {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                }
            }
            out
        };
        let all: String = (0u8..=127).map(char::from).collect();
        for s in ["agent-a", "spiffe://x/ns/a,b", "100%", "\u{fc} \u{1f600}", "a\u{1f}\n\u{7f}", all.as_str()] {
            let mut out = String::new();
            encode_element(s, &mut out);
            assert_eq!(out, reference(s), "{s:?}");
        }
    }

    #[test]
    fn signature_value_is_stable() {
        // The exact bytes signed and the value's shape: agents hand it back on the next hop,
        // possibly to a gateway of another build.
        let key = key(KEY);
        let mac = key.mac(b"tollgate-a2a/v1\n12\nagent-a,agent-b\nalice\n1700000600");
        let expected = format!("v1.1700000600.{}", tollgate_core::hash::hex(&mac));
        assert_eq!(sign(&key, 12, "agent-a,agent-b", Some("alice"), 1_700_000_600), expected);
        let mac = key.mac(b"tollgate-a2a/v1\n0\n\n\n0");
        assert_eq!(sign(&key, 0, "", None, 0), format!("v1.0.{}", tollgate_core::hash::hex(&mac)));
        for n in [0, 7, 10, 99, 12_345, u64::MAX / 10, u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn context_expiry_saturates() {
        assert_eq!(context_expiry(1_700_000_000_999_999_999, 600), 1_700_000_600);
        assert_eq!(context_expiry(0, 1), 1);
        assert_eq!(context_expiry(u64::MAX, 600), u64::MAX / 1_000_000_000 + 600);
        assert_eq!(context_expiry(u64::MAX, u64::MAX), u64::MAX, "saturates, never wraps into the past");
        assert_eq!(context_expiry(1_000_000_000, u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn chain_encoding_round_trips() {
        let chain = vec!["agent-a".to_string(), "spiffe://x/ns/a,b".to_string(), "100%".to_string(), "ü".to_string(), "a\u{1f}\n".to_string()];
        let encoded = encode_chain(&chain);
        assert_eq!(encoded, "agent-a,spiffe://x/ns/a%2Cb,100%25,%C3%BC,a%1F%0A");
        assert_eq!(decode_chain(&encoded), Some(chain));
        assert_eq!(decode_chain(""), Some(vec![]));
        assert_eq!(decode_chain("a,,b"), None);
        assert_eq!(decode_chain("a,b%zz"), None, "invalid escapes are refused, not kept");
        assert_eq!(decode_chain("a,%FF"), None);
        assert_eq!(decode_chain(&vec!["a"; MAX_CHAIN + 1].join(",")), None);
    }

    fn presented(hop: u32, chain: &str, obo: Option<&str>, expiry: u64) -> Presented {
        Presented {
            hop: Some(hop.to_string()),
            chain: Some(chain.into()),
            on_behalf_of: obo.map(String::from),
            sig: Some(sign(&key(KEY), hop, chain, obo, expiry)),
        }
    }

    #[test]
    fn signatures_verify_and_expire_and_bind_every_field() {
        let p = presented(1, "agent-a", Some("alice"), 1000);
        assert!(verify(&key(KEY), &p, 999));
        assert!(!verify(&key(KEY), &p, 1000), "expired");
        assert!(!verify(&key(b"another key another key another!"), &p, 10));
        for tamper in [
            Presented { hop: Some("0".into()), ..p.clone() },
            Presented { chain: Some("agent-b".into()), ..p.clone() },
            Presented { on_behalf_of: Some("mallory".into()), ..p.clone() },
            Presented { on_behalf_of: None, ..p.clone() },
            Presented { sig: Some(p.sig.clone().unwrap().replace("v1.1000.", "v1.9999.")), ..p.clone() },
            Presented { sig: None, ..p.clone() },
        ] {
            assert!(!verify(&key(KEY), &tamper, 10), "{tamper:?}");
        }
    }

    #[test]
    fn untrusted_context_is_discarded() {
        let p = presented(5, "x,y", Some("mallory"), 1000);
        assert_eq!(accept(&p, None, false), Inbound::untrusted());
    }

    #[test]
    fn signed_context_names_the_caller() {
        let inbound = accept(&presented(1, "agent-a", Some("alice"), 1000), None, true);
        assert_eq!(inbound.trust, Trust::Signature);
        assert_eq!(inbound.caller_agent.as_deref(), Some("agent-a"));
        assert_eq!(inbound.hop, 1);
        assert_eq!(inbound.on_behalf_of.as_deref(), Some("alice"));
        // A signed but empty chain names nobody: not trusted.
        assert_eq!(accept(&presented(1, "", None, 1000), None, true).trust, Trust::None);
    }

    #[test]
    fn trusted_agent_joins_its_own_chain() {
        let inbound = accept(&Presented::default(), Some("agent-a"), false);
        assert_eq!(inbound.chain, vec!["agent-a"]);
        assert_eq!(inbound.hop, 0);
        let inbound = accept(&presented(1, "agent-a", None, 1), Some("agent-a"), false);
        assert_eq!(inbound.chain, vec!["agent-a"]);
        assert_eq!(inbound.hop, 1);
    }

    #[test]
    fn hops_loops_and_depth() {
        let start = Inbound::untrusted();
        let hop1 = decide(&start, "agent-a", 3, false).unwrap();
        assert_eq!(hop1, Outgoing { hop: 1, chain: vec!["agent-a".into()] });
        let at_a = Inbound { hop: 1, chain: hop1.chain, on_behalf_of: None, caller_agent: Some("agent-a".into()), trust: Trust::Signature };
        let hop2 = decide(&at_a, "agent-b", 3, false).unwrap();
        assert_eq!(hop2.hop, 2);
        let at_b = Inbound { hop: 2, chain: hop2.chain, ..at_a.clone() };
        assert_eq!(decide(&at_b, "agent-a", 3, false), Err(Refusal::Loop));
        assert!(decide(&at_b, "agent-a", 3, true).is_ok(), "continuing agent-a's own task is not a loop");
        assert_eq!(decide(&at_b, "agent-c", 3, false).map(|o| o.hop), Ok(3));
        assert_eq!(decide(&at_b, "agent-c", 2, false), Err(Refusal::MaxDepth));
        assert_eq!(decide(&at_a, "agent-a", 8, false), Err(Refusal::Loop), "calling itself");
    }
}
