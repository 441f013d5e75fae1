//! The proxy-wasm host, called through the raw ABI.
//!
//! The `proxy-wasm` crate's own wrappers `panic!` on unexpected host statuses, and a panic
//! traps the VM for every later request on that worker. These wrappers return
//! [`HostError`] instead, so a filter can always answer.
#![allow(unsafe_code, clashing_extern_declarations)]

use crate::host::{BodyBuffer, Direction, GrpcCall, HeaderMap, Host, HostError, HostResult, HttpCall, LogLevel, MetricKind};
use crate::host::abi_pairs::{deserialize_pairs, serialize_pairs};
use std::ptr::null_mut;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const EMPTY: u32 = 7;
const CAS_MISMATCH: u32 = 8;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        additional_headers_map_data: *const u8,
        additional_headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, buf_len: usize) -> u16;
}

fn status(code: u32) -> HostResult<()> {
    match code {
        OK => Ok(()),
        NOT_FOUND => Err(HostError::NotFound),
        BAD_ARGUMENT => Err(HostError::BadArgument),
        CAS_MISMATCH => Err(HostError::CasMismatch),
        other => Err(HostError::Status(other)),
    }
}

/// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`
/// (exported by the proxy-wasm crate, which allocates it as a `Vec<u8>`).
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

/// Reads a value-returning call: Ok(None) for not-found and empty.
fn fetch(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let code = call(&mut data, &mut size);
    // SAFETY: on success the host hands us a buffer from our own allocator.
    let value = unsafe { owned(data, size) };
    match code {
        OK => Ok(value),
        NOT_FOUND | EMPTY => Ok(None),
        other => status(other).map(|_| None),
    }
}

/// Segments joined by NUL, without a trailing NUL (as the proxy-wasm SDK does): Envoy keeps
/// a trailing NUL in `set_property` keys, so `wasm.<name>` filter state would not be found.
fn serialize_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for segment in path {
        out.extend_from_slice(segment.as_bytes());
        out.push(0);
    }
    out.pop();
    out
}

/// The real host. Zero-sized: the host state lives in Envoy.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmHost;

const PLUGIN_CONFIGURATION: u32 = 7;

impl WasmHost {
    /// The plugin's `configuration` bytes; empty when there are none.
    pub fn plugin_configuration(&self) -> Vec<u8> {
        fetch(|d, s| unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, usize::MAX, d, s) })
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

impl Host for WasmHost {
    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        let path = serialize_path(path);
        fetch(|d, s| unsafe { proxy_get_property(path.as_ptr(), path.len(), d, s) })
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        let path = serialize_path(path);
        status(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
    }
    fn header(&self, map: HeaderMap, name: &str) -> HostResult<Option<String>> {
        let value = fetch(|d, s| unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, s) })?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
    fn headers(&self, map: HeaderMap) -> HostResult<Vec<(String, String)>> {
        Ok(deserialize_pairs(&self.headers_raw(map)?))
    }
    fn headers_raw(&self, map: HeaderMap) -> HostResult<Vec<u8>> {
        let raw = fetch(|d, s| unsafe { proxy_get_header_map_pairs(map as u32, d, s) })?;
        Ok(raw.unwrap_or_default())
    }
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()> {
        status(unsafe {
            match value {
                Some(v) => proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), v.as_ptr(), v.len()),
                None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
            }
        })
    }
    fn add_header(&self, map: HeaderMap, name: &str, value: &str) -> HostResult<()> {
        status(unsafe { proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
    }
    fn set_headers(&self, map: HeaderMap, pairs: &[(&str, &str)]) -> HostResult<()> {
        let raw = serialize_pairs(pairs);
        status(unsafe { proxy_set_header_map_pairs(map as u32, raw.as_ptr(), raw.len()) })
    }
    fn body(&self, buffer: BodyBuffer, start: usize, size: usize) -> HostResult<Option<Vec<u8>>> {
        fetch(|d, s| unsafe { proxy_get_buffer_bytes(buffer as u32, start, size, d, s) })
    }
    fn set_body(&self, buffer: BodyBuffer, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
        status(unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len()) })
    }
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        let code = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
        let value = unsafe { owned(data, size) };
        match code {
            OK => Ok((value, if cas > 0 { Some(cas) } else { None })),
            NOT_FOUND => Ok((None, None)),
            other => status(other).map(|_| (None, None)),
        }
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        status(unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0))
        })
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        let mut id = 0u32;
        status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }
    fn increment_metric(&self, id: u32, offset: i64) -> HostResult<()> {
        status(unsafe { proxy_increment_metric(id, offset) })
    }
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        status(unsafe { proxy_record_metric(id, value) })
    }
    fn now_nanos(&self) -> u64 {
        let mut t = 0u64;
        unsafe { proxy_get_current_time_nanoseconds(&mut t) };
        t
    }
    fn random_bytes(&self, out: &mut [u8]) -> HostResult<()> {
        match unsafe { random_get(out.as_mut_ptr(), out.len()) } {
            0 => Ok(()),
            errno => Err(HostError::Status(u32::from(errno))),
        }
    }
    fn send_local_reply(&self, status_code: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        let headers = serialize_pairs(headers);
        let details = "tollgate";
        status(unsafe {
            proxy_send_local_response(
                status_code,
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }
    fn send_grpc_reply(&self, grpc_status: u32, message: &str) -> HostResult<()> {
        // Envoy answers a gRPC request's local reply trailers-only, with this gRPC status and
        // the body as `grpc-message`.
        let details = "tollgate";
        let code = i32::try_from(grpc_status).unwrap_or(2);
        let no_headers = serialize_pairs(&[]);
        status(unsafe {
            proxy_send_local_response(200, details.as_ptr(), details.len(), message.as_ptr(), message.len(), no_headers.as_ptr(), no_headers.len(), code)
        })
    }
    fn log(&self, level: LogLevel, message: &str) {
        unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
    }
    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> HostResult<u32> {
        // Through the SDK, not the raw ABI: it records which context made the call, and its
        // dispatcher routes the answer only to calls it knows.
        proxy_wasm::hostcalls::dispatch_grpc_call(
            call.cluster,
            call.service,
            call.method,
            Vec::new(),
            Some(call.message),
            std::time::Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| HostError::Status(status as u32))
    }
    fn dispatch_http(&self, call: &HttpCall<'_>) -> HostResult<u32> {
        // Through the SDK, like gRPC calls: its dispatcher routes the answer to this context.
        proxy_wasm::hostcalls::dispatch_http_call(
            call.cluster,
            call.headers.to_vec(),
            Some(call.body),
            Vec::new(),
            std::time::Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| HostError::Status(status as u32))
    }
    fn resume(&self, direction: Direction) -> HostResult<()> {
        match direction {
            Direction::Request => proxy_wasm::hostcalls::resume_http_request(),
            Direction::Response => proxy_wasm::hostcalls::resume_http_response(),
        }
        .map_err(|status| HostError::Status(status as u32))
    }
}
