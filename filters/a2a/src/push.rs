//! Push-notification webhooks (SSRF): the URL a caller asks an agent to call back
//! (`CreateTaskPushNotificationConfig` / 0.3 `tasks/pushNotificationConfig/set`, and the push
//! config inside `SendMessage`'s `configuration`) is checked before the agent sees it. The
//! agent would otherwise POST task updates, from inside the network, to wherever the caller
//! says: a loopback admin port, the cloud metadata service, a private address.
//!
//! A URL passes when its scheme is `http`/`https` and its host is either listed in
//! `push_notifications.allowed_hosts`, or is a name not listed as refused (built-in
//! [`REFUSED_NAMES`] plus `refused_hosts`), or an IP address outside the refused classes
//! (loopback, link-local, metadata, private — admitted by `allow_private` —, unspecified,
//! multicast, reserved). IP literals are read as a resolver reads them (`inet_aton`: decimal
//! `2130706433`, octal `0177.0.0.1`, hex `0x7f.1`, short forms), IPv6 with embedded IPv4
//! (mapped, compatible, NAT64, 6to4) by the IPv4 inside. Anything the check cannot read
//! unambiguously (userinfo with two `@`, a non-ASCII or percent-escaped host, a zone id, a
//! numeric-looking name that is no address) is refused. Pure: no host access.
//!
//! A name that is not an IP literal is not resolved: DNS rebinding (a public name resolving to
//! a private address) remains the agent's job (its HTTP client must refuse such addresses).

use crate::classify::Method;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use tollgate_core::glob::Glob;

/// Names refused whatever the configuration says (unless in `allowed_hosts`): loopback names
/// and the cloud metadata services' names.
pub const REFUSED_NAMES: &[&str] = &[
    "localhost",
    "*.localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The compiled `push_notifications` settings.
#[derive(Debug, Default)]
pub struct PushPolicy {
    /// Hosts admitted whatever they are (globs over the normalized host: lowercase name, dotted
    /// IPv4, IPv6 without brackets).
    pub allowed_hosts: Vec<Glob>,
    /// Names refused beside [`REFUSED_NAMES`].
    pub refused_hosts: Vec<Glob>,
    /// Admit private addresses (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10).
    pub allow_private: bool,
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The request's push config could not be read (a `url` that is not a string, a create
    /// with no URL at all, a protobuf that does not parse).
    Unreadable,
    /// Not `http://` or `https://` (or no `//` authority).
    Scheme,
    /// A host the check cannot read unambiguously.
    BadHost,
    Loopback,
    LinkLocal,
    Metadata,
    Private,
    Unspecified,
    Multicast,
    Reserved,
    /// A name in `REFUSED_NAMES` or `refused_hosts`.
    RefusedName,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Unreadable => "unreadable",
            Why::Scheme => "scheme",
            Why::BadHost => "bad_host",
            Why::Loopback => "loopback",
            Why::LinkLocal => "link_local",
            Why::Metadata => "metadata",
            Why::Private => "private",
            Why::Unspecified => "unspecified",
            Why::Multicast => "multicast",
            Why::Reserved => "reserved",
            Why::RefusedName => "refused_name",
        }
    }
}

/// A host as the check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Name(String),
}

