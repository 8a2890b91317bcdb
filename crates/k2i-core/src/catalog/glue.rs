//! The AWS Glue Data Catalog as an Iceberg catalog, the way Iceberg's own GlueCatalog keeps tables: a Glue
//! database per namespace, a Glue table of type `EXTERNAL_TABLE` with the parameters `table_type = ICEBERG`,
//! `metadata_location` and `previous_metadata_location`, and the current schema as the storage descriptor's
//! columns (for Athena and the console; readers take the schema from the metadata file).
//!
//! A commit writes the new metadata file, then swaps the table's `metadata_location` with `UpdateTable`
//! carrying the `VersionId` the commit was based on: Glue refuses the swap
//! (`ConcurrentModificationException`) when another writer updated the table meanwhile, so a concurrent
//! commit is a conflict (retried on the new base by the commit path), never overwritten. The metadata file of
//! a refused swap is deleted. `UpdateTable` skips Glue's table-version archive (one version per commit would
//! soon reach Glue's version quota); Iceberg's metadata log keeps the history.
//!
//! iceberg-rust's own Glue crate cannot hold k2i's tables (it refuses `timestamptz` columns), hence this one.

use std::collections::HashMap;
use std::fmt::Debug;
use std::str::FromStr;

use async_trait::async_trait;
use aws_sdk_glue::config::http::HttpResponse;
use aws_sdk_glue::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Column, DatabaseInput, StorageDescriptor, TableInput};
use iceberg::io::{FileIO, FileIOBuilder};
use iceberg::spec::{PrimitiveType, TableMetadata, TableMetadataBuilder, Type};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error as IceError, ErrorKind as IceKind, MetadataLocation, Namespace, NamespaceIdent, Result as IceResult,
    TableCommit, TableCreation, TableIdent,
};

use crate::config::IcebergConfig;
use crate::error::Result;

const METADATA_LOCATION: &str = "metadata_location";
const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";
const TABLE_TYPE: &str = "table_type";
const ICEBERG: &str = "ICEBERG";
const EXTERNAL_TABLE: &str = "EXTERNAL_TABLE";

/// The Glue catalog.
pub struct GlueCatalog {
    client: aws_sdk_glue::Client,
    catalog_id: Option<String>,
    warehouse: String,
    file_io: FileIO,
}

impl Debug for GlueCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlueCatalog").field("catalog_id", &self.catalog_id).field("warehouse", &self.warehouse).finish()
    }
}

impl GlueCatalog {
    /// Opens the catalog of `[iceberg.glue]` with the warehouse `warehouse` (an object-store URL) and the
    /// FileIO properties `storage`. Credentials: the static S3 keys of `storage` when set (one identity for
    /// Glue and S3), else the profile of `iceberg.glue.profile`, else the standard AWS chain.
    pub async fn open(ice: &IcebergConfig, warehouse: String, storage: HashMap<String, String>) -> Result<Self> {
        let glue = &ice.glue;
        let sdk = super::aws::sdk_config(
            glue.endpoint.as_deref(),
            glue.region.as_deref(),
            glue.profile.as_deref(),
            &storage,
            "iceberg.glue.region",
        )
        .await?;
        let file_io = FileIOBuilder::new(crate::storage::factory()).with_props(storage).build();
        Ok(Self { client: aws_sdk_glue::Client::new(&sdk), catalog_id: glue.catalog_id.clone(), warehouse, file_io })
    }

