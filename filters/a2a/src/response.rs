//! The two answers the filter holds instead of streaming: agent cards (rewritten to the
//! gateway's public URLs) and `ListTasks` answers under `allow_originator` (cut down to the
//! acting identity's tasks; what cannot be filtered is replaced, never passed). Everything
//! else streams through the exchange untouched.

use crate::card::{self, Mapping};
use crate::config::{CardsConfig, State};
use crate::conversations;
use crate::head;
use crate::listing;
use tollgate_core::stream::Step;
use tollgate_core::host::{BodyBuffer, HeaderMap, Host, HostExt, LogLevel};

/// The response headers the filter reads.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: Option<u32>,
    /// Lower-cased.
    pub content_type: String,
    /// A `content-encoding` other than `identity`.
    pub encoded: bool,
    pub content_length: Option<usize>,
}

impl ResponseHead {
    pub fn read(host: &dyn Host) -> ResponseHead {
        ResponseHead {
            status: host.response_header(":status").and_then(|s| s.parse().ok()),
            content_type: host.response_header("content-type").unwrap_or_default().to_ascii_lowercase(),
            encoded: host.response_header("content-encoding").is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")),
            content_length: host.response_header("content-length").and_then(|l| l.trim().parse::<usize>().ok()),
        }
    }
    pub fn is_json(&self) -> bool {
        self.content_type.contains("json")
    }
}

#[derive(Debug, Default)]
pub struct CardState {
    /// Rewriting is under way (response held).
    pub buffering: bool,
    /// The card is a JSON-RPC result (extended card), not the whole body.
    pub in_result: bool,
    pub public_base: Option<String>,
    pub public_prefix: String,
    pub upstream_prefix: String,
    /// Outcome for the audit record: rewritten, unchanged, signed_kept, signatures_removed,
    /// too_large, encoded, not_json, no_public_base, error.
    pub result: Option<&'static str>,
    pub urls_rewritten: u32,
}

impl CardState {
    pub fn with_prefix(public_prefix: String, in_result: bool) -> Self {
        CardState { public_prefix, in_result, ..CardState::default() }
    }

    /// Where the rewritten URLs point: the gateway's public base, the route's public prefix
    /// (metadata, else derived from the path) and the prefix the route rewrites to.
    pub fn prepare(&mut self, host: &dyn Host, state: &State) {
        let public_prefix = head::route_metadata(host, state, &state.routes.public_prefix_key);
        let upstream_prefix = head::route_metadata(host, state, &state.routes.upstream_prefix_key);
        let xfp = if state.cards.trust_forwarded_proto { host.request_header("x-forwarded-proto") } else { None };
        self.public_base = card::public_base(
            state.cards.public_base_url.as_deref(),
            xfp.as_deref(),
            host.request_header(":scheme").as_deref(),
            host.request_header(":authority").as_deref(),
        );
        if let Some(p) = public_prefix {
            self.public_prefix = p;
        }
        self.public_prefix = card::normalize_prefix(&self.public_prefix);
        self.upstream_prefix = card::normalize_prefix(upstream_prefix.as_deref().unwrap_or("/"));
    }

    /// Whether the card's answer is held to be rewritten (else `result` says why not).
    pub fn hold(&mut self, head: &ResponseHead, cards: &CardsConfig, end_of_stream: bool) -> bool {
        self.result = if !cards.rewrite || head.status != Some(200) || end_of_stream {
            Some("unchanged")
        } else if !head.is_json() {
            Some("not_json")
        } else if head.encoded {
            Some("encoded")
        } else if self.public_base.is_none() {
            Some("no_public_base")
        } else if head.content_length.is_some_and(|l| l > cards.max_bytes) {
            Some("too_large")
        } else {
            self.buffering = true;
            return true;
        };
        false
    }

    /// Holds the card until complete (up to `cards.max_bytes`), then rewrites its URLs.
    pub fn body(&mut self, host: &dyn Host, cards: &CardsConfig, body_size: usize, end_of_stream: bool) -> Step {
        if body_size > cards.max_bytes {
            self.buffering = false;
            self.result = Some("too_large");
            return Step::Continue;
        }
        if !end_of_stream {
            return Step::Pause;
        }
        self.buffering = false;
        let body = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
        let Some(base) = self.public_base.as_deref() else { return Step::Continue };
        let mapping = Mapping { public_base: base, public_prefix: &self.public_prefix, upstream_prefix: &self.upstream_prefix };
        match card::rewrite_body(&body, &mapping, cards.signed, self.in_result) {
            Ok((new_body, outcome)) => {
                self.urls_rewritten = outcome.urls_rewritten;
                self.result = Some(if outcome.signed && !outcome.signatures_removed {
                    "signed_kept"
                } else if outcome.signatures_removed {
                    "signatures_removed"
                } else if new_body.is_some() {
                    "rewritten"
                } else {
                    "unchanged"
                });
                if let Some(new_body) = new_body {
                    match host.set_body(BodyBuffer::Response, 0, body_size, &new_body) {
                        Ok(()) => host.try_set_header(HeaderMap::Response, "content-length", Some(&new_body.len().to_string())),
                        Err(e) => {
                            host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot replace card body: {e}"));
                            self.result = Some("error");
                        }
                    }
                }
            }
            Err(e) => {
                host.log(LogLevel::Info, &format!("tollgate-a2a: card not rewritten (not JSON: {e})"));
                self.result = Some("not_json");
            }
        }
        Step::Continue
    }
}

