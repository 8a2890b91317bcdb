//! Tables on Google Cloud Storage: the stack's GCS emulator (fake-gcs-server, which speaks GCS's JSON API)
//! holds the warehouse, the SQL catalog (SQLite in the test's temp dir) keeps the tables, and pyiceberg
//! (pyarrow's GCS filesystem) and DuckDB's `iceberg_scan` (httpfs's `gs://`) read them back. The token
//! the tests give k2i comes from the environment, goes to the store as a bearer, and appears in no output.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};

use common::{Setup, json_records, k2i, run, text};
use k2i_testkit::proxy::{Proxy, describe};
use k2i_testkit::{Stack, repo_root, stack};
use serde_json::Value;

/// The OAuth2 access token the tests hand k2i (`gcs.oauth2.token`, from the environment). The emulator
/// accepts any; the tests check it is sent and never printed.
const TOKEN: &str = "k2itest-gcs-token-do-not-log";
const TOKEN_VAR: &str = "K2I_TEST_GCS_TOKEN";

/// The stack's GCS emulator: `(endpoint, bucket)`.
fn gcs() -> (String, String) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("stack not running: run scripts/stack.sh up and eval \"$(scripts/stack.sh env)\"; {name} is not set")
        })
    };
    (var("K2I_TEST_GCS_ENDPOINT").trim_end_matches('/').to_owned(), var("K2I_TEST_GCS_BUCKET"))
}

/// This test's own warehouse in the emulator's bucket.
fn warehouse(setup: &Setup) -> String {
    format!("gs://{}/{}", gcs().1, setup.namespace)
}

fn catalog_db(setup: &Setup) -> PathBuf {
    setup.dir.path().join("catalog.db")
}

/// Writes `k2i.toml`: the SQL catalog on SQLite in the test's directory, the warehouse on GCS at `endpoint`
/// (the emulator or a proxy in front of it), `storage` as the rest of `[iceberg.storage]`, `extra` appended.
fn config(stack: &Stack, setup: &Setup, endpoint: &str, storage: &str, format: &str, extra: &str) -> PathBuf {
    let catalog = format!(
        "warehouse_path = \"{warehouse}\"\n\n[iceberg.sql]\nuri = \"sqlite:{db}\"\n\n[iceberg.storage]\n\
         \"gcs.service.path\" = \"{endpoint}\"\n{storage}\n",
        warehouse = warehouse(setup),
        db = catalog_db(setup).display(),
    );
    setup.write_config(stack, "k2i.toml", &catalog, format, extra)
}

/// `[iceberg.storage]` lines authenticating with the test token, read from the environment.
fn token_storage() -> String {
    format!("\"gcs.oauth2.token\" = {{ env = \"{TOKEN_VAR}\" }}")
}

fn until_caught_up(config: &Path) -> String {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config).env(TOKEN_VAR, TOKEN);
    let out = run(cmd);
    let output = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{output}");
    output
}

/// Reads the table with pyiceberg's SQL catalog on the same SQLite file, its FileIO on the emulator
/// (pyarrow's GCS filesystem; the emulator takes any token): rows, distinct (partition, offset), the data
/// files the current snapshot references and those on the store under the table's `data/`.
fn inspect(stack: &Stack, setup: &Setup) -> Value {
    let (endpoint, _) = gcs();
    stack.python_json(&format!(
        r#"
import datetime, json
import pyarrow.fs as pafs
from pyiceberg.catalog.sql import SqlCatalog
props = {{"gcs.service.host": "{endpoint}", "gcs.oauth2.token": "anonymous",
          "gcs.oauth2.token-expires-at": str(4102444800000)}}
catalog = SqlCatalog("k2i", uri="sqlite:///{db}", warehouse="{warehouse}", **props)
table = catalog.load_table("{ns}.events")
referenced = sorted(task.file.file_path for task in table.scan().plan_files())
fs = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override="{endpoint}".split("://")[1])
root = table.location()[len("gs://"):] + "/data"
infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
stored = sorted("gs://" + i.path for i in infos if i.type == pafs.FileType.File)
data = table.scan().to_arrow()
keys = set(zip(data["_kafka_partition"].to_pylist(), data["_kafka_offset"].to_pylist()))
print(json.dumps({{"metadata": table.metadata_location, "location": table.location(), "rows": data.num_rows,
                   "distinct": len(keys), "referenced": referenced, "stored": stored}}))
"#,
        db = catalog_db(setup).display(),
        warehouse = warehouse(setup),
        ns = setup.namespace,
    ))
}

