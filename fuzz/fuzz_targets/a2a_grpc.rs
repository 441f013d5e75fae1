//! The A2A gRPC binding's readers (filters/a2a/src/grpc.rs): gRPC frames and the protobuf
//! fields of requests and answers, from any bytes. Asserts:
//! - nothing panics (paths, frames, every method in both dialects, answers);
//! - reading an answer is independent of how it is cut into chunks (the ids and state found
//!   by one feed equal those found by two, at any cut);
//! - a request message found by `single_message` is the body's only frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_a2a::classify::{Dialect, Method};
use tollgate_a2a::grpc::{classify_path, read_request, read_response, single_message, ResponseReader};
use tollgate_a2a::session::ResponseTracker;
use tollgate_fuzz::Input;

const METHODS: [Method; 11] = [
    Method::SendMessage,
    Method::SendStreamingMessage,
    Method::GetTask,
    Method::ListTasks,
    Method::CancelTask,
    Method::SubscribeToTask,
    Method::CreateTaskPushNotificationConfig,
    Method::GetTaskPushNotificationConfig,
    Method::ListTaskPushNotificationConfigs,
    Method::DeleteTaskPushNotificationConfig,
    Method::GetExtendedAgentCard,
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.byte();
    let cut = input.byte() as usize;
    let path = String::from_utf8_lossy(input.part()).into_owned();
    let body = input.rest();
    let _ = classify_path(&path);
    let method = METHODS[selector as usize % METHODS.len()];
    let dialect = if selector & 0x80 != 0 { Dialect::V03 } else { Dialect::V10 };
    if let Ok(message) = single_message(body) {
        assert_eq!(message.len() + 5, body.len(), "one frame is the whole body");
        let _ = read_request(method, dialect, message);
    }
    let _ = read_request(method, dialect, body);
    let _ = read_response(method, body);

    let mut whole = ResponseTracker::external(true);
    let mut reader = ResponseReader::new(method, 1 << 16);
    reader.feed(body, &mut whole);
    let mut split = ResponseTracker::external(true);
    let mut reader2 = ResponseReader::new(method, 1 << 16);
    let at = cut.min(body.len());
    reader2.feed(&body[..at], &mut split);
    reader2.feed(&body[at..], &mut split);
    assert_eq!(whole.ids, split.ids, "chunking changed what was read");
    assert_eq!(whole.events, split.events);
    assert_eq!(reader.gave_up, reader2.gave_up);
});