/// Where a `ListTasks` answer being cut down to the acting identity's own tasks stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListPhase {
    /// Not held (an error answer, or not yet answered).
    #[default]
    Passing,
    /// Held until complete.
    Holding,
    /// Held, but it cannot be filtered (found from its headers): replaced at its first bytes.
    Unfilterable(&'static str),
    /// Filtered and passed on.
    Filtered,
    /// Replaced by an error: whatever else arrives is dropped.
    Replaced,
}

#[derive(Debug, Default)]
pub struct ListState {
    /// The identity whose tasks may be shown (on-behalf-of user, else caller).
    pub owner: String,
    pub phase: ListPhase,
    /// Tasks withheld from the answer (for the audit record).
    pub withheld: Option<u32>,
}

/// What became of a held `ListTasks` answer.
#[derive(Debug)]
pub enum ListOutcome {
    /// Still arriving (held), or already dealt with.
    Step(Step),
    /// Filtered: this is the body as it went out.
    Passed(Vec<u8>),
    /// Cannot be filtered: replace it with an error (the reason is logged).
    Unfilterable,
}

impl ListState {
    pub fn new(owner: String) -> Self {
        ListState { owner, ..ListState::default() }
    }

    pub fn held(&self) -> bool {
        matches!(self.phase, ListPhase::Holding | ListPhase::Unfilterable(_) | ListPhase::Replaced)
    }

    /// Holds a successful answer with a body (errors pass), noting from its headers whether
    /// it can be filtered at all.
    pub fn hold(&mut self, head: &ResponseHead, max: usize, end_of_stream: bool) -> bool {
        if !head.status.is_some_and(|s| (200..300).contains(&s)) || end_of_stream {
            return false;
        }
        self.phase = if !head.is_json() {
            ListPhase::Unfilterable("not JSON")
        } else if head.encoded {
            ListPhase::Unfilterable("content-encoding")
        } else if head.content_length.is_some_and(|l| l > max) {
            ListPhase::Unfilterable("too large")
        } else {
            ListPhase::Holding
        };
        true
    }

    /// A held answer's body: once complete, removes the tasks the owner did not originate at
    /// `target` (the conversation table says who did).
    pub fn body(&mut self, host: &dyn Host, state: &State, target: &str, rest: bool, body_size: usize, end_of_stream: bool) -> ListOutcome {
        let why = match self.phase {
            ListPhase::Replaced => {
                // The error went out in place of the answer: the rest of the answer never does.
                if body_size > 0 {
                    if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, b"") {
                        host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot drop the rest of a task list: {e}"));
                    }
                }
                return ListOutcome::Step(Step::Continue);
            }
            ListPhase::Unfilterable(why) => why,
            _ if body_size > state.limits.max_list_response_bytes => "too large",
            _ if !end_of_stream => return ListOutcome::Step(Step::Pause),
            _ => match self.filter(host, state, target, rest, body_size) {
                Ok(body) => {
                    self.phase = ListPhase::Filtered;
                    return ListOutcome::Passed(body);
                }
                Err(why) => why,
            },
        };
        // Fail closed: the error replaces what arrived; whatever follows is dropped.
        host.log(LogLevel::Info, &format!("tollgate-a2a: task list replaced by an error ({why})"));
        self.phase = ListPhase::Replaced;
        ListOutcome::Unfilterable
    }

    fn filter(&mut self, host: &dyn Host, state: &State, target: &str, rest: bool, body_size: usize) -> Result<Vec<u8>, &'static str> {
        let body = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
        let owner = self.owner.as_str();
        let owns = |id: &str| {
            let key = conversations::task_key(target, id);
            conversations::lookup(host, &state.table, &key, |e| crate::authz::originator_allows(owner, e.orig.as_deref())).unwrap_or(false)
        };
        let filtered = listing::filter_task_list(&body, rest, owns).map_err(|e| {
            host.log(LogLevel::Info, &format!("tollgate-a2a: task list not filterable: {e}"));
            "not readable"
        })?;
        let body = match filtered.body {
            None => body,
            Some(new_body) => match host.set_body(BodyBuffer::Response, 0, body_size, &new_body) {
                Ok(()) => {
                    host.try_set_header(HeaderMap::Response, "content-length", Some(&new_body.len().to_string()));
                    new_body
                }
                Err(e) => {
                    host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot replace a task list: {e}"));
                    return Err("cannot replace the body");
                }
            },
        };
        self.withheld = Some(filtered.withheld);
        Ok(body)
    }
}

/// Replaces a response (body so far and headers) with the gateway's error `body`.
pub fn replace_response(host: &dyn Host, status: u32, body: &[u8], body_size: usize) {
    if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, body) {
        host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot replace a task list: {e}"));
    }
    host.try_set_header(HeaderMap::Response, ":status", Some(&status.to_string()));
    host.try_set_header(HeaderMap::Response, "content-type", Some("application/json"));
    host.try_set_header(HeaderMap::Response, "content-encoding", None);
    host.try_set_header(HeaderMap::Response, "content-length", Some(&body.len().to_string()));
}
