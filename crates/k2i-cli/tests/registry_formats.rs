//! Confluent-framed Avro and JSON Schema end to end: records produced by Confluent's own serializers
//! (confluent-kafka's AvroSerializer and JSONSerializer, scripts/stack/sr_produce.py) through the stack's
//! registry, decoded into typed columns, the table evolving with the writers' schemas through the same
//! engine as Protobuf, a breaking schema pausing the table until an operator resumes it, bad records
//! counted into the dead-letter topic — judged by DuckDB and pyiceberg.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    KillOnDrop, Setup, dead_letters, eventually, free_port, http_get, http_post, k2i, kill, read_log, recorded_offsets,
    run, spawn_logged, text, wait,
};
use k2i_testkit::stack;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Avro,
    JsonSchema,
}

impl Format {
    /// `kafka.format.type`.
    fn config(self) -> &'static str {
        match self {
            Self::Avro => "avro",
            Self::JsonSchema => "json_schema",
        }
    }

    /// sr_produce.py's `--format`.
    fn producer(self) -> &'static str {
        match self {
            Self::Avro => "avro",
            Self::JsonSchema => "json",
        }
    }
}

fn registry_section(stack: &k2i_testkit::Stack, dir: &Path) -> String {
    format!("\n[kafka.format.registry]\nurl = \"{}\"\ncache_dir = \"{}/schemas\"\n", stack.registry, dir.display())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn produce(
    stack: &k2i_testkit::Stack,
    topic: &str,
    format: Format,
    schema: &Path,
    records: &[Value],
) -> Vec<Option<u32>> {
    stack.produce_registered(topic, format.producer(), schema, &[], records, "topic").schema_ids
}

fn pyiceberg_rows(stack: &k2i_testkit::Stack, setup: &Setup, columns: &str) -> Value {
    stack.python_json(&format!(
        "import json\nfrom pyiceberg.catalog.sql import SqlCatalog\n\
         c = SqlCatalog('k2i', uri='sqlite:///{}', warehouse='file://{}')\n\
         t = c.load_table('{}.events')\n\
         rows = t.scan(selected_fields=({columns})).to_arrow().sort_by('_kafka_offset').to_pylist()\n\
         print(json.dumps(rows, default=lambda v: v.hex() if isinstance(v, bytes) else (v.isoformat() if hasattr(v, 'isoformat') else str(v))))",
        setup.warehouse().join("catalog.db").display(),
        setup.warehouse().display(),
        setup.namespace
    ))
}

const MONEY: &str = r#"{"type": "record", "name": "Money", "namespace": "k2i.common",
  "fields": [{"name": "units", "type": "long"}, {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]}}]}"#;

const EVERY_AVRO: &str = r#"{
  "type": "record", "name": "Every", "namespace": "k2i.test",
  "fields": [
    {"name": "flag", "type": "boolean"},
    {"name": "small", "type": "int"},
    {"name": "big", "type": "long"},
    {"name": "ratio", "type": "float"},
    {"name": "precise", "type": "double"},
    {"name": "blob", "type": "bytes"},
    {"name": "text", "type": "string"},
    {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "counts", "type": {"type": "map", "values": "long"}},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
    {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
    {"name": "maybe", "type": ["null", "long"]},
    {"name": "either", "type": ["string", "null"]},
    {"name": "choice", "type": ["null", "string", "long"]},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "price_fixed", "type": {"type": "fixed", "name": "Dec8", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 3}},
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "id_fixed", "type": {"type": "fixed", "name": "U16", "size": 16, "logicalType": "uuid"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "t_ms", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "t_us", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "span", "type": {"type": "fixed", "name": "Span", "size": 12, "logicalType": "duration"}},
    {"name": "total", "type": "k2i.common.Money"}
  ]
}"#;

fn every(i: i64) -> Value {
    json!({
        "value": {
            "flag": i % 2 == 0, "small": -(i as i32) - 1, "big": i * 1_000_000_000_000, "ratio": 1.5, "precise": -2.25,
            "blob": "AAEC", "text": format!("héllo {i}"), "inner": {"x": i}, "tags": ["a", "b"], "counts": {"k": i},
            "color": if i % 2 == 0 { "GREEN" } else { "RED" }, "hash": "AQIDBA==",
            "maybe": if i == 0 { Value::Null } else { json!(i) }, "either": if i == 0 { json!("e") } else { Value::Null },
            "choice": match i % 3 { 0 => Value::Null, 1 => json!({"string": "s"}), _ => json!({"long": 42}) },
            "price": "-12.34", "price_fixed": "123456789012345.678",
            "id": "7d444840-9dc0-11d1-b245-5ffdce74fad2", "id_fixed": "00112233-4455-6677-8899-aabbccddeeff",
            "day": "2026-01-02", "t_ms": "01:02:03.004", "t_us": "01:02:03.004005",
            "ts_ms": "2026-01-02T03:04:05.123+02:00", "ts_us": "2026-01-02T03:04:05.123456Z",
            "local_us": "2026-01-02T03:04:05.000001", "span": [1, 2, 3],
            "total": {"units": 250, "currency": "USD"}
        },
        "key": format!("k{i}"),
        "partition": (i % 2) as i32,
    })
}

