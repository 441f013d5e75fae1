//! The host trait: everything a filter needs from Envoy, each call fallible, never panicking.

pub mod abi_pairs;
pub mod batched;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

use std::cell::RefCell;
use std::collections::BTreeMap;

/// Why a host call failed. Filters log it and fall back; they never panic on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    NotFound,
    BadArgument,
    CasMismatch,
    /// Any other status the host returned (raw proxy-wasm status code).
    Status(u32),
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::NotFound => write!(f, "not found"),
            HostError::BadArgument => write!(f, "bad argument"),
            HostError::CasMismatch => write!(f, "cas mismatch"),
            HostError::Status(s) => write!(f, "host status {s}"),
        }
    }
}

pub type HostResult<T> = Result<T, HostError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// Which header map a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HeaderMap {
    Request = 0,
    Response = 2,
}

/// Which body buffer a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BodyBuffer {
    Request = 0,
    Response = 1,
}

/// The host as filters see it. All methods take `&self`: the proxy-wasm host is global state.
pub trait Host {
    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>>;
    /// Sets filter state `wasm.<name>` (readable in access logs as `%FILTER_STATE(wasm.name:PLAIN)%`).
    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()>;

    fn header(&self, map: HeaderMap, name: &str) -> HostResult<Option<String>>;
    fn headers(&self, map: HeaderMap) -> HostResult<Vec<(String, String)>>;
    /// The map in proxy-wasm's pair serialization ([`crate::host::abi_pairs`]), as the host returns it:
    /// one buffer instead of a string per name and value.
    fn headers_raw(&self, map: HeaderMap) -> HostResult<Vec<u8>> {
        let headers = self.headers(map)?;
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Ok(crate::host::abi_pairs::serialize_pairs(&pairs))
    }
    /// Replaces a header, or removes it when `value` is `None`.
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()>;
    fn add_header(&self, map: HeaderMap, name: &str, value: &str) -> HostResult<()>;
    /// Replaces the whole map with `pairs` (one call, one route-cache clear on Envoy).
    fn set_headers(&self, map: HeaderMap, pairs: &[(&str, &str)]) -> HostResult<()>;

    fn body(&self, buffer: BodyBuffer, start: usize, size: usize) -> HostResult<Option<Vec<u8>>>;
    /// Replaces `size` bytes at `start` of the buffer with `value` (0, usize::MAX = all).
    fn set_body(&self, buffer: BodyBuffer, start: usize, size: usize, value: &[u8]) -> HostResult<()>;

    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)>;
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()>;

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32>;
    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()>;
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()>;

    /// Wall clock, nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()>;

    fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()>;
    fn log(&self, level: LogLevel, message: &str);
}

/// Convenience methods over the raw trait.
pub trait HostExt: Host {
    fn request_header(&self, name: &str) -> Option<String> {
        self.header(HeaderMap::Request, name).ok().flatten()
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.header(HeaderMap::Response, name).ok().flatten()
    }
    /// A property holding a scalar string (route metadata, cluster name, a JWT claim): `None`
    /// for empty values, structs and lists (pair-serialized), non-UTF-8 or control characters.
    fn property_string(&self, path: &[&str]) -> Option<String> {
        let raw = self.property(path).ok().flatten()?;
        if raw.is_empty() || crate::host::abi_pairs::deserialize_pairs_exact(&raw).is_some() {
            return None;
        }
        String::from_utf8(raw).ok().filter(|s| !s.chars().any(char::is_control))
    }
    /// Sets a header, logging (not failing) when the host refuses, e.g. once headers left.
    fn try_set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) {
        if let Err(e) = self.set_header(map, name, value) {
            self.log(LogLevel::Warn, &format!("tollgate: cannot set header {name}: {e}"));
        }
    }
    fn now_millis(&self) -> u64 {
        self.now_nanos() / 1_000_000
    }
}

impl<T: Host + ?Sized> HostExt for T {}

/// A local reply as the in-memory host recorded it: status, headers, body.
pub type LocalReply = (u32, Vec<(String, String)>, Vec<u8>);

