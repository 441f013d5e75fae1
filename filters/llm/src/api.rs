//! Client APIs: detection by path, borrowed request parsing, body rewriting that keeps
//! every untouched member verbatim, and error bodies in each API's own shape.

use tollgate_core::wire::raw_object::RawMembers;
use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A JSON string borrowed from the input when it has no escapes (serde's own `Cow<str>`
/// only borrows as a direct `#[serde(borrow)]` field, not inside `Option`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientApi {
    /// `POST /v1/chat/completions`
    OpenaiChat,
    /// `POST /v1/responses`
    OpenaiResponses,
    /// `POST /v1/messages`
    AnthropicMessages,
    /// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (and
    /// `:countTokens`, `:embedContent`, `:batchEmbedContents`)
    Gemini,
    /// `POST /v1/embeddings`
    OpenaiEmbeddings,
}

impl ClientApi {
    pub fn name(self) -> &'static str {
        match self {
            ClientApi::OpenaiChat => "openai_chat",
            ClientApi::OpenaiResponses => "openai_responses",
            ClientApi::AnthropicMessages => "anthropic_messages",
            ClientApi::Gemini => "gemini",
            ClientApi::OpenaiEmbeddings => "openai_embeddings",
        }
    }

    /// Human name for error messages.
    pub fn title(self) -> &'static str {
        match self {
            ClientApi::OpenaiChat => "OpenAI Chat Completions API",
            ClientApi::OpenaiResponses => "OpenAI Responses API",
            ClientApi::AnthropicMessages => "Anthropic Messages API",
            ClientApi::Gemini => "Gemini API",
            ClientApi::OpenaiEmbeddings => "OpenAI Embeddings API",
        }
    }

    /// OpenTelemetry `gen_ai.operation.name` of the API's generating operation.
    pub fn operation(self) -> &'static str {
        match self {
            ClientApi::Gemini => "generate_content",
            ClientApi::OpenaiEmbeddings => "embeddings",
            _ => "chat",
        }
    }

    /// How clients of this API send their key, and so how a provider speaking it expects one.
    pub fn default_auth(self) -> AuthScheme {
        match self {
            ClientApi::OpenaiChat | ClientApi::OpenaiResponses | ClientApi::OpenaiEmbeddings => AuthScheme::Bearer,
            ClientApi::AnthropicMessages => AuthScheme::XApiKey,
            ClientApi::Gemini => AuthScheme::XGoogApiKey,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthScheme {
    /// `Authorization: Bearer <key>`
    #[serde(rename = "bearer")]
    Bearer,
    #[serde(rename = "x-api-key")]
    XApiKey,
    #[serde(rename = "x-goog-api-key")]
    XGoogApiKey,
}

impl AuthScheme {
    /// (header name, header value) carrying `key`.
    pub fn header(self, key: &str) -> (&'static str, String) {
        match self {
            AuthScheme::Bearer => ("authorization", format!("Bearer {key}")),
            AuthScheme::XApiKey => ("x-api-key", key.to_string()),
            AuthScheme::XGoogApiKey => ("x-goog-api-key", key.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiAction {
    Generate,
    Stream,
    CountTokens,
    EmbedContent,
    BatchEmbedContents,
}

impl GeminiAction {
    /// The method name in the path (`models/{model}:<name>`).
    pub fn name(self) -> &'static str {
        match self {
            GeminiAction::Generate => "generateContent",
            GeminiAction::Stream => "streamGenerateContent",
            GeminiAction::CountTokens => "countTokens",
            GeminiAction::EmbedContent => "embedContent",
            GeminiAction::BatchEmbedContents => "batchEmbedContents",
        }
    }

    /// Every action, in the order Gemini lists `supportedGenerationMethods`.
    pub const ALL: [GeminiAction; 5] = [
        GeminiAction::Generate,
        GeminiAction::Stream,
        GeminiAction::CountTokens,
        GeminiAction::EmbedContent,
        GeminiAction::BatchEmbedContents,
    ];

    fn from_name(name: &str) -> Option<GeminiAction> {
        GeminiAction::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// What a request asks the model for: it decides the accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// Chat, responses, messages, generateContent: reserved, charged, counted.
    #[default]
    Generate,
    /// OpenAI `/v1/embeddings`, Gemini `:embedContent` / `:batchEmbedContents`: charged for
    /// input tokens only (nothing is generated: no output tokens reserved).
    Embeddings,
    /// Anthropic `/v1/messages/count_tokens`, Gemini `:countTokens`: forwarded and recorded,
    /// never reserved or charged against limits.
    CountTokens,
    /// `GET /v1/models` and friends, answered by the gateway itself.
    ListModels,
}

impl Operation {
    /// OpenTelemetry `gen_ai.operation.name`: `embeddings` is a well-known value;
    /// `count_tokens` and `list_models` are custom ones (the conventions define none).
    pub fn name(self, api: ClientApi) -> &'static str {
        match self {
            Operation::Generate => api.operation(),
            Operation::Embeddings => "embeddings",
            Operation::CountTokens => "count_tokens",
            Operation::ListModels => "list_models",
        }
    }

    /// The record's `api`: the client API, or for the model list the shape answered.
    pub fn api_name(self, api: ClientApi) -> &'static str {
        match (self, api) {
            (Operation::ListModels, ClientApi::AnthropicMessages) => "anthropic_models",
            (Operation::ListModels, ClientApi::Gemini) => "gemini_models",
            (Operation::ListModels, _) => "openai_models",
            _ => api.name(),
        }
    }

    /// Whether limits reserve and charge it.
    pub fn charged(self) -> bool {
        matches!(self, Operation::Generate | Operation::Embeddings)
    }

    /// Whether the response carries usage to count (a count_tokens answer is not usage).
    pub fn accounted(self) -> bool {
        self.charged()
    }
}

/// A Gemini request path: the model lives here, not in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeminiPath {
    /// `v1beta`, `v1` or `v1alpha`.
    pub version: String,
    pub model: String,
    pub action: GeminiAction,
    /// Query parameters other than `key`, verbatim (`alt=sse`, ...).
    pub query: Vec<String>,
    /// The `key` query parameter (a client credential), percent-decoded.
    pub key: Option<String>,
}

impl GeminiPath {
    pub fn sse(&self) -> bool {
        self.query.iter().any(|q| q == "alt=sse")
    }

    /// The path for `model`, without the client's `key` parameter.
    pub fn to_path(&self, model: &str) -> String {
        let action = self.action.name();
        let mut path = format!("/{}/models/{}:{action}", self.version, encode_segment(model));
        if !self.query.is_empty() {
            path.push('?');
            path.push_str(&self.query.join("&"));
        }
        path
    }
}

/// The client API a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub api: ClientApi,
    pub gemini: Option<GeminiPath>,
    pub operation: Operation,
}

/// Detects the client API from `:path` (query string allowed). `None`: not an LLM API path.
pub fn detect(path: &str) -> Option<Endpoint> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let simple = |api, operation| Some(Endpoint { api, gemini: None, operation });
    match path {
        "/v1/chat/completions" => return simple(ClientApi::OpenaiChat, Operation::Generate),
        "/v1/responses" => return simple(ClientApi::OpenaiResponses, Operation::Generate),
        "/v1/messages" => return simple(ClientApi::AnthropicMessages, Operation::Generate),
        "/v1/messages/count_tokens" => return simple(ClientApi::AnthropicMessages, Operation::CountTokens),
        "/v1/embeddings" => return simple(ClientApi::OpenaiEmbeddings, Operation::Embeddings),
        _ => {}
    }
    let rest = path.strip_prefix('/')?;
    let (version, rest) = rest.split_once('/')?;
    if !matches!(version, "v1beta" | "v1" | "v1alpha") {
        return None;
    }
    let rest = rest.strip_prefix("models/")?;
    let (model, action) = rest.rsplit_once(':')?;
    let action = GeminiAction::from_name(action)?;
    let operation = match action {
        GeminiAction::Generate | GeminiAction::Stream => Operation::Generate,
        GeminiAction::CountTokens => Operation::CountTokens,
        GeminiAction::EmbedContent | GeminiAction::BatchEmbedContents => Operation::Embeddings,
    };
    let model = decode_component(model, false)?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    let mut params = Vec::new();
    let mut key = None;
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match part.strip_prefix("key=") {
            Some(k) => key = decode_component(k, true),
            None => params.push(part.to_string()),
        }
    }
    Some(Endpoint {
        api: ClientApi::Gemini,
        gemini: Some(GeminiPath { version: version.to_string(), model, action, query: params, key }),
        operation,
    })
}

