//! The in-memory host for tests: every call works on plain maps. Compiled for the core
//! crate's own tests and behind the `testing` feature (the filters' dev-dependencies, the fuzz
//! workspace), never into a filter module.

use super::*;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A local reply as the in-memory host recorded it: status, headers, body.
pub type LocalReply = (u32, Vec<(String, String)>, Vec<u8>);

/// An HTTP call a test host saw: (cluster, headers, body).
pub type RecordedHttpCall = (String, Vec<(String, String)>, Vec<u8>);

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
    /// gRPC calls made, in order: (cluster, service/method, message); the token of the n-th
    /// call is n + 1.
    pub grpc_calls: RefCell<Vec<(String, String, Vec<u8>)>>,
    /// Directions resumed, in order.
    pub resumed: RefCell<Vec<Direction>>,
    /// When set, `dispatch_grpc` fails (the cluster is unknown or the host refuses).
    pub grpc_refused: std::cell::Cell<bool>,
    /// HTTP calls made.
    pub http_calls: RefCell<Vec<RecordedHttpCall>>,
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
    fn dispatch_http(&self, call: &HttpCall<'_>) -> HostResult<u32> {
        self.note("dispatch_http", call.cluster);
        if self.grpc_refused.get() {
            return Err(HostError::BadArgument);
        }
        let mut calls = self.http_calls.borrow_mut();
        let headers = call.headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        calls.push((call.cluster.to_string(), headers, call.body.to_vec()));
        Ok(u32::try_from(calls.len()).unwrap_or(u32::MAX).saturating_add(1000))
    }
    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> HostResult<u32> {
        self.note("dispatch_grpc", call.cluster);
        if self.grpc_refused.get() {
            return Err(HostError::BadArgument);
        }
        let mut calls = self.grpc_calls.borrow_mut();
        calls.push((call.cluster.to_string(), format!("{}/{}", call.service, call.method), call.message.to_vec()));
        Ok(u32::try_from(calls.len()).unwrap_or(u32::MAX))
    }
    fn resume(&self, direction: Direction) -> HostResult<()> {
        self.note("resume", if direction == Direction::Request { "request" } else { "response" });
        self.resumed.borrow_mut().push(direction);
        Ok(())
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.note("log", "");
        self.logs.borrow_mut().push((level, message.to_string()));
    }
}
