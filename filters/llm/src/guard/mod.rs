//! Guardrails, the pure detection core: finds personal data and secrets in text and redacts
//! them. No host calls; the filter wires it in (a later step).
//!
//! A [`GuardConfig`] (strict serde, `deny_unknown_fields`) compiles once into a [`Scanner`];
//! [`Scanner::scan`] returns every [`Hit`] (byte range + [`Detector`]) of a whole text,
//! [`Scanner::redact`] replaces each match with `[REDACTED:<detector>]`, and a
//! [`StreamGuard`] does both over streamed text deltas (SSE), holding back a tail of
//! `window` bytes so that a match split across deltas is still found whole.
//!
//! ```json
//! {"detectors": {"builtin": ["email", "card", "aws_key", "jwt"],
//!                "entropy": {"min_len": 24, "max_len": 128, "threshold": 4.0},
//!                "custom": [{"name": "ticket", "pattern": "TCK-[0-9]{6}"}],
//!                "words": [{"name": "codenames", "words": ["project falcon", "bluebird"]}]},
//!  "window": 512}
//! ```
//!
//! # Detectors
//!
//! Names are stable (they appear in redactions, logs and metrics). All built-ins are on by
//! default; `detectors.builtin` lists the ones wanted. "Boundary" below means: not glued to
//! an ASCII letter, digit or `_` (non-ASCII characters count as boundaries, so `电话+1 415…`
//! is still found).
//!
//! | name | matches | deliberately does not match |
//! |---|---|---|
//! | `email` | `local@domain.tld`: local part `[A-Za-z0-9._%+-]{1,64}`, two or more DNS labels, an alphabetic TLD of 2+ letters, domain ≤ 253 | `@decorator`, `pkg@1.2.3` (numeric TLD), `user@localhost` |
//! | `phone` | `+` and 8–15 digits with optional single ` `/`-`/`.` separators and one `(area)` group (`+1 (415) 555-0100`, `+14155550100`); national forms without `+`: 9–12 digits in 2+ groups (`(415) 555-0100`, `415-555-0100`, `020 7946 0958`, `06 12 34 56 78`), dots only as `415.555.0100` | bare digit runs (ids, timestamps), `123-45-6789` (SSN shape), ISO dates (`2024-01-15 12`), thousands groups (`1 000 000 000`), dotted quads (IPs), card numbers (more than 12 digits without `+`) |
//! | `card` | 13–19 digits starting 2–6 (Visa, Mastercard, Amex, Discover, JCB, UnionPay, Diners), compact or in groups of 3–6 separated by one consistent ` ` or `-`, **Luhn-valid** | Luhn failures, numbers starting 0/1/7/8/9, digits glued to letters (UUIDs, git SHAs: `123e4567…` is not a number), runs of more than 19 digits, decimals (`4111….5`) |
//! | `iban` | country code with a registered IBAN length (87 countries) + 2 check digits + BBAN, compact or in space-separated groups of 4, **mod-97 valid**; upper case | unknown countries, wrong length for the country, checksum failures, lower case |
//! | `ssn` | US SSN `AAA-GG-SSSS` with dashes | area 000, 666 or 900–999, group 00, serial 0000; undashed nine digits |
//! | `ip` | IPv4 dotted quads (octets 0–255, no leading zeros; `1.2.3.4:8080` finds the address); IPv6 (RFC 4291 text, `::` compression, dotted IPv4 tail) | version strings glued to text (`v1.2.3.4`), five-part dotted numbers, times `12:30:45`, MAC addresses, `a::b` (a compressed IPv6 needs a digit), zone ids (`%eth0` is left out of the match) |
//! | `aws_key` | `AKIA`/`ASIA` + 16 `[A-Z0-9]` | longer or lower-case runs |
//! | `private_key` | a PEM block from its `-----BEGIN <label>PRIVATE KEY-----` line (label `[A-Z0-9 ]`, ≤ 40 bytes: RSA, EC, DSA, OPENSSH, ENCRYPTED, none) through the first `-----END <label>PRIVATE KEY-----` line, or to the end of the text when there is none | public keys, certificates |
//! | `jwt` | `eyJ…` three base64url parts (payload non-empty, signature may be empty), header decoding to a JSON object with a string `alg`, ≤ 1024 bytes; a sentence's final `.` is not part of it | tokens longer than 1024 bytes (bounding the stream window), headers that are not JSON or lack `alg` |
//! | `api_key` | `sk-` (OpenAI `sk-proj-`/`sk-svcacct-`/legacy, Anthropic `sk-ant-`, others) + 20 or more, and `ghp_`/`gho_`/`ghs_`/`ghu_`/`github_pat_`, `glpat-`, `xoxb-`/`xoxp-`, `AIza` keys: the whole `[A-Za-z0-9_-]` token (≤ 256 bytes) | tails without both a letter and a digit (`sk-xxxxxxxx…` placeholders), `task-…` (the token must start with the prefix) |
//! | `entropy` | tokens of `[A-Za-z0-9+/=_-]` with `min_len..=max_len` bytes (default 24..=128) containing a letter and a digit, Shannon entropy ≥ `threshold` bits per byte (default 4.0) | hex digests and UUIDs (≤ 4 bits per byte; git SHAs score ~3.7), words, tokens starting with `/` (paths), tokens longer than `max_len` (base64 images and other blobs) |
//! | `regex:<name>` | a user regex (`regex-lite` syntax: linear time, ASCII-only case folding and classes), leftmost-first, non-overlapping, empty matches ignored | — |
//! | `words:<name>` | any listed word or phrase, case-insensitive (ASCII), whole-word (no letter, digit or `_`, Unicode-aware, on either side of a word-character end); overlapping matches are all reported | substrings of longer words (`classified` does not match inside `declassified`) |
//!
//! # Redaction
//!
//! [`Scanner::redact`] sorts hits by start (then longest first, then detector), merges
//! overlapping ones and writes `[REDACTED:<detector>]` once per merged group, naming the
//! group's first hit. Adjacent (touching) hits are two groups.
//!
//! # Streaming
//!
//! [`StreamGuard::push`] releases all but the last `window` bytes (cut on a character
//! boundary, redacted in redact mode) and reports the hits decided so far (absolute byte
//! ranges in the concatenated input); [`StreamGuard::finish`] releases the rest. For any
//! split of a text into deltas, the concatenated released text equals `redact(text,
//! scan(text))` (or the text itself in detect mode) and the hits equal `scan(text)`, as long
//! as no match (nor any candidate a detector has to read to reject) is longer than the window
//! — private key blocks excepted: a block is decided by its bounded BEGIN line, then
//! everything up to its END line is withheld however long it is. The default window is the
//! longest bounded reach among the enabled detectors: 1026 bytes with `jwt` on (the longest
//! JWT matched), otherwise 322 with `email` on, `entropy.max_len + 1`, or the longest listed
//! word + 4. User regexes are not bounded: set `window` to at least their longest match.
//! With a smaller window a match split further than it can be missed (detection then
//! degrades, it never fails).
//!
//! # Performance
//!
//! Built-ins are hand-written byte scanners run in one combined pass: each position is
//! tested against the detectors whose first byte it can be; a candidate is only a position
//! where a token starts (previous byte outside the token's class), so a token is read once
//! per detector and every read is bounded by the detector's reach: linear in the text. Word
//! lists are a binary search by first byte per position. Each user regex is one `regex-lite`
//! pass (PikeVM, linear). The stream scans only candidates that start in the newly released
//! part (a position is decided once), keeps the window plus a few bytes of look-behind, and
//! re-runs user regexes over the held window on each push.

