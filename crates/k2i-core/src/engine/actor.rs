//! The commit actor: one per table, on the async runtime. It owns the table's `Table` and runs one
//! serialised queue of jobs — flushes, schema evolution, progress lookups (later: maintenance and read-state
//! queries) — so a schema change can never interleave with a commit of the same table. A flush's outcome
//! goes back to the polling thread over a channel ([`Delivered`]); nothing is shared through atomics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::spec::Schema;
use iceberg::table::Table;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::catalog;
use crate::error::{Error, Result};
use crate::flush::{Committed, FlushContext, Landing, Sealed};
use crate::ops::LastCommit;
use crate::progress::{self, OffsetRange, Progress, TopicPartition};
use crate::schema::{self, Addition};
use crate::source::KafkaConsumer;
use crate::txlog::Record;

/// A job for a table's commit actor.
pub enum Job {
    /// Write and commit a sealed flush; its outcome is delivered on the outcome channel.
    Flush(Sealed),
    /// Add optional columns (at most once per `schema_update_min_interval`); replies with the new schema.
    Evolve {
        /// The columns.
        additions: Vec<Addition>,
        /// The table's schema after the change.
        reply: oneshot::Sender<Result<Arc<Schema>>>,
    },
    /// Fetch a registry schema by id and compile it into the table's schema set; the outcome is
    /// [`Outcome::Resolved`] (the polling thread never waits on the registry).
    Resolve {
        /// The schema id.
        schema_id: u32,
    },
    /// Apply a writer schema's compatible change (additions, promotions), at most once per
    /// `schema_update_min_interval`, in order with the flushes; the outcome is [`Outcome::Evolved`].
    Change {
        /// The writer schema.
        schema_id: u32,
        /// What it asks.
        change: crate::schema::evolve::Change,
    },
    /// An operator's retry of a paused schema id: fetch the subject's latest schema and, if it is another
    /// one, read the paused id's records with it; the outcome is [`Outcome::Reread`].
    Reread {
        /// The paused schema id.
        schema_id: u32,
        /// The subject whose latest version is tried.
        subject: String,
    },
    /// Load the table and hand it to the hot view (after an assignment: readers' committed part catches up).
    Refresh,
    /// Read the progress the table records now.
    Progress {
        /// Every partition the table has recorded.
        reply: oneshot::Sender<Result<Progress>>,
    },
}

/// A flush's outcome, from the actor of table `table`.
#[derive(Debug)]
pub struct Delivered {
    /// The pipeline's index.
    pub table: usize,
    /// What happened.
    pub outcome: Outcome,
}

/// How a flush ended.
#[derive(Debug)]
pub enum Outcome {
    /// In the table.
    Committed(CommitReport),
    /// Refused by the fencing check; the pipeline must resynchronise from the table.
    Fenced,
    /// The flush could not be committed; the table stops (its intent stays pending for recovery).
    Failed(Error),
    /// The flush could not land for now: the store or the catalog kept failing through every retry (an
    /// outage). Its intent stays pending unless its files could be removed (a commit attempt may still land;
    /// recovery resolves it at the next start); the pipeline reads its records again from the table's
    /// progress, so a later flush carries them (and is fenced if the earlier attempt landed meanwhile).
    Unlanded(Error),
    /// A [`Job::Resolve`] ended: the schema is in the table's schema set (compiled, or marked invalid for
    /// the error policy), or the registry could not be asked (`Err`: try again later).
    Resolved {
        /// The schema id.
        schema_id: u32,
        /// Whether the registry answered.
        result: Result<()>,
    },
    /// A [`Job::Change`] ended with the table's new schema.
    Evolved(Result<Arc<Schema>>),
    /// A [`Job::Reread`] ended (`Ok(Some(id))`: records of the paused id are now read with schema `id`).
    Reread(Result<Option<u32>>),
}

impl Outcome {
    /// Whether this is a flush's outcome (the inbox counts flushes in flight).
    pub fn is_flush(&self) -> bool {
        matches!(self, Self::Committed(_) | Self::Fenced | Self::Failed(_) | Self::Unlanded(_))
    }
}

/// What a committed flush covered.
#[derive(Debug)]
pub struct CommitReport {
    /// Offset ranges committed.
    pub ranges: BTreeMap<TopicPartition, OffsetRange>,
    /// Rows stored.
    pub rows: usize,
    /// Records skipped by the error policy.
    pub skipped: usize,
    /// Data files committed.
    pub files: usize,
}

