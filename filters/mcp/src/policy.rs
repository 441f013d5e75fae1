//! The compiled policy: ordered allow/deny rules over identity, MCP server, method, target
//! (tool, prompt, resource URI) and argument conditions. Compiled once at configure time;
//! evaluation never touches the host.
//!
//! Semantics:
//! - a rule matches when every condition it has holds (a list condition: any element);
//! - rules combine by `deny_overrides` (`policy.combining`, its only value): any matching
//!   deny wins; otherwise the first matching allow allows; otherwise deny; an `approve` rule
//!   is an allow rule here, and [`Policy::approval`] names the one an allowed request needs
//!   (`approval.rs`);
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
use crate::config::{ArgumentConfig, Combining, DenyStyle, Effect, PolicyConfig, Quantifier, RuleConfig, RuleEffect};
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
    /// An `approve` rule (its `effect` is `Allow`): its argument conditions again, read as a
    /// deny rule reads them, for [`Policy::approval`]. `None` for other rules.
    approve: Option<Vec<Condition>>,
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
enum Tested {
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

/// The verdict of one evaluation (core's): the deciding rule, `None` for the default deny.
pub use tollgate_core::decision::Verdict;

fn allow(rule: &Rule) -> Verdict<'_> {
    Verdict { effect: Effect::Allow, rule_id: Some(&rule.id) }
}

fn deny(rule: Option<&Rule>) -> Verdict<'_> {
    Verdict { effect: Effect::Deny, rule_id: rule.map(|r| r.id.as_str()) }
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
        Combining::require(config.combining, Combining::DenyOverrides)
            .map_err(|e| ConfigError::field(&format!("{prefix}.combining"), e))?;
        let tools = ToolIndex::new(&rules);
        Ok(Policy { deny_style: config.deny_style, dry_run: config.dry_run, rules, tools })
    }

    /// The first `approve` rule matching a request the policy allowed (see `approval.rs`):
    /// its argument conditions read fail closed, as a deny rule reads them (a value they
    /// cannot read, or a reading of a string holding JSON, that might match is asked about).
    pub fn approval(&self, subject: Subject<'_>, method: &str, target: &Target<'_>, args: &Json<'_>) -> Option<&str> {
        let mut encoded: Option<bool> = None;
        let mut asks = |rule: &Rule| match &rule.approve {
            Some(conditions) => {
                rule.matches_scope(subject, method, target)
                    && conditions.iter().all(|c| c.holds(args, *encoded.get_or_insert_with(|| args.has_encoded())))
            }
            None => false,
        };
        let found = match target {
            Target::Tool(name) => self.tools.candidates(name).filter_map(|i| self.rules.get(i)).find(|r| asks(r)),
            _ => self.rules.iter().find(|r| asks(r)),
        };
        found.map(|r| r.id.as_str())
    }

    /// Whether some rule says `approve`.
    pub fn has_approve_rules(&self) -> bool {
        self.rules.iter().any(|r| r.approve.is_some())
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
        // Whether some string of the arguments holds JSON: read once, when a rule asks.
        let mut encoded: Option<bool> = None;
        deny_overrides(rules, |rule| {
            rule.matches_scope(subject, method, target)
                && rule.arguments.iter().all(|c| c.holds(args, *encoded.get_or_insert_with(|| args.has_encoded())))
        })
    }

    /// Whether a listed item is shown: judged as a call of it (`method`) with unknown
    /// arguments (a deny rule with argument conditions does not hide it).
    pub fn visible(&self, subject: Subject<'_>, method: &str, target: &Target<'_>) -> Verdict<'_> {
        deny_overrides(self.rules.iter(), |rule| {
            rule.matches_scope(subject, method, target) && (rule.effect == Effect::Allow || rule.arguments.is_empty())
        })
    }

    /// GET (standalone stream) and DELETE (end session) carry no JSON-RPC message: they pass
    /// when some allow rule covers this identity on this server (whatever its method or
    /// target) and no deny rule excludes the identity from the whole server.
    pub fn may_use_server(&self, subject: Subject<'_>) -> Verdict<'_> {
        deny_overrides(self.rules.iter(), |rule| {
            let server_wide = rule.methods.is_none()
                && rule.tools.is_none()
                && rule.prompts.is_none()
                && rule.resources.is_none()
                && rule.arguments.is_empty();
            rule.matches_identity(subject.identity)
                && glob_any(&rule.servers, subject.server)
                && (rule.effect == Effect::Allow || server_wide)
        })
    }
}

