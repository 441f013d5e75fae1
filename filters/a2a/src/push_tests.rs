use super::*;

fn policy() -> PushPolicy {
    PushPolicy::default()
}

#[test]
fn public_hosts_pass() {
    for url in [
        "https://hooks.example.com/a2a",
        "http://hooks.example.com:8080/x?y#z",
        "HTTPS://Hooks.Example.COM./cb",
        "https://user:pw@hooks.example.com/",
        "https://8.8.8.8/",
        "https://[2606:4700::1111]:443/",
        "http://1.1.1.1",
        "https://a-b_c.example",
    ] {
        assert_eq!(check_url(url, &policy()), Ok(()), "{url}");
    }
}

#[test]
fn internal_addresses_are_refused_in_every_spelling() {
    let cases: &[(&str, Why)] = &[
        ("http://169.254.169.254/", Why::Metadata),
        ("http://169.254.169.254/latest/meta-data/", Why::Metadata),
        ("http://2852039166/", Why::Metadata),
        ("http://0xa9fea9fe/", Why::Metadata),
        ("http://0251.0376.0251.0376/", Why::Metadata),
        ("http://169.254.43518/", Why::Metadata),
        ("http://[::ffff:169.254.169.254]/", Why::Metadata),
        ("http://[::ffff:a9fe:a9fe]/", Why::Metadata),
        ("http://[fd00:ec2::254]/", Why::Metadata),
        ("http://100.100.100.200/", Why::Metadata),
        ("http://127.0.0.1/", Why::Loopback),
        ("http://127.1/", Why::Loopback),
        ("http://2130706433/", Why::Loopback),
        ("http://0177.0.0.1/", Why::Loopback),
        ("http://0x7f.1/", Why::Loopback),
        ("http://0x7f000001/", Why::Loopback),
        ("http://017700000001/", Why::Loopback),
        ("http://127.0.0.1.:8080/", Why::Loopback),
        ("http://[::1]/", Why::Loopback),
        ("http://[0:0:0:0:0:0:0:1]:80/", Why::Loopback),
        ("http://[::ffff:127.0.0.1]/", Why::Loopback),
        ("http://[::127.0.0.1]/", Why::Loopback),
        ("http://[64:ff9b::7f00:1]/", Why::Loopback),
        ("http://[2002:7f00:1::]/", Why::Loopback),
        ("http://evil@127.0.0.1/", Why::Loopback),
        ("http://0.0.0.0/", Why::Unspecified),
        ("http://0/", Why::Unspecified),
        ("http://[::]/", Why::Unspecified),
        ("http://169.254.1.1/", Why::LinkLocal),
        ("http://[fe80::1]/", Why::LinkLocal),
        ("http://10.0.0.1/", Why::Private),
        ("http://012.1/", Why::Private),
        ("http://172.16.0.1/", Why::Private),
        ("http://172.31.255.255/", Why::Private),
        ("http://192.168.1.1/", Why::Private),
        ("http://100.64.0.1/", Why::Private),
        ("http://[fc00::1]/", Why::Private),
        ("http://[fd12:3456::1]/", Why::Private),
        ("http://224.0.0.1/", Why::Multicast),
        ("http://[ff02::1]/", Why::Multicast),
        ("http://255.255.255.255/", Why::Reserved),
        ("http://localhost/", Why::RefusedName),
        ("http://LOCALHOST.:9000/", Why::RefusedName),
        ("http://api.localhost/", Why::RefusedName),
        ("http://metadata.google.internal/computeMetadata/v1/", Why::RefusedName),
        ("http://metadata/", Why::RefusedName),
        ("file:///etc/passwd", Why::Scheme),
        ("gopher://hooks.example.com/", Why::Scheme),
        ("ftp://hooks.example.com/", Why::Scheme),
        ("http:hooks.example.com", Why::Scheme),
        ("hooks.example.com/x", Why::Scheme),
        ("", Why::Scheme),
        ("http://", Why::BadHost),
        ("http:///x", Why::BadHost),
        ("http://a@b@127.0.0.1/", Why::BadHost),
        ("http://127.0.0.1\\@hooks.example.com/", Why::BadHost),
        ("http://%31%32%37.0.0.1/", Why::BadHost),
        ("http://[fe80::1%25eth0]/", Why::BadHost),
        ("http://1.2.3.4.5/", Why::BadHost),
        ("http://256.1.1.1/", Why::BadHost),
        ("http://1.2.3.08/", Why::BadHost),
        ("http://example.0x10/", Why::BadHost),
        ("http://hooks.example.com:99999/", Why::BadHost),
        ("http://hooks.example.com:8o/", Why::BadHost),
        ("http://１２７.0.0.1/", Why::BadHost),
        ("http://hooks example.com/", Why::BadHost),
        ("http://[::1/", Why::BadHost),
    ];
    for (url, why) in cases {
        assert_eq!(check_url(url, &policy()), Err(*why), "{url}");
    }
}

#[test]
fn allow_list_and_allow_private() {
    let p = PushPolicy {
        allowed_hosts: vec![Glob::new("127.0.0.1"), Glob::new("*.hooks.internal")],
        refused_hosts: vec![Glob::new("*.corp.example.com")],
        allow_private: true,
    };
    assert_eq!(check_url("http://127.0.0.1:9000/cb", &p), Ok(()));
    // Normalized before matching: every spelling of an allowed address is allowed.
    assert_eq!(check_url("http://2130706433:9000/cb", &p), Ok(()));
    assert_eq!(check_url("http://127.0.0.2/cb", &p), Err(Why::Loopback));
    assert_eq!(check_url("https://a.hooks.internal/", &p), Ok(()));
    assert_eq!(check_url("http://10.1.2.3/", &p), Ok(()));
    assert_eq!(check_url("http://[fd00::1]/", &p), Ok(()));
    // allow_private never admits metadata, link-local or loopback.
    assert_eq!(check_url("http://[fd00:ec2::254]/", &p), Err(Why::Metadata));
    assert_eq!(check_url("http://100.100.100.200/", &p), Err(Why::Metadata));
    assert_eq!(check_url("http://169.254.169.254/", &p), Err(Why::Metadata));
    assert_eq!(check_url("https://x.corp.example.com/", &p), Err(Why::RefusedName));
}

