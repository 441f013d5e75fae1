//! Tool-definition pinning against tool poisoning and rug pulls (issue 18 item 5), and calls
//! of tools never listed to the caller.
//!
//! Per server, each tool's definition is pinned as the SHA-256 of its canonical JSON: the
//! object of its `name`, `description`, `inputSchema` and `annotations` members (those
//! present), keys sorted by UTF-8 bytes, no whitespace, numbers as written — what
//! `json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes for
//! ordinary values. Pins come from `tool_pinning.pins` or, for tools without one, from the
//! first definition this Envoy sees (trust on first use, in shared data: per Envoy).
//!
//! A `tools/list` answer (JSON or each SSE event) is reviewed after the policy filtered it:
//! a tool whose definition differs from its pin is, per `changed_tool`, removed from the list
//! (`hide`), listed but refused when called (`deny`), or passed (`log`); every change is
//! recorded with both digests. The tools the client was shown are remembered per principal
//! and server (hashed, bounded); with `require_listed`, a `tools/call` of a tool the caller
//! was never shown on that server is refused as an unknown tool.

use crate::judge::{Judgement, Ruling};
use crate::listfilter::{filter_list, ListKind, ServerMessage};
use crate::message::{self, codes, Message, Revision, Target};
use crate::policy::Subject;
use crate::replies::Reply;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tollgate_core::config::ConfigError;
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::Host;
use tollgate_core::observe::audit::Decision;
use tollgate_core::reply::rpc_error_body;
use tollgate_core::shared_data::table::{Put, SharedTable};
use tollgate_core::wire::jsonrpc::Kind;

/// The rule id and audit reasons of pinning's refusals.
pub const RULE_ID: &str = "tool_pinning";
pub const TOOL_CHANGED: &str = "tool_changed";
pub const NEVER_LISTED: &str = "tool_never_listed";

/// Bytes of a tool name's hash in the listed set.
const NAME_HASH_BYTES: usize = 8;
/// Most tool names remembered per principal and server (a longer listing keeps its last ones).
pub const MAX_LISTED: usize = tollgate_core::shared_data::table::MAX_VALUE_BYTES / NAME_HASH_BYTES;
/// Trust-on-first-use pins live this long after their last write (ten years: as long as the VM).
const PIN_TTL_SECS: u64 = 315_360_000;

/// What happens to a tool whose definition differs from its pin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedTool {
    /// Removed from `tools/list`; a call of it is answered as for a hidden tool.
    #[default]
    Hide,
    /// Listed, but a call of it is refused with an error naming the changed definition.
    Deny,
    /// Passed; recorded and counted.
    Log,
}

impl ChangedTool {
    /// The metric label.
    pub fn label(self) -> &'static str {
        self.as_str()
    }

    fn as_str(self) -> &'static str {
        match self {
            ChangedTool::Hide => "hide",
            ChangedTool::Deny => "deny",
            ChangedTool::Log => "log",
        }
    }
}

/// `tool_pinning:` in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPinningConfig {
    /// `server -> tool -> SHA-256` (64 hex digits) of the tool's canonical definition. A
    /// configured pin holds from the first list and on every Envoy; tools without one are
    /// pinned on first sight, per Envoy.
    #[serde(default)]
    pub pins: BTreeMap<String, BTreeMap<String, String>>,
    /// `hide` (default), `deny` or `log`.
    #[serde(default)]
    pub changed_tool: ChangedTool,
    /// Refuse a `tools/call` of a tool never listed to the caller on that server (default true).
    #[serde(default = "yes")]
    pub require_listed: bool,
    /// How long a listing lets the caller call the tools it showed (seconds, default 86400).
    #[serde(default = "default_listed_ttl")]
    pub listed_ttl_secs: u64,
    /// Entries of each shared-data table: first-sight pins, and listed tools per principal and
    /// server (default 4096).
    #[serde(default = "default_capacity")]
    pub capacity: u32,
}

fn yes() -> bool {
    true
}
fn default_listed_ttl() -> u64 {
    86_400
}
fn default_capacity() -> u32 {
    4096
}

