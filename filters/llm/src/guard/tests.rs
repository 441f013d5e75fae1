use super::*;
use std::rc::Rc;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n-----END RSA PRIVATE KEY-----";

fn scanner(config: serde_json::Value) -> Scanner {
    let c: GuardConfig = serde_json::from_value(config).unwrap();
    c.compile().unwrap()
}

fn default_scanner() -> Scanner {
    GuardConfig::default().compile().unwrap()
}

/// `(detector name, matched text)` of every hit.
fn found(s: &Scanner, text: &str) -> Vec<(String, String)> {
    s.scan(text).iter().map(|h| (s.name(h.detector).to_string(), text[h.range()].to_string())).collect()
}

fn only(s: &Scanner, name: &str, text: &str) -> Vec<String> {
    found(s, text).into_iter().filter(|(n, _)| n == name).map(|(_, t)| t).collect()
}

fn one(name: &str) -> Scanner {
    scanner(serde_json::json!({"detectors": {"builtin": [name]}}))
}

#[track_caller]
fn hits(name: &str, text: &str, want: &[&str]) {
    let s = one(name);
    assert_eq!(only(&s, name, text), want, "{name} in {text:?}");
}

#[track_caller]
fn none(name: &str, text: &str) {
    hits(name, text, &[]);
}

// ---- detectors -------------------------------------------------------------------------

#[test]
fn email() {
    hits("email", "write to jane.doe+tag@mail.example.co.uk, thanks", &["jane.doe+tag@mail.example.co.uk"]);
    hits("email", "(a@b.io)", &["a@b.io"]);
    hits("email", "mail: bob@example.com.", &["bob@example.com"]);
    hits("email", "邮箱alice@example.org", &["alice@example.org"]);
    none("email", "@app.route('/x')");
    none("email", "npm i left-pad@1.3.0");
    none("email", "root@localhost");
    none("email", "user@-bad.com");
}

#[test]
fn phone() {
    hits("phone", "call +1 (415) 555-0100 now", &["+1 (415) 555-0100"]);
    hits("phone", "call +14155550100.", &["+14155550100"]);
    hits("phone", "+44 20 7946 0958", &["+44 20 7946 0958"]);
    hits("phone", "+33 6 12 34 56 78", &["+33 6 12 34 56 78"]);
    hits("phone", "(415) 555-0100", &["(415) 555-0100"]);
    hits("phone", "tel 415-555-0100", &["415-555-0100"]);
    hits("phone", "tel 415.555.0100", &["415.555.0100"]);
    hits("phone", "020 7946 0958", &["020 7946 0958"]);
    hits("phone", "06 12 34 56 78", &["06 12 34 56 78"]);
    hits("phone", "1-800-555-0100", &["1-800-555-0100"]);
    // Not every digit run.
    none("phone", "order 4155550100 shipped");
    none("phone", "ts=1699999999123");
    none("phone", "ssn 123-45-6789");
    none("phone", "on 2024-01-15 12:30");
    none("phone", "1 000 000 000 people");
    none("phone", "host 192.168.100.200");
    none("phone", "card 4111 1111 1111 1111");
    none("phone", "id 123e4567-e89b-12d3-a456-426614174000");
    none("phone", "commit 3f786850e387550fdab836ed7e6dc881de23001b");
    none("phone", "v1.2.3");
    none("phone", "+1234");
}

#[test]
fn card() {
    hits("card", "card 4111111111111111 exp", &["4111111111111111"]);
    hits("card", "4111 1111 1111 1111", &["4111 1111 1111 1111"]);
    hits("card", "5500-0000-0000-0004.", &["5500-0000-0000-0004"]);
    hits("card", "amex 3782 822463 10005", &["3782 822463 10005"]);
    hits("card", "6011111111111117", &["6011111111111117"]);
    // Luhn.
    none("card", "4111111111111112");
    none("card", "4111 1111 1111 1112");
    // Mixed separators, bad groups, too long, glued, wrong first digit.
    none("card", "4111-1111 1111-1111");
    none("card", "41111 11 111111111");
    none("card", "41111111111111110000");
    none("card", "x4111111111111111");
    none("card", "4111111111111111.5");
    none("card", "0000000000000000");
    none("card", "9111111111111111");
    // UUIDs, git SHAs, long ids are not cards.
    none("card", "123e4567-e89b-12d3-a456-426614174000");
    none("card", "3f786850e387550fdab836ed7e6dc881de23001b");
    none("card", "5105105105105100abc");
    none("card", "12345678-1234-1234-1234-123456789012");
}

