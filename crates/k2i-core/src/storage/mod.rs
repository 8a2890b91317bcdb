//! Where a table's files live: the local filesystem, S3 (and S3-compatible stores), Google Cloud Storage, or
//! Azure (Blob Storage and Data Lake Storage Gen2), through Iceberg's FileIO.
//!
//! One storage factory serves every catalog; it picks the store by the scheme of each path (`file://`,
//! `s3://` / `s3a://`, `gs://`, `abfss://`, `wasbs://`), so a REST catalog that places a table anywhere
//! supported works without configuration beyond credentials. `wasb[s]://` goes to [`azblob`] (the Blob API,
//! k2i's own on OpenDAL); everything else to iceberg-storage-opendal's resolving storage, whose Azure client
//! (`abfs[s]://`) speaks the Data Lake (DFS) API. Requests are retried on throttling and 5xx answers with
//! backoff and each attempt has a timeout (OpenDAL's retry and timeout layers); large files go up as multipart
//! (S3) or block-list (Azure Blob) uploads. Credentials come from `iceberg.storage` (Iceberg's property names,
//! values may be secrets) or, for S3, from the standard AWS chain (environment, profile, web identity, ECS/EC2
//! metadata) and the `s3.assume-role.*` properties; for Azure, from the default Azure chain (see [`azblob`]).

pub mod azblob;
mod chunked;
mod gcs;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig, StorageFactory};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use serde::{Deserialize, Serialize};

use self::azblob::AzblobStorage;
use crate::config::IcebergConfig;
use crate::error::{Error, ErrorKind, Result};

/// The URL schemes a table location may use.
/// (`gcs://` is not one: OpenDAL's GCS client takes only `gs://`.)
pub const SCHEMES: [&str; 9] = ["file", "s3", "s3a", "s3n", "gs", "abfss", "abfs", "wasbs", "wasb"];

/// The storage factory every catalog and FileIO of k2i uses.
pub fn factory() -> Arc<dyn StorageFactory> {
    Arc::new(K2iStorageFactory)
}

/// Builds a [`K2iStorage`] from a FileIO's properties.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct K2iStorageFactory;

#[typetag::serde(name = "K2iStorageFactory")]
impl StorageFactory for K2iStorageFactory {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(K2iStorage {
            azblob: AzblobStorage::new(config.props()),
            props: config.props().clone(),
            others: OnceLock::new(),
        }))
    }
}

/// Routes each path by its scheme: `wasb[s]://` to the Blob API storage, the rest to OpenDAL's resolving
/// storage (built on first use, so a FileIO that only touches Blob paths never parses the other stores'
/// properties).
#[derive(Serialize, Deserialize)]
pub struct K2iStorage {
    azblob: AzblobStorage,
    props: HashMap<String, String>,
    #[serde(skip)]
    others: OnceLock<Arc<dyn Storage>>,
}

impl fmt::Debug for K2iStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Property values are credentials: only their names.
        let mut keys: Vec<&str> = self.props.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_struct("K2iStorage").field("azblob", &self.azblob).field("properties", &keys).finish()
    }
}

fn is_blob_api(path: &str) -> bool {
    path.split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("wasbs") || scheme.eq_ignore_ascii_case("wasb"))
}

impl K2iStorage {
    fn route(&self, path: &str) -> iceberg::Result<&dyn Storage> {
        if is_blob_api(path) {
            return Ok(&self.azblob);
        }
        if let Some(others) = self.others.get() {
            return Ok(others.as_ref());
        }
        let resolving = OpenDalResolvingStorageFactory::new().build(&StorageConfig::from_props(self.props.clone()))?;
        // Its writers upload one part per write call: gather the calls into parts every store accepts.
        let built: Arc<dyn Storage> = Arc::new(chunked::Chunking::new(resolving));
        Ok(self.others.get_or_init(|| built).as_ref())
    }
}

#[async_trait]
#[typetag::serde(name = "K2iStorage")]
impl Storage for K2iStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        self.route(path)?.exists(path).await
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        self.route(path)?.metadata(path).await
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        self.route(path)?.read(path).await
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        self.route(path)?.reader(path).await
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.route(path)?.write(path, bs).await
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        self.route(path)?.writer(path).await
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        self.route(path)?.delete(path).await
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        self.route(path)?.delete_prefix(path).await
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        // Split by backend; each batches its own deletes. The lists are file paths of one operation, small
        // enough to hold.
        let (mut blob, mut other) = (Vec::new(), Vec::new());
        while let Some(path) = paths.next().await {
            if is_blob_api(&path) { blob.push(path) } else { other.push(path) }
        }
        if let Some(first) = other.first() {
            let first = first.clone();
            self.route(&first)?.delete_stream(futures::stream::iter(other).boxed()).await?;
        }
        if !blob.is_empty() {
            self.azblob.delete_stream(futures::stream::iter(blob).boxed()).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        self.route(path)?.new_input(path)
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        self.route(path)?.new_output(path)
    }
}

/// `text` with the value of every `sig=` query parameter replaced (Azure SAS tokens and signatures, which
/// OpenDAL's errors carry in the request URL).
pub(crate) fn redact_signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sig=") {
        let (head, tail) = rest.split_at(at + "sig=".len());
        out.push_str(head);
        out.push_str("<redacted>");
        let end = tail.find(|c: char| c == '&' || c == '"' || c == '\'' || c == ',' || c.is_whitespace());
        rest = &tail[end.unwrap_or(tail.len())..];
    }
    out.push_str(rest);
    out
}

/// Whether a store's failure may pass: throttling, 5xx answers, timeouts and network errors may; a refused
/// permission, a missing bucket or object, an invalid configuration will not, however often it is retried.
/// (Not `is_temporary`: OpenDAL's retry layer marks what it gave up on as persistent.)
pub(crate) fn is_transient(e: &opendal::Error) -> bool {
    use opendal::ErrorKind as K;
    !matches!(
        e.kind(),
        K::PermissionDenied | K::NotFound | K::ConfigInvalid | K::Unsupported | K::IsADirectory | K::NotADirectory
    )
}

/// The FileIO properties of `iceberg.storage`, secrets resolved.
pub fn properties(ice: &IcebergConfig) -> Result<HashMap<String, String>> {
    let mut props: HashMap<String, String> =
        ice.storage.iter().map(|(key, value)| Ok((key.clone(), value.expose()?.to_owned()))).collect::<Result<_>>()?;
    gcs::normalize(&mut props)?;
    Ok(props)
}

/// Refuses a location whose store k2i cannot write, naming it (`what` says whose location it is).
pub fn check_location(what: &str, location: &str) -> Result<()> {
    let scheme = location.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme {
        Some(scheme) if SCHEMES.contains(&scheme.as_str()) => Ok(()),
        _ => Err(Error::new(ErrorKind::Config, format!("{what} is not on a supported store"))
            .with("location", location)
            .with("supported", SCHEMES.map(|s| format!("{s}://")).join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_by_scheme() {
        for ok in [
            "file:///tmp/w",
            "s3://bucket/w",
            "S3A://b/w",
            "gs://b/w",
            "abfss://fs@acct.dfs.core.windows.net/w",
            "wasbs://c@acct.blob.core.windows.net/w",
        ] {
            check_location("the warehouse", ok).unwrap();
        }
        for bad in ["hdfs://nn/w", "/tmp/w", "oss://b/w"] {
            let e = check_location("the warehouse", bad).unwrap_err().to_string();
            assert!(e.contains("not on a supported store") && e.contains(bad), "{e}");
        }
    }
}
