//! Filter state values a stream publishes for access logs and other filters
//! (`%FILTER_STATE(wasm.<key>:PLAIN)%`), written only when they change: each write is a
//! host call that allocates inside Envoy, and a stream republishes its tags at several
//! points (request forwarded, ids seen in the response, end of stream).

use crate::host::{Host, LogLevel};

#[derive(Debug, Default)]
pub struct Published {
    written: Vec<(&'static str, String)>,
}

impl Published {
    /// Writes `value` under `key` unless this stream already wrote exactly that value.
    /// `None` writes nothing (filter state cannot be unset; a later value replaces it).
    pub fn set(&mut self, host: &dyn Host, key: &'static str, value: Option<&str>) {
        let Some(value) = value else { return };
        let slot = self.written.iter().position(|(k, _)| *k == key);
        if slot.and_then(|i| self.written.get(i)).is_some_and(|(_, written)| written == value) {
            return;
        }
        if let Err(e) = host.set_property(&[key], value.as_bytes()) {
            host.log(LogLevel::Debug, &format!("tollgate: filter state {key}: {e}"));
            return;
        }
        match slot.and_then(|i| self.written.get_mut(i)) {
            Some((_, written)) => *written = value.to_string(),
            None => self.written.push((key, value.to_string())),
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
        assert_eq!(host.prop(&["tollgate.b"]), None);
    }
}