/// The compiled pinning.
#[derive(Debug)]
pub struct Pinning {
    pins: BTreeMap<String, BTreeMap<String, String>>,
    pub changed_tool: ChangedTool,
    require_listed: bool,
    /// `sha256(server, tool)` -> pinned digest ‖ last digest seen (hex).
    seen: SharedTable,
    /// `sha256(principal, server)` -> name hashes of the tools listed.
    listed: SharedTable,
}

impl Pinning {
    pub fn compile(config: &ToolPinningConfig, field: &str) -> Result<Pinning, ConfigError> {
        let mut pins = BTreeMap::new();
        for (server, tools) in &config.pins {
            let mut compiled = BTreeMap::new();
            for (tool, digest) in tools {
                let d = digest.trim().to_ascii_lowercase();
                if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConfigError::field(
                        &format!("{field}.pins.{server}.{tool}"),
                        "must be a SHA-256 digest: 64 hex digits",
                    ));
                }
                compiled.insert(tool.clone(), d);
            }
            pins.insert(server.clone(), compiled);
        }
        if config.listed_ttl_secs == 0 {
            return Err(ConfigError::field(&format!("{field}.listed_ttl_secs"), "must be greater than 0"));
        }
        if config.capacity == 0 {
            return Err(ConfigError::field(&format!("{field}.capacity"), "must be greater than 0"));
        }
        Ok(Pinning {
            pins,
            changed_tool: config.changed_tool,
            require_listed: config.require_listed,
            seen: SharedTable::new("tollgate.mcp.pin", config.capacity, PIN_TTL_SECS),
            listed: SharedTable::new("tollgate.mcp.listed", config.capacity, config.listed_ttl_secs),
        })
    }

    fn configured(&self, server: &str, tool: &str) -> Option<&str> {
        self.pins.get(server).and_then(|t| t.get(tool)).map(String::as_str)
    }
}

// ----- pure: digests, comparisons, listed sets ---------------------------------------------

/// A tool's name and the SHA-256 (hex) of its canonical definition; `None` when the item is
/// not an object with a string `name`.
pub fn tool_digest(item: &str) -> Option<(String, String)> {
    let crate::args::Json::Object(members) = crate::args::parse_literal(item).ok()? else { return None };
    let name = members.iter().find(|(k, _)| k == "name").and_then(|(_, v)| v.as_str())?.to_string();
    let kept = members
        .into_iter()
        .filter(|(k, _)| matches!(k.as_ref(), "name" | "description" | "inputSchema" | "annotations"))
        .collect();
    let mut canonical = Vec::with_capacity(item.len());
    crate::args::Json::Object(kept).write_canonical(&mut canonical);
    Some((name, sha256_hex(&canonical)))
}

/// What a definition is against its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Against {
    /// Equal to its pin (or the first sight, now its pin).
    Pinned,
    /// Differs from the pin (hex).
    Changed { pinned: String },
    /// Its pin or the definition last seen could not be stored: the table's slots for it
    /// all hold other live pins (or shared data failed). Not shown: a tool the gateway
    /// cannot keep track of could change unnoticed.
    Unpinnable,
}

pub fn compare(pinned: &str, current: &str) -> Against {
    if pinned == current {
        Against::Pinned
    } else {
        Against::Changed { pinned: pinned.to_string() }
    }
}

/// One changed definition, as the audit record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinNote {
    pub tool: String,
    pub pinned_sha256: String,
    pub sha256: String,
    /// What was done: `hide`, `deny`, `log`.
    pub action: &'static str,
}

fn name_hash(name: &str) -> [u8; NAME_HASH_BYTES] {
    let digest = tollgate_core::hash::sha256(name.as_bytes());
    let mut out = [0u8; NAME_HASH_BYTES];
    for (o, d) in out.iter_mut().zip(digest) {
        *o = d;
    }
    out
}