/// The actor of one table.
pub struct CommitActor {
    /// The pipeline's index (for [`Delivered`]).
    pub index: usize,
    /// The table, as of the last job.
    pub table: Table,
    /// What flushes work with.
    pub cx: FlushContext,
    /// For Kafka offset commits (lag tools only).
    pub consumer: Arc<KafkaConsumer>,
    /// Where outcomes go.
    pub outcomes: std::sync::mpsc::Sender<Delivered>,
    /// `schema_evolution.schema_update_min_interval`.
    pub schema_interval: Duration,
    /// When the last schema change was made.
    pub last_schema_update: Option<Instant>,
    /// The table's payload format (its registry schemas live there).
    pub format: crate::decode::Format,
    /// The Schema Registry, for registry formats.
    pub registry: Option<Arc<crate::decode::registry::RegistryClient>>,
    /// With the read-state RPC on: how often an idle actor reloads the table for readers (other instances'
    /// commits reach this instance's committed part at most this late).
    pub refresh_every: Option<Duration>,
    /// After a failed reader refresh: none before this.
    pub refresh_paused_until: Option<Instant>,
}

/// How long one reader refresh may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reader refreshes pause after one failed.
const REFRESH_BACKOFF: Duration = Duration::from_secs(10);

impl CommitActor {
    /// Runs jobs until the queue closes or a flush fails (a failed table takes no more jobs: its queue is
    /// dropped, so whoever waits on a reply learns it at once).
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        // A panic must still deliver an outcome: the pipeline would otherwise wait for its flush forever.
        let _guard = PanicGuard { index: self.index, outcomes: self.outcomes.clone() };
        loop {
            let job = match self.refresh_every {
                Some(every) => match tokio::time::timeout(every, jobs.recv()).await {
                    Ok(job) => job,
                    Err(_) => Some(Job::Refresh),
                },
                None => jobs.recv().await,
            };
            let Some(job) = job else { break };
            match job {
                Job::Flush(sealed) => {
                    let outcome = match self.flush(sealed).await {
                        Ok(outcome) => outcome,
                        Err(error) if error.is_retryable() => Outcome::Unlanded(error),
                        Err(error) => Outcome::Failed(error),
                    };
                    // A stopped table serves its committed part only. Rows that did not land for now leave the hot view
                    // on the polling thread, at the resync that reads them again (with everything after them).
                    if let Outcome::Failed(error) = &outcome {
                        self.cx.hot.fail(error.to_string());
                    }
                    let failed = matches!(outcome, Outcome::Failed(_));
                    // At shutdown the polling thread may already be gone; the outcome is then nobody's business.
                    let _ = self.outcomes.send(Delivered { table: self.index, outcome });
                    if failed {
                        return;
                    }
                }
                Job::Evolve { additions, reply } => {
                    let _ = reply.send(self.evolve(&additions).await);
                }
                Job::Resolve { schema_id } => {
                    let result = self.resolve(schema_id).await;
                    let _ = self
                        .outcomes
                        .send(Delivered { table: self.index, outcome: Outcome::Resolved { schema_id, result } });
                }
                Job::Change { schema_id, change } => {
                    let result = self.change(Some(schema_id), &change).await;
                    let _ = self.outcomes.send(Delivered { table: self.index, outcome: Outcome::Evolved(result) });
                }
                Job::Reread { schema_id, subject } => {
                    let result = self.reread(schema_id, &subject).await;
                    let _ = self.outcomes.send(Delivered { table: self.index, outcome: Outcome::Reread(result) });
                }
                Job::Refresh => self.refresh_for_readers().await,
                Job::Progress { reply } => {
                    let _ = reply.send(self.refresh().await);
                }
            }
        }
    }

    /// One quick load of the table for readers (no retries: a catalog outage shows in the flushes, and the
    /// actor must not sit in a retry loop while a flush waits); after a failure, idle refreshes pause a while.
    async fn refresh_for_readers(&mut self) {
        if self.refresh_paused_until.is_some_and(|until| Instant::now() < until) {
            return;
        }
        let table_ref = &self.cx.table_ref;
        let loaded = tokio::time::timeout(REFRESH_TIMEOUT, table_ref.catalog.load_table(&table_ref.ident)).await;
        match loaded {
            Ok(Ok(table)) => {
                self.refresh_paused_until = None;
                if let Ok(recorded) = progress::recorded(table.metadata()) {
                    self.cx.hot.refresh(table, recorded.progress);
                }
            }
            _ => {
                tracing::debug!(table = %table_ref.table_name(), "cannot refresh the table for readers now");
                self.refresh_paused_until = Some(Instant::now() + REFRESH_BACKOFF);
            }
        }
    }

    /// Loads the table, hands it to the hot view (no flush is in flight: jobs run one at a time) and returns
    /// the progress it records.
    async fn refresh(&self) -> Result<Progress> {
        let table = self.cx.table_ref.load().await?;
        let recorded = progress::recorded(table.metadata())?.progress;
        self.cx.hot.refresh(table, recorded.clone());
        Ok(recorded)
    }

    async fn flush(&mut self, sealed: Sealed) -> Result<Outcome> {
        let intended = sealed.intend(&self.table, &self.cx)?;
        let written = intended.write(&self.table, &self.cx).await?;
        match written.commit(&self.cx).await? {
            Landing::Committed(committed) => {
                // Readers switch from the flush's hot rows to the new snapshot in one step.
                self.cx.hot.committed(
                    committed.meta.hot,
                    committed.table.clone(),
                    committed.lsn,
                    committed.progress.clone(),
                );
                let report = self.after_commit(&committed).await;
                self.table = committed.table;
                Ok(Outcome::Committed(report))
            }
            Landing::Fenced(fenced) => {
                // Never retried: another writer owns this progress now. The files are gone; the polling
                // thread restarts the table's partitions from the table.
                tracing::warn!(
                    error = %fenced.reason,
                    commit_id = %fenced.meta.commit_id,
                    "flush fenced: another writer committed these offsets; discarded it"
                );
                self.cx.ops.metrics.commits_fenced.inc();
                Ok(Outcome::Fenced)
            }
        }
    }

    /// Kafka offsets (for lag tools), metrics, status and the one log line per commit.
    async fn after_commit(&self, committed: &Committed) -> CommitReport {
        let meta = &committed.meta;
        // Kafka's group offsets are for lag tools only; the table is the truth. Synchronous, off the async workers.
        let mut tpl = TopicPartitionList::new();
        for (tp, range) in &meta.ranges {
            if let Err(e) = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(range.end)) {
                tracing::warn!(partition = %tp, error = %e, "cannot prepare the Kafka offset commit");
            }
        }
        let kafka = self.consumer.clone();
        match tokio::task::spawn_blocking(move || kafka.commit(&tpl, CommitMode::Sync)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot commit offsets to Kafka (lag monitoring only; the table has them)")
            }
            Err(e) => tracing::warn!(error = %e, "the Kafka offset commit task failed"),
        }
        let ops = &self.cx.ops;
        let metrics = &ops.metrics;
        metrics.flushes.inc();
        metrics.flush_duration.observe(meta.sealed_at.elapsed().as_secs_f64());
        metrics.data_files.inc_by(committed.files as u64);
        metrics.data_file_bytes.inc_by(committed.bytes);
        if let Some(ts) = meta.max_timestamp_ms {
            metrics.newest_committed_timestamp_ms.set(metrics.newest_committed_timestamp_ms.get().max(ts));
        }
        ops.committed(
            LastCommit {
                snapshot_id: committed.snapshot_id,
                at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                files: committed.files,
                rows: meta.rows,
            },
            meta.ranges.iter().map(|(tp, r)| (tp.clone(), r.end)),
        );
        let offsets: Vec<String> = meta.ranges.iter().map(|(tp, r)| format!("{tp}:[{},{})", r.start, r.end)).collect();
        tracing::info!(
            table = %self.cx.table_ref.table_name(),
            snapshot_id = committed.snapshot_id,
            commit_id = %meta.commit_id,
            rows = meta.rows,
            skipped = meta.skipped,
            files = committed.files,
            bytes = committed.bytes,
            duration_ms = meta.sealed_at.elapsed().as_millis() as u64,
            offsets = %offsets.join(" "),
            "committed flush"
        );
        CommitReport { ranges: meta.ranges.clone(), rows: meta.rows, skipped: meta.skipped, files: committed.files }
    }

    /// Adds columns (a JSON record's new fields); see [`CommitActor::change`].
    async fn evolve(&mut self, additions: &[Addition]) -> Result<Arc<Schema>> {
        let change = crate::schema::evolve::Change { additions: additions.to_vec(), ..Default::default() };
        self.change(None, &change).await
    }
}

