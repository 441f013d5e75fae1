use super::*;
use crate::config::load_with;
use serde_json::{json, Value};

fn state(listed: Value) -> State {
    let cfg = json!({
        "providers": [{"name": "a", "apis": ["openai_chat"]}, {"name": "g", "apis": ["gemini"]}],
        "models": [
            {"model": "gpt-4o*", "provider": "a"},
            {"model": "o4-mini", "provider": "a"},
            {"model": "fast", "provider": "a", "upstream_model": "gpt-4o-mini"},
            {"model": "gemini-*", "provider": "g"}
        ],
        "listed_models": listed
    });
    load_with(cfg.to_string().as_bytes(), &|_| None).unwrap()
}

fn names(v: &[Listed<'_>]) -> Vec<String> {
    v.iter().map(|m| m.name.to_string()).collect()
}

#[test]
fn lists_exact_names_then_listed_models_filtered_by_the_key() {
    let s = state(json!(["gpt-4o-mini", "gemini-2.0-flash", "fast"]));
    assert_eq!(s.listed_models, ["o4-mini", "fast", "gpt-4o-mini", "gemini-2.0-flash"]);
    assert_eq!(names(&visible(&s, None)), ["o4-mini", "fast", "gpt-4o-mini", "gemini-2.0-flash"]);
    let globs = [Glob::new("gpt-4o*"), Glob::new("fast")];
    assert_eq!(names(&visible(&s, Some(&globs))), ["fast", "gpt-4o-mini"]);
    assert!(visible(&s, Some(&[])).is_empty());
    assert_eq!(visible(&s, None).first().map(|m| m.provider.name.as_str()), Some("a"));
}

#[test]
fn listed_models_are_checked_at_load() {
    let err = |listed: Value| {
        let cfg = json!({"providers": [{"name": "a"}], "models": [{"model": "gpt-*", "provider": "a"}], "listed_models": listed});
        load_with(cfg.to_string().as_bytes(), &|_| None).unwrap_err().to_string()
    };
    assert!(err(json!(["claude-3"])).contains("listed_models[0]: `claude-3` matches no `models` route"), "{}", err(json!(["claude-3"])));
    assert!(err(json!(["gpt-*"])).contains("listed_models[0]: `gpt-*` must be a model name, not a pattern"));
    assert!(err(json!(["gpt-4", "gpt-4"])).contains("listed_models[1]: duplicate model `gpt-4`"));
    assert!(err(json!(["gpt 4"])).contains("listed_models[0]"));
}

fn hints(anthropic_version: bool, x_api_key: bool, authorization: bool, x_goog_api_key: bool) -> Hints {
    Hints { anthropic_version, x_api_key, authorization, x_goog_api_key }
}

fn models(shape: ClientApi, model: Option<&str>) -> Local {
    Local::Models(ModelsQuery { shape, model: model.map(str::to_string), key: None })
}

#[test]
fn classifies_models_paths_and_shapes() {
    let openai = hints(false, false, true, false);
    assert_eq!(classify("/v1/models", "GET", &openai), models(ClientApi::OpenaiChat, None));
    assert_eq!(classify("/v1/models/ft%3Agpt-4o%3Aorg", "GET", &openai), models(ClientApi::OpenaiChat, Some("ft:gpt-4o:org")));
    assert_eq!(classify("/v1/models?limit=20", "GET", &hints(true, true, false, false)), models(ClientApi::AnthropicMessages, None));
    assert_eq!(classify("/v1/models", "GET", &hints(false, true, false, false)), models(ClientApi::AnthropicMessages, None));
    assert_eq!(classify("/v1beta/models?pageSize=50", "GET", &hints(false, false, false, true)), models(ClientApi::Gemini, None));
    assert_eq!(classify("/v1beta/models/gemini-2.0-flash", "GET", &openai), models(ClientApi::Gemini, Some("gemini-2.0-flash")));
    let Local::Models(q) = classify("/v1/models?key=tg%2Dk", "GET", &hints(false, false, false, false)) else { panic!() };
    assert_eq!((q.shape, q.key.as_deref()), (ClientApi::Gemini, Some("tg-k")));

    let Local::WrongMethod(q, r) = classify("/v1/models", "POST", &openai) else { panic!() };
    assert_eq!((q.shape, r.refusal.status()), (ClientApi::OpenaiChat, 405));
    let unknown = |path: &str, h: &Hints| match classify(path, "POST", h) {
        Local::Unknown(shape, r) => {
            assert_eq!((r.refusal.status(), r.error_type), (404, "unknown_path"));
            shape
        }
        other => panic!("{path}: {other:?}"),
    };
    assert_eq!(unknown("/v1beta/cachedContents", &openai), ClientApi::Gemini);
    assert_eq!(unknown("/v1beta/models/g:listen", &openai), ClientApi::Gemini);
    assert_eq!(unknown("/v1/messages/batches", &openai), ClientApi::AnthropicMessages);
    assert_eq!(unknown("/v1/files", &hints(true, true, false, false)), ClientApi::AnthropicMessages);
    assert_eq!(unknown("/v1/files", &openai), ClientApi::OpenaiChat);
    assert_eq!(unknown("/v1/models/", &openai), ClientApi::OpenaiChat);
    assert_eq!(unknown("/v1/models/a/b", &openai), ClientApi::OpenaiChat);
    assert_eq!(unknown("/", &openai), ClientApi::OpenaiChat);
}

fn answer_json(query: Local, visible: &[Listed<'_>]) -> Result<Value, Refusal> {
    let Local::Models(q) = query else { panic!() };
    answer(&q, visible).map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn answers_in_each_shape() {
    let s = state(json!(["gemini-2.0-flash"]));
    let all = visible(&s, None);
    let v = answer_json(models(ClientApi::OpenaiChat, None), &all).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0], json!({"id": "o4-mini", "object": "model", "created": 0, "owned_by": "a"}));
    assert_eq!(v["data"].as_array().unwrap().len(), 3);

    let v = answer_json(models(ClientApi::AnthropicMessages, None), &all).unwrap();
    assert_eq!(v["data"][1], json!({"type": "model", "id": "fast", "display_name": "fast", "created_at": "1970-01-01T00:00:00Z"}));
    assert_eq!((v["has_more"].as_bool(), v["first_id"].as_str(), v["last_id"].as_str()), (Some(false), Some("o4-mini"), Some("gemini-2.0-flash")));
    let v = answer_json(models(ClientApi::AnthropicMessages, None), &[]).unwrap();
    assert_eq!(v, json!({"data": [], "has_more": false, "first_id": null, "last_id": null}));

    let v = answer_json(models(ClientApi::Gemini, None), &all).unwrap();
    assert_eq!(v["models"][2]["name"], "models/gemini-2.0-flash");
    assert_eq!(v["models"][2]["supportedGenerationMethods"],
               json!(["generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents"]));
    assert_eq!(v["models"][0]["supportedGenerationMethods"], json!([]));

    let v = answer_json(models(ClientApi::OpenaiChat, Some("fast")), &all).unwrap();
    assert_eq!(v["id"], "fast");
    let v = answer_json(models(ClientApi::Gemini, Some("models/gemini-2.0-flash")), &all).unwrap();
    assert_eq!(v["displayName"], "gemini-2.0-flash");
    let r = answer_json(models(ClientApi::OpenaiChat, Some("gpt-4o")), &all).unwrap_err();
    assert_eq!((r.refusal.status(), r.error_type), (404, "unknown_model"));
}

#[test]
fn gemini_batch_requests_follow_an_alias() {
    let body = br#"{"requests":[{"model":"models/emb","content":{"parts":[{"text":"a"}]}},{"content":{"parts":[]},"model":"models/emb"}],"x":1}"#;
    let out = String::from_utf8(gemini_batch_body(body, "text-embedding-004").unwrap().unwrap()).unwrap();
    assert_eq!(out, r#"{"requests":[{"model":"models/text-embedding-004","content":{"parts":[{"text":"a"}]}},{"content":{"parts":[]},"model":"models/text-embedding-004"}],"x":1}"#);
    assert!(gemini_batch_body(br#"{"requests":5}"#, "m").is_err());
    assert!(gemini_batch_body(br#"{"contents":[]}"#, "m").is_err());
}
