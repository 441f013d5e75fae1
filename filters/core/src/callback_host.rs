//! A per-callback view of the host that spends fewer calls across the wasm boundary.
//!
//! Measured on Envoy 1.40 (bench/README.md, "Where the time goes"), each host call costs
//! about 1-2 µs, and every request-header mutation also clears Envoy's route cache: a filter
//! making 50-90 calls per request spent more time crossing the boundary than deciding. This
//! wrapper, built fresh for each callback by the plugin glue, keeps results identical while
//! making fewer calls:
//! - header reads come from one snapshot of the map (one call instead of one per name);
//! - header mutations are applied to the snapshot and written once when the callback ends:
//!   removing an absent header or setting the value a header already has costs nothing; one
//!   or two changes are replayed as they were made; more replace the map in one call
//!   (`proxy_set_header_map_pairs`, one route-cache clear);
//! - the clock is read once per callback, and random bytes are fetched in one batch.
//!
//! The snapshot lives for one callback only, so changes other filters make between our
//! callbacks are never overwritten. Pending header changes are written before any property
//! read (a route or cluster property may depend on them) and before a local reply (access
//! logs and other filters must still see, e.g., a stripped credential as stripped). A map
//! the host lists as empty (absent in this phase) is not cached: calls on it go straight to
//! the host, which answers them as it did before.

use crate::host::{BodyBuffer, HeaderMap, Host, HostResult, LogLevel, MetricKind};
use std::cell::{Cell, RefCell};
use std::ops::Range;

/// Above this many pending changes, the whole map is written in one call.
const REPLAY_AT_MOST: usize = 2;

enum Change {
    Set(String, Option<String>),
    Add(String, String),
}

/// One header map as the host listed it, held as one string of names and values plus their
/// ranges (two allocations, not two per header); changes append to the string.
struct Snapshot {
    text: String,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// Every name and value was valid UTF-8 (else some hold replacement characters).
    lossless: bool,
}

impl Snapshot {
    /// `None` for an empty map: request and response header maps always hold pseudo-headers,
    /// so an empty listing means the map is not available in this phase.
    fn parse(raw: &[u8]) -> Option<Snapshot> {
        let mut snapshot = Snapshot { text: String::with_capacity(raw.len()), headers: Vec::new(), lossless: true };
        let complete = crate::pairs::for_each_pair(raw, |name, value| {
            let name = snapshot.push(name);
            let value = snapshot.push(value);
            snapshot.headers.push((name, value));
        });
        // A truncated listing must never be written back whole (it would drop the rest).
        snapshot.lossless &= complete;
        (!snapshot.headers.is_empty()).then_some(snapshot)
    }

    fn push(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.text.len();
        match std::str::from_utf8(bytes) {
            // A replacement character may itself come from an earlier lossy conversion:
            // treated as lossy too (the map is then never written whole).
            Ok(s) => {
                self.lossless &= !s.contains('\u{FFFD}');
                self.text.push_str(s);
            }
            Err(_) => {
                self.lossless = false;
                self.text.push_str(&String::from_utf8_lossy(bytes));
            }
        }
        start..self.text.len()
    }

    fn push_str(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    fn str(&self, range: &Range<usize>) -> &str {
        self.text.get(range.clone()).unwrap_or("")
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (self.str(k), self.str(v))).collect()
    }
}

#[derive(Default)]
struct HeaderCache {
    /// `None` until first used; `Some(None)` when the host would not list the map.
    snapshot: RefCell<Option<Option<Snapshot>>>,
    pending: RefCell<Vec<Change>>,
}

impl HeaderCache {
    /// Loads the snapshot on first use; false when the map cannot be listed (then callers
    /// go straight to the host).
    fn load(&self, host: &dyn Host, map: HeaderMap) -> bool {
        let mut snapshot = self.snapshot.borrow_mut();
        if snapshot.is_none() {
            *snapshot = Some(host.headers_raw(map).ok().and_then(|raw| Snapshot::parse(&raw)));
        }
        matches!(&*snapshot, Some(Some(_)))
    }

    fn get(&self, name: &str) -> Option<String> {
        let snapshot = self.snapshot.borrow();
        let s = snapshot.as_ref()?.as_ref()?;
        // Envoy answers a single-value lookup with the first of repeated headers.
        s.headers.iter().find(|(k, _)| s.str(k).eq_ignore_ascii_case(name)).map(|(_, v)| s.str(v).to_string())
    }

