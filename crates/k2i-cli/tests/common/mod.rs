//! Helpers shared by the integration tests that run the built `k2i` binary against the real stack.
#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a part; tests fail loudly by design.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k2i_testkit::{Stack, TestRecord};
use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn k2i() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2i"));
    // Every instance gets its own HTTP port: tests run in parallel and several instances share a config.
    let port = free_port().to_string();
    cmd.env_remove("K2I_CONFIG")
        .env("K2I_LOG", "info,k2i_core=debug")
        .env("K2I_MONITORING__HEALTH_PORT", &port)
        .env("K2I_MONITORING__METRICS_PORT", &port);
    cmd
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a command to completion, failing the test if it takes longer than `TIMEOUT`.
pub fn run(mut cmd: Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait(child, TIMEOUT)
}

/// Waits for a child, failing the test after `timeout`. Its piped output is read while it runs: a child
/// whose log outgrows the pipe buffer (64 KiB) would otherwise block in `write` and never finish.
pub fn wait(mut child: Child, timeout: Duration) -> Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            let stderr = stderr.join().unwrap();
            panic!("k2i did not finish within {timeout:?}:\n{}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A test's own topic, group, warehouse and configuration file.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub topic: String,
    pub group: String,
    pub namespace: String,
}

impl Setup {
    pub async fn new(stack: &Stack, name: &str, partitions: i32) -> Self {
        let topic = stack.unique(name);
        stack.create_topic(&topic, partitions).await;
        Self {
            dir: tempfile::tempdir().unwrap(),
            group: stack.unique(&format!("{name}-group")),
            namespace: stack.unique(name).replace('-', "_"),
            topic,
        }
    }

    pub fn warehouse(&self) -> PathBuf {
        self.dir.path().join("warehouse")
    }

    /// Writes `k2i.toml` for the SQL catalog; `extra` is appended (more tables or keys of them).
    pub fn sql_config(&self, stack: &Stack, format: &str, extra: &str) -> PathBuf {
        let catalog = format!("warehouse_path = \"{}\"", self.warehouse().display());
        self.write_config(stack, "k2i.toml", &catalog, format, extra)
    }

    /// Writes `name` for the REST catalog at `uri` (the stack's, or a proxy in front of it); `extra` is
    /// appended.
    pub fn rest_config(&self, stack: &Stack, name: &str, uri: &str, format: &str, extra: &str) -> PathBuf {
        let catalog = format!("catalog_type = \"rest\"\nrest_uri = \"{uri}\"");
        self.write_config(stack, name, &catalog, format, extra)
    }

    /// Writes `k2i.toml` for `catalog` (the REST one: the stack's, directly).
    pub fn config(&self, stack: &Stack, catalog: Catalog, format: &str, extra: &str) -> PathBuf {
        match catalog {
            Catalog::Sql => self.sql_config(stack, format, extra),
            Catalog::Rest => self.rest_config(stack, "k2i.toml", &stack.rest, format, extra),
            Catalog::Postgres => {
                let text = format!(
                    "warehouse_path = \"{}\"\n[iceberg.sql]\nuri = {{ env = \"K2I_TEST_POSTGRES\" }}\n{}",
                    self.s3_warehouse(stack),
                    s3_storage(stack)
                );
                self.write_config(stack, "k2i.toml", &text, format, extra)
            }
            Catalog::Glue => {
                let text = format!(
                    "catalog_type = \"glue\"\nwarehouse_path = \"{}\"\n[iceberg.glue]\nendpoint = \"{}\"\n\
                     region = \"{}\"\ncatalog_id = \"123456789012\"\n{}",
                    self.s3_warehouse(stack),
                    stack.s3().endpoint,
                    stack.s3().region,
                    s3_storage(stack)
                );
                self.write_config(stack, "k2i.toml", &text, format, extra)
            }
            Catalog::S3Tables => {
                let text = format!(
                    "catalog_type = \"s3tables\"\n[iceberg.s3tables]\ntable_bucket_arn = \"{}\"\nendpoint = \"{}\"\n{}",
                    self.table_bucket(stack),
                    stack.s3().endpoint,
                    s3_storage(stack)
                );
                self.write_config(stack, "k2i.toml", &text, format, extra)
            }
        }
    }

