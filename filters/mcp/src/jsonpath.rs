//! A JSONPath (RFC 9535) subset for argument conditions, compiled once at load.
//!
//! Supported: the root `$`; member names `.name` and `['name']` / `["name"]` (with JSON
//! escapes); array indexes `[0]`, `[-1]`; wildcards `.*` / `[*]`; unions `['a','b']`,
//! `[0,2]`; descendants `..name`, `..*`, `..[...]`. Filter expressions (`[?...]`) and slices
//! are refused at load, with the position named.
//!
//! Why not `jsonpath-rust`: it pulls `regex` with every default feature (full Unicode tables
//! and all engines) and `pest`, about +760 KB of wasm; this module is a few KB.

use crate::args::Json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    descendant: bool,
    selectors: Vec<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Name(String),
    Index(i64),
    Wildcard,
}

/// Which reading of strings holding JSON ([`Json::Encoded`]) a walk takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Strings as written: such a string is a leaf.
    Literal,
    /// Such a string is the JSON it holds (a string whose JSON is unknown is handed to the
    /// caller wherever the path would go into it: it might hold anything).
    Decoded,
    /// Both at once: such a string is handed to the caller as itself where the path ends
    /// on it, and the path also goes into the JSON it holds.
    Both,
}

/// Nested descendant walks are bounded (documents are bounded by the body limit anyway).
const MAX_DEPTH: usize = 128;

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        Parser { s: text.as_bytes(), at: 0, text }.path()
    }

    /// Every value the path selects, in document order (strings as written).
    pub fn select<'v, 'a>(&self, root: &'v Json<'a>) -> Vec<&'v Json<'a>> {
        let mut out = Vec::new();
        self.visit(root, View::Literal, &mut |v| {
            out.push(v);
            true
        });
        out
    }

    /// Calls `f` on each value [`JsonPath::select`] would return, in the same order, until
    /// `f` returns false; false when it did. Builds no lists: a rule's condition is judged
    /// on every call, and most stop at the first value.
    pub fn visit<'v, 'a>(&self, root: &'v Json<'a>, view: View, f: &mut dyn FnMut(&'v Json<'a>) -> bool) -> bool {
        walk(&self.segments, root, view, f)
    }
}

/// A string holding JSON, in a view that reads it: `Ok(json)`, or `Err(itself)` when what
/// it holds is unknown.
fn decoded<'v, 'a>(node: &'v Json<'a>, view: View) -> Option<Result<&'v Json<'a>, &'v Json<'a>>> {
    match node {
        Json::Encoded(_, reading) if view != View::Literal => Some(reading.as_deref().ok_or(node)),
        _ => None,
    }
}

/// Selecting segment by segment, depth first: each value a segment selects is taken through
/// the remaining segments before the next one, which gives the breadth-first order of
/// applying each segment to the whole list of the previous one.
fn walk<'v, 'a>(segments: &[Segment], node: &'v Json<'a>, view: View, f: &mut dyn FnMut(&'v Json<'a>) -> bool) -> bool {
    let Some((segment, rest)) = segments.split_first() else {
        return match (view, decoded(node, view)) {
            (View::Decoded, Some(Ok(json))) => f(json),
            _ => f(node),
        };
    };
    if segment.descendant {
        descend(&segment.selectors, rest, node, view, f, 0)
    } else {
        apply(&segment.selectors, node, view, &mut |child| walk(rest, child, view, f))
    }
}

/// A descendant segment: the selectors applied to the node, then to its descendants in
/// document order (pre-order), at most [`MAX_DEPTH`] levels down.
fn descend<'v, 'a>(
    selectors: &[Selector],
    rest: &[Segment],
    node: &'v Json<'a>,
    view: View,
    f: &mut dyn FnMut(&'v Json<'a>) -> bool,
    depth: usize,
) -> bool {
    if !apply(selectors, node, view, &mut |child| walk(rest, child, view, f)) {
        return false;
    }
    if depth >= MAX_DEPTH {
        return true;
    }
    // The children of a string holding JSON are those of its JSON (an unknown one was
    // handed on whole by `apply`).
    let node = match decoded(node, view) {
        Some(Ok(json)) => json,
        Some(Err(_)) => return true,
        None => node,
    };
    match node {
        Json::Array(items) => items.iter().all(|v| descend(selectors, rest, v, view, f, depth + 1)),
        Json::Object(members) => members.iter().all(|(_, v)| descend(selectors, rest, v, view, f, depth + 1)),
        _ => true,
    }
}