/// `existing` (a stored set) with `names` added; the oldest dropped past [`MAX_LISTED`].
pub fn merge_listed(existing: &[u8], names: &[&str]) -> Vec<u8> {
    let mut set: Vec<[u8; NAME_HASH_BYTES]> = existing
        .chunks_exact(NAME_HASH_BYTES)
        .filter_map(|c| <[u8; NAME_HASH_BYTES]>::try_from(c).ok())
        .collect();
    for name in names {
        let h = name_hash(name);
        set.retain(|x| *x != h);
        set.push(h);
    }
    let skip = set.len().saturating_sub(MAX_LISTED);
    set.into_iter().skip(skip).flatten().collect()
}

pub fn is_listed(set: &[u8], name: &str) -> bool {
    let h = name_hash(name);
    set.chunks_exact(NAME_HASH_BYTES).any(|c| c == h)
}

fn seen_key(server: &str, tool: &str) -> String {
    let mut framed = Vec::with_capacity(server.len() + tool.len() + 8);
    framed.extend_from_slice(&(server.len() as u64).to_be_bytes());
    framed.extend_from_slice(server.as_bytes());
    framed.extend_from_slice(tool.as_bytes());
    sha256_hex(&framed)
}

fn listed_key(subject: Subject<'_>) -> String {
    let mut framed = Vec::with_capacity(64);
    match subject.identity {
        Some(i) => {
            framed.push(1);
            framed.extend_from_slice(&(i.principal.len() as u64).to_be_bytes());
            framed.extend_from_slice(i.principal.as_bytes());
        }
        None => framed.push(0),
    }
    framed.extend_from_slice(subject.server.as_bytes());
    sha256_hex(&framed)
}

// ----- effects: shared data ----------------------------------------------------------------

impl Pinning {
    /// The pin of a tool and the last definition seen (hex), from config or shared data.
    fn stored(&self, host: &dyn Host, server: &str, tool: &str) -> Option<(String, String)> {
        let value = self.seen.get(host, &seen_key(server, tool))?;
        let text = String::from_utf8(value).ok()?;
        let (pinned, last) = (text.get(..64)?, text.get(64..128)?);
        Some((pinned.to_string(), last.to_string()))
    }

    /// Judges one listed definition: its pin (configured, stored, or this one on first sight)
    /// and the last definition seen are stored.
    fn review_one(&self, host: &dyn Host, server: &str, tool: &str, digest: &str) -> Against {
        let key = seen_key(server, tool);
        let stored = self.stored(host, server, tool);
        let pinned = match (self.configured(server, tool), &stored) {
            (Some(p), _) => p.to_string(),
            (None, Some((p, _))) => p.clone(),
            (None, None) => {
                // First sight: kept unless another worker pinned it first (then theirs holds).
                // Never written over another tool's live pin: a pin pushed out would let that
                // tool's next definition, changed or not, be learned anew (fail open).
                let value = format!("{digest}{digest}");
                match self.seen.insert_unless(host, &key, value.as_bytes(), |_| true) {
                    Put::Stored => return Against::Pinned,
                    Put::Kept => {}
                    Put::Full | Put::Failed => return Against::Unpinnable,
                }
                match self.stored(host, server, tool) {
                    Some((p, _)) => p,
                    None => return Against::Unpinnable,
                }
            }
        };
        if stored.as_ref().map(|(p, l)| (p.as_str(), l.as_str())) != Some((pinned.as_str(), digest)) {
            // The last definition seen is what a call is judged by (`judge_calls`): a
            // configured pin that finds no slot for it could be called changed and unnoticed.
            let value = format!("{pinned}{digest}");
            if self.seen.insert_unless(host, &key, value.as_bytes(), |_| false) != Put::Stored {
                return Against::Unpinnable;
            }
        }
        compare(&pinned, digest)
    }