#[test]
fn iban() {
    hits("iban", "IBAN DE89 3704 0044 0532 0130 00 please", &["DE89 3704 0044 0532 0130 00"]);
    hits("iban", "GB82WEST12345698765432", &["GB82WEST12345698765432"]);
    hits("iban", "FR14 2004 1010 0505 0001 3M02 606", &["FR14 2004 1010 0505 0001 3M02 606"]);
    hits("iban", "NL91ABNA0417164300.", &["NL91ABNA0417164300"]);
    none("iban", "DE89 3704 0044 0532 0130 01"); // checksum
    none("iban", "GB82WEST12345698765433");
    none("iban", "DE8937040044053201300"); // length
    none("iban", "ZZ89370400440532013000"); // no such country
    none("iban", "de89370400440532013000");
    none("iban", "XDE89370400440532013000");
}

#[test]
fn ssn() {
    hits("ssn", "ssn 123-45-6789.", &["123-45-6789"]);
    hits("ssn", "078-05-1120", &["078-05-1120"]);
    for bad in ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"] {
        none("ssn", bad);
    }
    none("ssn", "123456789");
    none("ssn", "1123-45-6789");
    none("ssn", "123-45-67890");
    none("ssn", "123-45-6789-1");
}

#[test]
fn ip() {
    hits("ip", "from 10.0.0.1.", &["10.0.0.1"]);
    hits("ip", "at 192.168.1.254:8080", &["192.168.1.254"]);
    hits("ip", "v6 2001:db8:85a3::8a2e:370:7334 ok", &["2001:db8:85a3::8a2e:370:7334"]);
    hits("ip", "::1", &["::1"]);
    hits("ip", "fe80::1%eth0", &["fe80::1"]);
    hits("ip", "2001:0db8:0000:0000:0000:ff00:0042:8329", &["2001:0db8:0000:0000:0000:ff00:0042:8329"]);
    hits("ip", "::ffff:192.0.2.128", &["::ffff:192.0.2.128", "192.0.2.128"]);
    none("ip", "256.1.1.1");
    none("ip", "1.2.3");
    none("ip", "1.2.3.4.5");
    none("ip", "01.2.3.4");
    none("ip", "v1.2.3.4");
    none("ip", "at 12:30:45");
    none("ip", "mac 00:1a:2b:3c:4d:5e");
    none("ip", "std::vector a::b");
    none("ip", "1::2::3");
}

#[test]
fn aws_key() {
    hits("aws_key", "key=AKIAIOSFODNN7EXAMPLE;", &["AKIAIOSFODNN7EXAMPLE"]);
    hits("aws_key", "ASIAY34FZKBOKMUTVV7A", &["ASIAY34FZKBOKMUTVV7A"]);
    none("aws_key", "AKIAIOSFODNN7EXAMPLEX");
    none("aws_key", "AKIAiosfodnn7example");
    none("aws_key", "XAKIAIOSFODNN7EXAMPLE");
}

#[test]
fn private_key() {
    let text = format!("here:\n{PEM}\nbye");
    hits("private_key", &text, &[PEM]);
    // Without an END line the block runs to the end.
    let cut = &PEM[..80];
    hits("private_key", cut, &[cut]);
    let plain = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----";
    hits("private_key", plain, &[plain]);
    none("private_key", "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----");
    none("private_key", "-----BEGIN CERTIFICATE-----");
    none("private_key", "-----BEGIN rsa PRIVATE KEY-----");
}

#[test]
fn jwt() {
    hits("jwt", &format!("Bearer {JWT}."), &[JWT]);
    hits("jwt", JWT, &[JWT]);
    // Unsigned (alg none): empty signature.
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
    hits("jwt", unsigned, &[unsigned]);
    // Header without alg / not JSON / two parts / glued.
    none("jwt", "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln");
    none("jwt", "eyJub3QganNvbg.eyJzdWIiOiIxIn0.c2ln");
    none("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0");
    none("jwt", &format!("x{JWT}"));
}