#[tokio::test]
async fn confluent_avro_of_every_type_logical_type_and_union_round_trips_through_duckdb_and_pyiceberg() {
    let stack = stack();
    let setup = Setup::new(stack, "avro-types", 2).await;
    let dir = setup.dir.path();
    let money = write(dir, "money.avsc", MONEY);
    let schema = write(dir, "every.avsc", EVERY_AVRO);
    let records: Vec<Value> = (0..6).map(every).collect();
    let produced = stack.produce_registered(
        &setup.topic,
        "avro",
        &schema,
        &[("k2i.common.Money", "k2i-common-money", &money)],
        &records,
        "topic",
    );
    assert_eq!(produced.offsets.len(), 6);

    let config = setup.sql_config(stack, "avro", &registry_section(stack, dir));
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ingested 6 rows (0 records skipped)"), "{}", text(&out.stdout));

    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(6), Some(6)));
    let metadata = seen["metadata"].as_str().unwrap();
    let rows = stack.duckdb(&format!(
        "select flag, small, big, ratio, precise, hex(blob) as blob, text, \"inner\".x as x, tags, counts['k'] as k, color, \
         hex(hash) as hash, maybe, either, choice.string as c_string, choice.long as c_long, choice is null as c_null, \
         cast(price as varchar) as price, cast(price_fixed as varchar) as price_fixed, id, id_fixed, \
         cast(day as varchar) as day, cast(t_ms as varchar) as t_ms, cast(t_us as varchar) as t_us, \
         epoch_us(ts_ms) as ts_ms, epoch_us(ts_us) as ts_us, cast(local_us as varchar) as local_us, hex(span) as span, \
         total.units as units, total.currency as currency, typeof(ts_ms) as ts_type, typeof(local_us) as local_type \
         from iceberg_scan('{metadata}') order by _kafka_partition, _kafka_offset"
    ));
    assert_eq!(rows.len(), 6, "{rows:?}");
    let r0 = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(
        r0,
        json!({
            "flag": true, "small": -1, "big": 0, "ratio": 1.5, "precise": -2.25, "blob": "000102", "text": "héllo 0",
            "x": 0, "tags": ["a", "b"], "k": 0, "color": "GREEN", "hash": "01020304", "maybe": null, "either": "e",
            "c_string": null, "c_long": null, "c_null": true,
            "price": "-12.34", "price_fixed": "123456789012345.678",
            "id": "7d444840-9dc0-11d1-b245-5ffdce74fad2", "id_fixed": "00112233-4455-6677-8899-aabbccddeeff",
            "day": "2026-01-02", "t_ms": "01:02:03.004", "t_us": "01:02:03.004005",
            "ts_ms": 1_767_315_845_123_000i64, "ts_us": 1_767_323_045_123_456i64, "local_us": "2026-01-02 03:04:05.000001",
            "span": "010000000200000003000000", "units": 250, "currency": "USD",
            "ts_type": "TIMESTAMP WITH TIME ZONE", "local_type": "TIMESTAMP"
        })
    );
    // Rows by partition then offset: i = 0, 2, 4 then 1, 3, 5; the union members.
    let union = |i: usize| {
        let r = serde_json::to_value(&rows[i]).unwrap();
        (r["c_string"].clone(), r["c_long"].clone(), r["c_null"].clone(), r["maybe"].clone())
    };
    assert_eq!(union(1), (Value::Null, json!(42), json!(false), json!(2)));
    assert_eq!(union(3), (json!("s"), Value::Null, json!(false), json!(1)));
    assert_eq!(union(4), (Value::Null, Value::Null, json!(true), json!(3)));

    // pyiceberg reads the same values (decimals exact, timestamps in UTC to the microsecond).
    let py = pyiceberg_rows(
        stack,
        &setup,
        "'_kafka_offset', '_kafka_partition', 'price', 'price_fixed', 'ts_ms', 'ts_us', 'local_us', 'day', 't_us', 'id_fixed', 'span', 'hash'",
    );
    let first = py.as_array().unwrap().iter().find(|r| r["_kafka_partition"] == 0 && r["_kafka_offset"] == 0).unwrap();
    assert_eq!(
        (&first["price"], &first["price_fixed"], &first["ts_ms"], &first["ts_us"], &first["local_us"]),
        (
            &json!("-12.34"),
            &json!("123456789012345.678"),
            &json!("2026-01-02T01:04:05.123000+00:00"),
            &json!("2026-01-02T03:04:05.123456+00:00"),
            &json!("2026-01-02T03:04:05.000001")
        )
    );
    assert_eq!(
        (&first["day"], &first["t_us"], &first["id_fixed"], &first["span"], &first["hash"]),
        (
            &json!("2026-01-02"),
            &json!("01:02:03.004005"),
            &json!("00112233-4455-6677-8899-aabbccddeeff"),
            &json!("010000000200000003000000"),
            &json!("01020304")
        )
    );
}

