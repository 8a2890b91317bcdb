//! Tables on Azure Blob Storage (`wasbs://`, the Blob API) through the SQL catalog on Postgres, against the
//! stack's Azurite: read back by pyiceberg (pyarrow's Azure filesystem) through the same catalog, the data files
//! by DuckDB's azure extension, the block lists by an independent Blob API client (`azure_blob.py`). The
//! account key comes from the environment and must appear in no output.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::PathBuf;

use common::{Setup, json_records, k2i, run, text};
use k2i_testkit::{Stack, stack};
use serde_json::Value;

/// The test's warehouse: its own prefix in the stack's container.
fn warehouse(stack: &Stack, setup: &Setup) -> String {
    let azure = stack.azure();
    format!("wasbs://{}@{}.blob.core.windows.net/{}", azure.container, azure.account, setup.namespace)
}

/// `[iceberg.storage]` for Azurite: the key from the environment, the Blob service at the emulator's address.
fn azure_storage(stack: &Stack, key: &str) -> String {
    let azure = stack.azure();
    format!(
        "[iceberg.storage]\n\"adls.account-name\" = \"{}\"\n\"adls.account-key\" = {key}\n\
         \"adls.blob-storage-authority\" = \"{}\"\n\"adls.blob-storage-scheme\" = \"http\"\n",
        azure.account,
        azure.authority()
    )
}

/// Writes the test's `k2i.toml`: the SQL catalog on Postgres, the warehouse in Azurite, the key read from
/// `K2I_TEST_AZURE_KEY`.
fn azure_config(stack: &Stack, setup: &Setup, format: &str, extra: &str) -> PathBuf {
    azure_config_with_key(stack, setup, format, extra, "{ env = \"K2I_TEST_AZURE_KEY\" }")
}

fn azure_config_with_key(stack: &Stack, setup: &Setup, format: &str, extra: &str, key: &str) -> PathBuf {
    let catalog = format!(
        "warehouse_path = \"{}\"\n[iceberg.sql]\nuri = {{ env = \"K2I_TEST_POSTGRES\" }}\n{}",
        warehouse(stack, setup),
        azure_storage(stack, key)
    );
    setup.write_config(stack, "k2i.toml", &catalog, format, extra)
}

/// Asserts neither the account key nor the Postgres password appears in `output`.
fn assert_no_secret(stack: &Stack, output: &str) {
    let pg_password =
        stack.postgres().split_once("://").unwrap().1.split('@').next().unwrap().split(':').nth(1).unwrap().to_owned();
    for secret in [stack.azure().key.as_str(), pg_password.as_str()] {
        assert!(!output.contains(secret), "a secret appears in the output:\n{output}");
    }
}

fn until_caught_up(config: &std::path::Path) -> std::process::Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    out
}