fn apply<'v, 'a>(selectors: &[Selector], node: &'v Json<'a>, view: View, out: &mut dyn FnMut(&'v Json<'a>) -> bool) -> bool {
    let node = match decoded(node, view) {
        Some(Ok(json)) => json,
        // Unknown JSON: whatever the selectors pick from it might be anything.
        Some(Err(unknown)) => return out(unknown),
        None => node,
    };
    for selector in selectors {
        let go_on = match (selector, node) {
            (Selector::Name(name), Json::Object(_)) => match node.get(name) {
                Some(v) => out(v),
                None => true,
            },
            (Selector::Index(i), Json::Array(items)) => {
                let len = items.len() as i64;
                let at = if *i < 0 { len + i } else { *i };
                match items.get(at as usize) {
                    Some(v) if (0..len).contains(&at) => out(v),
                    _ => true,
                }
            }
            (Selector::Wildcard, Json::Array(items)) => items.iter().all(&mut *out),
            (Selector::Wildcard, Json::Object(members)) => members.iter().all(|(_, v)| out(v)),
            _ => true,
        };
        if !go_on {
            return false;
        }
    }
    true
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.at))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn path(mut self) -> Result<JsonPath, String> {
        if !self.eat(b'$') {
            return self.err("expected `$`");
        }
        let mut segments = Vec::new();
        while let Some(b) = self.peek() {
            let segment = match b {
                b'.' => {
                    self.at += 1;
                    let descendant = self.eat(b'.');
                    match self.peek() {
                        Some(b'[') if descendant => Segment { descendant, selectors: self.bracket()? },
                        Some(b'*') => {
                            self.at += 1;
                            Segment { descendant, selectors: vec![Selector::Wildcard] }
                        }
                        _ => Segment { descendant, selectors: vec![Selector::Name(self.member_name()?)] },
                    }
                }
                b'[' => Segment { descendant: false, selectors: self.bracket()? },
                _ => return self.err("expected `.` or `[`"),
            };
            segments.push(segment);
        }
        Ok(JsonPath { segments })
    }

    fn member_name(&mut self) -> Result<String, String> {
        let start = self.at;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 || (b == b'-' && self.at > start);
            if !ok {
                break;
            }
            self.at += 1;
        }
        if self.at == start || self.s.get(start).is_some_and(u8::is_ascii_digit) {
            return self.err("expected a member name");
        }
        Ok(self.text.get(start..self.at).unwrap_or_default().to_string())
    }

    fn bracket(&mut self) -> Result<Vec<Selector>, String> {
        self.at += 1; // `[`
        let mut selectors = Vec::new();
        loop {
            self.skip_blanks();
            let selector = match self.peek() {
                Some(b'\'' | b'"') => Selector::Name(self.string()?),
                Some(b'*') => {
                    self.at += 1;
                    Selector::Wildcard
                }
                Some(b'-' | b'0'..=b'9') => self.index()?,
                Some(b'?') => return self.err("filter expressions are not supported"),
                _ => return self.err("expected a name, an index or `*`"),
            };
            selectors.push(selector);
            self.skip_blanks();
            if self.eat(b']') {
                return Ok(selectors);
            }
            if self.peek() == Some(b':') {
                return self.err("array slices are not supported");
            }
            if !self.eat(b',') {
                return self.err("expected `,` or `]`");
            }
        }
    }

    fn index(&mut self) -> Result<Selector, String> {
        let start = self.at;
        self.eat(b'-');
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = self.text.get(start..self.at).unwrap_or_default();
        let bad_zero = digits.starts_with("-0") || (digits.len() > 1 && digits.starts_with('0'));
        match digits.parse::<i64>() {
            Ok(i) if !bad_zero && i.unsigned_abs() < (1u64 << 53) => Ok(Selector::Index(i)),
            _ => self.err("invalid index"),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let Some(quote) = self.peek() else { return self.err("expected a string") };
        let start = self.at;
        self.at += 1;
        let mut escaped = false;
        while let Some(b) = self.peek() {
            self.at += 1;
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == quote {
                let inner = self.text.get(start + 1..self.at - 1).unwrap_or_default();
                // Re-quote as JSON: `\'` becomes `'`, a bare `"` inside '...' gets escaped.
                let mut json = String::with_capacity(inner.len() + 2);
                json.push('"');
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('\'') => json.push('\''),
                            Some(n) => {
                                json.push('\\');
                                json.push(n);
                            }
                            None => {}
                        },
                        '"' => json.push_str("\\\""),
                        c => json.push(c),
                    }
                }
                json.push('"');
                return serde_json::from_str::<String>(&json).or_else(|e| self.err(&format!("invalid string ({e})")));
            }
        }
        self.err("unterminated string")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn to_value(j: &Json<'_>) -> Value {
        let mut out = Vec::new();
        j.write_canonical(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    fn sel(path: &str, doc: &Value) -> Vec<Value> {
        JsonPath::parse(path).unwrap().select(&Json::from_value(doc)).into_iter().map(to_value).collect()
    }

    #[test]
    fn selectors() {
        let doc = json!({"a": {"b": [10, 20, 30], "c-d": 1}, "x y": 2, "items": [{"n": 1}, {"n": 2, "k": {"n": 3}}]});
        assert_eq!(sel("$", &doc), vec![doc.clone()]);
        assert_eq!(sel("$.a.b[0]", &doc), vec![json!(10)]);
        assert_eq!(sel("$.a.b[-1]", &doc), vec![json!(30)]);
        assert_eq!(sel("$.a.b[5]", &doc), Vec::<Value>::new());
        assert_eq!(sel("$.a['c-d']", &doc), vec![json!(1)]);
        assert_eq!(sel("$.a.c-d", &doc), vec![json!(1)]);
        assert_eq!(sel("$[\"x y\"]", &doc), vec![json!(2)]);
        assert_eq!(sel("$.a.b[*]", &doc), vec![json!(10), json!(20), json!(30)]);
        assert_eq!(sel("$.a.b[0, 2]", &doc), vec![json!(10), json!(30)]);
        assert_eq!(sel("$.items[*].n", &doc), vec![json!(1), json!(2)]);
        assert_eq!(sel("$..n", &doc), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(sel("$.items..['n']", &doc), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(sel("$.missing.deeper", &doc), Vec::<Value>::new());
        assert_eq!(sel("$['it\\u0065ms'][0].n", &doc), vec![json!(1)]);
        assert_eq!(sel("$['a'].*", &doc).len(), 2);
    }

    #[test]
    fn visiting_stops_when_asked_and_keeps_the_order() {
        let doc = json!({"a": [{"n": 1}, {"n": 2, "m": {"n": 3}}], "n": 0});
        let path = JsonPath::parse("$..n").unwrap();
        let mut seen = Vec::new();
        let tree = Json::from_value(&doc);
        assert!(!path.visit(&tree, View::Literal, &mut |v| {
            seen.push(to_value(v));
            seen.len() < 2
        }));
        assert_eq!(seen, sel("$..n", &doc).into_iter().take(2).collect::<Vec<_>>());
        assert_eq!(sel("$..*", &doc).len(), 8);
        assert_eq!(sel("$.a[*]..n", &doc), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(sel("$.a[0,0,-1].n", &doc), vec![json!(1), json!(1), json!(2)]);
    }

    /// The list-building selection over `serde_json::Value` this module had before, as a
    /// reference.
    fn select_by_lists<'v>(path: &JsonPath, root: &'v Value) -> Vec<&'v Value> {
        fn descendants<'v>(node: &'v Value, out: &mut Vec<&'v Value>, depth: usize) {
            out.push(node);
            if depth >= MAX_DEPTH {
                return;
            }
            match node {
                Value::Array(items) => items.iter().for_each(|v| descendants(v, out, depth + 1)),
                Value::Object(map) => map.values().for_each(|v| descendants(v, out, depth + 1)),
                _ => {}
            }
        }
        fn apply<'v>(selectors: &[Selector], node: &'v Value, out: &mut Vec<&'v Value>) {
            for selector in selectors {
                match (selector, node) {
                    (Selector::Name(name), Value::Object(map)) => out.extend(map.get(name)),
                    (Selector::Index(i), Value::Array(items)) => {
                        let len = items.len() as i64;
                        let at = if *i < 0 { len + i } else { *i };
                        if (0..len).contains(&at) {
                            out.extend(items.get(at as usize));
                        }
                    }
                    (Selector::Wildcard, Value::Array(items)) => out.extend(items.iter()),
                    (Selector::Wildcard, Value::Object(map)) => out.extend(map.values()),
                    _ => {}
                }
            }
        }
        let mut nodes = vec![root];
        for segment in &path.segments {
            let mut next = Vec::new();
            for node in nodes {
                if segment.descendant {
                    let mut all = Vec::new();
                    descendants(node, &mut all, 0);
                    for n in all {
                        apply(&segment.selectors, n, &mut next);
                    }
                } else {
                    apply(&segment.selectors, node, &mut next);
                }
            }
            nodes = next;
        }
        nodes
    }

    #[test]
    fn visiting_selects_what_lists_selected() {
        let docs = [
            json!({"a": {"b": [10, {"a": [1, {"b": 2}]}, 30], "c": {"a": 1}}, "b": [[{"a": 5}]], "x": null}),
            json!([{"a": 1, "b": [{"a": 2}]}, [{"a": [3, {"a": 4}]}], "s"]),
            json!({"a": {"a": {"a": {"a": 1}}}}),
        ];
        let paths = ["$", "$.a", "$..a", "$..*", "$..a..b", "$.a..*", "$..[0]", "$..[-1,0]", "$[*][*]", "$..a[1].b",
            "$['a','b']..a", "$..['a','a']", "$.*.*", "$..b[*]", "$..a.a", "$[0,2,0]"];
        for doc in &docs {
            for text in paths {
                let path = JsonPath::parse(text).unwrap();
                let expected: Vec<Value> = select_by_lists(&path, doc).into_iter().cloned().collect();
                assert_eq!(sel(text, doc), expected, "{text} on {doc}");
            }
        }
    }

    #[test]
    fn refused_forms() {
        for bad in ["", "a.b", "$.", "$.[", "$[?(@.a)]", "$[1:2]", "$['x", "$.1a", "$[01]", "$[a]", "$ .a", "$.a]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
        assert!(JsonPath::parse("$[?(@.a)]").unwrap_err().contains("filter expressions"));
    }
}
