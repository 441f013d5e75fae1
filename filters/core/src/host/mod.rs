//! The host trait: everything a filter needs from Envoy, each call fallible, never panicking.

pub mod abi_pairs;
pub mod batched;
#[cfg(any(test, feature = "testing"))]
mod memory;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

#[cfg(any(test, feature = "testing"))]
pub use memory::{LocalReply, MemoryHost};


/// Why a host call failed. Filters log it and fall back; they never panic on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("not found")]
    NotFound,
    #[error("bad argument")]
    BadArgument,
    #[error("cas mismatch")]
    CasMismatch,
    /// Any other status the host returned (raw proxy-wasm status code).
    #[error("host status {0}")]
    Status(u32),
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

/// Which direction of the stream a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// A unary gRPC call to an Envoy cluster (the fleet-wide counter store). Its answer comes
/// back later, to the context that made it: [`crate::stream::HttpExchange::on_grpc_response`]
/// for a stream, the plugin's root for calls made on its timer.
#[derive(Debug, Clone, Copy)]
pub struct GrpcCall<'a> {
    pub cluster: &'a str,
    /// Fully qualified service name, e.g. `envoy.service.ratelimit.v3.RateLimitService`.
    pub service: &'a str,
    pub method: &'a str,
    /// The serialized request message.
    pub message: &'a [u8],
    pub timeout_ms: u64,
}

/// An HTTP call to an Envoy cluster (an external guardrail, a moderation service). Its
/// answer comes back later to the stream that made it:
/// [`crate::stream::HttpExchange::on_http_call_response`].
#[derive(Debug, Clone, Copy)]
pub struct HttpCall<'a> {
    pub cluster: &'a str,
    /// Request headers, the pseudo-headers `:method`, `:path` and `:authority` included.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub timeout_ms: u64,
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
    /// Calls `f` with every header of `map`, in order, as borrowed text: a reader that keeps a
    /// few values copies only those (the default lists the map).
    fn for_each_header(&self, map: HeaderMap, f: &mut dyn FnMut(&str, &str)) -> HostResult<()> {
        for (name, value) in self.headers(map)? {
            f(&name, &value);
        }
        Ok(())
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
    /// Answers a gRPC request itself: a trailers-only response (HTTP 200, `content-type:
    /// application/grpc`, `grpc-status`, `grpc-message`). Envoy builds it from the status
    /// (`proxy_send_local_response`'s gRPC status); elsewhere (tests) these headers on a
    /// local reply.
    fn send_grpc_reply(&self, grpc_status: u32, message: &str) -> HostResult<()> {
        let status = grpc_status.to_string();
        let headers = [("content-type", "application/grpc"), ("grpc-status", status.as_str()), ("grpc-message", message)];
        self.send_local_reply(200, &headers, b"")
    }
    fn log(&self, level: LogLevel, message: &str);
    /// Starts a gRPC call; the token identifies its answer.
    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> HostResult<u32>;
    /// Starts an HTTP call; the token identifies its answer.
    fn dispatch_http(&self, call: &HttpCall<'_>) -> HostResult<u32>;
    /// Lets a paused direction of the stream go on (after an asynchronous decision).
    fn resume(&self, direction: Direction) -> HostResult<()>;
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