const EVERY_JSON: &str = r##"{
  "$schema": "http://json-schema.org/draft-07/schema#", "title": "k2i.test.Every", "type": "object",
  "properties": {
    "flag": {"type": "boolean"},
    "n": {"type": "integer"},
    "small": {"type": "integer", "connect.type": "int32"},
    "x": {"type": "number"},
    "s": {"type": "string"},
    "at": {"type": "string", "format": "date-time"},
    "day": {"type": "string", "format": "date"},
    "id": {"type": "string", "format": "uuid"},
    "color": {"enum": ["RED", "GREEN"]},
    "maybe": {"type": ["null", "integer"]},
    "either": {"oneOf": [{"type": "null"}, {"type": "string"}]},
    "inner": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    "home": {"$ref": "address.json"},
    "zip": {"$ref": "#/$defs/Zip"}
  },
  "required": ["flag"],
  "additionalProperties": true,
  "$defs": {"Zip": {"type": "string"}}
}"##;

const ADDRESS_JSON: &str =
    r#"{"type": "object", "properties": {"city": {"type": "string"}, "street": {"type": "string"}}}"#;

#[tokio::test]
async fn confluent_json_schema_of_every_shape_round_trips_and_undeclared_keys_are_not_stored() {
    let stack = stack();
    let setup = Setup::new(stack, "jsonschema-types", 1).await;
    let dir = setup.dir.path();
    let address = write(dir, "address.json", ADDRESS_JSON);
    let schema = write(dir, "every.json", EVERY_JSON);
    let records: Vec<Value> = (0..4)
        .map(|i| {
            json!({"value": {
                "flag": i % 2 == 0, "n": i * 1_000_000_000_000i64, "small": i, "x": 0.5 + i as f64, "s": format!("s{i}"),
                "at": "2026-01-02T03:04:05.123456+02:00", "day": "2026-01-02", "id": "7d444840-9dc0-11d1-b245-5ffdce74fad2",
                "color": "GREEN", "maybe": if i == 0 { Value::Null } else { json!(i) }, "either": "e",
                "inner": {"a": i, "undeclared_inside": true}, "tags": ["a"], "counts": {"k": i},
                "home": {"city": "Paris", "street": "Rue"}, "zip": "75001", "undeclared": {"any": [1, "x"]}
            }, "partition": 0})
        })
        .collect();
    let produced = stack.produce_registered(
        &setup.topic,
        "json",
        &schema,
        &[("address.json", "k2i-address-json", &address)],
        &records,
        "topic",
    );
    assert_eq!(produced.offsets.len(), 4);
    let config = setup.sql_config(stack, "json_schema", &registry_section(stack, dir));
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ingested 4 rows (0 records skipped)"), "{}", text(&out.stdout));

    let fields = setup.fields_sql(stack);
    for (name, want) in [
        ("flag", "boolean"),
        ("n", "long"),
        ("small", "int"),
        ("x", "double"),
        ("at", "timestamptz"),
        ("day", "date"),
        ("id", "string"),
        ("color", "string"),
        ("maybe", "long"),
        ("either", "string"),
        ("zip", "string"),
    ] {
        assert_eq!(fields[name][1], want, "{name}: {fields}");
    }
    assert!(fields.get("undeclared").is_none(), "undeclared keys are not stored: {fields}");
    let seen = setup.inspect_sql(stack, "");
    let metadata = seen["metadata"].as_str().unwrap();
    let rows = stack.duckdb(&format!(
        "select flag, n, small, x, s, epoch_us(\"at\") as \"at\", cast(\"day\" as varchar) as \"day\", id, color, maybe, either, \
         \"inner\".a as a, tags, counts['k'] as k, home.city as city, zip from iceberg_scan('{metadata}') order by _kafka_offset"
    ));
    assert_eq!(
        serde_json::to_value(&rows[1]).unwrap(),
        json!({"flag": false, "n": 1_000_000_000_000i64, "small": 1, "x": 1.5, "s": "s1", "at": 1_767_315_845_123_456i64,
               "day": "2026-01-02", "id": "7d444840-9dc0-11d1-b245-5ffdce74fad2", "color": "GREEN", "maybe": 1, "either": "e",
               "a": 1, "tags": ["a"], "k": 1, "city": "Paris", "zip": "75001"})
    );
    assert_eq!(rows[0]["maybe"], Value::Null);
    let py = pyiceberg_rows(stack, &setup, "'_kafka_offset', 'at', 'n'");
    assert_eq!(py[0]["at"], "2026-01-02T01:04:05.123456+00:00");
}