/// Percent-decodes (core decoder: invalid escapes and non-UTF-8 refused); `plus_is_space`
/// for query components (form encoding: `+` is a space, `%2B` a plus).
pub(crate) fn decode_component(s: &str, plus_is_space: bool) -> Option<String> {
    let decoded = if plus_is_space {
        tollgate_core::text::percent_decode(&s.replace('+', " "))
    } else {
        tollgate_core::text::percent_decode(s)
    };
    decoded.ok()
}

/// Everything but RFC 3986 unreserved characters is encoded in a path segment.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// What the filter needs from a request body, borrowed from it.
#[derive(Debug, Default)]
pub struct RequestInfo<'a> {
    pub model: Option<Cow<'a, str>>,
    pub stream: bool,
    /// Requested maximum output tokens.
    pub max_output_tokens: Option<u64>,
    /// OpenAI Chat `stream_options`, verbatim.
    pub stream_options: Option<&'a RawValue>,
    /// OpenAI Chat `stream_options.include_usage`.
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct GeminiRequest {
    #[serde(default, rename = "generationConfig", alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(default, rename = "maxOutputTokens", alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
}

/// Why a body was refused (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError(pub String);

fn first_byte_is_brace(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses the members the filter needs; the rest is only validated as JSON.
pub fn parse_request<'a>(endpoint: &Endpoint, body: &'a [u8]) -> Result<RequestInfo<'a>, BodyError> {
    if !first_byte_is_brace(body) {
        return Err(BodyError("request body must be a JSON object".into()));
    }
    let invalid = |e: serde_json::Error| BodyError(format!("request body is not valid JSON: {e}"));
    let info = match endpoint.api {
        ClientApi::OpenaiChat => {
            let r: ChatRequest<'a> = serde_json::from_slice(body).map_err(invalid)?;
            let include_usage = match r.stream_options {
                Some(raw) if raw.get() != "null" => {
                    let o: StreamOptions = serde_json::from_str(raw.get())
                        .map_err(|e| BodyError(format!("stream_options: {e}")))?;
                    o.include_usage.unwrap_or(false)
                }
                _ => false,
            };
            RequestInfo {
                model: r.model.map(|t| t.0),
                stream: r.stream.unwrap_or(false),
                max_output_tokens: r.max_completion_tokens.or(r.max_tokens),
                stream_options: r.stream_options.filter(|raw| raw.get() != "null"),
                include_usage,
            }
        }
        ClientApi::OpenaiResponses => {
            let r: ResponsesRequest<'a> = serde_json::from_slice(body).map_err(invalid)?;
            RequestInfo {
                model: r.model.map(|t| t.0),
                stream: r.stream.unwrap_or(false),
                max_output_tokens: r.max_output_tokens,
                ..Default::default()
            }
        }
        ClientApi::AnthropicMessages => {
            let r: MessagesRequest<'a> = serde_json::from_slice(body).map_err(invalid)?;
            RequestInfo {
                model: r.model.map(|t| t.0),
                stream: r.stream.unwrap_or(false),
                max_output_tokens: r.max_tokens,
                ..Default::default()
            }
        }
        ClientApi::OpenaiEmbeddings => {
            let r: EmbeddingsRequest<'a> = serde_json::from_slice(body).map_err(invalid)?;
            RequestInfo { model: r.model.map(|t| t.0), ..Default::default() }
        }
        ClientApi::Gemini => {
            let r: GeminiRequest = serde_json::from_slice(body).map_err(invalid)?;
            let path = endpoint.gemini.as_ref();
            RequestInfo {
                model: path.map(|g| Cow::Owned(g.model.clone())),
                stream: path.map(|g| g.action == GeminiAction::Stream).unwrap_or(false),
                max_output_tokens: r.generation_config.and_then(|g| g.max_output_tokens),
                ..Default::default()
            }
        }
    };
    match &info.model {
        Some(m) if !m.is_empty() => Ok(info),
        _ => Err(BodyError("request body has no `model`".into())),
    }
}

