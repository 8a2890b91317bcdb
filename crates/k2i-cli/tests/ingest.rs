//! `k2i ingest` end to end against the real stack: records produced to Kafka, ingested by the built binary,
//! read back by independent readers (pyiceberg, DuckDB `iceberg_scan`) and counted by distinct
//! (partition, offset).
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Setup, json_records, k2i, recorded_offsets, run, text, wait};
use k2i_testkit::{TestRecord, stack};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

#[tokio::test]
async fn json_topic_lands_exactly_once_in_the_sql_catalog_and_restarts_resume_from_the_table() {
    let stack = stack();
    let setup = Setup::new(stack, "ingest-json", 4).await;
    stack.produce(&setup.topic, json_records(4, 60, 0)).await;
    let config = setup.sql_config(stack, "json", "[buffer]\nflush_batch_size = 100\n");

    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = format!("{}.events", setup.namespace);
    // A flush that spans the schema change (the `plan` column) writes one file per schema.
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("ingested 240 rows (0 records skipped) into {table} in 3 commits and ")),
        "{stdout}"
    );

    let seen = setup.inspect_sql(stack, "\"id\", \"name\", \"plan\", \"_kafka_key\"");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(240), Some(240)));
    let columns: Vec<&str> = seen["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(
        columns,
        [
            "_kafka_topic",
            "_kafka_partition",
            "_kafka_offset",
            "_kafka_timestamp",
            "_kafka_key",
            "id",
            "partition",
            "name",
            "score",
            "geo",
            "tags",
            "plan"
        ]
    );
    assert_eq!(seen["sample"][0], json!({"id": 0, "name": "user-0", "plan": null, "_kafka_key": "b'key-0'"}));
    let summaries = &seen["summaries"];
    assert_eq!(summaries.as_array().unwrap().len(), 3, "flush_batch_size = 100 → 3 snapshots");
    assert_eq!(summaries[0]["k2i.consumer-group"], setup.group.as_str());
    let offsets = recorded_offsets(summaries, &setup.topic);
    assert_eq!(offsets.values().copied().collect::<Vec<_>>(), [60, 60, 60, 60]);

    // DuckDB reads the same rows, nested columns included.
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d, count(plan) as plans, \
         sum(geo.lat) as lat, max(len(tags)) as tags from iceberg_scan('{metadata}')"
    ));
    assert_eq!(duck[0]["n"], 240);
    assert_eq!(duck[0]["d"], 240);
    assert_eq!(duck[0]["plans"], 80, "records 40..60 of each partition carry `plan`");
    assert_eq!(duck[0]["lat"], json!(240.0 * 52.5));
    assert_eq!(duck[0]["tags"], 2);

    // Kafka's group offsets were committed after the Iceberg commit (for lag tools)...
    let consumer = stack.consumer(&setup.group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(&setup.topic, p);
    }
    let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(30)).unwrap();
    for p in 0..4 {
        assert_eq!(committed.find_partition(&setup.topic, p).unwrap().offset(), Offset::Offset(60));
    }
    // ...but the table is the truth: rewinding the group to 0 must not duplicate anything.
    let mut rewind = TopicPartitionList::new();
    for p in 0..4 {
        rewind.add_partition_offset(&setup.topic, p, Offset::Offset(0)).unwrap();
    }
    consumer.commit(&rewind, rdkafka::consumer::CommitMode::Sync).unwrap();
    drop(consumer);

    stack.produce(&setup.topic, json_records(4, 15, 60)).await;
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("ingested 60 rows (0 records skipped) into {table} in 1 commit and 1 data file\n")
    );
    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(300), Some(300)));
    let offsets = recorded_offsets(&seen["summaries"], &setup.topic);
    assert_eq!(offsets.values().copied().collect::<Vec<_>>(), [75, 75, 75, 75]);

    // Nothing new: a third run commits nothing and exits at once.
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("ingested 0 rows (0 records skipped) into {table} in 0 commits and 0 data files\n")
    );
}

