//! Shared pieces of the Tollgate filters, grouped by what they are:
//!
//! - [`host`]: the `Host` trait every filter works through (fallible calls, never panicking),
//!   `MemoryHost` for tests (behind the `testing` feature), the raw proxy-wasm ABI ([`host::wasm`], the one place that talks
//!   to Envoy and the only `unsafe`), the per-callback cache ([`host::batched`]) and the ABI's
//!   pair encoding ([`host::abi_pairs`]);
//! - [`plugin`] and [`stream`]: the one proxy-wasm glue for all filters, and the stream a
//!   filter's exchange sees (trailers end the body);
//! - [`wire`]: formats read and written on the wire, incrementally where they stream (SSE,
//!   JSON scanning and framing, JSON-RPC envelopes, W3C trace context);
//! - [`shared_data`]: state shared by the workers of one Envoy (fixed-window counters, an
//!   expiring table);
//! - [`fleet`]: counters shared by a fleet of Envoys, in a store reached over gRPC (the
//!   rate-limit service API), and the settlements queued for it;
//! - [`observe`]: the audit record, metrics, filter state;
//! - [`decision`]: the decision vocabulary (`Effect`, `Verdict`, `Combining`);
//! - [`gateway`]: the signed gateway credential an agent carries across layers (and the
//!   HMAC key the A2A delegation context is signed with);
//! - [`config`], [`identity`], [`glob`], [`reply`], [`hash`], [`text`]: configuration loading,
//!   the one identity model, patterns, local replies, digests, text helpers.
//!
//! Filters take a `&dyn Host`, so their logic runs natively in `cargo test` against
//! `host::MemoryHost` (`testing` drives whole exchanges; both behind the `testing` feature).

pub mod config;
pub mod fleet;
pub mod decision;
pub mod gateway;
pub mod glob;
pub mod hash;
pub mod host;
pub mod identity;
pub mod observe;
#[cfg(target_arch = "wasm32")]
pub mod plugin;
pub mod reply;
pub mod shared_data;
pub mod stream;
#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "testing")))]
pub mod schema_check;
#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "testing")))]
pub mod testing;
pub mod text;
pub mod wire;
