//! Test-time checks that a hand-kept JSON Schema (`schemas/*.schema.json`) and the serde
//! config types agree, so neither can drift from the other (issue 21 item 8). Native tests
//! only (behind the `testing` feature, like `MemoryHost`): nothing here is in a module.
//!
//! - [`fields_of`] reads the exact field names serde's derive accepts for a struct (renames
//!   applied), by handing the type a deserializer that records the `fields` list serde
//!   passes to `deserialize_struct` and stops.
//! - [`check_type`] compares them with the `properties` of one schema object, checks the
//!   type refuses an unknown field, and that leaving out each property with a schema
//!   `default` deserializes exactly like giving that default.
//! - [`objects`] lists every schema object with `properties`, so a test can require that
//!   each is checked against a type.
//!
//! Each problem is one line naming the type, the field and the schema file and pointer.

use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::Value;
use std::fmt::Debug;

/// The property name used to probe that unknown fields are refused.
pub const UNKNOWN_PROBE: &str = "tollgate_schema_probe";

struct FieldsCapture {
    fields: Option<&'static [&'static str]>,
    variants: Option<&'static [&'static str]>,
}

impl<'de> de::Deserializer<'de> for &mut FieldsCapture {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.fields = Some(fields);
        Err(de::Error::custom("fields captured"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.variants = Some(variants);
        Err(de::Error::custom("variants captured"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

/// The field names serde's derive accepts for `T` (after renames), or `None` when `T` is
/// not deserialized as a struct (a hand-written `Deserialize`, a map, a flattened struct).
pub fn fields_of<T: DeserializeOwned>() -> Option<Vec<&'static str>> {
    let mut capture = FieldsCapture { fields: None, variants: None };
    let _ = T::deserialize(&mut capture);
    capture.fields.map(|f| f.to_vec())
}

/// The variant names serde's derive accepts for the enum `T` (after renames).
pub fn variants_of<T: DeserializeOwned>() -> Option<Vec<&'static str>> {
    let mut capture = FieldsCapture { fields: None, variants: None };
    let _ = T::deserialize(&mut capture);
    capture.variants.map(|v| v.to_vec())
}

/// Checks that the schema's `enum` at `pointer` lists exactly the variants of `T`.
pub fn check_enum<T: DeserializeOwned>(schema: &Value, file: &str, pointer: &str) -> Vec<String> {
    let type_name = std::any::type_name::<T>();
    let listed: Vec<&str> = schema
        .pointer(&format!("{pointer}/enum"))
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(variants) = variants_of::<T>() else {
        return vec![format!("{type_name} is not a derived enum: check {file}#{pointer} by hand")];
    };
    let mut problems = Vec::new();
    for v in &variants {
        if !listed.contains(v) {
            problems.push(format!("{type_name} has variant `{v}` missing from {file} `{pointer}/enum`"));
        }
    }
    for l in &listed {
        if !variants.contains(l) {
            problems.push(format!("{file} `{pointer}/enum` lists `{l}`, which {type_name} does not accept"));
        }
    }
    problems
}

/// Every `$defs` entry that is an `enum`, as JSON pointers.
pub fn enums(schema: &Value) -> Vec<String> {
    schema
        .get("$defs")
        .and_then(Value::as_object)
        .map(|defs| defs.iter().filter(|(_, d)| d.get("enum").is_some()).map(|(k, _)| format!("/$defs/{k}")).collect())
        .unwrap_or_default()
}

/// Every object of `schema` with `properties`, as JSON pointers (`""` is the root).
pub fn objects(schema: &Value) -> Vec<String> {
    fn walk(node: &Value, at: String, out: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if map.get("properties").is_some_and(Value::is_object) {
                    out.push(at.clone());
                }
                for (k, v) in map {
                    walk(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(schema, String::new(), &mut out);
    out
}

fn short(text: String) -> String {
    if text.len() > 300 {
        format!("{}…", text.chars().take(300).collect::<String>())
    } else {
        text
    }
}

/// Checks `T` against the schema object at `pointer` of `schema` (read from `file`, named in
/// the messages). `minimal` is a smallest valid instance of `T` (its required fields).
pub fn check_type<T: DeserializeOwned + Debug>(schema: &Value, file: &str, pointer: &str, minimal: &Value) -> Vec<String> {
    let type_name = std::any::type_name::<T>();
    let mut problems = Vec::new();
    let Some(node) = schema.pointer(pointer) else {
        return vec![format!("{file}: no schema object at `{pointer}` (checked against {type_name})")];
    };
    let properties: Vec<&str> = node
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let Some(fields) = fields_of::<T>() else {
        return vec![format!("{type_name} is not a derived struct: check {file}#{pointer} by hand")];
    };
    for f in &fields {
        if !properties.contains(f) {
            problems.push(format!(
                "{type_name} has field `{f}` with no schema entry: add it to {file} at `{pointer}/properties` (and to the README's configuration table)"
            ));
        }
    }
    for p in &properties {
        if !fields.contains(p) {
            problems.push(format!("{file} `{pointer}/properties/{p}` is not a field of {type_name}: remove it or add the field"));
        }
    }
    if node.get("additionalProperties") != Some(&Value::Bool(false)) {
        problems.push(format!("{file} `{pointer}`: set \"additionalProperties\": false ({type_name} refuses unknown fields)"));
    }
    let base = match serde_json::from_value::<T>(minimal.clone()) {
        Ok(v) => format!("{v:?}"),
        Err(e) => {
            problems.push(format!("{type_name}: the minimal instance {minimal} is refused: {e}"));
            return problems;
        }
    };
    // `required` is exactly what the minimal instance holds, and each of it is needed.
    let required: Vec<&str> = node.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let given: Vec<&str> = minimal.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    for g in &given {
        if !required.contains(g) {
            problems.push(format!("{type_name}: the test's minimal instance gives `{g}`, which {file} `{pointer}` does not list in `required`"));
        }
    }
    for r in &required {
        let mut without = minimal.clone();
        if let Some(map) = without.as_object_mut() {
            map.remove(*r);
        }
        if serde_json::from_value::<T>(without).is_ok() {
            problems.push(format!("{file} `{pointer}`: `{r}` is listed in `required` but {type_name} accepts its absence"));
        }
    }
    let mut probe = minimal.clone();
    if let Some(map) = probe.as_object_mut() {
        map.insert(UNKNOWN_PROBE.into(), Value::from(1));
    }
    match serde_json::from_value::<T>(probe) {
        Ok(_) => problems.push(format!("{type_name} accepts an unknown field: add #[serde(deny_unknown_fields)]")),
        Err(e) if !e.to_string().contains("unknown field") => {
            problems.push(format!("{type_name}: an unknown field is refused for another reason: {e}"))
        }
        Err(_) => {}
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let Some(default) = prop.get("default") else { continue };
            if minimal.get(name).is_some() {
                continue;
            }
            let mut given = minimal.clone();
            if let Some(map) = given.as_object_mut() {
                map.insert(name.clone(), default.clone());
            }
            match serde_json::from_value::<T>(given) {
                Ok(v) if format!("{v:?}") == base => {}
                Ok(v) => problems.push(short(format!(
                    "{type_name}.{name}: {file} says the default is {default}, the code's differs (absent: {base}; given: {v:?})"
                ))),
                Err(e) => problems.push(format!("{type_name}.{name}: the schema's default {default} is refused: {e}")),
            }
        }
    }
    problems
}

/// One config schema checked against its types, row by row: each [`SchemaCheck::object`] /
/// [`SchemaCheck::variants`] checks a schema node against the serde type it describes, and
/// [`SchemaCheck::problems`] also reports every schema object or enum no row checked. The rows
/// for what core puts in every filter's config are here once ([`SchemaCheck::core_types`]).
pub struct SchemaCheck {
    schema: Value,
    file: &'static str,
    table: &'static str,
    problems: Vec<String>,
    checked: Vec<String>,
}

impl SchemaCheck {
    /// `text`: the schema file's contents (`include_str!`), `file`: its repository path,
    /// `table`: the test file holding the rows (named in the "checked against no type" line).
    pub fn new(text: &str, file: &'static str, table: &'static str) -> Self {
        let (schema, problems) = match serde_json::from_str(text) {
            Ok(schema) => (schema, Vec::new()),
            Err(e) => (Value::Null, vec![format!("{file} is not JSON: {e}")]),
        };
        SchemaCheck { schema, file, table, problems, checked: Vec::new() }
    }

    /// The object at `pointer` against `T`; `minimal` is the smallest value `T` accepts.
    pub fn object<T: DeserializeOwned + Debug>(&mut self, pointer: &str, minimal: Value) -> &mut Self {
        self.problems.extend(check_type::<T>(&self.schema, self.file, pointer, &minimal));
        self.checked.push(pointer.to_string());
        self
    }

    /// The enum at `pointer` against `T`'s variants.
    pub fn variants<T: DeserializeOwned>(&mut self, pointer: &str) -> &mut Self {
        self.problems.extend(check_enum::<T>(&self.schema, self.file, pointer));
        self.checked.push(pointer.to_string());
        self
    }

    /// What every filter's config embeds from core: the identity sources (the gateway
    /// credential apart: see [`SchemaCheck::gateway_identity`]) and the audit settings.
    pub fn core_types(&mut self) -> &mut Self {
        use crate::identity as id;
        let sha = "0".repeat(64);
        self.object::<id::IdentityConfig>("/$defs/IdentityConfig", serde_json::json!({}))
            .object::<id::JwtSource>("/$defs/JwtSource", serde_json::json!({"payload_key": "p"}))
            .object::<id::ApiKeySource>("/$defs/ApiKeySource", serde_json::json!({"keys": []}))
            .object::<id::ApiKeyEntry>("/$defs/ApiKeyEntry", serde_json::json!({"sha256": sha, "name": "n", "principal": "p"}))
            .object::<id::HeaderSource>("/$defs/HeaderSource", serde_json::json!({"principal": "x-p"}))
            .object::<crate::observe::audit::AuditConfig>("/$defs/AuditConfig", serde_json::json!({}))
            .object::<crate::observe::otlp::OtlpConfig>("/$defs/OtlpConfig", serde_json::json!({"cluster": "c"}))
    }

    /// The gateway credential as an identity source (the LLM and MCP filters accept it).
    pub fn gateway_identity(&mut self) -> &mut Self {
        self.object::<crate::identity::GatewaySource>("/$defs/GatewaySource", serde_json::json!({"signing_key": "k".repeat(32)}))
    }

    /// The fleet-wide counter store and its enums (LLM limits, MCP rate limits).
    pub fn fleet_store(&mut self) -> &mut Self {
        self.object::<crate::fleet::StoreConfig>("/$defs/StoreConfig", serde_json::json!({"cluster": "c"}))
            .variants::<crate::fleet::Counters>("/$defs/Counters")
            .variants::<crate::fleet::OnFailure>("/$defs/OnFailure")
            .variants::<crate::fleet::Protocol>("/$defs/Protocol")
    }

    /// Every disagreement found, plus every schema object or enum no row checked.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.problems.clone();
        for pointer in objects(&self.schema).into_iter().chain(enums(&self.schema)) {
            if !self.checked.contains(&pointer) {
                out.push(format!("{} `{pointer}` is checked against no type: add it to the table in {}", self.file, self.table));
            }
        }
        out
    }
}
