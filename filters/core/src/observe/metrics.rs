//! Metrics with labels. Envoy stats have no labels, so label values are encoded in the stat
//! name as `<base>.<label>.<value>...`, and the shipped `stats_tags` regexes turn them back
//! into Prometheus labels. Metric ids are defined once per name and cached per VM.

use crate::host::{Host, LogLevel, MetricKind};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Metric ids per VM. A request's metrics are found by a hash of their stat name computed
/// from the pieces (no name is built or allocated once a metric exists); the name itself is
/// kept to rule out hash collisions.
#[derive(Default)]
pub struct Metrics {
    ids: RefCell<IdsByHash>,
}

/// Stat-name hash → (stat name, metric id) of every metric with that hash.
type IdsByHash = HashMap<u64, Vec<(String, u32)>, BuildHasherDefault<PrehashedKey>>;

/// The map key is already a hash: use it as is.
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Feeds the bytes of `stat_name(base, labels)` to `sink`, without building it.
fn for_each_name_piece(base: &str, labels: &[(&str, &str)], mut sink: impl FnMut(&[u8])) {
    sink(base.as_bytes());
    for (label, value) in labels {
        sink(b".");
        sink(label.as_bytes());
        sink(b".");
        for_each_value_piece(value, &mut sink);
    }
}

/// Feeds `value` made safe for a dotted stat name to `sink` (the one place the rule lives):
/// at most 64 characters, anything but ASCII letters, digits, `-`, `_` and readable dots
/// replaced by `_`, `none` for an empty value. Every piece is ASCII.
///
/// A dot is kept (so `claude-3.5-sonnet` reaches Prometheus as it is) when it is not the
/// first character and the segment after it (up to the next dot) is non-empty and holds a
/// digit, an upper-case letter or `-`. Label names are `[a-z_]+`, so a kept dot can never be
/// read as the start of the next `.label.value` pair: the shipped `stats_tags` regexes match
/// a value as `[^.]+(?:\.[^.]*[^a-z_.][^.]*)*`. Any other dot (`gpt-4o.mini`, `pay.ments`)
/// becomes `_` as before.
fn for_each_value_piece(value: &str, mut sink: impl FnMut(&[u8])) {
    if value.is_empty() {
        sink(b"none");
        return;
    }
    // Most values are already safe: hand them over in one piece.
    let bytes = value.as_bytes();
    let head = bytes.get(..64).unwrap_or(bytes);
    if head.iter().all(|b| is_safe(*b)) {
        sink(head);
        return;
    }
    let end = value.char_indices().nth(64).map_or(value.len(), |(at, _)| at);
    let text = value.get(..end).unwrap_or(value);
    let text_bytes = text.as_bytes();
    // Runs of kept characters go as they are, every other character becomes one `_`.
    let mut run_start = 0;
    for (at, c) in text.char_indices() {
        if c.is_ascii() && is_safe(c as u8) {
            continue;
        }
        if c == '.' && at > 0 && dot_is_kept(text_bytes.get(at + 1..).unwrap_or_default()) {
            continue;
        }
        if let Some(run) = text_bytes.get(run_start..at).filter(|run| !run.is_empty()) {
            sink(run);
        }
        sink(b"_");
        run_start = at + c.len_utf8();
    }
    if let Some(run) = text_bytes.get(run_start..).filter(|run| !run.is_empty()) {
        sink(run);
    }
}

/// Whether a dot followed by `after` (the rest of the value) stays a dot: the segment up to
/// the next dot is non-empty and cannot be a label name (it has a digit, `A-Z` or `-`).
fn dot_is_kept(after: &[u8]) -> bool {
    let segment = after.split(|b| *b == b'.').next().unwrap_or_default();
    !segment.is_empty() && segment.iter().any(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || *b == b'-')
}

/// Appends a piece of a stat name: whole `&str`s or ASCII bytes, so always UTF-8.
fn push_piece(out: &mut String, piece: &[u8]) {
    out.push_str(&String::from_utf8_lossy(piece));
}

fn is_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Hashes a stat name fed in pieces, word at a time (FxHash's mix): names are ~100 bytes
/// and hashed for every metric of every request. Equal names from equal pieces hash equal
/// (a name from other pieces may hash otherwise and is then kept twice, with the id Envoy
/// gives its name); callers compare the name itself ([`PieceMatcher`]) to rule out collisions.
struct PieceHasher(u64);

impl PieceHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn feed(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(Self::K);
        }
        let mut tail = [0u8; 8];
        for (slot, byte) in tail.iter_mut().zip(words.remainder()) {
            *slot = *byte;
        }
        self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(tail) ^ ((bytes.len() as u64) << 56)).wrapping_mul(Self::K);
    }
}

