//! Filter state values a stream publishes for access logs and other filters
//! (`%FILTER_STATE(wasm.<key>:PLAIN)%`), written only when they change: each write is a
//! host call that allocates inside Envoy, and a stream republishes its tags at several
//! points (request forwarded, ids seen in the response, end of stream).

use crate::host::{Host, LogLevel};
use std::ops::Range;

/// Keys most streams publish (A2A: 8): room for them from the first write.
const TYPICAL_KEYS: usize = 8;

#[derive(Debug, Default)]
pub struct Published {
    /// Every value written, end to end (one buffer, not a string per value).
    text: String,
    /// Each key's last written value, as its range in `text`.
    written: Vec<(&'static str, Range<usize>)>,
}

impl Published {
    /// Writes `value` under `key` unless this stream already wrote exactly that value.
    /// `None` writes nothing (filter state cannot be unset; a later value replaces it).
    pub fn set(&mut self, host: &dyn Host, key: &'static str, value: Option<&str>) {
        let Some(value) = value else { return };
        let slot = self.written.iter().position(|(k, _)| *k == key);
        let last = slot.and_then(|i| self.written.get(i)).and_then(|(_, range)| self.text.get(range.clone()));
        if last == Some(value) {
            return;
        }
        if let Err(e) = host.set_property(&[key], value.as_bytes()) {
            host.log(LogLevel::Debug, &format!("tollgate: filter state {key}: {e}"));
            return;
        }
        if self.written.is_empty() {
            self.written.reserve(TYPICAL_KEYS);
            self.text.reserve(TYPICAL_KEYS * 16);
        }
        // Appended, never overwritten in place: a stream changes a value a few times at most.
        let start = self.text.len();
        self.text.push_str(value);
        let range = start..self.text.len();
        match slot.and_then(|i| self.written.get_mut(i)) {
            Some((_, written)) => *written = range,
            None => self.written.push((key, range)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    #[test]
    fn only_changes_are_written() {
        let host = MemoryHost::new();
        let mut state = Published::default();
        state.set(&host, "tollgate.a", Some("1"));
        state.set(&host, "tollgate.a", Some("1"));
        state.set(&host, "tollgate.b", None);
        state.set(&host, "tollgate.a", Some("2"));
        assert_eq!(host.calls_named("set_property"), 2);
        assert_eq!(host.prop(&["tollgate.a"]).as_deref(), Some(&b"2"[..]));
        // A value written before is compared with the last one, not with any earlier one.
        state.set(&host, "tollgate.a", Some("1"));
        state.set(&host, "tollgate.c", Some("12"));
        state.set(&host, "tollgate.c", Some("12"));
        state.set(&host, "tollgate.a", Some("1"));
        assert_eq!(host.calls_named("set_property"), 4);
        assert_eq!(host.prop(&["tollgate.a"]).as_deref(), Some(&b"1"[..]));
        assert_eq!(host.prop(&["tollgate.c"]).as_deref(), Some(&b"12"[..]));
        assert_eq!(host.prop(&["tollgate.b"]), None);
    }
}