    /// Loads the table, the Glue `VersionId` a swap must be based on, and the Glue table's parameters (other
    /// tools' are kept on every commit).
    async fn load(&self, ident: &TableIdent) -> IceResult<(Table, Option<String>, HashMap<String, String>)> {
        let database = database(ident.namespace())?;
        let output = self
            .client
            .get_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&database)
            .name(ident.name())
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("EntityNotFoundException") => IceError::new(IceKind::TableNotFound, format!("no table {ident}")),
                _ => glue_error("GetTable", e),
            })?;
        let glue_table =
            output.table().ok_or_else(|| IceError::new(IceKind::TableNotFound, format!("no table {ident}")))?;
        let parameters = glue_table.parameters();
        let is_iceberg = parameters.and_then(|p| p.get(TABLE_TYPE)).is_some_and(|t| t.eq_ignore_ascii_case(ICEBERG));
        let location = parameters.and_then(|p| p.get(METADATA_LOCATION));
        let location = match (is_iceberg, location) {
            (true, Some(location)) => location.clone(),
            _ => {
                return Err(IceError::new(
                    IceKind::DataInvalid,
                    format!(
                        "the Glue table {ident} is not an Iceberg table (no table_type = ICEBERG and metadata_location)"
                    ),
                ));
            }
        };
        let metadata = TableMetadata::read_from(&self.file_io, &location).await?;
        let table = self.table(ident.clone(), location, metadata)?;
        Ok((table, glue_table.version_id().map(str::to_owned), parameters.cloned().unwrap_or_default()))
    }

    fn table(&self, ident: TableIdent, location: String, metadata: TableMetadata) -> IceResult<Table> {
        Table::builder()
            .identifier(ident)
            .metadata_location(location)
            .metadata(metadata)
            .file_io(self.file_io.clone())
            .runtime(iceberg::Runtime::try_current()?)
            .build()
    }

    /// Where a new table goes: the database's location if it has one, else `<warehouse>/<database>.db`
    /// (Iceberg's GlueCatalog layout), then `/<table>`.
    async fn default_location(&self, namespace: &NamespaceIdent, table: &str) -> IceResult<String> {
        let database = database(namespace)?;
        let ns = self.get_namespace(namespace).await?;
        let base = match ns.properties().get("location_uri") {
            Some(location) => location.trim_end_matches('/').to_owned(),
            None => format!("{}/{database}.db", self.warehouse.trim_end_matches('/')),
        };
        Ok(format!("{base}/{table}"))
    }
}

/// The SDK's own retries off for one call. The SDK retries a 5xx or a lost answer with the same request: a
/// swap that had landed would then come back as `ConcurrentModificationException` (a create as
/// `AlreadyExistsException`), and k2i would delete the metadata file the table now points to. k2i's commit
/// path retries instead, after checking whether the commit landed.
fn single_attempt() -> aws_sdk_glue::config::Builder {
    aws_sdk_glue::config::Builder::default().retry_config(aws_sdk_glue::config::retry::RetryConfig::disabled())
}

/// The Glue database of a namespace: Glue has one level.
fn database(namespace: &NamespaceIdent) -> IceResult<String> {
    match namespace.as_ref().as_slice() {
        [name] if !name.is_empty() => Ok(name.clone()),
        _ => Err(IceError::new(
            IceKind::DataInvalid,
            format!("Glue has one namespace level; `{}` cannot be a Glue database", namespace.join(".")),
        )),
    }
}

/// An SDK failure as an iceberg error: throttling, 5xx answers, timeouts and connection failures are
/// retryable; everything else (access denied, invalid input) is not. Glue's error code and message are kept;
/// no credential is part of them.
fn glue_error<E>(operation: &str, e: SdkError<E, HttpResponse>) -> IceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_owned);
    let throttled = code.as_deref().is_some_and(|c| {
        matches!(
            c,
            "ThrottlingException"
                | "TooManyRequestsException"
                | "InternalServiceException"
                | "OperationTimeoutException"
        )
    });
    let transient = matches!(&e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_))
        || throttled
        || status.is_some_and(|s| s >= 500);
    let detail = match (&code, e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        _ => DisplayErrorContext(&e).to_string(),
    };
    let kind = if transient { IceKind::Unexpected } else { IceKind::PreconditionFailed };
    IceError::new(kind, format!("Glue {operation} failed: {detail}")).with_retryable(transient)
}