/// The evolution schemas of `format`: v1 (id string, count int, inner {a}), v2 (count long, inner.b, label
/// string, count optional), v3 (label a number: breaking), v4 (compatible with the table, able to read v3).
fn versions(format: Format) -> [String; 4] {
    match format {
        Format::Avro => {
            let record = |fields: &str| {
                format!(r#"{{"type": "record", "name": "Event", "namespace": "k2i.evo", "fields": [{fields}]}}"#)
            };
            [
                record(
                    r#"{"name": "id", "type": "string"}, {"name": "count", "type": "int"}, {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "string"}]}}"#,
                ),
                record(
                    r#"{"name": "id", "type": "string"}, {"name": "count", "type": ["null", "long"], "default": null}, {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0}]}}, {"name": "label", "type": ["null", "string"], "default": null}"#,
                ),
                record(
                    r#"{"name": "id", "type": "string"}, {"name": "count", "type": ["null", "long"], "default": null}, {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0}]}}, {"name": "label", "type": "long"}"#,
                ),
                // v4 renames v3's numeric label (the alias lets it read v3's records) and adds a field with a default.
                record(
                    r#"{"name": "id", "type": "string"}, {"name": "count", "type": ["null", "long"], "default": null}, {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0}]}}, {"name": "label_number", "type": "long", "aliases": ["label"], "default": 0}, {"name": "source", "type": "string", "default": "legacy"}"#,
                ),
            ]
        }
        Format::JsonSchema => {
            let object = |properties: &str, required: &str| {
                format!(
                    r#"{{"title": "k2i.evo.Event", "type": "object", "properties": {{{properties}}}, "required": [{required}]}}"#
                )
            };
            [
                object(
                    r#""id": {"type": "string"}, "count": {"type": "integer", "connect.type": "int32"}, "inner": {"type": "object", "properties": {"a": {"type": "string"}}}"#,
                    r#""id", "count""#,
                ),
                object(
                    r#""id": {"type": "string"}, "count": {"type": "integer"}, "inner": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "connect.type": "int32"}}}, "label": {"type": "string"}"#,
                    r#""id""#,
                ),
                object(
                    r#""id": {"type": "string"}, "count": {"type": "integer"}, "inner": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "connect.type": "int32"}}}, "label": {"type": "integer"}"#,
                    r#""id""#,
                ),
                object(
                    r#""id": {"type": "string"}, "count": {"type": "integer"}, "inner": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "connect.type": "int32"}}}, "label_number": {"type": "integer"}"#,
                    r#""id""#,
                ),
            ]
        }
    }
}

fn events(from: i64, n: i64, extra: impl Fn(i64) -> Value) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            let mut value = json!({"id": format!("e{i}"), "count": i, "inner": {"a": format!("a{i}")}});
            if let (Some(v), Value::Object(more)) = (value.as_object_mut(), extra(i)) {
                v.extend(more);
            }
            json!({"value": value, "partition": 0})
        })
        .collect()
}

