//! The JSON check of [`super::check_object`] done while parsing, without building a `serde_json::Value`.
//!
//! The hot path of the JSON format: a record's bytes are walked once with serde's visitor API against the
//! table's struct. Booleans, integers, floats, strings, nested structs and lists of them are checked in place,
//! with no allocation; the rare cases — fields the table does not have yet, maps, decimals, timestamps, dates
//! — collect just that sub-value into a `Value` and reuse the general checks. The outcome is exactly that of
//! [`super::check_object`] (the tests compare both).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use iceberg::spec::{NestedField, PrimitiveType, StructType, Type};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Addition, Conflict, check_new_field, check_value, describe_type, describe_value};

/// Why a record's bytes cannot be stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but not an object (the kind found).
    NotObject(&'static str),
    /// An object that does not fit the table.
    Conflict(Conflict),
}

/// Checks a record's JSON bytes against the payload struct; new fields are appended to `additions`.
pub fn check_json(bytes: &[u8], schema: &StructType, additions: &mut Vec<Addition>) -> Result<(), Problem> {
    check(bytes, schema, additions, false)
}

/// Checks a record's JSON bytes against the payload struct, skipping keys the struct does not declare (at
/// any depth of a struct): what a JSON Schema's undeclared properties get.
pub fn check_json_declared(bytes: &[u8], schema: &StructType) -> Result<(), Problem> {
    check(bytes, schema, &mut Vec::new(), true)
}

fn check(bytes: &[u8], schema: &StructType, additions: &mut Vec<Addition>, ignore: bool) -> Result<(), Problem> {
    let state = State {
        problem: RefCell::new(None),
        additions: RefCell::new(std::mem::take(additions)),
        ignore_unknown: ignore,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = TopSeed { schema, state: &state }.deserialize(&mut de).and_then(|()| de.end());
    *additions = state.additions.into_inner();
    match (state.problem.into_inner(), result) {
        (Some(problem), _) => Err(problem),
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => Err(Problem::NotJson(e.to_string())),
    }
}

struct State {
    problem: RefCell<Option<Problem>>,
    additions: RefCell<Vec<Addition>>,
    /// Skip undeclared keys instead of collecting them as additions.
    ignore_unknown: bool,
}

/// The message of the serde error used only to stop parsing once `State::problem` is set.
const STOP: &str = "k2i: record does not fit";

impl State {
    fn stop<E: de::Error>(&self, problem: Problem) -> E {
        self.problem.borrow_mut().get_or_insert(problem);
        E::custom(STOP)
    }
}

fn join(parent: Option<&str>, name: &str) -> String {
    match parent {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    }
}

struct TopSeed<'a> {
    schema: &'a StructType,
    state: &'a State,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(TopVisitor(self))
    }
}

struct TopVisitor<'a>(TopSeed<'a>);

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        ObjectVisitor { schema: self.0.schema, path: None, state: self.0.state }.visit_map(map)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.0.state.stop(Problem::NotObject("null")))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.0.state.stop(Problem::NotObject("a boolean")))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.0.state.stop(Problem::NotObject("a number")))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.0.state.stop(Problem::NotObject("a number")))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.0.state.stop(Problem::NotObject("a number")))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.0.state.stop(Problem::NotObject("a string")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.0.state.stop(Problem::NotObject("an array")))
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct ObjectVisitor<'a> {
    schema: &'a StructType,
    path: Option<&'a str>,
    state: &'a State,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = self.schema.fields();
        let required = fields.iter().filter(|f| f.required).count();
        let mut required_seen = 0;
        // Producers usually write fields in the table's order: try the field after the previous one before
        // the hash lookup.
        let mut next = 0;
        while let Some(key) = map.next_key_seed(Key)? {
            let field = match fields.get(next) {
                Some(f) if f.name == *key => {
                    next += 1;
                    Some(f)
                }
                _ => {
                    let found = self.schema.field_by_name(&key);
                    if let Some(f) = found {
                        next = fields.iter().position(|g| std::sync::Arc::ptr_eq(g, f)).map_or(0, |i| i + 1);
                    }
                    found
                }
            };
            match field {
                Some(field) => {
                    let present = if streamable(&field.field_type) {
                        map.next_value_seed(FieldSeed { field, name: &key, parent: self.path, state: self.state })?
                    } else {
                        let value: Value = map.next_value()?;
                        let path = join(self.path, &key);
                        let mut additions = self.state.additions.borrow_mut();
                        if let Err(conflict) = check_value(&value, field, &path, &mut additions) {
                            drop(additions);
                            return Err(self.state.stop(Problem::Conflict(conflict)));
                        }
                        !value.is_null()
                    };
                    if field.required && present {
                        required_seen += 1;
                    }
                }
                None if self.state.ignore_unknown => {
                    map.next_value::<Checked>()?;
                }
                None => {
                    let value: Value = map.next_value()?;
                    let result = check_new_field(&key, &value, self.path, &mut self.state.additions.borrow_mut());
                    if let Err(conflict) = result {
                        return Err(self.state.stop(Problem::Conflict(conflict)));
                    }
                }
            }
        }
        if required_seen < required {
            // Rare: find which one, with the same rule and message as the Value-based check.
            for field in self.schema.fields().iter().filter(|f| f.required) {
                let top_metadata = self.path.is_none() && super::METADATA_COLUMNS.contains(&field.name.as_str());
                if !top_metadata {
                    return Err(self.state.stop(Problem::Conflict(Conflict {
                        path: join(self.path, &field.name),
                        expected: format!("a {} (required)", field.field_type),
                        found: "nothing".to_owned(),
                    })));
                }
            }
        }
        Ok(())
    }
}