/// An in-memory host for unit tests: every call works on plain maps.
#[derive(Default)]
pub struct MemoryHost {
    pub properties: RefCell<BTreeMap<Vec<String>, Vec<u8>>>,
    pub request_headers: RefCell<Vec<(String, String)>>,
    pub response_headers: RefCell<Vec<(String, String)>>,
    pub request_body: RefCell<Vec<u8>>,
    pub response_body: RefCell<Vec<u8>>,
    pub shared: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    pub metrics: RefCell<Vec<(MetricKind, String, i64)>>,
    pub clock_nanos: RefCell<u64>,
    pub local_reply: RefCell<Option<LocalReply>>,
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    /// When set, header mutations fail as they do on Envoy once headers were sent.
    pub headers_sent: RefCell<bool>,
    /// Every host call in order (`name arg`), so tests can hold a filter to a call budget:
    /// each call crosses the wasm boundary and costs more on Envoy than in memory.
    pub calls: RefCell<Vec<String>>,
    /// Records no calls (profiling runs, where recording would be most of the work).
    pub quiet: std::cell::Cell<bool>,
    /// Writes of another worker, each landing just before the next `set_shared_data` of
    /// its key: what a compare-and-swap must notice.
    pub competing_writes: RefCell<Vec<(String, Vec<u8>)>>,
    random_counter: RefCell<u8>,
}

impl MemoryHost {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_request_headers(headers: &[(&str, &str)]) -> Self {
        let host = Self::new();
        *host.request_headers.borrow_mut() = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        host
    }
    pub fn set_prop(&self, path: &[&str], value: &[u8]) {
        self.properties
            .borrow_mut()
            .insert(path.iter().map(|s| s.to_string()).collect(), value.to_vec());
    }
    pub fn prop(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.properties.borrow().get(&key).cloned()
    }
    /// Current value of a metric by name (counters sum, gauges and histograms keep the last).
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics
            .borrow()
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, v)| *v)
    }
    fn map(&self, map: HeaderMap) -> &RefCell<Vec<(String, String)>> {
        match map {
            HeaderMap::Request => &self.request_headers,
            HeaderMap::Response => &self.response_headers,
        }
    }
    fn note(&self, call: &str, arg: &str) {
        if !self.quiet.get() {
            self.calls.borrow_mut().push(format!("{call} {arg}"));
        }
    }
    /// The recorded calls whose name (first word) is `call`.
    pub fn calls_named(&self, call: &str) -> usize {
        self.calls.borrow().iter().filter(|c| c.split(' ').next() == Some(call)).count()
    }
    fn buffer(&self, buffer: BodyBuffer) -> &RefCell<Vec<u8>> {
        match buffer {
            BodyBuffer::Request => &self.request_body,
            BodyBuffer::Response => &self.response_body,
        }
    }
}