/// Runs `sql` in DuckDB (the stack's offline extensions, `scripts/stack/duck.py`) with `gs://` pointed at the
/// emulator through httpfs's GCS secret (path-style, plain HTTP; the emulator ignores the HMAC signature).
fn duckdb_gcs(stack: &Stack, sql: &str) -> Value {
    let (endpoint, _) = gcs();
    stack.python_json(&format!(
        r#"
import json, sys
sys.path.insert(0, "{stack_dir}")
import duck
con = duck.connect()
con.execute("CREATE SECRET gcs_emulator (TYPE gcs, KEY_ID 'k2i', SECRET 'k2i', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
cursor = con.execute({sql:?})
columns = [d[0] for d in cursor.description]
print(json.dumps([dict(zip(columns, row)) for row in cursor.fetchall()], default=str))
"#,
        stack_dir = repo_root().join("scripts/stack").display(),
        host = endpoint.split_once("://").unwrap().1,
    ))
}

/// JSON records land on GCS through the SQL catalog, every request to the store carrying the configured
/// token; a restart resumes from the table's progress; pyiceberg and DuckDB read every record exactly once;
/// no run and no `validate --print` shows the token.
#[tokio::test]
async fn json_on_gcs_with_the_sql_catalog_reads_back_in_pyiceberg_and_duckdb_and_resumes() {
    let stack = stack();
    let setup = Setup::new(stack, "gcs-json", 3).await;
    let proxy = Proxy::start(&gcs().0);
    let config = config(stack, &setup, &proxy.url(), &token_storage(), "json", "[buffer]\nflush_batch_size = 250\n");
    let table = format!("{}.events", setup.namespace);

    stack.produce(&setup.topic, json_records(3, 200, 0)).await;
    let mut output = until_caught_up(&config);
    assert!(output.contains(&format!("ingested 600 rows (0 records skipped) into {table}")), "{output}");

    stack.produce(&setup.topic, json_records(3, 50, 200)).await;
    let second = until_caught_up(&config);
    assert!(second.contains(&format!("ingested 150 rows (0 records skipped) into {table}")), "{second}");
    output += &second;

    let seen = inspect(stack, &setup);
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(750), Some(750)), "pyiceberg: {seen}");
    let location = seen["location"].as_str().unwrap();
    assert!(location.starts_with(&warehouse(&setup)), "the table lives on GCS: {location}");
    let referenced: Vec<&str> = seen["referenced"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    let stored: Vec<&str> = seen["stored"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(!referenced.is_empty() && referenced.iter().all(|f| f.starts_with("gs://")), "{seen}");
    assert_eq!(referenced, stored, "every data file on the store is referenced, none is missing");

    let metadata = seen["metadata"].as_str().unwrap();
    assert!(metadata.starts_with("gs://"), "{metadata}");
    let duck = duckdb_gcs(
        stack,
        &format!(
            "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d, \
             count(distinct id) as ids from iceberg_scan('{metadata}')"
        ),
    );
    assert_eq!(
        (duck[0]["n"].as_i64(), duck[0]["d"].as_i64(), duck[0]["ids"].as_i64()),
        (Some(750), Some(750), Some(250)),
        "DuckDB: {duck}"
    );

    // Every request k2i sent the store was authenticated with the configured token.
    let requests = proxy.requests();
    assert!(requests.len() > 10, "{} requests", requests.len());
    for seen in &requests {
        assert_eq!(seen.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()), "{}", describe(seen));
    }

    let mut cmd = k2i();
    cmd.args(["validate", "--print", "--config"]).arg(&config).env(TOKEN_VAR, TOKEN);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    output += &(text(&out.stdout) + &text(&out.stderr));
    assert!(!output.contains(TOKEN), "the token appears in k2i's output:\n{output}");
}