    /// This test's own S3 Tables table bucket on the stack's moto (created on first use); its ARN.
    pub fn table_bucket(&self, stack: &Stack) -> String {
        let name = self.namespace.replace('_', "-");
        let out = stack.python_json(&format!(
            r#"
import json, os, boto3
client = boto3.client("s3tables", endpoint_url=os.environ["K2I_TEST_S3_ENDPOINT"], region_name=os.environ["K2I_TEST_S3_REGION"],
                      aws_access_key_id=os.environ["K2I_TEST_S3_ACCESS_KEY"], aws_secret_access_key=os.environ["K2I_TEST_S3_SECRET_KEY"])
found = [b["arn"] for b in client.list_table_buckets()["tableBuckets"] if b["name"] == "{name}"]
print(json.dumps({{"arn": found[0] if found else client.create_table_bucket(name="{name}")["arn"]}}))
"#
        ));
        out["arn"].as_str().unwrap().to_owned()
    }

    /// This test's own warehouse in the stack's S3 bucket.
    pub fn s3_warehouse(&self, stack: &Stack) -> String {
        format!("s3://{}/{}", stack.s3().bucket, self.namespace)
    }

    /// Writes `name`: this test's Kafka topic and group, `format`, its namespace and table `events`, the
    /// `catalog` lines (keys of `[iceberg]`, then any `[iceberg.*]` tables), its transaction log, `extra`.
    pub fn write_config(&self, stack: &Stack, name: &str, catalog: &str, format: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[kafka]
bootstrap_servers = ["{kafka}"]
topic = "{topic}"
consumer_group = "{group}"

[kafka.format]
type = "{format}"

[schema_evolution]
schema_update_min_interval = "0s"

[iceberg]
database_name = "{namespace}"
table_name = "events"
{catalog}

[transaction_log]
log_dir = "{dir}/txlog"
{extra}
"#,
            kafka = stack.kafka,
            topic = self.topic,
            group = self.group,
            namespace = self.namespace,
            dir = self.dir.path().display(),
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Reads the SQL catalog's table with pyiceberg: rows, distinct (partition, offset), snapshot summaries.
    pub fn inspect_sql(&self, stack: &Stack, columns: &str) -> Value {
        self.inspect(stack, Catalog::Sql, columns)
    }

    /// The SQL-catalog table's fields: name → [field id, type], read with pyiceberg.
    pub fn fields_sql(&self, stack: &Stack) -> Value {
        stack.python_json(&format!(
            "import json\nfrom pyiceberg.catalog.sql import SqlCatalog\n\
             c = SqlCatalog('k2i', uri='sqlite:///{}', warehouse='file://{}')\n\
             t = c.load_table('{}.events')\n\
             print(json.dumps({{f.name: [f.field_id, str(f.field_type)] for f in t.schema().fields}}))",
            self.warehouse().join("catalog.db").display(),
            self.warehouse().display(),
            self.namespace
        ))
    }

    /// Reads the table through `catalog` (the REST one directly, never through a test's proxy) with pyiceberg:
    /// rows, distinct (partition, offset), snapshot summaries, the data files the current snapshot references,
    /// and the data files on the store under the table's `data/` (for the orphan checks).
    pub fn inspect(&self, stack: &Stack, catalog: Catalog, columns: &str) -> Value {
        let open = match catalog {
            Catalog::Sql => format!(
                "from pyiceberg.catalog.sql import SqlCatalog\n\
                 catalog = SqlCatalog(\"k2i\", uri=\"sqlite:///{}\", warehouse=\"file://{}\")",
                self.warehouse().join("catalog.db").display(),
                self.warehouse().display()
            ),
            Catalog::Rest => "from pyiceberg.catalog import load_catalog\n\
                              catalog = load_catalog(\"rest\", type=\"rest\", uri=os.environ[\"K2I_TEST_REST\"])"
                .to_owned(),
            Catalog::Postgres => format!(
                "from pyiceberg.catalog.sql import SqlCatalog\n\
                 url = os.environ[\"K2I_TEST_POSTGRES\"].replace(\"postgres://\", \"postgresql+psycopg2://\", 1)\n\
                 catalog = SqlCatalog(\"k2i\", uri=url, warehouse=\"{}\", **S3_PROPS)",
                self.s3_warehouse(stack)
            ),
            Catalog::S3Tables => format!(
                "import boto3\n\
                 from pyiceberg.table import StaticTable\n\
                 client = boto3.client(\"s3tables\", endpoint_url=S3_PROPS[\"s3.endpoint\"], region_name=S3_PROPS[\"s3.region\"], \
                 aws_access_key_id=S3_PROPS[\"s3.access-key-id\"], aws_secret_access_key=S3_PROPS[\"s3.secret-access-key\"])\n\
                 class Catalog:\n    def load_table(self, name):\n        \
                 ns, table = name.split(\".\")\n        \
                 found = client.get_table_metadata_location(tableBucketARN=\"{}\", namespace=ns, name=table)\n        \
                 return StaticTable.from_metadata(found[\"metadataLocation\"], properties=S3_PROPS)\n\
                 catalog = Catalog()",
                self.table_bucket(stack)
            ),
            Catalog::Glue => "from pyiceberg.catalog.glue import GlueCatalog\n\
                              catalog = GlueCatalog(\"glue\", **{\"glue.endpoint\": os.environ[\"K2I_TEST_S3_ENDPOINT\"], \
                              \"glue.region\": os.environ[\"K2I_TEST_S3_REGION\"], \
                              \"glue.access-key-id\": os.environ[\"K2I_TEST_S3_ACCESS_KEY\"], \
                              \"glue.secret-access-key\": os.environ[\"K2I_TEST_S3_SECRET_KEY\"], **S3_PROPS})"
                .to_owned(),
        };
        let script = format!(
            r#"
import json, os
S3_PROPS = {{
    "s3.endpoint": os.environ.get("K2I_TEST_S3_ENDPOINT", ""),
    "s3.region": os.environ.get("K2I_TEST_S3_REGION", ""),
    "s3.access-key-id": os.environ.get("K2I_TEST_S3_ACCESS_KEY", ""),
    "s3.secret-access-key": os.environ.get("K2I_TEST_S3_SECRET_KEY", ""),
    "s3.force-virtual-addressing": "false",
}}
{open}
table = catalog.load_table("{ns}.events")
referenced = sorted(task.file.file_path for task in table.scan().plan_files())

def on_store(location):
    """The files under location/data, as full locations."""
    import pyarrow.fs as pafs
    if location.startswith("s3://"):
        fs = pafs.S3FileSystem(endpoint_override=S3_PROPS["s3.endpoint"], region=S3_PROPS["s3.region"],
                               access_key=S3_PROPS["s3.access-key-id"], secret_key=S3_PROPS["s3.secret-access-key"])
        root, prefix = location[len("s3://"):] + "/data", "s3://"
    else:
        fs = pafs.LocalFileSystem()
        root = location[len("file://"):] if location.startswith("file://") else location[len("file:"):]
        root, prefix = root + "/data", "file://" if location.startswith("file://") else "file:"
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
    return sorted(prefix + i.path for i in infos if i.type == pafs.FileType.File)

try:
    stored = on_store(table.location())
except OSError as e:
    # An S3 Tables table bucket refuses listing (as AWS's does): no orphan check there.
    if "MethodNotAllowed" not in str(e):
        raise
    stored = None
# A referenced file that is gone would make the scan fail: report it instead of crashing.
missing = [f for f in referenced if f not in (stored or []) and not table.io.new_input(f).exists()]
if missing:
    print(json.dumps({{"metadata": table.metadata_location, "missing": missing, "referenced": referenced, "stored": stored}}))
    raise SystemExit(0)
data = table.scan().to_arrow().sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")])
keys = list(zip(data["_kafka_partition"].to_pylist(), data["_kafka_offset"].to_pylist()))
print(json.dumps({{
    "metadata": table.metadata_location,
    "rows": data.num_rows,
    "distinct": len(set(keys)),
    "columns": [f.name for f in table.schema().fields],
    "sample": data.select([{columns}]).slice(0, 3).to_pylist() if {has_columns} else [],
    "summaries": [dict(s.summary.additional_properties) for s in sorted(table.snapshots(), key=lambda s: s.sequence_number)],
    "referenced": referenced,
    "stored": stored,
    "missing": [],
    "location": table.location(),
}}, default=str))
"#,
            ns = self.namespace,
            has_columns = if columns.is_empty() { "False" } else { "True" },
        );
        stack.python_json(&script)
    }
}

/// The `[iceberg.storage]` table for the stack's S3 server; the keys come from the environment, so the
/// configuration file holds no secret.
pub fn s3_storage(stack: &Stack) -> String {
    format!(
        "[iceberg.storage]\n\"s3.endpoint\" = \"{}\"\n\"s3.region\" = \"{}\"\n\"s3.path-style-access\" = \"true\"\n\
         \"s3.access-key-id\" = {{ env = \"K2I_TEST_S3_ACCESS_KEY\" }}\n\
         \"s3.secret-access-key\" = {{ env = \"K2I_TEST_S3_SECRET_KEY\" }}\n",
        stack.s3().endpoint,
        stack.s3().region
    )
}

/// `count` raw records of `size` pseudo-random (incompressible) bytes each, the same on every run.
pub fn incompressible_records(count: usize, size: usize) -> Vec<TestRecord> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count)
        .map(|_| {
            let value: Vec<u8> = (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            TestRecord::value(value)
        })
        .collect()
}

