//! A whole POST body read into MCP messages, pure: the JSON-RPC checks that come before any
//! policy (duplicate keys, batches per revision, duplicate request ids in a batch, each
//! message as MCP has it). What fails is refused whole, with the local reply to send.

use crate::listfilter::id_key;
use crate::message::{self, codes, read_message_at, read_parsed_message_at, Message, ObjectParams, Revision};
use crate::replies::{self, Reply};
use std::collections::HashSet;
use tollgate_core::wire::jsonrpc::{parse_body_unique, parse_body_unique_as, Body, BodyError, Kind};

/// A body read: its messages, in order.
#[derive(Debug)]
pub struct Read<'a> {
    pub messages: Vec<Message<'a>>,
    /// A JSON-RPC batch (an array), even of one message.
    pub batch: bool,
}

/// A body refused before any policy: the local reply, and the audit `error`.
#[derive(Debug)]
pub struct Refusal {
    pub reply: Reply,
    pub error: String,
}

impl Refusal {
    /// 400, -32600 (Invalid Request) with `message`, also the audit error.
    fn invalid(message: String) -> Refusal {
        Refusal { reply: replies::refusal(400, None, codes::INVALID_REQUEST, &message), error: message }
    }
}

/// Reads `bytes` as MCP messages of `revision`. `unsupported_revision`: the revision the
/// client asked for is unknown, and the body is read only for the request's id (a
/// notification, a response or a batch: `null`); nothing of it is judged or forwarded.
pub fn read<'a>(bytes: &'a [u8], revision: Revision, unsupported_revision: Option<&str>) -> Result<Read<'a>, Refusal> {
    // Duplicate keys anywhere are refused: parsers keep different duplicates, so the
    // policy and the upstream could read different values. Params are read in the same
    // pass; a body that pass cannot read (not JSON-RPC, params not an object or not as
    // MCP has them) is read again with raw params, which gives the usual answers.
    let body = match parse_body_unique_as::<ObjectParams<'_>>(bytes) {
        Ok(b) => Ok(b),
        Err(_) => match parse_body_unique(bytes) {
            Ok(b) => Err(b),
            Err(BodyError::Rpc(e)) => {
                let reply = replies::refusal(400, None, e.code(), &rpc_message(e.code(), e.message()));
                return Err(Refusal { reply, error: e.message().to_string() });
            }
            Err(BodyError::Ambiguous(e)) => {
                let reply = replies::refusal(400, None, codes::INVALID_REQUEST, &format!("Invalid Request: {e}"));
                return Err(Refusal { reply, error: e });
            }
        },
    };
    let batch = matches!(body, Ok(Body::Batch(_)) | Err(Body::Batch(_)));
    if let Some(requested) = unsupported_revision {
        let single = match &body {
            Ok(Body::Single(e)) => e.kind().ok().filter(|k| *k == Kind::Request).and(e.id),
            Err(Body::Single(e)) => e.kind().ok().filter(|k| *k == Kind::Request).and(e.id),
            _ => None,
        };
        let reply = replies::unsupported_revision(single, requested);
        return Err(Refusal { reply, error: format!("unsupported MCP-Protocol-Version `{requested}`") });
    }
    if batch && !revision.allows_batches() {
        return Err(Refusal::invalid(format!("JSON-RPC batches are not supported in MCP {}", revision.as_str())));
    }
    let mut messages = Vec::new();
    let unreadable = |id, refusal: message::Invalid| Refusal {
        reply: replies::refusal(400, id, refusal.code, &refusal.message),
        error: refusal.message,
    };
    match body {
        Ok(parsed) => {
            messages.reserve_exact(parsed.messages().len());
            for envelope in parsed.into_messages() {
                let id = envelope.id;
                messages.push(read_parsed_message_at(envelope, revision).map_err(|r| unreadable(id, r))?);
            }
        }
        Err(raw) => {
            messages.reserve_exact(raw.messages().len());
            for envelope in raw.messages() {
                messages.push(read_message_at(envelope, revision).map_err(|r| unreadable(envelope.id, r))?);
            }
        }
    }
    if batch {
        // Responses are matched to requests by id: two requests of one batch with the
        // same id (or ids a server may take for the same: `1`, `1.0`, `1e0`) would let
        // a list result pass as the answer to another request.
        let mut ids = HashSet::with_capacity(messages.len());
        for m in &messages {
            if let (Kind::Request, Some(id)) = (m.kind, m.id) {
                if !ids.insert(id_key(id)) {
                    let truncated = message::truncate(id.get(), 64);
                    return Err(Refusal::invalid(format!("Invalid Request: duplicate request id {truncated} in batch")));
                }
            }
        }
    }
    Ok(Read { messages, batch })
}

fn rpc_message(code: i64, detail: &str) -> String {
    let base = if code == codes::PARSE_ERROR { "Parse error" } else { "Invalid Request" };
    format!("{base}: {}", message::truncate(detail, 256))
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
