//! The evolution engine for schemas that come from a registry (Protobuf now; Avro and JSON Schema reuse
//! it): what a writer's schema, mapped to an Iceberg struct, asks of the table's schema.
//!
//! Matching is by name, level by level. A field the table lacks is an [`Addition`] (an optional column,
//! at any depth: in a struct, a list's element struct or a map's value struct). A primitive the table holds
//! narrower is a [`Promotion`] (int → long, float → double, decimal(P, S) → decimal(P', S) with P' > P). A
//! narrower writer type is accepted as is (an int value fits a long column). Anything else — another
//! primitive, a struct where the table has a list, … — is breaking. Table fields the writer lacks stay
//! and read null. Field ids never change: an existing field keeps its id, promoted or not.

use iceberg::spec::{NestedField, NestedFieldRef, PrimitiveType, StructType, Type};

use super::Addition;

/// A primitive column to widen.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    /// The column's field id.
    pub field_id: i32,
    /// Its dotted name, for messages.
    pub name: String,
    /// The wider type.
    pub to: PrimitiveType,
}

/// What a writer's schema asks of the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// New optional columns.
    pub additions: Vec<Addition>,
    /// Columns to widen.
    pub promotions: Vec<Promotion>,
    /// Why the writer's schema cannot be applied, one line per field.
    pub breaking: Vec<String>,
}

impl Change {
    /// Whether the table already fits the writer's schema.
    pub fn is_empty(&self) -> bool {
        self.additions.is_empty() && self.promotions.is_empty() && self.breaking.is_empty()
    }

    /// A one-line description.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.additions.is_empty() {
            let names: Vec<String> = self.additions.iter().map(Addition::full_name).collect();
            parts.push(format!("add {}", names.join(", ")));
        }
        if !self.promotions.is_empty() {
            let names: Vec<String> = self.promotions.iter().map(|p| format!("{} to {}", p.name, p.to)).collect();
            parts.push(format!("widen {}", names.join(", ")));
        }
        if !self.breaking.is_empty() {
            parts.push(format!("breaking: {}", self.breaking.join("; ")));
        }
        parts.join("; ")
    }
}

/// Compares the table's struct (`table`, with ids) with a writer's (`wanted`, ids ignored).
pub fn diff(table: &StructType, wanted: &StructType) -> Change {
    let mut change = Change::default();
    diff_struct(table, wanted, None, &mut change);
    change
}

fn diff_struct(table: &StructType, wanted: &StructType, parent: Option<&str>, change: &mut Change) {
    for field in wanted.fields() {
        let name = match parent {
            Some(p) => format!("{p}.{}", field.name),
            None => field.name.clone(),
        };
        match table.fields().iter().find(|f| f.name == field.name) {
            None => change.additions.push(Addition {
                parent: parent.map(str::to_owned),
                name: field.name.clone(),
                field_type: (*field.field_type).clone(),
            }),
            Some(existing) => diff_type(existing, &field.field_type, &name, change),
        }
    }
}

fn diff_type(existing: &NestedFieldRef, wanted: &Type, name: &str, change: &mut Change) {
    match (existing.field_type.as_ref(), wanted) {
        (Type::Primitive(have), Type::Primitive(want)) => match promotion(have, want) {
            Fit::Same => {}
            Fit::Widen => {
                change.promotions.push(Promotion { field_id: existing.id, name: name.to_owned(), to: want.clone() })
            }
            Fit::No => change.breaking.push(format!("`{name}` is {have} in the table and {want} in the schema")),
        },
        (Type::Struct(have), Type::Struct(want)) => diff_struct(have, want, Some(name), change),
        (Type::List(have), Type::List(want)) => {
            diff_type(&have.element_field, &want.element_field.field_type, &format!("{name}.element"), change)
        }
        (Type::Map(have), Type::Map(want)) => {
            diff_type(&have.key_field, &want.key_field.field_type, &format!("{name}.key"), change);
            diff_type(&have.value_field, &want.value_field.field_type, &format!("{name}.value"), change);
        }
        (have, want) => change.breaking.push(format!(
            "`{name}` is {} in the table and {} in the schema",
            super::describe_type(have),
            super::describe_type(want)
        )),
    }
}

enum Fit {
    Same,
    Widen,
    No,
}

fn promotion(have: &PrimitiveType, want: &PrimitiveType) -> Fit {
    use PrimitiveType as P;
    match (have, want) {
        _ if have == want => Fit::Same,
        // The writer's values fit the table's wider column.
        (P::Long, P::Int) | (P::Double, P::Float) => Fit::Same,
        (P::Int, P::Long) | (P::Float, P::Double) => Fit::Widen,
        (P::Decimal { precision: p1, scale: s1 }, P::Decimal { precision: p2, scale: s2 }) if s1 == s2 => {
            if p2 > p1 {
                Fit::Widen
            } else {
                Fit::Same
            }
        }
        _ => Fit::No,
    }
}