pub fn json_records(partitions: i32, per_partition: i64, first: i64) -> Vec<TestRecord> {
    let mut out = Vec::new();
    for p in 0..partitions {
        for i in first..first + per_partition {
            let mut value = json!({"id": i, "partition": p, "name": format!("user-{i}"), "score": i as f64 / 2.0,
                                   "geo": {"lat": 52.5, "lon": 13.4}, "tags": ["a", "b"]});
            // A field that appears only in later records: the table gains a column mid-stream.
            if i >= 40 {
                value["plan"] = json!("pro");
            }
            out.push(TestRecord::value(value.to_string()).key(format!("key-{i}")).partition(p));
        }
    }
    out
}

/// The `end` offsets of the newest snapshot mentioning each partition, from the summaries (oldest first, by
/// sequence number: iceberg-rust does not keep the metadata's snapshot list in commit order).
pub fn recorded_offsets(summaries: &Value, topic: &str) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for summary in summaries.as_array().unwrap() {
        let offsets: Value = serde_json::from_str(summary["k2i.offsets"].as_str().unwrap()).unwrap();
        for (partition, range) in offsets[topic].as_object().unwrap() {
            out.insert(partition.clone(), range[1].as_i64().unwrap());
        }
    }
    out
}

impl Setup {
    /// The table's data directory, for the catalogs whose warehouse is a local directory.
    pub fn data_dir(&self, stack: &Stack, catalog: Catalog) -> PathBuf {
        let warehouse = match catalog {
            Catalog::Sql => self.warehouse(),
            Catalog::Rest => PathBuf::from(local_path(&stack.warehouse)),
            Catalog::Postgres | Catalog::Glue | Catalog::S3Tables => {
                panic!("the {catalog:?} catalog's warehouse is in S3")
            }
        };
        warehouse.join(&self.namespace).join("events").join("data")
    }