impl Host {
    /// The normalized form `allowed_hosts` / `refused_hosts` globs match.
    pub fn normalized(&self) -> String {
        match self {
            Host::V4(a) => a.to_string(),
            Host::V6(a) => a.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

/// Checks one webhook URL.
pub fn check_url(url: &str, policy: &PushPolicy) -> Result<(), Why> {
    let host = parse_host(url)?;
    let normalized = host.normalized();
    if policy.allowed_hosts.iter().any(|g| g.matches(&normalized)) {
        return Ok(());
    }
    match host {
        Host::V4(a) => classify_v4(a),
        Host::V6(a) => classify_v6(a),
        Host::Name(n) => {
            let refused = REFUSED_NAMES.iter().any(|p| Glob::new(p).matches(&n)) || policy.refused_hosts.iter().any(|g| g.matches(&n));
            if refused {
                Some(Why::RefusedName)
            } else {
                None
            }
        }
    }
    .map_or(Ok(()), |why| if why == Why::Private && policy.allow_private { Ok(()) } else { Err(why) })
}

/// The host of an `http(s)://` URL, read as an HTTP client and its resolver read it.
pub fn parse_host(url: &str) -> Result<Host, Why> {
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'\\') || !url.is_ascii() {
        return Err(Why::BadHost);
    }
    let (scheme, rest) = url.split_once(':').ok_or(Why::Scheme)?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(Why::Scheme);
    }
    let rest = rest.strip_prefix("//").ok_or(Why::Scheme)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = match authority.matches('@').count() {
        0 => authority,
        1 => authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(""),
        _ => return Err(Why::BadHost),
    };
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        let (inside, after) = v6.split_once(']').ok_or(Why::BadHost)?;
        check_port(after)?;
        return inside.parse::<Ipv6Addr>().map(Host::V6).map_err(|_| Why::BadHost);
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        };
        if let Some(p) = port {
            check_port(&format!(":{p}"))?;
        }
        host
    };
    if host.contains('%') {
        // Clients decode escapes in hosts differently: never guessed.
        return Err(Why::BadHost);
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_') {
        return Err(Why::BadHost);
    }
    if let Some(a) = parse_ipv4(host) {
        return Ok(Host::V4(a));
    }
    // A name whose last label looks numeric is an address to a resolver, or an error: refused.
    let last = host.rsplit('.').next().unwrap_or("");
    if last.is_empty() || last.bytes().all(|b| b.is_ascii_digit()) || is_hex_number(last) {
        return Err(Why::BadHost);
    }
    Ok(Host::Name(host.to_string()))
}

fn check_port(after: &str) -> Result<(), Why> {
    match after.strip_prefix(':') {
        None if after.is_empty() => Ok(()),
        Some(p) if p.is_empty() || (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|n| n <= 65535)) => Ok(()),
        _ => Err(Why::BadHost),
    }
}