async fn evolve_pause_skip(format: Format) {
    let stack = stack();
    let setup = Setup::new(stack, &format!("{}-evolve", format.producer()), 1).await;
    let dir = setup.dir.path();
    let [v1, v2, v3, _] = versions(format).map(|text| text);
    let v1 = write(dir, "v1.schema", &v1);
    let v2 = write(dir, "v2.schema", &v2);
    let v3 = write(dir, "v3.schema", &v3);
    produce(stack, &setup.topic, format, &v1, &events(0, 10, |_| json!({})));
    let health = free_port();
    let extra = format!("{}\n[buffer]\nflush_interval = \"500ms\"\n", registry_section(stack, dir));
    let config = setup.sql_config(stack, format.config(), &extra);
    let ingest = || {
        let mut cmd = k2i();
        cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    ingest();
    let v1_fields = setup.fields_sql(stack);
    assert_eq!(v1_fields["count"][1], "int", "the table is created from v1: {v1_fields}");
    assert!(v1_fields.get("label").is_none());

    let v2_events =
        |from, n| events(from, n, |i| json!({"label": format!("l{i}"), "inner": {"a": format!("a{i}"), "b": i}}));
    produce(stack, &setup.topic, format, &v2, &v2_events(10, 10));
    // An older writer is still accepted after the table evolved.
    ingest();
    produce(stack, &setup.topic, format, &v1, &events(20, 2, |_| json!({})));
    ingest();
    let v2_fields = setup.fields_sql(stack);
    assert_eq!(v2_fields["count"], json!([v1_fields["count"][0], "long"]), "widened in place, same field id");
    assert_eq!(v2_fields["label"][1], "string");
    let seen = setup.inspect_sql(stack, "");
    assert_eq!(seen["rows"].as_i64(), Some(22));
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(label) as labels, count(\"inner\".b) as bs, sum(count) as total, typeof(any_value(count)) as t \
         from iceberg_scan('{metadata}')"
    ));
    assert_eq!(
        serde_json::to_value(&duck[0]).unwrap(),
        json!({"labels": 10, "bs": 10, "total": 231, "t": "BIGINT"}),
        "v1 rows read null in v2's columns"
    );

    // v3 records pause the table; v2 records after them wait behind them.
    produce(stack, &setup.topic, format, &v3, &events(22, 5, |i| json!({"label": i})));
    produce(stack, &setup.topic, format, &v2, &v2_events(27, 5));
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("paused by a breaking schema change"), "{}", text(&out.stderr));
    assert_eq!(setup.inspect_sql(stack, "")["rows"].as_i64(), Some(22));

    let log = dir.join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config);
    cmd.env("K2I_MONITORING__HEALTH_PORT", health.to_string()).env("K2I_MONITORING__METRICS_PORT", health.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    let base = format!("http://127.0.0.1:{health}");
    let reason = eventually("paused by v3", Duration::from_secs(60), || {
        let (code, body) = http_get(&format!("{base}/readyz"))?;
        (code == 503 && body.contains("breaking")).then_some(body)
    });
    assert!(reason.contains(&format!("{}-value", setup.topic)), "{reason}");
    assert!(reason.contains("`label` is string in the table and long in the schema"), "{reason}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(setup.inspect_sql(stack, "")["rows"].as_i64(), Some(22), "nothing past the breaking record");
    // A retry finds no newer schema: paused again. Then the operator skips v3's records, without a restart.
    let (code, body) = http_post(&format!("{base}/resume?action=retry")).unwrap();
    assert_eq!(code, 202, "{body}");
    eventually("paused again after the retry", Duration::from_secs(30), || {
        let (code, body) = http_get(&format!("{base}/readyz"))?;
        (code == 503 && body.contains("breaking")).then_some(())
    });
    let (code, body) = http_post(&format!("{base}/resume?action=skip")).unwrap();
    assert_eq!(code, 202, "{body}");
    eventually("27 rows after the skip", Duration::from_secs(60), || {
        (setup.inspect_sql(stack, "")["rows"].as_i64() == Some(27)).then_some(())
    });
    eventually("/readyz 200", Duration::from_secs(30), || {
        http_get(&format!("{base}/readyz")).filter(|(c, _)| *c == 200)
    });
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));
    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(27), Some(27)));
    assert_eq!(recorded_offsets(&seen["summaries"], &setup.topic).values().copied().collect::<Vec<_>>(), [32]);
}

#[tokio::test]
async fn avro_writer_schemas_evolve_the_table_and_a_breaking_one_pauses_it_until_an_operator_skips() {
    evolve_pause_skip(Format::Avro).await;
}

#[tokio::test]
async fn json_schema_writer_schemas_evolve_the_table_and_a_breaking_one_pauses_it_until_an_operator_skips() {
    evolve_pause_skip(Format::JsonSchema).await;
}