    /// Data files the table's current snapshot references that are not on the store (a flush's files deleted
    /// although its commit landed): readers would fail. When any is missing, [`Setup::inspect`] reports only
    /// these (and the references), not rows.
    pub fn missing_files(seen: &Value) -> Vec<String> {
        seen["missing"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect()
    }

    /// Data files on the store under the table's `data/` that its current snapshot does not reference
    /// (orphans), from an [`Setup::inspect`] result.
    ///
    /// # Panics
    /// When the store cannot be listed (an S3 Tables table bucket).
    pub fn unreferenced_files(seen: &Value) -> Vec<String> {
        assert!(!seen["stored"].is_null(), "this store cannot be listed: no orphan check possible");
        let list = |key: &str| -> Vec<String> {
            seen[key].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect()
        };
        let referenced = list("referenced");
        list("stored").into_iter().filter(|f| !referenced.contains(f)).collect()
    }
}

/// The path of a `file:` location.
pub fn local_path(location: &str) -> &str {
    location.strip_prefix("file://").or_else(|| location.strip_prefix("file:")).unwrap_or(location)
}

/// Which catalog an ingest writes through (and where its warehouse is). [`Setup::inspect`] lists the data
/// files on every store, so the orphan-file checks work on all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    /// The embedded SQLite catalog in the test's own warehouse.
    Sql,
    /// The stack's Iceberg REST catalog.
    Rest,
    /// The SQL catalog in the stack's Postgres, with the test's warehouse in the stack's S3 server.
    Postgres,
    /// The Glue catalog of the stack's S3 server (moto), with the test's warehouse in its S3.
    Glue,
    /// The S3 Tables catalog of the stack's S3 server (moto), a table bucket per test.
    S3Tables,
}

