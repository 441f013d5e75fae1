//! Model routing: requested model name -> provider entry and upstream model name.
//!
//! Precedence: an exact name (including aliases) wins; otherwise the first glob in
//! configuration order. Entries are validated at load (`config.rs`), so every route's
//! provider exists.

use crate::api::{AuthScheme, ClientApi};
use crate::deployments::{Deployment, VirtualModel};
use std::collections::HashMap;
use tollgate_core::glob::Glob;

#[derive(Debug, Clone)]
pub struct Provider {
    /// Value of the routing header; an Envoy route maps it to the provider's cluster.
    pub name: String,
    /// Client APIs the provider speaks; `None`: all.
    pub apis: Option<Vec<ClientApi>>,
    /// The provider's key and, if fixed, how to send it.
    pub credential: Option<(String, Option<AuthScheme>)>,
    pub headers: Vec<(String, String)>,
    /// `ip:port` in the deployments cluster (providers of virtual models).
    pub address: Option<String>,
}

impl Provider {
    pub fn speaks(&self, api: ClientApi) -> bool {
        match &self.apis {
            Some(apis) => apis.contains(&api),
            None => true,
        }
    }

    /// The credential header for a request of `api`, if the provider has a credential.
    pub fn credential_header(&self, api: ClientApi) -> Option<(&'static str, String)> {
        self.credential
            .as_ref()
            .map(|(key, scheme)| scheme.unwrap_or_else(|| api.default_auth()).header(key))
    }
}

#[derive(Debug)]
struct Route {
    pattern: Glob,
    /// The provider (a virtual model: its first deployment's, for records of refusals).
    provider: usize,
    upstream_model: Option<String>,
    /// Index into `Router::virtual_models`.
    virtual_model: Option<usize>,
}

/// A deployment as configured, before its provider is resolved.
pub struct DeploymentSpec {
    pub name: Option<String>,
    pub provider: String,
    pub upstream_model: Option<String>,
    pub weight: u32,
    pub priority: u32,
}

/// What a model route sends to.
pub enum Target {
    Provider { provider: String, upstream_model: Option<String> },
    Deployments(Vec<DeploymentSpec>),
}

#[derive(Debug)]
pub struct Router {
    providers: Vec<Provider>,
    routes: Vec<Route>,
    exact: HashMap<String, usize>,
    virtual_models: Vec<VirtualModel>,
}

/// Where a model goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'a, 'm> {
    pub provider: &'a Provider,
    /// The model name sent upstream (the alias target, or the requested name).
    pub upstream_model: &'m str,
    /// True when the upstream name differs from the requested one (body or path rewritten).
    pub rewritten: bool,
    /// The pattern that matched, as configured.
    pub pattern: &'a str,
    /// A virtual model: its index and deployments (the provider and upstream model above
    /// are then its first deployment's).
    pub virtual_model: Option<(usize, &'a VirtualModel)>,
}

impl PartialEq for Provider {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Provider {}

impl Router {
    /// `routes`: (model pattern, provider name, upstream model). Unknown provider names are
    /// skipped (config validation refuses them before this point).
    pub fn new(providers: Vec<Provider>, routes: impl IntoIterator<Item = (String, String, Option<String>)>) -> Self {
        let targets = routes.into_iter().map(|(pattern, provider, upstream_model)| (pattern, Target::Provider { provider, upstream_model }));
        Self::with_targets(providers, targets)
    }

    /// Routes to providers or to virtual models' deployments.
    pub fn with_targets(providers: Vec<Provider>, routes: impl IntoIterator<Item = (String, Target)>) -> Self {
        let mut out = Router { providers, routes: Vec::new(), exact: HashMap::new(), virtual_models: Vec::new() };
        for (pattern, target) in routes {
            let index_of = |name: &str| out.providers.iter().position(|p| p.name == name);
            let (provider, upstream_model, virtual_model) = match target {
                Target::Provider { provider, upstream_model } => {
                    let Some(index) = index_of(&provider) else { continue };
                    (index, upstream_model, None)
                }
                Target::Deployments(specs) => {
                    let deployments: Vec<Deployment> = specs
                        .into_iter()
                        .filter_map(|d| {
                            let provider = index_of(&d.provider)?;
                            let shown = d.upstream_model.clone().unwrap_or_else(|| pattern.clone());
                            Some(Deployment {
                                name: d.name.unwrap_or_else(|| format!("{}/{shown}", d.provider)),
                                provider,
                                upstream_model: d.upstream_model,
                                weight: d.weight,
                                priority: d.priority,
                            })
                        })
                        .collect();
                    let Some(first) = deployments.iter().min_by_key(|d| d.priority) else { continue };
                    let (provider, model) = (first.provider, first.upstream_model.clone());
                    out.virtual_models.push(VirtualModel { deployments });
                    (provider, model, Some(out.virtual_models.len() - 1))
                }
            };
            let glob = Glob::new(&pattern);
            if glob.is_exact() {
                out.exact.entry(pattern.clone()).or_insert(out.routes.len());
            }
            out.routes.push(Route { pattern: glob, provider, upstream_model, virtual_model });
        }
        out
    }