async fn compatible_version_resumes(format: Format) -> Value {
    let stack = stack();
    let setup = Setup::new(stack, &format!("{}-reread", format.producer()), 1).await;
    let dir = setup.dir.path();
    let [_, v2, v3, v4] = versions(format);
    let (v2, v3, v4) = (write(dir, "v2.schema", &v2), write(dir, "v3.schema", &v3), write(dir, "v4.schema", &v4));
    produce(stack, &setup.topic, format, &v2, &events(0, 5, |i| json!({"label": format!("l{i}")})));
    let health = free_port();
    let config = setup.sql_config(
        stack,
        format.config(),
        &format!(
            "{}\n[buffer]\nflush_interval = \"300ms\"\n[errors]\npolicy = \"skip\"\n",
            registry_section(stack, dir)
        ),
    );
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    produce(stack, &setup.topic, format, &v3, &events(5, 3, |i| json!({"label": i * 100})));
    let log = dir.join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config);
    cmd.env("K2I_MONITORING__HEALTH_PORT", health.to_string()).env("K2I_MONITORING__METRICS_PORT", health.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    let base = format!("http://127.0.0.1:{health}");
    eventually("paused by v3", Duration::from_secs(60), || {
        let (code, body) = http_get(&format!("{base}/readyz"))?;
        (code == 503 && body.contains("breaking")).then_some(())
    });
    // The producer team registers v4 and produces with it; the operator retries.
    produce(stack, &setup.topic, format, &v4, &events(8, 2, |i| json!({"label_number": i * 100})));
    let mut resume = k2i();
    resume.args(["resume", "--url", &base]);
    let out = run(resume);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let want = if format == Format::Avro { 10 } else { 7 };
    eventually("all rows", Duration::from_secs(60), || {
        (setup.inspect_sql(stack, "")["rows"].as_i64() == Some(want)).then_some(())
    });
    eventually("/readyz 200", Duration::from_secs(30), || {
        http_get(&format!("{base}/readyz")).filter(|(c, _)| *c == 200)
    });
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));
    assert!(
        read_log(&log).contains("reading the paused schema id with the subject's latest schema"),
        "{}",
        read_log(&log)
    );
    let seen = setup.inspect_sql(stack, "");
    assert_eq!(recorded_offsets(&seen["summaries"], &setup.topic).values().copied().collect::<Vec<_>>(), [10]);
    let metadata = seen["metadata"].as_str().unwrap();
    let columns = if format == Format::Avro {
        ", string_agg(coalesce(source, '-'), ',' order by _kafka_offset) as sources"
    } else {
        ""
    };
    let duck = stack.duckdb(&format!(
        "select string_agg(coalesce(label, cast(label_number as varchar)), ',' order by _kafka_offset) as values{columns} \
         from iceberg_scan('{metadata}')"
    ));
    serde_json::to_value(&duck[0]).unwrap()
}

#[tokio::test]
async fn a_compatible_avro_version_registered_while_paused_reads_the_paused_records_through_its_aliases_and_defaults() {
    let row = compatible_version_resumes(Format::Avro).await;
    assert_eq!(
        row,
        json!({"values": "l0,l1,l2,l3,l4,500,600,700,800,900", "sources": "-,-,-,-,-,legacy,legacy,legacy,legacy,legacy"}),
        "v3's records read through v4: `label` by its alias, `source` by its default"
    );
}

#[tokio::test]
async fn json_schema_records_of_a_paused_version_are_rechecked_on_resume_and_what_does_not_fit_follows_the_error_policy()
 {
    // JSON text is self-describing: after the retry v3's records are checked against the table v4 shaped;
    // their numeric `label` still does not fit the string column, so errors.policy = "skip" drops them.
    let row = compatible_version_resumes(Format::JsonSchema).await;
    assert_eq!(row, json!({"values": "l0,l1,l2,l3,l4,800,900"}));
}

