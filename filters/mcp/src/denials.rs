//! Denials of what the caller can see (issue 21 item 6), pure.
//!
//! `hide` answers a denied request as a server answers for what does not exist (`Unknown
//! tool: X`). That is right for a tool the caller's lists do not show, and wrong for one they
//! do: an argument-conditional allow rule lists `query_db` to alice, so when her call is
//! refused for its arguments, "Unknown tool: query_db" reads as a typo of a tool she just
//! saw. So a denied `tools/call`, `prompts/get` or `resources/read` (or `resources/subscribe`
//! / `unsubscribe` before 2026-07-28) whose target the caller's lists show (per
//! [`Policy::visible`], as `tools/list` etc. judge items) is answered as a refusal, not as a
//! missing thing:
//!
//! - HTTP 403, JSON-RPC `-31403` (the filter's application code for a policy denial), as an
//!   approval refusal answers a listed tool in `hide` style;
//! - `Not allowed: tools/call query_db with these arguments` (`prompts/get` likewise: a listed
//!   tool or prompt is refused only by an argument condition); other methods name the method
//!   and target: `Not allowed: resources/read file:///data/x`;
//! - `data: {"reason": "denied by policy"}`: no rule id, no condition (that is `explain`'s).
//!
//! What the lists do not show keeps the hidden answer: no rule allows the caller the target,
//! or a deny rule without argument conditions covers it, or tool pinning hid a changed
//! definition (`changed_tool: hide`), or the name is not routable behind `mcp_router`.

use crate::listfilter::ListKind;
use crate::message::{codes, Target};
use crate::policy::{Policy, Subject};
use serde::Serialize;
use serde_json::value::RawValue;
use tollgate_core::reply::rpc_error_body;

/// The HTTP status of a denial of a shown target (one message; a batch keeps 200).
pub const STATUS: u32 = 403;

/// `data.reason` of the answer: the policy refused it; which rule is not told in `hide` style.
pub const REASON: &str = "denied by policy";

/// The list a target would be shown in, as the method its items are judged for.
fn use_method(target: &Target<'_>) -> Option<&'static str> {
    Some(
        match target {
            Target::Tool(_) => ListKind::Tools,
            Target::Prompt(_) => ListKind::Prompts,
            Target::Resource(_) => ListKind::Resources,
            Target::None => return None,
        }
        .use_method(),
    )
}

/// Whether the caller's lists show `target` (judged as its list judges items: with unknown
/// arguments). A method without a target is never "shown": its denial stays `Method not found`.
pub fn shown(policy: &Policy, subject: Subject<'_>, target: &Target<'_>) -> bool {
    use_method(target).is_some_and(|method| policy.visible(subject, method, target).allowed())
}

#[derive(Serialize)]
struct Data {
    reason: &'static str,
}

/// The error of a denied request whose target the caller can see: `-31403`, `Not allowed: …`.
pub fn not_allowed(id: Option<&RawValue>, method: &str, target: &Target<'_>) -> Vec<u8> {
    let message = match (target.name(), method) {
        (Some(name), "tools/call" | "prompts/get") => format!("Not allowed: {method} {name} with these arguments"),
        (Some(name), _) => format!("Not allowed: {method} {name}"),
        (None, _) => format!("Not allowed: {method}"),
    };
    rpc_error_body(id, codes::FORBIDDEN, &message, Some(Data { reason: REASON }))
}

#[cfg(test)]
#[path = "denials_tests.rs"]
mod tests;
