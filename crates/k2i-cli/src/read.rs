//! `k2i read` and `k2i query`: a table's rows from a running ingest's read-state socket — committed files and
//! hot rows at one LSN (docs/rpc.md) — printed, followed, or queried with SQL (DataFusion).

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use datafusion::catalog::SchemaProvider;
use k2i_core::config::Config;
use k2i_core::read::reader::{Fetched, Reader};
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
        let mut last = first.state;
        while args.follow && !out.done() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(args.interval) => {}
            }
            // Everything up to the last read-state's watermarks is printed: ask only for what follows them.
            let offsets_from = last
                .watermarks
                .iter()
                .map(|w| OffsetFrom { topic: w.topic.clone(), partition: w.partition, offset: w.next_offset })
                .collect();
            let next = ScanBegin {
                filter: Some(Filter { partitions: None, offsets_from: Some(offsets_from) }),
                since_lsn: None,
                ..request.clone()
            };
            let fetched = reader.fetch(next).await.map_err(Failure::engine)?;
            out.print(&fetched.schema, &fetched.batches).map_err(Failure::runtime)?;
            last = fetched.state;
        }
        out.finish().map_err(Failure::runtime)
    })
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
    csv_header: bool,
    arrow: Option<arrow_ipc::writer::StreamWriter<std::io::Stdout>>,
}

impl Printer {
    fn new(format: RowFormat, limit: Option<usize>) -> Self {
        Self { format, left: limit, csv_header: false, arrow: None }
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
                if !self.csv_header {
                    let names: Vec<String> = schema.fields().iter().map(|f| csv_field(f.name())).collect();
                    writeln!(stdout, "{}", names.join(","))?;
                    self.csv_header = true;
                }
                for batch in &taken {
                    write_csv(&mut stdout, batch)?;
                }
            }
            RowFormat::Arrow => {
                drop(stdout);
                if self.arrow.is_none() {
                    self.arrow = Some(arrow_ipc::writer::StreamWriter::try_new(std::io::stdout(), schema)?);
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