/// The commit ids of the flushes whose files recovery kept because their commit could still land (a REST
/// catalog may apply a request the dead process sent): their files may stay as orphans, by design.
pub fn kept_commit_ids(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("could still land; keeping its files"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("commit_id=")))
        .map(|id| id.trim_matches('"').to_owned())
        .collect()
}

/// Kills a spawned process when dropped, so a failing test leaves no instance running.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Harmless when the process already exited (kill reports that and nothing happens).
        let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).stderr(Stdio::null()).status();
    }
}

/// Consumer settings for tests that restart an instance: a short session, so a dead member is noticed in
/// seconds, and (for one instance at a time) static membership, so a restarted instance takes its
/// partitions back at once instead of waiting for the dead one's session to expire.
pub fn fast_group(static_member: bool) -> String {
    let mut props =
        "\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n".to_owned();
    if static_member {
        props.push_str("\"group.instance.id\" = \"k2i-test-instance\"\n");
    }
    props
}

/// `per_partition` raw records in each of `partitions`, interleaved: `p<partition>-r<i>`.
pub fn raw_records(partitions: i32, per_partition: usize) -> Vec<TestRecord> {
    (0..per_partition)
        .flat_map(|i| (0..partitions).map(move |p| TestRecord::value(format!("p{p}-r{i}")).partition(p)))
        .collect()
}

/// The dead letters of `topic`: (error kind, schema id header, source offset), by source offset.
pub async fn dead_letters(stack: &Stack, topic: &str, count: usize) -> Vec<(String, Option<String>, i64)> {
    let mut out: Vec<_> = read_topic(stack, topic, count, Duration::ZERO)
        .await
        .into_iter()
        .map(|r| {
            let offset = r.headers["k2i.source.offset"].parse().unwrap();
            (r.headers["k2i.error.kind"].clone(), r.headers.get("k2i.schema.id").cloned(), offset)
        })
        .collect();
    out.sort_by_key(|(_, _, offset)| *offset);
    out
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to a child.
pub fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// GETs a URL: the status and body, `None` when nothing answered within 5 s.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    http(reqwest::Method::GET, url)
}

/// POSTs to a URL (no body): the status and body, `None` when nothing answered within 5 s.
pub fn http_post(url: &str) -> Option<(u16, String)> {
    http(reqwest::Method::POST, url)
}

fn http(method: reqwest::Method, url: &str) -> Option<(u16, String)> {
    // reqwest's blocking client owns a runtime, which must not live inside the test's async runtime.
    let url = url.to_owned();
    k2i_core::tls::install_crypto_provider();
    std::thread::spawn(move || {
        let response =
            reqwest::blocking::Client::new().request(method, url).timeout(Duration::from_secs(5)).send().ok()?;
        let code = response.status().as_u16();
        Some((code, response.text().unwrap_or_default()))
    })
    .join()
    .unwrap()
}

/// A record read back from a topic: key, value, and headers by name (values as text).
#[derive(Debug)]
pub struct ReadBack {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until `at_least` records arrived and then `quiet` passed without
/// another (at most 30 s in all), in topic order.
pub async fn read_topic(stack: &Stack, topic: &str, at_least: usize, quiet: Duration) -> Vec<ReadBack> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let consumer: StreamConsumer = stack.consumer(&stack.unique("reader"));
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|t| Instant::now() < t) {
        if out.len() >= at_least && quiet.is_zero() {
            break;
        }
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else {
            continue;
        };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_owned(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(ReadBack {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        });
        if out.len() >= at_least {
            quiet_until = Some(Instant::now() + quiet);
        }
    }
    out
}

/// Polls until `check` holds, failing with `what` after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Spawns a long-running command with its standard error in `log` (a pipe nobody reads would fill up and
/// block it), standard output discarded.
pub fn spawn_logged(mut cmd: Command, log: &std::path::Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap()
}

/// What a process has logged to `log` so far.
pub fn read_log(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}
