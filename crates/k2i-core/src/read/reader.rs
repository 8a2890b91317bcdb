//! The reading side, for `k2i read` and `k2i query`: one read-state from a running ingest's socket, its
//! committed files read through the table's own FileIO (any store the catalog uses), and its hot rows, as
//! one set of batches with one schema.
//!
//! The files are read with iceberg's reader at the read-state's snapshot (field ids map old files onto the
//! snapshot's schema, deletes of other engines apply), the read-state's row filter is applied to them, and
//! the hot rows are aligned to the same columns by name (a column the older rows lack reads null).

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{Field, Schema as ArrowSchema, SchemaRef};
use futures::TryStreamExt;
use k2i_rpc::client::{Client, ClientError, filter_batch};
use k2i_rpc::message::{ReadState, ScanBegin};

use crate::catalog::{self, TableRef};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::Ops;
use crate::schema::{COL_OFFSET, COL_PARTITION, COL_TOPIC};

/// One read-state, read.
#[derive(Debug)]
pub struct Fetched {
    /// What the server answered.
    pub state: ReadState,
    /// The rows' schema (committed ∪ hot columns).
    pub schema: SchemaRef,
    /// Committed rows first, then hot rows in LSN order.
    pub batches: Vec<RecordBatch>,
    /// Rows read from committed files.
    pub committed_rows: u64,
    /// Hot rows.
    pub hot_rows: u64,
}

/// A reader of one ingest's read-states (the connection and the catalog stay open between reads).
pub struct Reader {
    config: Config,
    client: Client,
    table: Option<TableRef>,
}

fn rpc(e: ClientError, socket: &std::path::Path) -> Error {
    let kind = match &e {
        ClientError::Server { code, .. } if code == "unknown_table" || code == "invalid_request" => ErrorKind::Config,
        ClientError::Io(_) | ClientError::Closed => ErrorKind::Transient,
        _ => ErrorKind::Io,
    };
    Error::new(kind, "the read-state RPC failed").with("socket", socket.display()).source(e)
}

impl Reader {
    /// Connects to `config.rpc.socket_path`.
    pub async fn connect(config: &Config) -> Result<Reader> {
        let socket = &config.rpc.socket_path;
        let client = Client::connect(socket).await.map_err(|e| {
            Error::new(
                ErrorKind::Transient,
                "cannot connect to the read-state socket (is `k2i ingest` running with rpc.enabled = true?)",
            )
            .with("key", "rpc.socket_path")
            .with("socket", socket.display())
            .source(e)
        })?;
        Ok(Reader { config: config.clone(), client, table: None })
    }

    /// Scans once: the read-state, its committed rows and its hot rows. A connection the server closed
    /// meanwhile (idle longer than `rpc.scan_ttl_seconds`, k2i restarted) is opened again once.
    pub async fn fetch(&mut self, request: ScanBegin) -> Result<Fetched> {
        let socket = self.config.rpc.socket_path.clone();
        let scan = match self.client.scan(request.clone()).await {
            Err(
                ClientError::Io(_)
                | ClientError::Closed
                | ClientError::Frame(k2i_rpc::frame::FrameError::Truncated { .. }),
            ) => {
                self.client = Self::connect(&self.config).await?.client;
                self.client.scan(request.clone()).await
            }
            scan => scan,
        }
        .map_err(|e| rpc(e, &socket))?;
        let committed = self.committed(&scan.state, request.columns.as_deref()).await;
        // The scan ends whatever the files did (its TTL would end it anyway).
        let ended = self.client.end_scan(scan.state.scan_id).await.map_err(|e| rpc(e, &socket));
        let committed = committed?;
        ended?;
        let committed_rows = committed.iter().map(|b| b.num_rows() as u64).sum();
        let hot: Vec<RecordBatch> = scan.hot.into_iter().flat_map(|part| part.batches).collect();
        let hot_rows = hot.iter().map(|b| b.num_rows() as u64).sum();
        let (mut schema, batches) = unify(committed.into_iter().chain(hot).collect())?;
        // No rows: the columns still come from the table's schema (an empty table can be queried).
        if batches.is_empty() {
            schema = self.table_schema(&request.table, request.columns.as_deref()).await?;
        }
        Ok(Fetched { state: scan.state, schema, batches, committed_rows, hot_rows })
    }

    /// The table's current schema as the Arrow columns a read returns (`columns` only, when given).
    async fn table_schema(&mut self, table: &str, columns: Option<&[String]>) -> Result<SchemaRef> {
        let socket = self.config.rpc.socket_path.clone();
        let reply = self.client.schema(table).await.map_err(|e| rpc(e, &socket))?;
        let schema: iceberg::spec::Schema = serde_json::from_value(reply.schema)
            .map_err(|e| Error::new(ErrorKind::Internal, "the server sent a schema that does not parse").source(e))?;
        let arrow = iceberg::arrow::schema_to_arrow_schema(&schema)
            .map_err(|e| Error::new(ErrorKind::Internal, "cannot convert the table schema to Arrow").source(e))?;
        let fields = arrow
            .fields()
            .iter()
            .filter(|f| columns.is_none_or(|cs| cs.iter().any(|c| c == f.name())))
            .map(|f| Field::new(f.name(), f.data_type().clone(), true));
        Ok(Arc::new(ArrowSchema::new(fields.collect::<Vec<_>>())))
    }