    pub fn has_virtual_models(&self) -> bool {
        !self.virtual_models.is_empty()
    }

    pub fn virtual_model(&self, index: usize) -> Option<&VirtualModel> {
        self.virtual_models.get(index)
    }

    pub fn provider_at(&self, index: usize) -> Option<&Provider> {
        self.providers.get(index)
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// Resolves a requested model; `None`: unknown model (404).
    pub fn route<'a: 'm, 'm>(&'a self, model: &'m str) -> Option<Decision<'a, 'm>> {
        let route = match self.exact.get(model) {
            Some(i) => self.routes.get(*i)?,
            None => self.routes.iter().find(|r| !r.pattern.is_exact() && r.pattern.matches(model))?,
        };
        let provider = self.providers.get(route.provider)?;
        let upstream_model = route.upstream_model.as_deref().unwrap_or(model);
        let virtual_model = route.virtual_model.and_then(|i| self.virtual_models.get(i).map(|v| (i, v)));
        Some(Decision { provider, upstream_model, rewritten: upstream_model != model, pattern: route.pattern.pattern(), virtual_model })
    }
}

/// Whether an identity's model list (globs; `None`: any) allows `model`.
pub fn model_allowed(allowed: Option<&[Glob]>, model: &str) -> bool {
    match allowed {
        Some(globs) => globs.iter().any(|g| g.matches(model)),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, apis: Option<Vec<ClientApi>>, credential: Option<(&str, Option<AuthScheme>)>) -> Provider {
        Provider {
            name: name.into(),
            apis,
            credential: credential.map(|(k, s)| (k.to_string(), s)),
            headers: vec![],
            address: None,
        }
    }

    fn router() -> Router {
        Router::new(
            vec![
                provider("a", None, Some(("sk-a", None))),
                provider("b", Some(vec![ClientApi::AnthropicMessages]), Some(("sk-b", Some(AuthScheme::Bearer)))),
            ],
            [
                ("gpt-*".to_string(), "a".to_string(), None),
                ("claude-*".to_string(), "b".to_string(), None),
                ("gpt-4o-special".to_string(), "b".to_string(), None),
                ("fast".to_string(), "a".to_string(), Some("gpt-4o-mini".to_string())),
                ("*-latest".to_string(), "b".to_string(), Some("claude-3-5-sonnet".to_string())),
                ("ghost".to_string(), "nope".to_string(), None),
            ],
        )
    }

    #[test]
    fn exact_beats_glob_and_first_glob_wins() {
        let r = router();
        assert_eq!(r.route("gpt-4o").unwrap().provider.name, "a");
        assert_eq!(r.route("gpt-4o-special").unwrap().provider.name, "b");
        assert_eq!(r.route("claude-3").unwrap().provider.name, "b");
        // "gpt-x-latest" matches gpt-* first (config order).
        assert_eq!(r.route("gpt-x-latest").unwrap().upstream_model, "gpt-x-latest");
        assert!(r.route("llama").is_none());
        assert!(r.route("ghost").is_none());
    }

    #[test]
    fn aliases_rewrite_the_upstream_model() {
        let r = router();
        let d = r.route("fast").unwrap();
        assert_eq!((d.provider.name.as_str(), d.upstream_model, d.rewritten), ("a", "gpt-4o-mini", true));
        let d = r.route("sonnet-latest").unwrap();
        assert_eq!((d.upstream_model, d.pattern), ("claude-3-5-sonnet", "*-latest"));
        assert!(!r.route("gpt-4o").unwrap().rewritten);
    }

    #[test]
    fn credentials_follow_the_api_unless_fixed() {
        let r = router();
        let a = r.provider("a").unwrap();
        assert_eq!(a.credential_header(ClientApi::OpenaiChat), Some(("authorization", "Bearer sk-a".into())));
        assert_eq!(a.credential_header(ClientApi::AnthropicMessages), Some(("x-api-key", "sk-a".into())));
        assert_eq!(a.credential_header(ClientApi::Gemini), Some(("x-goog-api-key", "sk-a".into())));
        let b = r.provider("b").unwrap();
        assert_eq!(b.credential_header(ClientApi::AnthropicMessages), Some(("authorization", "Bearer sk-b".into())));
        assert!(b.speaks(ClientApi::AnthropicMessages) && !b.speaks(ClientApi::OpenaiChat));
        assert!(a.speaks(ClientApi::Gemini));
    }

    #[test]
    fn model_allow_lists() {
        let globs = vec![Glob::new("gpt-4*"), Glob::new("fast")];
        assert!(model_allowed(None, "anything"));
        assert!(model_allowed(Some(&globs), "gpt-4o"));
        assert!(model_allowed(Some(&globs), "fast"));
        assert!(!model_allowed(Some(&globs), "claude-3"));
        assert!(!model_allowed(Some(&[]), "gpt-4o"));
    }
}
