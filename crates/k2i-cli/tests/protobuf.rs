//! Confluent-framed Protobuf end to end: records produced by Confluent's own serializer
//! (confluent-kafka's ProtobufSerializer, scripts/stack/pb_produce.py) through the stack's registry, decoded
//! straight into typed columns, the table evolving with the writers' schemas, a breaking schema pausing the
//! table until an operator resumes it — all judged by DuckDB and pyiceberg.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    KillOnDrop, Setup, dead_letters, eventually, free_port, http_get, http_post, k2i, kill, read_log, recorded_offsets,
    run, spawn_logged, text, wait,
};
use k2i_testkit::stack;
use serde_json::{Value, json};

fn proto_dir() -> std::path::PathBuf {
    k2i_testkit::repo_root().join("crates/k2i-cli/tests/proto")
}

/// `[kafka.format]` type plus the message the table is created from, and the registry section.
fn protobuf_format(message: &str) -> String {
    format!("protobuf\"\nmessage_name = \"{message}")
}

fn registry_section(stack: &k2i_testkit::Stack, dir: &Path) -> String {
    format!("\n[kafka.format.registry]\nurl = \"{}\"\ncache_dir = \"{}/schemas\"\n", stack.registry, dir.display())
}

fn order(i: i64) -> Value {
    json!({
        "value": {
            "i32": -(i as i32) - 1, "i64": i * 1_000_000_000_000, "u32": 4_294_967_295u32, "u64": "18446744073709551615",
            "s32": -5, "s64": -(i + 1), "f32": 7, "f64": "9", "sf32": -9, "sf64": "-10",
            "fl": 1.5, "db": 2.25, "flag": i % 2 == 0, "id": format!("order-{i}"), "blob": "AAEC",
            "status": if i % 2 == 0 { "PAID" } else { "NEW" },
            "lines": [{"sku": "a", "qty": 2, "price": {"currency": "EUR", "units": 3}}, {"sku": "b", "qty": 1}],
            "codes": [1, 2, 300], "attrs": {"k": i},
            "card": if i % 2 == 0 { Value::from("4111") } else { Value::Null },
            "note": if i == 0 { Value::from("first") } else { Value::Null },
            "created_at": "2026-01-02T03:04:05.123456Z"
        },
        "key": format!("k{i}"),
        "partition": (i % 2) as i32,
    })
    .as_object()
    .map(|o| {
        // JSON null members are left out (protobuf JSON has no null for scalars).
        let mut o = o.clone();
        let value = o["value"].as_object().unwrap().iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
        o.insert("value".into(), Value::Object(value));
        Value::Object(o)
    })
    .unwrap()
}

