//! Text helpers shared by the filters.

/// Why a percent-encoded string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent escape")]
    BadEscape,
    /// The decoded bytes are not UTF-8.
    #[error("percent-decoded text is not UTF-8")]
    NotUtf8,
}

/// Percent-decodes `s` (RFC 3986 `%XX`; `+` is left alone). Invalid escapes are refused,
/// never kept literally: two parsers must not read the same text differently.
pub fn percent_decode_bytes(s: &str) -> Result<Vec<u8>, DecodeError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(DecodeError::BadEscape),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// [`percent_decode_bytes`] whose result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, DecodeError> {
    String::from_utf8(percent_decode_bytes(s)?).map_err(|_| DecodeError::NotUtf8)
}

/// The media type of a `Content-Type` value, lowercase, without parameters.
pub fn media_type(content_type: Option<&str>) -> Option<String> {
    content_type.map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Whether the media type of a `Content-Type` value is `lowercase` (what
/// `media_type(content_type) == Some(lowercase)` says, without the lowercased copy).
pub fn media_type_is(content_type: Option<&str>, lowercase: &str) -> bool {
    content_type.is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(lowercase))
}

/// `text/event-stream`, any parameters.
pub fn is_sse(content_type: Option<&str>) -> bool {
    media_type_is(content_type, "text/event-stream")
}

/// `Content-Encoding` absent or `identity`: the only encoding a filter can read.
pub fn is_identity_encoding(content_encoding: Option<&str>) -> bool {
    match content_encoding {
        None => true,
        Some(v) => v.split(',').map(str::trim).all(|e| e.is_empty() || e.eq_ignore_ascii_case("identity")),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (never panics on multi-byte text).
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_encodings_and_truncation() {
        assert_eq!(media_type(Some("Application/JSON; charset=utf-8")).as_deref(), Some("application/json"));
        assert_eq!(media_type(None), None);
        assert!(is_sse(Some("text/event-stream;charset=utf-8")));
        assert!(!is_sse(Some("application/json")));
        assert!(is_identity_encoding(None) && is_identity_encoding(Some("identity")));
        assert!(!is_identity_encoding(Some("gzip")) && !is_identity_encoding(Some("identity, br")));
        assert_eq!(truncate("agentéé", 6), "agent");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn decodes_escapes_and_multibyte() {
        assert_eq!(percent_decode("t%3Acancel").as_deref(), Ok("t:cancel"));
        assert_eq!(percent_decode("a%2fb%2D1").as_deref(), Ok("a/b-1"));
        assert_eq!(percent_decode("%C3%BC+x").as_deref(), Ok("ü+x"));
        assert_eq!(percent_decode("описание").as_deref(), Ok("описание"));
        assert_eq!(percent_decode("").as_deref(), Ok(""));
        assert_eq!(percent_decode("%25").as_deref(), Ok("%"));
    }

    #[test]
    fn refuses_invalid_escapes() {
        for bad in ["%", "%2", "a%zz", "%G1", "100%", "%%41", "%é1"] {
            assert_eq!(percent_decode(bad), Err(DecodeError::BadEscape), "{bad}");
        }
        assert_eq!(percent_decode("%FF"), Err(DecodeError::NotUtf8));
        assert_eq!(percent_decode_bytes("%FF"), Ok(vec![0xFF]));
    }
}