    /// The rows of the read-state's committed files, filtered by its row filter.
    async fn committed(&mut self, state: &ReadState, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
        let (Some(snapshot), false) = (state.snapshot_id, state.files.is_empty()) else { return Ok(Vec::new()) };
        if self.table.is_none() {
            self.table = Some(catalog::open(&self.config, Arc::new(Ops::new())).await?);
        }
        let Some(table_ref) = &self.table else { return Ok(Vec::new()) };
        let table = table_ref.load().await?;
        let fail =
            |what: &str, e: iceberg::Error| Error::iceberg(what.to_owned(), e).with("table", table_ref.table_name());
        if table.metadata().snapshot_by_id(snapshot).is_none() {
            return Err(Error::new(
                ErrorKind::Transient,
                "the read-state's snapshot is no longer in the table (expired); read again",
            )
            .with("snapshot_id", snapshot));
        }
        // The filter needs the metadata columns even when the projection leaves them out.
        let mut select: Option<Vec<String>> = columns.map(<[String]>::to_vec);
        if let (Some(select), Some(_)) = (select.as_mut(), &state.filter) {
            for column in [COL_TOPIC, COL_PARTITION, COL_OFFSET] {
                if !select.iter().any(|c| c == column) {
                    select.push(column.to_owned());
                }
            }
        }
        let mut builder = table.scan().snapshot_id(snapshot);
        if let Some(select) = &select {
            builder = builder.select(select.iter());
        }
        let scan = builder.build().map_err(|e| fail("cannot plan the scan of the committed files", e))?;
        let wanted: HashSet<&str> = state.files.iter().map(|f| f.path.as_str()).collect();
        let tasks: Vec<_> = scan
            .plan_files()
            .await
            .map_err(|e| fail("cannot plan the scan of the committed files", e))?
            .try_filter(|task| std::future::ready(wanted.contains(task.data_file_path())))
            .try_collect()
            .await
            .map_err(|e| fail("cannot plan the scan of the committed files", e))?;
        let reader = table.reader_builder().build();
        let stream = reader
            .read(Box::pin(futures::stream::iter(tasks.into_iter().map(Ok))))
            .map_err(|e| fail("cannot read the committed files", e))?
            .stream();
        let batches: Vec<RecordBatch> =
            stream.try_collect().await.map_err(|e| fail("cannot read the committed files", e))?;
        let arrow = |e| Error::new(ErrorKind::Internal, "cannot filter the committed rows").source(e);
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            let batch = match &state.filter {
                Some(filter) => filter_batch(&batch, filter).map_err(arrow)?,
                None => batch,
            };
            let batch = match columns {
                Some(columns) => {
                    let indexes: Vec<usize> = columns.iter().filter_map(|c| batch.schema().index_of(c).ok()).collect();
                    batch.project(&indexes).map_err(arrow)?
                }
                None => batch,
            };
            out.push(batch);
        }
        Ok(out)
    }
}

/// One schema for batches of several: every column by name, in first-seen order, with the type of its last
/// appearance (the newest schema); batches lacking a column read null there.
pub fn unify(batches: Vec<RecordBatch>) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut fields: Vec<Field> = Vec::new();
    for batch in &batches {
        for field in batch.schema().fields() {
            let plain = Field::new(field.name(), field.data_type().clone(), true);
            match fields.iter_mut().find(|f| f.name() == field.name()) {
                Some(known) => *known = plain,
                None => fields.push(plain),
            }
        }
    }
    let schema = Arc::new(ArrowSchema::new(fields));
    let batches = batches.iter().map(|batch| align(batch, &schema)).collect::<Result<_>>()?;
    Ok((schema, batches))
}

/// `batch` with exactly the columns of `schema`, by name: a missing one reads null, one of another type is cast.
pub fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let internal = |e| Error::new(ErrorKind::Internal, "cannot align the rows to one schema").source(e);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        columns.push(match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => column.clone(),
            Some(column) => arrow_cast::cast(column, field.data_type()).map_err(internal)?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        });
    }
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int32Array, Int64Array, StringArray};

    #[test]
    fn batches_of_two_schemas_become_one() {
        let old = RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]).unwrap();
        let new = RecordBatch::try_from_iter([
            ("a", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
            ("b", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ])
        .unwrap();
        let (schema, out) = unify(vec![old, new]).unwrap();
        assert_eq!(schema.fields().len(), 2);
        assert_eq!(schema.field(0).data_type(), &arrow_schema::DataType::Int64, "the newest type wins");
        assert_eq!(out[0].column(1).null_count(), 1, "the older rows read null in the new column");
        assert_eq!(out[1].num_rows(), 1);
    }
}