pub mod action;
mod builtin;
mod json;
pub mod request;
pub mod response;
mod sse;
mod stream;
#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod tests;

pub use stream::{Released, StreamGuard};

use builtin::{Cur, More};
use regex_lite::Regex;
use serde::Deserialize;
use tollgate_core::config::ConfigError;

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    AwsKey,
    PrivateKey,
    Jwt,
    ApiKey,
    Entropy,
}

impl Builtin {
    pub const ALL: [Builtin; 11] = [
        Builtin::Email,
        Builtin::Phone,
        Builtin::Card,
        Builtin::Iban,
        Builtin::Ssn,
        Builtin::Ip,
        Builtin::AwsKey,
        Builtin::PrivateKey,
        Builtin::Jwt,
        Builtin::ApiKey,
        Builtin::Entropy,
    ];

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::Card => "card",
            Builtin::Iban => "iban",
            Builtin::Ssn => "ssn",
            Builtin::Ip => "ip",
            Builtin::AwsKey => "aws_key",
            Builtin::PrivateKey => "private_key",
            Builtin::Jwt => "jwt",
            Builtin::ApiKey => "api_key",
            Builtin::Entropy => "entropy",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// What found a hit: a built-in, or the n-th user regex / word list of the configuration.
/// [`Scanner::name`] gives the stable name (`card`, `regex:<name>`, `words:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Detector {
    Builtin(Builtin),
    Regex(u16),
    Words(u16),
}

