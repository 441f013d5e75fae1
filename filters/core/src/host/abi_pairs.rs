//! proxy-wasm's pair serialization, used for header maps and map-valued properties.

/// proxy-wasm pair serialization: count, (key_len, value_len)*, then NUL-terminated strings.
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs.iter().map(|(k, v)| 8 + k.len() + v.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// The little-endian u32 at `at`, if the bytes hold one there (the pair framing's numbers).
pub fn le_u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word) as usize)
}

/// Calls `each` with every (key, value) of a pair serialization, borrowed, in order;
/// malformed input yields what could be read. Returns whether all of it was read.
pub fn for_each_pair<'a>(bytes: &'a [u8], mut each: impl FnMut(&'a [u8], &'a [u8])) -> bool {
    let read_u32 = |at: usize| le_u32_at(bytes, at);
    let Some(count) = read_u32(0) else { return false };
    let Some(mut at) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else { return false };
    for i in 0..count {
        let (Some(k), Some(v)) = (read_u32(4 + i * 8), read_u32(8 + i * 8)) else { return false };
        let key = at.checked_add(k).and_then(|end| bytes.get(at..end));
        let value = at.checked_add(k).and_then(|end| end.checked_add(1)).and_then(|from| bytes.get(from..from.checked_add(v)?));
        let (Some(key), Some(value)) = (key, value) else { return false };
        each(key, value);
        at += k + v + 2;
    }
    at == bytes.len()
}

/// The inverse of [`serialize_pairs`]; malformed input yields what could be read.
pub fn deserialize_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for_each_pair(bytes, |key, value| {
        out.push((String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(value).into_owned()));
    });
    out
}

/// Decodes pairs only if `bytes` is exactly one well-formed pair serialization.
/// Envoy returns list-valued properties (e.g. a JWT `groups` claim) this way: each element
/// as a key with an empty value.
pub fn deserialize_pairs_exact(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let pairs = deserialize_pairs(bytes);
    let count = le_u32_at(bytes, 0)?;
    if pairs.len() != count {
        return None;
    }
    let expected: usize = 4 + count * 8 + pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
    (expected == bytes.len()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let pairs = [("a", "1"), ("content-type", "application/json"), ("", "")];
        let bytes = serialize_pairs(&pairs);
        let back = deserialize_pairs(&bytes);
        assert_eq!(back.len(), 3);
        assert_eq!(back[1], ("content-type".to_string(), "application/json".to_string()));
    }

    #[test]
    fn exact_decoding_tells_lists_from_strings() {
        // What Envoy returned for a JWT claim `"groups": ["eng", "admins"]`.
        let list = b"\x02\0\0\0\x03\0\0\0\0\0\0\0\x06\0\0\0\0\0\0\0eng\0\0admins\0\0";
        let pairs = deserialize_pairs_exact(list).unwrap();
        assert_eq!(pairs[0].0, "eng");
        assert_eq!(pairs[1].0, "admins");
        assert!(deserialize_pairs_exact(b"alice").is_none());
    }

    #[test]
    fn truncated_pairs_do_not_panic() {
        let bytes = serialize_pairs(&[("key", "value")]);
        for cut in 0..bytes.len() {
            let _ = deserialize_pairs(&bytes[..cut]);
        }
        assert!(deserialize_pairs(&[255, 255, 255, 255]).is_empty());
    }
}