/// FNV-1a over bytes fed in pieces: the same hash however the bytes were cut, so a label
/// value's stat-name form hashes the same from any value that makes it.
struct ByteHasher(u64);

impl ByteHasher {
    fn new() -> Self {
        ByteHasher(0xcbf2_9ce4_8422_2325)
    }

    fn feed(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Whether pieces fed one by one spell exactly `expected`.
struct PieceMatcher<'a> {
    rest: &'a [u8],
    equal: bool,
}

impl<'a> PieceMatcher<'a> {
    fn new(expected: &'a str) -> Self {
        PieceMatcher { rest: expected.as_bytes(), equal: true }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.equal {
            match self.rest.strip_prefix(bytes) {
                Some(tail) => self.rest = tail,
                None => self.equal = false,
            }
        }
    }

    fn matched(&self) -> bool {
        self.equal && self.rest.is_empty()
    }
}

fn name_hash(base: &str, labels: &[(&str, &str)]) -> u64 {
    let mut hasher = PieceHasher(0);
    for_each_name_piece(base, labels, |bytes| hasher.feed(bytes));
    hasher.0
}

fn name_equals(name: &str, base: &str, labels: &[(&str, &str)]) -> bool {
    let mut matcher = PieceMatcher::new(name);
    for_each_name_piece(base, labels, |bytes| matcher.feed(bytes));
    matcher.matched()
}

/// Makes a label value safe inside a dotted stat name.
pub fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(64));
    for_each_value_piece(value, |piece| push_piece(&mut out, piece));
    out
}

pub fn stat_name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(base.len() + labels.iter().map(|(l, v)| l.len() + v.len().min(64) + 2).sum::<usize>());
    for_each_name_piece(base, labels, |piece| push_piece(&mut name, piece));
    name
}

/// The label value that stands for every value past a [`LabelCap`]'s limit.
pub const OTHER: &str = "other";

/// Bounds the distinct values of one label (per VM): values often come from clients (tool
/// names, models), and every distinct stat name costs Envoy memory for the life of the
/// process. The first `max` distinct values are kept; any further one is labelled
/// [`OTHER`]. Values are counted as their stat-name form ([`sanitize`]: at most 64
/// characters), so two values that make the same stat name take one place and the set
/// stays small. A real value `other` shares its stat with the overflow. One cap per label:
///
/// ```
/// # use tollgate_core::observe::metrics::LabelCap;
/// let tools = LabelCap::new(2);
/// assert_eq!(tools.label("add"), "add");
/// assert_eq!(tools.label("echo"), "echo");
/// assert_eq!(tools.label("admin_reset"), "other");
/// assert_eq!(tools.label("add"), "add");
/// ```
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    /// Hash of a stat-name form → the admitted forms with that hash (see [`ByteHasher`]).
    forms: RefCell<StringsByHash>,
    admitted: Cell<usize>,
    /// Hash of a value as sent → admitted values as sent (short ones; at most
    /// [`Self::REMEMBERED_PER_FORM`] times as many as admitted forms): requests mostly
    /// repeat a value exactly, and one hash of its bytes answers them without its form.
    values: RefCell<StringsByHash>,
    remembered: Cell<usize>,
}

type StringsByHash = HashMap<u64, Vec<Box<str>>, BuildHasherDefault<PrehashedKey>>;

fn find(map: &StringsByHash, hash: u64, matches: impl Fn(&str) -> bool) -> bool {
    map.get(&hash).is_some_and(|strings| strings.iter().any(|s| matches(s)))
}

impl LabelCap {
    const REMEMBERED_PER_FORM: usize = 2;

    pub fn new(max: usize) -> Self {
        LabelCap {
            max,
            forms: RefCell::new(HashMap::default()),
            admitted: Cell::new(0),
            values: RefCell::new(HashMap::default()),
            remembered: Cell::new(0),
        }
    }

