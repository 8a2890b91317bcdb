//! Confluent-framed JSON Schema: a registry schema (with its references) compiled into the Iceberg struct
//! its records fill. Records are JSON text: they are checked against the table's columns while parsing
//! ([`crate::schema::check_json_declared`], the JSON format's streaming check, skipping undeclared keys) and
//! decoded straight into Arrow by the JSON format's decoder.
//!
//! # Type mapping
//! Every column is optional (`required` changes nothing). `boolean` → boolean, `integer` → long (`int` with
//! Kafka Connect's `"connect.type": "int8" | "int16" | "int32"`), `number` → double (`float` with
//! `"connect.type": "float32"`), `string` → string (`format: date-time` → timestamptz, `format: date` →
//! date), `enum` / `const` of strings → string, `object` with `properties` → struct in declared order,
//! `object` with only `additionalProperties: <schema>` → map<string, T>, `array` with `items: <schema>` →
//! list, `["null", T]` / `oneOf` or `anyOf` of null and one T → T, `allOf` of objects → their properties
//! merged, `$ref` (local pointers, `$defs` / `definitions`, references by name or `$id`) → the target. What
//! has no single column type — `{}`, `true`, a union of several types, tuple arrays, a `$ref` back into
//! itself — is not stored, and listed in [`Compiled::dropped`]. See docs/formats/json-schema.md.

use std::collections::HashMap;

use iceberg::spec::{ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, StructType, Type};
use serde_json::{Map, Value};

use super::registry::ResolvedSchema;
use crate::error::{Error, ErrorKind, Result};

/// A registry JSON Schema compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The registry's id of the schema.
    pub id: u32,
    /// The root's `title` (what the record subject strategies name), or empty.
    pub title: String,
    /// The payload struct its records fill (field ids 0).
    pub root: StructType,
    /// Properties that are not stored (no single column type), as dotted paths.
    pub dropped: Vec<String>,
}

/// The documents a schema may point into: the root (index 0) and its references.
struct Docs<'a> {
    docs: Vec<&'a Value>,
    /// Reference name or `$id` → document index.
    by_name: HashMap<String, usize>,
}

impl<'a> Docs<'a> {
    /// The schema a `$ref` names, seen from document `doc`, with the document it lives in.
    fn resolve(&self, reference: &str, doc: usize) -> Option<(&'a Value, usize)> {
        let (target, pointer) = match reference.split_once('#') {
            Some((target, pointer)) => (target, pointer),
            None => (reference, ""),
        };
        let doc = if target.is_empty() {
            doc
        } else {
            match self.by_name.get(target) {
                Some(i) => *i,
                // A relative name against an `$id` URI: its last path segment, if exactly one document has it.
                None => {
                    let last = target.rsplit('/').next();
                    let mut found =
                        self.by_name.iter().filter(|(name, _)| name.rsplit('/').next() == last).map(|(_, i)| *i);
                    let first = found.next()?;
                    if found.any(|i| i != first) {
                        return None;
                    }
                    first
                }
            }
        };
        let root = self.docs[doc];
        let value = if pointer.is_empty() { root } else { root.pointer(pointer)? };
        Some((value, doc))
    }
}

struct Walk<'a, 'd> {
    docs: &'d Docs<'a>,
    /// Types looked at so far and the current nesting (bounded: `$defs` that use each other twice per level
    /// expand exponentially, a chain of `$ref`s nests as deep as it is long).
    steps: usize,
    depth: usize,
    exceeded: bool,
    /// `$ref`s being expanded (a recursive one is not stored).
    active: Vec<(usize, String)>,
    dropped: Vec<String>,
}

