//! Metrics with labels. Envoy stats have no labels, so label values are encoded in the stat
//! name as `<base>.<label>.<value>...`, and the shipped `stats_tags` regexes turn them back
//! into Prometheus labels. Metric ids are defined once per name and cached per VM.

use crate::host::{Host, LogLevel, MetricKind};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

#[derive(Default)]
pub struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
}

/// Makes a label value safe inside a dotted stat name.
pub fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(64));
    push_sanitized(&mut out, value);
    out
}

/// Appends `value` made safe for a dotted stat name: at most 64 characters, anything but
/// ASCII letters, digits, `-` and `_` replaced by `_`, `none` for an empty value.
fn push_sanitized(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str("none");
        return;
    }
    for c in value.chars().take(64) {
        out.push(if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' });
    }
}

pub fn stat_name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(base.len() + labels.iter().map(|(l, v)| l.len() + v.len().min(64) + 2).sum::<usize>());
    name.push_str(base);
    for (label, value) in labels {
        name.push('.');
        name.push_str(label);
        name.push('.');
        push_sanitized(&mut name, value);
    }
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
/// # use tollgate_core::metrics::LabelCap;
/// let tools = LabelCap::new(2);
/// assert_eq!(tools.label("add"), "add");
/// assert_eq!(tools.label("echo"), "echo");
/// assert_eq!(tools.label("admin_reset"), "other");
/// assert_eq!(tools.label("add"), "add");
/// ```
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: RefCell<HashSet<String>>,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        LabelCap { max, seen: RefCell::new(HashSet::new()) }
    }

    /// `value` while it is one of the first `max` distinct values (by stat-name form), else
    /// [`OTHER`]. Pass the result to [`Metrics`] as the label value.
    pub fn label<'a>(&self, value: &'a str) -> &'a str {
        let key = sanitize(value);
        let mut seen = self.seen.borrow_mut();
        if seen.contains(&key) {
            return value;
        }
        if seen.len() >= self.max {
            return OTHER;
        }
        seen.insert(key);
        value
    }

    /// Distinct values admitted so far.
    pub fn len(&self) -> usize {
        self.seen.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn id(&self, host: &dyn Host, kind: MetricKind, name: String) -> Option<u32> {
        if let Some(id) = self.ids.borrow().get(&name) {
            return Some(*id);
        }
        match host.define_metric(kind, &name) {
            Ok(id) => {
                self.ids.borrow_mut().insert(name, id);
                Some(id)
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("tollgate: cannot define metric {name}: {e}"));
                None
            }
        }
    }

    pub fn add(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(host, MetricKind::Counter, stat_name(base, labels)) {
            let _ = host.increment_metric(id, value.min(i64::MAX as u64) as i64);
        }
    }

    pub fn inc(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)]) {
        self.add(host, base, labels, 1);
    }

    pub fn record(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(host, MetricKind::Histogram, stat_name(base, labels)) {
            let _ = host.record_metric(id, value);
        }
    }

    pub fn gauge_add(&self, host: &dyn Host, base: &str, labels: &[(&str, &str)], delta: i64) {
        if let Some(id) = self.id(host, MetricKind::Gauge, stat_name(base, labels)) {
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
        assert!(cap.seen.borrow().iter().all(|k| k.len() <= 64));
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
