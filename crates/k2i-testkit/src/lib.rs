//! Test support for k2i: the servers of the local stack and the independent readers that judge k2i's tables.
//!
//! Tests run against real servers started by `scripts/stack.sh up` (Apache Kafka, a Confluent-compatible
//! Schema Registry, the Apache Iceberg REST catalog) and read results back with DuckDB's `iceberg_scan` and
//! pyiceberg. The stack publishes its addresses through `scripts/stack.sh env`; `scripts/test.sh` exports
//! them. Without them every helper here panics with "stack not running: …" — a missing server fails a test,
//! it never skips it.
//!
//! Each test should use its own names ([`Stack::unique`]) for topics, groups, subjects and namespaces.

pub mod oauth;
pub mod proxy;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// How long one Kafka operation may take before a test fails.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// The addresses of the running local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Kafka bootstrap server (`127.0.0.1:19092`).
    pub kafka: String,
    /// Base URL of the registry's Confluent-compatible API.
    pub registry: String,
    /// Base URL of the Iceberg REST catalog.
    pub rest: String,
    /// The REST catalog's warehouse location (`file:///…`).
    pub warehouse: String,
    /// The Python interpreter of the readers' virtualenv (DuckDB, pyiceberg).
    pub python: PathBuf,
}

/// The running stack, read once from the environment.
///
/// # Panics
/// When the stack's variables are missing: "stack not running: run scripts/stack.sh up".
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let var = stack_var;
        Stack {
            kafka: var("K2I_TEST_KAFKA"),
            registry: var("K2I_TEST_REGISTRY").trim_end_matches('/').to_owned(),
            rest: var("K2I_TEST_REST").trim_end_matches('/').to_owned(),
            warehouse: var("K2I_TEST_WAREHOUSE"),
            python: PathBuf::from(var("K2I_TEST_PYTHON")),
        }
    })
}

/// The stack's S3-compatible server (moto): one bucket, static test keys, path-style addressing.
#[derive(Debug, Clone)]
pub struct S3 {
    /// `http://127.0.0.1:PORT`; moto serves Glue and STS on the same URL.
    pub endpoint: String,
    /// The bucket `scripts/stack.sh up` creates.
    pub bucket: String,
    /// The region moto answers for.
    pub region: String,
    /// The access key id (the variable is `K2I_TEST_S3_ACCESS_KEY`).
    pub access_key: String,
    /// The secret key (`K2I_TEST_S3_SECRET_KEY`): tests check it never appears in k2i's output.
    pub secret_key: String,
}

fn stack_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "stack not running: run scripts/stack.sh up and export its variables \
             (eval \"$(scripts/stack.sh env)\"), or run the suite with scripts/test.sh; {name} is not set"
        )
    })
}