async fn dead_letter_everything_bad(format: Format) {
    let stack = stack();
    let setup = Setup::new(stack, &format!("{}-dlq", format.producer()), 1).await;
    let dlq = stack.unique("sr-dlq-letters");
    stack.create_topic(&dlq, 1).await;
    let dir = setup.dir.path();
    let [v1, v2, v3, _] = versions(format);
    let (v1, v2, v3) = (write(dir, "v1.schema", &v1), write(dir, "v2.schema", &v2), write(dir, "v3.schema", &v3));
    // Offsets 0-4 good (v2), 5 bad magic, 6 truncated frame, 7 tombstone, 8 an unknown id, 9 a cut body,
    // 10 an id of another schema type, 11-13 a breaking schema, 14-15 good again (v1).
    let good = produce(stack, &setup.topic, format, &v2, &events(0, 5, |i| json!({"label": format!("l{i}")})));
    let v2_id = good[0].unwrap();
    let extra = format!(
        "{}\n[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"{dlq}\"\n",
        registry_section(stack, dir)
    );
    let config = setup.sql_config(stack, format.config(), &extra);
    let ingest = || {
        let mut cmd = k2i();
        cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
        cmd.env("K2I_SCHEMA_EVOLUTION__ON_BREAKING_CHANGE", "dead-letter");
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(ingest().starts_with("ingested 5 rows (0 records skipped)"));
    // A Protobuf schema in the same registry: its id is not one this table can read.
    let other = stack
        .register_schema(
            &stack.unique("other-proto"),
            k2i_testkit::SchemaType::Protobuf,
            "syntax = \"proto3\";\nmessage M { string a = 1; }\n",
            &[],
        )
        .await;
    let header = |id: u32| {
        let mut v = vec![0u8];
        v.extend(id.to_be_bytes());
        v
    };
    let cut = {
        let mut v = header(v2_id);
        v.extend(match format {
            // A string length of 40 bytes, then 2.
            Format::Avro => vec![0x50, b'e', b'1'],
            Format::JsonSchema => b"{\"id\": \"e1".to_vec(),
        });
        v
    };
    let mut other_type = header(other);
    other_type.extend(b"\x02a");
    stack
        .produce(
            &setup.topic,
            [
                k2i_testkit::TestRecord::value(b"\x01garbage".to_vec()),
                k2i_testkit::TestRecord::value(b"\x00\x00\x00".to_vec()),
                k2i_testkit::TestRecord { key: Some(b"gone".to_vec()), ..Default::default() },
                k2i_testkit::TestRecord::value(b"\x00\x3b\x9a\xca\x00\x00\x0a\x01x".to_vec()),
                k2i_testkit::TestRecord::value(cut),
                k2i_testkit::TestRecord::value(other_type),
            ],
        )
        .await;
    let breaking = produce(stack, &setup.topic, format, &v3, &events(11, 3, |i| json!({"label": i})));
    let v3_id = breaking[0].unwrap();
    produce(stack, &setup.topic, format, &v1, &events(14, 2, |_| json!({})));

    let stdout = ingest();
    assert!(stdout.starts_with("ingested 2 rows (9 records skipped)"), "{stdout}");
    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(7), Some(7)));
    assert_eq!(recorded_offsets(&seen["summaries"], &setup.topic)["0"], 16);
    let letters = dead_letters(stack, &dlq, 9).await;
    let (v2s, v3s, others) = (Some(v2_id.to_string()), Some(v3_id.to_string()), Some(other.to_string()));
    let decode = match format {
        Format::Avro => "avro_decode",
        Format::JsonSchema => "not_json",
    };
    assert_eq!(
        letters,
        [
            ("bad_frame".to_owned(), None, 5),
            ("bad_frame".to_owned(), None, 6),
            ("tombstone".to_owned(), None, 7),
            ("undecodable_schema".to_owned(), Some("1000000000".to_owned()), 8),
            (decode.to_owned(), v2s, 9),
            ("undecodable_schema".to_owned(), others, 10),
            ("breaking_schema".to_owned(), v3s.clone(), 11),
            ("breaking_schema".to_owned(), v3s.clone(), 12),
            ("breaking_schema".to_owned(), v3s, 13),
        ]
    );
}

#[tokio::test]
async fn corrupt_avro_frames_unknown_ids_other_schema_types_and_breaking_schemas_go_to_the_dead_letter_topic_counted() {
    dead_letter_everything_bad(Format::Avro).await;
}

#[tokio::test]
async fn corrupt_json_schema_frames_unknown_ids_other_schema_types_and_breaking_schemas_go_to_the_dead_letter_topic_counted()
 {
    dead_letter_everything_bad(Format::JsonSchema).await;
}

fn config_named(stack: &k2i_testkit::Stack, setup: &Setup, format: Format, name: &str, url: &str) -> PathBuf {
    let dir = setup.dir.path();
    let section = format!("\n[kafka.format.registry]\nurl = \"{url}\"\ncache_dir = \"{}/schemas\"\n", dir.display());
    let written =
        setup.sql_config(stack, format.config(), &format!("{section}\n[buffer]\nflush_interval = \"500ms\"\n"));
    let path = dir.join(name);
    std::fs::copy(&written, &path).unwrap();
    path
}

fn ingest_until_caught_up(config: &Path, fault: Option<&str>) -> std::process::Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    if let Some(fault) = fault {
        cmd.env("K2I_FAULT", fault);
    }
    run(cmd)
}

/// Exactly `expected` rows, each (partition, offset) once, partition 0 recorded up to `end`.
fn assert_exact(stack: &k2i_testkit::Stack, setup: &Setup, expected: i64, end: i64) -> Value {
    let seen = setup.inspect_sql(stack, "");
    assert_eq!(seen["missing"], json!([]), "data files referenced but gone: {seen}");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(expected), Some(expected)), "{seen}");
    assert_eq!(recorded_offsets(&seen["summaries"], &setup.topic)["0"], end);
    seen
}

