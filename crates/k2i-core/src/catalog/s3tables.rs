//! Amazon S3 Tables through iceberg-rust's S3 Tables catalog: a table bucket (`iceberg.s3tables.table_bucket_arn`)
//! holds namespaces and tables, places each table's files itself (`s3://<generated bucket>`, so
//! `warehouse_path` is not used) and swaps a table's metadata location with `UpdateTableMetadataLocation`
//! carrying the version token the commit was based on: a concurrent commit is a `ConflictException`, retried
//! by the commit path, never overwritten.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_s3tables::{S3TABLES_CATALOG_PROP_TABLE_BUCKET_ARN, S3TablesCatalogBuilder};

use crate::config::IcebergConfig;
use crate::error::{Error, ErrorKind, Result};

/// Opens the S3 Tables catalog of `[iceberg.s3tables]`; `props` are the FileIO properties of
/// `iceberg.storage` (credentials as for Glue: [`super::aws::sdk_config`]). Returns the catalog and how to
/// name it in messages (the table bucket's ARN).
pub async fn open(ice: &IcebergConfig, mut props: HashMap<String, String>) -> Result<(Arc<dyn Catalog>, String)> {
    let config = &ice.s3tables;
    let arn = config.table_bucket_arn.clone().ok_or_else(|| {
        Error::new(ErrorKind::Config, "iceberg.s3tables.table_bucket_arn is required for the S3 Tables catalog")
            .with("key", "iceberg.s3tables.table_bucket_arn")
    })?;
    props.insert(S3TABLES_CATALOG_PROP_TABLE_BUCKET_ARN.to_owned(), arn.clone());
    // arn:aws:s3tables:<region>:<account>:bucket/<name>
    let region = config.region.clone().or_else(|| arn.split(':').nth(3).filter(|r| !r.is_empty()).map(str::to_owned));
    if let Some(region) = &region {
        props.entry("s3.region".to_owned()).or_insert_with(|| region.clone());
    }
    let sdk =
        super::aws::sdk_config(config.endpoint.as_deref(), region.as_deref(), None, &props, "iceberg.s3tables.region")
            .await?;
    let catalog = S3TablesCatalogBuilder::default()
        .with_client(aws_sdk_s3tables::Client::new(&sdk))
        .with_storage_factory(crate::storage::factory())
        .load("s3tables", props)
        .await
        .map_err(|e| Error::iceberg("cannot open the S3 Tables catalog", e).with("catalog", &arn))?;
    Ok((Arc::new(catalog), arn))
}
