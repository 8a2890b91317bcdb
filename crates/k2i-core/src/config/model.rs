//! The configuration schema: every key k2i reads, declared once, with its default and its documentation.
//!
//! The doc comment of each field is the user documentation: `docs/configuration.md` and
//! `config/example.toml` are generated from this file (see [`super::reference`]), and a test fails when the
//! checked-in copies are stale. Keys are snake_case, enum values kebab-case, as in the K2I configuration
//! users already have.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use indexmap::IndexMap;

use super::types::{ColumnType, HumanDuration, PartitionField, Secret, serialize_settings};

/// A complete k2i configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where records come from: the Kafka cluster, the topics and how their payloads are encoded.
    pub kafka: KafkaConfig,
    /// How the table schema follows the data.
    #[serde(default)]
    pub schema_evolution: SchemaEvolutionConfig,
    /// The in-memory buffer between Kafka and the data files, and when it is flushed.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// The Iceberg catalog, warehouse and table that records are written to.
    pub iceberg: IcebergConfig,
    /// What happens to a record that cannot be decoded or written.
    #[serde(default)]
    pub errors: ErrorPolicyConfig,
    /// The local write-ahead log of flush intents and commits, used for crash recovery.
    #[serde(default)]
    pub transaction_log: TransactionLogConfig,
    /// The HTTP endpoints for health, readiness, status and Prometheus metrics.
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    /// The local read-state RPC that serves recent (not yet committed) rows over a Unix socket.
    #[serde(default)]
    pub rpc: RpcConfig,
    /// Table maintenance run inside the ingest process: compaction, snapshot expiry, orphan removal.
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// Warnings, unbuilt K2I features and K2I's catalog types, found while loading (see [`Config::warnings`],
    /// [`Config::unbuilt`]).
    #[serde(skip)]
    pub(crate) notes: super::Notes,
}

/// `[kafka]`: the source cluster and topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers as `host:port` strings.
    pub bootstrap_servers: Vec<String>,
    /// The topic to ingest. Give either `topic` or `topics`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Several topics ingested into the same table. Give either `topic` or `topics`, not both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// The consumer group k2i joins. Instances sharing a group share the partitions of the topics.
    pub consumer_group: String,
    /// Where to start in a partition the table has never seen. Progress recorded in the table always wins.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// What to do when Kafka no longer has the records right after the table's progress (retention or
    /// delete-records passed it while k2i was stopped or behind): `fail` stops with an error naming the
    /// partition, the table's offset and the low watermark; `skip` resumes at the low watermark and records
    /// the skipped range in the next snapshot's summary (`k2i.gaps`) and in `k2i_offsets_lost_total`.
    #[serde(default)]
    pub on_data_loss: DataLossPolicy,
    /// How record values are encoded.
    #[serde(default)]
    pub format: FormatConfig,
    /// Store each record's headers in a `_kafka_headers` column (map of header name to bytes; for a name
    /// repeated in one record, the last value wins).
    #[serde(default)]
    pub include_headers: bool,
    /// Extra librdkafka properties passed through unchanged (e.g. `"security.protocol" = "SASL_SSL"`).
    /// Values may be secrets (`{ env = "VAR" }` or `{ file = "path" }`). Properties that would weaken
    /// exactly-once are rejected, with the reason: `bootstrap.servers` and `group.id` (set by the k2i keys),
    /// `auto.offset.reset` (k2i decides positions; use `auto_offset_reset`), `enable.auto.commit`,
    /// `enable.auto.offset.store` and `enable.partition.eof` set to true, `isolation.level =
    /// "read_uncommitted"`, and any `partition.assignment.strategy` but `cooperative-sticky`. k2i's own
    /// defaults, which these override: `queued.max.messages.kbytes = 16384`, `fetch.queue.backoff.ms = 10`,
    /// `statistics.interval.ms = 1000` (lag metrics), `client.id = "k2i-<version>"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", serialize_with = "serialize_settings")]
    pub properties: BTreeMap<String, Secret>,
}

/// What to do when the records after the table's progress are gone from Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataLossPolicy {
    /// Stop with an error; the operator decides.
    #[default]
    Fail,
    /// Resume at the low watermark and record the gap.
    Skip,
}

