//! Azure Blob Storage through the Blob API, for `wasb://` and `wasbs://` locations.
//!
//! Why k2i has its own: iceberg-storage-opendal sends `wasb[s]://` paths to its ADLS Gen2 client, which
//! speaks only the Data Lake (DFS) API. That API exists only on accounts with a hierarchical namespace, and
//! not on Azurite; the Blob API works on every storage account (with or without a hierarchical namespace)
//! and on the emulator. `abfs[s]://` stays on the DFS client.
//!
//! A location names everything but the credentials: `wasbs://<container>@<account>.blob.<suffix>/<path>`
//! is the blob `<path>` in `<container>` of `<account>`, at `https://<account>.blob.<suffix>` (`wasb://`:
//! plain `http://`). The properties, all optional (Iceberg's ADLS names, as pyiceberg reads them):
//!
//! - `adls.account-name`: when set, every location must be in this account (a mismatch is refused
//!   rather than sending this account's key to another).
//! - `adls.account-key`: Shared Key authentication with the account key.
//! - `adls.sas-token`: a SAS token (without the leading `?`), e.g. one scoped to the container.
//! - `adls.blob-storage-authority` / `adls.blob-storage-scheme`: where the Blob service answers, instead of
//!   `<account>.blob.<suffix>` over https. An authority that starts with `.` is a domain the account name is
//!   prefixed to (`.blob.core.usgovcloudapi.net`); any other (`127.0.0.1:10000`, Azurite) is one host
//!   serving accounts by path (`http://127.0.0.1:10000/<account>/<container>/...`). pyarrow's Azure
//!   filesystem reads both properties the same way, so one `[iceberg.storage]` serves k2i and pyiceberg.
//!
//! With neither a key nor a SAS token, OpenDAL's default Azure chain applies: `AZURE_STORAGE_ACCOUNT_KEY`
//! / `AZURE_STORAGE_SAS_TOKEN`, a service principal from `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` +
//! `AZURE_CLIENT_SECRET` (or `AZURE_FEDERATED_TOKEN_FILE`: workload identity), the VM's managed identity,
//! then the Azure CLI. The Blob client cannot take a service principal from properties, so
//! `adls.client-id` / `adls.client-secret` / `adls.tenant-id` (which the DFS client reads) and
//! `adls.connection-string` are refused for `wasb[s]://` locations instead of being silently ignored.
//!
//! Requests go through OpenDAL's timeout layer (each attempt bounded) inside its retry layer (throttling
//! and 5xx answers retried with jittered exponential backoff), like the other stores. Files are written
//! in [`BLOCK_SIZE`] blocks: a file that fits in one block is one Put Blob, a larger one goes up as Put
//! Block requests committed by one Put Block List when the writer closes, so no partial blob is ever
//! visible and memory per open file stays one block.
//!
//! Errors carry OpenDAL's description of the failed request with every SAS signature (`sig=`) and the
//! configured SAS token removed; the account key never leaves the `Authorization` header's HMAC.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    ADLS_ACCOUNT_KEY, ADLS_ACCOUNT_NAME, ADLS_CLIENT_ID, ADLS_CLIENT_SECRET, ADLS_CONNECTION_STRING, ADLS_SAS_TOKEN,
    ADLS_TENANT_ID, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage,
};
use iceberg::{Error, ErrorKind, Result};
use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use serde::{Deserialize, Serialize};

/// Where the Blob service answers instead of `<account>.blob.<suffix>` (pyiceberg's property name).
pub const ADLS_BLOB_STORAGE_AUTHORITY: &str = "adls.blob-storage-authority";
/// `http` or `https` for [`ADLS_BLOB_STORAGE_AUTHORITY`] or the default host (pyiceberg's property name).
pub const ADLS_BLOB_STORAGE_SCHEME: &str = "adls.blob-storage-scheme";

/// The block size of uploads: a file up to this size is one request. 8 MiB keeps a 128 MiB data file at 16
/// blocks, far below the Blob API's 50,000-block limit, with one block buffered per open file.
pub const BLOCK_SIZE: usize = 8 * 1024 * 1024;

/// The properties the Blob client cannot honour (see the module docs).
const REFUSED: [&str; 4] = [ADLS_CLIENT_ID, ADLS_CLIENT_SECRET, ADLS_TENANT_ID, ADLS_CONNECTION_STRING];

/// The Blob API storage for `wasb[s]://` paths.
#[derive(Clone, Serialize, Deserialize)]
pub struct AzblobStorage {
    settings: Arc<Settings>,
    /// One operator (and so one HTTP connection pool) per endpoint and container.
    #[serde(skip)]
    operators: Arc<Mutex<HashMap<(String, String), Operator>>>,
}