impl CommitActor {
    fn registry(&self) -> Result<(&Arc<crate::decode::RegistryContext>, &crate::decode::registry::RegistryClient)> {
        match (&self.format, &self.registry) {
            (crate::decode::Format::Registry(cx), Some(registry)) => Ok((cx, registry)),
            _ => {
                Err(Error::new(crate::error::ErrorKind::Internal, "a schema job for a table without a registry format"))
            }
        }
    }

    /// Fetches and compiles a schema. A schema the registry does not have, or that does not compile, is
    /// marked invalid (its records go to the error policy); an unreachable registry is an error (retried).
    async fn resolve(&self, schema_id: u32) -> Result<()> {
        let (cx, registry) = self.registry()?;
        let compiled = match registry.schema_by_id(schema_id).await {
            Ok(schema) => crate::decode::compile(cx.kind, &schema),
            Err(e) => Err(e),
        };
        match compiled {
            Ok(compiled) => {
                tracing::info!(schema_id, "compiled a registry schema");
                compiled.warn_unstored();
                self.cx.ops.metrics.schemas_resolved.inc();
                cx.schemas.insert(Arc::new(compiled));
                Ok(())
            }
            Err(e) if e.kind() == crate::error::ErrorKind::InvalidRecord => {
                tracing::warn!(schema_id, error = %e, "records of this schema id cannot be decoded");
                cx.schemas.reject(schema_id, e.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Applies a compatible change (of writer schema `writer`, for registry formats) at most once per
    /// `schema_update_min_interval` (the job waits; the records it is for stay unconsumed meanwhile), in order
    /// with the table's flushes; the transaction log records it.
    async fn change(&mut self, writer: Option<u32>, change: &crate::schema::evolve::Change) -> Result<Arc<Schema>> {
        if let Some(wait) =
            self.last_schema_update.map(|t| self.schema_interval.saturating_sub(t.elapsed())).filter(|w| !w.is_zero())
        {
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "waiting for schema_update_min_interval before the next schema update"
            );
            tokio::time::sleep(wait).await;
        }
        let table = catalog::change_schema(&self.cx.table_ref, change).await?;
        crate::fault::hit(crate::fault::Point::AfterSchemaChange);
        self.last_schema_update = Some(Instant::now());
        let metrics = &self.cx.ops.metrics;
        metrics.schema_columns_added.inc_by(change.additions.len() as u64);
        metrics.schema_columns_promoted.inc_by(change.promotions.len() as u64);
        let mut columns: Vec<String> = change.additions.iter().map(schema::Addition::full_name).collect();
        columns.extend(change.promotions.iter().map(|p| format!("{} to {}", p.name, p.to)));
        self.cx.append(Record::SchemaChange { schema_id: table.metadata().current_schema_id(), columns })?;
        tracing::info!(writer_schema_id = ?writer, change = %change.describe(), "changed the table schema");
        let schema = table.metadata().current_schema().clone();
        // Readers see the new schema too (no flush is in flight: jobs run one at a time).
        if let Ok(recorded) = progress::recorded(table.metadata()) {
            self.cx.hot.refresh(table.clone(), recorded.progress);
        }
        self.table = table;
        Ok(schema)
    }

    /// The subject's latest schema as the reader of a paused schema id, if it is another schema.
    async fn reread(&self, schema_id: u32, subject: &str) -> Result<Option<u32>> {
        let (cx, registry) = self.registry()?;
        let latest = registry.latest(subject).await?;
        if latest.id == schema_id {
            return Ok(None);
        }
        let compiled = crate::decode::compile(cx.kind, &latest)?;
        tracing::info!(
            schema_id,
            reader = latest.id,
            subject,
            "reading the paused schema id with the subject's latest schema"
        );
        cx.schemas.set_reader(schema_id, Arc::new(compiled));
        Ok(Some(latest.id))
    }
}

/// Reports a panicking actor's table as failed (runs while the panic unwinds the actor's future).
struct PanicGuard {
    index: usize,
    outcomes: std::sync::mpsc::Sender<Delivered>,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let error = Error::new(crate::error::ErrorKind::Internal, "the table's commit actor panicked");
            let _ = self.outcomes.send(Delivered { table: self.index, outcome: Outcome::Failed(error) });
        }
    }
}

/// Waits for a job's reply from the polling thread (which is not a runtime thread, so it may block).
pub fn wait_reply<T>(reply: oneshot::Receiver<Result<T>>, table: &str) -> Result<T> {
    reply.blocking_recv().map_err(|_| gone(table))?
}

/// The error for a job whose actor has stopped (its table failed).
pub fn gone(table: &str) -> Error {
    Error::new(crate::error::ErrorKind::Internal, "the table's commit actor has stopped").with("table", table)
}