/// Sets top-level members of a JSON object to the given raw JSON values, keeping every
/// other member byte for byte and in order (new members go last).
pub fn set_members(object: &str, set: &[(&str, &str)]) -> Result<String, serde_json::Error> {
    let members: RawMembers<'_> = serde_json::from_str(object)?;
    let mut out = String::with_capacity(object.len() + 64);
    out.push('{');
    // Each replacement with whether it was written (in place of the member it replaces).
    let mut replacements: Vec<(&str, &str, bool)> = set.iter().map(|(k, v)| (*k, *v, false)).collect();
    let mut first = true;
    let mut push = |out: &mut String, key: &str, value: &str| -> Result<(), serde_json::Error> {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::to_string(key)?);
        out.push(':');
        out.push_str(value);
        Ok(())
    };
    for (key, value) in &members.0 {
        match replacements.iter_mut().find(|(k, _, _)| *k == key.as_ref()) {
            Some((_, _, true)) => {} // a duplicate key: the replacement was already written
            Some((_, replacement, done)) => {
                *done = true;
                push(&mut out, key, replacement)?;
            }
            None => push(&mut out, key, value.get())?,
        }
    }
    for (key, value, done) in &replacements {
        if !done {
            push(&mut out, key, value)?;
        }
    }
    out.push('}');
    Ok(out)
}

