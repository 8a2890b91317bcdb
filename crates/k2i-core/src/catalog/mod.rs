//! Opening the configured Iceberg catalog and the one table k2i writes: created with the initial schema if
//! missing, evolved additively when records bring new fields.
//!
//! `sql` is the default: a JDBC-layout catalog in an embedded SQLite file (`<warehouse>/catalog.db`) or in
//! Postgres, readable by pyiceberg's `SqlCatalog` and Java's `JdbcCatalog`. `rest` speaks the Iceberg REST
//! protocol with a bearer token, OAuth2 client credentials and extra headers. `glue` is the AWS Glue Data
//! Catalog, `s3tables` Amazon S3 Tables. Every catalog writes through [`crate::storage`], so the warehouse
//! may be local or on S3, GCS or Azure.

mod aws;
pub mod glue;
pub mod nessie;
mod rest;
pub mod s3tables;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use iceberg::spec::Schema;
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};

use crate::config::{CatalogType, Config, IcebergConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::Ops;
use crate::schema::Addition;

/// The catalog name used by the SQL catalog when `iceberg.sql.catalog_name` is not set.
pub const DEFAULT_SQL_CATALOG_NAME: &str = "k2i";

/// The catalog and the table identity k2i writes to.
#[derive(Clone)]
pub struct TableRef {
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// `namespace.table`.
    pub ident: TableIdent,
    /// Where the catalog is, for error messages (URIs without credentials).
    pub location: String,
    /// Health and metrics: catalog reachability and retries are reported here.
    pub ops: Arc<Ops>,
}

impl TableRef {
    /// Wraps an iceberg error with the table and catalog named.
    pub fn error(&self, message: &str, e: iceberg::Error) -> Error {
        Error::iceberg(message.to_owned(), e).with("table", self.table_name()).with("catalog", &self.location)
    }

    /// `namespace.table`.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.ident.namespace().to_url_string().replace('\u{1f}', "."), self.ident.name())
    }

    /// Loads the table.
    pub async fn load(&self) -> Result<Table> {
        retry("load table", &self.ops, || async {
            self.catalog.load_table(&self.ident).await.map_err(|e| self.error("cannot load table", e))
        })
        .await
    }
}

/// Turns `./warehouse` or `/abs/warehouse` into `file:///abs/warehouse`; URLs pass unchanged.
pub fn warehouse_url(path: &str) -> Result<String> {
    if path.contains("://") {
        return Ok(path.trim_end_matches('/').to_owned());
    }
    let dir = Path::new(path);
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::new(ErrorKind::Config, "cannot create the warehouse directory").with("path", path).source(e)
    })?;
    let absolute = dir.canonicalize().map_err(|e| {
        Error::new(ErrorKind::Config, "cannot resolve the warehouse directory").with("path", path).source(e)
    })?;
    Ok(format!("file://{}", absolute.display()))
}

/// Opens the configured catalog.
pub async fn open(config: &Config, ops: Arc<Ops>) -> Result<TableRef> {
    let ice = &config.iceberg;
    let storage = crate::storage::properties(ice)?;
    let (catalog, location): (Arc<dyn Catalog>, String) = match ice.catalog_type {
        CatalogType::Sql => open_sql(ice, storage).await?,
        CatalogType::Rest => rest::open(ice, storage).await?,
        CatalogType::Glue => open_glue(ice, storage).await?,
        CatalogType::S3tables => s3tables::open(ice, storage).await?,
        CatalogType::Nessie => nessie::open(ice, storage).await?,
    };
    let namespace = NamespaceIdent::from_strs(ice.database_name.split('.')).map_err(|e| {
        Error::new(ErrorKind::Config, "invalid namespace").with("database_name", &ice.database_name).source(e)
    })?;
    Ok(TableRef { catalog, ident: TableIdent::new(namespace, ice.table_name.clone()), location, ops })
}

