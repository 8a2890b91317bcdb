//! A client of the Confluent Schema Registry REST API (any compatible server: Confluent's, Apicurio's ccompat
//! API, Redpanda's): schemas by id with their references resolved recursively, the latest version of a
//! subject, subject naming strategies, basic or bearer auth, TLS (a custom CA, client certificates), timeouts
//! and retries, and two caches.
//!
//! # TLS
//! An `https://` registry's certificate must chain to the system trust store or to a CA of `ca_cert`;
//! `client_cert` / `client_key` are presented to a registry that asks for them (mTLS). The files are read
//! and checked when the client is built: a missing or unusable one is a [`ErrorKind::Config`] error naming
//! the key and the file. A handshake the configuration loses — the registry's certificate is not trusted, or
//! the registry refuses k2i's (missing or unknown) client certificate — is a [`ErrorKind::Config`] error too,
//! naming the URL, and reported at once rather than after [`ATTEMPTS`] attempts: only the operator can fix
//! it. A failure of the network is [`ErrorKind::Transient`].
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

use rustls::pki_types::PrivateKeyDer;
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
    /// Whether a client certificate is configured (for the message when the registry refuses the handshake).
    mtls: bool,
}

enum Auth {
    None,
    Basic(String, Option<String>),
    Bearer(String),
}

impl RegistryClient {
    /// A client for `[kafka.format.registry]`.
    pub fn new(config: &RegistryConfig) -> Result<Self> {
        crate::tls::install_crypto_provider();
        let timeout: Duration = config.request_timeout.get();
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(path) = &config.ca_cert {
            let certs = crate::tls::certificates("kafka.format.registry.ca_cert", path)?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| file_error("ca_cert", path, "holds a certificate that cannot be used").source(e))?;
            // Added to the system's trust store (rustls-platform-verifier), not instead of it.
            builder = builder.tls_certs_merge(certs);
        }
        match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => builder = builder.identity(identity(cert, key)?),
            (None, None) => {}
            _ => {
                return Err(Error::new(ErrorKind::Config, "`client_cert` and `client_key` go together (mTLS)")
                    .with("key", "kafka.format.registry"));
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::new(ErrorKind::Config, "cannot build the registry's HTTP client").source(e))?;
        let mtls = config.client_cert.is_some();
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
            mtls,
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
        let schema = self.resolved(id, reply).await?;
        Ok(self.remember(schema))
    }

    /// The latest version of a subject (for creating a table before any record arrived). Not cached.
    pub async fn latest(&self, subject: &str) -> Result<ResolvedSchema> {
        let path = format!("subjects/{}/versions/latest", encode_path(subject));
        let reply: SchemaReply = self.get(&path, None).await?;
        let id = reply.id.ok_or_else(|| {
            Error::new(ErrorKind::Corrupt, "the registry's answer has no schema id").with("subject", subject)
        })?;
        let schema = self.resolved(id, reply).await?;
        // What the subject's latest version is changes; what its id names does not: cached by id like any
        // schema, so records of the version a table was created from decode after a restart without the
        // registry.
        Ok((*self.remember(schema)).clone())
    }

    /// A registry answer with its references resolved.
    async fn resolved(&self, id: u32, reply: SchemaReply) -> Result<ResolvedSchema> {
        let references = self.resolve(&reply.references, 0).await?;
        Ok(ResolvedSchema {
            id,
            schema_type: reply.schema_type.unwrap_or(SchemaType::Avro),
            schema: reply.schema,
            references,
        })
    }

    /// Caches a schema by its id, in memory and on disk.
    fn remember(&self, schema: ResolvedSchema) -> Arc<ResolvedSchema> {
        if let Err(e) = self.write_cached(&schema) {
            // The cache is an optimisation for restarts without the registry; running on is right.
            tracing::warn!(error = %e, id = schema.id, "cannot write the schema to the disk cache");
        }
        let schema = Arc::new(schema);
        self.lock().insert(schema.id, schema.clone());
        schema
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
                Err(e) => match tls_refusal(&e, self.mtls) {
                    // Trying again cannot help: only the operator can (a CA, a client certificate).
                    Some(message) => {
                        return Err(Error::new(ErrorKind::Config, message).with("url", &url).source(e));
                    }
                    None => Error::new(ErrorKind::Transient, "cannot reach the registry").with("url", &url).source(e),
                },
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

/// A configuration error about a TLS file, naming its key and path.
fn file_error(key: &str, path: &Path, message: &str) -> Error {
    Error::new(ErrorKind::Config, message)
        .with("key", format!("kafka.format.registry.{key}"))
        .with("file", path.display())
}

/// The client identity of `client_cert` and `client_key`: the key must be one rustls can sign with and must
/// belong to the first certificate.
fn identity(cert_path: &Path, key_path: &Path) -> Result<reqwest::Identity> {
    let certs = crate::tls::certificates("kafka.format.registry.client_cert", cert_path)?;
    let key = crate::tls::private_key("kafka.format.registry.client_key", key_path)?;
    let label = match &key {
        PrivateKeyDer::Pkcs8(_) => "PRIVATE KEY",
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => return Err(file_error("client_key", key_path, "holds a kind of private key k2i cannot use")),
    };
    let provider = rustls::crypto::ring::default_provider();
    let mut identity_pem = pem(label, key.secret_der());
    if let Err(e) = rustls::sign::CertifiedKey::from_der(certs.clone(), key, &provider) {
        let error = match e {
            rustls::Error::InconsistentKeys(_) => file_error(
                "client_key",
                key_path,
                "is not the private key of the certificate in kafka.format.registry.client_cert",
            )
            .with("client_cert", cert_path.display()),
            e => file_error("client_key", key_path, &format!("holds a private key k2i cannot use: {e}")),
        };
        return Err(error);
    }
    for cert in &certs {
        identity_pem.push_str(&pem("CERTIFICATE", cert));
    }
    reqwest::Identity::from_pem(identity_pem.as_bytes())
        .map_err(|e| file_error("client_cert", cert_path, "cannot be used as a client certificate").source(e))
}

/// One PEM block.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Why a request failed, when the TLS handshake was lost to the configuration rather than to the network:
/// the registry's certificate is not trusted, or the registry refused k2i's client certificate (or its lack
/// of one).
fn tls_refusal(e: &reqwest::Error, mtls: bool) -> Option<String> {
    Some(match crate::tls::refusal(e, "kafka.format.registry.ca_cert")? {
        crate::tls::Refusal::Untrusted(reason) => format!("the registry's TLS certificate is not trusted: {reason}"),
        crate::tls::Refusal::ClientCertificate(alert) if mtls => format!(
            "the registry refused k2i's client certificate (kafka.format.registry.client_cert) in the TLS \
             handshake: {alert:?}"
        ),
        crate::tls::Refusal::ClientCertificate(alert) => format!(
            "the registry requires a client certificate (mTLS): set kafka.format.registry.client_cert and \
             client_key (TLS alert {alert:?})"
        ),
    })
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
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

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
    fn pem_blocks_parse_back_and_tls_errors_are_found_inside_io_errors() {
        let der: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let block = pem("CERTIFICATE", &der);
        assert!(block.lines().all(|line| line.len() <= 64), "{block}");
        assert_eq!(CertificateDer::from_pem_slice(block.as_bytes()).unwrap().as_ref(), der.as_slice());

        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let outer = Outer(std::io::Error::new(std::io::ErrorKind::InvalidData, unknown.clone()));
        assert_eq!(crate::tls::rustls_error(&outer), Some(&unknown));
        let refused = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(crate::tls::rustls_error(&refused), None);
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