/// One match: the byte range `start..end` of the scanned text (of the whole stream for a
/// [`StreamGuard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub detector: Detector,
}

impl Hit {
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// Redaction order: by start, longest first, then detector.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)).then(a.detector.cmp(&b.detector)));
}

// ---- configuration ---------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    #[serde(default)]
    pub detectors: DetectorsConfig,
    /// Bytes a [`StreamGuard`] holds back; default: the longest bounded pattern enabled.
    #[serde(default)]
    pub window: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorsConfig {
    /// The built-ins wanted (default: all).
    #[serde(default = "all_builtins")]
    pub builtin: Vec<Builtin>,
    #[serde(default)]
    pub entropy: EntropyConfig,
    #[serde(default)]
    pub custom: Vec<CustomPattern>,
    #[serde(default)]
    pub words: Vec<WordListConfig>,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig { builtin: all_builtins(), entropy: EntropyConfig::default(), custom: Vec::new(), words: Vec::new() }
    }
}

fn all_builtins() -> Vec<Builtin> {
    Builtin::ALL.to_vec()
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyConfig {
    #[serde(default = "default_min_len")]
    pub min_len: usize,
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Bits per byte (at most 6 for base64 text).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

impl Default for EntropyConfig {
    fn default() -> Self {
        EntropyConfig { min_len: default_min_len(), max_len: default_max_len(), threshold: default_threshold() }
    }
}

fn default_min_len() -> usize {
    24
}
fn default_max_len() -> usize {
    128
}
fn default_threshold() -> f64 {
    4.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    pub name: String,
    pub pattern: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordListConfig {
    pub name: String,
    pub words: Vec<String>,
}

const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_WINDOW: usize = 1 << 20;

fn check_name(path: &str, name: &str, seen: &mut Vec<String>) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(ConfigError::field(path, format!("`{name}` must be 1-64 characters of [A-Za-z0-9_.-]")));
    }
    if seen.iter().any(|s| s == name) {
        return Err(ConfigError::field(path, format!("duplicate name `{name}`")));
    }
    seen.push(name.to_string());
    Ok(())
}

impl GuardConfig {
    /// Compiles the configuration, naming refused fields under `guardrails`.
    pub fn compile(&self) -> Result<Scanner, ConfigError> {
        self.compile_at("guardrails")
    }

    /// Compiles the configuration, naming refused fields under `at`
    /// (`<at>.detectors.custom[2].pattern: invalid regex: ...`).
    pub fn compile_at(&self, at: &str) -> Result<Scanner, ConfigError> {
        let d = &self.detectors;
        let mut on = 0u16;
        for b in &d.builtin {
            on |= b.bit();
        }
        let e = d.entropy;
        let ep = format!("{at}.detectors.entropy");
        if e.min_len < 8 {
            return Err(ConfigError::field(&format!("{ep}.min_len"), "must be at least 8"));
        }
        if e.max_len < e.min_len || e.max_len > 4096 {
            return Err(ConfigError::field(&format!("{ep}.max_len"), "must be between min_len and 4096"));
        }
        if !(e.threshold.is_finite() && e.threshold > 0.0 && e.threshold <= 8.0) {
            return Err(ConfigError::field(&format!("{ep}.threshold"), "must be a number of bits per byte in (0, 8]"));
        }
        let mut regexes = Vec::with_capacity(d.custom.len());
        let mut seen = Vec::new();
        for (k, c) in d.custom.iter().enumerate() {
            let p = format!("{at}.detectors.custom[{k}]");
            check_name(&format!("{p}.name"), &c.name, &mut seen)?;
            let re = regex_lite::RegexBuilder::new(&c.pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|err| ConfigError::field(&format!("{p}.pattern"), format!("invalid regex: {err}")))?;
            regexes.push((format!("regex:{}", c.name), re));
        }
        let mut words = Vec::with_capacity(d.words.len());
        let mut seen = Vec::new();
        for (k, w) in d.words.iter().enumerate() {
            let p = format!("{at}.detectors.words[{k}]");
            check_name(&format!("{p}.name"), &w.name, &mut seen)?;
            if w.words.is_empty() {
                return Err(ConfigError::field(&format!("{p}.words"), "must not be empty"));
            }
            let mut list: Vec<Vec<u8>> = Vec::with_capacity(w.words.len());
            for (j, word) in w.words.iter().enumerate() {
                if word.trim().is_empty() || word.trim() != word || word.len() > 256 {
                    return Err(ConfigError::field(
                        &format!("{p}.words[{j}]"),
                        "must be 1-256 bytes without leading or trailing whitespace",
                    ));
                }
                list.push(word.to_ascii_lowercase().into_bytes());
            }
            list.sort();
            list.dedup();
            words.push(WordList { label: format!("words:{}", w.name), words: list });
        }
        if regexes.len() > usize::from(u16::MAX) || words.len() > usize::from(u16::MAX) {
            return Err(ConfigError::field(&format!("{at}.detectors"), "too many detectors"));
        }
        let mut scanner = Scanner { on, entropy: e, regexes, words, window: 0 };
        scanner.window = match self.window {
            Some(w) if w > MAX_WINDOW => {
                return Err(ConfigError::field(&format!("{at}.window"), format!("must be at most {MAX_WINDOW}")))
            }
            Some(w) => w,
            None => scanner.default_window(),
        };
        Ok(scanner)
    }
}

// ---- the compiled scanner --------------------------------------------------------------

struct WordList {
    label: String,
    /// Lower-cased (ASCII), sorted, deduplicated.
    words: Vec<Vec<u8>>,
}

/// A compiled configuration: immutable, shared by every request.
#[derive(Debug)]
pub struct Scanner {
    on: u16,
    entropy: EntropyConfig,
    regexes: Vec<(String, Regex)>,
    words: Vec<WordList>,
    window: usize,
}

impl std::fmt::Debug for WordList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} words)", self.label, self.words.len())
    }
}

