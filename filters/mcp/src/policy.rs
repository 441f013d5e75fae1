//! The compiled policy: ordered allow/deny rules over identity, MCP server, method, target
//! (tool, prompt, resource URI) and argument conditions. Compiled once at configure time;
//! evaluation never touches the host.
//!
//! Semantics:
//! - a rule matches when every condition it has holds (a list condition: any element);
//! - any matching deny wins; otherwise the first matching allow allows; otherwise deny;
//! - for list filtering (`tools/list` ...) each item is judged as a call of it with unknown
//!   arguments: it is shown when some allow rule could match (argument conditions assumed
//!   satisfiable) and no deny rule without argument conditions matches;
//! - argument values are tested fail closed: a value a test cannot read (a regex on a
//!   number, a range on an object, `equals: "x"` on `5`) makes a deny condition match and an
//!   allow condition fail; in deny rules an array is tested element by element (see
//!   [`Condition::holds`]);
//! - numbers compare by exact decimal value and by the nearest double; a string holding
//!   JSON is read both as written and as that JSON: a deny condition matches when either
//!   reading matches, an allow condition holds only when both readings satisfy it (see
//!   [`Condition::holds`]).

pub use crate::matcher::Subject;
use crate::matcher::{glob_any, IdentityMatch};
use crate::config::{ArgumentConfig, DenyStyle, Effect, PolicyConfig, Quantifier, RuleConfig};
use crate::message::Target;
use crate::jsonpath::{JsonPath, View};
use crate::number::{Decimal, Reading};
use regex_lite::Regex;
use crate::args::{self, Json};
use std::borrow::Cow;
use tollgate_core::config::ConfigError;
use tollgate_core::glob::Glob;
use tollgate_core::identity::Identity;

#[derive(Debug)]
pub struct Policy {
    pub deny_style: DenyStyle,
    pub dry_run: bool,
    rules: Vec<Rule>,
    tools: ToolIndex,
}

/// Which rules can match a call of a given tool, so a call is judged against those alone
/// (in rule order, which keeps the semantics): rules naming only exact tools are found by
/// name; every other rule (no tool condition, or a wildcard) is always a candidate.
#[derive(Debug, Default)]
struct ToolIndex {
    exact: std::collections::HashMap<String, Vec<usize>>,
    other: Vec<usize>,
}

impl ToolIndex {
    fn new(rules: &[Rule]) -> Self {
        let mut index = ToolIndex::default();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.tools {
                Some(globs) if globs.iter().all(Glob::is_exact) => {
                    for g in globs {
                        let slot = index.exact.entry(g.pattern().to_string()).or_default();
                        if slot.last() != Some(&i) {
                            slot.push(i);
                        }
                    }
                }
                _ => index.other.push(i),
            }
        }
        index
    }

    /// Candidate rule indices for a call of `tool`, ascending.
    fn candidates<'a>(&'a self, tool: &str) -> impl Iterator<Item = usize> + 'a {
        let named = self.exact.get(tool).map(Vec::as_slice).unwrap_or(&[]);
        MergeAscending { a: named, b: &self.other }
    }
}

/// Merges two ascending index lists.
struct MergeAscending<'a> {
    a: &'a [usize],
    b: &'a [usize],
}

impl Iterator for MergeAscending<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let take_a = match (self.a.first(), self.b.first()) {
            (Some(a), Some(b)) => a <= b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let (list, other) = if take_a { (&mut self.a, &mut self.b) } else { (&mut self.b, &mut self.a) };
        let (&first, rest) = list.split_first()?;
        *list = rest;
        if other.first() == Some(&first) {
            *other = other.get(1..).unwrap_or_default();
        }
        Some(first)
    }
}

#[derive(Debug)]
struct Rule {
    id: String,
    effect: Effect,
    who: IdentityMatch,
    servers: Option<Vec<Glob>>,
    methods: Option<Vec<Glob>>,
    tools: Option<Vec<Glob>>,
    prompts: Option<Vec<Glob>>,
    resources: Option<Vec<Glob>>,
    arguments: Vec<Condition>,
}

#[derive(Debug)]
struct Condition {
    path: JsonPath,
    test: Test,
    quantifier: Quantifier,
    /// In a deny rule: values the test cannot read count as matching.
    deny: bool,
}

/// What a test makes of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    /// The value is not of a type the test reads.
    Untestable,
}

