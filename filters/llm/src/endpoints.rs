//! The gateway's own endpoints and the paths no client API knows, pure (no host).
//!
//! - `GET /v1/models` and `GET /v1/models/{id}`: the models the caller's key may use, in
//!   OpenAI's list shape, or Anthropic's when the request carries `anthropic-version` (or
//!   authenticates with `x-api-key` and no `authorization`); `GET /v1beta/models` and
//!   `GET /v1beta/models/{id}` (also `v1`, `v1alpha` with a Gemini key): Gemini's. Never
//!   forwarded.
//! - Any other path the client APIs do not know: 404 in the shape of the API the path
//!   belongs to (`/v1beta/...` Gemini, `/v1/messages/...` or `anthropic-version` Anthropic,
//!   else OpenAI); a known path with the wrong method: 405 in its shape.
//!
//! Which models are listed: every exact model name and alias of `models`, then
//! `listed_models` (names served by glob routes, which cannot be enumerated), each once,
//! keeping those the caller's key may use (its `models` globs).

use crate::api::{self, ClientApi, GeminiAction, RefusalKind};
use crate::config::{ModelRoute, State};
use crate::record::Refusal;
use crate::routing::{model_allowed, Provider};
use serde::Serialize;
use tollgate_core::config::ConfigError;
use tollgate_core::glob::Glob;

/// What the request headers say about the client (they choose the answer's shape).
#[derive(Debug, Default, Clone, Copy)]
pub struct Hints {
    pub anthropic_version: bool,
    pub x_api_key: bool,
    pub authorization: bool,
    pub x_goog_api_key: bool,
}

impl Hints {
    fn anthropic(&self) -> bool {
        self.anthropic_version || (self.x_api_key && !self.authorization)
    }
}

/// A model list or single model asked of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsQuery {
    /// The answer's shape: `OpenaiChat` (OpenAI's), `AnthropicMessages` or `Gemini`.
    pub shape: ClientApi,
    /// `Some`: one model (`/v1/models/{id}`), percent-decoded.
    pub model: Option<String>,
    /// A Gemini key in the query (`?key=`), percent-decoded.
    pub key: Option<String>,
}

/// A request for a path the client APIs (`api::detect`) do not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// List or retrieve models.
    Models(ModelsQuery),
    /// A models path with a method other than GET (405).
    WrongMethod(ModelsQuery, Refusal),
    /// No such endpoint (404), in the shape of the API the path belongs to.
    Unknown(ClientApi, Refusal),
}

/// Classifies a path `api::detect` does not know.
pub fn classify(path: &str, method: &str, hints: &Hints) -> Local {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let key = query
        .split('&')
        .find_map(|p| p.strip_prefix("key="))
        .and_then(|k| api::decode_component(k, true));
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let models = match segments.as_slice() {
        [version @ ("v1beta" | "v1alpha"), "models", rest @ ..] => Some((ClientApi::Gemini, *version, rest)),
        ["v1", "models", rest @ ..] => {
            let shape = if hints.x_goog_api_key || key.is_some() {
                ClientApi::Gemini
            } else if hints.anthropic() {
                ClientApi::AnthropicMessages
            } else {
                ClientApi::OpenaiChat
            };
            Some((shape, "v1", rest))
        }
        _ => None,
    };
    let model = match models {
        Some((shape, _, [])) => Some((shape, None)),
        Some((shape, _, [id])) if !id.is_empty() => match api::decode_component(id, false) {
            // `models/{id}:method` is a Gemini call; a GET to a method that does not exist is
            // unknown (Gemini's own POST methods reach `api::detect`).
            Some(id) if !(shape == ClientApi::Gemini && id.contains(':')) => Some((shape, Some(id))),
            _ => None,
        },
        _ => None,
    };
    if let Some((shape, model)) = model {
        let query = ModelsQuery { shape, model, key };
        if method == "GET" {
            return Local::Models(query);
        }
        let refused = Refusal::new(RefusalKind::MethodNotAllowed, "method_not_allowed", format!("method {method} not allowed"));
        return Local::WrongMethod(query, refused);
    }
    let shape = if segments.first().is_some_and(|v| matches!(*v, "v1beta" | "v1alpha")) {
        ClientApi::Gemini
    } else if path.starts_with("/v1/messages/") || hints.anthropic() {
        ClientApi::AnthropicMessages
    } else {
        ClientApi::OpenaiChat
    };
    let shown: String = path.chars().take(200).collect();
    Local::Unknown(shape, Refusal::new(RefusalKind::NotFound, "unknown_path", format!("no LLM API at {shown}")))
}

/// One model the caller may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed<'s> {
    pub name: &'s str,
    pub provider: &'s Provider,
}

/// The listed models the caller's model globs (`None`: any) allow, in configuration order.
pub fn visible<'s>(state: &'s State, allowed: Option<&[Glob]>) -> Vec<Listed<'s>> {
    state
        .listed_models
        .iter()
        .filter(|name| model_allowed(allowed, name))
        .filter_map(|name| state.router.route(name).map(|route| Listed { name: name.as_str(), provider: route.provider }))
        .collect()
}

#[derive(Serialize)]
struct OpenAiModel<'a> {
    id: &'a str,
    object: &'static str,
    /// Unknown to the gateway: 0.
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct OpenAiList<'a> {
    object: &'static str,
    data: Vec<OpenAiModel<'a>>,
}