fn is_hex_number(s: &str) -> bool {
    s.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One `inet_aton` number: `0x` hex, leading-zero octal, else decimal.
fn parse_part(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = s.strip_prefix('0').filter(|o| !o.is_empty()) {
        (o, 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        // `0x` alone is 0 to WHATWG, an error to inet_aton: ambiguous, refused by the caller.
        return None;
    }
    if digits.len() > 32 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// An IPv4 address in any form `inet_aton` accepts: `a.b.c.d`, `a.b.c` (c: 16 bits), `a.b`
/// (b: 24 bits), `a` (32 bits), each part decimal, octal or hex.
pub fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(parse_part(p)?);
    }
    let (last, init) = nums.split_last()?;
    let mut value: u64 = 0;
    for n in init {
        if *n > 255 {
            return None;
        }
        value = (value << 8) | n;
    }
    let rest_bits = 8 * (4 - init.len() as u32);
    if *last >= (1u64 << rest_bits) {
        return None;
    }
    value = (value << rest_bits) | last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// Metadata services reached by address: AWS/GCP/Azure/OpenStack, AWS ECS task metadata,
/// Alibaba, Azure's wire server.
const METADATA_V4: &[[u8; 4]] = &[[169, 254, 169, 254], [169, 254, 170, 2], [100, 100, 100, 200], [168, 63, 129, 16]];

fn classify_v4(a: Ipv4Addr) -> Option<Why> {
    let [o0, o1, _, _] = a.octets();
    if METADATA_V4.contains(&a.octets()) {
        Some(Why::Metadata)
    } else if o0 == 0 {
        Some(Why::Unspecified)
    } else if o0 == 127 {
        Some(Why::Loopback)
    } else if o0 == 169 && o1 == 254 {
        Some(Why::LinkLocal)
    } else if o0 == 10 || (o0 == 172 && (16..32).contains(&o1)) || (o0 == 192 && o1 == 168) || (o0 == 100 && (64..128).contains(&o1)) {
        Some(Why::Private)
    } else if (224..240).contains(&o0) {
        Some(Why::Multicast)
    } else if o0 >= 240 || (o0 == 192 && o1 == 0 && a.octets()[2] == 0) || (o0 == 198 && (18..20).contains(&o1)) {
        Some(Why::Reserved)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address carries (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`).
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

fn classify_v6(a: Ipv6Addr) -> Option<Why> {
    if let Some(v4) = embedded_v4(a) {
        return classify_v4(v4);
    }
    let first = a.segments().first().copied().unwrap_or(0);
    if METADATA_V6.contains(&a) {
        Some(Why::Metadata)
    } else if a.is_unspecified() {
        Some(Why::Unspecified)
    } else if a.is_loopback() {
        Some(Why::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Some(Why::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Some(Why::Private)
    } else if first & 0xff00 == 0xff00 {
        Some(Why::Multicast)
    } else if first == 0 || first == 0x0100 && a.segments().get(1..4) == Some(&[0, 0, 0]) || first == 0x2001 && a.segments().get(1) == Some(&0x0db8) {
        // ::/8 other than the forms above, the discard prefix 100::/64, documentation 2001:db8::/32.
        Some(Why::Reserved)
    } else {
        None
    }
}

/// Keys under which a push config (or its container) appears, in either dialect and in
/// protobuf JSON's two spellings (the SDK's parser accepts both).
const CONTAINERS: &[&str] = &[
    "pushNotificationConfig",
    "push_notification_config",
    "taskPushNotificationConfig",
    "task_push_notification_config",
    "pushNotification",
    "push_notification",
    "config",
];

fn collect<'a>(value: &'a Value, depth: u32, out: &mut Vec<&'a Value>) {
    let Some(obj) = value.as_object() else { return };
    if let Some(url) = obj.get("url") {
        out.push(url);
    }
    if depth == 0 {
        return;
    }
    for key in CONTAINERS {
        if let Some(inner) = obj.get(*key) {
            collect(inner, depth - 1, out);
        }
    }
}

/// Whether a call of `method` may carry a webhook URL.
pub fn carries_webhook(method: Method) -> bool {
    matches!(method, Method::CreateTaskPushNotificationConfig | Method::SendMessage | Method::SendStreamingMessage)
}

/// The webhook URLs in a JSON-RPC call's `params` or an HTTP+JSON body. `Err`: a `url` that
/// is not a string, a body that is not JSON, or a create that names no URL.
pub fn urls_in_json(body: &[u8], method: Method) -> Result<Vec<String>, Why> {
    if !carries_webhook(method) {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    if method == Method::CreateTaskPushNotificationConfig {
        let value: Value = serde_json::from_slice(body).map_err(|_| Why::Unreadable)?;
        collect(&value, 3, &mut found);
        if found.is_empty() {
            return Err(Why::Unreadable);
        }
        return strings(found);
    }
    // A message's webhook can only be in `configuration`: only that member becomes a tree,
    // the message itself (parts, text, files) is skipped, not built and dropped.
    let configuration = match configuration_of(body)? {
        Some(raw) => serde_json::from_str::<Value>(raw.get()).map_err(|_| Why::Unreadable)?,
        None => return Ok(Vec::new()),
    };
    if let Some(obj) = configuration.as_object() {
        for key in CONTAINERS {
            if let Some(inner) = obj.get(*key) {
                collect(inner, 2, &mut found);
            }
        }
    }
    strings(found)
}

fn strings(found: Vec<&Value>) -> Result<Vec<String>, Why> {
    found.into_iter().map(|v| v.as_str().map(str::to_string).ok_or(Why::Unreadable)).collect()
}

/// The `configuration` member of a JSON object (the last one, as a JSON tree keeps it),
/// every other member skipped. `Ok(None)`: no such member, or the body is JSON but not an
/// object. `Err`: not JSON (not UTF-8, bad syntax, trailing bytes).
fn configuration_of(body: &[u8]) -> Result<Option<&RawValue>, Why> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == "configuration" {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
        // Any other JSON value is not an object: it names no configuration.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    let text = std::str::from_utf8(body).map_err(|_| Why::Unreadable)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let found = de.deserialize_any(Members).map_err(|_| Why::Unreadable)?;
    de.end().map_err(|_| Why::Unreadable)?;
    Ok(found)
}

/// Why the push config in a JSON call (`params`, or an HTTP+JSON body) is refused, if it is.
pub fn refusal_in_json(body: &[u8], method: Method, policy: &PushPolicy) -> Option<Why> {
    if !carries_webhook(method) {
        return None;
    }
    match urls_in_json(body, method) {
        Ok(urls) => check_all(&urls, policy).err().map(|(_, why)| why),
        Err(why) => Some(why),
    }
}

/// Checks every URL; the first refused one and why.
pub fn check_all(urls: &[String], policy: &PushPolicy) -> Result<(), (String, Why)> {
    for url in urls {
        check_url(url, policy).map_err(|why| (url.clone(), why))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "push_tests.rs"]
mod tests;
