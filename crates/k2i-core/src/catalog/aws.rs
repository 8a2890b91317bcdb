//! The AWS SDK configuration the AWS catalogs (Glue, S3 Tables) share: one identity with the S3 storage.

use std::collections::HashMap;

use aws_config::SdkConfig;

use crate::error::{Error, ErrorKind, Result};

/// The SDK configuration for a catalog at `endpoint` (default: AWS's) in `region` (default: the storage's
/// `s3.region` / `client.region`, then the AWS chain). Credentials: the static S3 keys of `storage` when set
/// (one identity for the catalog and S3), else `profile` (a profile with `role_arn` assumes that role), else
/// the standard AWS chain (environment, web identity, ECS/EC2 metadata). `region_key` names the key to set
/// when no region is found.
pub(super) async fn sdk_config(
    endpoint: Option<&str>,
    region: Option<&str>,
    profile: Option<&str>,
    storage: &HashMap<String, String>,
    region_key: &str,
) -> Result<SdkConfig> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let region =
        region.map(str::to_owned).or_else(|| storage.get("s3.region").or(storage.get("client.region")).cloned());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    if let (Some(key), Some(secret)) = (storage.get("s3.access-key-id"), storage.get("s3.secret-access-key")) {
        let token = storage.get("s3.session-token").cloned();
        loader = loader.credentials_provider(aws_sdk_glue::config::Credentials::new(
            key,
            secret,
            token,
            None,
            "iceberg.storage",
        ));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("the catalog needs a region: set {region_key}, iceberg.storage.\"s3.region\" or AWS_REGION"),
        )
        .with("key", region_key));
    }
    Ok(sdk)
}