/// The rewritten body, if anything needs changing: the upstream model, and for streaming
/// OpenAI Chat `stream_options.include_usage: true`.
pub fn rewrite_body(
    body: &[u8],
    info: &RequestInfo<'_>,
    upstream_model: Option<&str>,
    inject_usage: bool,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(model) = upstream_model {
        set.push(("model", serde_json::to_string(model)?));
    }
    if inject_usage {
        let options = match info.stream_options {
            Some(raw) if raw.get().trim_start().starts_with('{') => set_members(raw.get(), &[("include_usage", "true")])?,
            _ => "{\"include_usage\":true}".to_string(),
        };
        set.push(("stream_options", options));
    }
    if set.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| serde::de::Error::custom("body is not UTF-8"))?;
    let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    set_members(text, &pairs).map(|s| Some(s.into_bytes()))
}

/// The errors the filter answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// 401: no key, or an unknown key.
    Unauthenticated,
    /// 403: the key may not use the model.
    Forbidden,
    /// 403: the model has no price, a cost budget applies to it and the config says
    /// `unpriced: deny`.
    NotPriced,
    /// 404: unknown model or unknown API path.
    NotFound,
    /// 400: not JSON, no model, ...
    BadRequest,
    /// 405: not POST.
    MethodNotAllowed,
    /// 413: body over `max_request_bytes`.
    TooLarge,
    /// 429: a configured limit or budget; the OpenAI error `type` (`requests`, `tokens`, `cost`).
    RateLimited(&'static str),
    /// 400: the request alone asks more than a limit's cap: no window ever admits it, so no
    /// `Retry-After` (OpenAI code `request_exceeds_limit`).
    ExceedsLimit,
    /// A guardrail refused the content (status from config, 400 by default).
    Guarded(u16),
    /// 503: a guardrail that must judge the request cannot (its service is down), and it
    /// fails closed.
    GuardUnavailable,
    /// 502: the gateway cannot send the attempt (a request reached the deployments cluster
    /// without a plan, or Envoy picked a host the plan does not name).
    BadGateway,
}

