use super::*;
use tollgate_core::wire::protobuf::Writer;

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn message(id: &str, ctx: &str, task: &str) -> Writer {
    let mut m = Writer::new();
    m.string(1, id).string(2, ctx).string(3, task).uint(4, 1);
    m
}

#[test]
fn paths_name_the_service_and_method_of_either_dialect() {
    assert_eq!(classify_path("/lf.a2a.v1.A2AService/SendMessage"), Path::Call { dialect: Dialect::V10, method: Method::SendMessage });
    assert_eq!(
        classify_path("/lf.a2a.v1.A2AService/ListTaskPushNotificationConfigs"),
        Path::Call { dialect: Dialect::V10, method: Method::ListTaskPushNotificationConfigs }
    );
    assert_eq!(classify_path("/a2a.v1.A2AService/TaskSubscription"), Path::Call { dialect: Dialect::V03, method: Method::SubscribeToTask });
    assert_eq!(classify_path("/a2a.v1.A2AService/GetAgentCard"), Path::Call { dialect: Dialect::V03, method: Method::GetExtendedAgentCard });
    assert!(matches!(classify_path("/lf.a2a.v1.A2AService/DropTables"), Path::UnknownMethod { .. }));
    // 0.3 names are not 1.0 gRPC methods, nor JSON-RPC names gRPC methods.
    assert!(matches!(classify_path("/lf.a2a.v1.A2AService/TaskSubscription"), Path::UnknownMethod { .. }));
    assert!(matches!(classify_path("/a2a.v1.A2AService/ListTasks"), Path::UnknownMethod { .. }));
    assert_eq!(classify_path("/grpc.health.v1.Health/Check"), Path::Other);
    assert_eq!(classify_path("/agents/echo/"), Path::Other);
    assert_eq!(classify_path("lf.a2a.v1.A2AService/SendMessage"), Path::Other);
    assert!(is_grpc(Some("application/grpc")) && is_grpc(Some("application/grpc+proto")));
    assert!(!is_grpc(Some("application/json")) && !is_grpc(None) && !is_grpc(Some("application/grpc-web")));
}

#[test]
fn a_request_is_exactly_one_uncompressed_frame() {
    let m = message("m", "c", "").finish();
    assert_eq!(single_message(&frame(&m)), Ok(&m[..]));
    assert_eq!(single_message(&frame(b"")), Ok(&b""[..]));
    let mut two = frame(&m);
    two.extend(frame(&m));
    assert_eq!(single_message(&two), Err(FrameError::NotOne));
    assert_eq!(single_message(b""), Err(FrameError::NotOne));
    let mut compressed = frame(&m);
    compressed[0] = 1;
    assert_eq!(single_message(&compressed), Err(FrameError::Compressed));
    let mut reserved = frame(&m);
    reserved[0] = 2;
    assert_eq!(single_message(&reserved), Err(FrameError::Malformed));
    let whole = frame(&m);
    assert_eq!(single_message(&whole[..whole.len() - 1]), Err(FrameError::Malformed));
    assert_eq!(single_message(&whole[..3]), Err(FrameError::Malformed));
    let mut huge = vec![0, 0xff, 0xff, 0xff, 0xff];
    huge.extend_from_slice(b"short");
    assert_eq!(single_message(&huge), Err(FrameError::Malformed));
}

#[test]
fn send_message_ids_and_push_urls_v10() {
    let mut cfg = Writer::new();
    cfg.string(4, "http://169.254.169.254/").string(5, "tok");
    let mut conf = Writer::new();
    conf.message(2, &cfg);
    let mut msg = message("m-1", "ctx-1", "t-1");
    msg.string(8, "ref-1");
    let mut req = Writer::new();
    req.string(1, "tenant").message(2, &msg).message(3, &conf);
    let r = read_request(Method::SendMessage, Dialect::V10, req.as_bytes()).unwrap();
    assert_eq!(r.ids.message_id.as_deref(), Some("m-1"));
    assert_eq!(r.ids.context_id.as_deref(), Some("ctx-1"));
    assert_eq!(r.ids.task_id.as_deref(), Some("t-1"));
    assert_eq!(r.ids.reference_task_ids, vec!["ref-1".to_string()]);
    assert_eq!(r.push_urls, vec!["http://169.254.169.254/".to_string()]);
    assert!(!r.push_missing);
    // A repeated message field is merged, the last scalar wins (what the agent reads).
    let mut later = Writer::new();
    later.string(2, "ctx-2");
    let mut req2 = Writer::new();
    req2.message(2, &msg).message(2, &later);
    let r = read_request(Method::SendStreamingMessage, Dialect::V10, req2.as_bytes()).unwrap();
    assert_eq!((r.ids.message_id.as_deref(), r.ids.context_id.as_deref()), (Some("m-1"), Some("ctx-2")));
}