#[tokio::test]
async fn raw_records_with_tombstones_land_in_the_rest_catalog() {
    let stack = stack();
    let setup = Setup::new(stack, "ingest-raw", 2).await;
    let mut records = Vec::new();
    for i in 0..50 {
        let record = if i % 10 == 9 { TestRecord::default() } else { TestRecord::value(vec![i as u8; 3]) };
        records.push(record.key(format!("k{i}")).partition(i % 2));
    }
    stack.produce(&setup.topic, records).await;
    let config_text = format!(
        r#"
[kafka]
bootstrap_servers = ["{kafka}"]
topic = "{topic}"
consumer_group = "{group}"

[iceberg]
catalog_type = "rest"
rest_uri = "{rest}"
database_name = "{ns}"
table_name = "raw_events"

[transaction_log]
log_dir = "{txlog}"
"#,
        kafka = stack.kafka,
        topic = setup.topic,
        group = setup.group,
        rest = stack.rest,
        ns = setup.namespace,
        txlog = setup.dir.path().join("txlog").display()
    );
    let config = setup.dir.path().join("rest.toml");
    std::fs::write(&config, config_text).unwrap();
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "ingested 50 rows (0 records skipped) into {}.raw_events in 1 commit and 1 data file\n",
            setup.namespace
        )
    );

    let rows = stack.duckdb_rest(&format!(
        "select count(*) as n, count(value) as values, count(distinct (_kafka_partition, _kafka_offset)) as d, \
         min(octet_length(value)) as len, count(_kafka_timestamp) as ts from rest.{}.raw_events",
        setup.namespace
    ));
    assert_eq!(
        rows[0],
        json!({"n": 50, "values": 45, "d": 50, "len": 3, "ts": 50}).as_object().unwrap().clone().into_iter().collect()
    );
    let keys = stack.duckdb_rest(&format!(
        "select decode(_kafka_key) as k, value from rest.{}.raw_events where _kafka_partition = 1 and _kafka_offset = 4",
        setup.namespace
    ));
    assert_eq!(keys[0]["k"], "k9", "record 9 went to partition 1 at offset 4");
    assert_eq!(keys[0]["value"], Value::Null, "a tombstone is a null value in raw format");
}

#[tokio::test]
async fn a_bad_record_fails_with_its_position_or_is_skipped_by_policy() {
    let stack = stack();
    let setup = Setup::new(stack, "ingest-bad", 1).await;
    let mut records: Vec<TestRecord> = (0..10).map(|i| TestRecord::value(json!({"n": i}).to_string())).collect();
    records[5] = TestRecord::value("not json at all");
    records[7] = TestRecord::value(json!({"n": "seven"}).to_string());
    stack.produce(&setup.topic, records).await;

    let config = setup.sql_config(stack, "json", "");
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let error =
        stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert_eq!(
        error,
        format!(
            "error: cannot store a record: the value is not JSON: expected ident at line 1 column 2 (topic={}, partition=0, offset=5)",
            setup.topic
        )
    );

    let config = setup.sql_config(stack, "json", "[errors]\npolicy = \"skip\"\n");
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ingested 8 rows (2 records skipped)"), "{}", text(&out.stdout));
    let seen = setup.inspect_sql(stack, "\"n\"");
    assert_eq!(seen["rows"], 8);
    let offsets = recorded_offsets(&seen["summaries"], &setup.topic);
    assert_eq!(offsets["0"], 10, "skipped records are consumed: progress covers them");
}

#[tokio::test]
async fn continuous_ingest_flushes_on_the_interval_and_stops_cleanly_on_sigterm() {
    let stack = stack();
    let setup = Setup::new(stack, "ingest-live", 2).await;
    let config = setup.sql_config(stack, "raw", "[buffer]\nflush_interval = \"500ms\"\n");
    let child = k2i()
        .args(["ingest", "--config"])
        .arg(&config)
        .args(["--topic", &setup.topic, "--consumer-group", &setup.group, "--bootstrap-servers", &stack.kafka])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _child_guard = common::KillOnDrop(child.id());

    stack.produce(&setup.topic, (0..30).map(|i| TestRecord::value(format!("v{i}")).partition(i % 2))).await;
    // The idle-flush clock: rows appear without more traffic and without a batch-size trigger.
    let catalog = setup.warehouse().join("catalog.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if catalog.exists() {
            let seen = setup.inspect_sql(stack, "");
            if seen["rows"] == 30 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "rows did not appear within 60 s");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Records buffered at SIGTERM are flushed before exit.
    stack.produce(&setup.topic, (30..40).map(|i| TestRecord::value(format!("v{i}")).partition(i % 2))).await;
    std::thread::sleep(Duration::from_millis(200));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = wait(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SIGTERM received; flushing and stopping"), "{}", text(&out.stderr));
    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(40), Some(40)));
}

