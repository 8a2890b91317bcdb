//! A flush's lifecycle as types: `Sealed → Intended → Written → Committed | Fenced`.
//!
//! Each transition consumes the previous state, appends its transaction-log record and passes its fault
//! point, so the order of the steps is held by the types, not by statement order:
//!
//! | transition | txlog record | fault point after it |
//! |---|---|---|
//! | [`Sealed::intend`] | `intent` (commit id, table, data directory, ranges, schema id) | `after-intent` |
//! | [`Intended::write`] | `files` (the data files' paths) | `after-data-files` |
//! | [`Written::commit`], per attempt | `attempt` (the base snapshot the compare-and-swap is pinned to) | |
//! | … landed | — | `after-commit` |
//! | | `committed` (snapshot id) | `after-committed-record` |
//! | … fenced | `aborted` (files deleted by [`crate::recovery::abort`], the same abort recovery uses) | |
//!
//! An error anywhere leaves the flush pending in the log; the next start's recovery resolves it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use iceberg::spec::DataFile;
use iceberg::table::Table;

use crate::buffer::FlushBatch;
use crate::catalog::TableRef;
use crate::commit::{self, CommitRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::fault::{self, Point};
use crate::ops::Ops;
use crate::progress::{CommitId, OffsetRange, TopicPartition};
use crate::recovery::{self, Aborted};
use crate::sink::{self, WriteOptions};
use crate::txlog::{FilesRecord, IntentRecord, Pending, RangeRecord, Record, TxLog};

/// What every flush of one table works with.
pub struct FlushContext {
    /// The catalog and table identity.
    pub table_ref: TableRef,
    /// The table's UUID when the ingest started: a recreated table stops the ingest.
    pub table_uuid: uuid::Uuid,
    /// The consumer group (written into the summary).
    pub group: String,
    /// Parquet settings.
    pub write: WriteOptions,
    /// The transaction log, shared by the tables of one process.
    pub txlog: Arc<Mutex<TxLog>>,
    /// Health and metrics.
    pub ops: Arc<Ops>,
    /// The table's hot view (the LSNs of the flush's rows; readers of rows not committed yet).
    pub hot: Arc<crate::buffer::hot::HotTable>,
}

impl FlushContext {
    /// Appends to the transaction log, reporting a failing log as not ready before the error stops the table.
    pub fn append(&self, record: Record) -> Result<()> {
        let mut log = self.txlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.append(record).inspect_err(|e| self.ops.txlog(false, e.to_string()))
    }
}

/// What a flush covers, carried through every state.
#[derive(Debug, Clone)]
pub struct FlushMeta {
    /// The flush's unique id.
    pub commit_id: CommitId,
    /// The offset range of every partition consumed since the previous flush.
    pub ranges: BTreeMap<TopicPartition, OffsetRange>,
    /// Offsets Kafka no longer had (recorded in the summary).
    pub gaps: BTreeMap<TopicPartition, OffsetRange>,
    /// Rows stored.
    pub rows: usize,
    /// Records skipped by the error policy.
    pub skipped: usize,
    /// The newest Kafka timestamp among the rows.
    pub max_timestamp_ms: Option<i64>,
    /// When the flush was sealed.
    pub sealed_at: Instant,
    /// Its tag in the table's hot view.
    pub hot: u64,
}

/// Rows taken from the buffer, not yet announced anywhere.
#[derive(Debug)]
pub struct Sealed {
    meta: FlushMeta,
    batch: FlushBatch,
}

impl Sealed {
    /// Seals a batch taken from the buffer under a fresh commit id.
    pub fn new(batch: FlushBatch) -> Self {
        let meta = FlushMeta {
            commit_id: CommitId::generate(),
            ranges: batch.ranges.clone(),
            gaps: batch.gaps.clone(),
            rows: batch.rows,
            skipped: batch.skipped,
            max_timestamp_ms: batch.max_timestamp_ms,
            sealed_at: Instant::now(),
            hot: batch.hot,
        };
        Self { meta, batch }
    }

    /// What the flush covers.
    pub fn meta(&self) -> &FlushMeta {
        &self.meta
    }

    /// The memory its rows take.
    pub fn bytes(&self) -> usize {
        self.batch.bytes
    }

    /// Gaps recorded after sealing (they travel with the next flush of their partition).
    pub fn add_gap(&mut self, tp: TopicPartition, gap: OffsetRange) {
        self.batch.gaps.insert(tp.clone(), gap);
        self.meta.gaps.insert(tp, gap);
    }

    /// The flush without the rows and ranges of `revoked` partitions; `None` if nothing is left.
    pub fn without(self, revoked: &[TopicPartition]) -> Result<Option<Sealed>> {
        let Some(mut batch) = self.batch.without(revoked)? else { return Ok(None) };
        batch.gaps.retain(|tp, _| !revoked.contains(tp));
        Ok(Some(Self::new(batch)))
    }

    /// Announces the flush in the transaction log before any data file exists.
    pub fn intend(self, table: &Table, cx: &FlushContext) -> Result<Intended> {
        let intent = IntentRecord {
            commit_id: self.meta.commit_id.to_string(),
            table: cx.table_ref.table_name(),
            data_dir: format!("{}/data", table.metadata().location().trim_end_matches('/')),
            ranges: self
                .meta
                .ranges
                .iter()
                .map(|(tp, r)| RangeRecord {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    start: r.start,
                    end: r.end,
                })
                .collect(),
            schema_id: self.batch.chunks.last().map_or(table.metadata().current_schema_id(), |c| c.schema.schema_id()),
        };
        cx.append(Record::Intent(intent.clone()))?;
        fault::hit(Point::AfterIntent);
        Ok(Intended { meta: self.meta, batch: self.batch, intent })
    }
}

/// Announced in the log; data files not written yet.
pub struct Intended {
    meta: FlushMeta,
    batch: FlushBatch,
    intent: IntentRecord,
}

impl Intended {
    /// Writes the data files and records them in the log.
    pub async fn write(mut self, table: &Table, cx: &FlushContext) -> Result<Written> {
        // The chunks are handed over by value so each is freed once written: the flush in flight holds its
        // rows or their encoded form, not both.
        let chunks = std::mem::take(&mut self.batch.chunks);
        let files = match sink::write(table, chunks, self.meta.commit_id.as_str(), cx.write).await {
            Ok(files) => files,
            Err(error) => {
                // Nothing of this flush can land: remove what it wrote if the store lets us now, else the intent
                // stays pending and the next start's recovery removes it.
                let pending = Pending { intent: self.intent, files: None, bases: Vec::new() };
                match recovery::abort(table, &pending).await {
                    Ok(Aborted::Deleted(deleted)) => {
                        cx.append(Record::Aborted {
                            commit_id: self.meta.commit_id.to_string(),
                            reason: error.to_string(),
                        })?;
                        tracing::info!(commit_id = %self.meta.commit_id, deleted_files = deleted, "rolled back the flush whose data files could not be written");
                    }
                    Ok(Aborted::Referenced) => {}
                    Err(e) => {
                        tracing::warn!(commit_id = %self.meta.commit_id, error = %e, "cannot roll back the unwritten flush now; the next start's recovery does")
                    }
                }
                return Err(error);
            }
        };
        let paths: Vec<String> = files.iter().map(|f| f.file_path().to_owned()).collect();
        let files_record = FilesRecord { commit_id: self.meta.commit_id.to_string(), files: paths };
        cx.append(Record::Files(files_record.clone()))?;
        fault::hit(Point::AfterDataFiles);
        for file in &files {
            cx.ops.metrics.data_file_size.observe(file.file_size_in_bytes() as f64);
        }
        let pending = Pending { intent: self.intent, files: Some(files_record), bases: Vec::new() };
        Ok(Written { meta: self.meta, files, pending })
    }
}

/// Data files on storage, referenced by no snapshot yet.
pub struct Written {
    meta: FlushMeta,
    files: Vec<DataFile>,
    pending: Pending,
}

/// How a written flush ended.
pub enum Landing {
    /// In the table.
    Committed(Committed),
    /// Refused by the fencing check: another writer owns the progress; the files are gone.
    Fenced(Fenced),
}

/// A flush whose snapshot is in the table.
#[derive(Debug)]
pub struct Committed {
    /// What it covered.
    pub meta: FlushMeta,
    /// Its snapshot (`-1`: it had landed and its snapshot was expired since).
    pub snapshot_id: i64,
    /// The table after the commit.
    pub table: Table,
    /// Data files committed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The table's LSN with this flush.
    pub lsn: u64,
    /// The progress the table records with it.
    pub progress: crate::progress::Progress,
}

/// A flush the fencing check refused.
#[derive(Debug)]
pub struct Fenced {
    /// What it covered.
    pub meta: FlushMeta,
    /// Why.
    pub reason: Error,
}

impl Written {
    /// Commits the snapshot (see [`commit::commit`]); each attempt's base is durable in the log before the
    /// attempt is sent, so recovery can tell whether an attempt with an unknown outcome could still land.
    pub async fn commit(self, cx: &FlushContext) -> Result<Landing> {
        let Self { meta, files, mut pending } = self;
        let file_count = files.len();
        let bytes: u64 = files.iter().map(DataFile::file_size_in_bytes).sum();
        let request = CommitRequest {
            commit_id: &meta.commit_id,
            files,
            ranges: &meta.ranges,
            gaps: &meta.gaps,
            group: &cx.group,
            table_uuid: cx.table_uuid,
            // A flush whose rows left the hot view (the table stopped, or the stop dropped it after a fenced one)
            // still gets LSNs of its own: as many above the base as it has rows.
            lsns: cx.hot.lsns(meta.hot).or((meta.rows > 0).then_some((1, meta.rows as u64))),
        };
        let bases = Mutex::new(Vec::new());
        let on_attempt = |base: Option<i64>| {
            cx.append(Record::Attempt { commit_id: meta.commit_id.to_string(), base_snapshot_id: base })
        };
        let started = Instant::now();
        let outcome = commit::commit(&cx.table_ref, request, &bases, &on_attempt).await;
        cx.ops.metrics.commit_duration.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(committed) => {
                fault::hit(Point::AfterCommit);
                cx.append(Record::Committed {
                    commit_id: meta.commit_id.to_string(),
                    snapshot_id: committed.snapshot_id,
                })?;
                fault::hit(Point::AfterCommittedRecord);
                Ok(Landing::Committed(Committed {
                    meta,
                    snapshot_id: committed.snapshot_id,
                    table: committed.table,
                    files: file_count,
                    bytes,
                    lsn: committed.lsn,
                    progress: committed.progress,
                }))
            }
            Err(reason) if reason.kind() == ErrorKind::Fenced => {
                pending.bases = bases.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
                // Judged against the table as it is now, not the actor's copy from before this commit: an
                // earlier attempt may have landed (its answer lost, its snapshot since expired).
                let current = cx.table_ref.load().await?;
                match recovery::abort(&current, &pending).await? {
                    Aborted::Deleted(deleted) => {
                        cx.append(Record::Aborted {
                            commit_id: meta.commit_id.to_string(),
                            reason: reason.to_string(),
                        })?;
                        tracing::info!(commit_id = %meta.commit_id, deleted_files = deleted, "deleted the data files of the fenced flush");
                    }
                    Aborted::Referenced => {
                        // Left pending: the next start's recovery records it as landed.
                        tracing::warn!(commit_id = %meta.commit_id, "the fenced flush's files are referenced by the table; kept them");
                    }
                }
                Ok(Landing::Fenced(Fenced { meta, reason }))
            }
            // Unresolved (the catalog kept failing): the intent stays pending and the next start resolves it.
            Err(error) => Err(error),
        }
    }
}