/// Whether a character is part of a word (for word-list boundaries).
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Scanner {
    pub fn is_on(&self, b: Builtin) -> bool {
        self.on & b.bit() != 0
    }

    /// The stable name of a detector.
    pub fn name(&self, d: Detector) -> &str {
        match d {
            Detector::Builtin(b) => b.name(),
            Detector::Regex(i) => self.regexes.get(usize::from(i)).map_or("regex", |(l, _)| l.as_str()),
            Detector::Words(i) => self.words.get(usize::from(i)).map_or("words", |w| w.label.as_str()),
        }
    }

    /// The hold-back window of a [`StreamGuard`] (bytes).
    pub fn window(&self) -> usize {
        self.window
    }

    /// The longest bounded reach among the enabled detectors.
    fn default_window(&self) -> usize {
        use builtin::*;
        let reaches = [
            (Builtin::Email, REACH_EMAIL),
            (Builtin::Phone, REACH_PHONE),
            (Builtin::Card, REACH_CARD),
            (Builtin::Iban, REACH_IBAN),
            (Builtin::Ssn, REACH_SSN),
            (Builtin::Ip, REACH_IP),
            (Builtin::AwsKey, REACH_AWS),
            (Builtin::PrivateKey, REACH_PEM),
            (Builtin::Jwt, REACH_JWT),
            (Builtin::ApiKey, REACH_API_KEY),
            (Builtin::Entropy, self.entropy.max_len + 1),
        ];
        let builtin = reaches.iter().filter(|(b, _)| self.is_on(*b)).map(|(_, r)| *r).max().unwrap_or(0);
        let words = self.words.iter().flat_map(|w| w.words.iter().map(|x| x.len() + 4)).max().unwrap_or(0);
        builtin.max(words)
    }

    /// Every hit in `text`, in redaction order ([`sort_hits`]).
    pub fn scan(&self, text: &str) -> Vec<Hit> {
        let mut out = Vec::new();
        let len = text.len();
        self.find_local(text, 0, len, true, &mut out);
        for k in 0..self.regexes.len() {
            self.find_regex(k, text, 0, len, true, &mut out);
        }
        if self.is_on(Builtin::PrivateKey) {
            let c = Cur { t: text.as_bytes(), eof: true };
            let mut pos = 0;
            while let Some((start, begin_end)) = next_pem_begin(&c, pos, len) {
                let end = match builtin::pem_end(&c, begin_end) {
                    Ok(Some(e)) => e,
                    _ => len,
                };
                out.push(Hit { start, end, detector: Detector::Builtin(Builtin::PrivateKey) });
                pos = end;
            }
        }
        sort_hits(&mut out);
        out
    }

    /// `text` with every hit replaced by `[REDACTED:<detector>]`, overlapping hits merged.
    pub fn redact(&self, text: &str, hits: &[Hit]) -> String {
        let mut hits = hits.to_vec();
        sort_hits(&mut hits);
        let mut out = String::with_capacity(text.len());
        let mut r = Redactor::new(true);
        for h in &hits {
            r.hit(h, self.name(h.detector), text, 0, &mut out);
        }
        r.advance(text.len(), text, 0, &mut out);
        out
    }

    /// The built-ins (except private keys) and word lists: matches starting in `from..to`.
    /// Undecidable candidates (pending more text) are skipped.
    fn find_local(&self, text: &str, from: usize, to: usize, eof: bool, out: &mut Vec<Hit>) {
        use builtin::*;
        let c = Cur { t: text.as_bytes(), eof };
        let on = |b: Builtin| self.on & b.bit() != 0;
        let mut push = |r: Found, p: usize, b: Builtin| {
            if let Ok(Some(end)) = r {
                out.push(Hit { start: p, end, detector: Detector::Builtin(b) });
            }
        };
        let e = self.entropy;
        for (p, &b) in text.as_bytes().iter().enumerate().take(to).skip(from) {
            if b >= 0x80 {
                continue;
            }
            let digit = b.is_ascii_digit();
            if on(Builtin::Card) && (b'2'..=b'6').contains(&b) {
                push(card(&c, p), p, Builtin::Card);
            }
            if on(Builtin::Ssn) && digit {
                push(ssn(&c, p), p, Builtin::Ssn);
            }
            if on(Builtin::Phone) && (digit || b == b'+' || b == b'(') {
                push(phone(&c, p), p, Builtin::Phone);
            }
            if on(Builtin::Ip) {
                if digit {
                    push(ipv4(&c, p), p, Builtin::Ip);
                }
                if b.is_ascii_hexdigit() || b == b':' {
                    push(ipv6(&c, p), p, Builtin::Ip);
                }
            }
            if on(Builtin::Email) && b != b'.' {
                push(email(&c, p), p, Builtin::Email);
            }
            if on(Builtin::Iban) && b.is_ascii_uppercase() {
                push(iban(&c, p), p, Builtin::Iban);
            }
            if on(Builtin::AwsKey) && b == b'A' {
                push(aws_key(&c, p), p, Builtin::AwsKey);
            }
            if on(Builtin::Jwt) && b == b'e' {
                push(jwt(&c, p), p, Builtin::Jwt);
            }
            if on(Builtin::ApiKey) && matches!(b, b's' | b'g' | b'x' | b'A') {
                push(api_key(&c, p), p, Builtin::ApiKey);
            }
            if on(Builtin::Entropy) && entropy_class(b) {
                push(entropy(&c, p, e.min_len, e.max_len, e.threshold), p, Builtin::Entropy);
            }
        }
        for (k, list) in self.words.iter().enumerate() {
            let d = Detector::Words(u16::try_from(k).unwrap_or(u16::MAX));
            find_words(list, text, from, to, eof, d, out);
        }
    }

    /// User regex `k`: leftmost-first non-overlapping matches from `pos` that start before
    /// `cut`; returns where the next search starts. A match reaching the end of an
    /// unfinished text is not decided (it may grow).
    fn find_regex(&self, k: usize, text: &str, mut pos: usize, cut: usize, eof: bool, out: &mut Vec<Hit>) -> usize {
        let Some((_, re)) = self.regexes.get(k) else { return cut };
        let d = Detector::Regex(u16::try_from(k).unwrap_or(u16::MAX));
        while pos < cut {
            let Some(m) = re.find_at(text, pos) else { break };
            if m.start() >= cut {
                break;
            }
            if m.start() == m.end() {
                pos = m.start() + text.get(m.start()..).and_then(|s| s.chars().next()).map_or(1, char::len_utf8);
                continue;
            }
            if m.end() == text.len() && !eof {
                break;
            }
            out.push(Hit { start: m.start(), end: m.end(), detector: d });
            pos = m.end();
        }
        pos.max(cut)
    }
}