#[test]
fn unbuilt_features_are_refused_not_faked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k2i.toml");
    std::fs::write(
        &config,
        "[kafka]\nbootstrap_servers = [\"127.0.0.1:1\"]\ntopic = \"t\"\nconsumer_group = \"g\"\n\
         [iceberg]\ntable_name = \"t\"\npartition_by = [\"day(ts)\"]\nwarehouse_path = \"WH\"\n"
            .replace("WH", &dir.path().join("w").display().to_string()),
    )
    .unwrap();
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "error: writing partitioned tables is not built yet (key=iceberg.partition_by, waits_for=the tables/maintenance issue)"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_object_store_warehouse_needs_a_catalog_database_and_unknown_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k2i.toml");
    let write = |warehouse: &str| {
        let toml = format!(
            "[kafka]\nbootstrap_servers = [\"127.0.0.1:1\"]\ntopic = \"t\"\nconsumer_group = \"g\"\n\
             [iceberg]\ntable_name = \"t\"\nwarehouse_path = \"{warehouse}\"\n"
        );
        std::fs::write(&config, toml).unwrap();
    };
    // The embedded SQLite file cannot live in a bucket: the SQL catalog asks for its database.
    write("s3://bucket/warehouse");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config).current_dir(dir.path());
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("error: iceberg.sql.uri is required when the warehouse is not a local directory"),
        "{}",
        text(&out.stderr)
    );
    // A store this build has no client for fails validation, naming the ones it has.
    write("hdfs://namenode/warehouse");
    let mut cmd = k2i();
    cmd.args(["validate", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("iceberg.warehouse_path") && stderr.contains("s3") && stderr.contains("`hdfs`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn declared_json_columns_are_typed_and_headers_are_kept() {
    let stack = stack();
    let setup = Setup::new(stack, "ingest-typed", 1).await;
    let records = (0..20).map(|i| {
        let value =
            json!({"event_id": i, "at": format!("2026-01-{:02}T10:00:00Z", i + 1), "amount": "12.50", "extra": "x"});
        // `amount` as a JSON number too: decimals accept both.
        let value = if i % 2 == 0 {
            value
        } else {
            json!({"event_id": i, "at": format!("2026-01-{:02}T10:00:00+02:00", i + 1), "amount": 7.25})
        };
        TestRecord::value(value.to_string())
            .header("source", "web")
            .header("seq", i.to_string())
            .header("source", "app")
    });
    stack.produce(&setup.topic, records).await;
    let config = setup.sql_config(stack, "json", "");
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"])
        .arg(&config)
        .env("K2I_KAFKA__INCLUDE_HEADERS", "true")
        .env("K2I_KAFKA__FORMAT__COLUMNS", r#"{ event_id = "long", at = "timestamptz", amount = "decimal(10, 2)" }"#);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let seen = setup.inspect_sql(stack, "");
    let columns: Vec<&str> = seen["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(
        columns,
        [
            "_kafka_topic",
            "_kafka_partition",
            "_kafka_offset",
            "_kafka_timestamp",
            "_kafka_key",
            "_kafka_headers",
            "event_id",
            "at",
            "amount",
            "extra"
        ]
    );
    let metadata = seen["metadata"].as_str().unwrap();
    let rows = stack.duckdb(&format!(
        "select count(*) as n, typeof(any_value(\"at\")) as at_type, min(\"at\") as first, sum(amount) as total, \
         count(extra) as extras, decode(any_value(_kafka_headers['source'])) as source, \
         max(cardinality(_kafka_headers)) as header_names from iceberg_scan('{metadata}')"
    ));
    assert_eq!(rows[0]["n"], 20);
    assert_eq!(rows[0]["at_type"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(rows[0]["first"], "2026-01-01T10:00:00+00:00");
    assert_eq!(rows[0]["total"], "197.50", "10 × 12.50 + 10 × 7.25");
    assert_eq!(rows[0]["extras"], 10, "the undeclared field was added as an inferred column");
    assert_eq!(rows[0]["source"], "app", "a repeated header name keeps its last value");
    assert_eq!(rows[0]["header_names"], 2);
}