/// Reads the table with pyiceberg's SQL catalog on Postgres and its pyarrow FileIO on Azurite: rows, distinct
/// (partition, offset), `sum(octet_length(value))` for raw tables, the data files the current snapshot
/// references and those under the table's `data/` on the store.
fn inspect(stack: &Stack, setup: &Setup) -> Value {
    let script = format!(
        r#"
import json, os
from urllib.parse import urlparse
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import PyArrowFileIO

e = os.environ
authority = urlparse(e["K2I_TEST_AZURE_ENDPOINT"]).netloc
PROPS = {{
    # pyarrow's Azure filesystem (pyiceberg would try fsspec's adlfs first, which the stack does not install).
    "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
    "adls.account-name": e["K2I_TEST_AZURE_ACCOUNT"], "adls.account-key": e["K2I_TEST_AZURE_KEY"],
    # pyarrow asks the DFS endpoint whether the account has a hierarchical namespace; Azurite answers there
    # too (no), so both point at it.
    "adls.blob-storage-authority": authority, "adls.blob-storage-scheme": "http",
    "adls.dfs-storage-authority": authority, "adls.dfs-storage-scheme": "http",
}}

# pyiceberg 0.12 hands pyarrow "<container>@<account>.blob.<suffix>/<path>" for a wasbs:// location, which
# pyarrow's Azure filesystem takes for a container name; it wants "<container>/<path>".
_parse = PyArrowFileIO.parse_location
def parse_location(location, properties={{}}):
    scheme, netloc, path = _parse(location, properties)
    if scheme in ("wasb", "wasbs", "abfs", "abfss") and "@" in netloc:
        path = netloc.split("@", 1)[0] + path[len(netloc):]
    return scheme, netloc, path
PyArrowFileIO.parse_location = staticmethod(parse_location)

url = e["K2I_TEST_POSTGRES"].replace("postgres://", "postgresql+psycopg2://", 1)
catalog = SqlCatalog("k2i", uri=url, warehouse="{warehouse}", **PROPS)
table = catalog.load_table("{ns}.events")
referenced = sorted(task.file.file_path for task in table.scan().plan_files())
fs = pafs.AzureFileSystem(account_name=PROPS["adls.account-name"], account_key=PROPS["adls.account-key"],
                          blob_storage_authority=authority, blob_storage_scheme="http",
                          dfs_storage_authority=authority, dfs_storage_scheme="http")
location = table.location()
netloc = urlparse(location).netloc
root = parse_location(location)[2] + "/data"
infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
prefix = location[: location.index(netloc) + len(netloc)]
container = netloc.split("@", 1)[0]
stored = sorted(prefix + i.path[len(container):] for i in infos if i.type == pafs.FileType.File)
data = table.scan().to_arrow()
keys = list(zip(data["_kafka_partition"].to_pylist(), data["_kafka_offset"].to_pylist()))
value_bytes = pc.sum(pc.binary_length(data["value"])).as_py() if "value" in data.column_names else None
print(json.dumps({{
    "metadata": table.metadata_location, "location": location, "rows": data.num_rows, "distinct": len(set(keys)),
    "value_bytes": value_bytes, "referenced": referenced, "stored": stored,
    "sizes": {{f.file_path: f.file_size_in_bytes for f in (t.file for t in table.scan().plan_files())}},
}}))
"#,
        warehouse = warehouse(stack, setup),
        ns = setup.namespace,
    );
    stack.python_json(&script)
}

/// `wasbs://<container>@<account>.blob.<suffix>/<path>` as DuckDB's azure extension names it: `az://<container>/<path>`.
fn az_url(location: &str) -> String {
    let rest = location.strip_prefix("wasbs://").unwrap();
    let (container, rest) = rest.split_once('@').unwrap();
    let path = rest.split_once('/').unwrap().1;
    format!("az://{container}/{path}")
}

/// DuckDB (its azure extension, reading Azurite itself): rows and distinct (partition, offset) over the data
/// files the table references.
fn duck_counts(stack: &Stack, seen: &Value) -> (i64, i64) {
    let files: Vec<String> =
        seen["referenced"].as_array().unwrap().iter().map(|f| format!("'{}'", az_url(f.as_str().unwrap()))).collect();
    let rows = stack.duckdb(&format!(
        "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d from read_parquet([{}])",
        files.join(", ")
    ));
    (rows[0]["n"].as_i64().unwrap(), rows[0]["d"].as_i64().unwrap())
}