#[test]
fn api_key() {
    let k = "sk-proj-Abc123DEF456ghi789JKL012mno345PQR678";
    hits("api_key", &format!("OPENAI_API_KEY={k}\n"), &[k]);
    let a = "sk-ant-api03-Xy9Z8w7V6u5T4s3R2q1P0oNmLkJiHgFeDcBa-_AbCdEf12";
    hits("api_key", &format!("\"{a}\""), &[a]);
    hits("api_key", "sk-1234567890abcdefghijklmn", &["sk-1234567890abcdefghijklmn"]);
    hits("api_key", "ghp_1234567890abcdefghijklmnopqrstuvwxyz", &["ghp_1234567890abcdefghijklmnopqrstuvwxyz"]);
    none("api_key", "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    none("api_key", "sk-short1");
    none("api_key", "task-1234567890abcdefghijklmn");
    none("api_key", "desk-1234567890abcdefghijklmn");
}

#[test]
fn entropy() {
    let s = one("entropy");
    let secret = "h7Fk2Lq9Zp3Xw8Rt5Vn1Bm6Cj4";
    assert_eq!(only(&s, "entropy", &format!("token {secret} end")), [secret]);
    assert!(builtin::shannon(secret.as_bytes()) > 4.5);
    // Low entropy, no digit, too short, hex digests, UUIDs, paths, long blobs.
    for text in [
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaa1b",
        "ThisIsAVeryLongIdentifierNameWithoutDigits",
        "h7Fk2Lq9Zp3",
        "3f786850e387550fdab836ed7e6dc881de23001b",
        "123e4567-e89b-12d3-a456-426614174000",
        "/home/user/projects/app2/src/main",
        &"Qm9vdHN0cmFwIGltYWdlIGRhdGEgMTIz".repeat(8),
    ] {
        assert_eq!(only(&s, "entropy", text), Vec::<String>::new(), "{text}");
    }
    // The threshold is configurable.
    let strict = scanner(serde_json::json!({"detectors": {"builtin": ["entropy"], "entropy": {"threshold": 4.8}}}));
    assert!(only(&strict, "entropy", secret).is_empty());
    let loose = scanner(serde_json::json!({"detectors": {"builtin": ["entropy"], "entropy": {"threshold": 3.5}}}));
    assert_eq!(only(&loose, "entropy", "3f786850e387550fdab836ed7e6dc881de23001b").len(), 1);
}

#[test]
fn regex_and_words() {
    let s = scanner(serde_json::json!({"detectors": {"builtin": [],
        "custom": [{"name": "ticket", "pattern": "TCK-[0-9]{4}"}, {"name": "empty", "pattern": "x*"}],
        "words": [{"name": "codenames", "words": ["Project Falcon", "bluebird", "c++"]}]}}));
    assert_eq!(
        found(&s, "TCK-1234 and project falcon, BlueBird; bluebirds; c++ ok xx"),
        [
            ("regex:ticket".to_string(), "TCK-1234".to_string()),
            ("words:codenames".into(), "project falcon".into()),
            ("words:codenames".into(), "BlueBird".into()),
            ("words:codenames".into(), "c++".into()),
            ("regex:empty".into(), "xx".into()),
        ]
    );
    // Whole words only, Unicode-aware boundaries.
    assert!(found(&s, "bluebirdé éBluebird _bluebird").is_empty());
    assert_eq!(found(&s, "é bluebird").len(), 1);
}

#[test]
fn detectors_off_by_config() {
    let s = scanner(serde_json::json!({"detectors": {"builtin": ["email"]}}));
    assert_eq!(found(&s, "a@b.io 4111111111111111 AKIAIOSFODNN7EXAMPLE").len(), 1);
    let all = default_scanner();
    let names: Vec<String> = found(&all, "a@b.io 4111111111111111 AKIAIOSFODNN7EXAMPLE").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["email", "card", "aws_key"]);
}

// ---- configuration ---------------------------------------------------------------------

#[test]
fn config_errors_name_the_field() {
    let err = |v: serde_json::Value| serde_json::from_value::<GuardConfig>(v).unwrap().compile().unwrap_err().0;
    let e = err(serde_json::json!({"detectors": {"custom": [
        {"name": "a", "pattern": "a"}, {"name": "b", "pattern": "b"}, {"name": "c", "pattern": "(unclosed"}]}}));
    assert!(e.starts_with("guardrails.detectors.custom[2].pattern: invalid regex"), "{e}");
    let e = err(serde_json::json!({"detectors": {"custom": [{"name": "a", "pattern": "a"}, {"name": "a", "pattern": "b"}]}}));
    assert!(e.starts_with("guardrails.detectors.custom[1].name: duplicate"), "{e}");
    let e = err(serde_json::json!({"detectors": {"words": [{"name": "w", "words": ["ok", " padded"]}]}}));
    assert!(e.starts_with("guardrails.detectors.words[0].words[1]:"), "{e}");
    let e = err(serde_json::json!({"detectors": {"words": [{"name": "w", "words": []}]}}));
    assert!(e.starts_with("guardrails.detectors.words[0].words:"), "{e}");
    let e = err(serde_json::json!({"detectors": {"entropy": {"min_len": 30, "max_len": 20}}}));
    assert!(e.starts_with("guardrails.detectors.entropy.max_len:"), "{e}");
    let e = err(serde_json::json!({"detectors": {"entropy": {"threshold": 0.0}}}));
    assert!(e.starts_with("guardrails.detectors.entropy.threshold:"), "{e}");
    let e = err(serde_json::json!({"window": 10_000_000}));
    assert!(e.starts_with("guardrails.window:"), "{e}");
    // Unknown fields and names are refused by serde.
    assert!(serde_json::from_value::<GuardConfig>(serde_json::json!({"detectors": {"builtin": ["cards"]}})).is_err());
    assert!(serde_json::from_value::<GuardConfig>(serde_json::json!({"windows": 3})).is_err());
    assert!(serde_json::from_value::<GuardConfig>(serde_json::json!({"detectors": {"custom": [{"name": "a", "pattern": "a", "x": 1}]}})).is_err());
}