    fn all(&self) -> Vec<(String, String)> {
        let snapshot = self.snapshot.borrow();
        match snapshot.as_ref().and_then(|s| s.as_ref()) {
            Some(s) => s.pairs().into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            None => Vec::new(),
        }
    }

    /// Applies a change to the snapshot; false when it changes nothing.
    fn apply(&self, change: &Change) -> bool {
        let mut snapshot = self.snapshot.borrow_mut();
        let Some(Some(s)) = snapshot.as_mut() else { return true };
        match change {
            Change::Set(name, value) => {
                let first = s.headers.iter().position(|(k, _)| s.str(k) == name);
                let count = s.headers.iter().filter(|(k, _)| s.str(k) == name).count();
                match (value, first) {
                    (None, None) => false,
                    (Some(v), Some(i)) if count == 1 && s.str(&s.headers[i].1) == v => false,
                    (None, Some(_)) => {
                        let text = &s.text;
                        s.headers.retain(|(k, _)| text.get(k.clone()) != Some(name.as_str()));
                        true
                    }
                    (Some(v), Some(i)) => {
                        let range = s.push_str(v);
                        s.headers[i].1 = range;
                        let text = &s.text;
                        let mut seen = 0;
                        s.headers.retain(|(k, _)| {
                            text.get(k.clone()) != Some(name.as_str()) || {
                                seen += 1;
                                seen == 1
                            }
                        });
                        true
                    }
                    (Some(v), None) => {
                        let name = s.push_str(name);
                        let value = s.push_str(v);
                        s.headers.push((name, value));
                        true
                    }
                }
            }
            Change::Add(name, value) => {
                let name = s.push_str(name);
                let value = s.push_str(value);
                s.headers.push((name, value));
                true
            }
        }
    }

    fn flush(&self, host: &dyn Host, map: HeaderMap) {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return;
        }
        let snapshot = self.snapshot.borrow();
        let whole = snapshot.as_ref().and_then(|s| s.as_ref());
        // A value that was not valid UTF-8 reached us with replacement characters; writing
        // the whole map back would alter it, so such maps get their changes one by one.
        let result = match whole {
            Some(s) if pending.len() > REPLAY_AT_MOST && s.lossless => host.set_headers(map, &s.pairs()),
            _ => pending.iter().try_for_each(|change| match change {
                Change::Set(name, value) => host.set_header(map, name, value.as_deref()),
                Change::Add(name, value) => host.add_header(map, name, value),
            }),
        };
        if let Err(e) = result {
            host.log(LogLevel::Warn, &format!("tollgate: cannot write {map:?} headers: {e}"));
        }
    }

    fn discard(&self) {
        self.pending.borrow_mut().clear();
    }
}

/// Random bytes fetched per host call: a new trace takes 32 (trace id and two span ids).
const RANDOM_BATCH: usize = 64;

/// The host as one callback sees it; call [`CallbackHost::finish`] when the callback ends.
pub struct CallbackHost<'h> {
    host: &'h dyn Host,
    request: HeaderCache,
    response: HeaderCache,
    now: Cell<Option<u64>>,
    /// Unused random bytes, handed out from the end; never reused once handed out.
    random: RefCell<Vec<u8>>,
}

impl<'h> CallbackHost<'h> {
    pub fn new(host: &'h dyn Host) -> Self {
        CallbackHost {
            host,
            request: HeaderCache::default(),
            response: HeaderCache::default(),
            now: Cell::new(None),
            random: RefCell::new(Vec::new()),
        }
    }

    fn cache(&self, map: HeaderMap) -> &HeaderCache {
        match map {
            HeaderMap::Request => &self.request,
            HeaderMap::Response => &self.response,
        }
    }

    fn change(&self, map: HeaderMap, change: Change) -> HostResult<()> {
        let cache = self.cache(map);
        if !cache.load(self.host, map) {
            return match change {
                Change::Set(name, value) => self.host.set_header(map, &name, value.as_deref()),
                Change::Add(name, value) => self.host.add_header(map, &name, &value),
            };
        }
        if cache.apply(&change) {
            cache.pending.borrow_mut().push(change);
        }
        Ok(())
    }

    /// Writes pending header changes.
    pub fn finish(self) {
        self.request.flush(self.host, HeaderMap::Request);
        self.response.flush(self.host, HeaderMap::Response);
    }
}