#[derive(Default, Serialize, Deserialize)]
struct Settings {
    account_name: Option<String>,
    account_key: Option<String>,
    sas_token: Option<String>,
    authority: Option<String>,
    http_scheme: Option<String>,
    /// Refused properties that are set. Refused on first use, not when the FileIO is built: the same
    /// properties may serve only `abfss://` locations, where they mean something.
    refused: Vec<String>,
}

impl fmt::Debug for AzblobStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("AzblobStorage")
            .field("account_name", &s.account_name)
            .field("account_key", &s.account_key.as_ref().map(|_| "<redacted>"))
            .field("sas_token", &s.sas_token.as_ref().map(|_| "<redacted>"))
            .field("authority", &s.authority)
            .field("http_scheme", &s.http_scheme)
            .finish()
    }
}

/// A `wasb[s]://<container>@<account>.blob.<suffix>/<key>` location, split.
#[derive(Debug, PartialEq)]
struct BlobPath<'a> {
    secure: bool,
    container: &'a str,
    account: &'a str,
    suffix: &'a str,
    /// The blob name (no leading `/`); empty for the container itself.
    key: &'a str,
}

impl<'a> BlobPath<'a> {
    fn parse(path: &'a str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::DataInvalid,
                format!(
                    "{why} in Azure Blob location {path} (expected wasbs://<container>@<account>.blob.<suffix>/<path>)"
                ),
            )
        };
        let (scheme, rest) = path.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "wasbs" => true,
            "wasb" => false,
            _ => return Err(invalid("not a wasb[s] scheme")),
        };
        let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
        let (container, host) = authority.split_once('@').ok_or_else(|| invalid("no container"))?;
        let (account, service) = host.split_once('.').ok_or_else(|| invalid("no account"))?;
        let suffix = service.strip_prefix("blob.").ok_or_else(|| invalid("no `.blob.` host"))?;
        if container.is_empty() || account.is_empty() || suffix.is_empty() {
            return Err(invalid("an empty container, account or host"));
        }
        Ok(Self { secure, container, account, suffix, key: key.trim_start_matches('/') })
    }
}

impl AzblobStorage {
    /// The storage for these FileIO properties (only the `adls.*` ones are read).
    pub fn new(props: &HashMap<String, String>) -> Self {
        let get = |key: &str| props.get(key).filter(|v| !v.is_empty()).cloned();
        let settings = Settings {
            account_name: get(ADLS_ACCOUNT_NAME),
            account_key: get(ADLS_ACCOUNT_KEY),
            sas_token: get(ADLS_SAS_TOKEN).map(|t| t.trim_start_matches('?').to_owned()),
            authority: get(ADLS_BLOB_STORAGE_AUTHORITY),
            http_scheme: get(ADLS_BLOB_STORAGE_SCHEME),
            refused: REFUSED.iter().filter(|k| props.contains_key(**k)).map(|k| (*k).to_owned()).collect(),
        };
        Self { settings: Arc::new(settings), operators: Arc::default() }
    }

