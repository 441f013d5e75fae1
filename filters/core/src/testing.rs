//! Test support shared by the filter crates (native builds only): drive one whole HTTP
//! exchange through a filter against [`MemoryHost`], the way Envoy calls it.

use crate::host::batched::CallbackHost;
use crate::stream::{HttpExchange, Step, Stream};
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
    /// The answer to the request trailers, when the request ended with them.
    pub request_trailers: Option<Step>,
    pub response_headers: Option<Step>,
    pub response_body: Vec<Step>,
    /// The answer to the response trailers, when the response ended with them.
    pub response_trailers: Option<Step>,
}

/// How each direction of a driven stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// The last data callback says end-of-stream.
    #[default]
    EndOfStream,
    /// The data callbacks never say end-of-stream; trailers follow them.
    Trailers,
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
    drive_ending(ex, host, request_body, response_headers, response_chunks, Ending::EndOfStream)
}

/// [`drive`], with both directions ending as `ending` says. With [`Ending::Trailers`] the
/// request body's callback and every response chunk's say "not the end", and trailers
/// follow each direction (also a request without body: headers, then trailers), through the
/// same [`Stream`] the proxy-wasm glue uses.
pub fn drive_ending(
    ex: &mut dyn HttpExchange,
    host: &MemoryHost,
    request_body: Option<&[u8]>,
    response_headers: &[(&str, &str)],
    response_chunks: &[&[u8]],
    ending: Ending,
) -> Driven {
    let trailers = ending == Ending::Trailers;
    let mut stream = Stream::new(ex);
    let replied = || host.local_reply.borrow().is_some();
    let request_ends_at_headers = request_body.is_none() && !trailers;
    let mut out =
        Driven { request_headers: Some(callback(host, |h| stream.request_headers(h, request_ends_at_headers))), ..Driven::default() };
    if let (Some(body), Some(Step::Pause)) = (request_body, out.request_headers) {
        if !replied() {
            *host.request_body.borrow_mut() = body.to_vec();
            out.request_body = Some(callback(host, |h| stream.request_body(h, body.len(), !trailers)));
        }
    }
    if trailers && !replied() {
        out.request_trailers = Some(callback(host, |h| stream.request_trailers(h)));
    }
    if !replied() {
        *host.headers_sent.borrow_mut() = true;
        *host.response_headers.borrow_mut() =
            response_headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let response_ends_at_headers = response_chunks.is_empty() && !trailers;
        out.response_headers = Some(callback(host, |h| stream.response_headers(h, response_ends_at_headers)));
        // Envoy hands a paused response's next chunk together with the held ones.
        let mut held: Vec<u8> = Vec::new();
        for (i, chunk) in response_chunks.iter().enumerate() {
            held.extend_from_slice(chunk);
            *host.response_body.borrow_mut() = held.clone();
            let last = i + 1 == response_chunks.len() && !trailers;
            let step = callback(host, |h| stream.response_body(h, held.len(), last));
            if step == Step::Continue {
                held.clear();
            }
            out.response_body.push(step);
        }
        if trailers {
            *host.response_body.borrow_mut() = held.clone();
            out.response_trailers = Some(callback(host, |h| stream.response_trailers(h)));
        }
    }
    callback(host, |h| stream.log(h));
    callback(host, |h| stream.done(h));
    out
}