/// A value read past, but parsed in full: strings must be valid UTF-8 with valid escapes (serde's
/// `IgnoredAny` skips them unchecked), as arrow-json's decoder, which reads the same bytes next, demands.
struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Types checked in place: primitives without parsing, structs, lists of those.
fn streamable(t: &Type) -> bool {
    match t {
        Type::Primitive(p) => matches!(
            p,
            PrimitiveType::Boolean
                | PrimitiveType::Int
                | PrimitiveType::Long
                | PrimitiveType::Float
                | PrimitiveType::Double
                | PrimitiveType::String
        ),
        Type::Struct(_) => true,
        Type::List(l) => streamable(&l.element_field.field_type),
        Type::Map(_) => false,
    }
}

/// Checks one value against a field; returns whether it was non-null.
struct FieldSeed<'a> {
    field: &'a NestedField,
    name: &'a str,
    parent: Option<&'a str>,
    state: &'a State,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl FieldSeed<'_> {
    fn conflict<E: de::Error>(&self, found: Value) -> E {
        let path = join(self.parent, self.name);
        self.state.stop(Problem::Conflict(Conflict {
            path,
            expected: describe_type(&self.field.field_type),
            found: describe_value(&found),
        }))
    }

    fn primitive(&self) -> Option<&PrimitiveType> {
        match self.field.field_type.as_ref() {
            Type::Primitive(p) => Some(p),
            _ => None,
        }
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of type {}", self.field.field_type)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        if self.field.required {
            let path = join(self.parent, self.name);
            return Err(self.state.stop(Problem::Conflict(Conflict {
                path,
                expected: format!("a {} (required)", self.field.field_type),
                found: "null".to_owned(),
            })));
        }
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        match self.primitive() {
            Some(PrimitiveType::Boolean) => Ok(true),
            _ => Err(self.conflict(Value::Bool(v))),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        match self.primitive() {
            Some(PrimitiveType::Long | PrimitiveType::Float | PrimitiveType::Double) => Ok(true),
            Some(PrimitiveType::Int) if i32::try_from(v).is_ok() => Ok(true),
            _ => Err(self.conflict(Value::from(v))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        match self.primitive() {
            Some(PrimitiveType::Float | PrimitiveType::Double) => Ok(true),
            Some(PrimitiveType::Long) if i64::try_from(v).is_ok() => Ok(true),
            Some(PrimitiveType::Int) if i32::try_from(v).is_ok() => Ok(true),
            _ => Err(self.conflict(Value::from(v))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        match self.primitive() {
            Some(PrimitiveType::Float | PrimitiveType::Double) => Ok(true),
            _ => Err(self.conflict(Value::from(v))),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<bool, E> {
        self.visit_str(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match self.primitive() {
            Some(PrimitiveType::String) => Ok(true),
            _ => Err(self.conflict(Value::String(v.to_owned()))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        match self.field.field_type.as_ref() {
            Type::Struct(s) => {
                let path = join(self.parent, self.name);
                ObjectVisitor { schema: s, path: Some(&path), state: self.state }.visit_map(map)?;
                Ok(true)
            }
            _ => {
                // Drain it so the error names what was found.
                let _ = de::value::MapAccessDeserializer::new(map).deserialize_any(de::IgnoredAny);
                Err(self.conflict(Value::Object(serde_json::Map::new())))
            }
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let Type::List(list) = self.field.field_type.as_ref() else {
            return Err(self.conflict(Value::Array(Vec::new())));
        };
        let element = &list.element_field;
        let path = join(self.parent, self.name);
        match element.field_type.as_ref() {
            // Fields of structs inside a list are named after the list (as in `check_value`).
            Type::Struct(s) => {
                while seq
                    .next_element_seed(ElementStruct { schema: s, element, path: &path, state: self.state })?
                    .is_some()
                {}
            }
            _ => {
                while seq
                    .next_element_seed(FieldSeed {
                        field: element,
                        name: "element",
                        parent: Some(&path),
                        state: self.state,
                    })?
                    .is_some()
                {}
            }
        }
        Ok(true)
    }
}

/// A struct element of a list: nulls and non-objects are checked as the element field, objects as structs.
struct ElementStruct<'a> {
    schema: &'a StructType,
    element: &'a NestedField,
    path: &'a str,
    state: &'a State,
}

impl<'de> DeserializeSeed<'de> for ElementStruct<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> ElementStruct<'a> {
    fn element_seed(&self) -> FieldSeed<'a> {
        FieldSeed { field: self.element, name: "element", parent: Some(self.path), state: self.state }
    }
}

impl<'de> Visitor<'de> for ElementStruct<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list element")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        ObjectVisitor { schema: self.schema, path: Some(self.path), state: self.state }.visit_map(map)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.element_seed().visit_unit().map(drop)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.element_seed().visit_bool(v).map(drop)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.element_seed().visit_i64(v).map(drop)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.element_seed().visit_u64(v).map(drop)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.element_seed().visit_f64(v).map(drop)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.element_seed().visit_str(v).map(drop)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.element_seed().visit_seq(seq).map(drop)
    }
}
