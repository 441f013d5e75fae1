//! Wire formats: read incrementally where they stream, never panicking on any input (each has
//! a fuzz target in `fuzz/`).

pub mod json_framing;
pub mod json_scan;
pub mod jsonrpc;
pub mod protobuf;
pub mod raw_object;
pub mod sse;
pub mod trace;

/// Appends JSON values already serialized (`parts`) to `out`, comma-separated: the inside of a
/// JSON array. No brackets: the caller writes what surrounds them.
pub fn push_json_elements(out: &mut Vec<u8>, parts: &[Vec<u8>]) {
    out.reserve(parts.iter().map(Vec::len).sum::<usize>() + parts.len());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn elements_are_comma_separated() {
        let mut out = b"[".to_vec();
        super::push_json_elements(&mut out, &[b"1".to_vec(), br#"{"a":2}"#.to_vec()]);
        out.push(b']');
        assert_eq!(out, br#"[1,{"a":2}]"#);
        let mut empty = Vec::new();
        super::push_json_elements(&mut empty, &[]);
        assert!(empty.is_empty());
    }
}
