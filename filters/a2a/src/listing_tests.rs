use super::*;
use serde_json::json;

fn task(id: &str, text: &str) -> Value {
    json!({"id": id, "contextId": "c", "status": {"state": "TASK_STATE_COMPLETED"},
           "history": [{"messageId": "m", "role": "ROLE_USER", "parts": [{"text": text}]}]})
}

fn mine(id: &str) -> bool {
    id.starts_with("alice-")
}

#[test]
fn other_callers_tasks_are_withheld_from_a_json_rpc_answer() {
    let body = json!({"jsonrpc": "2.0", "id": 7, "result": {
        "tasks": [task("alice-1", "mine"), task("bob-1", "bob's secret"), {"contextId": "no id"}, task("alice-2", "mine too")],
        "nextPageToken": "", "pageSize": 50, "totalSize": 4}});
    let out = filter_task_list(body.to_string().as_bytes(), false, mine).unwrap();
    assert_eq!((out.kept, out.withheld), (2, 2));
    let new: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
    let ids: Vec<&str> = new["result"]["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alice-1", "alice-2"]);
    assert_eq!(new["result"]["totalSize"], 2, "other callers' tasks are not even counted");
    assert_eq!((new["id"].clone(), new["result"]["pageSize"].clone()), (json!(7), json!(50)));
    assert!(!new.to_string().contains("bob's secret"));
}

#[test]
fn a_rest_answer_is_the_list_itself() {
    let body = json!({"tasks": [task("bob-1", "x")], "nextPageToken": "p2"});
    let out = filter_task_list(body.to_string().as_bytes(), true, mine).unwrap();
    assert_eq!((out.kept, out.withheld), (0, 1));
    let new: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
    assert_eq!(new, json!({"tasks": [], "nextPageToken": "p2"}), "no totalSize is added");
}

#[test]
fn own_tasks_and_errors_pass_byte_for_byte() {
    let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"tasks": [task("alice-1", "x")], "totalSize": 1}});
    assert_eq!(filter_task_list(body.to_string().as_bytes(), false, mine), Ok(Filtered { body: None, kept: 1, withheld: 0 }));
    let error = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}}"#;
    assert_eq!(filter_task_list(error, false, mine), Ok(Filtered { body: None, kept: 0, withheld: 0 }));
    let empty = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    assert_eq!(filter_task_list(empty, false, mine).map(|f| f.withheld), Ok(0));
}

#[test]
fn what_cannot_be_read_unambiguously_is_an_error() {
    for (body, rest) in [
        (&b"not json"[..], false),
        (br#"{"jsonrpc":"2.0","id":1,"result":{"tasks":[]},"result":{"tasks":[{"id":"bob-1"}]}}"#, false),
        (br#"{"tasks":[],"tasks":[{"id":"bob-1"}]}"#, true),
        (br#"{"jsonrpc":"2.0","id":1,"result":{"tasks":{"id":"bob-1"}}}"#, false),
        (br#"{"jsonrpc":"2.0","id":1,"result":[{"id":"bob-1"}]}"#, false),
        (br#"[{"id":"bob-1"}]"#, true),
        (br#"[{"jsonrpc":"2.0","id":1,"result":{"tasks":[{"id":"bob-1"}]}}]"#, false),
    ] {
        assert!(filter_task_list(body, rest, mine).is_err(), "{}", String::from_utf8_lossy(body));
    }
}
