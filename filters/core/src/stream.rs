//! One HTTP stream through a filter, host-agnostic: each filter implements [`HttpExchange`]
//! over `&dyn Host`, so its whole flow runs natively against `MemoryHost` in unit tests, and
//! the proxy-wasm glue ([`crate::plugin`]) is written once for all filters.
//!
//! Filters never see trailers. A body that ends with trailers (HTTP/2, gRPC-style framing,
//! chunked HTTP/1.1) has no end-of-stream data callback: Envoy calls the trailers callback
//! instead, and a filter that only decides "at the end of the body" would let the held body
//! go out undecided. [`Stream`] turns trailers into the body's end for every filter, so there
//! is exactly one place where a body can end.

use crate::host::Host;

/// The answer to a gRPC call the exchange made: the response message, or the gRPC status
/// (and message) of a failure, timeouts and unreachable clusters included.
pub type GrpcAnswer<'a> = Result<&'a [u8], GrpcFailure>;

/// The answer to an HTTP call: its status and body; `Err(())`: none came.
pub type HttpAnswer<'a> = Result<(u16, &'a [u8]), ()>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcFailure {
    /// The gRPC status code (4: deadline exceeded, 14: unavailable, ...).
    pub status: u32,
    pub message: String,
}

/// What a callback tells Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Hold the stream (buffer a body, or stop after a local reply).
    Pause,
}

/// The stream callbacks a filter handles; each defaults to passing through.
///
/// The body callback with `end_of_stream` is the one end of each direction: it also comes when
/// the direction ended with trailers (see [`Stream`]); then `body_size` is the size of the body
/// the filter held (0 when it held nothing, and the host may then have no body to read).
pub trait HttpExchange {
    fn on_request_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    fn on_request_body(&mut self, _host: &dyn Host, _body_size: usize, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    fn on_response_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    fn on_response_body(&mut self, _host: &dyn Host, _body_size: usize, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    /// After the stream ended (also for streams the client abandoned). Runs after the access
    /// log, so filter state set here is not logged.
    fn on_log(&mut self, _host: &dyn Host) {}
    /// When the stream's context is destroyed (after `on_log`, if Envoy ran it).
    fn on_done(&mut self, _host: &dyn Host) {}
    /// The answer to a gRPC call made with `Host::dispatch_grpc`. A direction the exchange
    /// paused to wait for it goes on only when the exchange calls `Host::resume` (or ends
    /// with a local reply).
    fn on_grpc_response(&mut self, _host: &dyn Host, _token: u32, _answer: GrpcAnswer<'_>) {}
    /// The answer to an HTTP call the exchange made (`Err`: no answer: timeout, reset,
    /// unknown cluster).
    fn on_http_call_response(&mut self, _host: &dyn Host, _token: u32, _answer: HttpAnswer<'_>) {}
}

impl<E: HttpExchange + ?Sized> HttpExchange for &mut E {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        (**self).on_request_headers(host, end_of_stream)
    }
    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        (**self).on_request_body(host, body_size, end_of_stream)
    }
    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        (**self).on_response_headers(host, end_of_stream)
    }
    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        (**self).on_response_body(host, body_size, end_of_stream)
    }
    fn on_log(&mut self, host: &dyn Host) {
        (**self).on_log(host)
    }
    fn on_done(&mut self, host: &dyn Host) {
        (**self).on_done(host)
    }
    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, answer: GrpcAnswer<'_>) {
        (**self).on_grpc_response(host, token, answer)
    }
    fn on_http_call_response(&mut self, host: &dyn Host, token: u32, answer: HttpAnswer<'_>) {
        (**self).on_http_call_response(host, token, answer)
    }
}

/// How far one direction of the stream has come.
#[derive(Debug, Default, Clone, Copy)]
struct Direction {
    /// The filter has seen this direction's end (headers or body with end-of-stream).
    ended: bool,
    /// Bytes Envoy holds for the filter: the last body callback paused without the end.
    held: usize,
}