/// Where a consumer starts in a partition with no recorded progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetReset {
    /// The oldest record still in the partition.
    #[default]
    Earliest,
    /// Only records produced after k2i first joins.
    Latest,
}

/// `[kafka.format]`: how record values are decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// The payload encoding.
    #[serde(default, rename = "type")]
    pub kind: FormatType,
    /// For the registry formats: the record type the subject holds — for `protobuf` the fully qualified
    /// message a new table is created from when the schema defines several (records say which message they
    /// hold through their message indexes); for `avro` the root record's full name (checked when the table is
    /// created); for `json_schema` it only names the subject. With `subject_name_strategy = "record-name"` /
    /// `"topic-record-name"` it names the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_name: Option<String>,
    /// For `json`: columns the table is created with, before any record is seen, as `name = "type"` in
    /// order, with Iceberg types: `boolean`, `int`, `long`, `float`, `double`, `decimal(P, S)`, `string`,
    /// `binary`, `date`, `timestamp`, `timestamptz`, `list<T>`, `map<string, T>`, `struct<name: T, …>`.
    /// String values of `timestamptz` / `timestamp` / `date` columns are parsed (RFC 3339). All are optional
    /// columns. Fields not listed are added as inferred when `schema_evolution.mode = "auto-additive"` and are
    /// record errors when it is `"none"`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub columns: IndexMap<String, ColumnType>,
    /// The Schema Registry used by `protobuf`, `avro` and `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryConfig>,
    /// `[kafka.format.protobuf]`: how Protobuf values map to columns.
    #[serde(default)]
    pub protobuf: ProtobufOptions,
}

/// `[kafka.format.protobuf]`: how Protobuf values map to columns (docs/formats/protobuf.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProtobufOptions {
    /// Enum fields as their `name` (a string column; an unknown number is kept as its decimal text) or
    /// their `number` (an int column).
    pub enums: EnumMode,
    /// Adds a `<oneof>_case` string column per oneof holding the name of the member that is set.
    pub oneof_case: bool,
}

impl Default for ProtobufOptions {
    fn default() -> Self {
        Self { enums: EnumMode::Name, oneof_case: true }
    }
}

/// How Protobuf enum values are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EnumMode {
    /// The value's name, as a string.
    #[default]
    Name,
    /// The value's number, as an int.
    Number,
}

/// The encoding of record values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FormatType {
    /// The value bytes, unchanged, in a binary column.
    #[default]
    Raw,
    /// Schemaless JSON objects; the table schema is inferred from the data.
    Json,
    /// Confluent-framed Protobuf with the schema from the registry.
    Protobuf,
    /// Confluent-framed Avro with the schema from the registry.
    Avro,
    /// Confluent-framed JSON with a JSON Schema from the registry.
    #[serde(rename = "json_schema", alias = "json-schema")]
    JsonSchema,
}

impl FormatType {
    /// Whether this format needs a Schema Registry.
    pub fn needs_registry(self) -> bool {
        matches!(self, Self::Protobuf | Self::Avro | Self::JsonSchema)
    }
}

/// `[kafka.format.registry]`: a Confluent-compatible Schema Registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the registry's Confluent-compatible API (e.g. `http://localhost:8081`).
    pub url: String,
    /// How subjects are named when k2i looks a schema up by subject.
    #[serde(default)]
    pub subject_name_strategy: SubjectNameStrategy,
    /// HTTP basic-auth user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// HTTP basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Bearer token sent as `Authorization: Bearer …` (instead of basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// For an `https://` url: a PEM file of one or more CA certificates to trust in addition to the system's
    /// trust store (a registry whose certificate a private CA signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// For an `https://` url: a PEM file with the client certificate k2i presents (mTLS), leaf first, then any
    /// intermediate certificates. Requires `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The PEM file with the private key of `client_cert` (PKCS#8, RSA or EC; not encrypted). Requires
    /// `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Directory where fetched schemas are cached on disk, so a restart does not need the registry.
    #[serde(default = "default_registry_cache_dir")]
    pub cache_dir: PathBuf,
    /// Timeout of one registry request.
    #[serde(default = "default_registry_timeout")]
    pub request_timeout: HumanDuration,
}