impl Stack {
    /// The S3 server.
    ///
    /// # Panics
    /// When its variables are missing (the stack is not running).
    pub fn s3(&self) -> &'static S3 {
        static S3: OnceLock<S3> = OnceLock::new();
        S3.get_or_init(|| S3 {
            endpoint: stack_var("K2I_TEST_S3_ENDPOINT").trim_end_matches('/').to_owned(),
            bucket: stack_var("K2I_TEST_S3_BUCKET"),
            region: stack_var("K2I_TEST_S3_REGION"),
            access_key: stack_var("K2I_TEST_S3_ACCESS_KEY"),
            secret_key: stack_var("K2I_TEST_S3_SECRET_KEY"),
        })
    }

    /// The Postgres database URL (`postgres://k2i:…@127.0.0.1:PORT/k2i`).
    ///
    /// # Panics
    /// When it is missing (the stack is not running).
    pub fn postgres(&self) -> String {
        stack_var("K2I_TEST_POSTGRES")
    }
}

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` produces a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// An explicit partition, or the default partitioner.
    pub partition: Option<i32>,
}

impl TestRecord {
    /// A record with just a value.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self { value: Some(value.into()), ..Self::default() }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the record to this partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Schema types the registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaType {
    /// Avro (the registry's default type).
    Avro,
    /// Protobuf.
    Protobuf,
    /// JSON Schema.
    Json,
}

impl SchemaType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Avro => "AVRO",
            Self::Protobuf => "PROTOBUF",
            Self::Json => "JSON",
        }
    }
}

/// A reference from one registered schema to another (`import "other.proto"`).
#[derive(Debug, Clone)]
pub struct SchemaReference {
    /// The name the referring schema uses (the import path for Protobuf).
    pub name: String,
    /// The referenced subject.
    pub subject: String,
    /// The referenced version.
    pub version: u32,
}

/// What [`Stack::produce_protobuf`] produced, in the order of its input records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ProtoProduced {
    /// Each record's (partition, offset).
    pub offsets: Vec<(i32, i64)>,
    /// The schema id in each record's framing (bytes 1..5), `None` for tombstones.
    pub schema_ids: Vec<Option<u32>>,
}

impl Stack {
    /// A name no other test (or earlier run) uses: `prefix-<pid>-<time>-<counter>`.
    pub fn unique(&self, prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
        format!("{prefix}-{}-{now}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    /// Client settings for this stack's Kafka.
    pub fn kafka_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.kafka);
        config
    }

    /// Creates a topic with `partitions` partitions (replication 1) and waits until it exists.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.kafka_config().create().unwrap_or_else(|e| panic!("cannot create a Kafka admin client: {e}"));
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT)).request_timeout(Some(KAFKA_TIMEOUT));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .unwrap_or_else(|e| panic!("cannot create topic {name} on {}: {e}", self.kafka));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("cannot create topic {topic} on {}: {code}", self.kafka);
            }
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) {
        let admin: AdminClient<DefaultClientContext> =
            self.kafka_config().create().unwrap_or_else(|e| panic!("cannot create a Kafka admin client: {e}"));
        let options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
        let results = admin
            .delete_topics(&[name], &options)
            .await
            .unwrap_or_else(|e| panic!("cannot delete topic {name} on {}: {e}", self.kafka));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("cannot delete topic {topic}: {code}");
            }
        }
    }

    /// Deletes a topic and creates it again (empty, offsets from 0), waiting for the broker to finish the
    /// deletion (asynchronous in Kafka) before the name can be reused.
    pub async fn recreate_topic(&self, name: &str, partitions: i32) {
        self.delete_topic(name).await;
        let admin: AdminClient<DefaultClientContext> =
            self.kafka_config().create().unwrap_or_else(|e| panic!("cannot create a Kafka admin client: {e}"));
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
        for _ in 0..100 {
            let results =
                admin.create_topics([&topic], &options).await.unwrap_or_else(|e| panic!("cannot create {name}: {e}"));
            match results.into_iter().next() {
                Some(Ok(_)) => return,
                Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(Err((topic, code))) => panic!("cannot recreate topic {topic}: {code}"),
                None => panic!("no result creating {name}"),
            }
        }
        panic!("topic {name} was still being deleted after 20 s");
    }

    /// Grows a topic to `total` partitions.
    pub async fn add_partitions(&self, name: &str, total: usize) {
        let admin: AdminClient<DefaultClientContext> =
            self.kafka_config().create().unwrap_or_else(|e| panic!("cannot create a Kafka admin client: {e}"));
        let options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
        let results = admin
            .create_partitions([&NewPartitions::new(name, total)], &options)
            .await
            .unwrap_or_else(|e| panic!("cannot add partitions to {name}: {e}"));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("cannot add partitions to {topic}: {code}");
            }
        }
    }

    /// Deletes the records of a partition below `before` (what retention does), moving its low watermark.
    pub async fn delete_records(&self, topic: &str, partition: i32, before: i64) {
        let admin: AdminClient<DefaultClientContext> =
            self.kafka_config().create().unwrap_or_else(|e| panic!("cannot create a Kafka admin client: {e}"));
        let mut offsets = rdkafka::TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, partition, rdkafka::Offset::Offset(before))
            .unwrap_or_else(|e| panic!("cannot name {topic}/{partition}: {e}"));
        let options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
        admin
            .delete_records(&offsets, &options)
            .await
            .unwrap_or_else(|e| panic!("cannot delete records of {topic}/{partition}: {e}"));
    }

    /// Produces the records in order (idempotent producer, `acks=all`) and returns each one's
    /// (partition, offset) once all are acknowledged.
    pub async fn produce(&self, topic: &str, records: impl IntoIterator<Item = TestRecord>) -> Vec<(i32, i64)> {
        let producer: FutureProducer = self
            .kafka_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka producer: {e}"));
        let mut pending = Vec::new();
        for record in records {
            let mut headers = OwnedHeaders::new();
            for (name, value) in &record.headers {
                headers = headers.insert(Header { key: name, value: Some(value) });
            }
            let mut future = FutureRecord::to(topic).headers(headers);
            if let Some(key) = &record.key {
                future = future.key(key);
            }
            if let Some(value) = &record.value {
                future = future.payload(value);
            }
            if let Some(partition) = record.partition {
                future = future.partition(partition);
            }
            // `send_result` queues without waiting; the delivery futures are awaited below, in order.
            let delivery = loop {
                match producer.send_result(future) {
                    Ok(delivery) => break delivery,
                    Err((rdkafka::error::KafkaError::MessageProduction(code), back)) if is_queue_full(code) => {
                        producer.poll(Duration::from_millis(50));
                        future = back;
                    }
                    Err((e, _)) => panic!("cannot produce to {topic}: {e}"),
                }
            };
            pending.push(delivery);
        }
        let mut positions = Vec::with_capacity(pending.len());
        for delivery in pending {
            match delivery.await {
                Ok(Ok(delivered)) => positions.push((delivered.partition, delivered.offset)),
                Ok(Err((e, _))) => panic!("delivery to {topic} failed: {e}"),
                Err(_) => panic!("delivery to {topic} was cancelled"),
            }
        }
        positions
    }

    /// A consumer in `group` that starts at the earliest offset and never commits on its own.
    pub fn consumer(&self, group: &str) -> StreamConsumer {
        self.kafka_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka consumer: {e}"))
    }

    /// Registers a schema under `subject` and returns its global id.
    pub async fn register_schema(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
        references: &[SchemaReference],
    ) -> u32 {
        let refs: Vec<Value> = references
            .iter()
            .map(|r| serde_json::json!({ "name": r.name, "subject": r.subject, "version": r.version }))
            .collect();
        let body = serde_json::json!({ "schemaType": schema_type.as_str(), "schema": schema, "references": refs });
        let url = format!("{}/subjects/{subject}/versions", self.registry);
        let reply = self.registry_request(http().post(&url).json(&body), &url).await;
        reply["id"].as_u64().and_then(|id| u32::try_from(id).ok()).unwrap_or_else(|| panic!("{url} answered {reply}"))
    }

    /// GETs a registry path (relative to the ccompat base URL) as JSON.
    pub async fn registry_get(&self, path: &str) -> Value {
        let url = format!("{}/{}", self.registry, path.trim_start_matches('/'));
        self.registry_request(http().get(&url), &url).await
    }

    async fn registry_request(&self, request: reqwest::RequestBuilder, url: &str) -> Value {
        let response = request
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("schema registry unreachable at {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "schema registry {url} answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("schema registry {url} answered non-JSON ({e}): {text}"))
    }

    /// Produces Protobuf records framed and registered by Confluent's own serializer (confluent-kafka's
    /// `ProtobufSerializer`, subject `<topic>-value`), through `scripts/stack/pb_produce.py`, and returns
    /// once all are acknowledged (idempotent producer, `acks=all`).
    ///
    /// `proto_file` (e.g. `events/order.proto`) is compiled from the import root `proto_dir`, with Google's
    /// well-known types available; `message` is the fully qualified message (`k2i.test.Order`, or a nested
    /// `k2i.test.Order.Line`). The serializer registers the file under the subject and each imported file
    /// of `proto_dir` as a reference (subject = its import path); well-known types are not registered.
    ///
    /// Each record is a JSON object: `{"value": {...}}` with the message in the Protobuf JSON mapping (64-bit
    /// integers may be strings, bytes base64, enums by name, fields in lowerCamelCase or as declared), or
    /// `{"value": null}` for a tombstone; optionally `"key": "text"`, `"partition": 0` and
    /// `"headers": {"name": "text"}`. The topic must exist: the stack's broker does not create topics.
    pub fn produce_protobuf(
        &self,
        topic: &str,
        proto_dir: &Path,
        proto_file: &str,
        message: &str,
        records: &[Value],
    ) -> ProtoProduced {
        self.produce_protobuf_with(topic, proto_dir, proto_file, message, records, "topic")
    }

    /// Like [`Stack::produce_protobuf`] with a subject name strategy: `topic` (`<topic>-value`), `record`
    /// (`<message full name>`) or `topic_record` (`<topic>-<message full name>`).
    pub fn produce_protobuf_with(
        &self,
        topic: &str,
        proto_dir: &Path,
        proto_file: &str,
        message: &str,
        records: &[Value],
        strategy: &str,
    ) -> ProtoProduced {
        let script = repo_root().join("scripts/stack/pb_produce.py");
        // One record per line: compact JSON never contains a raw newline.
        let mut input = String::new();
        for record in records {
            input.push_str(&record.to_string());
            input.push('\n');
        }
        let out = run_python_input(
            &self.python,
            Command::new(&self.python)
                .arg(script)
                .args(["--bootstrap", &self.kafka, "--registry", &self.registry, "--topic", topic])
                .arg("--proto-path")
                .arg(proto_dir)
                .args(["--proto", proto_file, "--message", message, "--strategy", strategy]),
            input.as_bytes(),
        );
        let produced: ProtoProduced =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("pb_produce.py printed unexpected JSON ({e}): {out}"));
        assert_eq!(produced.offsets.len(), records.len(), "pb_produce.py answered for a different count: {out}");
        produced
    }

    /// Produces Avro or JSON Schema records framed and registered by Confluent's own serializers
    /// (confluent-kafka's `AvroSerializer`, fastavro underneath, or `JSONSerializer`), through
    /// `scripts/stack/sr_produce.py`, and returns once all are acknowledged (idempotent producer, `acks=all`).
    ///
    /// `format` is `"avro"` (`schema_file` an `.avsc`) or `"json"` (a JSON Schema document). Each reference
    /// `(name, subject, file)` is registered under `subject` first, in order, and the root schema lists them
    /// all at their versions; for Avro `name` is by convention the full name of the type the file defines
    /// (`k2i.test.common.Address`), which the root then uses by name; for JSON Schema it is what the root's
    /// `"$ref"` says (`address.json`). A reference may use those listed before it (they become its own
    /// references). `strategy` names the root's subject: `topic` (`<topic>-value`), `record` (the Avro
    /// record's full name, or the JSON schema's `title`) or `topic_record` (`<topic>-<that name>`).
    ///
    /// Each record is a JSON object: `{"value": ...}`, or `{"value": null}` for a tombstone; optionally
    /// `"key": "text"`, `"partition": 0` and `"headers": {"name": "text"}`. For JSON Schema the value is
    /// sent as is (the serializer validates it). For Avro it is read against the writer schema:
    /// - null, booleans, strings, int/long as JSON integers (range-checked), float/double as numbers or
    ///   `"NaN"`, `"Infinity"`, `"-Infinity"`; enums by symbol; arrays as arrays, maps and records as objects
    ///   (a record field left out takes its default, or null if its type is a union with null; unknown
    ///   fields are an error);
    /// - bytes and fixed as base64 strings (fixed of exactly its size);
    /// - unions: `[null, T]`/`[T, null]` take null or T's value bare; any other union null or
    ///   `{"<branch>": value}`, the branch named by its type (`"long"`, `"string"`, `"array"`, `"map"`; a logical
    ///   type by its underlying type) or by a record/enum/fixed's full name (or its short name if unique);
    /// - decimal (bytes or fixed) as a string `"12.34"` (or an integer);
    /// - `timestamp-millis`/`-micros`/`-nanos` as an integer in the unit, or an RFC 3339 string with an offset
    ///   (`"2024-05-01T12:00:00.123456Z"`); `local-timestamp-*` the same without an offset; `date` as days or
    ///   `"YYYY-MM-DD"`; `time-millis`/`time-micros` as an integer or `"HH:MM:SS[.ffffff]"` (fractions up to 9
    ///   digits, what is finer than the unit dropped toward the past);
    /// - `uuid` as a string (on `fixed(16)` written as its 16 bytes); `duration` (`fixed(12)`) as
    ///   `[months, days, milliseconds]`.
    ///
    /// The topic must exist: the stack's broker does not create topics.
    pub fn produce_registered(
        &self,
        topic: &str,
        format: &str,
        schema_file: &Path,
        references: &[(&str, &str, &Path)],
        records: &[Value],
        strategy: &str,
    ) -> ProtoProduced {
        let script = repo_root().join("scripts/stack/sr_produce.py");
        // One record per line: compact JSON never contains a raw newline.
        let mut input = String::new();
        for record in records {
            input.push_str(&record.to_string());
            input.push('\n');
        }
        let mut command = Command::new(&self.python);
        command
            .arg(script)
            .args(["--bootstrap", &self.kafka, "--registry", &self.registry, "--topic", topic, "--format", format])
            .arg("--schema")
            .arg(schema_file)
            .args(["--strategy", strategy]);
        for (name, subject, file) in references {
            let mut spec = std::ffi::OsString::from(format!("{name}={subject}="));
            spec.push(file.as_os_str());
            command.arg("--reference").arg(spec);
        }
        let out = run_python_input(&self.python, &mut command, input.as_bytes());
        let produced: ProtoProduced =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("sr_produce.py printed unexpected JSON ({e}): {out}"));
        assert_eq!(produced.offsets.len(), records.len(), "sr_produce.py answered for a different count: {out}");
        produced
    }

    /// [`Stack::produce_registered`] for Avro without references, subject `<topic>-value`.
    pub fn produce_avro(&self, topic: &str, schema_file: &Path, records: &[Value]) -> ProtoProduced {
        self.produce_registered(topic, "avro", schema_file, &[], records, "topic")
    }

    /// [`Stack::produce_registered`] for JSON Schema without references, subject `<topic>-value`.
    pub fn produce_json_schema(&self, topic: &str, schema_file: &Path, records: &[Value]) -> ProtoProduced {
        self.produce_registered(topic, "json", schema_file, &[], records, "topic")
    }

    /// Runs SQL in DuckDB (with the Iceberg extension, offline) and returns the rows as JSON objects.
    /// Use `iceberg_scan('<metadata.json location>')` to read a table.
    pub fn duckdb(&self, sql: &str) -> Vec<BTreeMap<String, Value>> {
        self.duck(&[], sql)
    }

    /// Like [`Stack::duckdb`], with the REST catalog attached as `rest` (`rest.<namespace>.<table>`).
    pub fn duckdb_rest(&self, sql: &str) -> Vec<BTreeMap<String, Value>> {
        self.duck(&["--rest", &self.rest], sql)
    }

    fn duck(&self, args: &[&str], sql: &str) -> Vec<BTreeMap<String, Value>> {
        let script = repo_root().join("scripts/stack/duck.py");
        let out = run_python(&self.python, Command::new(&self.python).arg(script).args(args).arg(sql));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("duck.py printed non-JSON ({e}): {out}"))
    }

    /// Runs a Python script with pyiceberg available and returns the JSON it prints last.
    /// The script sees `K2I_TEST_REST` and `K2I_TEST_WAREHOUSE` in its environment.
    pub fn python_json(&self, script: &str) -> Value {
        let out = run_python(
            &self.python,
            Command::new(&self.python)
                .arg("-c")
                .arg(script)
                .env("K2I_TEST_REST", &self.rest)
                .env("K2I_TEST_WAREHOUSE", &self.warehouse),
        );
        let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("the Python script printed non-JSON ({e}): {out}"))
    }
}

/// An HTTPS front for a plain-HTTP server, with its own CA ([`Stack::tls_proxy`]). Killed when dropped.
#[derive(Debug)]
pub struct TlsProxy {
    /// The proxy's base URL (`https://127.0.0.1:PORT`); a path under it goes to the same path under the
    /// upstream URL.
    pub url: String,
    /// The CA certificate that signed the server's and the client's certificates (PEM).
    pub ca: PathBuf,
    /// The server's certificate (for 127.0.0.1 and localhost).
    pub server_cert: PathBuf,
    /// The server's private key (PKCS#8 PEM).
    pub server_key: PathBuf,
    /// A client certificate the CA signed, for mTLS.
    pub client_cert: PathBuf,
    /// The client certificate's private key (PKCS#8 PEM).
    pub client_key: PathBuf,
    /// Where the proxy logs handshake failures and requests.
    pub log: PathBuf,
    child: Child,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        // Already gone is fine: nothing is left to stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stack {
    /// Starts `scripts/stack/tls_proxy.py`: HTTPS on a free loopback port in front of `upstream` (e.g.
    /// [`Stack::registry`]), with a CA, a server certificate and a client certificate generated into `dir`.
    /// With `require_client_cert`, a client must present a certificate of that CA (mTLS).
    ///
    /// # Panics
    /// When the proxy does not announce its URL within 30 s (its log is in the message).
    pub fn tls_proxy(&self, upstream: &str, dir: &Path, require_client_cert: bool) -> TlsProxy {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let log = dir.join("tls_proxy.log");
        let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let mut command = Command::new(&self.python);
        command
            .arg(repo_root().join("scripts/stack/tls_proxy.py"))
            .args(["--upstream", upstream])
            .arg("--dir")
            .arg(dir);
        if require_client_cert {
            command.arg("--require-client-cert");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python.display()));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout for tls_proxy.py"));
        let (sender, announced) = std::sync::mpsc::channel();
        // Read on another thread, so a proxy that hangs before printing fails the test instead of blocking it.
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = sender.send(line);
        });
        let mut proxy = TlsProxy {
            url: String::new(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            log,
            child,
        };
        // From here on, a panic drops `proxy` and so kills the child.
        let line = announced.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let url = serde_json::from_str::<Value>(&line).ok().and_then(|v| v["url"].as_str().map(str::to_owned));
        proxy.url = url.unwrap_or_else(|| {
            let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
            panic!("tls_proxy.py did not announce its URL (printed {line:?}):\n{log}")
        });
        proxy
    }
}