impl Direction {
    fn saw_headers(&mut self, end_of_stream: bool) {
        self.ended = end_of_stream;
        self.held = 0;
    }
    fn saw_body(&mut self, body_size: usize, end_of_stream: bool, step: Step) {
        self.ended |= end_of_stream;
        // Envoy buffers a paused chunk and hands the whole buffer to the next callback; a
        // chunk that continued is gone from the filter's reach.
        self.held = if step == Step::Pause && !end_of_stream { body_size } else { 0 };
    }
}

/// An exchange as Envoy drives it, with trailers delivered as the end of the body: the
/// trailers callback calls the body callback with `end_of_stream` and the held size, and
/// answers what it answers (a decision that pauses keeps the body and trailers held; a local
/// reply stops both).
pub struct Stream<E> {
    exchange: E,
    request: Direction,
    response: Direction,
    /// The gateway's request id and span as the request left (see
    /// [`crate::observe::correlate`]): request headers are readable in request callbacks only.
    correlation: Vec<(&'static str, String)>,
    /// The filter sent its own span upstream (the `traceparent` changed in a request
    /// callback): no need to look again at the body's end.
    joined: bool,
}

impl<E: HttpExchange> Stream<E> {
    pub fn new(exchange: E) -> Self {
        Stream { exchange, request: Direction::default(), response: Direction::default(), correlation: Vec::new(), joined: false }
    }
    pub fn exchange(&self) -> &E {
        &self.exchange
    }
    pub fn request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.request.saw_headers(end_of_stream);
        let inbound = host.header(crate::host::HeaderMap::Request, "traceparent").ok().flatten();
        let step = self.exchange.on_request_headers(host, end_of_stream);
        self.correlate(host);
        let now = self.correlation.iter().find(|(k, _)| *k == "traceparent").map(|(_, v)| v.as_str());
        self.joined = now.is_some() && now != inbound.as_deref();
        step
    }
    pub fn request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        let step = self.exchange.on_request_body(host, body_size, end_of_stream);
        self.request.saw_body(body_size, end_of_stream, step);
        if end_of_stream && !self.joined {
            // A filter that decides on the body joins the trace there.
            self.correlate(host);
        }
        step
    }
    /// Keeps the correlation headers as the request now stands (the filter joined the trace).
    fn correlate(&mut self, host: &dyn Host) {
        let now = crate::observe::correlate::headers(host);
        if !now.is_empty() {
            self.correlation = now;
        }
    }
    pub fn request_trailers(&mut self, host: &dyn Host) -> Step {
        if self.request.ended {
            return Step::Continue;
        }
        self.request_body(host, self.request.held, true)
    }
    pub fn response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.response.saw_headers(end_of_stream);
        // Before the filter's own changes: the client can find the gateway's record.
        crate::observe::correlate::stamp_response(host, &self.correlation);
        self.exchange.on_response_headers(host, end_of_stream)
    }
    pub fn response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        let step = self.exchange.on_response_body(host, body_size, end_of_stream);
        self.response.saw_body(body_size, end_of_stream, step);
        step
    }
    pub fn response_trailers(&mut self, host: &dyn Host) -> Step {
        if self.response.ended {
            return Step::Continue;
        }
        self.response_body(host, self.response.held, true)
    }
    pub fn log(&mut self, host: &dyn Host) {
        self.exchange.on_log(host)
    }
    pub fn done(&mut self, host: &dyn Host) {
        self.exchange.on_done(host)
    }
    pub fn grpc_response(&mut self, host: &dyn Host, token: u32, answer: GrpcAnswer<'_>) {
        self.exchange.on_grpc_response(host, token, answer)
    }
    pub fn http_call_response(&mut self, host: &dyn Host, token: u32, answer: HttpAnswer<'_>) {
        self.exchange.on_http_call_response(host, token, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{HostExt, MemoryHost};

    /// Records every call it gets; pauses request and response bodies until their end.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl HttpExchange for Recorder {
        fn on_request_headers(&mut self, _: &dyn Host, eos: bool) -> Step {
            self.0.push(format!("req-headers eos={eos}"));
            if eos { Step::Continue } else { Step::Pause }
        }
        fn on_request_body(&mut self, _: &dyn Host, size: usize, eos: bool) -> Step {
            self.0.push(format!("req-body {size} eos={eos}"));
            if eos { Step::Continue } else { Step::Pause }
        }
        fn on_response_headers(&mut self, _: &dyn Host, eos: bool) -> Step {
            self.0.push(format!("resp-headers eos={eos}"));
            Step::Continue
        }
        fn on_response_body(&mut self, _: &dyn Host, size: usize, eos: bool) -> Step {
            self.0.push(format!("resp-body {size} eos={eos}"));
            if size > 10 { Step::Pause } else { Step::Continue }
        }
    }

    #[test]
    fn trailers_end_a_held_request_body_with_its_size() {
        let host = MemoryHost::default();
        let mut s = Stream::new(Recorder::default());
        assert_eq!(s.request_headers(&host, false), Step::Pause);
        assert_eq!(s.request_body(&host, 5, false), Step::Pause);
        assert_eq!(s.request_body(&host, 12, false), Step::Pause);
        assert_eq!(s.request_trailers(&host), Step::Continue);
        assert_eq!(s.exchange().0.last().map(String::as_str), Some("req-body 12 eos=true"));
    }

    #[test]
    fn trailers_right_after_headers_end_an_empty_body() {
        let host = MemoryHost::default();
        let mut s = Stream::new(Recorder::default());
        s.request_headers(&host, false);
        s.request_trailers(&host);
        assert_eq!(s.exchange().0, ["req-headers eos=false", "req-body 0 eos=true"]);
    }

    #[test]
    fn trailers_after_a_passed_chunk_hold_nothing() {
        let host = MemoryHost::default();
        let mut s = Stream::new(Recorder::default());
        s.response_headers(&host, false);
        assert_eq!(s.response_body(&host, 20, false), Step::Pause);
        assert_eq!(s.response_body(&host, 4, false), Step::Continue);
        s.response_trailers(&host);
        assert_eq!(s.exchange().0.last().map(String::as_str), Some("resp-body 0 eos=true"));
    }

    #[test]
    fn the_response_names_the_request_id_and_span_the_request_left_with() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let host = MemoryHost::with_request_headers(&[("x-request-id", "gw-1"), ("traceparent", tp)]);
        let mut s = Stream::new(Recorder::default());
        s.request_headers(&host, true);
        // Envoy hides request headers from response callbacks: what was kept is used.
        host.set_header(crate::host::HeaderMap::Request, "x-request-id", None).unwrap();
        host.set_header(crate::host::HeaderMap::Request, "traceparent", None).unwrap();
        host.set_header(crate::host::HeaderMap::Response, "x-request-id", Some("prov-1")).unwrap();
        s.response_headers(&host, false);
        assert_eq!(host.response_header("x-request-id").as_deref(), Some("gw-1"));
        assert_eq!(host.response_header("x-upstream-request-id").as_deref(), Some("prov-1"));
        assert_eq!(host.response_header("traceparent").as_deref(), Some(tp));
    }

    /// Joins the trace at the request body's end (as the A2A filter does).
    struct JoinsAtBody;
    impl HttpExchange for JoinsAtBody {
        fn on_request_headers(&mut self, _: &dyn Host, _: bool) -> Step {
            Step::Pause
        }
        fn on_request_body(&mut self, host: &dyn Host, _: usize, eos: bool) -> Step {
            if eos {
                let ours = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
                host.set_header(crate::host::HeaderMap::Request, "traceparent", Some(ours)).unwrap();
            }
            Step::Continue
        }
    }

    #[test]
    fn a_trace_joined_at_the_body_end_is_the_one_named() {
        let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let host = MemoryHost::with_request_headers(&[("x-request-id", "gw-1"), ("traceparent", inbound)]);
        let mut s = Stream::new(JoinsAtBody);
        s.request_headers(&host, false);
        s.request_body(&host, 2, true);
        s.response_headers(&host, false);
        assert_eq!(
            host.response_header("traceparent").as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01")
        );
    }

    #[test]
    fn an_ended_direction_ignores_trailers() {
        let host = MemoryHost::default();
        let mut s = Stream::new(Recorder::default());
        s.request_headers(&host, false);
        s.request_body(&host, 3, true);
        assert_eq!(s.request_trailers(&host), Step::Continue);
        assert_eq!(s.exchange().0.len(), 2, "no second end");
    }
}