/// The next PEM BEGIN line starting in `pos..to`: `(start, end of the line)`.
fn next_pem_begin(c: &Cur, mut pos: usize, to: usize) -> Option<(usize, usize)> {
    while pos < to {
        let off = c.t.get(pos..to)?.iter().position(|b| *b == b'-')?;
        pos += off;
        match builtin::pem_begin(c, pos) {
            Ok(Some(end)) => return Some((pos, end)),
            Ok(None) | Err(More) => pos += 1,
        }
    }
    None
}

/// Word-list matches starting in `from..to`.
fn find_words(list: &WordList, text: &str, from: usize, to: usize, eof: bool, d: Detector, out: &mut Vec<Hit>) {
    let t = text.as_bytes();
    for p in from..to.min(t.len()) {
        let Some(first) = t.get(p).map(u8::to_ascii_lowercase) else { break };
        let lo = list.words.partition_point(|w| w.first().is_some_and(|b| *b < first));
        let hi = list.words.partition_point(|w| w.first().is_some_and(|b| *b <= first));
        if lo >= hi {
            continue;
        }
        let before = text.get(..p).and_then(|s| s.chars().next_back()).is_some_and(word_char);
        for w in list.words.get(lo..hi).unwrap_or(&[]) {
            let end = p + w.len();
            let Some(seen) = t.get(p..end.min(t.len())) else { continue };
            if !seen.eq_ignore_ascii_case(w.get(..seen.len()).unwrap_or(&[])) || (seen.len() < w.len() && eof) {
                continue;
            }
            if seen.len() < w.len() {
                continue; // pending: the rest has not arrived
            }
            let starts_word = std::str::from_utf8(w).ok().and_then(|s| s.chars().next()).is_some_and(word_char);
            let ends_word = std::str::from_utf8(w).ok().and_then(|s| s.chars().next_back()).is_some_and(word_char);
            if starts_word && before {
                continue;
            }
            if ends_word {
                match text.get(end..).and_then(|s| s.chars().next()) {
                    Some(ch) if word_char(ch) => continue,
                    None if !eof => continue, // pending
                    _ => {}
                }
            }
            out.push(Hit { start: p, end, detector: d });
        }
    }
}