fn default_registry_cache_dir() -> PathBuf {
    PathBuf::from("./schema_cache")
}

fn default_registry_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// Confluent subject naming strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectNameStrategy {
    /// `<topic>-value`.
    #[default]
    TopicName,
    /// `<fully qualified record name>`.
    RecordName,
    /// `<topic>-<fully qualified record name>`.
    TopicRecordName,
}

/// `[schema_evolution]`: how the table schema follows the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaEvolutionConfig {
    /// `auto-additive` adds new optional columns and widens types; `none` keeps the table schema fixed and
    /// treats any difference as breaking (K2I's `manual`). `permissive` (from K2I) is not built yet.
    pub mode: EvolutionMode,
    /// What to do when an incoming schema cannot be applied additively.
    pub on_breaking_change: BreakingChangeAction,
    /// Minimum time between two schema updates of the table, so a flapping producer cannot flood the catalog.
    pub schema_update_min_interval: HumanDuration,
}

impl Default for SchemaEvolutionConfig {
    fn default() -> Self {
        Self {
            mode: EvolutionMode::AutoAdditive,
            on_breaking_change: BreakingChangeAction::Pause,
            schema_update_min_interval: HumanDuration::from_secs(60),
        }
    }
}

/// Schema evolution modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EvolutionMode {
    /// Add new optional fields and apply safe widenings (int → long, float → double).
    AutoAdditive,
    /// Never change the table schema.
    None,
    /// K2I's wider compatibility policy, which K2I reserved and k2i has not built (issue 10).
    Permissive,
}

/// Reactions to a breaking schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BreakingChangeAction {
    /// Stop consuming and report not-ready until the schema is fixed; resume without a restart.
    Pause,
    /// Exit with an error.
    Fail,
    /// Skip the records whose writer schema does not fit, counted (K2I's name; `skip` also works).
    #[serde(alias = "skip")]
    SkipMessage,
    /// Send the records whose writer schema does not fit to `errors.dead_letter_topic`.
    DeadLetter,
}

/// `[buffer]`: the hot buffer and its flush triggers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Memory cap of buffered rows, in MiB, counted at their Arrow size once sealed into a chunk (their wire
    /// size before): a flush is due at half of it, the other half being the flush in flight; the consumer
    /// pauses while a due flush waits for the one in flight, and resumes after it.
    pub max_size_mb: NonZeroU64,
    /// Flush when the oldest unflushed record has waited this long.
    pub flush_interval: HumanDuration,
    /// Flush when this many rows are buffered.
    pub flush_batch_size: NonZeroUsize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_size_mb: NonZeroU64::new(256).expect("256 is not zero"),
            flush_interval: HumanDuration::from_secs(30),
            flush_batch_size: NonZeroUsize::new(100_000).expect("100000 is not zero"),
        }
    }
}

