//! MCP list filtering and response reading (filters/mcp/src/listfilter.rs). With a keep
//! rule "the name (or URI) starts with `a`", asserts on any server message:
//! - a rewritten list is JSON whose list items are exactly the original items that are
//!   objects naming a kept target (independent reading, tollgate-fuzz `J`), in order; every
//!   other member of the result is kept as it was, and `hidden` counts the removed items;
//! - "nothing to filter" (`Ok(None)`) for a list result means every item was kept;
//! - `ResponseHead` (one-pass reading) agrees with `ServerMessage` (raw reading) wherever it
//!   succeeds: same id, `is_response`, `summary()` (isError, list shape), `error_code()`;
//!   `summary()` agrees with `is_error()` and with the list shape guessed from the result.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_mcp::listfilter::{filter_list, ListKind, ResponseHead, ServerMessage};
use tollgate_mcp::message::Target;
use tollgate_fuzz::{Input, J};

const KINDS: [ListKind; 4] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::ResourceTemplates];

fn field(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Tools | ListKind::Prompts => "name",
        ListKind::Resources => "uri",
        ListKind::ResourceTemplates => "uriTemplate",
    }
}

/// Whether an item is shown, read independently: an object whose `name`, `uri` and
/// `uriTemplate` each appear at most once, as a string or null, and whose naming member is a
/// string starting with `a`. `None` for an item that is not an object (serde may read a
/// struct from an array: such an item is no tool, prompt or resource to a client either way).
fn kept(kind: ListKind, item: &J) -> Option<bool> {
    let J::Obj(members) = item else { return None };
    for f in ["name", "uri", "uriTemplate"] {
        let named: Vec<&J> = members.iter().filter(|(k, _)| k == f).map(|(_, v)| v).collect();
        if named.len() > 1 || named.iter().any(|v| !matches!(v, J::Str(_) | J::Null)) {
            return Some(false);
        }
    }
    Some(matches!(item.get(field(kind)), Some(J::Str(s)) if s.starts_with('a')))
}

/// `shown` is `items` less the hidden ones, in order: objects exactly as [`kept`] says.
fn check_shown(kind: ListKind, items: &[J], shown: &[J]) {
    let mut at = 0;
    for item in items {
        let show = kept(kind, item);
        let next = shown.get(at);
        match show {
            Some(true) => {
                assert_eq!(next, Some(item), "a kept item is missing");
                at += 1;
            }
            Some(false) => assert!(next != Some(item), "a hidden item is shown: {item:?}"),
            None => {
                if next == Some(item) {
                    at += 1;
                }
            }
        }
    }
    assert_eq!(at, shown.len(), "items shown that were not in the list");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let Ok(text) = std::str::from_utf8(input.rest()) else { return };
    let Some(msg) = ServerMessage::parse(text) else {
        assert!(ResponseHead::parse(text).is_none(), "one-pass reading accepted what the raw reading refuses");
        return;
    };
    if let Some(head) = ResponseHead::parse(text) {
        assert_eq!(head.id.map(|i| i.get()), msg.id.map(|i| i.get()));
        assert_eq!(head.is_response(), msg.is_response());
        assert_eq!(head.summary(), msg.summary(), "one-pass and raw summaries differ");
        assert_eq!(head.error_code(), msg.error_code());
    }
    // The checks below read the bytes independently; a number serde_json cannot read as f64
    // (`1e400`, kept raw by the filter) leaves a message out of them.
    if J::parse(text.as_bytes()).is_none() {
        return;
    }
    let summary = msg.summary();
    if let Some(r) = msg.result {
        if r.get().starts_with('{') && summary.is_error.is_some() {
            assert_eq!(summary.is_error, msg.is_error(), "summary's isError differs from is_error()");
        }
    }

    let kind = match flags % 5 {
        0 => None,
        k => Some(KINDS[usize::from(k) - 1]),
    };
    let mut keep = |_: ListKind, t: &Target<'_>| t.name().is_some_and(|n| n.starts_with('a'));
    let outcome = filter_list(&msg, kind, &mut keep);
    // A raw value may hold a number serde_json cannot read as f64 (`8e2000`): left out.
    let result = match msg.result.map(|r| J::parse(r.get().as_bytes())) {
        Some(None) => return,
        r => r.flatten(),
    };
    let effective = kind.or(summary.shape);
    match outcome {
        Ok(Some(rw)) => {
            let kind = effective.expect("filtered without a kind");
            let out = J::parse(rw.text.as_bytes()).expect("rewritten message is not JSON");
            let (Some(J::Obj(before)), Some(J::Obj(after))) = (result.as_ref(), out.get("result")) else {
                panic!("result is not an object before or after")
            };
            assert_eq!(before.len(), after.len(), "members added or removed");
            let mut removed = 0;
            for ((kb, vb), (ka, va)) in before.iter().zip(after) {
                assert_eq!(kb, ka);
                if kb != kind.key() {
                    assert_eq!(vb, va, "member `{kb}` changed");
                    continue;
                }
                let (J::Arr(items), J::Arr(shown)) = (vb, va) else { panic!("list member not an array") };
                check_shown(kind, items, shown);
                removed += items.len() - shown.len();
            }
            assert_eq!(rw.hidden, removed);
            assert!(rw.hidden > 0);
            if let Some(id) = msg.id.map_or(Some(J::Null), |i| J::parse(i.get().as_bytes())) {
                assert_eq!(out.get("id"), Some(&id), "id changed");
            }
        }
        Ok(None) => {
            if let (Some(kind), Some(J::Obj(members))) = (effective, result.as_ref()) {
                for (k, v) in members {
                    if k == kind.key() {
                        if let J::Arr(items) = v {
                            assert!(items.iter().all(|i| kept(kind, i) != Some(false)), "an item to hide was kept: {v:?}");
                        }
                    }
                }
            }
        }
        Err(_) => assert!(effective.is_some(), "an error without a list to filter"),
    }
});