#[derive(Debug)]
enum Test {
    Equals(Json<'static>),
    OneOf(Vec<Json<'static>>),
    Regex(Regex),
    Range { gt: Option<RangeBound>, gte: Option<RangeBound>, lt: Option<RangeBound>, lte: Option<RangeBound> },
    Exists(bool),
}

/// A range bound: its exact value and its double.
#[derive(Debug)]
struct RangeBound {
    exact: Decimal,
    double: f64,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'p> {
    pub allowed: bool,
    /// The deciding rule; `None` for the default deny.
    pub rule_id: Option<&'p str>,
}

impl<'p> Verdict<'p> {
    fn allow(rule: &'p Rule) -> Self {
        Verdict { allowed: true, rule_id: Some(&rule.id) }
    }
    fn deny(rule: Option<&'p Rule>) -> Self {
        Verdict { allowed: false, rule_id: rule.map(|r| r.id.as_str()) }
    }
}

/// Regex programs larger than this are refused at load (bounded memory per worker).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Policy {
    /// Compiles the rules, refusing the first bad one with its field path and rule id.
    pub fn compile(config: &PolicyConfig, prefix: &str) -> Result<Policy, ConfigError> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let at = format!("{prefix}.rules[{i}]");
            if rule.id.trim().is_empty() {
                return Err(ConfigError::field(&format!("{at}.id"), "must not be empty"));
            }
            if config.rules.iter().take(i).any(|r| r.id == rule.id) {
                return Err(ConfigError::field(&format!("{at}.id"), format!("duplicate rule id `{}`", rule.id)));
            }
            rules.push(compile_rule(rule, &at)?);
        }
        let tools = ToolIndex::new(&rules);
        Ok(Policy { deny_style: config.deny_style, dry_run: config.dry_run, rules, tools })
    }

    /// Judges one request.
    pub fn decide(&self, subject: Subject<'_>, method: &str, target: &Target<'_>, args: &Json<'_>) -> Verdict<'_> {
        match target {
            Target::Tool(name) => {
                self.decide_among(self.tools.candidates(name).filter_map(|i| self.rules.get(i)), subject, method, target, args)
            }
            _ => self.decide_among(self.rules.iter(), subject, method, target, args),
        }
    }

    fn decide_among<'p>(
        &'p self,
        rules: impl Iterator<Item = &'p Rule>,
        subject: Subject<'_>,
        method: &str,
        target: &Target<'_>,
        args: &Json<'_>,
    ) -> Verdict<'p> {
        let mut first_allow: Option<&Rule> = None;
        // Whether some string of the arguments holds JSON: read once, when a rule asks.
        let mut encoded: Option<bool> = None;
        for rule in rules {
            if !rule.matches_scope(subject, method, target) {
                continue;
            }
            let args_hold = rule.arguments.iter().all(|c| c.holds(args, *encoded.get_or_insert_with(|| args.has_encoded())));
            match rule.effect {
                Effect::Deny if args_hold => return Verdict::deny(Some(rule)),
                Effect::Allow if args_hold && first_allow.is_none() => first_allow = Some(rule),
                _ => {}
            }
        }
        match first_allow {
            Some(rule) => Verdict::allow(rule),
            None => Verdict::deny(None),
        }
    }

    /// Whether a listed item is shown: judged as a call of it (`method`) with unknown
    /// arguments.
    pub fn visible(&self, subject: Subject<'_>, method: &str, target: &Target<'_>) -> Verdict<'_> {
        let mut first_allow: Option<&Rule> = None;
        for rule in &self.rules {
            if !rule.matches_scope(subject, method, target) {
                continue;
            }
            match rule.effect {
                Effect::Deny if rule.arguments.is_empty() => return Verdict::deny(Some(rule)),
                Effect::Allow if first_allow.is_none() => first_allow = Some(rule),
                _ => {}
            }
        }
        match first_allow {
            Some(rule) => Verdict::allow(rule),
            None => Verdict::deny(None),
        }
    }

    /// GET (standalone stream) and DELETE (end session) carry no JSON-RPC message: they pass
    /// when some allow rule covers this identity on this server (whatever its method or
    /// target) and no deny rule excludes the identity from the whole server.
    pub fn may_use_server(&self, subject: Subject<'_>) -> Verdict<'_> {
        let mut first_allow: Option<&Rule> = None;
        for rule in &self.rules {
            if !rule.matches_identity(subject.identity) || !glob_any(&rule.servers, subject.server) {
                continue;
            }
            let server_wide = rule.methods.is_none()
                && rule.tools.is_none()
                && rule.prompts.is_none()
                && rule.resources.is_none()
                && rule.arguments.is_empty();
            match rule.effect {
                Effect::Deny if server_wide => return Verdict::deny(Some(rule)),
                Effect::Allow if first_allow.is_none() => first_allow = Some(rule),
                _ => {}
            }
        }
        match first_allow {
            Some(rule) => Verdict::allow(rule),
            None => Verdict::deny(None),
        }
    }
}

fn compile_rule(rule: &RuleConfig, at: &str) -> Result<Rule, ConfigError> {
    let mut arguments = Vec::with_capacity(rule.arguments.len());
    for (j, arg) in rule.arguments.iter().enumerate() {
        let field = format!("{at}.arguments[{j}]");
        arguments.push(compile_condition(arg, rule, &field)?);
    }
    Ok(Rule {
        id: rule.id.clone(),
        effect: rule.effect,
        who: IdentityMatch::new(&rule.principals, &rule.groups, &rule.teams),
        servers: rule.servers.clone(),
        methods: rule.methods.clone(),
        tools: rule.tools.clone(),
        prompts: rule.prompts.clone(),
        resources: rule.resources.clone(),
        arguments,
    })
}

fn compile_condition(arg: &ArgumentConfig, rule: &RuleConfig, field: &str) -> Result<Condition, ConfigError> {
    let named = |sub: &str, msg: String| ConfigError::field(&format!("{field}{sub}"), format!("{msg} (rule `{}`)", rule.id));
    if !arg.path.trim_start().starts_with('$') {
        return Err(named(".path", format!("JSONPath `{}` must start with `$` (the arguments object)", arg.path)));
    }
    let path = JsonPath::parse(arg.path.trim())
        .map_err(|e| named(".path", format!("invalid JSONPath `{}`: {e}", arg.path)))?;
    let range = [&arg.gt, &arg.gte, &arg.lt, &arg.lte];
    let mut tests: Vec<Test> = Vec::new();
    let expected = |raw: &serde_json::value::RawValue, sub: &str| {
        args::parse_literal(raw.get()).map(Json::into_owned).map_err(|e| named(sub, format!("invalid value: {e}")))
    };
    if let Some(v) = &arg.equals {
        tests.push(Test::Equals(expected(v, ".equals")?));
    }
    if let Some(v) = &arg.one_of {
        if v.is_empty() {
            return Err(named(".one_of", "must not be empty".into()));
        }
        tests.push(Test::OneOf(v.iter().map(|r| expected(r, ".one_of")).collect::<Result<_, _>>()?));
    }
    if let Some(r) = &arg.regex {
        let re = regex_lite::RegexBuilder::new(r)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| named(".regex", format!("invalid regex: {e}")))?;
        tests.push(Test::Regex(re));
    }
    if range.iter().any(|b| b.is_some()) {
        let bound = |b: &Option<crate::config::Bound>| -> Result<Option<RangeBound>, ConfigError> {
            let Some(b) = b else { return Ok(None) };
            match Reading::parse(&b.0) {
                Some(Reading { exact, double: Some(double) }) => Ok(Some(RangeBound { exact, double })),
                _ => Err(named("", "range bounds must be finite numbers".into())),
            }
        };
        tests.push(Test::Range { gt: bound(&arg.gt)?, gte: bound(&arg.gte)?, lt: bound(&arg.lt)?, lte: bound(&arg.lte)? });
    }
    if let Some(e) = arg.exists {
        tests.push(Test::Exists(e));
    }
    if tests.len() != 1 {
        return Err(named(
            "",
            format!(
                "needs exactly one test of equals, one_of, regex, a range (gt/gte/lt/lte) or exists; found {}",
                tests.len()
            ),
        ));
    }
    let quantifier = arg.quantifier.unwrap_or(match rule.effect {
        Effect::Allow => Quantifier::All,
        Effect::Deny => Quantifier::Any,
    });
    let test = tests.remove(0);
    Ok(Condition { path, test, quantifier, deny: rule.effect == Effect::Deny })
}

impl Rule {
    fn matches_identity(&self, identity: Option<&Identity>) -> bool {
        self.who.matches(identity)
    }