#[test]
fn default_window_is_the_longest_bounded_reach() {
    assert_eq!(default_scanner().window(), builtin::REACH_JWT);
    assert_eq!(one("card").window(), builtin::REACH_CARD);
    let s = scanner(serde_json::json!({"detectors": {"builtin": ["ssn"], "words": [{"name": "w", "words": ["a much longer phrase"]}]}}));
    assert_eq!(s.window(), "a much longer phrase".len() + 4);
    assert_eq!(scanner(serde_json::json!({"window": 64})).window(), 64);
}

// ---- redaction -------------------------------------------------------------------------

#[test]
fn redaction() {
    let s = default_scanner();
    let text = "mail a@b.io, card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE.";
    assert_eq!(s.redact(text, &s.scan(text)), "mail [REDACTED:email], card [REDACTED:card], key [REDACTED:aws_key].");
    let text = format!("x {PEM} y");
    assert_eq!(s.redact(&text, &s.scan(&text)), "x [REDACTED:private_key] y");
    // Overlapping hits merge under the first (longest at the same start); touching ones do not.
    let d = |b| Detector::Builtin(b);
    let hits = [
        Hit { start: 2, end: 6, detector: d(Builtin::Card) },
        Hit { start: 4, end: 9, detector: d(Builtin::Phone) },
        Hit { start: 9, end: 10, detector: d(Builtin::Ssn) },
        Hit { start: 0, end: 1, detector: d(Builtin::Ip) },
    ];
    assert_eq!(s.redact("0123456789ab", &hits), "[REDACTED:ip]1[REDACTED:card][REDACTED:ssn]ab");
    assert_eq!(s.redact("héllo", &[]), "héllo");
}

// ---- streaming -------------------------------------------------------------------------

fn stream(s: &Rc<Scanner>, parts: &[&str], redact: bool, window: Option<usize>) -> (String, Vec<Hit>) {
    let mut g = match window {
        Some(w) => StreamGuard::with_window(Rc::clone(s), redact, w),
        None => StreamGuard::new(Rc::clone(s), redact),
    };
    let (mut out, mut hits) = (String::new(), Vec::new());
    for p in parts {
        let r = g.push(p);
        assert!(g.held() <= g.window() + 3, "holds {} bytes", g.held());
        out.push_str(&r.text);
        hits.extend(r.hits);
    }
    let r = g.finish();
    out.push_str(&r.text);
    hits.extend(r.hits);
    assert!(g.finish().text.is_empty());
    sort_hits(&mut hits);
    (out, hits)
}

#[track_caller]
fn check_splits(s: &Rc<Scanner>, text: &str, window: Option<usize>) {
    let hits = s.scan(text);
    let want = s.redact(text, &hits);
    let check = |parts: &[&str]| {
        let (out, got) = stream(s, parts, true, window);
        assert_eq!(out, want, "redacted stream differs for {parts:?}");
        assert_eq!(got, hits, "hits differ for {parts:?}");
        let (raw, got) = stream(s, parts, false, window);
        assert_eq!(raw, text, "detect-only stream changed the text for {parts:?}");
        assert_eq!(got, hits, "hits differ (detect mode) for {parts:?}");
    };
    check(&[text]);
    let bounds: Vec<usize> = (0..=text.len()).filter(|i| text.is_char_boundary(*i)).collect();
    for &i in &bounds {
        check(&[&text[..i], &text[i..]]);
    }
    // Character by character.
    let chars: Vec<String> = text.chars().map(String::from).collect();
    check(&chars.iter().map(String::as_str).collect::<Vec<_>>());
    // Pseudo-random cuts.
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..40 {
        let mut parts = Vec::new();
        let mut at = 0;
        while at < text.len() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut next = (at + 1 + (x as usize) % 24).min(text.len());
            while !text.is_char_boundary(next) {
                next += 1;
            }
            parts.push(&text[at..next]);
            at = next;
        }
        check(&parts);
    }
}