/// Whether the catalog is a server that may still apply a commit a dead process sent (REST, Glue, the SQL
/// catalog on Postgres), rather than an embedded database whose commit ended with the process (SQLite).
pub fn is_remote(ice: &IcebergConfig) -> bool {
    match ice.catalog_type {
        CatalogType::Sql => {
            ice.sql.uri.as_ref().is_some_and(|uri| uri.expose().is_ok_and(|u| !u.starts_with("sqlite:")))
        }
        CatalogType::Rest | CatalogType::Glue | CatalogType::S3tables | CatalogType::Nessie => true,
    }
}

/// The JDBC-layout catalog in SQLite or Postgres; its warehouse may be local or on an object store.
async fn open_sql(ice: &IcebergConfig, props: HashMap<String, String>) -> Result<(Arc<dyn Catalog>, String)> {
    // Only the SQL catalog uses warehouse_path itself (a REST catalog owns its warehouse), so only it
    // creates a local directory.
    let warehouse = warehouse_url(&ice.warehouse_path)?;
    crate::storage::check_location("iceberg.warehouse_path", &warehouse)?;
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    let uri = match &ice.sql.uri {
        Some(uri) => uri.expose()?.to_owned(),
        None => match warehouse.strip_prefix("file://") {
            Some(dir) => format!("sqlite:{dir}/catalog.db"),
            None => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "iceberg.sql.uri is required when the warehouse is not a local directory",
                )
                .with("warehouse", &warehouse));
            }
        },
    };
    let is_sqlite = uri.starts_with("sqlite:");
    // SQLite must create the file on first start; sqlx only does that with mode=rwc.
    let uri = if is_sqlite && !uri.contains("mode=") {
        format!("{uri}{}mode=rwc", if uri.contains('?') { "&" } else { "?" })
    } else {
        uri
    };
    let location = redact_url(&uri);
    let name = ice.sql.catalog_name.clone().unwrap_or_else(|| DEFAULT_SQL_CATALOG_NAME.to_owned());
    let catalog = SqlCatalogBuilder::default()
        .uri(uri)
        .warehouse_location(warehouse)
        .sql_bind_style(if is_sqlite { SqlBindStyle::QMark } else { SqlBindStyle::DollarNumeric })
        .with_storage_factory(crate::storage::factory())
        .load(name, props)
        .await
        .map_err(|e| Error::iceberg("cannot open the SQL catalog", e).with("catalog", &location))?;
    Ok((Arc::new(catalog), location))
}

/// The AWS Glue Data Catalog ([`glue`]).
async fn open_glue(ice: &IcebergConfig, props: HashMap<String, String>) -> Result<(Arc<dyn Catalog>, String)> {
    let warehouse = warehouse_url(&ice.warehouse_path)?;
    crate::storage::check_location("iceberg.warehouse_path", &warehouse)?;
    let location = match (&ice.glue.endpoint, &ice.glue.region) {
        (Some(endpoint), _) => format!("glue at {endpoint}"),
        (None, Some(region)) => format!("glue in {region}"),
        (None, None) => "glue".to_owned(),
    };
    let catalog = glue::GlueCatalog::open(ice, warehouse, props).await.map_err(|e| e.with("catalog", &location))?;
    Ok((Arc::new(catalog), location))
}