/// `[iceberg]`: catalog, warehouse and table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IcebergConfig {
    /// The catalog that tracks the table's metadata.
    #[serde(default)]
    pub catalog_type: CatalogType,
    /// Root location of table data and metadata: a local path, `file://…`, `s3://…`, `gs://…` or `abfss://…`.
    #[serde(default = "default_warehouse_path")]
    pub warehouse_path: String,
    /// The namespace of the table; dots separate nested namespaces (`analytics.raw`).
    #[serde(default = "default_database_name")]
    pub database_name: String,
    /// The table records are written to. It is created on first start if missing.
    pub table_name: String,
    /// REST catalog base URL (required when `catalog_type = "rest"`). With `catalog_type = "nessie"`, the Nessie
    /// server (required): its root, `…/api/v1` or `…/api/v2` (K2I's form) or `…/iceberg`; k2i talks to its
    /// Iceberg REST API at `<server>/iceberg/<nessie.default_branch>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_uri: Option<String>,
    /// Partition spec applied when k2i creates the table, as Iceberg transforms:
    /// `identity(col)`, `year(col)`, `month(col)`, `day(col)`, `hour(col)`, `bucket(N, col)`,
    /// `truncate(W, col)`. Nested columns are written with dots (`payload.region`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<PartitionField>,
    /// Data files roll over at this size, in MiB.
    #[serde(default = "default_target_file_size_mb")]
    pub target_file_size_mb: NonZeroU64,
    /// Parquet compression codec.
    #[serde(default)]
    pub compression: Compression,
    /// Settings of the `sql` catalog.
    #[serde(default)]
    pub sql: SqlCatalogConfig,
    /// Settings of the `rest` catalog beyond `rest_uri`.
    #[serde(default)]
    pub rest: RestCatalogConfig,
    /// Settings of the `glue` catalog.
    #[serde(default)]
    pub glue: GlueCatalogConfig,
    /// Settings of the `s3tables` catalog.
    #[serde(default)]
    pub s3tables: S3TablesCatalogConfig,
    /// Settings of the `nessie` catalog beyond `rest_uri` (and `[iceberg.rest]`, which applies to it too).
    #[serde(default, skip_serializing_if = "NessieCatalogConfig::is_default")]
    pub nessie: NessieCatalogConfig,
    /// Storage properties passed to Iceberg's FileIO unchanged, with Iceberg's property names
    /// (e.g. `"s3.region" = "eu-west-1"`, `"s3.access-key-id" = { env = "AWS_ACCESS_KEY_ID" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", serialize_with = "serialize_settings")]
    pub storage: BTreeMap<String, Secret>,
}

fn default_warehouse_path() -> String {
    "./warehouse".to_owned()
}

fn default_database_name() -> String {
    "default".to_owned()
}

fn default_target_file_size_mb() -> NonZeroU64 {
    NonZeroU64::new(128).expect("128 is not zero")
}

/// Iceberg catalog implementations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CatalogType {
    /// A JDBC-layout catalog in SQLite (embedded, the default) or Postgres; readable by pyiceberg's
    /// `SqlCatalog` and Java's `JdbcCatalog`.
    #[default]
    Sql,
    /// An Iceberg REST catalog.
    Rest,
    /// AWS Glue Data Catalog.
    Glue,
    /// Amazon S3 Tables.
    S3tables,
    /// Project Nessie, through its Iceberg REST API on one branch (`rest_uri`, `[iceberg.nessie]`).
    Nessie,
}

/// Parquet compression codecs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Zstandard (level 3).
    #[default]
    Zstd,
    /// Snappy.
    Snappy,
    /// LZ4 (raw).
    Lz4,
    /// Gzip.
    Gzip,
    /// No compression.
    None,
}

/// `[iceberg.sql]`: the SQL (JDBC-layout) catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SqlCatalogConfig {
    /// Database URL: `sqlite:<path>` or `postgres://user:pass@host/db`. Defaults to
    /// `sqlite:<warehouse_path>/catalog.db` for a local warehouse. May be a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<Secret>,
    /// The catalog name stored in the catalog tables (`catalog_name` column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_name: Option<String>,
}

/// `[iceberg.rest]`: REST catalog authentication and transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RestCatalogConfig {
    /// Warehouse identifier sent to the REST catalog (defaults to `warehouse_path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// A static bearer token, sent as `Authorization: Bearer <token>` with every request. It is never
    /// renewed: when the catalog refuses it (401), k2i stops with a configuration error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// OAuth2 client credentials as `client_id:client_secret`: k2i asks `oauth2_server_uri` for a token
    /// (the `client_credentials` grant), sends it as a bearer token, and asks for a new one when four fifths
    /// of its `expires_in` have passed, or when the catalog refuses it (401).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
    /// OAuth2 token endpoint (defaults to the catalog's own `<rest_uri>/v1/oauth/tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_server_uri: Option<String>,
    /// OAuth2 scope requested with `credential` (defaults to `catalog`, as Iceberg's clients do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Extra HTTP headers sent with every catalog request (not to the token endpoint). Values may be
    /// secrets; names and values must be valid HTTP header names and values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", serialize_with = "serialize_settings")]
    pub headers: BTreeMap<String, Secret>,
    /// For an `https://` catalog or token endpoint: a PEM file of one or more CA certificates to trust in
    /// addition to the system's trust store (a catalog whose certificate a private CA signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// For an `https://` catalog: a PEM file with the client certificate k2i presents (mTLS), leaf first,
    /// then any intermediate certificates. Requires `client_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The PEM file with the private key of `client_cert` (PKCS#8, RSA or EC; not encrypted). Requires
    /// `client_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// How long one HTTP request to the catalog or the token endpoint may take (connecting included)
    /// before it fails and is retried. At most 30s: every catalog operation has a 30 s deadline of its own.
    pub request_timeout: HumanDuration,
}