    fn matches_target(&self, target: &Target<'_>) -> bool {
        if self.tools.is_none() && self.prompts.is_none() && self.resources.is_none() {
            return true;
        }
        let (globs, name) = match target {
            Target::None => return false,
            Target::Tool(n) => (&self.tools, n),
            Target::Prompt(n) => (&self.prompts, n),
            Target::Resource(u) => (&self.resources, u),
        };
        globs.as_ref().is_some_and(|list| list.iter().any(|g| g.matches(name)))
    }

    /// Everything but the argument conditions.
    fn matches_scope(&self, subject: Subject<'_>, method: &str, target: &Target<'_>) -> bool {
        self.matches_identity(subject.identity)
            && glob_any(&self.servers, subject.server)
            && glob_any(&self.methods, method)
            && self.matches_target(target)
    }
}

impl Condition {
    /// Whether the condition holds for these arguments. `exists` looks only at presence.
    /// Otherwise no selected value: false; else each selected value counts as matching by
    /// its [`Outcome`], and `match` (`all` / `any`) combines them:
    /// - allow rules: only `Pass` matches (a value the test cannot read never satisfies it;
    ///   an array is such a value unless the test compares with arrays);
    /// - deny rules (fail closed): `Pass` and `Untestable` match, so `{"path": 5}` or
    ///   `{"path": {"p": "/etc/passwd"}}` hit a regex deny on `$.path`; an array the test does
    ///   not compare with is tested element by element and matches when any element does
    ///   (or cannot be tested): `{"path": ["/tmp/x", "/etc/passwd"]}` hits it too (an empty
    ///   array has nothing that matches).
    ///
    /// Strings holding JSON (`"[\"users\"]"`, [`Json::Encoded`]) have two readings, the
    /// string as written and the JSON it holds, as a server may take either (the MCP Python
    /// SDK parses such a string for a parameter not typed as a string; pydantic's `Json`
    /// types do at any depth). Fail closed on both sides:
    /// - a deny condition matches when either reading matches: with `match: any` (the
    ///   default) every value of every reading is tried, paths going into the JSON a string
    ///   holds; with `match: all` or `exists`, the arguments read as written or with every
    ///   such string read as its JSON;
    /// - an allow condition holds only when it holds for both readings of the arguments (as
    ///   written, and with every such string read as its JSON): an allow must not pass a
    ///   value through a reading the server might not take, e.g. `{"table": "[\"orders\",
    ///   \"users\"]"}` passing an unanchored `regex: orders` as a string while the server
    ///   exports two tables.
    ///
    /// A string that looks like JSON (`[` or `{` first) but is not JSON this filter reads has
    /// an unknown second reading: it matches deny conditions whose paths reach it and fails
    /// allow conditions.
    fn holds(&self, args: &Json<'_>, encoded: bool) -> bool {
        if !encoded {
            return self.holds_in(args, View::Literal);
        }
        let any = self.quantifier == Quantifier::Any && !matches!(self.test, Test::Exists(_));
        if self.deny && any {
            return self.holds_in(args, View::Both);
        }
        let literal = self.holds_in(args, View::Literal);
        if self.deny {
            literal || self.holds_in(args, View::Decoded)
        } else {
            literal && self.holds_in(args, View::Decoded)
        }
    }

    fn holds_in(&self, args: &Json<'_>, view: View) -> bool {
        // Values are visited in place, stopping once the answer is known.
        let mut selected = false;
        if let Test::Exists(expected) = self.test {
            self.path.visit(args, view, &mut |_| {
                selected = true;
                false
            });
            return selected == expected;
        }
        match self.quantifier {
            Quantifier::All => {
                let all = self.path.visit(args, view, &mut |v| {
                    selected = true;
                    self.matches(v, view)
                });
                selected && all
            }
            Quantifier::Any => !self.path.visit(args, view, &mut |v| !self.matches(v, view)),
        }
    }

    fn matches(&self, value: &Json<'_>, view: View) -> bool {
        match value {
            Json::Encoded(s, reading) => {
                let as_written = || self.matches(&Json::String(Cow::Borrowed(s.as_ref())), view);
                // An unknown reading matches a deny and fails an allow.
                let as_json = || reading.as_deref().map_or(self.deny, |v| self.matches(v, view));
                match view {
                    View::Literal => as_written(),
                    View::Decoded => as_json(),
                    View::Both => as_written() || as_json(),
                }
            }
            Json::Array(items) if self.deny && !self.test.reads_arrays() => items.iter().any(|v| self.matches(v, view)),
            _ if self.deny => self.test.outcome(value, true, view) != Outcome::Fail,
            _ => self.test.outcome(value, false, view) == Outcome::Pass,
        }
    }
}

impl Test {
    /// `Untestable` when the value is not of the type the test reads: `regex` strings, a
    /// range numbers or numeric strings, `equals` / `one_of` the JSON type (null, boolean,
    /// number, string, array, object) of an expected value. Numbers have two readings, the
    /// exact decimal value and the nearest double: in a deny rule (`deny`) a test passes when
    /// either passes, in an allow rule when both do.
    fn outcome(&self, value: &Json<'_>, deny: bool, view: View) -> Outcome {
        let pass = |p: bool| if p { Outcome::Pass } else { Outcome::Fail };
        match self {
            Test::Equals(expected) if same_type(value, expected) => pass(json_eq(value, expected, deny, view)),
            Test::OneOf(options) if options.iter().any(|o| same_type(value, o)) => {
                pass(options.iter().any(|o| json_eq(value, o, deny, view)))
            }
            Test::Regex(re) => match value.as_str() {
                Some(s) => pass(re.is_match(s)),
                None => Outcome::Untestable,
            },
            Test::Range { gt, gte, lt, lte } => {
                let Some(Reading { exact: n, double: Some(d) }) = as_number(value) else { return Outcome::Untestable };
                let exact = bound(gt, |b| n > b.exact) && bound(gte, |b| n >= b.exact) && bound(lt, |b| n < b.exact) && bound(lte, |b| n <= b.exact);
                let double = bound(gt, |b| d > b.double) && bound(gte, |b| d >= b.double) && bound(lt, |b| d < b.double) && bound(lte, |b| d <= b.double);
                pass(if deny { exact || double } else { exact && double })
            }
            Test::Exists(_) => Outcome::Pass,
            Test::Equals(_) | Test::OneOf(_) => Outcome::Untestable,
        }
    }