#[derive(Serialize)]
struct AnthropicModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    /// Unknown to the gateway: the epoch.
    created_at: &'static str,
}

#[derive(Serialize)]
struct AnthropicList<'a> {
    data: Vec<AnthropicModel<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiModel<'a> {
    name: String,
    display_name: &'a str,
    /// The methods the gateway forwards for it: all of Gemini's when its provider speaks the
    /// Gemini API, else none.
    supported_generation_methods: Vec<&'static str>,
}

#[derive(Serialize)]
struct GeminiList<'a> {
    models: Vec<GeminiModel<'a>>,
}

fn openai_model<'a>(m: &Listed<'a>) -> OpenAiModel<'a> {
    OpenAiModel { id: m.name, object: "model", created: 0, owned_by: &m.provider.name }
}

fn anthropic_model<'a>(m: &Listed<'a>) -> AnthropicModel<'a> {
    AnthropicModel { kind: "model", id: m.name, display_name: m.name, created_at: "1970-01-01T00:00:00Z" }
}

fn gemini_model<'a>(m: &Listed<'a>) -> GeminiModel<'a> {
    let methods = if m.provider.speaks(ClientApi::Gemini) { GeminiAction::ALL.iter().map(|a| a.name()).collect() } else { Vec::new() };
    GeminiModel { name: format!("models/{}", m.name), display_name: m.name, supported_generation_methods: methods }
}

/// The answer to a models query: the JSON body (200), or 404 for a model not listed.
pub fn answer(query: &ModelsQuery, visible: &[Listed<'_>]) -> Result<Vec<u8>, Refusal> {
    let json = match &query.model {
        None => match query.shape {
            ClientApi::AnthropicMessages => serde_json::to_vec(&AnthropicList {
                data: visible.iter().map(anthropic_model).collect(),
                has_more: false,
                first_id: visible.first().map(|m| m.name),
                last_id: visible.last().map(|m| m.name),
            }),
            ClientApi::Gemini => serde_json::to_vec(&GeminiList { models: visible.iter().map(gemini_model).collect() }),
            _ => serde_json::to_vec(&OpenAiList { object: "list", data: visible.iter().map(openai_model).collect() }),
        },
        Some(id) => {
            // Gemini names models `models/{id}`; its clients may send either form.
            let id = id.strip_prefix("models/").unwrap_or(id);
            let Some(m) = visible.iter().find(|m| m.name == id) else {
                let shown: String = id.chars().take(crate::decide::MAX_MODEL_CHARS).collect();
                return Err(Refusal::new(RefusalKind::NotFound, "unknown_model", format!("model `{shown}` does not exist")));
            };
            match query.shape {
                ClientApi::AnthropicMessages => serde_json::to_vec(&anthropic_model(m)),
                ClientApi::Gemini => serde_json::to_vec(&gemini_model(m)),
                _ => serde_json::to_vec(&openai_model(m)),
            }
        }
    };
    json.map_err(|e| Refusal::new(RefusalKind::BadRequest, "invalid_request", format!("cannot write the model list: {e}")))
}

#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    requests: Vec<&'a serde_json::value::RawValue>,
}

/// A Gemini `batchEmbedContents` body for an alias: each of `requests[]` names its model
/// (`models/{model}`), which must be the path's, so each is set to `models/{upstream}`.
/// Every other member is kept verbatim.
pub fn gemini_batch_body(body: &[u8], upstream: &str) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let text = std::str::from_utf8(body).map_err(|_| serde::de::Error::custom("body is not UTF-8"))?;
    let batch: Batch<'_> = serde_json::from_str(text)?;
    let model = serde_json::to_string(&format!("models/{upstream}"))?;
    let mut requests = String::from("[");
    for (i, request) in batch.requests.iter().enumerate() {
        if i > 0 {
            requests.push(',');
        }
        requests.push_str(&api::set_members(request.get(), &[("model", &model)])?);
    }
    requests.push(']');
    api::set_members(text, &[("requests", &requests)]).map(|s| Some(s.into_bytes()))
}

/// The names the model list may show: exact names and aliases of `models` in order, then
/// `listed_models`, each once.
pub fn listed_names(models: &[ModelRoute], listed: Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let exact = models.iter().filter(|m| Glob::new(&m.model).is_exact()).map(|m| m.model.clone());
    for name in exact.chain(listed) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// `listed_models`: exact names, each routed by `models`, no duplicates.
pub fn validate_listed(models: &[ModelRoute], listed: &[String]) -> Result<(), ConfigError> {
    for (i, name) in listed.iter().enumerate() {
        let at = format!("listed_models[{i}]");
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::field(&at, "must be a non-empty model name without whitespace or control characters"));
        }
        if !Glob::new(name).is_exact() {
            return Err(ConfigError::field(&at, format!("`{name}` must be a model name, not a pattern")));
        }
        if !models.iter().any(|m| Glob::new(&m.model).matches(name)) {
            return Err(ConfigError::field(&at, format!("`{name}` matches no `models` route")));
        }
        if listed.iter().take(i).any(|n| n == name) {
            return Err(ConfigError::field(&at, format!("duplicate model `{name}`")));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
