//! Writing buffered rows as Parquet data files through iceberg-rust's writers, so every file carries the
//! Iceberg field ids and column statistics of the schema its rows were decoded with.
//!
//! Writers compose by wrapping: Parquet inside rolling (a new file at the target size) inside data-file.
//! Chunks decoded with different schemas (the table evolved mid-flush) go to separate files. File names
//! start with `k2i-<commit id>-<schema group>` so a file can always be traced to the flush intent that wrote it.

use std::sync::Arc;

use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression as ParquetCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::buffer::Chunk;
use crate::config::Compression;
use crate::error::{Error, Result};

/// How data files are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Codec.
    pub compression: Compression,
    /// Roll to a new file at this size.
    pub target_file_size_bytes: usize,
}

fn writer_properties(compression: Compression) -> WriterProperties {
    let codec = match compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()),
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::Lz4 => ParquetCompression::LZ4_RAW,
        Compression::Gzip => ParquetCompression::GZIP(GzipLevel::default()),
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    // Offsets and timestamps are (nearly) unique per row: a dictionary only costs a hash per value and a
    // larger file. The other columns keep parquet's default (dictionary, falling back when it grows).
    WriterProperties::builder()
        .set_compression(codec)
        .set_column_dictionary_enabled(ColumnPath::from(crate::schema::COL_OFFSET), false)
        .set_column_dictionary_enabled(ColumnPath::from(crate::schema::COL_TIMESTAMP), false)
        .build()
}

fn group_prefix(commit_id: &str, group: usize) -> String {
    format!("k2i-{commit_id}-{group}")
}

/// The name of a flush's `file`-th data file (from 0) of its `group`-th schema group (from 0). Groups are
/// written one after another and each group's files in order, so the names a flush used have no gaps.
pub fn data_file_name(commit_id: &str, group: usize, file: u64) -> String {
    // DefaultFileNameGenerator's scheme (a test checks they agree).
    format!("{}-{file:05}.{}", group_prefix(commit_id, group), DataFileFormat::Parquet)
}

/// Writes the chunks as data files of `table` and returns them, in chunk order.
pub async fn write(table: &Table, chunks: Vec<Chunk>, commit_id: &str, options: WriteOptions) -> Result<Vec<DataFile>> {
    let mut files = Vec::new();
    let mut groups: Vec<Vec<Chunk>> = Vec::new();
    for chunk in chunks {
        // Consecutive chunks with the same schema share one writer.
        match groups.last_mut() {
            Some(group) if group.last().is_some_and(|c| Arc::ptr_eq(&c.schema, &chunk.schema)) => group.push(chunk),
            _ => groups.push(vec![chunk]),
        }
    }
    for (index, group) in groups.into_iter().enumerate() {
        // Each group's writer numbers its files from 0, so the group index keeps file names unique.
        let prefix = group_prefix(commit_id, index);
        files.extend(write_group(table, group, commit_id, &prefix, options).await?);
    }
    Ok(files)
}

async fn write_group(
    table: &Table,
    chunks: Vec<Chunk>,
    commit_id: &str,
    prefix: &str,
    options: WriteOptions,
) -> Result<Vec<DataFile>> {
    let fail = |what: &str, e: iceberg::Error| {
        Error::iceberg(what.to_owned(), e).with("table", table.identifier()).with("commit_id", commit_id)
    };
    let locations = DefaultLocationGenerator::new(table.metadata()).map_err(|e| fail("cannot place data files", e))?;
    let names = DefaultFileNameGenerator::new(prefix.to_owned(), None, DataFileFormat::Parquet);
    let Some(schema) = chunks.first().map(|c| c.schema.clone()) else { return Ok(Vec::new()) };
    let parquet = ParquetWriterBuilder::new(writer_properties(options.compression), schema);
    let rolling = RollingFileWriterBuilder::new(
        parquet,
        options.target_file_size_bytes,
        table.file_io().clone(),
        locations,
        names,
    );
    let mut writer =
        DataFileWriterBuilder::new(rolling).build(None).await.map_err(|e| fail("cannot open a data file writer", e))?;
    for chunk in chunks {
        // Moved, not cloned: the rows are freed as soon as the writer has encoded them.
        writer.write(chunk.batch).await.map_err(|e| fail("cannot write a data file", e))?;
    }
    writer.close().await.map_err(|e| fail("cannot close a data file", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_file_names_follow_the_writers_scheme() {
        use iceberg::writer::file_writer::location_generator::FileNameGenerator;
        let generator = DefaultFileNameGenerator::new(group_prefix("c1", 2), None, DataFileFormat::Parquet);
        for file in 0..3 {
            assert_eq!(generator.generate_file_name(), data_file_name("c1", 2, file));
        }
        assert_eq!(data_file_name("c1", 2, 1), "k2i-c1-2-00001.parquet");
    }
}