impl RefusalKind {
    pub fn status(self) -> u32 {
        match self {
            RefusalKind::Unauthenticated => 401,
            RefusalKind::Forbidden | RefusalKind::NotPriced => 403,
            RefusalKind::NotFound => 404,
            RefusalKind::BadRequest | RefusalKind::ExceedsLimit => 400,
            RefusalKind::MethodNotAllowed => 405,
            RefusalKind::TooLarge => 413,
            RefusalKind::RateLimited(_) => 429,
            RefusalKind::BadGateway => 502,
            RefusalKind::Guarded(status) => u32::from(status),
            RefusalKind::GuardUnavailable => 503,
        }
    }

    fn openai(self) -> (&'static str, &'static str) {
        match self {
            RefusalKind::Unauthenticated => ("invalid_request_error", "invalid_api_key"),
            RefusalKind::Forbidden => ("permission_error", "model_not_allowed"),
            RefusalKind::NotPriced => ("permission_error", "model_not_priced"),
            RefusalKind::NotFound => ("invalid_request_error", "model_not_found"),
            RefusalKind::BadRequest => ("invalid_request_error", "invalid_request"),
            RefusalKind::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            RefusalKind::TooLarge => ("invalid_request_error", "request_too_large"),
            RefusalKind::RateLimited(kind) => (kind, "rate_limit_exceeded"),
            RefusalKind::ExceedsLimit => ("invalid_request_error", "request_exceeds_limit"),
            RefusalKind::BadGateway => ("api_error", "bad_gateway"),
            RefusalKind::Guarded(_) => ("invalid_request_error", "content_policy_violation"),
            RefusalKind::GuardUnavailable => ("api_error", "guardrail_unavailable"),
        }
    }

    fn anthropic(self) -> &'static str {
        match self {
            RefusalKind::Unauthenticated => "authentication_error",
            RefusalKind::Forbidden | RefusalKind::NotPriced => "permission_error",
            RefusalKind::NotFound => "not_found_error",
            RefusalKind::BadRequest | RefusalKind::MethodNotAllowed | RefusalKind::ExceedsLimit => "invalid_request_error",
            RefusalKind::TooLarge => "request_too_large",
            RefusalKind::RateLimited(_) => "rate_limit_error",
            RefusalKind::BadGateway | RefusalKind::GuardUnavailable => "api_error",
            RefusalKind::Guarded(_) => "invalid_request_error",
        }
    }

    fn gemini(self) -> &'static str {
        match self {
            RefusalKind::Unauthenticated => "UNAUTHENTICATED",
            RefusalKind::Forbidden | RefusalKind::NotPriced => "PERMISSION_DENIED",
            RefusalKind::NotFound => "NOT_FOUND",
            RefusalKind::BadRequest | RefusalKind::TooLarge | RefusalKind::ExceedsLimit => "INVALID_ARGUMENT",
            RefusalKind::MethodNotAllowed => "UNIMPLEMENTED",
            RefusalKind::RateLimited(_) => "RESOURCE_EXHAUSTED",
            RefusalKind::BadGateway | RefusalKind::GuardUnavailable => "UNAVAILABLE",
            RefusalKind::Guarded(_) => "INVALID_ARGUMENT",
        }
    }
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorBody<'a>,
}
#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}
#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorBody<'a>,
}
#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}
#[derive(Serialize)]
struct GeminiError<'a> {
    error: GeminiErrorBody<'a>,
}
#[derive(Serialize)]
struct GeminiErrorBody<'a> {
    code: u32,
    message: &'a str,
    status: &'a str,
}

