//! The table schema and keys (plain values), and recording against `MemoryHost`.

use super::*;

#[test]
fn table_entries_keep_their_json_and_read_with_or_without_escapes() {
    for agent in ["agent-a", "odd \"agent\" \\ \u{e9}"] {
        let entry = Entry { tp: Cow::Borrowed("00-tp"), agent: Some(Cow::Borrowed(agent)), orig: Some(Cow::Borrowed("alice")), ctx: None };
        let bytes = serde_json::to_vec(&entry).unwrap();
        let back: Entry<'_> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, entry);
        assert!(matches!(back.orig, Some(Cow::Borrowed(_))), "no escapes: borrowed");
    }
    // The stored form is unchanged (entries written by an earlier build still read).
    let bytes = serde_json::to_vec(&Entry::trace("00-tp")).unwrap();
    assert_eq!(bytes, br#"{"tp":"00-tp"}"#);
    let back: Entry<'_> = serde_json::from_slice(br#"{"tp":"t","agent":"a","orig":"o"}"#).unwrap();
    assert_eq!((back.agent.as_deref(), back.orig.as_deref()), (Some("a"), Some("o")));
    assert_eq!(task_key("agent-a", "t-1"), "task:7:agent-a:t-1");
    assert_eq!(ctx_key("c"), "ctx:c");
    assert_eq!(task_ref_key("t"), "tref:t");
}