impl Host for CallbackHost<'_> {
    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        self.request.flush(self.host, HeaderMap::Request);
        self.response.flush(self.host, HeaderMap::Response);
        self.host.property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        self.host.set_property(path, value)
    }
    fn header(&self, map: HeaderMap, name: &str) -> HostResult<Option<String>> {
        let cache = self.cache(map);
        if cache.load(self.host, map) {
            Ok(cache.get(name))
        } else {
            self.host.header(map, name)
        }
    }
    fn headers(&self, map: HeaderMap) -> HostResult<Vec<(String, String)>> {
        let cache = self.cache(map);
        if cache.load(self.host, map) {
            Ok(cache.all())
        } else {
            self.host.headers(map)
        }
    }
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()> {
        self.change(map, Change::Set(name.to_ascii_lowercase(), value.map(str::to_string)))
    }
    fn add_header(&self, map: HeaderMap, name: &str, value: &str) -> HostResult<()> {
        self.change(map, Change::Add(name.to_ascii_lowercase(), value.to_string()))
    }
    fn set_headers(&self, map: HeaderMap, pairs: &[(&str, &str)]) -> HostResult<()> {
        let cache = self.cache(map);
        cache.discard();
        *cache.snapshot.borrow_mut() = None;
        self.host.set_headers(map, pairs)
    }
    fn body(&self, buffer: BodyBuffer, start: usize, size: usize) -> HostResult<Option<Vec<u8>>> {
        self.host.body(buffer, start, size)
    }
    fn set_body(&self, buffer: BodyBuffer, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
        self.host.set_body(buffer, start, size, value)
    }
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        self.host.shared_data(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.host.set_shared_data(key, value, cas)
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        self.host.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()> {
        self.host.increment_metric(id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        self.host.record_metric(id, value)
    }
    fn now_nanos(&self) -> u64 {
        if let Some(now) = self.now.get() {
            return now;
        }
        let now = self.host.now_nanos();
        self.now.set(Some(now));
        now
    }
    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()> {
        if out.len() > RANDOM_BATCH {
            return self.host.random_bytes(out);
        }
        let mut pool = self.random.borrow_mut();
        if pool.len() < out.len() {
            let mut batch = vec![0u8; RANDOM_BATCH];
            self.host.random_bytes(&mut batch)?;
            *pool = batch;
        }
        let rest = pool.len() - out.len();
        out.copy_from_slice(&pool[rest..]);
        pool.truncate(rest);
        Ok(())
    }
    fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        self.request.flush(self.host, HeaderMap::Request);
        self.response.flush(self.host, HeaderMap::Response);
        self.host.send_local_reply(status, headers, body)
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.host.log(level, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{HostExt, MemoryHost};

    fn host() -> MemoryHost {
        MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/x"), ("a", "1"), ("dup", "first"), ("dup", "second")])
    }

    fn count(host: &MemoryHost, call: &str) -> usize {
        host.calls_named(call)
    }

    #[test]
    fn reads_come_from_one_snapshot_with_envoys_first_value_rule() {
        let inner = host();
        let cb = CallbackHost::new(&inner);
        assert_eq!(cb.request_header(":path").as_deref(), Some("/x"));
        assert_eq!(cb.request_header("A").as_deref(), Some("1"));
        assert_eq!(cb.request_header("dup").as_deref(), Some("first"));
        assert_eq!(cb.request_header("missing"), None);
        assert_eq!(cb.headers(HeaderMap::Request).unwrap().len(), 5);
        cb.finish();
        assert_eq!(count(&inner, "headers"), 1);
        assert_eq!(count(&inner, "header"), 0);
    }

    #[test]
    fn no_op_changes_cost_nothing_and_reads_see_pending_changes() {
        let inner = host();
        let cb = CallbackHost::new(&inner);
        cb.set_header(HeaderMap::Request, "absent", None).unwrap();
        cb.set_header(HeaderMap::Request, "a", Some("1")).unwrap();
        cb.set_header(HeaderMap::Request, "b", Some("2")).unwrap();
        assert_eq!(cb.request_header("b").as_deref(), Some("2"));
        cb.finish();
        // One real change: replayed as made, no map write.
        assert_eq!(count(&inner, "set_header"), 1);
        assert_eq!(count(&inner, "set_headers"), 0);
        assert_eq!(inner.request_header("b").as_deref(), Some("2"));
    }

    #[test]
    fn many_changes_are_written_in_one_call_with_the_same_result() {
        let changes = |h: &dyn Host| {
            h.set_header(HeaderMap::Request, "a", None).unwrap();
            h.set_header(HeaderMap::Request, "dup", Some("only")).unwrap();
            h.add_header(HeaderMap::Request, "x-added", "1").unwrap();
            h.set_header(HeaderMap::Request, "x-set", Some("2")).unwrap();
            h.set_header(HeaderMap::Request, "X-Set", Some("3")).unwrap();
        };
        let direct = host();
        changes(&direct);
        let inner = host();
        let cb = CallbackHost::new(&inner);
        changes(&cb);
        cb.finish();
        assert_eq!(count(&inner, "set_headers"), 1);
        assert_eq!(count(&inner, "set_header") + count(&inner, "add_header"), 0);
        let sorted = |h: &MemoryHost| {
            let mut v = h.request_headers.borrow().clone();
            v.sort();
            v
        };
        assert_eq!(sorted(&inner), sorted(&direct));
    }

    #[test]
    fn pending_request_changes_are_written_before_a_property_read() {
        let inner = host();
        let cb = CallbackHost::new(&inner);
        cb.set_header(HeaderMap::Request, "x-route", Some("b")).unwrap();
        let _ = cb.property(&["xds", "cluster_name"]);
        let calls = inner.calls.borrow().clone();
        let set = calls.iter().position(|c| c == "set_header x-route");
        let read = calls.iter().position(|c| c == "property xds.cluster_name");
        assert!(set.is_some() && set < read, "{calls:?}");
        cb.finish();
        assert_eq!(count(&inner, "set_header"), 1, "not written twice");
    }

    #[test]
    fn changes_made_before_a_local_reply_are_written_before_it() {
        let inner = host();
        let cb = CallbackHost::new(&inner);
        cb.set_header(HeaderMap::Request, "a", None).unwrap();
        cb.set_header(HeaderMap::Request, "x-a", Some("1")).unwrap();
        cb.send_local_reply(403, &[], b"no").unwrap();
        let calls = inner.calls.borrow().clone();
        let reply = calls.iter().position(|c| c.starts_with("send_local_reply"));
        let strip = calls.iter().position(|c| c == "set_header a");
        assert!(strip.is_some() && strip < reply, "{calls:?}");
        cb.finish();
        assert_eq!(inner.request_header("a"), None, "a stripped header stays stripped for the access log");
        assert_eq!(inner.request_header("x-a").as_deref(), Some("1"));
        assert_eq!(inner.calls_named("set_header"), 2, "written once");
    }

    #[test]
    fn a_map_listed_as_empty_is_left_to_the_host() {
        // Response headers do not exist yet while the request is handled.
        let inner = host();
        let cb = CallbackHost::new(&inner);
        assert_eq!(cb.response_header(":status"), None);
        assert_eq!(inner.calls_named("header"), 1, "asked the host directly");
        cb.set_header(HeaderMap::Response, "x-b", None).unwrap();
        assert_eq!(inner.calls_named("set_header"), 1, "not skipped as a no-op");
        cb.finish();
    }

    #[test]
    fn a_truncated_listing_is_never_written_back_whole() {
        let full = crate::pairs::serialize_pairs(&[(":method", "GET"), ("a", "1"), ("b", "2")]);
        let snapshot = Snapshot::parse(&full[..full.len() - 3]).unwrap();
        assert!(!snapshot.lossless);
        assert!(Snapshot::parse(&full).unwrap().lossless);
        assert!(Snapshot::parse(&crate::pairs::serialize_pairs(&[])).is_none());
    }

    #[test]
    fn maps_with_replaced_bytes_are_never_written_whole() {
        let inner = MemoryHost::with_request_headers(&[("bin", "caf\u{FFFD}")]);
        let cb = CallbackHost::new(&inner);
        for name in ["x-1", "x-2", "x-3", "x-4"] {
            cb.set_header(HeaderMap::Request, name, Some("v")).unwrap();
        }
        cb.finish();
        assert_eq!(count(&inner, "set_headers"), 0);
        assert_eq!(count(&inner, "set_header"), 4);
    }

    #[test]
    fn random_bytes_come_from_one_batch_and_never_repeat() {
        let inner = host();
        let cb = CallbackHost::new(&inner);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut id = [0u8; 16];
            cb.random_bytes(&mut id).unwrap();
            seen.push(id);
        }
        assert_eq!(count(&inner, "random_bytes"), 1);
        let mut more = [0u8; 8];
        cb.random_bytes(&mut more).unwrap();
        assert_eq!(count(&inner, "random_bytes"), 2, "a new batch once the first is used up");
        seen.dedup();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn the_clock_is_read_once_per_callback() {
        let inner = host();
        let cb = CallbackHost::new(&inner);
        assert_eq!(cb.now_nanos(), cb.now_nanos());
        cb.finish();
        assert_eq!(count(&inner, "now_nanos"), 1);
    }
}