/// An HTTP client. reqwest is built with rustls and no crypto provider of its own (k2i_core::tls installs
/// ring for k2i); the same one is installed here, so a test that talks to the stack first does not panic.
fn http() -> reqwest::Client {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err when k2i (or another test helper) installed it first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::new()
}

fn is_queue_full(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    code == rdkafka::types::RDKafkaErrorCode::QueueFull
}

fn run_python(python: &Path, command: &mut Command) -> String {
    // An empty stdin, at end of file at once: what `Command::output` gives a child.
    run_python_input(python, command, &[])
}

/// Runs a Python command with `input` on its stdin; returns its stdout, or panics with its stderr.
fn run_python_input(python: &Path, command: &mut Command, input: &[u8]) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin for {}", python.display()));
    // Written from another thread, so a child that answers before reading everything cannot deadlock us.
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that exits without reading is judged by its exit status below, not by this error.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}\n{}",
        python.display(),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The repository root (this crate lives in `crates/k2i-testkit`).
pub fn repo_root() -> PathBuf {
    // Every crate of the workspace is two levels down; the path at run time (cargo sets it for the tests'
    // crate) wins over the one compiled in, so a binary built in another checkout finds this one's files.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../..")
}

/// The stack's Azure Blob service (Azurite): `scripts/stack.sh env` exports these.
#[derive(Debug, Clone)]
pub struct Azure {
    /// `http://127.0.0.1:PORT/<account>`: Azurite serves accounts by path.
    pub endpoint: String,
    /// The emulator's development account (`devstoreaccount1`).
    pub account: String,
    /// The account key (`K2I_TEST_AZURE_KEY`): tests check it never appears in k2i's output.
    pub key: String,
    /// The container `scripts/stack.sh up` creates.
    pub container: String,
}