    /// The Blob service URL for this location's account.
    fn endpoint(&self, path: &BlobPath<'_>) -> Result<String> {
        let s = &self.settings;
        let scheme = match s.http_scheme.as_deref() {
            None => {
                if path.secure {
                    "https"
                } else {
                    "http"
                }
            }
            Some(v) if v.eq_ignore_ascii_case("https") => "https",
            Some(v) if v.eq_ignore_ascii_case("http") => "http",
            Some(v) => {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    format!("{ADLS_BLOB_STORAGE_SCHEME} must be http or https, not {v:?}"),
                ));
            }
        };
        Ok(match s.authority.as_deref() {
            Some(domain) if domain.starts_with('.') => format!("{scheme}://{}{domain}", path.account),
            Some(host) => format!("{scheme}://{}/{}", host.trim_end_matches('/'), path.account),
            None => format!("{scheme}://{}.blob.{}", path.account, path.suffix),
        })
    }

    /// The operator for a location and the blob name it addresses.
    fn operator<'a>(&self, location: &'a str) -> Result<(Operator, BlobPath<'a>)> {
        let s = &self.settings;
        if !s.refused.is_empty() {
            return Err(Error::new(
                ErrorKind::FeatureUnsupported,
                format!(
                    "{} cannot be used with wasb[s]:// locations (the Blob API client reads an account key or \
                     a SAS token from the properties; a service principal only from AZURE_TENANT_ID, \
                     AZURE_CLIENT_ID and AZURE_CLIENT_SECRET in k2i's environment); location {location}",
                    s.refused.join(", ")
                ),
            ));
        }
        let path = BlobPath::parse(location)?;
        if let Some(configured) = &s.account_name
            && configured != path.account
        {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("location {location} is in account {}, but {ADLS_ACCOUNT_NAME} is {configured}", path.account),
            ));
        }
        let endpoint = self.endpoint(&path)?;
        let mut operators = self.operators.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let op = match operators.entry((endpoint, path.container.to_owned())) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let (endpoint, container) = e.key();
                let mut builder = opendal::services::Azblob::default()
                    .root("/")
                    .container(container)
                    .endpoint(endpoint)
                    .account_name(path.account);
                if let Some(key) = &s.account_key {
                    builder = builder.account_key(key);
                }
                if let Some(sas) = &s.sas_token {
                    builder = builder.sas_token(sas);
                }
                let op = Operator::new(builder)
                    .map_err(|e| self.error("configure", location, e))?
                    .finish()
                    // The timeout sits inside the retry so that each attempt is bounded: a request parked on
                    // a silently dropped connection must fail for the retry to try again.
                    .layer(TimeoutLayer::new())
                    .layer(RetryLayer::new().with_jitter());
                e.insert(op).clone()
            }
        };
        Ok((op, path))
    }

    /// An iceberg error for a failed Blob request, with the SAS token and any signature cut out. The OpenDAL
    /// error is not kept as the source: its text is what would leak.
    fn error(&self, what: &str, location: &str, e: opendal::Error) -> Error {
        let mut text = super::redact_signatures(&e.to_string());
        if let Some(sas) = &self.settings.sas_token {
            text = text.replace(sas.as_str(), "<redacted>");
        }
        let retryable = super::is_transient(&e);
        let kind = if retryable { ErrorKind::Unexpected } else { ErrorKind::PreconditionFailed };
        Error::new(kind, format!("azure blob {what} {location} failed: {text}")).with_retryable(retryable)
    }
}