/// The Glue (Hive) type of an Iceberg type, as Iceberg's GlueCatalog writes it.
fn glue_type(t: &Type) -> String {
    match t {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".to_owned(),
            PrimitiveType::Int => "int".to_owned(),
            PrimitiveType::Long => "bigint".to_owned(),
            PrimitiveType::Float => "float".to_owned(),
            PrimitiveType::Double => "double".to_owned(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PrimitiveType::Date => "date".to_owned(),
            PrimitiveType::Time | PrimitiveType::String | PrimitiveType::Uuid => "string".to_owned(),
            PrimitiveType::Timestamp
            | PrimitiveType::Timestamptz
            | PrimitiveType::TimestampNs
            | PrimitiveType::TimestamptzNs => "timestamp".to_owned(),
            PrimitiveType::Binary | PrimitiveType::Fixed(_) => "binary".to_owned(),
        },
        Type::Struct(s) => {
            let fields: Vec<String> =
                s.fields().iter().map(|f| format!("{}:{}", f.name, glue_type(&f.field_type))).collect();
            format!("struct<{}>", fields.join(","))
        }
        Type::List(l) => format!("array<{}>", glue_type(&l.element_field.field_type)),
        Type::Map(m) => format!("map<{},{}>", glue_type(&m.key_field.field_type), glue_type(&m.value_field.field_type)),
    }
}

/// The Glue table input for `metadata` at `location`.
fn table_input(
    name: &str,
    metadata: &TableMetadata,
    location: &str,
    previous: Option<&str>,
    mut parameters: HashMap<String, String>,
) -> IceResult<TableInput> {
    let columns = metadata
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            Column::builder()
                .name(&f.name)
                .r#type(glue_type(&f.field_type))
                .set_comment(f.doc.clone())
                .parameters("iceberg.field.id", f.id.to_string())
                .parameters("iceberg.field.optional", (!f.required).to_string())
                .build()
                .map_err(|e| IceError::new(IceKind::DataInvalid, format!("cannot describe column {}: {e}", f.name)))
        })
        .collect::<IceResult<Vec<Column>>>()?;
    // `TableInput` replaces every parameter: keep the ones other tools set.
    parameters.insert(TABLE_TYPE.to_owned(), ICEBERG.to_owned());
    parameters.insert(METADATA_LOCATION.to_owned(), location.to_owned());
    if let Some(previous) = previous {
        parameters.insert(PREVIOUS_METADATA_LOCATION.to_owned(), previous.to_owned());
    }
    TableInput::builder()
        .name(name)
        .table_type(EXTERNAL_TABLE)
        .set_parameters(Some(parameters))
        .storage_descriptor(
            StorageDescriptor::builder().set_columns(Some(columns)).location(metadata.location()).build(),
        )
        .build()
        .map_err(|e| IceError::new(IceKind::DataInvalid, format!("cannot describe the Glue table {name}: {e}")))
}