/// One flush of ~12 MiB of incompressible bytes makes one data file of one row group, which goes up in one
/// request (the JSON API's `uploadType=media`) and reads back whole. (A file of several row groups over
/// 5 MiB goes up as an XML-API multipart upload, which fake-gcs-server does not implement: docs/storage.md.)
#[tokio::test]
async fn a_large_data_file_on_gcs_reads_back_whole() {
    let stack = stack();
    let setup = Setup::new(stack, "gcs-large", 1).await;
    let records = common::incompressible_records(3000, 4096);
    stack.produce(&setup.topic, records).await;
    let config = config(
        stack,
        &setup,
        &gcs().0,
        "\"gcs.no-auth\" = \"true\"",
        "raw",
        "[buffer]\nflush_batch_size = 100000\nmax_size_mb = 256\n",
    );
    let output = until_caught_up(&config);
    assert!(output.contains("ingested 3000 rows (0 records skipped)"), "{output}");
    let seen = inspect(stack, &setup);
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(3000), Some(3000)), "{seen}");
    assert_eq!(seen["referenced"].as_array().unwrap().len(), 1, "one data file: {seen}");
    let bytes = duckdb_gcs(
        stack,
        &format!("select sum(octet_length(value)) as b from iceberg_scan('{}')", seen["metadata"].as_str().unwrap()),
    );
    assert_eq!(bytes[0]["b"].as_i64(), Some(3000 * 4096), "{bytes}");
}