#[tokio::test]
async fn json_on_azure_blob_with_the_sql_catalog_on_postgres_reads_back_and_resumes() {
    let stack = stack();
    let setup = Setup::new(stack, "azure-json", 3).await;
    stack.produce(&setup.topic, json_records(3, 200, 0)).await;
    let config = azure_config(stack, &setup, "json", "[buffer]\nflush_batch_size = 250\n");

    let out = until_caught_up(&config);
    let table = format!("{}.events", setup.namespace);
    assert!(
        text(&out.stdout).starts_with(&format!("ingested 600 rows (0 records skipped) into {table}")),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let mut output = text(&out.stdout) + &text(&out.stderr);

    // A restart resumes from the table's progress, read back from the store.
    stack.produce(&setup.topic, json_records(3, 50, 200)).await;
    let out = until_caught_up(&config);
    assert!(
        text(&out.stdout).starts_with(&format!("ingested 150 rows (0 records skipped) into {table}")),
        "{}",
        text(&out.stdout)
    );
    output += &(text(&out.stdout) + &text(&out.stderr));

    let seen = inspect(stack, &setup);
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(750), Some(750)), "pyiceberg: {seen}");
    let location = seen["location"].as_str().unwrap();
    assert_eq!(location, format!("{}/{}/events", warehouse(stack, &setup), setup.namespace), "{seen}");
    let metadata = seen["metadata"].as_str().unwrap();
    assert!(metadata.starts_with(location), "the metadata lives in Azure too: {metadata}");
    let referenced = seen["referenced"].as_array().unwrap();
    assert!(!referenced.is_empty() && referenced.iter().all(|f| f.as_str().unwrap().starts_with(location)), "{seen}");
    assert_eq!(seen["stored"].as_array().unwrap(), referenced, "no orphan and nothing missing: {seen}");
    assert_eq!(duck_counts(stack, &seen), (750, 750), "DuckDB over Azurite");

    // Neither the runs nor validation print a secret.
    let mut cmd = k2i();
    cmd.args(["validate", "--print", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    output += &(text(&out.stdout) + &text(&out.stderr));
    assert_no_secret(stack, &output);
}

/// A data file bigger than one block (~12 MiB of incompressible bytes in one flush) goes up as blocks (Put
/// Block × n, then Put Block List) and reads back whole; the block list is read by a client other than k2i's.
#[tokio::test]
async fn a_large_data_file_goes_up_in_blocks_and_reads_back_whole() {
    let stack = stack();
    let setup = Setup::new(stack, "azure-large", 1).await;
    let records = common::incompressible_records(3000, 4096);
    stack.produce(&setup.topic, records).await;
    let config = azure_config(stack, &setup, "raw", "[buffer]\nflush_batch_size = 100000\nmax_size_mb = 256\n");
    let out = until_caught_up(&config);
    assert!(text(&out.stdout).contains("ingested 3000 rows (0 records skipped)"), "{}", text(&out.stdout));

    let seen = inspect(stack, &setup);
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(3000), Some(3000)), "{seen}");
    assert_eq!(seen["value_bytes"].as_i64(), Some(3000 * 4096), "pyiceberg reads every byte back");
    let files = seen["referenced"].as_array().unwrap();
    assert_eq!(files.len(), 1, "one data file: {seen}");
    let file = files[0].as_str().unwrap();
    let size = seen["sizes"][file].as_i64().unwrap();
    let blob = file.split_once(".blob.").unwrap().1.split_once('/').unwrap().1;
    let blocks = stack.azure_blob(&["blocks", &stack.azure().container, blob]);
    let blocks: Vec<i64> = blocks.as_array().unwrap().iter().map(|b| b.as_i64().unwrap()).collect();
    assert!(blocks.len() >= 2, "a {size}-byte file committed as blocks: {blocks:?}");
    assert!(blocks.iter().all(|b| *b <= 8 * 1024 * 1024), "blocks of at most 8 MiB: {blocks:?}");
    assert_eq!(blocks.iter().sum::<i64>(), size, "the blocks make the whole file: {blocks:?}");
    let rows = stack.duckdb(&format!("select sum(octet_length(value)) as b from read_parquet('{}')", az_url(file)));
    assert_eq!(rows[0]["b"].as_i64(), Some(3000 * 4096), "DuckDB: {rows:?}");
}

/// A wrong account key is refused by the store: the run stops with an error naming the store's answer, and
/// neither the wrong key nor the right one appears in the output.
#[tokio::test]
async fn a_wrong_account_key_fails_clearly_without_printing_it() {
    let stack = stack();
    let setup = Setup::new(stack, "azure-wrong-key", 1).await;
    stack.produce(&setup.topic, json_records(1, 5, 0)).await;
    // Valid base64, not the account's key.
    let wrong = "d3Jvbmcta2V5LWZvci1rMmktdGVzdHMtZG8tbm90LWxvZw==";
    let config = azure_config_with_key(stack, &setup, "json", "", "{ env = \"K2I_TEST_WRONG_AZURE_KEY\" }");
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config).env("K2I_TEST_WRONG_AZURE_KEY", wrong);
    let out = run(cmd);
    let output = text(&out.stdout) + &text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{output}");
    assert!(output.contains("azure blob") && output.contains("403"), "the error names the store's refusal:\n{output}");
    assert!(!output.contains(wrong), "the wrong key appears in the output:\n{output}");
    assert_no_secret(stack, &output);
}