/// The default of `iceberg.rest.request_timeout`: the deadline of a whole catalog operation.
pub const DEFAULT_REST_REQUEST_TIMEOUT: HumanDuration = HumanDuration::from_secs(30);

impl Default for RestCatalogConfig {
    fn default() -> Self {
        Self {
            warehouse: None,
            token: None,
            credential: None,
            oauth2_server_uri: None,
            scope: None,
            headers: BTreeMap::new(),
            ca_cert: None,
            client_cert: None,
            client_key: None,
            request_timeout: DEFAULT_REST_REQUEST_TIMEOUT,
        }
    }
}

/// `[iceberg.glue]`: AWS Glue Data Catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GlueCatalogConfig {
    /// AWS region (defaults to the AWS SDK's region chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Glue catalog id (the AWS account id) when it is not the caller's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_id: Option<String>,
    /// Endpoint override, for Glue-compatible services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// AWS profile (from `~/.aws/config`) for Glue's credentials and region; a profile with `role_arn`
    /// assumes that role. Without a profile or static S3 keys in `iceberg.storage`, the standard AWS
    /// chain applies (environment, web identity, ECS/EC2 metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// `[iceberg.nessie]`: Project Nessie's Iceberg REST catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NessieCatalogConfig {
    /// The branch k2i reads the table on and commits to; it must exist. The table's progress is recorded in
    /// its snapshots on this branch, so each branch is a table of its own to k2i: a restart resumes from the
    /// branch's history, and what is committed here stays invisible on other branches until Nessie merges it.
    pub default_branch: String,
}

/// The default of `iceberg.nessie.default_branch`: Nessie's own default branch.
pub const DEFAULT_NESSIE_BRANCH: &str = "main";

impl Default for NessieCatalogConfig {
    fn default() -> Self {
        Self { default_branch: DEFAULT_NESSIE_BRANCH.to_owned() }
    }
}

impl NessieCatalogConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `[iceberg.s3tables]`: Amazon S3 Tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3TablesCatalogConfig {
    /// ARN of the table bucket (required when `catalog_type = "s3tables"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_bucket_arn: Option<String>,
    /// AWS region (defaults to the region in the ARN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `[errors]`: the policy for records that cannot be decoded or written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorPolicyConfig {
    /// `fail` stops with an error naming the topic, partition and offset; `skip` drops the record and counts
    /// it; `dead-letter` produces the original record to `dead_letter_topic` with the reason in headers.
    pub policy: ErrorPolicy,
    /// Topic for `policy = "dead-letter"` (required then). It must exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
}

/// Bad-record policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop ingesting and exit with an error naming the record.
    #[default]
    Fail,
    /// Drop the record and count it in metrics.
    Skip,
    /// Send the original record to the dead-letter topic.
    DeadLetter,
}

/// `[transaction_log]`: the local intent/commit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionLogConfig {
    /// Directory of the log files. Losing it never breaks exactly-once (the table is the truth); it can only
    /// leave orphan data files for maintenance to remove. One directory per running instance.
    pub log_dir: PathBuf,
    /// `always` fsyncs every record before going on (safe, the default); `interval` fsyncs at most every
    /// `fsync_interval` (a record lost to a power cut can only leave orphan files), except the record of each
    /// commit attempt, which is always fsynced before the attempt is sent.
    pub durability: TxlogDurability,
    /// With `durability = "interval"`: the longest time between two fsyncs.
    pub fsync_interval: HumanDuration,
}

impl Default for TransactionLogConfig {
    fn default() -> Self {
        Self {
            log_dir: PathBuf::from("./transaction_logs"),
            durability: TxlogDurability::Always,
            fsync_interval: HumanDuration::from_secs(1),
        }
    }
}