#[tokio::test]
async fn confluent_protobuf_of_every_kind_lands_in_typed_columns_and_message_indexes_select_the_type() {
    let stack = stack();
    let setup = Setup::new(stack, "pb-types", 2).await;
    let orders: Vec<Value> = (0..20).map(order).collect();
    let produced = stack.produce_protobuf(&setup.topic, &proto_dir(), "events/order.proto", "k2i.test.Order", &orders);
    assert_eq!(produced.offsets.len(), 20);
    // A Refund (the file's first message: index [0], the single-byte short form) in the same topic.
    let refund = [json!({"value": {"order_id": "order-3", "amount": 250}, "partition": 0})];
    let refunded = stack.produce_protobuf(&setup.topic, &proto_dir(), "events/order.proto", "k2i.test.Refund", &refund);
    assert_eq!(refunded.schema_ids, produced.schema_ids[..1], "one schema id for the whole file");

    let extra = registry_section(stack, setup.dir.path());
    let config = setup.sql_config(stack, &protobuf_format("k2i.test.Order"), &extra);
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ingested 21 rows (0 records skipped)"), "{}", text(&out.stdout));

    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(21), Some(21)));
    let columns: Vec<&str> = seen["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    // Order's fields in declaration order, the oneof's case column, then Refund's fields (added by evolution).
    assert_eq!(
        &columns[5..],
        [
            "i32",
            "i64",
            "u32",
            "u64",
            "s32",
            "s64",
            "f32",
            "f64",
            "sf32",
            "sf64",
            "fl",
            "db",
            "flag",
            "id",
            "blob",
            "status",
            "lines",
            "codes",
            "attrs",
            "card",
            "iban",
            "note",
            "created_at",
            "payment_case",
            "order_id",
            "amount"
        ]
    );
    let metadata = seen["metadata"].as_str().unwrap();
    let rows = stack.duckdb(&format!(
        "select i32, i64, u32, cast(u64 as varchar) as u64, s32, s64, f32, cast(f64 as varchar) as f64, sf32, sf64, fl, db, \
         flag, id, hex(blob) as blob, status, len(lines) as nlines, lines[1].price.currency as currency, \
         lines[2].price is null as no_price, codes, attrs['k'] as attr, card, iban, payment_case, note, \
         epoch_us(created_at) as created_us from iceberg_scan('{metadata}') where id = 'order-0'"
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(
        (&r["i32"], &r["i64"], &r["u32"], &r["u64"], &r["s32"], &r["s64"]),
        (&json!(-1), &json!(0), &json!(4_294_967_295u64), &json!("18446744073709551615"), &json!(-5), &json!(-1))
    );
    assert_eq!((&r["f32"], &r["f64"], &r["sf32"], &r["sf64"]), (&json!(7), &json!("9"), &json!(-9), &json!(-10)));
    assert_eq!(
        (&r["fl"], &r["db"], &r["flag"], &r["blob"]),
        (&json!(1.5), &json!(2.25), &json!(true), &json!("000102"))
    );
    assert_eq!(
        (&r["status"], &r["nlines"], &r["currency"], &r["no_price"]),
        (&json!("PAID"), &json!(2), &json!("EUR"), &json!(true))
    );
    assert_eq!((&r["codes"], &r["attr"]), (&json!([1, 2, 300]), &json!(0)));
    assert_eq!(
        (&r["card"], &r["iban"], &r["payment_case"], &r["note"]),
        (&json!("4111"), &Value::Null, &json!("card"), &json!("first"))
    );
    assert_eq!(r["created_us"], json!(1_767_323_045_123_456i64));
    // proto3 implicit presence: an odd order's unset oneof reads null with a null case; `note` (explicit
    // presence) reads null; the refund row has Order's scalars at their defaults? No: it is another message,
    // so Order's columns are null and the Refund columns hold its values.
    let odd = stack.duckdb(&format!(
        "select count(*) as n, count(card) as cards, count(payment_case) as cases, count(note) as notes, \
         sum(amount) as amount, count(order_id) as refunds, count(i32) as ints from iceberg_scan('{metadata}')"
    ));
    assert_eq!(
        serde_json::to_value(&odd[0]).unwrap(),
        json!({"n": 21, "cards": 10, "cases": 10, "notes": 1, "amount": 250, "refunds": 1, "ints": 20})
    );
}

fn write_proto(dir: &Path, version: &str, body: &str) -> std::path::PathBuf {
    let root = dir.join(version);
    std::fs::create_dir_all(root.join("evo")).unwrap();
    std::fs::write(root.join("evo/event.proto"), format!("syntax = \"proto3\";\npackage k2i.evo;\n{body}")).unwrap();
    root
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

#[tokio::test]
async fn writer_schemas_evolve_the_table_and_a_breaking_one_pauses_it_until_an_operator_resumes() {
    let stack = stack();
    let setup = Setup::new(stack, "pb-evolve", 1).await;
    let dir = setup.dir.path();
    let v1 = write_proto(
        dir,
        "v1",
        "message Inner { string a = 1; }\nmessage Event { string id = 1; int32 count = 2; Inner inner = 3; }\n",
    );
    // v2: `count` widened to int64, a new top-level field and a new nested one.
    let v2 = write_proto(
        dir,
        "v2",
        "message Inner { string a = 1; int32 b = 2; }\nmessage Event { string id = 1; int64 count = 2; Inner inner = 3; string label = 4; }\n",
    );
    // v3: `label` becomes a number, which Iceberg cannot promote a string column to.
    let v3 = write_proto(
        dir,
        "v3",
        "message Inner { string a = 1; int32 b = 2; }\nmessage Event { string id = 1; int64 count = 2; Inner inner = 3; int64 label = 4; }\n",
    );
    let message = "k2i.evo.Event";
    stack.produce_protobuf(&setup.topic, &v1, "evo/event.proto", message, &events(0, 10, |_| json!({})));
    let health = free_port();
    let extra = format!("{}\n[buffer]\nflush_interval = \"500ms\"\n", registry_section(stack, dir));
    let config = setup.sql_config(stack, &protobuf_format(message), &extra);
    let ingest = || {
        let mut cmd = k2i();
        cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    let fields = || setup.fields_sql(stack);
    ingest();
    let v1_fields = fields();
    assert_eq!(v1_fields["count"][1], "int", "the table is created from v1: {v1_fields}");
    assert!(v1_fields.get("label").is_none());

    stack.produce_protobuf(
        &setup.topic,
        &v2,
        "evo/event.proto",
        message,
        &events(10, 10, |i| json!({"label": format!("l{i}"), "inner": {"a": format!("a{i}"), "b": i}})),
    );
    ingest();
    let v2_fields = fields();
    assert_eq!(v2_fields["count"], json!([v1_fields["count"][0], "long"]), "widened in place, same field id");
    assert_eq!(v2_fields["label"][1], "string");
    let seen = setup.inspect_sql(stack, "");
    assert_eq!(seen["rows"].as_i64(), Some(20));
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(label) as labels, count(\"inner\".b) as bs, sum(count) as total, typeof(any_value(count)) as t \
         from iceberg_scan('{metadata}')"
    ));
    assert_eq!(
        serde_json::to_value(&duck[0]).unwrap(),
        json!({"labels": 10, "bs": 10, "total": 190, "t": "BIGINT"}),
        "v1 rows read null in v2's columns"
    );

    // v3 records pause the table; v2 records after them wait behind them.
    stack.produce_protobuf(&setup.topic, &v3, "evo/event.proto", message, &events(20, 5, |i| json!({"label": i})));
    stack.produce_protobuf(
        &setup.topic,
        &v2,
        "evo/event.proto",
        message,
        &events(25, 5, |i| json!({"label": format!("l{i}")})),
    );
    // A batch run has nobody to resume it: it stops with exit 3 at the breaking record, committing nothing
    // past it.
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("paused by a breaking schema change")
            && text(&out.stderr).contains("with --until-caught-up k2i stops instead of waiting for a resume"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(setup.inspect_sql(stack, "")["rows"].as_i64(), Some(20));

    let log = dir.join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config);
    // `k2i()` gives every instance free ports through the environment, which wins over the file.
    cmd.env("K2I_MONITORING__HEALTH_PORT", health.to_string()).env("K2I_MONITORING__METRICS_PORT", health.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    let base = format!("http://127.0.0.1:{health}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let reason = loop {
        if let Some((503, body)) = http_get(&format!("{base}/readyz"))
            && body.contains("breaking")
        {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not paused after 60 s: {:?}\n{}",
            http_get(&format!("{base}/readyz")),
            read_log(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(reason.contains("schema id") && reason.contains(&format!("{}-value", setup.topic)), "{reason}");
    assert!(reason.contains("`label` is string in the table and long in the schema"), "{reason}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(setup.inspect_sql(stack, "")["rows"].as_i64(), Some(20), "nothing past the breaking record");
    let metrics = http_get(&format!("{base}/metrics")).unwrap().1;
    assert!(metrics.contains("k2i_schema_paused 1"), "{metrics}");

    // A retry finds nothing new (the subject's latest schema is v3 itself; producing v2 again registers no
    // new version): the table pauses again on the same record.
    let (code, body) = http_post(&format!("{base}/resume?action=retry")).unwrap();
    assert_eq!(code, 202, "{body}");
    eventually("paused again after the retry", Duration::from_secs(30), || {
        let (code, body) = http_get(&format!("{base}/readyz"))?;
        (code == 503 && body.contains("breaking")).then_some(())
    });
    // The operator skips the breaking schema's records: the v2 records behind them land, without a restart.
    let (code, body) = http_post(&format!("{base}/resume?action=skip")).unwrap();
    assert_eq!(code, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while setup.inspect_sql(stack, "")["rows"].as_i64() != Some(25) {
        assert!(std::time::Instant::now() < deadline, "not 25 rows after the skip:\n{}", read_log(&log));
        std::thread::sleep(Duration::from_millis(300));
    }
    eventually("/readyz 200", Duration::from_secs(30), || {
        http_get(&format!("{base}/readyz")).filter(|(c, _)| *c == 200)
    });
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));

    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(25), Some(25)));
    let offsets = recorded_offsets(&seen["summaries"], &setup.topic);
    assert_eq!(offsets.values().copied().collect::<Vec<_>>(), [30], "the skipped records' offsets are covered");
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(*) as n, count(label) as labels, min(id) filter (where _kafka_offset >= 20) as first_after \
         from iceberg_scan('{metadata}')"
    ));
    assert_eq!(serde_json::to_value(&duck[0]).unwrap(), json!({"n": 25, "labels": 15, "first_after": "e25"}));
    let last = fields();
    assert_eq!(last["count"], v2_fields["count"]);
    assert_eq!(last["label"][1], "string");
}

#[tokio::test]
async fn corrupt_frames_unknown_ids_tombstones_and_breaking_schemas_go_to_the_dead_letter_topic_counted() {
    let stack = stack();
    let setup = Setup::new(stack, "pb-dlq", 1).await;
    let dlq = stack.unique("pb-dlq-letters");
    stack.create_topic(&dlq, 1).await;
    let dir = setup.dir.path();
    let v1 = write_proto(dir, "v1", "message Event { string id = 1; int64 count = 2; string label = 3; }\n");
    let v3 = write_proto(dir, "v3", "message Event { string id = 1; int64 count = 2; int64 label = 3; }\n");
    let message = "k2i.evo.Event";
    let label = |i: i64| json!({"label": format!("l{i}")});
    // Offsets 0-4 good, 5 bad magic, 6 truncated frame, 7 tombstone, 8 an id the registry does not know,
    // 9-11 a breaking schema, 12-13 good again.
    stack.produce_protobuf(
        &setup.topic,
        &v1,
        "evo/event.proto",
        message,
        &(0..5).map(|i| one(i, label(i))).collect::<Vec<_>>(),
    );
    // The table is created from v1 (the subject's latest schema when k2i first starts).
    // The test config's own [schema_evolution] section holds the interval; the breaking action comes by env.
    let extra = format!(
        "{}\n[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"{dlq}\"\n",
        registry_section(stack, dir)
    );
    let config = setup.sql_config(stack, &protobuf_format(message), &extra);
    let ingest = || {
        let mut cmd = k2i();
        cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
        cmd.env("K2I_SCHEMA_EVOLUTION__ON_BREAKING_CHANGE", "dead-letter");
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(ingest().starts_with("ingested 5 rows (0 records skipped)"));
    stack
        .produce(
            &setup.topic,
            [
                k2i_testkit::TestRecord::value(b"\x01garbage".to_vec()),
                k2i_testkit::TestRecord::value(b"\x00\x00\x00".to_vec()),
                k2i_testkit::TestRecord { key: Some(b"gone".to_vec()), ..Default::default() },
                k2i_testkit::TestRecord::value(b"\x00\x3b\x9a\xca\x00\x00\x0a\x01x".to_vec()),
            ],
        )
        .await;
    let breaking = stack.produce_protobuf(
        &setup.topic,
        &v3,
        "evo/event.proto",
        message,
        &(9..12).map(|i| one(i, json!({"label": i}))).collect::<Vec<_>>(),
    );
    let v3_id = breaking.schema_ids[0].unwrap();
    stack.produce_protobuf(
        &setup.topic,
        &v1,
        "evo/event.proto",
        message,
        &(12..14).map(|i| one(i, label(i))).collect::<Vec<_>>(),
    );

    let stdout = ingest();
    assert!(stdout.starts_with("ingested 2 rows (7 records skipped)"), "{stdout}");
    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(7), Some(7)));
    assert_eq!(recorded_offsets(&seen["summaries"], &setup.topic)["0"], 14);

    let letters = dead_letters(stack, &dlq, 7).await;
    let v3 = Some(v3_id.to_string());
    assert_eq!(
        letters,
        [
            ("bad_frame".to_owned(), None, 5),
            ("bad_frame".to_owned(), None, 6),
            ("tombstone".to_owned(), None, 7),
            ("undecodable_schema".to_owned(), Some("1000000000".to_owned()), 8),
            ("breaking_schema".to_owned(), v3.clone(), 9),
            ("breaking_schema".to_owned(), v3.clone(), 10),
            ("breaking_schema".to_owned(), v3, 11),
        ]
    );
}

fn one(i: i64, extra: Value) -> Value {
    let mut value = json!({"id": format!("e{i}"), "count": i});
    if let (Some(v), Value::Object(more)) = (value.as_object_mut(), extra) {
        v.extend(more);
    }
    json!({"value": value, "partition": 0})
}

#[tokio::test]
async fn a_compatible_version_registered_while_paused_reads_the_paused_records_after_k2i_resume() {
    let stack = stack();
    let setup = Setup::new(stack, "pb-reread", 1).await;
    let dir = setup.dir.path();
    let message = "k2i.evo.Event";
    let v1 = write_proto(dir, "v1", "message Event { string id = 1; int64 count = 2; string label = 3; }\n");
    // v3 turns `label` into a number: breaking for the table's string column.
    let v3 = write_proto(dir, "v3", "message Event { string id = 1; int64 count = 2; int64 label = 3; }\n");
    // v4, registered while the table is paused, gives field 3 a new name: compatible with the table (a new
    // column) and able to read v3's bytes.
    let v4 = write_proto(dir, "v4", "message Event { string id = 1; int64 count = 2; int64 label_number = 3; }\n");
    stack.produce_protobuf(
        &setup.topic,
        &v1,
        "evo/event.proto",
        message,
        &(0..5).map(|i| one(i, json!({"label": format!("l{i}")}))).collect::<Vec<_>>(),
    );
    let health = free_port();
    let config = setup.sql_config(
        stack,
        &protobuf_format(message),
        &format!("{}\n[buffer]\nflush_interval = \"300ms\"\n", registry_section(stack, dir)),
    );
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    stack.produce_protobuf(
        &setup.topic,
        &v3,
        "evo/event.proto",
        message,
        &(5..8).map(|i| one(i, json!({"label": i * 100}))).collect::<Vec<_>>(),
    );
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
    stack.produce_protobuf(
        &setup.topic,
        &v4,
        "evo/event.proto",
        message,
        &(8..10).map(|i| one(i, json!({"label_number": i * 100}))).collect::<Vec<_>>(),
    );
    let mut resume = k2i();
    resume.args(["resume", "--url", &base]);
    let out = run(resume);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    eventually("10 rows", Duration::from_secs(60), || {
        (setup.inspect_sql(stack, "")["rows"].as_i64() == Some(10)).then_some(())
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
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(10), Some(10)));
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select string_agg(coalesce(label, cast(label_number as varchar)), ',' order by _kafka_offset) as values \
         from iceberg_scan('{metadata}')"
    ));
    assert_eq!(duck[0]["values"], "l0,l1,l2,l3,l4,500,600,700,800,900", "v3's records read through v4");
}
