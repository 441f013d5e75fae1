//! Metrics with labels. Envoy stats have no labels, so label values are encoded in the stat
//! name as `<base>.<label>.<value>...`, and the shipped `stats_tags` regexes turn them back
//! into Prometheus labels. Metric ids are defined once per name and cached per VM.

use crate::host::{Host, LogLevel, MetricKind};
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
pub struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
}

/// Makes a label value safe inside a dotted stat name.
pub fn sanitize(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

pub fn stat_name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(base.len() + labels.len() * 24);
    name.push_str(base);
    for (label, value) in labels {
        name.push('.');
        name.push_str(label);
        name.push('.');
        name.push_str(&sanitize(value));
    }
    name
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
}