/// When transaction-log records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TxlogDurability {
    /// fsync every record.
    Always,
    /// fsync at most every `fsync_interval`.
    Interval,
}

/// `[monitoring]`: HTTP endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Address the HTTP servers bind to. Loopback by default; use `0.0.0.0` to expose them.
    pub listen_address: IpAddr,
    /// Port of `/metrics` (Prometheus). May equal `health_port` to serve everything on one port.
    #[schemars(range(min = 1))]
    pub metrics_port: u16,
    /// Port of `/healthz`, `/readyz`, `/health` and `/status`.
    #[schemars(range(min = 1))]
    pub health_port: u16,
    /// `/readyz` turns 503 (`commits stalled`) when data has waited this many `buffer.flush_interval`s
    /// without a commit (a hung catalog, a stuck flush), and 200 again at the next commit.
    #[schemars(range(min = 1))]
    pub stall_flush_intervals: u32,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            metrics_port: 9090,
            health_port: 8080,
            stall_flush_intervals: 10,
        }
    }
}

/// `[rpc]`: the local read-state RPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// Serve the read-state RPC (docs/rpc.md).
    pub enabled: bool,
    /// Path of the Unix socket (created mode 0600; a stale socket file is replaced).
    pub socket_path: PathBuf,
    /// A request frame must arrive complete within this many milliseconds once it has begun (`0`: no limit);
    /// an idle connection is closed after `scan_ttl_seconds`.
    pub read_timeout_ms: u64,
    /// Scans open at once across all connections; more are refused with `too_many_scans`.
    pub max_concurrent_scans: NonZeroU32,
    /// A scan not ended by its client is ended this many seconds after it began; a reader that does not take
    /// its answer within this long loses the connection; idle connections close after it.
    pub scan_ttl_seconds: NonZeroU32,
    /// The largest frame the server sends or accepts; hot rows are streamed in frames up to this size.
    pub max_frame_bytes: NonZeroU32,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            socket_path: PathBuf::from("./k2i.sock"),
            read_timeout_ms: 1000,
            max_concurrent_scans: NonZeroU32::new(64).expect("64 is not zero"),
            scan_ttl_seconds: NonZeroU32::new(300).expect("300 is not zero"),
            max_frame_bytes: NonZeroU32::new(64 * 1024 * 1024).expect("64 MiB is not zero"),
        }
    }
}

/// `[maintenance]`: table maintenance scheduled inside the ingest process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run maintenance on a schedule while ingesting.
    pub enabled: bool,
    /// How often compaction runs.
    pub compaction_interval: HumanDuration,
    /// Compaction rewrites partitions holding more than this many small files.
    pub compaction_min_files: NonZeroU32,
    /// How often snapshot expiry runs.
    pub expire_snapshots_interval: HumanDuration,
    /// Snapshots older than this are expired …
    pub snapshot_max_age: HumanDuration,
    /// … but at least this many recent snapshots are kept.
    pub retain_last_snapshots: NonZeroU32,
    /// How often orphan-file removal runs.
    pub remove_orphans_interval: HumanDuration,
    /// Files unreferenced by any snapshot are removed only when older than this (protects in-flight writes).
    pub orphan_min_age: HumanDuration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            compaction_interval: HumanDuration::from_secs(3600),
            compaction_min_files: NonZeroU32::new(10).expect("10 is not zero"),
            expire_snapshots_interval: HumanDuration::from_secs(3600),
            snapshot_max_age: HumanDuration::from_secs(7 * 24 * 3600),
            retain_last_snapshots: NonZeroU32::new(10).expect("10 is not zero"),
            remove_orphans_interval: HumanDuration::from_secs(24 * 3600),
            orphan_min_age: HumanDuration::from_secs(3 * 24 * 3600),
        }
    }
}

impl KafkaConfig {
    /// The topics to ingest, whether given as `topic` or `topics`.
    pub fn topic_list(&self) -> Vec<&str> {
        self.topic.iter().map(String::as_str).chain(self.topics.iter().map(String::as_str)).collect()
    }
}