    /// Reviews one `tools/list` result message (`text`, after the policy's filtering): the
    /// new text when tools are hidden, how many, and the changed definitions. Remembers the
    /// tools the client is shown. `enforce` false (dry run): nothing is hidden.
    pub fn review_list(&self, host: &dyn Host, subject: Subject<'_>, text: &str, enforce: bool) -> Reviewed {
        let mut out = Reviewed::default();
        let Some(msg) = ServerMessage::parse(text) else { return out };
        let Some(result) = msg.result else { return out };
        #[derive(Deserialize)]
        struct Tools<'a> {
            #[serde(borrow)]
            tools: Vec<&'a RawValue>,
        }
        let tools = match serde_json::from_str::<Tools<'_>>(result.get()) {
            Ok(t) => t,
            // A tools list the gateway cannot review (e.g. `tools` twice) is not passed.
            Err(e) => {
                out.error = Some(format!("tools list not reviewable: {e}"));
                return out;
            }
        };
        let mut verdicts: BTreeMap<String, bool> = BTreeMap::new();
        let mut unreadable = false;
        let mut unpinnable: Vec<String> = Vec::new();
        for item in tools.tools {
            let Some((name, digest)) = tool_digest(item.get()) else {
                // Not a tool the gateway can pin: removed (fail closed).
                unreadable = true;
                continue;
            };
            let shown = match self.review_one(host, subject.server, &name, &digest) {
                Against::Pinned => true,
                Against::Changed { pinned } => {
                    let action = if enforce { self.changed_tool } else { ChangedTool::Log };
                    out.changed.push(PinNote { tool: name.clone(), pinned_sha256: pinned, sha256: digest, action: action.as_str() });
                    action != ChangedTool::Hide
                }
                Against::Unpinnable => {
                    let shown = !enforce || self.changed_tool == ChangedTool::Log;
                    unpinnable.push(name.clone());
                    shown
                }
            };
            // A name listed twice is shown only if every definition of it is.
            let entry = verdicts.entry(name).or_insert(true);
            *entry = *entry && shown;
        }
        let mut keep = |kind: ListKind, target: &Target<'_>| {
            kind != ListKind::Tools || target.name().is_some_and(|n| verdicts.get(n).copied().unwrap_or(false))
        };
        if unreadable || verdicts.values().any(|v| !v) {
            match filter_list(&msg, Some(ListKind::Tools), &mut keep) {
                Ok(Some(rewritten)) => {
                    out.hidden = rewritten.hidden;
                    out.text = Some(rewritten.text);
                }
                Ok(None) => {}
                Err(e) => out.error = Some(e),
            }
        }
        out.unpinnable = unpinnable;
        let shown: Vec<&str> = verdicts.iter().filter(|(_, v)| **v).map(|(k, _)| k.as_str()).collect();
        if !shown.is_empty() {
            let key = listed_key(subject);
            let existing = self.listed.get(host, &key).unwrap_or_default();
            let _ = self.listed.put(host, &key, &merge_listed(&existing, &shown));
        }
        out
    }

    /// Judges the body's `tools/call` requests the policy allowed: a changed definition
    /// (`hide`/`deny`; `log` records) and, with `require_listed`, a tool never listed to the
    /// caller on this server, are refused (the record says why, `rule_id: tool_pinning`).
    /// Returns the explicit reply of a `deny` refusal of a single request, which the caller
    /// sends instead of the hidden-tool answer.
    #[allow(clippy::too_many_arguments)]
    pub fn judge_calls(
        &self,
        host: &dyn Host,
        subject: Subject<'_>,
        messages: &[Message<'_>],
        judgement: &mut Judgement,
        dry_run: bool,
        revision: Revision,
        batch: bool,
    ) -> (Option<Reply>, Vec<&'static str>) {
        let mut explicit = None;
        let mut events = Vec::new();
        let mut listed: Option<Vec<u8>> = None;
        for (i, m) in messages.iter().enumerate() {
            let (Kind::Request, Target::Tool(tool)) = (m.kind, &m.target) else { continue };
            let tool: &str = tool.as_ref();
            let changed = || {
                self.stored(host, subject.server, tool).and_then(|(stored_pin, last)| {
                    let pinned = self.configured(subject.server, tool).map_or(stored_pin, str::to_string);
                    (pinned != last).then_some((pinned, last))
                })
            };
            match judgement.rulings.get_mut(i) {
                Some(Ruling::Pass) => {}
                // Refused by the policy anyway, but shown in lists (`denials.rs`): a changed
                // definition `hide` removes from lists is answered as hidden all the same.
                Some(ruling @ Ruling::DeniedShown { .. }) => {
                    if self.changed_tool == ChangedTool::Hide && changed().is_some() {
                        if let Ruling::DeniedShown { rule_id } = ruling {
                            *ruling = Ruling::Denied { rule_id: rule_id.take() };
                        }
                    }
                    continue;
                }
                _ => continue,
            }
            let changed = changed();
            let refusal: Option<(&'static str, Option<PinNote>)> = match changed {
                Some((pinned, last)) => {
                    let note = PinNote { tool: tool.to_string(), pinned_sha256: pinned, sha256: last, action: self.changed_tool.as_str() };
                    events.push(TOOL_CHANGED);
                    if let Some(record) = judgement.records.get_mut(i) {
                        record.detail.tool_pins = Some(vec![note.clone()]);
                    }
                    match self.changed_tool {
                        ChangedTool::Log => None,
                        _ => Some((TOOL_CHANGED, Some(note))),
                    }
                }
                None => None,
            };
            let refusal = refusal.or_else(|| {
                if !self.require_listed {
                    return None;
                }
                let set = listed.get_or_insert_with(|| self.listed.get(host, &listed_key(subject)).unwrap_or_default());
                (!is_listed(set, tool)).then(|| {
                    events.push(NEVER_LISTED);
                    (NEVER_LISTED, None)
                })
            });
            let Some((reason, note)) = refusal else { continue };
            if let Some(record) = judgement.records.get_mut(i) {
                record.decision = Decision::Deny;
                record.enforced = !dry_run;
                record.rule_id = Some(RULE_ID.into());
                record.detail.reason = Some(reason.into());
            }
            if let Some(ruling) = judgement.rulings.get_mut(i) {
                *ruling = Ruling::Denied { rule_id: Some(RULE_ID.into()) };
            }
            if let (Some(note), ChangedTool::Deny, false) = (note, self.changed_tool, batch) {
                explicit = Some(changed_reply(m.id, &note, revision));
            }
        }
        (explicit, events)
    }
}