#[test]
fn task_methods_and_push_configs_of_both_dialects() {
    let mut get = Writer::new();
    get.string(1, "tenant").string(2, "t-9").uint(3, 5);
    assert_eq!(read_request(Method::GetTask, Dialect::V10, get.as_bytes()).unwrap().ids.task_id.as_deref(), Some("t-9"));
    let mut create = Writer::new();
    create.string(2, "cfg").string(3, "t-9").string(4, "http://127.0.0.1/");
    let r = read_request(Method::CreateTaskPushNotificationConfig, Dialect::V10, create.as_bytes()).unwrap();
    assert_eq!((r.ids.task_id.as_deref(), r.push_urls.clone()), (Some("t-9"), vec!["http://127.0.0.1/".to_string()]));
    let mut nourl = Writer::new();
    nourl.string(3, "t-9");
    assert!(read_request(Method::CreateTaskPushNotificationConfig, Dialect::V10, nourl.as_bytes()).unwrap().push_missing);
    let mut list = Writer::new();
    list.string(1, "t-8").string(4, "tenant");
    assert_eq!(read_request(Method::ListTaskPushNotificationConfigs, Dialect::V10, list.as_bytes()).unwrap().ids.task_id.as_deref(), Some("t-8"));
    let mut lt = Writer::new();
    lt.string(2, "ctx-3");
    assert_eq!(read_request(Method::ListTasks, Dialect::V10, lt.as_bytes()).unwrap().ids.context_id.as_deref(), Some("ctx-3"));
    // 0.3: resource names, and the push config nested twice.
    let mut name = Writer::new();
    name.string(1, "tasks/t-7");
    assert_eq!(read_request(Method::GetTask, Dialect::V03, name.as_bytes()).unwrap().ids.task_id.as_deref(), Some("t-7"));
    let mut pn = Writer::new();
    pn.string(1, "id").string(2, "http://[::1]/");
    let mut tpn = Writer::new();
    tpn.string(1, "tasks/t-7/pushNotificationConfigs/id").message(2, &pn);
    let mut c03 = Writer::new();
    c03.string(1, "tasks/t-7").string(2, "id").message(3, &tpn);
    let r = read_request(Method::CreateTaskPushNotificationConfig, Dialect::V03, c03.as_bytes()).unwrap();
    assert_eq!((r.ids.task_id.as_deref(), r.push_urls.clone()), (Some("t-7"), vec!["http://[::1]/".to_string()]));
    let mut conf03 = Writer::new();
    conf03.message(2, &pn);
    let mut s03 = Writer::new();
    s03.message(1, &message("m", "c", "")).message(2, &conf03);
    let r = read_request(Method::SendMessage, Dialect::V03, s03.as_bytes()).unwrap();
    assert_eq!((r.ids.context_id.as_deref(), r.push_urls.len()), (Some("c"), 1));
}

#[test]
fn malformed_messages_and_non_utf8_strings_are_refused() {
    assert_eq!(read_request(Method::GetTask, Dialect::V10, &[0x12, 0x05, b'a']), Err(Malformed));
    assert_eq!(read_request(Method::GetTask, Dialect::V10, &[0x12, 0x01, 0xff]), Err(Malformed));
    // A message field sent as a varint.
    assert_eq!(read_request(Method::SendMessage, Dialect::V10, &[0x10, 0x01]), Err(Malformed));
}

#[test]
fn responses_are_read_frame_by_frame_across_chunks() {
    let mut status = Writer::new();
    status.uint(1, 2);
    let mut task = Writer::new();
    task.string(1, "t-1").string(2, "ctx-1").message(3, &status);
    let mut first = Writer::new();
    first.message(1, &task);
    let mut done = Writer::new();
    done.uint(1, 3);
    let mut update = Writer::new();
    update.string(1, "t-1").string(2, "ctx-1").message(3, &done);
    let mut second = Writer::new();
    second.message(3, &update);
    // An artifact update between them: its field 3 is the artifact, not a status.
    let mut artifact = Writer::new();
    artifact.string(1, "artifact-1").string(3, "name");
    let mut art_update = Writer::new();
    art_update.string(1, "t-1").string(2, "ctx-1").message(3, &artifact);
    let mut middle = Writer::new();
    middle.message(4, &art_update);
    let mut body = frame(first.as_bytes());
    body.extend(frame(middle.as_bytes()));
    body.extend(frame(second.as_bytes()));
    for cut in 0..body.len() {
        let mut tracker = ResponseTracker::external(true);
        let mut reader = ResponseReader::new(Method::SendStreamingMessage, 1024);
        let (a, b) = body.split_at(cut);
        reader.feed(a, &mut tracker);
        reader.feed(b, &mut tracker);
        assert!(!reader.gave_up);
        assert_eq!(tracker.events, 3, "cut at {cut}");
        assert_eq!(tracker.ids.task_id.as_deref(), Some("t-1"));
        assert_eq!(tracker.ids.context_id.as_deref(), Some("ctx-1"));
        assert_eq!(tracker.ids.state.as_deref(), Some("completed"));
    }
    // Too large, or compressed: reading stops (the stream is not touched).
    let mut tracker = ResponseTracker::external(true);
    let mut reader = ResponseReader::new(Method::SendStreamingMessage, 4);
    reader.feed(&body, &mut tracker);
    assert!(reader.gave_up && tracker.events == 0);
    let mut compressed = body.clone();
    compressed[0] = 1;
    let mut reader = ResponseReader::new(Method::SendStreamingMessage, 1024);
    reader.feed(&compressed, &mut tracker);
    assert!(reader.gave_up);
}

#[test]
fn refusals_map_to_grpc_status_codes() {
    use crate::chain::Violation;
    assert_eq!(status_code(Refusal::Forbidden), 7);
    assert_eq!(status_code(Refusal::NotOriginator), 7);
    assert_eq!(status_code(Refusal::Unauthenticated), 16);
    assert_eq!(status_code(Refusal::Invalid), 3);
    assert_eq!(status_code(Refusal::PushUrl), 3);
    assert_eq!(status_code(Refusal::TooLarge), 8);
    assert_eq!(status_code(Refusal::TaskNotFound), 5);
    assert_eq!(status_code(Refusal::Delegation(Violation::Loop)), 10);
    assert_eq!(status_code(Refusal::Delegation(Violation::MaxDepth)), 9);
    assert_eq!(status_code(Refusal::Unfilterable), 13);
    assert!(status_message(Refusal::Forbidden).starts_with("A2A_FORBIDDEN: "));
}