/// The error body for `refusal` in the client API's shape (OpenAI's when the API is unknown).
pub fn error_body(api: Option<ClientApi>, refusal: RefusalKind, message: &str) -> Vec<u8> {
    let json = match api {
        Some(ClientApi::AnthropicMessages) => serde_json::to_vec(&AnthropicError {
            kind: "error",
            error: AnthropicErrorBody { kind: refusal.anthropic(), message },
        }),
        Some(ClientApi::Gemini) => serde_json::to_vec(&GeminiError {
            error: GeminiErrorBody { code: refusal.status(), message, status: refusal.gemini() },
        }),
        _ => {
            let (kind, code) = refusal.openai();
            serde_json::to_vec(&OpenAiError { error: OpenAiErrorBody { message, kind, param: None, code } })
        }
    };
    json.unwrap_or_else(|_| b"{\"error\":{\"message\":\"error\"}}".to_vec())
}

#[derive(Deserialize)]
struct AnyError<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorField<'a>>,
    #[serde(borrow, default)]
    message: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField<'a> {
    Object {
        #[serde(borrow, default)]
        message: Option<Text<'a>>,
    },
    Plain(#[serde(borrow)] Text<'a>),
}

/// The message of a provider's error body (any of the three shapes), if it has one.
pub fn upstream_error_message(body: &[u8]) -> Option<String> {
    let e: AnyError<'_> = serde_json::from_slice(body).ok()?;
    let message = match e.error {
        Some(ErrorField::Object { message }) => message,
        Some(ErrorField::Plain(t)) => Some(t),
        None => e.message,
    }?;
    Some(message.as_str().chars().take(512).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn segments_keep_only_unreserved_characters() {
        // The hand-written encoder this replaced, as the reference.
        let reference = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let all: String = (1u8..=127).map(char::from).collect();
        for s in ["gemini-2.0-flash", "a/b c?d#e%f+g:h", "mod\u{e8}le \u{1f600}", all.as_str()] {
            assert_eq!(encode_segment(s), reference(s), "{s:?}");
        }
    }

    #[test]
    fn detects_apis_by_path() {
        assert_eq!(detect("/v1/chat/completions").unwrap().api, ClientApi::OpenaiChat);
        assert_eq!(detect("/v1/chat/completions?x=1").unwrap().api, ClientApi::OpenaiChat);
        assert_eq!(detect("/v1/responses").unwrap().api, ClientApi::OpenaiResponses);
        assert_eq!(detect("/v1/messages").unwrap().api, ClientApi::AnthropicMessages);
        for bad in ["/v1/models", "/v1/chat/completions/x", "/", "", "/v1beta/models/x:listen", "/v2/models/x:generateContent", "/v1/messages/count",
                    "/v1beta/models/:generateContent", "/v1beta/models/a/b:generateContent", "/v1beta/models/x"] {
            assert!(detect(bad).is_none(), "{bad}");
        }
        let g = detect("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=tg%2Dkey").unwrap();
        let path = g.gemini.unwrap();
        assert_eq!(path.model, "gemini-2.0-flash");
        assert_eq!(path.action, GeminiAction::Stream);
        assert!(path.sse());
        assert_eq!(path.key.as_deref(), Some("tg-key"));
        assert_eq!(path.to_path("gemini-pro"), "/v1beta/models/gemini-pro:streamGenerateContent?alt=sse");
        for (path, api, operation) in [
            ("/v1/embeddings", ClientApi::OpenaiEmbeddings, Operation::Embeddings),
            ("/v1/messages/count_tokens", ClientApi::AnthropicMessages, Operation::CountTokens),
            ("/v1/messages", ClientApi::AnthropicMessages, Operation::Generate),
            ("/v1beta/models/g:countTokens", ClientApi::Gemini, Operation::CountTokens),
            ("/v1beta/models/g:embedContent", ClientApi::Gemini, Operation::Embeddings),
            ("/v1beta/models/g:batchEmbedContents", ClientApi::Gemini, Operation::Embeddings),
            ("/v1beta/models/g:generateContent", ClientApi::Gemini, Operation::Generate),
        ] {
            let e = detect(path).unwrap();
            assert_eq!((e.api, e.operation), (api, operation), "{path}");
        }
        let g = detect("/v1beta/models/text-embedding-004:batchEmbedContents?key=k").unwrap().gemini.unwrap();
        assert_eq!(g.to_path("emb"), "/v1beta/models/emb:batchEmbedContents");
        assert_eq!(Operation::CountTokens.name(ClientApi::Gemini), "count_tokens");
        assert_eq!(Operation::Embeddings.name(ClientApi::OpenaiEmbeddings), "embeddings");
        assert_eq!(Operation::Generate.name(ClientApi::Gemini), "generate_content");
        assert_eq!(Operation::ListModels.api_name(ClientApi::Gemini), "gemini_models");
        assert_eq!(Operation::CountTokens.api_name(ClientApi::AnthropicMessages), "anthropic_messages");
        assert!(!Operation::CountTokens.charged() && Operation::Embeddings.charged());
        let g = detect("/v1/models/gemini-pro:generateContent").unwrap().gemini.unwrap();
        assert!(!g.sse());
        assert_eq!(g.to_path("a/b"), "/v1/models/a%2Fb:generateContent");
    }

    fn chat() -> Endpoint {
        detect("/v1/chat/completions").unwrap()
    }

    #[test]
    fn parses_each_api_borrowing_the_model() {
        let body = br#"{"model":"gpt-4o","messages":[],"stream":true,"max_tokens":7}"#;
        let info = parse_request(&chat(), body).unwrap();
        assert!(matches!(info.model, Some(Cow::Borrowed("gpt-4o"))));
        assert!(info.stream && !info.include_usage);
        assert_eq!(info.max_output_tokens, Some(7));
        let body = br#"{"model":"m","max_completion_tokens":9,"max_tokens":7,"stream_options":{"include_usage":true}}"#;
        let info = parse_request(&chat(), body).unwrap();
        assert_eq!(info.max_output_tokens, Some(9));
        assert!(info.include_usage);

        let info = parse_request(&detect("/v1/responses").unwrap(), br#"{"model":"r","input":"hi","max_output_tokens":3}"#).unwrap();
        assert_eq!(info.model.as_deref(), Some("r"));
        assert_eq!(info.max_output_tokens, Some(3));
        let info = parse_request(&detect("/v1/messages").unwrap(), br#"{"model":"c","max_tokens":5,"stream":true}"#).unwrap();
        assert_eq!((info.model.as_deref(), info.stream, info.max_output_tokens), (Some("c"), true, Some(5)));
        let g = detect("/v1beta/models/gem:streamGenerateContent?alt=sse").unwrap();
        let info = parse_request(&g, br#"{"contents":[],"generationConfig":{"maxOutputTokens":11}}"#).unwrap();
        assert_eq!((info.model.as_deref(), info.stream, info.max_output_tokens), (Some("gem"), true, Some(11)));
        let e = detect("/v1/embeddings").unwrap();
        let info = parse_request(&e, br#"{"model":"text-embedding-3-small","input":["a","b"]}"#).unwrap();
        assert_eq!((info.model.as_deref(), info.stream, info.max_output_tokens), (Some("text-embedding-3-small"), false, None));
        assert!(parse_request(&e, br#"{"input":"a"}"#).is_err());
    }

    #[test]
    fn refuses_bad_bodies() {
        for bad in [&b"{not json"[..], b"", b"[\"gpt-4o\"]", b"{\"messages\":[]}", b"{\"model\":\"\"}", b"{\"model\":5}",
                    b"{\"model\":\"m\",\"stream\":\"yes\"}", b"{\"model\":\"m\"} trailing", b"{\"model\":\"m\",\"stream_options\":5}"] {
            assert!(parse_request(&chat(), bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_request(&detect("/v1beta/models/g:generateContent").unwrap(), b"{bad").is_err());
    }

    #[test]
    fn rewrites_model_and_injects_usage_keeping_the_rest_verbatim() {
        let body = br#"{"model":"fast", "messages":[{"role":"user","content":"h\u00e9 \"q\""}],"stream":true}"#;
        let info = parse_request(&chat(), body).unwrap();
        let out = rewrite_body(body, &info, Some("gpt-4o-mini"), true).unwrap().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        // Existing stream_options keep their other members.
        let body = br#"{"stream_options":{"x":1,"include_usage":false},"model":"m"}"#;
        let info = parse_request(&chat(), body).unwrap();
        let out = rewrite_body(body, &info, None, true).unwrap().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"stream_options":{"x":1,"include_usage":true},"model":"m"}"#);
        assert!(rewrite_body(body, &info, None, false).unwrap().is_none());
        // Escaped keys and duplicates.
        assert_eq!(set_members(r#"{"mo\u0064el":"a","model":"b"}"#, &[("model", "\"c\"")]).unwrap(), r#"{"model":"c"}"#);
    }

    #[test]
    fn error_shapes() {
        let v: Value = serde_json::from_slice(&error_body(Some(ClientApi::OpenaiChat), RefusalKind::Unauthenticated, "bad key")).unwrap();
        assert_eq!(v["error"]["message"], "bad key");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["param"].is_null());
        let v: Value = serde_json::from_slice(&error_body(Some(ClientApi::AnthropicMessages), RefusalKind::Forbidden, "no")).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "permission_error");
        let v: Value = serde_json::from_slice(&error_body(Some(ClientApi::Gemini), RefusalKind::NotFound, "nf")).unwrap();
        assert_eq!(v["error"]["code"], 404);
        assert_eq!(v["error"]["status"], "NOT_FOUND");
        let v: Value = serde_json::from_slice(&error_body(None, RefusalKind::TooLarge, "big")).unwrap();
        assert_eq!(v["error"]["code"], "request_too_large");
        assert_eq!(RefusalKind::TooLarge.status(), 413);
        let limited = RefusalKind::RateLimited("tokens");
        let v: Value = serde_json::from_slice(&error_body(Some(ClientApi::OpenaiChat), limited, "slow down")).unwrap();
        assert_eq!((v["error"]["type"].as_str(), v["error"]["code"].as_str()), (Some("tokens"), Some("rate_limit_exceeded")));
        let v: Value = serde_json::from_slice(&error_body(Some(ClientApi::AnthropicMessages), limited, "x")).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let v: Value = serde_json::from_slice(&error_body(Some(ClientApi::Gemini), limited, "x")).unwrap();
        assert_eq!((v["error"]["code"].as_u64(), v["error"]["status"].as_str()), (Some(429), Some("RESOURCE_EXHAUSTED")));
    }

    #[test]
    fn upstream_error_messages_from_each_shape() {
        assert_eq!(upstream_error_message(br#"{"error":{"message":"rate","type":"x"}}"#).as_deref(), Some("rate"));
        assert_eq!(upstream_error_message(br#"{"type":"error","error":{"type":"o","message":"over"}}"#).as_deref(), Some("over"));
        assert_eq!(upstream_error_message(br#"{"error":{"code":429,"message":"g","status":"R"}}"#).as_deref(), Some("g"));
        assert_eq!(upstream_error_message(br#"{"error":"plain"}"#).as_deref(), Some("plain"));
        assert_eq!(upstream_error_message(b"upstream connect error"), None);
    }
}
