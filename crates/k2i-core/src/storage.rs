//! Where a table's files live: the local filesystem, S3 (and S3-compatible stores), Google Cloud Storage, or
//! Azure Data Lake Storage Gen2, through Iceberg's FileIO on OpenDAL.
//!
//! One storage factory serves every catalog; it picks the store by the scheme of each path (`file://`,
//! `s3://` / `s3a://`, `gs://`, `abfss://` / `wasbs://`), so a REST catalog that places a table anywhere supported works
//! without configuration beyond credentials. Requests are retried on throttling and 5xx answers with backoff
//! and each attempt has a timeout (OpenDAL's retry and timeout layers); large files go up as multipart
//! uploads. Credentials come from `iceberg.storage` (Iceberg's property names, values may be secrets) or,
//! for S3, from the standard AWS chain (environment, profile, web identity, ECS/EC2 metadata) and the
//! `s3.assume-role.*` properties.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::io::StorageFactory;
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

use crate::config::IcebergConfig;
use crate::error::{Error, ErrorKind, Result};

/// The URL schemes a table location may use.
pub const SCHEMES: [&str; 10] = ["file", "s3", "s3a", "s3n", "gs", "gcs", "abfss", "abfs", "wasbs", "wasb"];

/// The storage factory every catalog and FileIO of k2i uses.
pub fn factory() -> Arc<dyn StorageFactory> {
    Arc::new(OpenDalResolvingStorageFactory::new())
}

/// The FileIO properties of `iceberg.storage`, secrets resolved.
pub fn properties(ice: &IcebergConfig) -> Result<HashMap<String, String>> {
    ice.storage.iter().map(|(key, value)| Ok((key.clone(), value.expose()?.to_owned()))).collect()
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
        for ok in ["file:///tmp/w", "s3://bucket/w", "S3A://b/w", "gs://b/w", "abfss://fs@acct.dfs.core.windows.net/w"]
        {
            check_location("the warehouse", ok).unwrap();
        }
        for bad in ["hdfs://nn/w", "/tmp/w", "oss://b/w"] {
            let e = check_location("the warehouse", bad).unwrap_err().to_string();
            assert!(e.contains("not on a supported store") && e.contains(bad), "{e}");
        }
    }
}
