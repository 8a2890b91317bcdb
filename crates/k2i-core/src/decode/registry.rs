//! A client of the Confluent Schema Registry REST API (any compatible server: Confluent's, Apicurio's ccompat
//! API, Redpanda's): schemas by id with their references resolved recursively, the latest version of a
//! subject, subject naming strategies, basic or bearer auth, timeouts and retries, and two caches.
//!
//! # Caches
//! A schema id names immutable content, so both caches keep entries for ever:
//! - in memory, per process;
//! - on disk under `registry.cache_dir`, one file per id (`schema-<id>.json`: the resolved schema and a
//!   CRC32C of it), written atomically (temporary file, fsync, rename, fsync of the directory) and verified
//!   on read (a file that fails its checksum or does not parse is ignored with a warning and fetched again).
//!   So a restart proceeds while the registry is down, for every schema it has seen before.
//!
//! The latest version of a subject changes: the question "which is the latest" is never cached (asked fresh,
//! only to create a table or to retry a paused schema), but the schema it answers is cached by its id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{RegistryConfig, SubjectNameStrategy};
use crate::error::{Error, ErrorKind, Result};

/// The kind of schema a registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchemaType {
    /// Avro (the registry's default when `schemaType` is absent).
    #[serde(rename = "AVRO")]
    Avro,
    /// Protobuf.
    #[serde(rename = "PROTOBUF")]
    Protobuf,
    /// JSON Schema.
    #[serde(rename = "JSON")]
    Json,
}

/// A schema with every schema it references, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedSchema {
    /// The registry's id of the schema.
    pub id: u32,
    /// Its type.
    pub schema_type: SchemaType,
    /// Its text (`.proto` source, Avro JSON, JSON Schema).
    pub schema: String,
    /// Every schema it references, directly or not, by the name the referrer uses (the import path for
    /// Protobuf), each once.
    pub references: Vec<NamedSchema>,
}

/// A referenced schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedSchema {
    /// The name the referring schema uses.
    pub name: String,
    /// Where the registry has it.
    pub subject: String,
    /// Which version.
    pub version: u32,
    /// Its text.
    pub schema: String,
}

/// The subject a record's schema is registered under, per the naming strategy.
pub fn subject(strategy: SubjectNameStrategy, topic: &str, record_name: Option<&str>) -> Result<String> {
    let record = || {
        record_name.ok_or_else(|| {
            Error::new(ErrorKind::Config, "this subject naming strategy needs the record's fully qualified name")
                .with("key", "kafka.format.message_name")
        })
    };
    Ok(match strategy {
        SubjectNameStrategy::TopicName => format!("{topic}-value"),
        SubjectNameStrategy::RecordName => record()?.to_owned(),
        SubjectNameStrategy::TopicRecordName => format!("{topic}-{}", record()?),
    })
}

#[derive(Deserialize)]
struct SchemaReply {
    #[serde(default)]
    id: Option<u32>,
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<SchemaType>,
    #[serde(default)]
    references: Vec<ReferenceReply>,
}

#[derive(Deserialize)]
struct ReferenceReply {
    name: String,
    subject: String,
    version: u32,
}

/// How many attempts a request gets (waits of 0.2, 0.4 s between them) on a transient failure.
const ATTEMPTS: u32 = 3;
/// The deepest chain of references followed (a cycle would otherwise never end).
const MAX_REFERENCE_DEPTH: usize = 32;

/// The client.
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    memory: Mutex<HashMap<u32, Arc<ResolvedSchema>>>,
    cache_dir: PathBuf,
}

enum Auth {
    None,
    Basic(String, Option<String>),
    Bearer(String),
}

