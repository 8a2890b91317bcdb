//! `k2i read` and `k2i query`: a table's rows from a running ingest's read-state socket — committed files and
//! hot rows at one LSN (docs/rpc.md) — printed, followed, or queried with SQL (DataFusion).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use datafusion::catalog::SchemaProvider;
use k2i_core::config::Config;
use k2i_core::read::reader::{Fetched, Reader, align};
use k2i_rpc::message::{Filter, OffsetFrom, ScanBegin};

use crate::Failure;
use crate::cli::{QueryArgs, ReadArgs, RowFormat};

/// The configuration, pointed at `table` when one is given (`namespace.name`).
fn load(path: &std::path::Path, table: Option<&str>) -> Result<(Config, String), Failure> {
    let mut config = k2i_core::config::load(path).map_err(Failure::config)?;
    if let Some(table) = table {
        let (namespace, name) = table
            .rsplit_once('.')
            .with_context(|| format!("--table {table:?} is not `namespace.name`"))
            .map_err(Failure::config)?;
        config.iceberg.database_name = namespace.to_owned();
        config.iceberg.table_name = name.to_owned();
    }
    let name = format!("{}.{}", config.iceberg.database_name, config.iceberg.table_name);
    Ok((config, name))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)
}

/// `k2i read`.
pub fn read(args: &ReadArgs) -> Result<(), Failure> {
    let (config, table) = load(&args.config, args.table.as_deref())?;
    runtime()?.block_on(async {
        let mut reader = Reader::connect(&config).await.map_err(Failure::engine)?;
        let request = ScanBegin {
            table: table.clone(),
            since_lsn: args.since_lsn,
            columns: args.columns.clone(),
            ..ScanBegin::default()
        };
        let first = reader.fetch(request.clone()).await.map_err(Failure::engine)?;
        let mut out = Printer::new(args.format, args.limit);
        out.print(&first.schema, &first.batches).map_err(Failure::runtime)?;
        summary(&first);
        // Everything below these offsets is printed. A cut's watermarks can fall back (rows a flush could not
        // land leave the hot view until they are read again), so the highest seen per partition is kept.
        let mut printed: BTreeMap<(String, i32), i64> = BTreeMap::new();
        remember(&mut printed, &first.state);
        while args.follow && !out.done() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(args.interval) => {}
            }
            let offsets_from = printed
                .iter()
                .map(|((topic, partition), offset)| OffsetFrom {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect();
            let next = ScanBegin {
                filter: Some(Filter { partitions: None, offsets_from: Some(offsets_from) }),
                since_lsn: None,
                ..request.clone()
            };
            let fetched = match reader.fetch(next).await {
                Ok(fetched) => fetched,
                // k2i restarting, the store or catalog briefly away: keep following.
                Err(e) if !matches!(e.kind(), k2i_core::ErrorKind::Config) => {
                    tracing::warn!(error = %e.with_causes(), "cannot read the table now; retrying");
                    if let Ok(again) = Reader::connect(&config).await {
                        reader = again;
                    }
                    continue;
                }
                Err(e) => return Err(Failure::engine(e)),
            };
            out.print(&fetched.schema, &fetched.batches).map_err(Failure::runtime)?;
            remember(&mut printed, &fetched.state);
        }
        out.finish().map_err(Failure::runtime)
    })
}

/// Raises each partition's printed-up-to offset to a read-state's watermark.
fn remember(printed: &mut BTreeMap<(String, i32), i64>, state: &k2i_rpc::message::ReadState) {
    for w in &state.watermarks {
        let mark = printed.entry((w.topic.clone(), w.partition)).or_insert(w.next_offset);
        *mark = (*mark).max(w.next_offset);
    }
}

/// `k2i query`.
pub fn query(args: &QueryArgs) -> Result<(), Failure> {
    let (config, table) = load(&args.config, args.table.as_deref())?;
    runtime()?.block_on(async {
        let mut reader = Reader::connect(&config).await.map_err(Failure::engine)?;
        let fetched =
            reader.fetch(ScanBegin { table: table.clone(), ..ScanBegin::default() }).await.map_err(Failure::engine)?;
        summary(&fetched);
        let ctx = datafusion::prelude::SessionContext::new();
        let provider = datafusion::datasource::MemTable::try_new(fetched.schema.clone(), vec![fetched.batches])
            .context("cannot register the rows")
            .map_err(Failure::runtime)?;
        let provider = Arc::new(provider);
        let (namespace, name) = (config.iceberg.database_name.as_str(), config.iceberg.table_name.as_str());
        ctx.register_table(name, provider.clone()).context("cannot register the table").map_err(Failure::runtime)?;
        let catalog =
            ctx.catalog("datafusion").context("DataFusion has no default catalog").map_err(Failure::runtime)?;
        let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
        schema
            .register_table(name.to_owned(), provider)
            .context("cannot register the table")
            .map_err(Failure::runtime)?;
        catalog
            .register_schema(namespace, schema)
            .context("cannot register the namespace")
            .map_err(Failure::runtime)?;
        let frame = ctx.sql(&args.sql).await.map_err(Failure::config)?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(Failure::runtime)?;
        let mut out = Printer::new(args.format, None);
        out.print(&schema, &batches).map_err(Failure::runtime)?;
        out.finish().map_err(Failure::runtime)
    })
}