/// Writes redacted text: keeps the end of the current merged group and skips text inside it.
#[derive(Debug)]
pub(crate) struct Redactor {
    enabled: bool,
    /// Next byte (absolute) not yet written or skipped.
    out_pos: usize,
    /// End of the current group.
    red_end: usize,
    /// A private key block without its END line yet: everything is skipped.
    open: bool,
}

impl Redactor {
    pub(crate) fn new(enabled: bool) -> Self {
        Redactor { enabled, out_pos: 0, red_end: 0, open: false }
    }

    /// Applies a hit (hits come in [`sort_hits`] order); `text` starts at absolute `base`.
    pub(crate) fn hit(&mut self, h: &Hit, label: &str, text: &str, base: usize, out: &mut String) {
        if !self.enabled {
            return;
        }
        if self.open || h.start < self.red_end {
            self.red_end = self.red_end.max(h.end);
            return;
        }
        self.advance(h.start, text, base, out);
        out.push_str("[REDACTED:");
        out.push_str(label);
        out.push(']');
        self.red_end = h.end;
    }

    /// Everything from here on is inside a block whose end is not known yet.
    pub(crate) fn open(&mut self) {
        self.open = self.enabled;
    }

    /// The open block ends at `end`.
    pub(crate) fn close(&mut self, end: usize) {
        if self.open {
            self.open = false;
            self.red_end = self.red_end.max(end);
        }
    }

    /// Writes (or skips, inside a group) the text up to absolute `x`.
    pub(crate) fn advance(&mut self, x: usize, text: &str, base: usize, out: &mut String) {
        if self.open {
            self.out_pos = self.out_pos.max(x);
            return;
        }
        if self.red_end > self.out_pos {
            self.out_pos = self.red_end.min(x).max(self.out_pos);
        }
        if x > self.out_pos {
            if let Some(s) = text.get(self.out_pos - base..x - base) {
                out.push_str(s);
            }
            self.out_pos = x;
        }
    }

    pub(crate) fn out_pos(&self) -> usize {
        self.out_pos
    }
}
