use super::*;

#[test]
fn the_context_wins_then_the_tasks_context_then_the_task() {
    assert_eq!(route_key(Some("c1"), Some("t1"), Some("c0")), Some("c1"));
    assert_eq!(route_key(None, Some("t1"), Some("c0")), Some("c0"));
    assert_eq!(route_key(None, Some("t1"), None), Some("t1"));
    assert_eq!(route_key(Some(""), Some("t1"), None), Some("t1"));
    assert_eq!(route_key(Some("a\nb"), None, None), None);
    assert_eq!(route_key(None, None, None), None);
}