/// Removes the password from a database URL.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Loads the table, creating its namespace and itself (with `schema`) if missing.
pub async fn ensure_table(table: &TableRef, initial: impl AsyncFnOnce() -> Result<Schema>) -> Result<Table> {
    let namespace = table.ident.namespace();
    let exists = retry("check namespace", &table.ops, || async {
        table.catalog.namespace_exists(namespace).await.map_err(|e| table.error("cannot check the namespace", e))
    })
    .await?;
    if !exists {
        match table.catalog.create_namespace(namespace, HashMap::new()).await {
            Ok(_) => tracing::info!(namespace = %namespace.to_url_string(), "created namespace"),
            // Another instance may have created it meanwhile; catalogs report that race differently (the SQL
            // catalog as a unique-constraint error), so look again rather than match the error.
            Err(e) => {
                if !table.catalog.namespace_exists(namespace).await.unwrap_or(false) {
                    return Err(table.error("cannot create the namespace", e));
                }
            }
        }
    }
    if retry("check table", &table.ops, || async {
        table.catalog.table_exists(&table.ident).await.map_err(|e| table.error("cannot check the table", e))
    })
    .await?
    {
        return table.load().await;
    }
    let schema = initial().await?;
    let creation = TableCreation::builder()
        .name(table.ident.name().to_owned())
        .schema(schema)
        .properties(HashMap::from([
            ("write.parquet.compression-codec".to_owned(), "zstd".to_owned()),
            (crate::progress::PROP_CREATED_BY.to_owned(), format!("k2i {}", env!("CARGO_PKG_VERSION"))),
        ]))
        .build();
    match table.catalog.create_table(namespace, creation).await {
        Ok(t) => {
            tracing::info!(table = %table.table_name(), catalog = %table.location, "created table");
            Ok(t)
        }
        // As above: another instance may have won the race.
        Err(e) => match table.catalog.table_exists(&table.ident).await {
            Ok(true) => table.load().await,
            _ => Err(table.error("cannot create the table", e)),
        },
    }
}

/// Adds optional columns to the table and returns the reloaded table. Columns that meanwhile exist (added
/// by another instance) are left alone.
pub async fn add_columns(table: &TableRef, additions: &[Addition]) -> Result<Table> {
    let change = crate::schema::evolve::Change { additions: additions.to_vec(), ..Default::default() };
    change_schema(table, &change).await
}

/// Applies a writer schema's compatible change: additions (optional columns) and promotions (int → long,
/// float → double, wider decimals), in one schema update that keeps every field id. What the table already
/// has (another instance applied it first) is left out; nothing left means no commit.
///
/// iceberg-rust's schema update can only add and delete columns, so a promotion is applied by handing its
/// update a base whose current schema already holds the wider types (same schema id): the update then
/// carries them into the new schema it adds, and the catalog's requirement that the current schema id is
/// still the base's makes a concurrent schema change a conflict, retried on the new schema.
pub async fn change_schema(table: &TableRef, change: &crate::schema::evolve::Change) -> Result<Table> {
    retry("change the table schema", &table.ops, || async {
        let current = table.load().await?;
        let schema = current.metadata().current_schema();
        let promotions: Vec<crate::schema::evolve::Promotion> = change
            .promotions
            .iter()
            .filter(|p| {
                schema
                    .field_by_id(p.field_id)
                    .is_some_and(|f| *f.field_type != iceberg::spec::Type::Primitive(p.to.clone()))
            })
            .cloned()
            .collect();
        let missing: Vec<&Addition> =
            change.additions.iter().filter(|a| schema.field_by_name(&a.full_name()).is_none()).collect();
        if missing.is_empty() && promotions.is_empty() {
            return Ok(current);
        }
        let base = if promotions.is_empty() { current.clone() } else { promoted_base(&current, &promotions)? };
        let tx = Transaction::new(&base);
        let mut action = tx.update_schema();
        for addition in &missing {
            let column = match &addition.parent {
                Some(parent) => AddColumn::builder()
                    .parent(parent.clone())
                    .name(addition.name.clone())
                    .field_type(addition.field_type.clone())
                    .build(),
                None => AddColumn::optional(&addition.name, addition.field_type.clone()),
            };
            action = action.add_column(column);
        }
        let tx = action.apply(tx).map_err(|e| table.error("cannot prepare the schema update", e))?;
        let catalog = crate::commit::FencingCatalog::new(table.catalog.clone(), base, table.ops.clone());
        let updated = tx.commit(&catalog).await.map_err(|e| {
            if crate::commit::FencingCatalog::is_stop(&e) || e.kind() == iceberg::ErrorKind::CatalogCommitConflicts {
                Error::new(ErrorKind::Conflict, "another writer changed the table meanwhile")
                    .with("table", table.table_name())
            } else {
                table.error("cannot update the table schema", e)
            }
        })?;
        tracing::info!(
            table = %table.table_name(),
            added = %missing.iter().map(|a| a.full_name()).collect::<Vec<_>>().join(", "),
            widened = %promotions.iter().map(|p| format!("{} to {}", p.name, p.to)).collect::<Vec<_>>().join(", "),
            schema_id = updated.metadata().current_schema_id(),
            "changed the table schema"
        );
        Ok(updated)
    })
    .await
}

