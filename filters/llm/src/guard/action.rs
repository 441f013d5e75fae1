//! What a guardrail does with what it finds ([`GuardAction`]) and how findings are reported
//! ([`GuardHit`]): never the matched text, only where, which detector and how often.

use super::{Hit, Scanner};
use serde::{Deserialize, Serialize};

/// What to do when a detector matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Refuse the request, or end the streamed answer with the API's own error event.
    Block,
    /// Replace every match with `[REDACTED:<detector>]`.
    Redact,
    /// Report the hits only; the traffic passes unchanged.
    #[default]
    Log,
}

impl GuardAction {
    pub fn name(self) -> &'static str {
        match self {
            GuardAction::Block => "block",
            GuardAction::Redact => "redact",
            GuardAction::Log => "log",
        }
    }
}

/// Which side of the exchange a hit was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Request,
    Response,
}

/// The request's system prompt (Anthropic `system`, Gemini `systemInstruction`, Responses
/// `instructions`) in [`GuardHit::message_index`]. OpenAI Chat system and developer messages
/// are messages: they have their index in `messages`.
pub const SYSTEM: i64 = -1;

/// One detector's matches in one message: request side, the index in the API's message list
/// (`messages`, `contents`, `input`; [`SYSTEM`] for the separate system prompt); response
/// side, the choice (OpenAI Chat) or candidate (Gemini) index, 0 for the Anthropic and
/// Responses APIs (one answer each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardHit {
    #[serde(rename = "where")]
    pub place: Place,
    pub message_index: i64,
    pub detector: String,
    pub count: u32,
}

/// Hits counted by (place, message, detector), in the order first seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HitLog(pub Vec<GuardHit>);

impl HitLog {
    pub(crate) fn add(&mut self, place: Place, message_index: i64, detector: &str, count: u32) {
        if count == 0 {
            return;
        }
        match self.0.iter_mut().find(|h| h.place == place && h.message_index == message_index && h.detector == detector) {
            Some(h) => h.count = h.count.saturating_add(count),
            None => self.0.push(GuardHit { place, message_index, detector: detector.to_string(), count }),
        }
    }

    pub(crate) fn add_hits(&mut self, scanner: &Scanner, place: Place, message_index: i64, hits: &[Hit]) {
        for h in hits {
            self.add(place, message_index, scanner.name(h.detector), 1);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The detector names, each once, for an error message.
    pub(crate) fn detectors(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for h in &self.0 {
            if !names.contains(&h.detector.as_str()) {
                names.push(&h.detector);
            }
        }
        names.join(", ")
    }
}

/// The message of a block (names the detectors, never the text).
pub(crate) fn block_message(place: Place, log: &HitLog) -> String {
    let what = match place {
        Place::Request => "request",
        Place::Response => "response",
    };
    format!("The {what} was blocked by a guardrail (detected: {})", log.detectors())
}