fn texts() -> Vec<String> {
    vec![
        "plain text without anything in it, ünïcödé too.".to_string(),
        "mail jane.doe@example.com or call +1 (415) 555-0100; card 4111 1111 1111 1111, ssn 078-05-1120.".to_string(),
        "IBAN DE89 3704 0044 0532 0130 00 from 10.0.0.1 and 2001:db8::7334, key AKIAIOSFODNN7EXAMPLE".to_string(),
        format!("token {JWT} and sk-proj-Abc123DEF456ghi789JKL012mno345PQR678 and h7Fk2Lq9Zp3Xw8Rt5Vn1Bm6Cj4"),
        format!("key:\n{PEM}\nafter the key a@b.io"),
        format!("unterminated {}", &PEM[..90]),
        "4111111111111111411111111111111141111111111111114111111111111111 then 4111111111111111".to_string(),
        "TCK-1234 project falcon BlueBird bluebirds x@y.zz 电话+44 20 7946 0958".to_string(),
        "a@b.co4111111111111111 1.2.3.4.5 ::ffff:192.0.2.128 -----BEGIN PRIVATE KEY-----".to_string(),
    ]
}

fn full_scanner() -> Rc<Scanner> {
    Rc::new(scanner(serde_json::json!({"detectors": {
        "custom": [{"name": "ticket", "pattern": "TCK-[0-9]{4}"}],
        "words": [{"name": "codenames", "words": ["Project Falcon", "bluebird"]}]}})))
}

#[test]
fn stream_equals_whole_text_for_every_split() {
    let s = full_scanner();
    for text in texts() {
        check_splits(&s, &text, None);
    }
}

#[test]
fn stream_with_small_windows() {
    // Built-ins with short matches only, and a window just long enough for them.
    let s = Rc::new(scanner(serde_json::json!({"detectors": {"builtin": ["card", "ssn", "ip", "aws_key", "phone", "private_key"]}})));
    for text in texts() {
        check_splits(&s, &text, Some(builtin::REACH_PEM));
    }
}

#[test]
fn private_key_block_longer_than_the_window_is_withheld() {
    let s = Rc::new(one("private_key"));
    let body = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkw\n".repeat(60);
    let text = format!("before -----BEGIN EC PRIVATE KEY-----\n{body}-----END EC PRIVATE KEY----- after");
    assert!(text.len() > 2000);
    check_splits(&s, &text, None);
    let mut g = StreamGuard::new(Rc::clone(&s), true);
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(7) {
        out.push_str(&g.push(std::str::from_utf8(chunk).unwrap()).text);
        assert!(!out.contains("QUJD"), "key material released: {out}");
    }
    out.push_str(&g.finish().text);
    assert_eq!(out, "before [REDACTED:private_key] after");
}

#[test]
fn stream_releases_all_but_the_window() {
    let s = Rc::new(one("card"));
    let mut g = StreamGuard::new(Rc::clone(&s), true);
    let w = s.window();
    let r = g.push(&"a".repeat(w + 10));
    assert_eq!(r.text.len(), 10);
    assert_eq!(g.held(), w);
    // A card split across deltas is found whole.
    let r1 = g.push("card 4111 1111 ");
    let r2 = g.push("1111 1111 and more text to push it out of the window ...........");
    let r3 = g.finish();
    let all: String = [r.text, r1.text, r2.text, r3.text].concat();
    assert!(all.ends_with("card [REDACTED:card] and more text to push it out of the window ..........."), "{all}");
    assert_eq!(r1.hits.len() + r2.hits.len() + r3.hits.len(), 1);
}

#[test]
fn stream_cuts_on_char_boundaries() {
    let s = Rc::new(one("email"));
    let mut g = StreamGuard::with_window(Rc::clone(&s), true, 3);
    let mut out = String::new();
    for d in ["é", "éé", "日本語", "x", "🎉🎉"] {
        out.push_str(&g.push(d).text);
    }
    out.push_str(&g.finish().text);
    assert_eq!(out, "ééé日本語x🎉🎉");
}