async fn registry_down(format: Format) {
    use k2i_testkit::proxy::{Fault, Match, Proxy};
    let stack = stack();
    let setup = Setup::new(stack, &format!("{}-registry-down", format.producer()), 1).await;
    let dir = setup.dir.path();
    let [v1, v2, _, _] = versions(format);
    let (v1, v2) = (write(dir, "v1.schema", &v1), write(dir, "v2.schema", &v2));
    let v1_id = produce(stack, &setup.topic, format, &v1, &events(0, 10, |_| json!({})))[0].unwrap();
    let real = config_named(stack, &setup, format, "real.toml", &stack.registry);
    let out = ingest_until_caught_up(&real, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.join(format!("schemas/schema-{v1_id}.json")).exists(), "v1 is in the disk cache");

    // (a) Warm: nothing listens at the registry's address; the cache has every id the records carry.
    produce(stack, &setup.topic, format, &v1, &events(10, 10, |_| json!({})));
    let dead = config_named(stack, &setup, format, "dead.toml", "http://127.0.0.1:9");
    let out = ingest_until_caught_up(&dead, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ingested 10 rows (0 records skipped)"), "{}", text(&out.stdout));
    assert_exact(stack, &setup, 20, 20);

    // (b) Cold: a new version whose id was never fetched, the registry (behind a proxy) refusing at first.
    let v2_id =
        produce(stack, &setup.topic, format, &v2, &events(20, 10, |i| json!({"label": format!("l{i}")})))[0].unwrap();
    let proxy = Proxy::start(&stack.registry);
    let base_path = stack.registry.trim_start_matches("http://").split_once('/').map(|(_, p)| format!("/{p}"));
    let proxied = config_named(
        stack,
        &setup,
        format,
        "proxied.toml",
        &format!("{}{}", proxy.url(), base_path.unwrap_or_default()),
    );
    let down = proxy.rule(Match::any(), Fault::Cut);
    let health = free_port();
    let log = dir.join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&proxied);
    cmd.env("K2I_MONITORING__HEALTH_PORT", health.to_string()).env("K2I_MONITORING__METRICS_PORT", health.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    let readyz = format!("http://127.0.0.1:{health}/readyz");
    let reason = eventually("waiting for the registry", Duration::from_secs(60), || {
        let (code, body) = http_get(&readyz)?;
        (code == 503 && body.contains("waits for schema id")).then_some(body)
    });
    assert!(reason.contains(&format!("waits for schema id {v2_id}")), "{reason}");
    assert!(down.matched() >= 1, "the registry was asked (and refused)");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(setup.inspect_sql(stack, "")["rows"].as_i64(), Some(20), "nothing past the record waiting");
    down.remove();
    eventually("30 rows", Duration::from_secs(90), || {
        (setup.inspect_sql(stack, "")["rows"].as_i64() == Some(30)).then_some(())
    });
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));
    let seen = assert_exact(stack, &setup, 30, 30);
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(label) as labels, bool_and(id = 'e' || cast(_kafka_offset as varchar)) as ids_right \
         from iceberg_scan('{metadata}')"
    ));
    assert_eq!(serde_json::to_value(&duck[0]).unwrap(), json!({"labels": 10, "ids_right": true}));
}

#[tokio::test]
async fn avro_with_the_registry_down_proceeds_on_a_warm_cache_and_waits_on_a_cold_one() {
    registry_down(Format::Avro).await;
}

#[tokio::test]
async fn json_schema_with_the_registry_down_proceeds_on_a_warm_cache_and_waits_on_a_cold_one() {
    registry_down(Format::JsonSchema).await;
}

async fn crash_after_schema_change(format: Format) {
    let stack = stack();
    let setup = Setup::new(stack, &format!("{}-crash-evolve", format.producer()), 1).await;
    let dir = setup.dir.path();
    let [v1, v2, _, _] = versions(format);
    let (v1, v2) = (write(dir, "v1.schema", &v1), write(dir, "v2.schema", &v2));
    produce(stack, &setup.topic, format, &v1, &events(0, 10, |_| json!({})));
    let config = config_named(stack, &setup, format, "k2i-crash.toml", &stack.registry);
    let out = ingest_until_caught_up(&config, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    produce(stack, &setup.topic, format, &v2, &events(10, 10, |i| json!({"label": format!("l{i}")})));
    let out = ingest_until_caught_up(&config, Some("after-schema-change:abort"));
    assert_eq!(out.status.code(), None, "the run must die at the fault point: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("fault point after-schema-change reached"), "{}", text(&out.stderr));
    let out = ingest_until_caught_up(&config, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = assert_exact(stack, &setup, 20, 20);
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!("select count(label) as labels from iceberg_scan('{metadata}')"));
    assert_eq!(duck[0]["labels"], 10);
}

#[tokio::test]
async fn a_crash_right_after_an_avro_schema_change_loses_and_duplicates_nothing() {
    crash_after_schema_change(Format::Avro).await;
}

#[tokio::test]
async fn a_crash_right_after_a_json_schema_change_loses_and_duplicates_nothing() {
    crash_after_schema_change(Format::JsonSchema).await;
}