/// Compiles a registry JSON Schema and its references.
pub fn compile(schema: &ResolvedSchema) -> Result<Compiled> {
    let invalid = |message: String| {
        Error::new(ErrorKind::InvalidRecord, format!("the registry's JSON Schema cannot be used: {message}"))
            .with("schema_id", schema.id)
    };
    let parse = |name: &str, text: &str| -> Result<Value> {
        serde_json::from_str(text).map_err(|e| invalid(format!("{name} is not JSON: {e}")))
    };
    let root = parse("the schema", &schema.schema)?;
    let references: Vec<(String, Value)> =
        schema.references.iter().map(|r| Ok((r.name.clone(), parse(&r.name, &r.schema)?))).collect::<Result<_>>()?;
    let mut docs = Docs { docs: vec![&root], by_name: HashMap::new() };
    for (i, (name, value)) in references.iter().enumerate() {
        docs.docs.push(value);
        docs.by_name.insert(name.clone(), i + 1);
    }
    for (i, doc) in docs.docs.clone().iter().enumerate() {
        if let Some(id) = doc.get("$id").and_then(Value::as_str) {
            docs.by_name.entry(id.to_owned()).or_insert(i);
        }
    }
    let mut walk = Walk { docs: &docs, steps: 0, depth: 0, exceeded: false, active: Vec::new(), dropped: Vec::new() };
    let found = walk.type_of(&root, 0, "");
    if walk.exceeded {
        return Err(invalid(format!(
            "it expands to more than {MAX_STEPS} types or nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let Some(Type::Struct(struct_type)) = found else {
        return Err(invalid("its root is not an object schema (records must be JSON objects)".into()));
    };
    let title = root.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
    Ok(Compiled { id: schema.id, title, root: struct_type, dropped: walk.dropped })
}

const MAX_STEPS: usize = 10_000;
const MAX_DEPTH: usize = 64;

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

impl Walk<'_, '_> {
    /// The column type of `schema` (in document `doc`), `None` if it has none (then `path` is dropped).
    fn type_of(&mut self, schema: &Value, doc: usize, path: &str) -> Option<Type> {
        let found = self.type_in(schema, doc, path);
        if found.is_none() && !path.is_empty() && !self.dropped.iter().any(|d| d == path) {
            self.dropped.push(path.to_owned());
        }
        found
    }

    fn type_in(&mut self, schema: &Value, doc: usize, path: &str) -> Option<Type> {
        self.steps += 1;
        if self.steps > MAX_STEPS || self.depth > MAX_DEPTH || self.exceeded {
            self.exceeded = true;
            return None;
        }
        self.depth += 1;
        let found = self.type_here(schema, doc, path);
        self.depth -= 1;
        found
    }

    fn type_here(&mut self, schema: &Value, doc: usize, path: &str) -> Option<Type> {
        let object = schema.as_object()?;
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            let key = (doc, reference.to_owned());
            if self.active.contains(&key) {
                return None;
            }
            let (target, target_doc) = self.docs.resolve(reference, doc)?;
            self.active.push(key);
            let found = self.type_in(target, target_doc, path);
            self.active.pop();
            return found;
        }
        if let Some(all) = object.get("allOf").and_then(Value::as_array) {
            return self.all_of(object, all, doc, path);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(branches) = object.get(key).and_then(Value::as_array) {
                // Branches that only constrain (`{"required": [...]}`) say nothing about the type.
                let values: Vec<&Value> = branches.iter().filter(|b| !is_null(b) && declares_type(b)).collect();
                match values.as_slice() {
                    [] if declares_own_type(object) => {}
                    [one] if !declares_own_type(object) => return self.type_in(one, doc, path),
                    _ => return None,
                }
            }
        }
        let kind = match object.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            Some(Value::Array(types)) => {
                let mut named: Vec<&str> = types.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect();
                if named.len() == 2 && named.contains(&"integer") && named.contains(&"number") {
                    named = vec!["number"];
                }
                match named.as_slice() {
                    [one] => Some(*one),
                    _ => return None,
                }
            }
            _ => None,
        };
        let kind = kind.or_else(|| {
            if object.contains_key("properties") || object.contains_key("additionalProperties") {
                Some("object")
            } else if object.contains_key("items") {
                Some("array")
            } else {
                let strings = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
                (object.get("enum").is_some_and(strings) || object.get("const").is_some_and(Value::is_string))
                    .then_some("string")
            }
        })?;
        let p = |t| Some(Type::Primitive(t));
        let connect = object.get("connect.type").and_then(Value::as_str);
        match kind {
            "boolean" => p(PrimitiveType::Boolean),
            "integer" => match connect {
                Some("int8" | "int16" | "int32") => p(PrimitiveType::Int),
                _ => p(PrimitiveType::Long),
            },
            "number" => match connect {
                Some("float32") => p(PrimitiveType::Float),
                _ => p(PrimitiveType::Double),
            },
            "string" => match object.get("format").and_then(Value::as_str) {
                Some("date-time") => p(PrimitiveType::Timestamptz),
                Some("date") => p(PrimitiveType::Date),
                _ => p(PrimitiveType::String),
            },
            "array" => {
                let items = object.get("items").filter(|i| i.is_object())?;
                let element = self.type_of(items, doc, &join(path, "element"))?;
                Some(Type::List(ListType::new(NestedField::list_element(0, element, false).into())))
            }
            "object" => self.object(object, doc, path),
            _ => None,
        }
    }

    fn object(&mut self, object: &Map<String, Value>, doc: usize, path: &str) -> Option<Type> {
        match object.get("properties").and_then(Value::as_object) {
            Some(properties) if !properties.is_empty() => {
                let fields: Vec<NestedFieldRef> = properties
                    .iter()
                    .filter_map(|(name, schema)| {
                        self.type_of(schema, doc, &join(path, name)).map(|t| NestedField::optional(0, name, t).into())
                    })
                    .collect();
                (!fields.is_empty()).then(|| Type::Struct(StructType::new(fields)))
            }
            _ => {
                let values = object.get("additionalProperties").filter(|v| v.is_object())?;
                let value = self.type_of(values, doc, &join(path, "value"))?;
                Some(Type::Map(MapType::new(
                    NestedField::map_key_element(0, Type::Primitive(PrimitiveType::String)).into(),
                    NestedField::map_value_element(0, value, false).into(),
                )))
            }
        }
    }

    /// `allOf`: the properties of every branch (and of the schema itself) in one struct.
    fn all_of(&mut self, object: &Map<String, Value>, all: &[Value], doc: usize, path: &str) -> Option<Type> {
        let mut fields: Vec<NestedFieldRef> = Vec::new();
        let mut own = object.clone();
        own.remove("allOf");
        let mut parts: Vec<(Value, usize)> = all.iter().map(|b| (b.clone(), doc)).collect();
        if own.contains_key("properties") {
            parts.insert(0, (Value::Object(own), doc));
        }
        for (part, part_doc) in parts.into_iter().filter(|(part, _)| declares_type(part)) {
            match self.type_in(&part, part_doc, path)? {
                Type::Struct(s) => {
                    for field in s.fields() {
                        if !fields.iter().any(|f| f.name == field.name) {
                            fields.push(field.clone());
                        }
                    }
                }
                _ => return None,
            }
        }
        (!fields.is_empty()).then(|| Type::Struct(StructType::new(fields)))
    }
}

/// Whether a schema says what type its values have (rather than only constraining them).
fn declares_type(schema: &Value) -> bool {
    schema
        .as_object()
        .is_some_and(|o| declares_own_type(o) || ["$ref", "oneOf", "anyOf", "allOf"].iter().any(|k| o.contains_key(*k)))
}

fn declares_own_type(object: &Map<String, Value>) -> bool {
    ["type", "properties", "additionalProperties", "items", "enum", "const"].iter().any(|k| object.contains_key(*k))
}

fn is_null(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::registry::SchemaType;
    use crate::decode::testing;

    fn compile_text(text: &str, references: &[(&str, &str)]) -> Result<Compiled> {
        compile(&testing::resolved(5, SchemaType::Json, text, references))
    }

    fn field<'a>(s: &'a StructType, name: &str) -> &'a Type {
        s.field_by_name(name).unwrap_or_else(|| panic!("no column {name} in {s:?}")).field_type.as_ref()
    }

    fn prim(t: PrimitiveType) -> Type {
        Type::Primitive(t)
    }

    #[test]
    fn every_json_schema_shape_maps_to_its_column_type() {
        let schema = r##"{
          "$schema": "http://json-schema.org/draft-07/schema#", "title": "k2i.test.Every", "type": "object",
          "properties": {
            "flag": {"type": "boolean"},
            "n": {"type": "integer"},
            "small": {"type": "integer", "connect.type": "int32"},
            "x": {"type": "number"},
            "f": {"type": "number", "connect.type": "float32"},
            "s": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
            "color": {"enum": ["RED", "GREEN"]},
            "maybe": {"type": ["null", "integer"]},
            "either": {"oneOf": [{"type": "null"}, {"type": "string"}]},
            "any_of": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "inner": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "address": {"$ref": "#/$defs/Address"},
            "old_style": {"$ref": "#/definitions/Zip"},
            "merged": {"allOf": [{"$ref": "#/$defs/Address"}, {"properties": {"extra": {"type": "boolean"}}}]},
            "anything": {},
            "mixed": {"type": ["string", "integer"]},
            "tuple": {"type": "array", "items": [{"type": "string"}]},
            "numeric": {"type": ["integer", "number"]}
          },
          "required": ["flag"],
          "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"$ref": "#/definitions/Zip"}}}},
          "definitions": {"Zip": {"type": "string"}}
        }"##;
        let compiled = compile_text(schema, &[]).unwrap();
        assert_eq!(compiled.title, "k2i.test.Every");
        let root = &compiled.root;
        assert!(root.fields().iter().all(|f| !f.required));
        use PrimitiveType as P;
        for (name, want) in [
            ("flag", P::Boolean),
            ("n", P::Long),
            ("small", P::Int),
            ("x", P::Double),
            ("f", P::Float),
            ("s", P::String),
            ("at", P::Timestamptz),
            ("day", P::Date),
            ("id", P::String),
            ("color", P::String),
            ("maybe", P::Long),
            ("either", P::String),
            ("any_of", P::Double),
            ("old_style", P::String),
            ("numeric", P::Double),
        ] {
            assert_eq!(field(root, name), &prim(want), "{name}");
        }
        let Type::Struct(inner) = field(root, "inner") else { panic!("inner") };
        assert_eq!(field(inner, "a"), &prim(P::Long));
        let Type::List(tags) = field(root, "tags") else { panic!("tags") };
        assert_eq!(*tags.element_field.field_type, prim(P::String));
        let Type::Map(counts) = field(root, "counts") else { panic!("counts") };
        assert_eq!(*counts.value_field.field_type, prim(P::Long));
        let Type::Struct(address) = field(root, "address") else { panic!("address") };
        assert_eq!(field(address, "zip"), &prim(P::String));
        let Type::Struct(merged) = field(root, "merged") else { panic!("merged") };
        let names: Vec<&str> = merged.fields().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["city", "zip", "extra"]);
        assert_eq!(compiled.dropped, ["anything", "mixed", "tuple"]);
        // Declared order is kept.
        assert_eq!(root.fields()[0].name, "flag");
        assert_eq!(root.fields()[1].name, "n");
    }

    #[test]
    fn references_resolve_by_name_and_id_and_recursion_is_not_stored() {
        let address = r#"{"$id": "https://example.com/schemas/address.json", "type": "object",
            "properties": {"city": {"type": "string"}, "geo": {"$ref": "geo.json#/$defs/Point"}}}"#;
        let geo = r#"{"$defs": {"Point": {"type": "object", "properties": {"lat": {"type": "number"}}}}}"#;
        let root = r##"{"type": "object", "properties": {
            "home": {"$ref": "address.json"},
            "work": {"$ref": "https://example.com/schemas/address.json"},
            "tree": {"$ref": "#/$defs/Node"}},
            "$defs": {"Node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}}}"##;
        let compiled = compile_text(root, &[("address.json", address), ("geo.json", geo)]).unwrap();
        for name in ["home", "work"] {
            let Type::Struct(a) = field(&compiled.root, name) else { panic!("{name}") };
            let Type::Struct(geo) = field(a, "geo") else { panic!("geo") };
            assert_eq!(field(geo, "lat"), &prim(PrimitiveType::Double));
        }
        let Type::Struct(tree) = field(&compiled.root, "tree") else { panic!("tree") };
        assert_eq!(field(tree, "v"), &prim(PrimitiveType::Long));
        assert!(tree.field_by_name("kids").is_none(), "the recursive occurrence is not stored");
        assert_eq!(compiled.dropped, ["tree.kids.element", "tree.kids"]);
    }

    #[test]
    fn constraint_only_branches_are_not_types_and_exponential_defs_are_refused() {
        let schema = r#"{"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "integer"},
            "both": {"allOf": [{"type": "object", "properties": {"x": {"type": "string"}}}, {"required": ["x"]}]}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}"#;
        let compiled = compile_text(schema, &[]).unwrap();
        let names: Vec<&str> = compiled.root.fields().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "both"]);
        let mut defs = vec![r#""A0": {"type": "integer"}"#.to_owned()];
        for k in 1..40 {
            defs.push(format!(
                r##""A{k}": {{"type": "object", "properties": {{"a": {{"$ref": "#/$defs/A{p}"}}, "b": {{"$ref": "#/$defs/A{p}"}}}}}}"##,
                p = k - 1
            ));
        }
        let schema = format!(
            r##"{{"type": "object", "properties": {{"x": {{"$ref": "#/$defs/A39"}}}}, "$defs": {{{}}}}}"##,
            defs.join(", ")
        );
        let e = compile_text(&schema, &[]).unwrap_err().to_string();
        assert!(e.contains("expands to more than"), "{e}");
    }

    #[test]
    fn a_root_that_is_not_an_object_and_broken_text_are_schema_errors() {
        for (text, why) in [
            (r#"{"type": "string"}"#, "not an object"),
            (r#"{"type": "array", "items": {"type": "string"}}"#, "not an object"),
            ("{", "not JSON"),
            (r##"{"$ref": "#/nowhere"}"##, "not an object"),
        ] {
            let e = compile_text(text, &[]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidRecord);
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
    }
}