    /// `value` while it is one of the first `max` distinct values (by stat-name form), else
    /// [`OTHER`]. Pass the result to [`Metrics`] as the label value. Looked up on every
    /// request, so nothing is allocated for a value seen before.
    pub fn label<'a>(&self, value: &'a str) -> &'a str {
        let mut hasher = ByteHasher::new();
        hasher.feed(value.as_bytes());
        let value_hash = hasher.0;
        if find(&self.values.borrow(), value_hash, |known| known == value) {
            return value;
        }
        let mut hasher = ByteHasher::new();
        for_each_value_piece(value, |bytes| hasher.feed(bytes));
        let form_hash = hasher.0;
        let mut forms = self.forms.borrow_mut();
        let known = find(&forms, form_hash, |form| {
            let mut matcher = PieceMatcher::new(form);
            for_each_value_piece(value, |bytes| matcher.feed(bytes));
            matcher.matched()
        });
        if !known {
            // Past the cap nothing is stored, so values nobody bounds cannot grow the maps.
            if self.admitted.get() >= self.max {
                return OTHER;
            }
            forms.entry(form_hash).or_default().push(sanitize(value).into_boxed_str());
            self.admitted.set(self.admitted.get() + 1);
        }
        if value.len() <= 64 && self.remembered.get() < self.admitted.get() * Self::REMEMBERED_PER_FORM {
            self.values.borrow_mut().entry(value_hash).or_default().push(value.into());
            self.remembered.set(self.remembered.get() + 1);
        }
        value
    }

    /// Distinct values admitted so far.
    pub fn len(&self) -> usize {
        self.admitted.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn id(&self, host: &dyn Host, kind: MetricKind, base: &str, labels: &[(&str, &str)]) -> Option<u32> {
        let hash = name_hash(base, labels);
        if let Some(entries) = self.ids.borrow().get(&hash) {
            if let Some((_, id)) = entries.iter().find(|(name, _)| name_equals(name, base, labels)) {
                return Some(*id);
            }
        }
        let name = stat_name(base, labels);
        match host.define_metric(kind, &name) {
            Ok(id) => {
                self.ids.borrow_mut().entry(hash).or_default().push((name, id));
                Some(id)
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("tollgate: cannot define metric {name}: {e}"));
                None
            }
        }
    }

    pub fn add(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(host, MetricKind::Counter, base, labels) {
            let _ = host.increment_metric(id, value.min(i64::MAX as u64) as i64);
        }
    }

    pub fn inc(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)]) {
        self.add(host, base, labels, 1);
    }

    pub fn record(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(host, MetricKind::Histogram, base, labels) {
            let _ = host.record_metric(id, value);
        }
    }

    pub fn gauge_add(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)], delta: i64) {
        if let Some(id) = self.id(host, MetricKind::Gauge, base, labels) {
            let _ = host.increment_metric(id, delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    #[test]
    fn labels_are_encoded_and_sanitized() {
        assert_eq!(
            stat_name("tollgate.llm.requests", &[("team", "pay.ments"), ("model", "gpt-4o")]),
            "tollgate.llm.requests.team.pay_ments.model.gpt-4o"
        );
        assert_eq!(sanitize(""), "none");
    }

    #[test]
    fn dots_stay_readable_where_they_cannot_be_mistaken_for_a_label() {
        for (value, form) in [
            ("claude-3.5-sonnet", "claude-3.5-sonnet"),
            ("gpt-4.1", "gpt-4.1"),
            ("anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1_0"),
            ("gpt-4o.mini", "gpt-4o_mini"),
            (".5", "_5"),
            ("a.", "a_"),
            ("a..5", "a_.5"),
            ("a.team.b", "a_team_b"),
            ("a.Team", "a.Team"),
        ] {
            assert_eq!(sanitize(value), form, "{value}");
        }
        assert_eq!(
            stat_name("tollgate.llm.cost", &[("model", "claude-3.5-sonnet"), ("provider", "anthropic")]),
            "tollgate.llm.cost.model.claude-3.5-sonnet.provider.anthropic"
        );
    }

    #[test]
    fn name_pieces_hash_and_compare_as_the_built_name() {
        let cases: [(&str, &[(&str, &str)]); 4] = [
            ("a", &[]),
            ("tollgate.llm.requests", &[("team", "pay.ments"), ("model", "")]),
            ("t", &[("tool", "ünïcode/x")]),
            ("t", &[("tool", &"x".repeat(100))]),
        ];
        for (base, labels) in cases {
            let built = stat_name(base, labels);
            assert!(name_equals(&built, base, labels), "{built}");
            assert!(!name_equals(&format!("{built}x"), base, labels));
            assert!(!name_equals(&built[..built.len() - 1], base, labels));
        }
        assert_ne!(name_hash("a", &[("b", "c")]), name_hash("a", &[("b", "d")]));
        let text = b"tollgate.llm.tokens.team.payments.model.gpt-4o-mini.kind.input";
        let mut whole = ByteHasher::new();
        whole.feed(text);
        for step in 1..text.len() {
            let mut cut = ByteHasher::new();
            text.chunks(step).for_each(|piece| cut.feed(piece));
            assert_eq!(cut.0, whole.0, "cut every {step}");
        }
    }

    #[test]
    fn sanitize_follows_the_rule() {
        let rule = |v: &str| -> String {
            if v.is_empty() {
                return "none".into();
            }
            let head: Vec<char> = v.chars().take(64).collect();
            let kept_dot = |i: usize| {
                let segment: Vec<char> = head.iter().skip(i + 1).take_while(|c| **c != '.').copied().collect();
                i > 0 && !segment.is_empty() && segment.iter().any(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || *c == '-')
            };
            head.iter()
                .enumerate()
                .map(|(i, c)| if (c.is_ascii() && is_safe(*c as u8)) || (*c == '.' && kept_dot(i)) { *c } else { '_' })
                .collect()
        };
        let alphabet = ['a', 'Z', '0', '-', '_', '.', '.', '/', ' ', 'é', '€', '😀', ':'];
        let mut seed: u32 = 11;
        for len in (0..80).chain([127, 128, 129]) {
            for _ in 0..20 {
                let value: String = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        alphabet[(seed >> 16) as usize % alphabet.len()]
                    })
                    .collect();
                assert_eq!(sanitize(&value), rule(&value), "{value:?}");
            }
        }
    }

    #[test]
    fn counters_are_defined_once() {
        let host = MemoryHost::new();
        let m = Metrics::new();
        m.inc(&host, "a", &[("x", "1")]);
        m.add(&host, "a", &[("x", "1")], 4);
        assert_eq!(host.metric("a.x.1"), Some(5));
        assert_eq!(host.metrics.borrow().len(), 1);
    }

    #[test]
    fn label_cap_keeps_the_first_values_then_other() {
        let cap = LabelCap::new(3);
        assert!(cap.is_empty());
        assert_eq!(cap.label("tools/call"), "tools/call");
        assert_eq!(cap.label("ping"), "ping");
        // Same stat-name form as `tools/call`: no new place taken.
        assert_eq!(cap.label("tools.call"), "tools.call");
        assert_eq!(cap.len(), 2);
        assert_eq!(cap.label("initialize"), "initialize");
        assert_eq!(cap.label("x"), OTHER);
        assert_eq!(cap.label(""), OTHER);
        // Values seen before the cap was reached keep their own label.
        assert_eq!(cap.label("ping"), "ping");
        assert_eq!(cap.len(), 3);
        assert_eq!(LabelCap::new(0).label("a"), OTHER);
        // Refused values leave nothing behind.
        for i in 0..1000 {
            assert_eq!(cap.label(&format!("v{i}")), OTHER);
        }
        assert_eq!(cap.forms.borrow().len(), 3);
        assert!(cap.values.borrow().values().flatten().count() <= 3 * LabelCap::REMEMBERED_PER_FORM);
    }

    #[test]
    fn label_cap_answers_as_a_set_of_stat_name_forms() {
        // Reference: the plain rule (a set of sanitized forms, first `max` admitted).
        let pool = ["a", "b", "a.b", "a_b", "a/b", "", "none", "ü", "_", "other", "x-y", "x_y"];
        let long = "z".repeat(70);
        let longer = format!("{long}q");
        let mut seed: u32 = 7;
        for max in [0, 1, 3, 6, 20] {
            let cap = LabelCap::new(max);
            let mut reference: Vec<String> = Vec::new();
            for _ in 0..400 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let pick = (seed >> 16) as usize % (pool.len() + 2);
                let value = match pick {
                    i if i < pool.len() => pool[i],
                    i if i == pool.len() => long.as_str(),
                    _ => longer.as_str(),
                };
                let form = sanitize(value);
                let expected = if reference.contains(&form) {
                    value
                } else if reference.len() < max {
                    reference.push(form);
                    value
                } else {
                    OTHER
                };
                assert_eq!(cap.label(value), expected, "max {max}, value {value:?}");
            }
            assert_eq!(cap.len(), reference.len());
        }
    }

    #[test]
    fn label_cap_memory_is_bounded_by_the_stat_name_form() {
        let cap = LabelCap::new(2);
        let long = "a".repeat(100_000);
        assert_eq!(cap.label(&long), long.as_str());
        // Longer values that share their first 64 characters make the same stat name.
        let longer = format!("{long}b");
        assert_eq!(cap.label(&longer), longer.as_str());
        assert_eq!(cap.len(), 1);
        assert!(cap.forms.borrow().values().flatten().all(|form| form.len() <= 64));
        assert!(cap.values.borrow().values().flatten().all(|value| value.len() <= 64));
        let host = MemoryHost::new();
        let m = Metrics::new();
        for v in ["a", "b", "c", "d"] {
            m.inc(&host, "t", &[("tool", cap.label(v))]);
        }
        assert_eq!(host.metric(&format!("t.tool.{}", "a".repeat(64))), None);
        assert_eq!(host.metric("t.tool.a"), Some(1));
        assert_eq!(host.metric("t.tool.other"), Some(3));
    }
}
