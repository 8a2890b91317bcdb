//! The Avro shape for the throughput benchmark: the 10-field event of [`crate::protobuf::EVENT`] as an Avro
//! record (same fields in the same order, `ts` a `timestamp-micros`, `device` a nested record) with the
//! values [`crate::protobuf::record`] generates for record `i` ([`Event::at`]), so payload sizes and columns
//! are comparable. The schema is registered under `<topic>-value`; records are framed the way Confluent's
//! serializer frames them (magic 0, schema id) around the Avro binary encoding.

use anyhow::{Context, Result};
use apache_avro::Schema;
use apache_avro::types::Value;

/// The 10-field event.
pub const EVENT: &str = r#"{"type":"record","name":"Event","namespace":"bench","fields":[
  {"name":"id","type":"long"},
  {"name":"user","type":"string"},
  {"name":"amount","type":"double"},
  {"name":"ok","type":"boolean"},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"country","type":"string"},
  {"name":"quantity","type":"int"},
  {"name":"device","type":{"type":"record","name":"Device","fields":[
    {"name":"os","type":"string"},
    {"name":"version","type":"int"}]}},
  {"name":"score","type":"float"},
  {"name":"note","type":"string"}]}"#;

/// The values of event `i`, as `protobuf::record` fills the Protobuf event (a field's value depends on `i` and
/// on its field number `n`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub user: String,
    pub amount: f64,
    pub ok: bool,
    /// Seconds and nanoseconds since the Unix epoch, as the Protobuf `google.protobuf.Timestamp`.
    pub ts: (i64, i32),
    pub country: String,
    pub quantity: i32,
    pub device_os: String,
    pub device_version: i32,
    pub score: f32,
    pub note: String,
}

impl Event {
    pub fn at(i: usize) -> Self {
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
        let string = |name: &str, n: usize| format!("{name}-{}-{}", words[(i + n) % words.len()], i % 10_000);
        let int32 = |n: usize| ((i * 7 + n) % 100_000) as i32;
        Self {
            id: (i * 31 + 1) as i64,
            user: string("user", 2),
            amount: (i % 100_000) as f64 / 3.0,
            ok: (i + 4).is_multiple_of(2),
            ts: (1_764_000_000 + i as i64, ((i % 1000) * 1_000_000) as i32),
            country: string("country", 6),
            quantity: int32(7),
            device_os: string("os", 1),
            device_version: int32(2),
            score: (i % 1000) as f32 / 7.0,
            note: string("note", 10),
        }
    }

    /// `ts` in microseconds since the Unix epoch.
    pub fn ts_micros(&self) -> i64 {
        self.ts.0 * 1_000_000 + i64::from(self.ts.1) / 1000
    }
}

/// The parsed [`EVENT`] schema.
pub fn schema() -> Result<Schema> {
    Schema::parse_str(EVENT).context("the Avro event schema does not parse")
}

/// Record `i`, framed.
pub fn record(schema: &Schema, schema_id: u32, i: usize) -> Result<Vec<u8>> {
    let e = Event::at(i);
    let value = Value::Record(vec![
        ("id".into(), Value::Long(e.id)),
        ("user".into(), Value::String(e.user.clone())),
        ("amount".into(), Value::Double(e.amount)),
        ("ok".into(), Value::Boolean(e.ok)),
        ("ts".into(), Value::TimestampMicros(e.ts_micros())),
        ("country".into(), Value::String(e.country.clone())),
        ("quantity".into(), Value::Int(e.quantity)),
        (
            "device".into(),
            Value::Record(vec![
                ("os".into(), Value::String(e.device_os.clone())),
                ("version".into(), Value::Int(e.device_version)),
            ]),
        ),
        ("score".into(), Value::Float(e.score)),
        ("note".into(), Value::String(e.note)),
    ]);
    let datum = apache_avro::to_avro_datum(schema, value).context("cannot encode the Avro event")?;
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost_reflect::{DynamicMessage, Value as P};

    use super::*;

    /// Event `i` holds the values the Protobuf shape encodes for record `i`.
    #[test]
    fn the_values_are_the_protobuf_events() {
        let descriptor = crate::protobuf::descriptor(crate::protobuf::EVENT).unwrap();
        for i in [0, 1, 7, 999, 12_345, 999_999] {
            let framed = crate::protobuf::record(&descriptor, 1, i);
            let m = DynamicMessage::decode(descriptor.clone(), &framed[6..]).unwrap();
            let get = |name: &str| m.get_field_by_name(name).unwrap().into_owned();
            let text = |v: P| v.as_str().unwrap().to_owned();
            let ts = get("ts");
            let ts = ts.as_message().unwrap();
            let device = get("device");
            let device = device.as_message().unwrap();
            let from_protobuf = Event {
                id: get("id").as_i64().unwrap(),
                user: text(get("user")),
                amount: get("amount").as_f64().unwrap(),
                ok: get("ok").as_bool().unwrap(),
                ts: (
                    ts.get_field_by_number(1).unwrap().as_i64().unwrap(),
                    ts.get_field_by_number(2).unwrap().as_i32().unwrap(),
                ),
                country: text(get("country")),
                quantity: get("quantity").as_i32().unwrap(),
                device_os: text(device.get_field_by_name("os").unwrap().into_owned()),
                device_version: device.get_field_by_name("version").unwrap().as_i32().unwrap(),
                score: get("score").as_f32().unwrap(),
                note: text(get("note")),
            };
            assert_eq!(Event::at(i), from_protobuf, "record {i}");
        }
    }

    #[test]
    fn records_are_framed_avro_of_the_event() {
        let schema = schema().unwrap();
        let framed = record(&schema, 7, 42).unwrap();
        assert_eq!(framed[..5], [0, 0, 0, 0, 7]);
        let value = apache_avro::from_avro_datum(&schema, &mut &framed[5..], None).unwrap();
        let Value::Record(fields) = value else { panic!("{value:?}") };
        assert_eq!(fields[0], ("id".into(), Value::Long(42 * 31 + 1)));
        assert_eq!(fields[4], ("ts".into(), Value::TimestampMicros(1_764_000_042_042_000)));
    }
}