/// What reviewing a list did.
#[derive(Debug, Default)]
pub struct Reviewed {
    pub text: Option<String>,
    pub hidden: usize,
    pub changed: Vec<PinNote>,
    /// Why the list could not be reviewed: the whole list is refused.
    pub error: Option<String>,
    /// Tools no pin could be stored for (not shown unless `changed_tool: log`); the rest of
    /// the list is passed.
    pub unpinnable: Vec<String>,
}

impl Reviewed {
    /// The list record's `error` when tools could not be pinned.
    pub fn unpinnable_note(&self) -> Option<String> {
        (!self.unpinnable.is_empty()).then(|| {
            format!(
                "tool_pinning.capacity: no room to pin {} new tool(s) ({}); raise the capacity or pin them in config",
                self.unpinnable.len(),
                self.unpinnable.join(", ")
            )
        })
    }
}

#[derive(Serialize)]
struct ChangedData<'a> {
    tool: &'a str,
    pinned_sha256: &'a str,
    sha256: &'a str,
}

/// `deny`: -32602 naming the tool and both digests, with the revision's status for it.
pub fn changed_reply(id: Option<&RawValue>, note: &PinNote, revision: Revision) -> Reply {
    let text = format!(
        "Tool definition changed: {} (pinned sha256 {}, now {}); refused by the gateway",
        message::truncate(&note.tool, 128),
        note.pinned_sha256,
        note.sha256
    );
    let data = ChangedData { tool: &note.tool, pinned_sha256: &note.pinned_sha256, sha256: &note.sha256 };
    Reply {
        status: revision.error_status(codes::INVALID_PARAMS),
        headers: Vec::new(),
        body: rpc_error_body(id, codes::INVALID_PARAMS, &text, Some(data)),
    }
}

#[cfg(test)]
#[path = "pinning_tests.rs"]
mod tests;