impl RegistryClient {
    /// A client for `[kafka.format.registry]`.
    pub fn new(config: &RegistryConfig) -> Result<Self> {
        let timeout: Duration = config.request_timeout.get();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::new(ErrorKind::Config, "cannot build the registry's HTTP client").source(e))?;
        let auth = match (&config.bearer_token, &config.username) {
            (Some(token), _) => Auth::Bearer(token.expose()?.to_owned()),
            (None, Some(user)) => {
                Auth::Basic(user.clone(), config.password.as_ref().map(|p| p.expose().map(str::to_owned)).transpose()?)
            }
            (None, None) => Auth::None,
        };
        Ok(Self {
            base: config.url.trim_end_matches('/').to_owned(),
            http,
            auth,
            memory: Mutex::new(HashMap::new()),
            cache_dir: config.cache_dir.clone(),
        })
    }

    /// The schema with `id`, references resolved: from memory, else the disk cache, else the registry (then
    /// cached in both).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<ResolvedSchema>> {
        if let Some(schema) = self.lock().get(&id) {
            return Ok(schema.clone());
        }
        if let Some(schema) = self.read_cached(id) {
            let schema = Arc::new(schema);
            self.lock().insert(id, schema.clone());
            return Ok(schema);
        }
        let reply: SchemaReply = self.get(&format!("schemas/ids/{id}"), Some(id)).await?;
        let references = self.resolve(&reply.references, 0).await?;
        let schema = ResolvedSchema {
            id,
            schema_type: reply.schema_type.unwrap_or(SchemaType::Avro),
            schema: reply.schema,
            references,
        };
        if let Err(e) = self.write_cached(&schema) {
            // The cache is an optimisation for restarts without the registry; running on is right.
            tracing::warn!(error = %e, id, "cannot write the schema to the disk cache");
        }
        let schema = Arc::new(schema);
        self.lock().insert(id, schema.clone());
        Ok(schema)
    }

    /// The latest version of a subject (for creating a table before any record arrived). Not cached.
    pub async fn latest(&self, subject: &str) -> Result<ResolvedSchema> {
        let path = format!("subjects/{}/versions/latest", encode_path(subject));
        let reply: SchemaReply = self.get(&path, None).await?;
        let id = reply.id.ok_or_else(|| {
            Error::new(ErrorKind::Corrupt, "the registry's answer has no schema id").with("subject", subject)
        })?;
        let references = self.resolve(&reply.references, 0).await?;
        let schema = ResolvedSchema {
            id,
            schema_type: reply.schema_type.unwrap_or(SchemaType::Avro),
            schema: reply.schema,
            references,
        };
        // What the subject's latest version is changes; what its id names does not: cached by id like any
        // schema, so records of the version a table was created from decode after a restart without the
        // registry.
        if let Err(e) = self.write_cached(&schema) {
            tracing::warn!(error = %e, id, "cannot write the schema to the disk cache");
        }
        self.lock().insert(id, Arc::new(schema.clone()));
        Ok(schema)
    }

    /// Resolves references depth-first; each (subject, version) once.
    async fn resolve(&self, references: &[ReferenceReply], depth: usize) -> Result<Vec<NamedSchema>> {
        let mut out: Vec<NamedSchema> = Vec::new();
        let mut stack: Vec<(String, String, u32, usize)> =
            references.iter().map(|r| (r.name.clone(), r.subject.clone(), r.version, depth)).collect();
        while let Some((name, subject, version, level)) = stack.pop() {
            if out.iter().any(|s| s.subject == subject && s.version == version) {
                continue;
            }
            if level >= MAX_REFERENCE_DEPTH {
                return Err(Error::new(ErrorKind::Corrupt, "schema references nest too deep (a cycle?)")
                    .with("subject", &subject)
                    .with("version", version));
            }
            let path = format!("subjects/{}/versions/{version}", encode_path(&subject));
            let reply: SchemaReply = self.get(&path, None).await?;
            for r in &reply.references {
                stack.push((r.name.clone(), r.subject.clone(), r.version, level + 1));
            }
            out.push(NamedSchema { name, subject, version, schema: reply.schema });
        }
        Ok(out)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str, id: Option<u32>) -> Result<T> {
        let url = format!("{}/{path}", self.base);
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let mut request = self.http.get(&url).header("Accept", "application/vnd.schemaregistry.v1+json");
            request = match &self.auth {
                Auth::None => request,
                Auth::Basic(user, password) => request.basic_auth(user, password.as_deref()),
                Auth::Bearer(token) => request.bearer_auth(token),
            };
            let error = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return response.json::<T>().await.map_err(|e| {
                        Error::new(ErrorKind::Corrupt, "the registry's answer is not what the API specifies")
                            .with("url", &url)
                            .source(e)
                    });
                }
                Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                    // An unknown id is the record's problem (the error policy decides); an unknown subject or
                    // version is the configuration's.
                    let kind = if id.is_some() { ErrorKind::InvalidRecord } else { ErrorKind::Config };
                    let error = Error::new(kind, "the registry does not know this schema").with("url", &url);
                    return Err(match id {
                        Some(id) => error.with("schema_id", id),
                        None => error,
                    });
                }
                Ok(response) if response.status().is_server_error() || response.status().as_u16() == 429 => {
                    Error::new(ErrorKind::Transient, format!("the registry answered {}", response.status()))
                        .with("url", &url)
                }
                Ok(response) => {
                    return Err(Error::new(ErrorKind::Config, format!("the registry answered {}", response.status()))
                        .with("url", &url));
                }
                Err(e) => Error::new(ErrorKind::Transient, "cannot reach the registry").with("url", &url).source(e),
            };
            if attempt >= ATTEMPTS {
                return Err(error.with("attempts", attempt));
            }
            tracing::warn!(error = %error, attempt, "registry request failed; retrying");
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<ResolvedSchema>>> {
        // A map of immutable entries: a panic elsewhere cannot leave it inconsistent.
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cache_path(&self, id: u32) -> PathBuf {
        self.cache_dir.join(format!("schema-{id}.json"))
    }

    fn read_cached(&self, id: u32) -> Option<ResolvedSchema> {
        let path = self.cache_path(id);
        let bytes = std::fs::read(&path).ok()?;
        match decode_cached(&bytes, id) {
            Ok(schema) => Some(schema),
            Err(reason) => {
                tracing::warn!(file = %path.display(), reason, "ignoring a damaged schema cache file");
                None
            }
        }
    }

    fn write_cached(&self, schema: &ResolvedSchema) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.cache_dir)?;
        let path = self.cache_path(schema.id);
        let tmp = self.cache_dir.join(format!(".schema-{}.json.tmp", schema.id));
        let bytes = encode_cached(schema)?;
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            // Durable before the rename makes it visible: a crash leaves the old state or the whole file.
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        // The rename itself must survive a crash too.
        sync_dir(&self.cache_dir)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Percent-encodes a subject for a URL path (subjects may hold `/`, `:` or spaces).