impl Azure {
    /// `host:port` of the Blob service, for `adls.blob-storage-authority`.
    pub fn authority(&self) -> &str {
        let host = self.endpoint.split_once("://").map_or(self.endpoint.as_str(), |(_, rest)| rest);
        host.split('/').next().unwrap_or(host)
    }
}

impl Stack {
    /// The Azure Blob service of the stack.
    ///
    /// # Panics
    /// When `K2I_TEST_AZURE_*` is not set (the stack is not up, or its env was not loaded).
    pub fn azure(&self) -> &'static Azure {
        static AZURE: OnceLock<Azure> = OnceLock::new();
        AZURE.get_or_init(|| Azure {
            endpoint: stack_var("K2I_TEST_AZURE_ENDPOINT").trim_end_matches('/').to_owned(),
            account: stack_var("K2I_TEST_AZURE_ACCOUNT"),
            key: stack_var("K2I_TEST_AZURE_KEY"),
            container: stack_var("K2I_TEST_AZURE_CONTAINER"),
        })
    }

    /// Runs `scripts/stack/azure_blob.py` (a Blob API client independent of k2i's) and parses its JSON
    /// output, e.g. `["blocks", container, blob]`.
    pub fn azure_blob(&self, args: &[&str]) -> Value {
        let azure = self.azure();
        let script = repo_root().join("scripts/stack/azure_blob.py");
        let out = run_python(
            &self.python,
            Command::new(&self.python)
                .arg(script)
                .args(args)
                .env("K2I_TEST_AZURE_ENDPOINT", &azure.endpoint)
                .env("K2I_TEST_AZURE_ACCOUNT", &azure.account)
                .env("K2I_TEST_AZURE_KEY", &azure.key),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("azure_blob.py {args:?} printed no JSON ({e}): {out}"))
    }
}
