//! Placeholder: replaced by the translation module (branch `translate`).
pub use crate::api::ClientApi;

pub struct RequestOptions { pub default_max_tokens: u32, pub include_usage: bool }
pub struct TranslatedRequest { pub body: Vec<u8>, pub path: String, pub stream: bool }
pub struct Unmappable { pub field: String, pub message: String }

pub fn request(_client: ClientApi, _upstream: ClientApi, _body: &[u8], _stream: bool, _upstream_model: &str, _opts: &RequestOptions) -> Result<TranslatedRequest, Unmappable> {
    Err(Unmappable { field: "model".into(), message: "translation is not built yet".into() })
}
pub fn response_json(_upstream: ClientApi, _client: ClientApi, body: &[u8], _client_model: &str) -> Result<Vec<u8>, Unmappable> {
    Ok(body.to_vec())
}
pub fn error_body(_upstream: ClientApi, _client: ClientApi, _status: u16, body: &[u8]) -> Vec<u8> {
    body.to_vec()
}
pub struct StreamTranslator;
impl StreamTranslator {
    pub fn new(_upstream: ClientApi, _client: ClientApi, _client_model: &str, _gemini_client_sse: bool) -> Self { StreamTranslator }
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> { chunk.to_vec() }
    pub fn finish(&mut self) -> Vec<u8> { Vec::new() }
}