#[test]
fn ipv4_forms_read_as_inet_aton() {
    assert_eq!(parse_ipv4("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(parse_ipv4("0x7f.0.0.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(parse_ipv4("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(parse_ipv4("10.1.258"), Some(Ipv4Addr::new(10, 1, 1, 2)));
    assert_eq!(parse_ipv4("4294967295"), Some(Ipv4Addr::new(255, 255, 255, 255)));
    assert_eq!(parse_ipv4("4294967296"), None);
    assert_eq!(parse_ipv4("1.2.3.256"), None);
    assert_eq!(parse_ipv4("0x"), None);
    assert_eq!(parse_ipv4("example"), None);
    assert_eq!(parse_ipv4("99999999999999999999999999999999999999"), None);
}

#[test]
fn urls_are_found_in_both_dialects_and_spellings() {
    let create = Method::CreateTaskPushNotificationConfig;
    let send = Method::SendMessage;
    let cases: &[(&str, Method, &[&str])] = &[
        // 1.0 JSON-RPC params / REST body: TaskPushNotificationConfig.
        (r#"{"taskId":"t","url":"http://a.example/"}"#, create, &["http://a.example/"]),
        // 0.3 set: {taskId, pushNotificationConfig{url}}.
        (r#"{"taskId":"t","pushNotificationConfig":{"url":"http://b.example/"}}"#, create, &["http://b.example/"]),
        (r#"{"task_id":"t","push_notification_config":{"url":"http://c.example/"}}"#, create, &["http://c.example/"]),
        // 0.3 REST: {parent, config{pushNotificationConfig{url}}}.
        (r#"{"config":{"pushNotificationConfig":{"url":"http://d.example/"}}}"#, create, &["http://d.example/"]),
        (r#"{"message":{"parts":[{"url":"http://127.0.0.1/"}]},"configuration":{"taskPushNotificationConfig":{"url":"http://e.example/"}}}"#, send, &["http://e.example/"]),
        (r#"{"message":{},"configuration":{"pushNotificationConfig":{"url":"http://f.example/"}}}"#, send, &["http://f.example/"]),
        (r#"{"message":{},"configuration":{"task_push_notification_config":{"url":"http://g.example/"}}}"#, send, &["http://g.example/"]),
        (r#"{"message":{},"configuration":{}}"#, send, &[]),
        (r#"{"message":{}}"#, send, &[]),
        (r#"{"id":"t"}"#, Method::GetTask, &[]),
    ];
    for (body, method, want) in cases {
        let got = urls_in_json(body.as_bytes(), *method).unwrap();
        assert_eq!(got, want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{body}");
    }
    for (body, method) in [
        (r#"{"taskId":"t","url":7}"#, create),
        (r#"{"taskId":"t"}"#, create),
        (r#"not json"#, create),
        (r#"{"message":{},"configuration":{"taskPushNotificationConfig":{"url":null}}}"#, send),
    ] {
        assert_eq!(urls_in_json(body.as_bytes(), method), Err(Why::Unreadable), "{body}");
    }
}

#[test]
fn a_message_is_read_for_its_configuration_only() {
    let send = Method::SendMessage;
    let ok = |body: &[u8]| urls_in_json(body, send);
    // The message is skipped, not built: a number no JSON tree can hold (1e999) in a part
    // says nothing about the webhook, and the configuration's URL is still found.
    let big = br#"{"message":{"parts":[{"data":{"n":1e999}}]},"configuration":{"pushNotificationConfig":{"url":"http://a.example/"}}}"#;
    assert_eq!(ok(big), Ok(vec!["http://a.example/".to_string()]));
    // The last `configuration` counts, as in a JSON tree (duplicates are refused earlier).
    let twice = br#"{"configuration":{"pushNotificationConfig":{"url":"http://a.example/"}},"configuration":{"pushNotificationConfig":{"url":"http://b.example/"}}}"#;
    assert_eq!(ok(twice), Ok(vec!["http://b.example/".to_string()]));
    // Escaped member names are the same member.
    let escaped = br#"{"\u0063onfiguration":{"pushNotificationConfig":{"url":"http://c.example/"}}}"#;
    assert_eq!(ok(escaped), Ok(vec!["http://c.example/".to_string()]));
    // JSON that is no object names no configuration.
    for body in [&br#"[{"configuration":{"pushNotificationConfig":{"url":"http://d.example/"}}}]"#[..], b"7", b"null", b"\"x\""] {
        assert_eq!(ok(body), Ok(Vec::new()), "{}", String::from_utf8_lossy(body));
    }
    // Not JSON is unreadable, as before: bad syntax in a skipped member, trailing bytes,
    // bytes that are not UTF-8, a configuration whose URL is no string.
    for body in [
        &br#"{"message":{"parts":[tru]},"configuration":{}}"#[..],
        br#"{"message":{}} x"#,
        b"{\"message\":{\"text\":\"\xff\"}}",
        br#"{"configuration":{"pushNotificationConfig":{"url":7}}}"#,
        br#"{"configuration":{"pushNotificationConfig":{"url":1e999}}}"#,
    ] {
        assert_eq!(ok(body), Err(Why::Unreadable), "{}", String::from_utf8_lossy(body));
    }
}