    /// Whether an array value is compared as a whole (an expected value is an array).
    fn reads_arrays(&self) -> bool {
        match self {
            Test::Equals(expected) => expected.is_array(),
            Test::OneOf(options) => options.iter().any(Json::is_array),
            _ => false,
        }
    }
}

/// Same JSON type; a string holding JSON is a string.
fn same_type(a: &Json<'_>, b: &Json<'_>) -> bool {
    fn kind(j: &Json<'_>) -> u8 {
        match j {
            Json::Null => 0,
            Json::Bool(_) => 1,
            Json::Number(_) => 2,
            Json::String(_) | Json::Encoded(..) => 3,
            Json::Array(_) => 4,
            Json::Object(_) => 5,
        }
    }
    kind(a) == kind(b)
}

fn bound(limit: &Option<RangeBound>, within: impl Fn(&RangeBound) -> bool) -> bool {
    match limit {
        None => true,
        Some(b) => within(b),
    }
}

/// A number, or a string holding one: MCP servers commonly coerce `"500"` to 500, so a
/// range judges what the server will act on. Non-finite values are not numbers.
fn as_number(value: &Json<'_>) -> Option<Reading> {
    match value {
        Json::Number(n) => n.reading(),
        Json::String(s) => {
            let t = s.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')) {
                return None;
            }
            Reading::parse(t)
        }
        _ => None,
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`, `1e3` equals `1000`):
/// exactly in allow rules; in deny rules also when their doubles are equal (a server reading
/// doubles cannot tell `9007199254740993` from `9007199254740992`). `value` is the caller's
/// (strings in it may hold JSON, read per `view`); `expected` comes from the configuration.
fn json_eq(value: &Json<'_>, expected: &Json<'_>, deny: bool, view: View) -> bool {
    match (value, expected) {
        (Json::Encoded(s, reading), _) => {
            let as_written = || json_eq(&Json::String(Cow::Borrowed(s.as_ref())), expected, deny, view);
            let as_json = || reading.as_deref().map_or(deny, |v| json_eq(v, expected, deny, view));
            match view {
                View::Literal => as_written(),
                View::Decoded => as_json(),
                View::Both => as_written() || as_json(),
            }
        }
        (Json::Number(x), Json::Number(y)) => match (x.reading(), y.reading()) {
            (Some(a), Some(b)) => a.exact == b.exact || (deny && a.double.is_some() && a.double == b.double),
            _ => deny,
        },
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q, deny, view))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| expected.get(k).is_some_and(|w| json_eq(v, w, deny, view)))
        }
        _ => value == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::borrow::Cow;
    use tollgate_core::identity::Source;

    fn policy(rules: Value) -> Policy {
        let cfg: PolicyConfig = serde_json::from_value(json!({ "rules": rules })).unwrap();
        Policy::compile(&cfg, "policy").unwrap()
    }

    fn compile_err(rules: Value) -> String {
        let cfg: PolicyConfig = serde_json::from_value(json!({ "rules": rules })).unwrap();
        Policy::compile(&cfg, "policy").unwrap_err().0
    }

    fn who(principal: &str, groups: &[&str]) -> Identity {
        Identity {
            principal: principal.into(),
            team: Some("payments".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            source: Source::Jwt,
            key_name: None,
            allowed_models: None,
        }
    }

    fn tool(name: &str) -> Target<'_> {
        Target::Tool(Cow::Borrowed(name))
    }

    fn demo() -> Policy {
        policy(json!([
            {"id": "protocol", "effect": "allow", "methods": ["initialize", "ping", "notifications/*", "tools/list"]},
            {"id": "basic", "effect": "allow", "tools": ["add", "echo"]},
            {"id": "db", "effect": "allow", "tools": ["query_db"], "arguments": [{"path": "$.table", "one_of": ["orders", "products"]}]},
            {"id": "money", "effect": "allow", "groups": ["finance"], "tools": ["transfer"], "arguments": [{"path": "$.amount", "lte": 1000}]},
            {"id": "no-admin", "effect": "deny", "tools": ["admin_*"]},
            {"id": "admins", "effect": "allow", "groups": ["admins"]},
            {"id": "no-mallory", "effect": "deny", "principals": ["mallory"]},
        ]))
    }

    #[test]
    fn deny_wins_and_default_denies() {
        let p = demo();
        let alice = who("alice", &["eng"]);
        let s = Subject { identity: Some(&alice), server: "demo" };
        let v = p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({})));
        assert_eq!(v, Verdict { allowed: true, rule_id: Some("basic") });
        let v = p.decide(s, "tools/call", &tool("delete_row"), &Json::from_value(&json!({})));
        assert_eq!(v, Verdict { allowed: false, rule_id: None });
        let root = who("root", &["admins"]);
        let s = Subject { identity: Some(&root), server: "demo" };
        assert!(p.decide(s, "tools/call", &tool("delete_row"), &Json::from_value(&json!({}))).allowed);
        let v = p.decide(s, "tools/call", &tool("admin_reset"), &Json::from_value(&json!({})));
        assert_eq!(v, Verdict { allowed: false, rule_id: Some("no-admin") });
        let mallory = who("mallory", &["admins"]);
        let s = Subject { identity: Some(&mallory), server: "demo" };
        assert_eq!(p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({}))).rule_id, Some("no-mallory"));
    }

    #[test]
    fn argument_rules_at_the_boundary() {
        let p = demo();
        let bob = who("bob", &["finance"]);
        let s = Subject { identity: Some(&bob), server: "demo" };
        let call = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).allowed;
        assert!(call("query_db", json!({"table": "orders", "sql": "x"})));
        assert!(call("query_db", json!({"table": "products"})));
        assert!(!call("query_db", json!({"table": "customers"})));
        assert!(!call("query_db", json!({"sql": "x"})));
        assert!(!call("query_db", json!({"table": ["orders"]})));
        assert!(call("transfer", json!({"amount": 1000, "to": "x"})));
        assert!(call("transfer", json!({"amount": 1000.0})));
        assert!(call("transfer", json!({"amount": "999.5"})));
        assert!(!call("transfer", json!({"amount": 1000.01})));
        assert!(!call("transfer", json!({"amount": 1001})));
        assert!(!call("transfer", json!({"amount": "1e9"})));
        assert!(!call("transfer", json!({"amount": "NaN"})));
        assert!(!call("transfer", json!({"amount": null})));
        assert!(!call("transfer", json!({})));
        let eve = who("eve", &["eng"]);
        let s = Subject { identity: Some(&eve), server: "demo" };
        assert!(!p.decide(s, "tools/call", &tool("transfer"), &Json::from_value(&json!({"amount": 1}))).allowed);
    }

    #[test]
    fn list_visibility() {
        let p = demo();
        let alice = who("alice", &["eng"]);
        let s = Subject { identity: Some(&alice), server: "demo" };
        let shown: Vec<&str> = ["add", "echo", "query_db", "transfer", "delete_row", "admin_reset"]
            .into_iter()
            .filter(|t| p.visible(s, "tools/call", &tool(t)).allowed)
            .collect();
        assert_eq!(shown, ["add", "echo", "query_db"]);
        let bob = who("bob", &["finance"]);
        let s = Subject { identity: Some(&bob), server: "demo" };
        assert!(p.visible(s, "tools/call", &tool("transfer")).allowed);
        // A deny with argument conditions does not hide the tool.
        let p = policy(json!([
            {"id": "all", "effect": "allow"},
            {"id": "big", "effect": "deny", "tools": ["transfer"], "arguments": [{"path": "$.amount", "gt": 10}]},
        ]));
        assert!(p.visible(s, "tools/call", &tool("transfer")).allowed);
        assert!(!p.decide(s, "tools/call", &tool("transfer"), &Json::from_value(&json!({"amount": 11}))).allowed);
    }

    #[test]
    fn identity_conditions_and_anonymous() {
        let p = policy(json!([
            {"id": "authn", "effect": "allow", "principals": ["*"], "tools": ["add"]},
            {"id": "team", "effect": "allow", "teams": ["pay*"], "tools": ["echo"]},
            {"id": "open", "effect": "allow", "methods": ["ping"]},
        ]));
        let anon = Subject { identity: None, server: "demo" };
        assert!(!p.decide(anon, "tools/call", &tool("add"), &Json::from_value(&json!({}))).allowed);
        assert!(p.decide(anon, "ping", &Target::None, &Json::from_value(&json!({}))).allowed);
        let alice = who("alice", &[]);
        let s = Subject { identity: Some(&alice), server: "demo" };
        assert!(p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({}))).allowed);
        assert!(p.decide(s, "tools/call", &tool("echo"), &Json::from_value(&json!({}))).allowed);
        // Rules with a target condition do not match messages without a target.
        assert!(!p.decide(s, "tools/list", &Target::None, &Json::from_value(&json!({}))).allowed);
    }

    #[test]
    fn servers_and_session_methods() {
        let p = policy(json!([
            {"id": "a-on-x", "effect": "allow", "principals": ["alice"], "servers": ["x"], "tools": ["add"]},
            {"id": "ban", "effect": "deny", "principals": ["bob"], "servers": ["x"]},
            {"id": "bob", "effect": "allow", "principals": ["bob"]},
        ]));
        let alice = who("alice", &[]);
        let bob = who("bob", &[]);
        assert!(p.may_use_server(Subject { identity: Some(&alice), server: "x" }).allowed);
        assert!(!p.may_use_server(Subject { identity: Some(&alice), server: "y" }).allowed);
        assert_eq!(p.may_use_server(Subject { identity: Some(&bob), server: "x" }).rule_id, Some("ban"));
        assert!(p.may_use_server(Subject { identity: Some(&bob), server: "y" }).allowed);
        assert!(!p.may_use_server(Subject { identity: None, server: "x" }).allowed);
        let s = Subject { identity: Some(&alice), server: "y" };
        assert!(!p.decide(s, "tools/call", &tool("add"), &Json::from_value(&json!({}))).allowed);
    }

    #[test]
    fn prompts_and_resources() {
        let p = policy(json!([
            {"id": "data", "effect": "allow", "resources": ["file:///data/*"], "prompts": ["greeting"]},
        ]));
        let s = Subject { identity: None, server: "demo" };
        let res = |u: &'static str| Target::Resource(Cow::Borrowed(u));
        assert!(p.decide(s, "resources/read", &res("file:///data/readme.txt"), &Json::from_value(&json!({}))).allowed);
        assert!(!p.decide(s, "resources/read", &res("file:///secret/keys.txt"), &Json::from_value(&json!({}))).allowed);
        assert!(p.decide(s, "prompts/get", &Target::Prompt(Cow::Borrowed("greeting")), &Json::from_value(&json!({}))).allowed);
        assert!(!p.decide(s, "tools/call", &tool("greeting"), &Json::from_value(&json!({}))).allowed);
    }

    #[test]
    fn argument_tests() {
        let p = policy(json!([
            {"id": "eq", "effect": "allow", "tools": ["eq"], "arguments": [{"path": "$.mode", "equals": "ro"}, {"path": "$.n", "equals": 2}]},
            {"id": "re", "effect": "allow", "tools": ["sql"], "arguments": [{"path": "$.sql", "regex": "(?i)^\\s*select\\b"}]},
            {"id": "ex", "effect": "allow", "tools": ["ex"], "arguments": [{"path": "$.force", "exists": false}]},
            {"id": "all", "effect": "allow", "tools": ["pay"], "arguments": [{"path": "$.items[*].amount", "lt": 100}]},
            {"id": "any", "effect": "deny", "tools": ["pay"], "arguments": [{"path": "$.items[*].to", "equals": "evil"}]},
            {"id": "nested", "effect": "allow", "tools": ["nested"], "arguments": [{"path": "$.opts.depth", "gte": 1, "lte": 3}]},
        ]));
        let s = Subject { identity: None, server: "demo" };
        let call = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).allowed;
        assert!(call("eq", json!({"mode": "ro", "n": 2.0})));
        assert!(!call("eq", json!({"mode": "rw", "n": 2})));
        assert!(call("sql", json!({"sql": "  SELECT * from t"})));
        assert!(!call("sql", json!({"sql": "delete from t"})));
        assert!(!call("sql", json!({"sql": 5})));
        assert!(call("ex", json!({})));
        assert!(!call("ex", json!({"force": false})));
        assert!(call("pay", json!({"items": [{"amount": 1, "to": "a"}, {"amount": 99, "to": "b"}]})));
        assert!(!call("pay", json!({"items": [{"amount": 1, "to": "a"}, {"amount": 100, "to": "b"}]})));
        assert!(!call("pay", json!({"items": [{"amount": 1, "to": "evil"}, {"amount": 2, "to": "b"}]})));
        assert!(!call("pay", json!({"items": []})));
        assert!(call("nested", json!({"opts": {"depth": 3}})));
        assert!(!call("nested", json!({"opts": {"depth": 4}})));
        assert!(!call("nested", json!({"opts": {"depth": 0}})));
    }

    #[test]
    fn deny_conditions_fail_closed_on_values_they_cannot_test() {
        let p = policy(json!([
            {"id": "files", "effect": "allow", "tools": ["read_file", "pay", "run", "tag"]},
            {"id": "no-etc", "effect": "deny", "tools": ["read_file"], "arguments": [{"path": "$.path", "regex": "^/etc/"}]},
            {"id": "no-big", "effect": "deny", "tools": ["pay"], "arguments": [{"path": "$.amount", "gt": 1000}]},
            {"id": "no-rm", "effect": "deny", "tools": ["run"], "arguments": [{"path": "$.cmd", "one_of": ["rm", "dd"]}]},
            {"id": "no-pair", "effect": "deny", "tools": ["tag"], "arguments": [{"path": "$.tags", "equals": ["a", "b"]}]},
        ]));
        let s = Subject { identity: None, server: "demo" };
        let rule = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).rule_id;
        // Testable values: the deny decides by the test.
        assert_eq!(rule("read_file", json!({"path": "/etc/passwd"})), Some("no-etc"));
        assert_eq!(rule("read_file", json!({"path": "/tmp/x"})), Some("files"));
        // Arrays: any element that matches (or cannot be tested) denies.
        assert_eq!(rule("read_file", json!({"path": ["/etc/passwd"]})), Some("no-etc"));
        assert_eq!(rule("read_file", json!({"path": ["/tmp/x", ["/etc/shadow"]]})), Some("no-etc"));
        assert_eq!(rule("read_file", json!({"path": ["/tmp/x", 5]})), Some("no-etc"));
        assert_eq!(rule("read_file", json!({"path": ["/tmp/x", "/tmp/y"]})), Some("files"));
        assert_eq!(rule("read_file", json!({"path": []})), Some("files"));
        // Present but of a type the test cannot read: denied.
        for odd in [json!(5), json!(true), json!(null), json!({"p": "/etc/passwd"})] {
            assert_eq!(rule("read_file", json!({"path": odd})), Some("no-etc"), "{odd}");
        }
        // Absent: the condition does not hold.
        assert_eq!(rule("read_file", json!({})), Some("files"));
        // Ranges read numbers and numeric strings; anything else denies.
        assert_eq!(rule("pay", json!({"amount": 5})), Some("files"));
        assert_eq!(rule("pay", json!({"amount": "5000"})), Some("no-big"));
        for odd in [json!("lots"), json!("NaN"), json!({"v": 5}), json!(null), json!([1, 2000])] {
            assert_eq!(rule("pay", json!({"amount": odd})), Some("no-big"), "{odd}");
        }
        assert_eq!(rule("pay", json!({"amount": [1, 2]})), Some("files"));
        // equals / one_of read values of an expected value's type.
        assert_eq!(rule("run", json!({"cmd": "ls"})), Some("files"));
        assert_eq!(rule("run", json!({"cmd": ["ls", "rm"]})), Some("no-rm"));
        assert_eq!(rule("run", json!({"cmd": 0})), Some("no-rm"));
        assert_eq!(rule("run", json!({"cmd": {"name": "rm"}})), Some("no-rm"));
        // An expected array compares arrays whole.
        assert_eq!(rule("tag", json!({"tags": ["a", "b"]})), Some("no-pair"));
        assert_eq!(rule("tag", json!({"tags": ["a"]})), Some("files"));
        assert_eq!(rule("tag", json!({"tags": "a"})), Some("no-pair"));
    }

    #[test]
    fn allow_conditions_are_not_satisfied_by_values_they_cannot_test() {
        let p = policy(json!([
            {"id": "tmp", "effect": "allow", "tools": ["read_file"], "arguments": [{"path": "$.path", "regex": "^/tmp/"}]},
            {"id": "small", "effect": "allow", "tools": ["pay"], "arguments": [{"path": "$.amount", "lte": 10}]},
            {"id": "tables", "effect": "allow", "tools": ["query"], "arguments": [{"path": "$.table", "one_of": ["orders"]}]},
            {"id": "any-tmp", "effect": "allow", "tools": ["many"], "arguments": [{"path": "$.paths[*]", "regex": "^/tmp/", "match": "any"}]},
        ]));
        let s = Subject { identity: None, server: "demo" };
        let allowed = |t: &str, a: Value| p.decide(s, "tools/call", &tool(t), &Json::from_value(&a)).allowed;
        assert!(allowed("read_file", json!({"path": "/tmp/x"})));
        for odd in [json!(["/tmp/x"]), json!(5), json!(null), json!({"p": "/tmp/x"})] {
            assert!(!allowed("read_file", json!({"path": odd})), "{odd}");
        }
        assert!(allowed("pay", json!({"amount": "10"})));
        assert!(!allowed("pay", json!({"amount": [1]})));
        assert!(!allowed("pay", json!({"amount": "ten"})));
        assert!(!allowed("query", json!({"table": ["orders"]})));
        assert!(!allowed("query", json!({"table": 1})));
        // `match: any`: one readable value that passes is enough; the others are not tested.
        assert!(allowed("many", json!({"paths": [5, "/tmp/x"]})));
        assert!(!allowed("many", json!({"paths": [5, "/etc/x"]})));
    }

    /// A policy from JSON text, numbers as written (a `serde_json::Value` would round them).
    fn policy_text(rules: &str) -> Policy {
        let cfg: PolicyConfig = serde_json::from_str(&format!(r#"{{"rules": {rules}}}"#)).unwrap();
        Policy::compile(&cfg, "policy").unwrap()
    }

    /// The deciding rule of an allowed call of `t` (arguments as JSON text); `-denied` if denied.
    fn decide_text<'p>(p: &'p Policy, t: &str, args: &str) -> Option<&'p str> {
        let args = args::parse(args).unwrap();
        let v = p.decide(Subject { identity: None, server: "demo" }, "tools/call", &tool(t), &args);
        if v.allowed { v.rule_id } else { Some("-denied") }
    }

    #[test]
    fn integers_compare_exactly_whatever_their_size() {
        let p = policy_text(r#"[
            {"id": "one-id", "effect": "allow", "tools": ["get"], "arguments": [{"path": "$.id", "one_of": [9007199254740993, 1234567890123456789]}]},
            {"id": "eq", "effect": "allow", "tools": ["eq"], "arguments": [{"path": "$.n", "equals": 1000}]},
            {"id": "big", "effect": "allow", "tools": ["big"], "arguments": [{"path": "$.n", "equals": 123456789012345678901234567890}]}
        ]"#);
        let allowed = |t: &str, a: &str| decide_text(&p, t, a) != Some("-denied");
        assert!(allowed("get", r#"{"id": 9007199254740993}"#));
        assert!(!allowed("get", r#"{"id": 9007199254740992}"#), "the same double, another integer");
        assert!(!allowed("get", r#"{"id": 9007199254740994}"#));
        assert!(allowed("get", r#"{"id": 1234567890123456789}"#));
        for near in ["1234567890123456800", "1234567890123456788", "1234567890123456790", "1234567890123456768"] {
            assert!(!allowed("get", &format!(r#"{{"id": {near}}}"#)), "{near}");
        }
        // The same value spelled otherwise is the same number.
        assert!(allowed("get", r#"{"id": 1.234567890123456789e18}"#));
        assert!(allowed("get", r#"{"id": 9007199254740993.000}"#));
        for same in ["1000", "1000.0", "1e3", "10000e-1", "1E+3"] {
            assert!(allowed("eq", &format!(r#"{{"n": {same}}}"#)), "{same}");
        }
        assert!(!allowed("eq", r#"{"n": 1000.0000000000001}"#));
        assert!(!allowed("eq", r#"{"n": 1000.00000000000000000001}"#), "rounds to 1000.0 but is not 1000");
        assert!(allowed("big", r#"{"n": 123456789012345678901234567890}"#));
        assert!(!allowed("big", r#"{"n": 123456789012345678901234567891}"#));
        // -0 is 0.
        let p = policy_text(r#"[{"id": "z", "effect": "allow", "arguments": [{"path": "$.n", "equals": 0}]}]"#);
        assert_eq!(decide_text(&p, "x", r#"{"n": -0.0}"#), Some("z"));
    }

    #[test]
    fn deny_rules_match_numbers_by_either_reading() {
        let p = policy_text(r#"[
            {"id": "all", "effect": "allow"},
            {"id": "no-id", "effect": "deny", "arguments": [{"path": "$.id", "equals": 9007199254740993}]},
            {"id": "no-big", "effect": "deny", "arguments": [{"path": "$.amount", "gte": 1000}]}
        ]"#);
        assert_eq!(decide_text(&p, "x", r#"{"id": 9007199254740993}"#), Some("-denied"));
        // A server reading doubles acts on the denied id.
        assert_eq!(decide_text(&p, "x", r#"{"id": 9007199254740992}"#), Some("-denied"));
        assert_eq!(decide_text(&p, "x", r#"{"id": 9007199254740995}"#), Some("all"));
        assert_eq!(decide_text(&p, "x", r#"{"amount": 999.99}"#), Some("all"));
        // Exactly below 1000, but 1000.0 as a double.
        assert_eq!(decide_text(&p, "x", r#"{"amount": 999.99999999999999999999}"#), Some("-denied"));
        assert_eq!(decide_text(&p, "x", r#"{"amount": "999.99999999999999999999"}"#), Some("-denied"));
    }

    #[test]
    fn ranges_read_every_digit() {
        let p = policy_text(r#"[
            {"id": "small", "effect": "allow", "tools": ["pay"], "arguments": [{"path": "$.amount", "lte": 1000}]},
            {"id": "under", "effect": "allow", "tools": ["under"], "arguments": [{"path": "$.amount", "lt": 1000}]},
            {"id": "exact-bound", "effect": "allow", "tools": ["b"], "arguments": [{"path": "$.n", "gt": 9007199254740992}]}
        ]"#);
        let allowed = |t: &str, a: &str| decide_text(&p, t, a) != Some("-denied");
        assert!(allowed("pay", r#"{"amount": 1000}"#));
        assert!(allowed("pay", r#"{"amount": 1e3}"#));
        assert!(allowed("pay", r#"{"amount": "1000.000"}"#));
        assert!(!allowed("pay", r#"{"amount": 1000.0000000000001}"#), "17 significant digits");
        assert!(!allowed("pay", r#"{"amount": "1000.0000000000001"}"#));
        assert!(!allowed("pay", r#"{"amount": 1000.00000000000000000001}"#), "not 1000 exactly");
        // Exactly below 1000 but 1000.0 as a double: a float-reading server would act on 1000.
        assert!(!allowed("under", r#"{"amount": 999.99999999999999999999}"#));
        assert!(allowed("under", r#"{"amount": 999.9999999999}"#));
        assert!(allowed("b", r#"{"n": 9007199254740994}"#));
        assert!(!allowed("b", r#"{"n": 9007199254740993}"#), "above the bound exactly, not as a double");
    }

    #[test]
    fn strings_holding_json_are_judged_as_both() {
        let p = policy_text(r#"[
            {"id": "all", "effect": "allow", "tools": ["export_rows", "read", "deep", "cfg"]},
            {"id": "no-users", "effect": "deny", "tools": ["export_rows"], "arguments": [{"path": "$.tables", "one_of": ["users"]}]},
            {"id": "no-etc", "effect": "deny", "tools": ["read"], "arguments": [{"path": "$.paths[*]", "regex": "^/etc/"}]},
            {"id": "no-admin", "effect": "deny", "tools": ["cfg"], "arguments": [{"path": "$..mode", "equals": "admin"}]},
            {"id": "no-all", "effect": "deny", "tools": ["deep"], "arguments": [{"path": "$.t[*]", "equals": "x", "match": "all"}]}
        ]"#);
        let rule = |t: &str, a: &str| decide_text(&p, t, a);
        // The finding: a JSON array inside a string.
        assert_eq!(rule("export_rows", r#"{"tables": ["users"]}"#), Some("-denied"));
        assert_eq!(rule("export_rows", r#"{"tables": "[\"users\"]"}"#), Some("-denied"));
        assert_eq!(rule("export_rows", r#"{"tables": " \n[\"orders\", \"users\"]\t"}"#), Some("-denied"));
        assert_eq!(rule("export_rows", r#"{"tables": "[\"orders\"]"}"#), Some("all"));
        assert_eq!(rule("export_rows", r#"{"tables": "users"}"#), Some("-denied"));
        assert_eq!(rule("export_rows", r#"{"tables": "orders"}"#), Some("all"));
        // `null` in a string: a value the test cannot read.
        assert_eq!(rule("export_rows", r#"{"tables": "null"}"#), Some("-denied"));
        // Looks like JSON but is not JSON the filter reads (Python's json reads NaN).
        assert_eq!(rule("export_rows", r#"{"tables": "[\"users\", NaN]"}"#), Some("-denied"));
        assert_eq!(rule("export_rows", r#"{"tables": "[draft"}"#), Some("-denied"));
        // Paths go into the JSON a string holds, at any depth, also nested twice.
        assert_eq!(rule("read", r#"{"paths": "[\"/tmp/a\", \"/etc/passwd\"]"}"#), Some("-denied"));
        assert_eq!(rule("read", r#"{"paths": "[\"/tmp/a\"]"}"#), Some("all"));
        assert_eq!(rule("cfg", r#"{"opts": "{\"mode\": \"admin\"}"}"#), Some("-denied"));
        assert_eq!(rule("cfg", r#"{"opts": {"x": "{\"inner\": \"{\\\"mode\\\": \\\"admin\\\"}\"}"}}"#), Some("-denied"));
        assert_eq!(rule("cfg", r#"{"opts": "{\"mode\": \"user\"}"}"#), Some("all"));
        // `match: all` in a deny: the arguments as written or read as JSON.
        assert_eq!(rule("deep", r#"{"t": "[\"x\", \"x\"]"}"#), Some("-denied"));
        assert_eq!(rule("deep", r#"{"t": "[\"x\", \"y\"]"}"#), Some("all"));
    }

    #[test]
    fn allow_rules_need_both_readings_of_strings_holding_json() {
        let p = policy_text(r#"[
            {"id": "orders", "effect": "allow", "tools": ["export_rows"], "arguments": [{"path": "$.tables[*]", "one_of": ["orders"]}]},
            {"id": "loose", "effect": "allow", "tools": ["q"], "arguments": [{"path": "$.table", "regex": "orders"}]},
            {"id": "no-force", "effect": "allow", "tools": ["f"], "arguments": [{"path": "$.opts.force", "exists": false}]},
            {"id": "text", "effect": "allow", "tools": ["t"], "arguments": [{"path": "$.note", "regex": "^"}]}
        ]"#);
        let rule = |t: &str, a: &str| decide_text(&p, t, a);
        assert_eq!(rule("export_rows", r#"{"tables": ["orders"]}"#), Some("orders"));
        assert_eq!(rule("export_rows", r#"{"tables": "[\"orders\"]"}"#), Some("-denied"));
        assert_eq!(rule("q", r#"{"table": "orders"}"#), Some("loose"));
        assert_eq!(rule("q", r#"{"table": "[\"orders\", \"users\"]"}"#), Some("-denied"));
        assert_eq!(rule("f", r#"{"opts": {}}"#), Some("no-force"));
        assert_eq!(rule("f", r#"{"opts": "{\"force\": true}"}"#), Some("-denied"));
        // Plain strings, also with brackets inside, are strings.
        assert_eq!(rule("t", r#"{"note": "see [1]"}"#), Some("text"));
        assert_eq!(rule("t", r#"{"note": "[draft"}"#), Some("-denied"));
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        let e = compile_err(json!([{"id": "r1", "effect": "allow", "arguments": [{"path": "$.[[", "exists": true}]}]));
        assert!(e.starts_with("policy.rules[0].arguments[0].path: invalid JSONPath"), "{e}");
        assert!(e.contains("rule `r1`"), "{e}");
        let e = compile_err(json!([{"id": "ok", "effect": "allow"}, {"id": "r2", "effect": "deny", "arguments": [{"path": "$.a", "regex": "(unclosed"}]}]));
        assert!(e.starts_with("policy.rules[1].arguments[0].regex: invalid regex"), "{e}");
        assert!(e.contains("rule `r2`"), "{e}");
        let e = compile_err(json!([{"id": "r", "effect": "allow", "arguments": [{"path": "$.a", "equals": 1, "exists": true}]}]));
        assert!(e.contains("exactly one test"), "{e}");
        let e = compile_err(json!([{"id": "r", "effect": "allow", "arguments": [{"path": "$.a"}]}]));
        assert!(e.contains("exactly one test"), "{e}");
        let e = compile_err(json!([{"id": "r", "effect": "allow", "arguments": [{"path": "a.b", "exists": true}]}]));
        assert!(e.contains("must start with `$`"), "{e}");
        let e = compile_err(json!([{"id": "r", "effect": "allow"}, {"id": "r", "effect": "deny"}]));
        assert!(e.starts_with("policy.rules[1].id: duplicate"), "{e}");
        let e = compile_err(json!([{"id": " ", "effect": "allow"}]));
        assert!(e.starts_with("policy.rules[0].id"), "{e}");
    }

    #[test]
    fn empty_policy_denies_everything() {
        let p = policy(json!([]));
        assert!(!p.decide(Subject { identity: None, server: "x" }, "ping", &Target::None, &Json::from_value(&json!({}))).allowed);
    }

    #[test]
    fn the_tool_index_decides_exactly_as_the_full_rule_list() {
        let policy = policy(json!([
            {"id": "a", "effect": "allow", "tools": ["t1", "t2"]},
            {"id": "b", "effect": "allow", "tools": ["t*"], "arguments": [{"path": "$.x", "equals": 1}]},
            {"id": "c", "effect": "deny", "tools": ["t2"], "arguments": [{"path": "$.x", "equals": 2}]},
            {"id": "d", "effect": "allow", "methods": ["tools/call"]},
            {"id": "e", "effect": "deny", "tools": ["t3", "t1"], "principals": ["mallory"]},
            {"id": "f", "effect": "allow", "tools": ["t3"]}
        ]));
        let alice = who("alice", &[]);
        let mallory = who("mallory", &[]);
        for caller in [None, Some(&alice), Some(&mallory)] {
            for tool in ["t1", "t2", "t3", "t4", "x"] {
                for value in [json!({}), json!({"x": 1}), json!({"x": 2})] {
                    let args = Json::from_value(&value);
                    let subject = Subject { identity: caller, server: "s" };
                    let target = Target::Tool(Cow::Borrowed(tool));
                    let indexed = policy.decide(subject, "tools/call", &target, &args);
                    let full = policy.decide_among(policy.rules.iter(), subject, "tools/call", &target, &args);
                    assert_eq!(indexed, full, "{caller:?} {tool} {value}");
                }
            }
        }
        assert_eq!(policy.tools.other, vec![1, 3]);
    }

}