/// `table` with its current schema's promoted columns widened, under the same schema id.
fn promoted_base(table: &Table, promotions: &[crate::schema::evolve::Promotion]) -> Result<Table> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        Error::new(ErrorKind::Internal, format!("cannot prepare a column promotion: {what}: {e}"))
    };
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    let promoted = iceberg::spec::Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(crate::schema::evolve::promote(schema.as_struct(), promotions).fields().to_vec())
        .with_identifier_field_ids(schema.identifier_field_ids())
        .build()
        .map_err(|e| internal("schema", &e))?;
    let mut json = serde_json::to_value(metadata).map_err(|e| internal("metadata", &e))?;
    let promoted_json = serde_json::to_value(&promoted).map_err(|e| internal("schema", &e))?;
    let schemas = json
        .get_mut("schemas")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or_else(|| internal("metadata", &"no schemas"))?;
    for entry in schemas.iter_mut() {
        if entry.get("schema-id").and_then(serde_json::Value::as_i64) == Some(i64::from(schema.schema_id())) {
            *entry = promoted_json.clone();
        }
    }
    let metadata: iceberg::spec::TableMetadata = serde_json::from_value(json).map_err(|e| internal("metadata", &e))?;
    let mut builder = Table::builder()
        .identifier(table.identifier().clone())
        .metadata(metadata)
        .file_io(table.file_io().clone())
        .runtime(iceberg::Runtime::try_current().map_err(|e| internal("runtime", &e))?);
    if let Some(location) = table.metadata_location() {
        builder = builder.metadata_location(location);
    }
    builder.build().map_err(|e| internal("table", &e))
}

/// How long one catalog call may take before it counts as failed (iceberg-catalog-rest sets no request
/// timeout of its own: a hung server would stall the ingest silently).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries a catalog operation with exponential backoff (0.2 s doubling to 10 s, 8 attempts, about 23 s in
/// all) while the error is retryable, and reports the catalog's health: unavailable (not ready) from the first
/// failure until an operation succeeds again. Every attempt has a deadline of [`CALL_TIMEOUT`]; an attempt
/// that misses it is a transient error (for a commit: an unknown outcome, which the next attempt's fencing
/// check resolves by finding the commit id, or not).
pub async fn retry<T, F, Fut>(what: &str, ops: &Ops, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    const ATTEMPTS: u32 = 8;
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, op()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::new(ErrorKind::Transient, "the catalog did not answer in time")
                .with("operation", what)
                .with("timeout_s", CALL_TIMEOUT.as_secs())),
        };
        match outcome {
            Ok(v) => {
                if attempt > 1 {
                    tracing::info!(operation = what, attempt, "catalog operation succeeded after retrying");
                }
                ops.catalog(true, "reachable");
                return Ok(v);
            }
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                ops.catalog(false, e.with_causes());
                ops.metrics.catalog_retries.with_label_values(&[what]).inc();
                tracing::warn!(operation = what, attempt, error = %e.with_causes(), "catalog operation failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
            Err(e) => {
                if e.is_retryable() {
                    ops.catalog(false, e.with_causes());
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_lose_their_password() {
        assert_eq!(redact_url("postgres://k2i:s3cret@db:5432/cat"), "postgres://k2i:***@db:5432/cat");
        assert_eq!(redact_url("sqlite:/tmp/c.db?mode=rwc"), "sqlite:/tmp/c.db?mode=rwc");
    }

    #[test]
    fn local_warehouses_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        let url = warehouse_url(path.to_str().unwrap()).unwrap();
        assert!(url.starts_with("file:///") && url.ends_with("/w"), "{url}");
        assert!(path.is_dir());
        assert_eq!(warehouse_url("s3://bucket/w/").unwrap(), "s3://bucket/w");
    }
}
