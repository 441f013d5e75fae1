//! A2A push-notification webhook URLs (filters/a2a/src/push.rs): any URL from a caller, and
//! any JSON body of a push-carrying call. Asserts:
//! - `check_url`, `parse_host`, `urls_in_json` never panic;
//! - an address host read back from its normalized form is the same address (the allow-list
//!   globs match the normalized form, so every spelling of one address is one host);
//! - a URL accepted under the default policy has an http(s) scheme and a host that is a name
//!   outside the refused names, or an address of no refused class.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_a2a::classify::Method;
use tollgate_a2a::push::{check_url, parse_host, urls_in_json, Host, PushPolicy};

fuzz_target!(|data: &[u8]| {
    let policy = PushPolicy::default();
    for method in [Method::CreateTaskPushNotificationConfig, Method::SendMessage] {
        let _ = urls_in_json(data, method);
    }
    let Ok(url) = std::str::from_utf8(data) else { return };
    let verdict = check_url(url, &policy);
    let Ok(host) = parse_host(url) else {
        assert!(verdict.is_err(), "accepted a URL whose host cannot be read: {url:?}");
        return;
    };
    let lower = url.to_ascii_lowercase();
    if verdict.is_ok() {
        assert!(lower.starts_with("http://") || lower.starts_with("https://"), "{url:?}");
    }
    match &host {
        Host::V4(a) => assert_eq!(parse_host(&format!("http://{a}/")), Ok(host.clone())),
        Host::V6(a) => assert_eq!(parse_host(&format!("http://[{a}]/")), Ok(host.clone())),
        Host::Name(n) => {
            if verdict.is_ok() {
                assert!(n != "localhost" && !n.ends_with(".localhost") && n != "metadata.google.internal", "{url:?}");
            }
        }
    }
});
