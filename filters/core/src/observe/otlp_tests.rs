use super::*;
use crate::config;
use crate::host::MemoryHost;
use serde_json::Value;

fn cfg(extra: &str) -> OtlpConfig {
    let text = format!(r#"{{"cluster":"otel"{extra}}}"#);
    config::parse::<OtlpConfig>(text.as_bytes()).unwrap()
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array().unwrap().iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[test]
fn defaults_and_refusals_name_the_field() {
    let c = cfg("");
    assert_eq!((c.authority.as_str(), c.path.as_str(), c.max_batch, c.max_queued), ("otel", "/v1/traces", 64, 2048));
    for (bad, says) in [
        (r#","path":"v1/traces""#, "must start with"),
        (r#","max_batch":0"#, "max_batch"),
        (r#","max_batch":10,"max_queued":5"#, "max_batch"),
        (r#","flush_ms":5"#, "flush_ms"),
        (r#","max_in_flight":0"#, "max_in_flight"),
        (r#","clster":"x""#, "unknown field"),
    ] {
        let text = format!(r#"{{"otlp":{{"cluster":"otel"{bad}}}}}"#);
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            otlp: OtlpConfig,
        }
        let e = config::parse::<Outer>(text.as_bytes()).unwrap_err().0;
        assert!(e.starts_with("otlp"), "{e}");
        assert!(e.contains(says), "{e}");
    }
    let e = config::parse::<OtlpConfig>(br#"{"cluster":" "}"#).unwrap_err().0;
    assert!(e.contains("cluster"), "{e}");
}

#[test]
fn llm_record_maps_to_genai_attributes() {
    let record = format!(
        r#"{{"schema":"tollgate.audit/v1","layer":"llm","timestamp_ms":1700000000000,"request_id":"r1","trace_id":"{TRACE}","span_id":"00f067aa0ba902b7","parent_span_id":"1111111111111111","identity":{{"principal":"alice","team":"support","source":"api_key"}},"decision":"allow","enforced":true,"status":200,"duration_ms":250,"operation":"chat","model":"fast","upstream_model":"gpt-4o-mini","provider":"openai","tokens":{{"input":12,"output":7}},"cost_micro_usd":42}}"#
    );
    let span: Value = serde_json::from_slice(&span_json(record.as_bytes(), 0).unwrap()).unwrap();
    assert_eq!(span["traceId"], TRACE);
    assert_eq!(span["spanId"], "00f067aa0ba902b7");
    assert_eq!(span["parentSpanId"], "1111111111111111");
    assert_eq!(span["name"], "chat fast");
    assert_eq!(span["kind"], 3);
    assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
    assert_eq!(span["endTimeUnixNano"], "1700000000250000000");
    assert!(span.get("status").is_none());
    assert_eq!(attr(&span, "gen_ai.operation.name").unwrap()["stringValue"], "chat");
    assert_eq!(attr(&span, "gen_ai.provider.name").unwrap()["stringValue"], "openai");
    assert_eq!(attr(&span, "gen_ai.request.model").unwrap()["stringValue"], "fast");
    assert_eq!(attr(&span, "gen_ai.response.model").unwrap()["stringValue"], "gpt-4o-mini");
    assert_eq!(attr(&span, "gen_ai.usage.input_tokens").unwrap()["intValue"], "12");
    assert_eq!(attr(&span, "gen_ai.usage.output_tokens").unwrap()["intValue"], "7");
    assert_eq!(attr(&span, "tollgate.cost_micro_usd").unwrap()["intValue"], "42");
    assert_eq!(attr(&span, "tollgate.principal").unwrap()["stringValue"], "alice");
    assert_eq!(attr(&span, "tollgate.team").unwrap()["stringValue"], "support");
    assert_eq!(attr(&span, "http.response.status_code").unwrap()["intValue"], "200");
}

#[test]
fn mcp_denial_maps_to_mcp_attributes_and_error_status() {
    let record = format!(
        r#"{{"layer":"mcp","timestamp_ms":5,"trace_id":"{TRACE}","span_id":"00f067aa0ba902b7","decision":"deny","enforced":true,"rule_id":"no-delete","kind":"request","method":"tools/call","jsonrpc_id":7,"tool":"delete_file","session_id":"s-1","server":"files","reason":"denied by rule"}}"#
    );
    let span: Value = serde_json::from_slice(&span_json(record.as_bytes(), 9_000_000).unwrap()).unwrap();
    assert!(span.get("parentSpanId").is_none());
    assert_eq!(span["name"], "tools/call delete_file");
    assert_eq!(span["endTimeUnixNano"], "9000000");
    assert_eq!(span["status"]["code"], 2);
    assert_eq!(span["status"]["message"], "denied by rule");
    assert_eq!(attr(&span, "mcp.method.name").unwrap()["stringValue"], "tools/call");
    assert_eq!(attr(&span, "gen_ai.operation.name").unwrap()["stringValue"], "execute_tool");
    assert_eq!(attr(&span, "gen_ai.tool.name").unwrap()["stringValue"], "delete_file");
    assert_eq!(attr(&span, "jsonrpc.request.id").unwrap()["stringValue"], "7");
    assert_eq!(attr(&span, "mcp.session.id").unwrap()["stringValue"], "s-1");
    assert_eq!(attr(&span, "tollgate.rule_id").unwrap()["stringValue"], "no-delete");
    assert_eq!(attr(&span, "tollgate.decision").unwrap()["stringValue"], "deny");
}

#[test]
fn a2a_and_batches_and_records_without_ids() {
    let record = format!(
        r#"[{{"layer":"a2a","batch_index":0,"timestamp_ms":1,"trace_id":"{TRACE}","span_id":"00f067aa0ba902b7","decision":"allow","method":"SendMessage","jsonrpc_method":"message/send","target":"planner","context_id":"ctx-1","task_id":"t-1","task_state":"completed","hop":2}},{{"layer":"a2a"}}]"#
    );
    let span: Value = serde_json::from_slice(&span_json(record.as_bytes(), 0).unwrap()).unwrap();
    assert_eq!(span["name"], "message/send planner");
    assert_eq!(attr(&span, "a2a.method.name").unwrap()["stringValue"], "message/send");
    assert_eq!(attr(&span, "gen_ai.conversation.id").unwrap()["stringValue"], "ctx-1");
    assert_eq!(attr(&span, "a2a.task.id").unwrap()["stringValue"], "t-1");
    assert_eq!(attr(&span, "a2a.task.state").unwrap()["stringValue"], "completed");
    assert!(attr(&span, "tollgate.layer").is_some());
    assert!(span_json(br#"{"layer":"mcp","decision":"allow"}"#, 0).is_none());
    assert!(span_json(br#"{"layer":"mcp","trace_id":"00000000000000000000000000000000","span_id":"00f067aa0ba902b7"}"#, 0).is_none());
    assert!(span_json(b"not json", 0).is_none());
}

#[test]
fn body_is_one_resource_one_scope() {
    let body = export_body("tollgate", "tollgate-mcp", &[br#"{"a":1}"#.to_vec(), br#"{"b":2}"#.to_vec()]);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let rs = &v["resourceSpans"][0];
    assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "tollgate");
    assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "tollgate-mcp");
    assert_eq!(rs["scopeSpans"][0]["spans"].as_array().unwrap().len(), 2);
}

#[test]
fn send_full_batches_at_once_and_partial_ones_on_time() {
    let c = cfg(r#","max_batch":10,"max_queued":20,"flush_ms":1000,"max_in_flight":2"#);
    assert_eq!(to_send(&c, 0, 0, 5000), 0);
    assert_eq!(to_send(&c, 3, 0, 10), 0);
    assert_eq!(to_send(&c, 3, 0, 1000), 3);
    assert_eq!(to_send(&c, 15, 0, 0), 10);
    assert_eq!(to_send(&c, 15, 2, 5000), 0, "in-flight cap");
}

#[test]
fn queue_is_bounded_and_counts_drops() {
    let host = MemoryHost::new();
    let c = cfg(r#","max_batch":2,"max_queued":3"#);
    let _ = take(usize::MAX);
    let _ = take_dropped();
    for i in 0..5u32 {
        let rec = format!(r#"{{"layer":"mcp","timestamp_ms":{i},"trace_id":"{TRACE}","span_id":"00f067aa0ba902b7","method":"ping"}}"#);
        enqueue(&host, &c, rec.as_bytes());
    }
    assert_eq!(queued(), 3);
    assert_eq!(take_dropped(), 2);
    assert_eq!(take_dropped(), 0);
    let spans = take(2);
    let first: Value = serde_json::from_slice(&spans[0]).unwrap();
    assert_eq!(first["startTimeUnixNano"], "2000000", "oldest dropped first");
    assert_eq!(queued(), 1);
    let token = dispatch(&host, &c, "tollgate-mcp", &spans);
    assert!(token.is_ok());
}