/// The policy's combining rule, `deny_overrides`, over `rules` in order: the first rule that
/// `applies` and denies wins; else the first that applies and allows; else the default deny.
/// Once an allow is found, later allow rules are not asked.
fn deny_overrides<'p>(rules: impl Iterator<Item = &'p Rule>, mut applies: impl FnMut(&'p Rule) -> bool) -> Verdict<'p> {
    let mut first_allow: Option<&Rule> = None;
    for rule in rules {
        match rule.effect {
            Effect::Allow if first_allow.is_some() => {}
            _ if !applies(rule) => {}
            Effect::Deny => return deny(Some(rule)),
            Effect::Allow => first_allow = Some(rule),
        }
    }
    first_allow.map_or_else(|| deny(None), allow)
}

fn compile_rule(rule: &RuleConfig, at: &str) -> Result<Rule, ConfigError> {
    let mut arguments = Vec::with_capacity(rule.arguments.len());
    let mut approve = (rule.effect == RuleEffect::Approve).then(Vec::new);
    for (j, arg) in rule.arguments.iter().enumerate() {
        let field = format!("{at}.arguments[{j}]");
        arguments.push(compile_condition(arg, rule, rule.effect.effect(), &field)?);
        if let Some(fail_closed) = &mut approve {
            fail_closed.push(compile_condition(arg, rule, Effect::Deny, &field)?);
        }
    }
    Ok(Rule {
        id: rule.id.clone(),
        effect: rule.effect.effect(),
        who: IdentityMatch::new(&rule.principals, &rule.groups, &rule.teams).delegated(&rule.agents, &rule.on_behalf_of),
        servers: rule.servers.clone(),
        methods: rule.methods.clone(),
        tools: rule.tools.clone(),
        prompts: rule.prompts.clone(),
        resources: rule.resources.clone(),
        arguments,
        approve,
    })
}

/// `effect`: how the condition is read (allow: strictly; deny: fail closed).
fn compile_condition(arg: &ArgumentConfig, rule: &RuleConfig, effect: Effect, field: &str) -> Result<Condition, ConfigError> {
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
    let quantifier = arg.quantifier.unwrap_or(match effect {
        Effect::Allow => Quantifier::All,
        Effect::Deny => Quantifier::Any,
    });
    let test = tests.remove(0);
    Ok(Condition { path, test, quantifier, deny: effect == Effect::Deny })
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
    /// its [`Tested`], and `match` (`all` / `any`) combines them:
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
            _ if self.deny => self.test.outcome(value, true, view) != Tested::Fail,
            _ => self.test.outcome(value, false, view) == Tested::Pass,
        }
    }
}

impl Test {
    /// `Untestable` when the value is not of the type the test reads: `regex` strings, a
    /// range numbers or numeric strings, `equals` / `one_of` the JSON type (null, boolean,
    /// number, string, array, object) of an expected value. Numbers have two readings, the
    /// exact decimal value and the nearest double: in a deny rule (`deny`) a test passes when
    /// either passes, in an allow rule when both do.
    fn outcome(&self, value: &Json<'_>, deny: bool, view: View) -> Tested {
        let pass = |p: bool| if p { Tested::Pass } else { Tested::Fail };
        match self {
            Test::Equals(expected) if same_type(value, expected) => pass(json_eq(value, expected, deny, view)),
            Test::OneOf(options) if options.iter().any(|o| same_type(value, o)) => {
                pass(options.iter().any(|o| json_eq(value, o, deny, view)))
            }
            Test::Regex(re) => match value.as_str() {
                Some(s) => pass(re.is_match(s)),
                None => Tested::Untestable,
            },
            Test::Range { gt, gte, lt, lte } => {
                let Some(Reading { exact: n, double: Some(d) }) = as_number(value) else { return Tested::Untestable };
                let exact = bound(gt, |b| n > b.exact) && bound(gte, |b| n >= b.exact) && bound(lt, |b| n < b.exact) && bound(lte, |b| n <= b.exact);
                let double = bound(gt, |b| d > b.double) && bound(gte, |b| d >= b.double) && bound(lt, |b| d < b.double) && bound(lte, |b| d <= b.double);
                pass(if deny { exact || double } else { exact && double })
            }
            Test::Exists(_) => Tested::Pass,
            Test::Equals(_) | Test::OneOf(_) => Tested::Untestable,
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
#[path = "policy_tests.rs"]
mod tests;
