//! One smoke test per server of the local stack: each talks to the real server and checks a round trip.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{DataFileFormat, NestedField, PrimitiveType, Schema, Type};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_rest::{REST_CATALOG_PROP_URI, RestCatalogBuilder};
use k2i_testkit::{SchemaType, TestRecord, stack};
use parquet::file::properties::WriterProperties;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

#[tokio::test]
async fn kafka_round_trip_with_a_consumer_group_on_four_partitions() {
    let stack = stack();
    let topic = stack.unique("smoke-kafka");
    let group = stack.unique("smoke-group");
    stack.create_topic(&topic, 4).await;

    const PER_PARTITION: i64 = 50;
    let records = (0..4).flat_map(|p| {
        (0..PER_PARTITION).map(move |i| {
            TestRecord::value(format!("value-{p}-{i}"))
                .key(format!("key-{p}-{i}"))
                .header("seq", i.to_string())
                .partition(p)
        })
    });
    let positions = stack.produce(&topic, records).await;
    assert_eq!(positions.len(), 200);

    let consumer = stack.consumer(&group);
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.values().map(Vec::len).sum::<usize>() < 200 {
        let remaining = deadline.checked_duration_since(Instant::now()).expect("timed out waiting for 200 records");
        let message = tokio::time::timeout(remaining, consumer.recv()).await.expect("timed out").unwrap();
        let (p, offset) = (message.partition(), message.offset());
        assert_eq!(message.payload(), Some(format!("value-{p}-{offset}").as_bytes()));
        assert_eq!(message.key(), Some(format!("key-{p}-{offset}").as_bytes()));
        let header = message.headers().unwrap().get(0);
        assert_eq!((header.key, header.value), ("seq", Some(offset.to_string().as_bytes())));
        seen.entry(p).or_default().push(offset);
    }
    for p in 0..4 {
        assert_eq!(seen[&p], (0..PER_PARTITION).collect::<Vec<_>>(), "partition {p} read in order, once");
    }

    // Offsets committed synchronously by the group are what a new member of the group sees.
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(consumer);
    let again = stack.consumer(&group);
    let mut wanted = TopicPartitionList::new();
    for p in 0..4 {
        wanted.add_partition(&topic, p);
    }
    let committed = again.committed_offsets(wanted, Duration::from_secs(30)).unwrap();
    for p in 0..4 {
        let offset = committed.find_partition(&topic, p).unwrap().offset();
        assert_eq!(offset, Offset::Offset(PER_PARTITION), "partition {p}");
    }
    stack.delete_topic(&topic).await;
}

#[tokio::test]
async fn registry_stores_a_protobuf_schema_and_returns_it_by_id() {
    let stack = stack();
    let subject = format!("{}-value", stack.unique("smoke-proto"));
    let schema = "syntax = \"proto3\";\npackage k2i.smoke;\n\nmessage Event {\n  string id = 1;\n  int64 at = 2;\n}\n";
    let id = stack.register_schema(&subject, SchemaType::Protobuf, schema, &[]).await;

    let by_id = stack.registry_get(&format!("schemas/ids/{id}")).await;
    assert_eq!(by_id["schemaType"], "PROTOBUF");
    let text = by_id["schema"].as_str().unwrap();
    assert!(text.contains("message Event") && text.contains("int64 at = 2;"), "{text}");

    let latest = stack.registry_get(&format!("subjects/{subject}/versions/latest")).await;
    assert_eq!(latest["id"], json!(id));
    assert_eq!(latest["version"], json!(1));
    // Registering the same schema again is idempotent: same id, no new version.
    assert_eq!(stack.register_schema(&subject, SchemaType::Protobuf, schema, &[]).await, id);
    assert_eq!(stack.registry_get(&format!("subjects/{subject}/versions")).await, json!([1]));
}

#[tokio::test]
async fn rest_catalog_table_written_in_rust_reads_back_in_pyiceberg_and_duckdb() {
    let stack = stack();
    let catalog = RestCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load("rest", HashMap::from([(REST_CATALOG_PROP_URI.to_owned(), stack.rest.clone())]))
        .await
        .unwrap();
    let namespace = NamespaceIdent::new(stack.unique("smoke_rest").replace('-', "_"));
    catalog.create_namespace(&namespace, HashMap::new()).await.unwrap();
    let schema = Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .build()
        .unwrap();
    let creation = TableCreation::builder().name("events".to_owned()).schema(schema).build();
    let table = catalog.create_table(&namespace, creation).await.unwrap();

    let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema()).unwrap());
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let names: ArrayRef = Arc::new(StringArray::from(vec![Some("alpha"), None, Some("gamma")]));
    let batch = RecordBatch::try_new(arrow_schema, vec![ids, names]).unwrap();

    let parquet = ParquetWriterBuilder::new(WriterProperties::default(), table.metadata().current_schema().clone());
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        parquet,
        table.file_io().clone(),
        DefaultLocationGenerator::new(table.metadata()).unwrap(),
        DefaultFileNameGenerator::new("smoke".to_owned(), None, DataFileFormat::Parquet),
    );
    let mut writer = DataFileWriterBuilder::new(rolling).build(None).await.unwrap();
    writer.write(batch).await.unwrap();
    let files = writer.close().await.unwrap();
    assert_eq!(files.len(), 1);

    let tx = Transaction::new(&table);
    let append = tx
        .fast_append()
        .add_data_files(files)
        .set_snapshot_properties(HashMap::from([("k2i.smoke".to_owned(), "yes".to_owned())]));
    let table = append.apply(tx).unwrap().commit(&catalog).await.unwrap();
    let snapshot = table.metadata().current_snapshot().unwrap();
    assert_eq!(snapshot.summary().additional_properties.get("k2i.smoke").map(String::as_str), Some("yes"));

    // pyiceberg, through the same REST catalog.
    let ident = TableIdent::new(namespace.clone(), "events".to_owned());
    let script = format!(
        r#"
import json, os
from pyiceberg.catalog import load_catalog
catalog = load_catalog("rest", type="rest", uri=os.environ["K2I_TEST_REST"])
table = catalog.load_table("{ns}.events")
rows = table.scan().to_arrow().sort_by("id").to_pylist()
print(json.dumps({{"rows": rows, "summary": table.current_snapshot().summary.additional_properties}}))
"#,
        ns = ident.namespace().to_url_string()
    );
    let py = stack.python_json(&script);
    let expected = json!([{"id": 1, "name": "alpha"}, {"id": 2, "name": null}, {"id": 3, "name": "gamma"}]);
    assert_eq!(py["rows"], expected);
    assert_eq!(py["summary"]["k2i.smoke"], "yes");

    // DuckDB, reading the metadata file directly.
    let location = table.metadata_location().unwrap();
    let rows = stack.duckdb(&format!("select id, name from iceberg_scan('{location}') order by id"));
    let rows: Vec<Value> = rows.into_iter().map(|r| json!(r)).collect();
    assert_eq!(Value::Array(rows), expected);
}