impl Host for MemoryHost {
    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        self.note("property", &path.join("."));
        Ok(self.prop(path))
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        self.note("set_property", &path.join("."));
        self.set_prop(path, value);
        Ok(())
    }
    fn header(&self, map: HeaderMap, name: &str) -> HostResult<Option<String>> {
        self.note("header", name);
        let name = name.to_ascii_lowercase();
        Ok(self
            .map(map)
            .borrow()
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone()))
    }
    fn headers(&self, map: HeaderMap) -> HostResult<Vec<(String, String)>> {
        self.note("headers", &format!("{map:?}"));
        Ok(self.map(map).borrow().clone())
    }
    fn headers_raw(&self, map: HeaderMap) -> HostResult<Vec<u8>> {
        self.note("headers", &format!("{map:?}"));
        let headers = self.map(map).borrow();
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Ok(crate::host::abi_pairs::serialize_pairs(&pairs))
    }
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()> {
        self.note("set_header", name);
        if *self.headers_sent.borrow() && map == HeaderMap::Request {
            return Err(HostError::BadArgument);
        }
        let name = name.to_ascii_lowercase();
        let mut headers = self.map(map).borrow_mut();
        headers.retain(|(k, _)| *k != name);
        if let Some(v) = value {
            headers.push((name, v.to_string()));
        }
        Ok(())
    }
    fn add_header(&self, map: HeaderMap, name: &str, value: &str) -> HostResult<()> {
        self.note("add_header", name);
        self.map(map)
            .borrow_mut()
            .push((name.to_ascii_lowercase(), value.to_string()));
        Ok(())
    }
    fn set_headers(&self, map: HeaderMap, pairs: &[(&str, &str)]) -> HostResult<()> {
        self.note("set_headers", &format!("{map:?}"));
        if *self.headers_sent.borrow() && map == HeaderMap::Request {
            return Err(HostError::BadArgument);
        }
        *self.map(map).borrow_mut() = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        Ok(())
    }
    fn body(&self, buffer: BodyBuffer, start: usize, size: usize) -> HostResult<Option<Vec<u8>>> {
        self.note("body", &format!("{buffer:?}"));
        let body = self.buffer(buffer).borrow();
        let end = start.saturating_add(size).min(body.len());
        Ok(body.get(start..end).filter(|_| start < body.len()).map(<[u8]>::to_vec))
    }
    fn set_body(&self, buffer: BodyBuffer, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
        self.note("set_body", &format!("{buffer:?}"));
        let mut body = self.buffer(buffer).borrow_mut();
        let start = start.min(body.len());
        let end = start.saturating_add(size).min(body.len());
        body.splice(start..end, value.iter().copied());
        Ok(())
    }
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        self.note("shared_data", key);
        Ok(match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.note("set_shared_data", key);
        let mut shared = self.shared.borrow_mut();
        let competing = self.competing_writes.borrow().iter().position(|(k, _)| k == key);
        if let Some(at) = competing {
            let (k, v) = self.competing_writes.borrow_mut().remove(at);
            let next = shared.get(key).map_or(0, |(_, c)| *c).wrapping_add(1);
            shared.insert(k, (v, next));
        }
        let current = shared.get(key).map(|(_, c)| *c);
        if let (Some(expected), Some(actual)) = (cas, current) {
            if expected != actual {
                return Err(HostError::CasMismatch);
            }
        }
        let next = current.unwrap_or(0).wrapping_add(1);
        shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        self.note("define_metric", name);
        let mut metrics = self.metrics.borrow_mut();
        if let Some(i) = metrics.iter().position(|(_, n, _)| n == name) {
            return Ok(i as u32);
        }
        metrics.push((kind, name.to_string(), 0));
        Ok((metrics.len() - 1) as u32)
    }
    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()> {
        self.note("increment_metric", &id.to_string());
        let mut metrics = self.metrics.borrow_mut();
        let m = metrics.get_mut(id as usize).ok_or(HostError::NotFound)?;
        m.2 += offset;
        Ok(())
    }
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        self.note("record_metric", &id.to_string());
        let mut metrics = self.metrics.borrow_mut();
        let m = metrics.get_mut(id as usize).ok_or(HostError::NotFound)?;
        m.2 = value as i64;
        Ok(())
    }
    fn now_nanos(&self) -> u64 {
        self.note("now_nanos", "");
        *self.clock_nanos.borrow()
    }
    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()> {
        self.note("random_bytes", "");
        // Deterministic but distinct bytes, so tests can tell ids apart.
        let mut counter = self.random_counter.borrow_mut();
        for b in out.iter_mut() {
            *counter = counter.wrapping_add(1);
            *b = counter.wrapping_mul(37).wrapping_add(11);
        }
        Ok(())
    }
    fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        self.note("send_local_reply", &status.to_string());
        *self.local_reply.borrow_mut() = Some((
            status,
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body.to_vec(),
        ));
        Ok(())
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.note("log", "");
        self.logs.borrow_mut().push((level, message.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_host_headers_and_cas() {
        let host = MemoryHost::with_request_headers(&[("X-A", "1")]);
        assert_eq!(host.request_header("x-a").as_deref(), Some("1"));
        host.try_set_header(HeaderMap::Request, "x-a", None);
        assert_eq!(host.request_header("x-a"), None);
        host.set_shared_data("k", b"v", None).unwrap();
        let (_, cas) = host.shared_data("k").unwrap();
        assert_eq!(host.set_shared_data("k", b"w", Some(cas.unwrap() + 5)), Err(HostError::CasMismatch));
        assert!(host.set_shared_data("k", b"w", cas).is_ok());
    }

    #[test]
    fn header_set_after_send_fails_without_panicking() {
        let host = MemoryHost::new();
        *host.headers_sent.borrow_mut() = true;
        host.try_set_header(HeaderMap::Request, "x", Some("y"));
        assert_eq!(host.logs.borrow().len(), 1);
    }
}