/// One line on standard error about the read-state (standard output carries only rows).
fn summary(fetched: &Fetched) {
    let state = &fetched.state;
    tracing::info!(
        table = %state.table,
        lsn = state.lsn,
        committed_lsn = state.committed_lsn,
        snapshot_id = state.snapshot_id.unwrap_or(-1),
        committed_rows = fetched.committed_rows,
        hot_rows = fetched.hot_rows,
        files = state.files.len(),
        "read-state"
    );
}

/// Prints rows in one format, counting them against a limit.
struct Printer {
    format: RowFormat,
    left: Option<usize>,
    /// The columns of CSV and Arrow output, fixed by the first read-state that has any (later rows are
    /// aligned to them by name).
    columns: Option<SchemaRef>,
    header_done: bool,
    arrow: Option<arrow_ipc::writer::StreamWriter<std::io::Stdout>>,
}

impl Printer {
    fn new(format: RowFormat, limit: Option<usize>) -> Self {
        Self { format, left: limit, columns: None, header_done: false, arrow: None }
    }

    fn done(&self) -> bool {
        self.left == Some(0)
    }

    fn print(&mut self, schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let mut taken = Vec::new();
        for batch in batches {
            let batch = match &mut self.left {
                Some(0) => break,
                Some(left) => {
                    let rows = batch.num_rows().min(*left);
                    *left -= rows;
                    batch.slice(0, rows)
                }
                None => batch.clone(),
            };
            if batch.num_rows() > 0 {
                taken.push(batch);
            }
        }
        if matches!(self.format, RowFormat::Csv | RowFormat::Arrow) {
            if self.columns.is_none() && !schema.fields().is_empty() {
                self.columns = Some(schema.clone());
            }
            let Some(columns) = self.columns.clone() else { return Ok(()) };
            taken = taken.iter().map(|b| align(b, &columns)).collect::<Result<_, _>>()?;
        }
        let mut stdout = std::io::stdout().lock();
        match self.format {
            RowFormat::Table if !taken.is_empty() => {
                writeln!(stdout, "{}", arrow_cast::pretty::pretty_format_batches(&taken)?)?;
            }
            RowFormat::Table => {}
            RowFormat::Json => {
                let mut writer = arrow_json::LineDelimitedWriter::new(&mut stdout);
                for batch in &taken {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            RowFormat::Csv => {
                if let (false, Some(columns)) = (self.header_done, &self.columns) {
                    let names: Vec<String> = columns.fields().iter().map(|f| csv_field(f.name())).collect();
                    writeln!(stdout, "{}", names.join(","))?;
                    self.header_done = true;
                }
                for batch in &taken {
                    write_csv(&mut stdout, batch)?;
                }
            }
            RowFormat::Arrow => {
                drop(stdout);
                if let (None, Some(columns)) = (&self.arrow, &self.columns) {
                    self.arrow = Some(arrow_ipc::writer::StreamWriter::try_new(std::io::stdout(), columns)?);
                }
                if let Some(writer) = self.arrow.as_mut() {
                    for batch in &taken {
                        writer.write(batch)?;
                    }
                    writer.flush()?;
                }
                return Ok(());
            }
        }
        stdout.flush()?;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(mut writer) = self.arrow.take() {
            writer.finish()?;
        }
        Ok(())
    }
}

/// One CSV line per row, each value as Arrow displays it (binary as hex, nested values as text).
fn write_csv(out: &mut impl Write, batch: &RecordBatch) -> anyhow::Result<()> {
    let options = arrow_cast::display::FormatOptions::default();
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<_, _>>()?;
    for row in 0..batch.num_rows() {
        let values: Vec<String> = formatters
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| if c.is_null(row) { String::new() } else { csv_field(&f.value(row).to_string()) })
            .collect();
        writeln!(out, "{}", values.join(","))?;
    }
    Ok(())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
