//! LLM token accounting (filters/llm/src/usage.rs) for every client API and framing (JSON,
//! SSE, streamed JSON array). Asserts:
//! - the report does not depend on how the body is cut into chunks, and asking twice gives
//!   the same answer; at most one chunk is "the first content";
//! - nothing held exceeds the event limit;
//! - JSON bodies, differential against an independent reading (tollgate-fuzz `J`) of the
//!   API's top-level usage member (`usage`, Gemini `usageMetadata`) in documents without a
//!   repeated key: the tokens are exactly the provider's counts mapped as the module table
//!   says (e.g. Anthropic input = input + cache read + cache creation), or, when the usage
//!   member is absent or not readable as counts, the report is an estimate;
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{chunks, Input, J};
use tollgate_llm::api::ClientApi;
use tollgate_llm::usage::{Framing, Tokens, UsageReport, UsageTracker};

const APIS: [ClientApi; 4] = [ClientApi::OpenaiChat, ClientApi::OpenaiResponses, ClientApi::AnthropicMessages, ClientApi::Gemini];

fn run(api: ClientApi, framing: Framing, pieces: &[&[u8]], max: usize) -> UsageReport {
    let mut t = UsageTracker::new(api, framing, max);
    let mut firsts = 0;
    for p in pieces {
        firsts += usize::from(t.feed(p));
        assert!(t.pending_bytes() <= max.saturating_mul(2) + 64, "holds {} bytes", t.pending_bytes());
    }
    assert!(firsts <= 1, "{firsts} first-content chunks");
    let r = t.report(400, 4);
    assert_eq!(r, t.report(400, 4), "report is not stable");
    r
}

/// `Option<u64>` as serde reads it from a member: absent or null is None; a u64 is it;
/// anything else fails the whole usage object (Err).
fn count(obj: &J, key: &str) -> Result<Option<u64>, ()> {
    match obj.get(key) {
        None | Some(J::Null) => Ok(None),
        Some(J::U(n)) => Ok(Some(*n)),
        Some(_) => Err(()),
    }
}

fn sub(obj: &J, key: &str) -> Result<Option<J>, ()> {
    match obj.get(key) {
        None | Some(J::Null) => Ok(None),
        Some(o @ J::Obj(_)) => Ok(Some(o.clone())),
        Some(_) => Err(()),
    }
}

fn opt(o: &Option<J>, key: &str) -> Result<Option<u64>, ()> {
    match o {
        Some(o) => count(o, key),
        None => Ok(None),
    }
}

/// The tokens the module table gives for a usage object; Err when serde would refuse it.
fn expected(api: ClientApi, u: &J) -> Result<Tokens, ()> {
    let z = |x: Option<u64>| x.unwrap_or(0);
    Ok(match api {
        ClientApi::OpenaiChat => {
            let pd = sub(u, "prompt_tokens_details")?;
            let cd = sub(u, "completion_tokens_details")?;
            let (cached, write) = (opt(&pd, "cached_tokens")?, opt(&pd, "cache_write_tokens")?);
            Tokens {
                input: z(count(u, "prompt_tokens")?),
                output: z(count(u, "completion_tokens")?),
                cached_input: z(cached),
                cache_creation: z(write),
                reasoning: z(opt(&cd, "reasoning_tokens")?),
            }
        }
        ClientApi::OpenaiResponses => {
            let id = sub(u, "input_tokens_details")?;
            let od = sub(u, "output_tokens_details")?;
            let (cached, write) = (opt(&id, "cached_tokens")?, opt(&id, "cache_write_tokens")?);
            Tokens {
                input: z(count(u, "input_tokens")?),
                output: z(count(u, "output_tokens")?),
                cached_input: z(cached),
                cache_creation: z(write),
                reasoning: z(opt(&od, "reasoning_tokens")?),
            }
        }
        ClientApi::AnthropicMessages => {
            let read = z(count(u, "cache_read_input_tokens")?);
            let creation = z(count(u, "cache_creation_input_tokens")?);
            Tokens {
                input: z(count(u, "input_tokens")?).saturating_add(read).saturating_add(creation),
                output: z(count(u, "output_tokens")?),
                cached_input: read,
                cache_creation: creation,
                reasoning: 0,
            }
        }
        ClientApi::OpenaiEmbeddings => Tokens { input: z(count(u, "prompt_tokens")?), ..Tokens::default() },
        ClientApi::Gemini => {
            let thoughts = z(count(u, "thoughtsTokenCount")?);
            Tokens {
                input: z(count(u, "promptTokenCount")?).saturating_add(z(count(u, "toolUsePromptTokenCount")?)),
                output: z(count(u, "candidatesTokenCount")?).saturating_add(thoughts),
                cached_input: z(count(u, "cachedContentTokenCount")?),
                cache_creation: 0,
                reasoning: thoughts,
            }
        }
    })
}

fn usage_key(api: ClientApi) -> &'static str {
    if api == ClientApi::Gemini {
        "usageMetadata"
    } else {
        "usage"
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let split = input.byte();
    let body = input.rest();
    let api = if flags & 0x20 != 0 { ClientApi::OpenaiEmbeddings } else { APIS[usize::from(flags & 3)] };
    let framing = [Framing::Json, Framing::Sse, Framing::JsonArray, Framing::Sse][usize::from((flags >> 2) & 3)];
    let max = if flags & 0x10 != 0 { 64 } else { 1 << 16 };

    let whole = run(api, framing, &[body], max);
    let pieces = chunks(body, split);
    assert_eq!(run(api, framing, &pieces, max), whole, "chunking changed the report");

    if framing != Framing::Json || max < (1 << 16) {
        return;
    }
    let Some(doc) = J::parse(body) else { return };
    let J::Obj(members) = &doc else { return };
    if doc.has_duplicates() {
        return;
    }
    // The byte scanner matches keys as written, without decoding escapes (documented in
    // `TopLevelCapture::feed`): bodies with an escaped top-level key are left out.
    let _ = members;
    if tollgate_fuzz::top_level_key_escaped(body) != Some(false) {
        return;
    }
    match doc.get(usage_key(api)) {
        Some(u @ J::Obj(_)) => match expected(api, u) {
            Ok(tokens) => assert_eq!(whole, UsageReport { tokens, estimated: false, reported: true }, "usage {u:?}"),
            Err(()) => assert!(!whole.reported, "an unreadable usage object was reported: {whole:?}"),
        },
        None | Some(J::Null) | Some(J::Bool(_)) | Some(J::Str(_)) | Some(J::U(_)) | Some(J::I(_)) | Some(J::F(_)) => {
            assert!(!whole.reported && whole.estimated, "usage reported without a usage object: {whole:?}")
        }
        Some(J::Arr(_)) => {} // serde reads a struct from an array too: not modelled
    }
});
