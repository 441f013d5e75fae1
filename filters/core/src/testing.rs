//! Test support shared by the filter crates (native builds only): drive one whole HTTP
//! exchange through a filter against [`MemoryHost`], the way Envoy calls it.

use crate::callback_host::CallbackHost;
use crate::exchange::{HttpExchange, Step};
use crate::host::MemoryHost;

/// Extra warm-up rounds a test driving a benchmark request should run first (quietly), from
/// `TOLLGATE_PROFILE_ROUNDS` (default 0): `bench/profile.sh` sets it to count the
/// instructions of one request under callgrind.
pub fn profile_rounds() -> usize {
    std::env::var("TOLLGATE_PROFILE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// One callback as the plugin glue runs it: behind a fresh [`CallbackHost`].
pub fn callback<T>(host: &MemoryHost, run: impl FnOnce(&CallbackHost<'_>) -> T) -> T {
    let cb = CallbackHost::new(host);
    let out = run(&cb);
    cb.finish();
    out
}

/// What the filter answered at each callback of [`drive`].
#[derive(Debug, Default)]
pub struct Driven {
    pub request_headers: Option<Step>,
    pub request_body: Option<Step>,
    pub response_headers: Option<Step>,
    pub response_body: Vec<Step>,
}

/// Runs request headers, the request body (when the filter asked for it and did not reply
/// locally), response headers and body chunks (unless it replied locally), then the log
/// callback and `on_done`, each behind a fresh [`CallbackHost`] as on Envoy. The host keeps
/// the request headers it was created with.
pub fn drive(
    ex: &mut dyn HttpExchange,
    host: &MemoryHost,
    request_body: Option<&[u8]>,
    response_headers: &[(&str, &str)],
    response_chunks: &[&[u8]],
) -> Driven {
    let mut out = Driven { request_headers: Some(callback(host, |h| ex.on_request_headers(h, request_body.is_none()))), ..Driven::default() };
    if let (Some(body), Some(Step::Pause)) = (request_body, out.request_headers) {
        if host.local_reply.borrow().is_none() {
            *host.request_body.borrow_mut() = body.to_vec();
            out.request_body = Some(callback(host, |h| ex.on_request_body(h, body.len(), true)));
        }
    }
    if host.local_reply.borrow().is_none() {
        *host.headers_sent.borrow_mut() = true;
        *host.response_headers.borrow_mut() =
            response_headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        out.response_headers = Some(callback(host, |h| ex.on_response_headers(h, response_chunks.is_empty())));
        for (i, chunk) in response_chunks.iter().enumerate() {
            *host.response_body.borrow_mut() = chunk.to_vec();
            let last = i + 1 == response_chunks.len();
            out.response_body.push(callback(host, |h| ex.on_response_body(h, chunk.len(), last)));
        }
    }
    callback(host, |h| ex.on_log(h));
    callback(host, |h| ex.on_done(h));
    out
}