#[async_trait]
#[typetag::serde(name = "K2iAzblobStorage")]
impl Storage for AzblobStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let (op, p) = self.operator(path)?;
        op.exists(p.key).await.map_err(|e| self.error("exists", path, e))
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (op, p) = self.operator(path)?;
        let meta = op.stat(p.key).await.map_err(|e| self.error("stat", path, e))?;
        Ok(FileMetadata { size: meta.content_length() })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (op, p) = self.operator(path)?;
        Ok(op.read(p.key).await.map_err(|e| self.error("read", path, e))?.to_bytes())
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let (op, p) = self.operator(path)?;
        let reader = op.reader(p.key).await.map_err(|e| self.error("read", path, e))?;
        Ok(Box::new(BlobReader { reader, storage: self.clone(), path: path.to_owned() }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (op, p) = self.operator(path)?;
        op.write_with(p.key, bs).chunk(BLOCK_SIZE).await.map_err(|e| self.error("write", path, e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let (op, p) = self.operator(path)?;
        let writer = op.writer_with(p.key).chunk(BLOCK_SIZE).await.map_err(|e| self.error("write", path, e))?;
        Ok(Box::new(BlobWriter { writer, storage: self.clone(), path: path.to_owned() }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (op, p) = self.operator(path)?;
        op.delete(p.key).await.map_err(|e| self.error("delete", path, e))
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (op, p) = self.operator(path)?;
        let prefix = if p.key.is_empty() || p.key.ends_with('/') { p.key.to_owned() } else { format!("{}/", p.key) };
        op.delete_with(&prefix).recursive(true).await.map_err(|e| self.error("delete under", path, e))
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        // One batching deleter per container (the Blob API deletes up to 256 blobs per batch request).
        let mut deleters: HashMap<(String, String), (opendal::Deleter, String)> = HashMap::new();
        while let Some(path) = paths.next().await {
            let (op, p) = self.operator(&path)?;
            let container = (self.endpoint(&p)?, p.container.to_owned());
            let (deleter, _) = match deleters.entry(container) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let deleter = op.deleter().await.map_err(|e| self.error("delete", &path, e))?;
                    e.insert((deleter, path.clone()))
                }
            };
            deleter.delete(p.key).await.map_err(|e| self.error("delete", &path, e))?;
        }
        for (mut deleter, first) in deleters.into_values() {
            deleter.close().await.map_err(|e| self.error("delete (batch starting at)", &first, e))?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

struct BlobReader {
    reader: opendal::Reader,
    storage: AzblobStorage,
    path: String,
}

#[async_trait]
impl FileRead for BlobReader {
    async fn read(&self, range: std::ops::Range<u64>) -> Result<Bytes> {
        let buffer = self.reader.read(range).await.map_err(|e| self.storage.error("read", &self.path, e))?;
        Ok(buffer.to_bytes())
    }
}

struct BlobWriter {
    writer: opendal::Writer,
    storage: AzblobStorage,
    path: String,
}

#[async_trait]
impl FileWrite for BlobWriter {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.writer.write(bs).await.map_err(|e| self.storage.error("write", &self.path, e))
    }

    async fn close(&mut self) -> Result<()> {
        self.writer.close().await.map_err(|e| self.storage.error("write (commit)", &self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::redact_signatures;
    use super::*;

    fn storage(props: &[(&str, &str)]) -> AzblobStorage {
        AzblobStorage::new(&props.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn locations_split_into_container_account_and_blob() {
        let p = BlobPath::parse("wasbs://wh@acct.blob.core.windows.net/ns/t/metadata/v1.json").unwrap();
        assert_eq!(
            p,
            BlobPath {
                secure: true,
                container: "wh",
                account: "acct",
                suffix: "core.windows.net",
                key: "ns/t/metadata/v1.json"
            }
        );
        assert!(!BlobPath::parse("wasb://wh@acct.blob.core.windows.net").unwrap().secure);
        for bad in [
            "wasbs://acct.blob.core.windows.net/p",
            "wasbs://wh@acct.dfs.core.windows.net/p",
            "abfss://wh@acct.dfs.core.windows.net/p",
            "wasbs://@acct.blob.core.windows.net/p",
        ] {
            assert!(BlobPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_endpoint_follows_the_location_unless_an_authority_is_set() {
        let p = BlobPath::parse("wasbs://wh@acct.blob.core.chinacloudapi.cn/x").unwrap();
        assert_eq!(storage(&[]).endpoint(&p).unwrap(), "https://acct.blob.core.chinacloudapi.cn");
        let emulator = storage(&[(ADLS_BLOB_STORAGE_AUTHORITY, "127.0.0.1:10000"), (ADLS_BLOB_STORAGE_SCHEME, "http")]);
        assert_eq!(emulator.endpoint(&p).unwrap(), "http://127.0.0.1:10000/acct");
        let domain = storage(&[(ADLS_BLOB_STORAGE_AUTHORITY, ".blob.example.net")]);
        assert_eq!(domain.endpoint(&p).unwrap(), "https://acct.blob.example.net");
        assert!(storage(&[(ADLS_BLOB_STORAGE_SCHEME, "ftp")]).endpoint(&p).is_err());
    }

    #[test]
    fn a_service_principal_in_properties_is_refused_for_blob_locations() {
        let s = storage(&[(ADLS_CLIENT_SECRET, "shh-secret"), (ADLS_TENANT_ID, "t")]);
        let e = s.operator("wasbs://wh@acct.blob.core.windows.net/x").unwrap_err().to_string();
        assert!(
            e.contains("adls.client-secret, adls.tenant-id cannot be used") && e.contains("AZURE_CLIENT_SECRET"),
            "{e}"
        );
        assert!(!e.contains("shh-secret"), "{e}");
    }

    #[test]
    fn another_accounts_location_is_refused() {
        let s = storage(&[(ADLS_ACCOUNT_NAME, "mine"), (ADLS_ACCOUNT_KEY, "a2V5")]);
        let e = s.operator("wasbs://wh@theirs.blob.core.windows.net/x").unwrap_err().to_string();
        assert!(e.contains("in account theirs") && e.contains("adls.account-name is mine"), "{e}");
        assert!(s.operator("wasbs://wh@mine.blob.core.windows.net/x").is_ok());
    }

    #[test]
    fn signatures_and_secrets_never_reach_debug_or_error_text() {
        let text = "send http request, url: https://a.blob.core.windows.net/c/x?sv=2022&sig=AbC%2Fd&se=1 => x";
        assert_eq!(
            redact_signatures(text),
            "send http request, url: https://a.blob.core.windows.net/c/x?sv=2022&sig=<redacted>&se=1 => x"
        );
        let s = storage(&[(ADLS_ACCOUNT_KEY, "a2V5LXNlY3JldA=="), (ADLS_SAS_TOKEN, "?sv=1&sig=zzz")]);
        let debug = format!("{s:?}");
        assert!(!debug.contains("a2V5LXNlY3JldA==") && !debug.contains("zzz"), "{debug}");
        let e = s.error(
            "read",
            "wasbs://c@a.blob.core.windows.net/x",
            opendal::Error::new(opendal::ErrorKind::Unexpected, "at sv=1&sig=zzz"),
        );
        assert!(!e.to_string().contains("zzz"), "{e}");
    }
}