/// `schema`'s struct with `promotions` applied (by field id, at any depth).
pub fn promote(schema: &StructType, promotions: &[Promotion]) -> StructType {
    StructType::new(schema.fields().iter().map(|f| promote_field(f, promotions)).collect())
}

fn promote_field(field: &NestedFieldRef, promotions: &[Promotion]) -> NestedFieldRef {
    let field_type = match field.field_type.as_ref() {
        Type::Primitive(_) => match promotions.iter().find(|p| p.field_id == field.id) {
            Some(p) => Type::Primitive(p.to.clone()),
            None => return field.clone(),
        },
        Type::Struct(s) => Type::Struct(promote(s, promotions)),
        Type::List(l) => Type::List(iceberg::spec::ListType::new(promote_field(&l.element_field, promotions))),
        Type::Map(m) => Type::Map(iceberg::spec::MapType::new(
            promote_field(&m.key_field, promotions),
            promote_field(&m.value_field, promotions),
        )),
    };
    let mut copy = NestedField::new(field.id, field.name.clone(), field_type, field.required);
    copy.doc = field.doc.clone();
    copy.initial_default = field.initial_default.clone();
    copy.write_default = field.write_default.clone();
    copy.into()
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{ListType, NestedField};

    use super::*;

    fn p(t: PrimitiveType) -> Type {
        Type::Primitive(t)
    }

    #[test]
    fn new_fields_at_any_depth_become_additions_and_narrower_writers_fit() {
        let table = StructType::new(vec![
            NestedField::optional(4, "id", p(PrimitiveType::Long)).into(),
            NestedField::optional(5, "ratio", p(PrimitiveType::Double)).into(),
            NestedField::optional(
                6,
                "lines",
                Type::List(ListType::new(
                    NestedField::list_element(
                        7,
                        Type::Struct(StructType::new(vec![
                            NestedField::optional(8, "sku", p(PrimitiveType::String)).into(),
                        ])),
                        false,
                    )
                    .into(),
                )),
            )
            .into(),
            NestedField::optional(9, "gone", p(PrimitiveType::String)).into(),
        ]);
        let wanted = StructType::new(vec![
            NestedField::optional(0, "id", p(PrimitiveType::Int)).into(),
            NestedField::optional(0, "ratio", p(PrimitiveType::Float)).into(),
            NestedField::optional(
                0,
                "lines",
                Type::List(ListType::new(
                    NestedField::list_element(
                        0,
                        Type::Struct(StructType::new(vec![
                            NestedField::optional(0, "sku", p(PrimitiveType::String)).into(),
                            NestedField::optional(0, "qty", p(PrimitiveType::Int)).into(),
                        ])),
                        false,
                    )
                    .into(),
                )),
            )
            .into(),
            NestedField::optional(0, "note", p(PrimitiveType::String)).into(),
        ]);
        let change = diff(&table, &wanted);
        assert!(change.promotions.is_empty() && change.breaking.is_empty(), "{change:?}");
        let names: Vec<String> = change.additions.iter().map(Addition::full_name).collect();
        assert_eq!(names, ["lines.element.qty", "note"]);
        assert_eq!(change.additions[0].parent.as_deref(), Some("lines.element"));
    }

    #[test]
    fn widening_keeps_the_field_id_and_other_changes_are_breaking() {
        let table = StructType::new(vec![
            NestedField::optional(4, "count", p(PrimitiveType::Int)).into(),
            NestedField::optional(5, "name", p(PrimitiveType::String)).into(),
            NestedField::optional(6, "amount", p(PrimitiveType::Decimal { precision: 10, scale: 2 })).into(),
        ]);
        let wanted = StructType::new(vec![
            NestedField::optional(0, "count", p(PrimitiveType::Long)).into(),
            NestedField::optional(0, "name", p(PrimitiveType::Long)).into(),
            NestedField::optional(0, "amount", p(PrimitiveType::Decimal { precision: 20, scale: 2 })).into(),
        ]);
        let change = diff(&table, &wanted);
        assert_eq!(change.promotions.len(), 2);
        assert_eq!(change.promotions[0], Promotion { field_id: 4, name: "count".into(), to: PrimitiveType::Long });
        assert_eq!(change.breaking, ["`name` is string in the table and long in the schema"]);
        let promoted = promote(&table, &change.promotions);
        let count = promoted.field_by_name("count").unwrap();
        assert_eq!((count.id, count.field_type.as_ref()), (4, &p(PrimitiveType::Long)));
        assert_eq!(promoted.field_by_name("name").unwrap().field_type.as_ref(), &p(PrimitiveType::String));
        assert!(diff(&promoted, &wanted).promotions.is_empty());
    }
}