fn encode_path(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for byte in subject.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    crc32c: u32,
    schema: ResolvedSchema,
}

fn encode_cached(schema: &ResolvedSchema) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(schema)?;
    let file = CacheFile { crc32c: crc32c::crc32c(&body), schema: schema.clone() };
    Ok(serde_json::to_vec(&file)?)
}

fn decode_cached(bytes: &[u8], id: u32) -> std::result::Result<ResolvedSchema, &'static str> {
    let file: CacheFile = serde_json::from_slice(bytes).map_err(|_| "not a schema cache file")?;
    let body = serde_json::to_vec(&file.schema).map_err(|_| "cannot re-encode the schema")?;
    if crc32c::crc32c(&body) != file.crc32c {
        return Err("checksum mismatch");
    }
    if file.schema.id != id {
        return Err("the file holds another schema id");
    }
    Ok(file.schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(id: u32) -> ResolvedSchema {
        ResolvedSchema {
            id,
            schema_type: SchemaType::Protobuf,
            schema: "syntax = \"proto3\"; message A { int32 x = 1; }".into(),
            references: vec![NamedSchema {
                name: "common.proto".into(),
                subject: "common".into(),
                version: 2,
                schema: "syntax = \"proto3\";".into(),
            }],
        }
    }

    #[test]
    fn subjects_follow_the_naming_strategy() {
        assert_eq!(subject(SubjectNameStrategy::TopicName, "orders", None).unwrap(), "orders-value");
        assert_eq!(subject(SubjectNameStrategy::RecordName, "orders", Some("shop.Order")).unwrap(), "shop.Order");
        assert_eq!(
            subject(SubjectNameStrategy::TopicRecordName, "orders", Some("shop.Order")).unwrap(),
            "orders-shop.Order"
        );
        assert_eq!(subject(SubjectNameStrategy::RecordName, "orders", None).unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(encode_path("a/b c:d"), "a%2Fb%20c%3Ad");
    }

    #[test]
    fn cache_files_are_verified_on_read() {
        let bytes = encode_cached(&schema(7)).unwrap();
        assert_eq!(decode_cached(&bytes, 7).unwrap(), schema(7));
        assert_eq!(decode_cached(&bytes, 8).unwrap_err(), "the file holds another schema id");
        let text = String::from_utf8(bytes).unwrap().replace("int32 x", "int64 x");
        assert_eq!(decode_cached(text.as_bytes(), 7).unwrap_err(), "checksum mismatch");
        assert_eq!(decode_cached(b"{\"crc", 7).unwrap_err(), "not a schema cache file");
    }
}