/// `gcs.credentials-json` takes the service-account JSON itself, here from a file (`{ file = … }`), as well
/// as base64 (what Iceberg's property holds): the run works and `validate --print` shows the file, never the
/// key. A value that is neither is refused, naming the property and not the value (the store would otherwise
/// drop it silently and fall back to Application Default Credentials).
#[tokio::test]
async fn gcs_credentials_json_is_taken_raw_or_base64_and_anything_else_is_refused_without_showing_it() {
    let stack = stack();
    let setup = Setup::new(stack, "gcs-creds", 1).await;
    let key_file = setup.dir.path().join("service-account.json");
    let key = r#"{"type": "service_account", "client_email": "k2i@k2i-test.iam.gserviceaccount.com", "private_key": "k2itest-gcs-private-key"}"#;
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    // Signing stays off (the emulator cannot mint tokens): the key is checked and passed on, not used.
    let storage =
        format!("\"gcs.no-auth\" = \"true\"\n\"gcs.credentials-json\" = {{ file = {:?} }}", key_file.display());
    let config = config(stack, &setup, &gcs().0, &storage, "raw", "");
    stack.produce(&setup.topic, common::raw_records(1, 20)).await;
    let mut output = until_caught_up(&config);
    assert!(output.contains("ingested 20 rows (0 records skipped)"), "{output}");
    let mut cmd = k2i();
    cmd.args(["validate", "--print", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains(&key_file.display().to_string()), "{printed}");
    output += &(printed + &text(&out.stderr));
    assert!(!output.contains("k2itest-gcs-private-key"), "the key appears in k2i's output:\n{output}");

    std::fs::write(&key_file, "k2itest-gcs-not-a-key\n").unwrap();
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    let output = text(&out.stdout) + &text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{output}");
    assert!(
        output.contains("neither a service-account JSON object nor one base64-encoded")
            && output.contains("gcs.credentials-json"),
        "{output}"
    );
    assert!(!output.contains("k2itest-gcs-not-a-key"), "the value appears in k2i's output:\n{output}");
}

/// The stack's second REST catalog fixture (`rest-gcs`), whose warehouse is `gs://<bucket>/rest` on the
/// emulator (Iceberg's GCSFileIO), and proof that it answers: a missing server fails the test.
fn rest_gcs() -> String {
    let uri = std::env::var("K2I_TEST_REST_GCS").unwrap_or_else(|_| {
        panic!("stack not running: run scripts/stack.sh up and eval \"$(scripts/stack.sh env)\"; K2I_TEST_REST_GCS is not set")
    });
    let uri = uri.trim_end_matches('/').to_owned();
    let config = common::http_get(&format!("{uri}/v1/config"));
    assert!(
        config.as_ref().is_some_and(|(status, _)| *status == 200),
        "the REST catalog on GCS at {uri} does not answer (scripts/stack.sh up starts it as rest-gcs): {config:?}"
    );
    uri
}

/// Writes `k2i.toml` for the REST catalog at `rest`: the server places the table (and writes its metadata
/// through its own FileIO), k2i writes the data files and manifests itself through `[iceberg.storage]`.
fn rest_config(stack: &Stack, setup: &Setup, rest: &str) -> PathBuf {
    let text = format!(
        r#"
[kafka]
bootstrap_servers = ["{kafka}"]
topic = "{topic}"
consumer_group = "{group}"

[kafka.format]
type = "json"

[schema_evolution]
schema_update_min_interval = "0s"

[iceberg]
catalog_type = "rest"
rest_uri = "{rest}"
database_name = "{namespace}"
table_name = "events"

[iceberg.storage]
"gcs.service.path" = "{endpoint}"
{storage}

[buffer]
flush_batch_size = 250

[transaction_log]
log_dir = "{dir}/txlog"
"#,
        kafka = stack.kafka,
        topic = setup.topic,
        group = setup.group,
        namespace = setup.namespace,
        endpoint = gcs().0,
        storage = token_storage(),
        dir = setup.dir.path().display(),
    );
    let path = setup.dir.path().join("k2i-rest.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads the table with pyiceberg's REST catalog at `rest` (its FileIO on the emulator, as in [`inspect`]):
/// rows, distinct (partition, offset), the files the current snapshot references (data files, manifests,
/// manifest list) and every object on the store under the table's location.
fn inspect_rest(stack: &Stack, setup: &Setup, rest: &str) -> Value {
    let (endpoint, _) = gcs();
    stack.python_json(&format!(
        r#"
import json
import pyarrow.fs as pafs
from pyiceberg.catalog import load_catalog
props = {{"gcs.service.host": "{endpoint}", "gcs.oauth2.token": "anonymous",
          "gcs.oauth2.token-expires-at": str(4102444800000)}}
catalog = load_catalog("rest_gcs", type="rest", uri="{rest}", **props)
table = catalog.load_table("{ns}.events")
snapshot = table.current_snapshot()
manifests = snapshot.manifests(table.io)
data_files = sorted(task.file.file_path for task in table.scan().plan_files())
fs = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override="{endpoint}".split("://")[1])
root = table.location()[len("gs://"):]
infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
stored = sorted("gs://" + i.path for i in infos if i.type == pafs.FileType.File)
data = table.scan().to_arrow()
keys = set(zip(data["_kafka_partition"].to_pylist(), data["_kafka_offset"].to_pylist()))
print(json.dumps({{"metadata": table.metadata_location, "location": table.location(), "rows": data.num_rows,
                   "distinct": len(keys), "data_files": data_files,
                   "manifests": [m.manifest_path for m in manifests] + [snapshot.manifest_list],
                   "stored": stored}}))
"#,
        ns = setup.namespace,
    ))
}

/// Drops the table with its files through the REST catalog (the server's GCSFileIO deletes what k2i
/// wrote) and its namespace; returns the objects left under `location`.
fn purge_rest(stack: &Stack, setup: &Setup, rest: &str, location: &str) -> Value {
    let (endpoint, _) = gcs();
    stack.python_json(&format!(
        r#"
import json
import pyarrow.fs as pafs
from pyiceberg.catalog import load_catalog
catalog = load_catalog("rest_gcs", type="rest", uri="{rest}")
catalog.purge_table("{ns}.events")
catalog.drop_namespace("{ns}")
fs = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override="{endpoint}".split("://")[1])
infos = fs.get_file_info(pafs.FileSelector("{root}", allow_not_found=True, recursive=True))
print(json.dumps(sorted("gs://" + i.path for i in infos if i.type == pafs.FileType.File)))
"#,
        ns = setup.namespace,
        root = location.strip_prefix("gs://").unwrap(),
    ))
}

/// JSON records land on GCS through the REST catalog (the stack's `rest-gcs`: Iceberg's REST fixture with
/// GCSFileIO on the emulator): the server writes the table metadata, k2i the data files and manifests, all
/// under the server's warehouse `gs://<bucket>/rest/`; a restart resumes from the table's progress;
/// pyiceberg's REST catalog and DuckDB read every record exactly once; the server can delete what k2i
/// wrote; no output shows the token.
#[tokio::test]
async fn json_on_gcs_with_the_rest_catalog_reads_back_in_pyiceberg_and_duckdb_and_resumes() {
    let stack = stack();
    let rest = rest_gcs();
    let setup = Setup::new(stack, "gcs-rest", 3).await;
    let config = rest_config(stack, &setup, &rest);
    let table = format!("{}.events", setup.namespace);

    stack.produce(&setup.topic, json_records(3, 200, 0)).await;
    let mut output = until_caught_up(&config);
    assert!(output.contains(&format!("ingested 600 rows (0 records skipped) into {table}")), "{output}");

    stack.produce(&setup.topic, json_records(3, 50, 200)).await;
    let second = until_caught_up(&config);
    assert!(second.contains(&format!("ingested 150 rows (0 records skipped) into {table}")), "{second}");
    output += &second;
    assert!(!output.contains(TOKEN), "the token appears in k2i's output:\n{output}");

    let seen = inspect_rest(stack, &setup, &rest);
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(750), Some(750)), "pyiceberg: {seen}");
    let prefix = format!("gs://{}/rest/", gcs().1);
    let location = seen["location"].as_str().unwrap();
    assert_eq!(location, format!("{prefix}{}/events", setup.namespace), "the server placed the table");
    let metadata = seen["metadata"].as_str().unwrap();
    assert!(metadata.starts_with(&format!("{location}/metadata/")), "{metadata}");
    let strings = |key: &str| -> Vec<String> {
        seen[key].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect()
    };
    let (data_files, manifests, stored) = (strings("data_files"), strings("manifests"), strings("stored"));
    assert!(!data_files.is_empty() && data_files.iter().all(|f| f.starts_with(&format!("{location}/data/"))), "{seen}");
    assert!(manifests.iter().all(|f| f.starts_with(&format!("{location}/metadata/"))), "{seen}");
    let stored_data: Vec<&String> = stored.iter().filter(|f| f.starts_with(&format!("{location}/data/"))).collect();
    assert_eq!(stored_data, data_files.iter().collect::<Vec<_>>(), "every data file on the store is referenced");
    for file in manifests.iter().chain([&metadata.to_owned()]) {
        assert!(stored.contains(file), "{file} is not on the store: {seen}");
    }
    assert!(
        stored
            .iter()
            .all(|f| f.starts_with(&format!("{location}/data/")) || f.starts_with(&format!("{location}/metadata/"))),
        "nothing else under the table: {seen}"
    );

    let duck = duckdb_gcs(
        stack,
        &format!(
            "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d, \
             count(distinct id) as ids from iceberg_scan('{metadata}')"
        ),
    );
    assert_eq!(
        (duck[0]["n"].as_i64(), duck[0]["d"].as_i64(), duck[0]["ids"].as_i64()),
        (Some(750), Some(750), Some(250)),
        "DuckDB: {duck}"
    );

    let left = purge_rest(stack, &setup, &rest, location);
    assert_eq!(left.as_array().map(Vec::len), Some(0), "the REST server's purge left: {left}");
}