#[async_trait]
impl Catalog for GlueCatalog {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> IceResult<Vec<NamespaceIdent>> {
        if parent.is_some() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut pages = self.client.get_databases().set_catalog_id(self.catalog_id.clone()).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| glue_error("GetDatabases", e))?;
            out.extend(page.database_list().iter().map(|d| NamespaceIdent::new(d.name().to_owned())));
        }
        Ok(out)
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IceResult<Namespace> {
        let name = database(namespace)?;
        let mut input = DatabaseInput::builder().name(&name);
        for (key, value) in &properties {
            input = match key.as_str() {
                "location_uri" | "location" => input.location_uri(value),
                "description" => input.description(value),
                _ => input.parameters(key, value),
            };
        }
        let input = input.build().map_err(|e| IceError::new(IceKind::DataInvalid, format!("database {name}: {e}")))?;
        self.client
            .create_database()
            .set_catalog_id(self.catalog_id.clone())
            .database_input(input)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("AlreadyExistsException") => {
                    IceError::new(IceKind::NamespaceAlreadyExists, format!("database {name} exists"))
                }
                _ => glue_error("CreateDatabase", e),
            })?;
        Ok(Namespace::with_properties(namespace.clone(), properties))
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> IceResult<Namespace> {
        let name = database(namespace)?;
        let output =
            self.client.get_database().set_catalog_id(self.catalog_id.clone()).name(&name).send().await.map_err(
                |e| match e.code() {
                    Some("EntityNotFoundException") => {
                        IceError::new(IceKind::NamespaceNotFound, format!("no database {name}"))
                    }
                    _ => glue_error("GetDatabase", e),
                },
            )?;
        let mut properties = HashMap::new();
        if let Some(db) = output.database() {
            properties.extend(db.parameters().cloned().unwrap_or_default());
            if let Some(location) = db.location_uri() {
                properties.insert("location_uri".to_owned(), location.to_owned());
            }
            if let Some(description) = db.description() {
                properties.insert("description".to_owned(), description.to_owned());
            }
        }
        Ok(Namespace::with_properties(namespace.clone(), properties))
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> IceResult<bool> {
        match self.get_namespace(namespace).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == IceKind::NamespaceNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn update_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> IceResult<()> {
        Err(IceError::new(IceKind::FeatureUnsupported, "k2i does not update Glue databases"))
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> IceResult<()> {
        let name = database(namespace)?;
        self.client
            .delete_database()
            .set_catalog_id(self.catalog_id.clone())
            .name(&name)
            .send()
            .await
            .map_err(|e| glue_error("DeleteDatabase", e))?;
        Ok(())
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> IceResult<Vec<TableIdent>> {
        let name = database(namespace)?;
        let mut out = Vec::new();
        let mut pages = self
            .client
            .get_tables()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| glue_error("GetTables", e))?;
            for table in page.table_list() {
                let iceberg =
                    table.parameters().and_then(|p| p.get(TABLE_TYPE)).is_some_and(|t| t.eq_ignore_ascii_case(ICEBERG));
                if iceberg {
                    out.push(TableIdent::new(namespace.clone(), table.name().to_owned()));
                }
            }
        }
        Ok(out)
    }

    async fn create_table(&self, namespace: &NamespaceIdent, mut creation: TableCreation) -> IceResult<Table> {
        let name = database(namespace)?;
        let location = match &creation.location {
            Some(location) => location.clone(),
            None => self.default_location(namespace, &creation.name).await?,
        };
        creation.location = Some(location.clone());
        let table_name = creation.name.clone();
        let metadata = TableMetadataBuilder::from_table_creation(creation)?.build()?.metadata;
        let new_location = MetadataLocation::new_with_metadata(location, &metadata);
        metadata.write_to(&self.file_io, &new_location).await?;
        let metadata_location = new_location.to_string();
        let input = table_input(&table_name, &metadata, &metadata_location, None, HashMap::new())?;
        let created = self
            .client
            .create_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&name)
            .table_input(input)
            .customize()
            .config_override(single_attempt())
            .send()
            .await;
        if let Err(e) = created {
            // The metadata file is no table's: remove it (best effort; an orphan metadata file harms nobody).
            let _ = self.file_io.delete(&metadata_location).await;
            return Err(match e.code() {
                Some("AlreadyExistsException") => {
                    IceError::new(IceKind::TableAlreadyExists, format!("table {name}.{table_name} exists"))
                }
                Some("EntityNotFoundException") => {
                    IceError::new(IceKind::NamespaceNotFound, format!("no database {name}"))
                }
                _ => glue_error("CreateTable", e),
            });
        }
        self.table(TableIdent::new(namespace.clone(), table_name), metadata_location, metadata)
    }

    async fn load_table(&self, table: &TableIdent) -> IceResult<Table> {
        Ok(self.load(table).await?.0)
    }

    async fn drop_table(&self, table: &TableIdent) -> IceResult<()> {
        let name = database(table.namespace())?;
        self.client
            .delete_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&name)
            .name(table.name())
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("EntityNotFoundException") => IceError::new(IceKind::TableNotFound, format!("no table {table}")),
                _ => glue_error("DeleteTable", e),
            })?;
        Ok(())
    }

    async fn purge_table(&self, table: &TableIdent) -> IceResult<()> {
        self.drop_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> IceResult<bool> {
        match self.load(table).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == IceKind::TableNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> IceResult<()> {
        Err(IceError::new(IceKind::FeatureUnsupported, "k2i does not rename Glue tables"))
    }

    async fn register_table(&self, _table: &TableIdent, _metadata_location: String) -> IceResult<Table> {
        Err(IceError::new(IceKind::FeatureUnsupported, "k2i does not register Glue tables"))
    }

    async fn update_table(&self, commit: TableCommit) -> IceResult<Table> {
        let ident = commit.identifier().clone();
        let name = database(ident.namespace())?;
        let (current, version, parameters) = self.load(&ident).await?;
        let Some(version) = version else {
            return Err(IceError::new(
                IceKind::DataInvalid,
                format!("the Glue table {ident} has no VersionId: k2i commits only with Glue's compare-and-swap"),
            ));
        };
        let previous = current.metadata_location_result()?.to_owned();
        let staged = commit.apply(current)?;
        let location = staged.metadata_location_result()?.to_owned();
        staged.metadata().write_to(&self.file_io, &MetadataLocation::from_str(&location)?).await?;
        let input = table_input(ident.name(), staged.metadata(), &location, Some(&previous), parameters)?;
        let swapped = self
            .client
            .update_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&name)
            .skip_archive(true)
            .version_id(version)
            .table_input(input)
            .customize()
            .config_override(single_attempt())
            .send()
            .await;
        match swapped {
            Ok(_) => Ok(staged),
            Err(e) => {
                let refused = matches!(e.code(), Some("ConcurrentModificationException" | "EntityNotFoundException"));
                if refused {
                    // Refused for sure (the request was sent once, see `single_attempt`): the metadata file is
                    // nobody's. On an unknown outcome it stays: the swap may have happened.
                    let _ = self.file_io.delete(&location).await;
                }
                Err(match e.code() {
                    Some("ConcurrentModificationException") => IceError::new(
                        IceKind::CatalogCommitConflicts,
                        format!("another writer updated the Glue table {ident} meanwhile"),
                    )
                    .with_retryable(true),
                    Some("EntityNotFoundException") => {
                        IceError::new(IceKind::TableNotFound, format!("no table {ident}"))
                    }
                    _ => glue_error("UpdateTable", e),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{ListType, MapType, NestedField, StructType};
    use std::sync::Arc;

    #[test]
    fn iceberg_types_map_to_glue_types() {
        let p = |t| Type::Primitive(t);
        assert_eq!(glue_type(&p(PrimitiveType::Timestamptz)), "timestamp");
        assert_eq!(glue_type(&p(PrimitiveType::Long)), "bigint");
        assert_eq!(glue_type(&p(PrimitiveType::Decimal { precision: 20, scale: 0 })), "decimal(20,0)");
        assert_eq!(glue_type(&p(PrimitiveType::Uuid)), "string");
        let nested = Type::Struct(StructType::new(vec![
            Arc::new(NestedField::optional(1, "lat", p(PrimitiveType::Double))),
            Arc::new(NestedField::optional(
                2,
                "tags",
                Type::List(ListType::new(Arc::new(NestedField::list_element(3, p(PrimitiveType::String), false)))),
            )),
            Arc::new(NestedField::optional(
                4,
                "m",
                Type::Map(MapType::new(
                    Arc::new(NestedField::map_key_element(5, p(PrimitiveType::String))),
                    Arc::new(NestedField::map_value_element(6, p(PrimitiveType::Int), false)),
                )),
            )),
        ]));
        assert_eq!(glue_type(&nested), "struct<lat:double,tags:array<string>,m:map<string,int>>");
    }

    #[test]
    fn glue_has_one_namespace_level() {
        assert_eq!(database(&NamespaceIdent::new("db".to_owned())).unwrap(), "db");
        let two = NamespaceIdent::from_strs(["a", "b"]).unwrap();
        assert!(database(&two).unwrap_err().to_string().contains("one namespace level"));
    }
}
