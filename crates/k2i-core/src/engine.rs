//! Wiring of one ingest: the polling thread (consume → decode → buffer) and the commit task (write data
//! files → commit the snapshot → commit Kafka offsets), with shutdown and `--until-caught-up`.
//!
//! ```text
//!  polling thread (the caller's)                       tokio runtime
//!  ─────────────────────────────                       ─────────────
//!  poll ─► decode ─► TableBuffer ── FlushBatch ──────► commit task: sink::write ─► commit::commit ─► Kafka commit
//!    ▲  rebalance: seek from the table                       │
//!    └──── pause while a flush is in flight and the buffer is full ◄──┘ (in_flight)
//! ```
//!
//! At most one flush is in flight: while the commit task writes and commits flush N, the polling thread
//! keeps decoding into the buffer (double buffering). A flush starts when the buffer holds
//! `flush_batch_size` records, half of `max_size_mb` (the other half is the flush in flight), or when its
//! oldest record has waited `flush_interval`. If the buffer is due while a flush is still in flight, the
//! consumer pauses its partitions and resumes once the flush is handed over. Flushes commit in order, so
//! each partition's ranges stay contiguous.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::buffer::{FlushBatch, RecordMeta, TableBuffer};
use crate::catalog::{self, TableRef};
use crate::commit::{self, CommitRequest};
use crate::config::{CatalogType, Config, ErrorPolicy, EvolutionMode, OffsetReset, TxlogDurability};
use crate::decode::Outcome;
use crate::error::{Error, ErrorKind, Result};
use crate::fault::{self, Point};
use crate::ops::{LastCommit, Ops, Phase, RecoveryStatus};
use crate::progress::{self, CommitId, OffsetRange, TopicPartition};
use crate::recovery;
use crate::schema;
use crate::sink::{self, WriteOptions};
use crate::source::{self, AssignmentChange, KafkaConsumer, Resume};
use crate::txlog::{Durability, RangeRecord, Record, TxLog};

/// Rows per Arrow chunk in the buffer.
const CHUNK_ROWS: usize = 8192;
/// How long one poll waits for a record; bounds the latency of flush triggers and shutdown.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Timeout of metadata and watermark requests.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a revocation waits for the flush in flight to land.
const REVOKE_WAIT: Duration = Duration::from_secs(60);
/// Readiness turns false when buffered data has waited this many flush intervals without a commit.
const STALL_FLUSH_INTERVALS: u32 = 10;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Read the high watermarks at start and stop once everything below them is committed.
    pub until_caught_up: bool,
    /// Stop on SIGINT / SIGTERM (flushing first).
    pub handle_signals: bool,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Records consumed and stored as rows.
    pub rows: u64,
    /// Records consumed and skipped by the error policy.
    pub skipped: u64,
    /// Snapshots committed.
    pub commits: u64,
    /// Data files written.
    pub files: u64,
}

#[derive(Default)]
struct Shared {
    /// The table's next offset per partition, as far as this process knows (start lookup + own commits).
    committed: Mutex<HashMap<TopicPartition, i64>>,
    in_flight: AtomicUsize,
    /// Set by the commit task when a flush was fenced: the polling thread drops what it buffered and seeks
    /// its partitions back to the table's progress.
    resync: AtomicBool,
    failed: Mutex<Option<Error>>,
    summary: Mutex<IngestSummary>,
    /// When the last commit (or the start) happened: readiness turns false when data waits too long.
    last_commit_at: Mutex<Option<Instant>>,
}

/// Runs an ingest on the calling thread until shutdown, caught-up (with `until_caught_up`) or an error.
pub fn run(config: Config, options: IngestOptions, shutdown: Arc<AtomicBool>) -> Result<IngestSummary> {
    refuse_unbuilt(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("k2i-commit")
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot start the async runtime").source(e))?;
    if options.handle_signals {
        runtime.spawn(watch_signals(shutdown.clone()));
    }
    let ops = Arc::new(Ops::new());
    // Listening before anything else: /readyz answers "starting" / "recovering" while those take time.
    let monitoring = &config.monitoring;
    runtime.block_on(crate::ops::server::start(
        ops.clone(),
        SocketAddr::new(monitoring.listen_address, monitoring.health_port),
        SocketAddr::new(monitoring.listen_address, monitoring.metrics_port),
    ))?;
    let format = config.kafka.format.kind;
    let table_ref = runtime.block_on(catalog::open(&config, ops.clone()))?;
    let mut table = runtime.block_on(catalog::ensure_table(&table_ref, &schema::initial_schema(&config)?))?;
    schema::check_metadata_columns(table.metadata().current_schema())?;
    // Refused at start rather than at the first commit (iceberg would reject every data file).
    commit::check_spec(&table)?;
    // Every commit checks it is still writing this table, not one dropped and recreated under the same name.
    let table_uuid = table.metadata().uuid();
    // Only the local-filesystem FileIO is wired; refuse clearly instead of failing at the first write.
    let location = table.metadata().location();
    if !location.starts_with("file:") {
        return Err(Error::new(ErrorKind::Config, "writing to an object-store table location is not built yet")
            .with("table", table_ref.table_name())
            .with("location", location));
    }
    // An existing table gains the columns the configuration asks for (headers, declared JSON columns).
    let missing = schema::reconcile(table.metadata().current_schema(), &config)?;
    if !missing.is_empty() {
        table = runtime.block_on(catalog::add_columns(&table_ref, &missing))?;
    }

    let durability = match config.transaction_log.durability {
        TxlogDurability::Always => Durability::Always,
        TxlogDurability::Interval => Durability::Interval(config.transaction_log.fsync_interval.get()),
    };
    ops.set_phase(Phase::Recovering);
    let (mut txlog, pending) = TxLog::open(&config.transaction_log.log_dir, durability)?;
    ops.txlog(true, format!("open in {}", config.transaction_log.log_dir.display()));
    if !pending.is_empty() {
        tracing::info!(pending = pending.len(), "recovering flushes the transaction log left unresolved");
    }
    let remote = config.iceberg.catalog_type == CatalogType::Rest;
    let report = runtime.block_on(recovery::recover(&mut txlog, &table, &table_ref.table_name(), remote))?;
    tracing::info!(
        landed = report.landed.len(),
        rolled_back = report.rolled_back.len(),
        kept = report.kept.len(),
        "recovery done"
    );
    ops.metrics.recovered_kept.inc_by(report.kept.len() as u64);
    ops.recovered(RecoveryStatus {
        landed: report.landed.len(),
        rolled_back: report.rolled_back.len(),
        files_deleted: report.rolled_back.iter().map(|(_, n)| n).sum(),
    });
    let txlog = Arc::new(Mutex::new(txlog));

    let evolve = config.schema_evolution.mode == EvolutionMode::AutoAdditive;
    let mut buffer = TableBuffer::new(format, table.metadata().current_schema().clone(), evolve, CHUNK_ROWS)?;

    let handle = runtime.handle().clone();
    let lookup_table = table_ref.clone();
    // The rebalance callback's progress lookup: the one catalog call the polling thread makes, because
    // librdkafka requires the assignment (with its offsets) to be made inside the callback.
    let lookup: source::OffsetLookup = Box::new(move || {
        handle.block_on(async {
            let table = lookup_table.load().await?;
            Ok(progress::recorded(table.metadata())?.progress)
        })
    });
    let shared = Arc::new(Shared::default());
    *lock(&shared.last_commit_at) = Some(Instant::now());
    let revoke_shared = shared.clone();
    let before_revoke: source::RevokeHook = Box::new(move |_partitions: &[TopicPartition]| {
        // Bounded: a commit stuck on an unreachable catalog must not hold the group's rebalance forever; if
        // it lands later, the new owner's fencing check rejects whatever would overlap.
        let deadline = Instant::now() + REVOKE_WAIT;
        while revoke_shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let consumer = Arc::new(source::subscribe(&config.kafka, ops.clone(), lookup, before_revoke)?);
    let topics = config.kafka.topic_list();

    let targets = if options.until_caught_up {
        let marks = source::watermarks(&consumer, &topics, METADATA_TIMEOUT)?;
        let partitions: Vec<TopicPartition> = marks.keys().cloned().collect();
        let recorded = progress::recorded_for(table.metadata(), &partitions)?;
        lock(&shared.committed).extend(recorded);
        tracing::info!(partitions = marks.len(), "read high watermarks; will stop once they are committed");
        Some(marks)
    } else {
        None
    };

    let (tx, rx) = mpsc::channel::<FlushBatch>(1);
    let write = WriteOptions {
        compression: config.iceberg.compression,
        target_file_size_bytes: usize::try_from(config.iceberg.target_file_size_mb.get() * 1024 * 1024)
            .unwrap_or(usize::MAX),
    };
    let committer = runtime.spawn(commit_loop(
        rx,
        table,
        Committer {
            table_ref: table_ref.clone(),
            table_uuid,
            consumer: consumer.clone(),
            group: config.kafka.consumer_group.clone(),
            write,
            shared: shared.clone(),
            txlog: txlog.clone(),
            ops: ops.clone(),
        },
    ));

    let mut poller = Poller {
        config: &config,
        runtime: &runtime,
        table_ref: &table_ref,
        consumer: &consumer,
        shared: &shared,
        buffer: &mut buffer,
        tx: &tx,
        targets,
        assigned: HashSet::new(),
        pending: None,
        paused: false,
        last_schema_update: None,
        txlog: &txlog,
        ops: &ops,
        counters: HashMap::new(),
        last_counters: None,
        unrecorded: HashSet::new(),
        first_read: HashMap::new(),
        gaps: std::collections::BTreeMap::new(),
        since_report: 0,
        last_refresh: Instant::now(),
    };
    ops.set_phase(Phase::Running);
    let outcome = poller.run(&shutdown);
    ops.set_phase(Phase::Stopping);
    drop(tx);
    let committed = runtime.block_on(committer);
    consumer.unsubscribe();
    let summary = lock(&shared.summary).clone();
    if let Err(error) = &outcome {
        ops.table_failed(error.to_string());
    }
    outcome?;
    if let Some(error) = lock(&shared.failed).take() {
        ops.table_failed(error.to_string());
        return Err(error);
    }
    committed.map_err(|e| Error::new(ErrorKind::Internal, "the commit task panicked").source(e))?;
    Ok(summary)
}

/// Features whose keys exist but which are not built yet: refused (exit 2) instead of pretending. The list
/// is the configuration's own ([`Config::unbuilt`]), so `k2i validate` warns about exactly what this refuses.
fn refuse_unbuilt(config: &Config) -> Result<()> {
    let Some(first) = config.unbuilt().into_iter().next() else { return Ok(()) };
    Err(Error::new(ErrorKind::Config, format!("{} is not built yet", first.what))
        .with("key", &first.key)
        .with("waits_for", first.issue))
}

/// Appends to the transaction log, reporting a failing log as not ready before the error stops the ingest.
fn append(txlog: &Mutex<TxLog>, ops: &Ops, record: Record) -> Result<()> {
    lock(txlog).append(record).inspect_err(|e| ops.txlog(false, e.to_string()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks already fails the ingest; the data is still consistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn watch_signals(shutdown: Arc<AtomicBool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL only");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; flushing and stopping"),
            _ = int.recv() => tracing::info!("SIGINT received; flushing and stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.store(true, Ordering::SeqCst);
}

struct Poller<'a> {
    config: &'a Config,
    runtime: &'a tokio::runtime::Runtime,
    table_ref: &'a TableRef,
    consumer: &'a Arc<KafkaConsumer>,
    shared: &'a Arc<Shared>,
    buffer: &'a mut TableBuffer,
    tx: &'a mpsc::Sender<FlushBatch>,
    targets: Option<HashMap<TopicPartition, (i64, i64)>>,
    assigned: HashSet<TopicPartition>,
    pending: Option<FlushBatch>,
    paused: bool,
    last_schema_update: Option<Instant>,
    txlog: &'a Mutex<TxLog>,
    ops: &'a Arc<Ops>,
    /// Per-partition record and byte counters, looked up once per partition, not per record.
    counters: HashMap<TopicPartition, (IntCounter, IntCounter)>,
    /// Assigned partitions the table has never recorded, until their first record is read.
    unrecorded: HashSet<TopicPartition>,
    /// The first offset read from each partition the table had never recorded (for a resync).
    first_read: HashMap<TopicPartition, i64>,
    /// The counters of the last record's partition.
    last_counters: Option<(TopicPartition, IntCounter, IntCounter)>,
    /// Records since the buffer gauges were last updated.
    since_report: usize,
    /// When `--until-caught-up` last read the table's progress (other instances commit partitions too).
    last_refresh: Instant,
    /// Offsets skipped because Kafka had deleted them, until the next flush records them.
    gaps: std::collections::BTreeMap<TopicPartition, OffsetRange>,
}

impl Poller<'_> {
    fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        let buffer_cfg = &self.config.buffer;
        let half_cap = usize::try_from(buffer_cfg.max_size_mb.get() * 1024 * 1024 / 2).unwrap_or(usize::MAX);
        loop {
            if shutdown.load(Ordering::SeqCst) {
                break;
            }
            if let Some(error) = self.consumer.context().take_fatal() {
                return Err(error);
            }
            if lock(&self.shared.failed).is_some() {
                // The commit task stopped; its error is reported by `run`.
                return Ok(());
            }
            for change in self.consumer.context().take_changes() {
                self.apply(change)?;
            }
            if self.shared.resync.swap(false, Ordering::SeqCst) {
                self.resync()?;
            }
            self.hand_over()?;
            let idle = match self.consumer.poll(POLL_TIMEOUT) {
                Some(Ok(message)) => {
                    self.record(&message)?;
                    false
                }
                Some(Err(rdkafka::error::KafkaError::MessageConsumption(code)))
                    if matches!(
                        code,
                        rdkafka::types::RDKafkaErrorCode::AutoOffsetReset
                            | rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                    ) =>
                {
                    // auto.offset.reset = error: a position Kafka does not have (the topic was recreated, or
                    // retention passed it while running). Decide per partition, never let librdkafka move it.
                    tracing::warn!(error = ?code, "a partition's position is out of range; checking owned partitions");
                    self.check_positions()?;
                    true
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka fetch error");
                    true
                }
                None => true,
            };
            // The rebalance callback runs inside poll: an error it raised must stop the loop before anything
            // below (a caught-up check) reads the state it left.
            if let Some(error) = self.consumer.context().take_fatal() {
                return Err(error);
            }
            self.since_report += 1;
            if idle || self.since_report >= 256 {
                self.ops.buffer(self.buffer.rows(), self.buffer.bytes(), self.paused);
                self.since_report = 0;
            }
            if idle && self.targets.is_some() {
                self.cover_gaps();
                self.refresh_committed()?;
            }
            let due = self.buffer.records() >= buffer_cfg.flush_batch_size.get()
                || self.buffer.bytes() >= half_cap
                // Reading the clock per record shows in profiles: check the interval when idle or every 256 records.
                || ((idle || self.since_report == 0)
                    && self.buffer.first_record_at().is_some_and(|t| t.elapsed() >= buffer_cfg.flush_interval.get()))
                // Checked when idle or every 256 records, not per record: it walks every partition.
                || (self.targets.is_some() && (idle || self.since_report == 0) && self.all_consumed());
            if (idle || self.since_report == 0) && self.targets.is_none() {
                self.watch_stall();
            }
            if due && self.pending.is_none() {
                self.pending = self.buffer.take()?;
                self.attach_gaps();
                // The gauges follow the flush at once, not at the next idle poll.
                self.ops.buffer(self.buffer.rows(), self.buffer.bytes(), self.paused);
                self.hand_over()?;
            }
            if self.pending.is_some() && !self.paused {
                self.pause(true);
            }
            // A pending flush can vanish without being handed over (a resync, or all its partitions
            // revoked): consumption must not stay paused for a flush that no longer exists.
            if self.pending.is_none() && self.paused {
                self.pause(false);
            }
            if self.targets.is_some()
                && self.pending.is_none()
                && self.buffer.ranges().is_empty()
                && self.shared.in_flight.load(Ordering::SeqCst) == 0
                && self.all_committed()
            {
                tracing::info!("caught up with the high watermarks read at start");
                break;
            }
        }
        // Clean stop: whatever is buffered is flushed and committed before the process exits.
        if let Some(batch) = self.pending.take() {
            self.send_blocking(batch)?;
        }
        if let Some(batch) = self.buffer.take()? {
            self.pending = Some(batch);
            self.attach_gaps();
            if let Some(batch) = self.pending.take() {
                self.send_blocking(batch)?;
            }
        }
        Ok(())
    }

    /// Moves the recorded gaps of the partitions in the pending flush into it.
    fn attach_gaps(&mut self) {
        let Some(batch) = self.pending.as_mut() else { return };
        let covered: Vec<TopicPartition> =
            self.gaps.keys().filter(|tp| batch.ranges.contains_key(*tp)).cloned().collect();
        for tp in covered {
            if let Some(gap) = self.gaps.remove(&tp) {
                batch.gaps.insert(tp, gap);
            }
        }
    }

    /// Readiness turns false while buffered data has waited more than [`STALL_FLUSH_INTERVALS`] flush
    /// intervals for a commit (a hung catalog, a stuck flush), and true again once commits flow.
    fn watch_stall(&self) {
        let waiting = self.buffer.records() > 0 || self.shared.in_flight.load(Ordering::SeqCst) > 0;
        let limit = self.config.buffer.flush_interval.get() * STALL_FLUSH_INTERVALS;
        let since = lock(&self.shared.last_commit_at).map(|t| t.elapsed());
        let stalled = waiting && since.is_some_and(|s| s > limit);
        self.ops.stalled(
            stalled.then(|| format!("no commit for {}s while data is buffered", since.unwrap_or_default().as_secs())),
        );
    }

    /// After an out-of-range fetch: checks every owned partition's position against its watermarks.
    fn check_positions(&mut self) -> Result<()> {
        let policy = self.config.kafka.on_data_loss;
        let owned: Vec<TopicPartition> = self.assigned.iter().cloned().collect();
        for tp in owned {
            let Some(next) = self.buffer.position(&tp) else { continue };
            match source::check_position(self.consumer, &tp, next, policy)? {
                Resume::At(_) => {}
                Resume::AfterGap(gap) => {
                    self.record_gap(&tp, gap);
                    self.consumer.seek(&tp.topic, tp.partition, Offset::Offset(gap.end), METADATA_TIMEOUT).map_err(
                        |e| {
                            Error::new(ErrorKind::Transient, "cannot seek to the low watermark")
                                .with("partition", &tp)
                                .source(e)
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    fn record_gap(&mut self, tp: &TopicPartition, gap: OffsetRange) {
        self.ops.metrics.offsets_lost.inc_by(u64::try_from(gap.end - gap.start).unwrap_or_default());
        self.gaps.entry(tp.clone()).and_modify(|g| g.end = g.end.max(gap.end)).or_insert(gap);
    }

    fn apply(&mut self, change: AssignmentChange) -> Result<()> {
        match change {
            AssignmentChange::Assigned(partitions) => {
                for (tp, start) in partitions {
                    if let Some(next) = start.recorded {
                        // Also after a gap: the next range starts at the table's progress and so covers the
                        // gap, which the flush records in its summary.
                        self.buffer.set_position(tp.clone(), next);
                    }
                    if let Some(gap) = start.gap {
                        self.record_gap(&tp, gap);
                    }
                    self.ops.assigned(&tp, start.recorded);
                    if start.recorded.is_none() {
                        self.unrecorded.insert(tp.clone());
                    }
                    self.assigned.insert(tp);
                }
                if self.paused {
                    self.pause(true);
                }
            }
            AssignmentChange::Revoked(partitions) => {
                if let Some(pending) = self.pending.take() {
                    self.pending = pending.without(&partitions)?;
                }
                let dropped = self.buffer.drop_partitions(&partitions)?;
                if dropped > 0 {
                    tracing::info!(rows = dropped, "dropped buffered rows of revoked partitions");
                }
                for tp in &partitions {
                    self.assigned.remove(tp);
                    self.ops.revoked(tp);
                    self.counters.remove(tp);
                    self.last_counters = None;
                    self.unrecorded.remove(tp);
                    self.first_read.remove(tp);
                    self.gaps.remove(tp);
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) -> Result<()> {
        use rdkafka::message::Headers;
        // Collected only when the table stores headers: no per-record allocation otherwise.
        let headers: Option<Vec<crate::buffer::Header<'_>>> =
            match (self.config.kafka.include_headers, message.headers()) {
                // rdkafka panics on a header name that is not UTF-8; such a record goes to the error policy.
                (true, Some(h)) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    h.iter().map(|header| (header.key, header.value)).collect::<Vec<_>>()
                })) {
                    Ok(headers) => Some(headers),
                    Err(_) => {
                        let reason = "a header name is not valid UTF-8".to_owned();
                        return self.invalid(
                            message.topic(),
                            message.partition(),
                            message.offset(),
                            "header_not_utf8",
                            reason,
                        );
                    }
                },
                (true, None) => Some(Vec::new()),
                (false, _) => None,
            };
        let meta = RecordMeta {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key(),
            headers: headers.as_deref(),
        };
        // Rare: a partition the table has never recorded remembers where this instance started reading it.
        if !self.unrecorded.is_empty() {
            let tp = TopicPartition { topic: meta.topic.to_owned(), partition: meta.partition };
            if self.unrecorded.remove(&tp) {
                self.first_read.insert(tp, meta.offset);
            }
        }
        // Records come in runs from one partition: reuse its counters without building a key per record.
        let same = self
            .last_counters
            .as_ref()
            .is_some_and(|(tp, _, _)| tp.partition == meta.partition && tp.topic == meta.topic);
        if !same {
            let tp = TopicPartition { topic: meta.topic.to_owned(), partition: meta.partition };
            let metrics = &self.ops.metrics;
            let (records, bytes) = self.counters.entry(tp.clone()).or_insert_with(|| {
                let labels = [meta.topic, &meta.partition.to_string()];
                (metrics.records_consumed.with_label_values(&labels), metrics.bytes_consumed.with_label_values(&labels))
            });
            self.last_counters = Some((tp, records.clone(), bytes.clone()));
        }
        if let Some((_, records, bytes)) = &self.last_counters {
            records.inc();
            bytes.inc_by((message.payload_len() + meta.key.map_or(0, <[u8]>::len)) as u64);
        }
        for _ in 0..3 {
            match self.buffer.push(&meta, message.payload())? {
                Outcome::Appended => return Ok(()),
                Outcome::NeedsColumns(additions) => self.evolve(&additions)?,
                Outcome::Invalid { kind, reason } => {
                    return self.invalid(meta.topic, meta.partition, meta.offset, kind, reason);
                }
            }
        }
        Err(Error::new(ErrorKind::Internal, "a record still needs new columns after the schema update")
            .with("topic", meta.topic)
            .with("partition", meta.partition)
            .with("offset", meta.offset))
    }

    /// Routes a record that cannot be stored per `errors.policy`.
    fn invalid(&mut self, topic: &str, partition: i32, offset: i64, kind: &'static str, reason: String) -> Result<()> {
        self.ops.metrics.decode_errors.with_label_values(&[kind]).inc();
        match self.config.errors.policy {
            ErrorPolicy::Skip => {
                self.ops.metrics.records_skipped.inc();
                tracing::debug!(topic, partition, offset, reason, "skipped a record");
                self.buffer.skip(topic, partition, offset);
                Ok(())
            }
            ErrorPolicy::Fail | ErrorPolicy::DeadLetter => {
                Err(Error::new(ErrorKind::InvalidRecord, format!("cannot store a record: {reason}"))
                    .with("topic", topic)
                    .with("partition", partition)
                    .with("offset", offset))
            }
        }
    }

    /// Adds columns to the table, at most once per `schema_update_min_interval`; the polling thread waits
    /// (records stay in Kafka) until the interval has passed.
    fn evolve(&mut self, additions: &[schema::Addition]) -> Result<()> {
        let interval = self.config.schema_evolution.schema_update_min_interval.get();
        if let Some(wait) =
            self.last_schema_update.map(|t| interval.saturating_sub(t.elapsed())).filter(|w| !w.is_zero())
        {
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "waiting for schema_update_min_interval before the next schema update"
            );
            std::thread::sleep(wait);
        }
        let table = self.runtime.block_on(catalog::add_columns(self.table_ref, additions))?;
        self.last_schema_update = Some(Instant::now());
        self.ops.metrics.schema_columns_added.inc_by(additions.len() as u64);
        append(
            self.txlog,
            self.ops,
            Record::SchemaChange {
                schema_id: table.metadata().current_schema_id(),
                columns: additions.iter().map(schema::Addition::full_name).collect(),
            },
        )?;
        self.buffer.set_schema(table.metadata().current_schema().clone())
    }

    /// After a fenced flush: drop everything not yet committed and restart every owned partition from the
    /// table's progress (which another writer may have advanced).
    fn resync(&mut self) -> Result<()> {
        let owned: Vec<TopicPartition> = self.assigned.iter().cloned().collect();
        self.pending = None;
        let dropped = self.buffer.drop_partitions(&owned)?;
        let table = self.runtime.block_on(self.table_ref.load())?;
        let recorded = progress::recorded_for(table.metadata(), &owned)?;
        for tp in &owned {
            if let Some(&next) = recorded.get(tp) {
                self.buffer.set_position(tp.clone(), next);
            }
            // Never committed yet: back to the first offset this instance read (with `latest`, `End` would skip
            // what the fenced flush held), else per auto_offset_reset.
            let start = recorded.get(tp).or_else(|| self.first_read.get(tp)).copied();
            let offset = source::start_offset(start, self.config.kafka.auto_offset_reset);
            self.consumer.seek(&tp.topic, tp.partition, offset, METADATA_TIMEOUT).map_err(|e| {
                Error::new(ErrorKind::Transient, "cannot seek back to the table's progress")
                    .with("partition", tp)
                    .source(e)
            })?;
        }
        lock(&self.shared.committed).extend(recorded);
        tracing::warn!(
            partitions = owned.len(),
            dropped_rows = dropped,
            "a flush was fenced; restarted owned partitions from the table's progress"
        );
        Ok(())
    }

    fn hand_over(&mut self) -> Result<()> {
        if self.pending.is_none() || self.shared.in_flight.load(Ordering::SeqCst) > 0 {
            return Ok(());
        }
        let Some(batch) = self.pending.take() else { return Ok(()) };
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(batch) {
            Ok(()) => {
                if self.paused {
                    self.pause(false);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.pending = Some(batch);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::Internal, "the commit task is gone"))
            }
        }
    }

    fn send_blocking(&mut self, batch: FlushBatch) -> Result<()> {
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        self.runtime
            .block_on(self.tx.send(batch))
            .map_err(|_| Error::new(ErrorKind::Internal, "the commit task is gone before the final flush"))
    }

    fn pause(&mut self, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        for tp in &self.assigned {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let result = if pause { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
        match result {
            Ok(()) => {
                if pause != self.paused {
                    let metrics = &self.ops.metrics;
                    if pause { metrics.consumer_pauses.inc() } else { metrics.consumer_resumes.inc() }
                }
                self.paused = pause;
                tracing::debug!(
                    partitions = self.assigned.len(),
                    paused = pause,
                    "buffer full; consumption paused until the flush in flight is done"
                );
            }
            Err(e) => tracing::warn!(error = %e, paused = pause, "cannot pause or resume partitions"),
        }
    }

    /// With `--until-caught-up`: whether every partition has been consumed up to its start high watermark.
    fn all_consumed(&self) -> bool {
        let Some(targets) = &self.targets else { return false };
        let committed = lock(&self.shared.committed);
        let consumed = targets.iter().all(|(tp, &(low, high))| {
            let position = self.buffer.position(tp).or_else(|| committed.get(tp).copied());
            position.is_some_and(|p| p >= high)
                || self.nothing_to_read(tp, low, high, committed.get(tp).copied(), &committed)
        });
        consumed && !self.buffer.ranges().is_empty()
    }

    fn all_committed(&self) -> bool {
        let Some(targets) = &self.targets else { return false };
        let committed = lock(&self.shared.committed);
        targets.iter().all(|(tp, &(low, high))| {
            let next = committed.get(tp).copied();
            next.is_some_and(|n| n >= high) || self.nothing_to_read(tp, low, high, next, &committed)
        })
    }

    /// Whether a partition has nothing this run must read: empty and never recorded, or never recorded with
    /// `auto_offset_reset = "latest"` — unless its topic is recorded (a partition added to the topic starts
    /// at its beginning, see `source`).
    fn nothing_to_read(
        &self,
        tp: &TopicPartition,
        low: i64,
        high: i64,
        recorded: Option<i64>,
        committed: &HashMap<TopicPartition, i64>,
    ) -> bool {
        let topic_recorded = || committed.keys().any(|known| known.topic == tp.topic);
        high <= low && recorded.is_none()
            || (recorded.is_none() && self.config.kafka.auto_offset_reset == OffsetReset::Latest && !topic_recorded())
    }

    /// With `--until-caught-up` and several instances, partitions other instances own reach the high
    /// watermark only in the table: read the table's progress when idle, at most once a second.
    fn refresh_committed(&mut self) -> Result<()> {
        let Some(targets) = &self.targets else { return Ok(()) };
        if self.last_refresh.elapsed() < Duration::from_secs(1) || self.all_committed() {
            return Ok(());
        }
        self.last_refresh = Instant::now();
        let partitions: Vec<TopicPartition> = targets.keys().cloned().collect();
        let table = self.runtime.block_on(self.table_ref.load())?;
        let recorded = progress::recorded_for(table.metadata(), &partitions)?;
        let mut committed = lock(&self.shared.committed);
        for (tp, next) in recorded {
            let entry = committed.entry(tp).or_insert(next);
            *entry = (*entry).max(next);
        }
        Ok(())
    }

    /// When the consumer's position is past the last delivered record (transaction markers, compaction),
    /// records the real position so the partition can be committed as caught up.
    fn cover_gaps(&mut self) {
        let Some(targets) = &self.targets else { return };
        let Ok(positions) = self.consumer.position() else { return };
        for element in positions.elements() {
            let tp = TopicPartition { topic: element.topic().to_owned(), partition: element.partition() };
            let (Some(&(_, high)), Offset::Offset(position)) = (targets.get(&tp), element.offset()) else { continue };
            if position >= high && self.buffer.position(&tp).is_some_and(|p| p < position) {
                self.buffer.cover(&tp, position);
            }
        }
    }
}

/// What the commit task works with.
struct Committer {
    table_ref: TableRef,
    table_uuid: uuid::Uuid,
    consumer: Arc<KafkaConsumer>,
    group: String,
    write: WriteOptions,
    shared: Arc<Shared>,
    txlog: Arc<Mutex<TxLog>>,
    ops: Arc<Ops>,
}

async fn commit_loop(mut rx: mpsc::Receiver<FlushBatch>, mut table: iceberg::table::Table, committer: Committer) {
    let shared = committer.shared.clone();
    while let Some(batch) = rx.recv().await {
        match committer.commit_one(&table, batch).await {
            Ok(updated) => {
                table = updated;
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Err(error) if error.kind() == ErrorKind::Fenced => {
                // Never retried: another writer owns this progress now. The files are gone (commit_one),
                // the polling thread restarts from the table.
                tracing::warn!(error = %error, "flush fenced: another writer committed these offsets; discarded it");
                committer.ops.metrics.commits_fenced.inc();
                shared.resync.store(true, Ordering::SeqCst);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Err(error) => {
                // Reported once, by `run`'s caller; logging it here too would print it twice.
                *lock(&shared.failed) = Some(error);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

impl Committer {
    async fn commit_one(&self, table: &iceberg::table::Table, mut batch: FlushBatch) -> Result<iceberg::table::Table> {
        let Self { table_ref, table_uuid, consumer, group, write, shared, txlog, ops } = self;
        let (write, group) = (*write, group.as_str());
        let started = Instant::now();
        let commit_id = CommitId::generate();
        let intent = Record::Intent {
            commit_id: commit_id.to_string(),
            table: table_ref.table_name(),
            data_dir: format!("{}/data", table.metadata().location().trim_end_matches('/')),
            ranges: batch
                .ranges
                .iter()
                .map(|(tp, r)| RangeRecord {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    start: r.start,
                    end: r.end,
                })
                .collect(),
            schema_id: batch.chunks.last().map_or(table.metadata().current_schema_id(), |c| c.schema.schema_id()),
        };
        append(txlog, ops, intent.clone())?;
        fault::hit(Point::AfterIntent);
        // The chunks are handed over by value so each is freed once written: the flush in flight holds its
        // rows or their encoded form, not both.
        let files = sink::write(table, std::mem::take(&mut batch.chunks), commit_id.as_str(), write).await?;
        let paths: Vec<String> = files.iter().map(|f| f.file_path().to_owned()).collect();
        let files_record = Record::Files { commit_id: commit_id.to_string(), files: paths };
        append(txlog, ops, files_record.clone())?;
        fault::hit(Point::AfterDataFiles);
        let file_count = files.len();
        let file_bytes: u64 = files.iter().map(iceberg::spec::DataFile::file_size_in_bytes).sum();
        for file in &files {
            ops.metrics.data_file_size.observe(file.file_size_in_bytes() as f64);
        }
        let request = CommitRequest {
            commit_id: &commit_id,
            files,
            ranges: &batch.ranges,
            gaps: &batch.gaps,
            group,
            table_uuid: *table_uuid,
        };
        let bases = Mutex::new(Vec::new());
        // Each attempt's base is durable before the attempt is sent: recovery needs it to tell whether an
        // attempt with an unknown outcome could still land.
        let on_attempt = |base: Option<i64>| {
            append(txlog, ops, Record::Attempt { commit_id: commit_id.to_string(), base_snapshot_id: base })
        };
        let commit_started = Instant::now();
        let outcome = commit::commit(table_ref, request, &bases, &on_attempt).await;
        ops.metrics.commit_duration.observe(commit_started.elapsed().as_secs_f64());
        let committed = match outcome {
            Ok(committed) => committed,
            Err(error) if error.kind() == ErrorKind::Fenced => {
                let pending = crate::txlog::Pending { intent, files: Some(files_record), bases: lock(&bases).clone() };
                match recovery::abort(table, &pending).await? {
                    recovery::Aborted::Deleted(deleted) => {
                        append(
                            txlog,
                            ops,
                            Record::Aborted { commit_id: commit_id.to_string(), reason: error.to_string() },
                        )?;
                        tracing::info!(%commit_id, deleted_files = deleted, "deleted the data files of the fenced flush");
                    }
                    recovery::Aborted::Referenced => {
                        // Left pending: the next start's recovery records it as landed.
                        tracing::warn!(%commit_id, "the fenced flush's files are referenced by the table; kept them");
                    }
                }
                return Err(error);
            }
            // Unresolved (the catalog kept failing): the intent stays pending and the next start resolves it.
            Err(error) => return Err(error),
        };
        fault::hit(Point::AfterCommit);
        append(txlog, ops, Record::Committed { commit_id: commit_id.to_string(), snapshot_id: committed.snapshot_id })?;
        fault::hit(Point::AfterCommittedRecord);

        // Kafka's group offsets are for lag tools only; the table is the truth. Synchronous, off the async workers.
        let mut tpl = TopicPartitionList::new();
        for (tp, range) in &batch.ranges {
            if let Err(e) = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(range.end)) {
                tracing::warn!(partition = %tp, error = %e, "cannot prepare the Kafka offset commit");
            }
        }
        let kafka = consumer.clone();
        match tokio::task::spawn_blocking(move || kafka.commit(&tpl, CommitMode::Sync)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot commit offsets to Kafka (lag monitoring only; the table has them)")
            }
            Err(e) => tracing::warn!(error = %e, "the Kafka offset commit task failed"),
        }

        {
            let mut committed_offsets = lock(&shared.committed);
            for (tp, range) in &batch.ranges {
                committed_offsets.insert(tp.clone(), range.end);
            }
        }
        {
            let mut summary = lock(&shared.summary);
            summary.rows += batch.rows as u64;
            summary.skipped += batch.skipped as u64;
            summary.commits += 1;
            summary.files += file_count as u64;
        }
        *lock(&shared.last_commit_at) = Some(Instant::now());
        ops.stalled(None);
        let metrics = &ops.metrics;
        metrics.flushes.inc();
        metrics.flush_duration.observe(started.elapsed().as_secs_f64());
        metrics.data_files.inc_by(file_count as u64);
        metrics.data_file_bytes.inc_by(file_bytes);
        if let Some(ts) = batch.max_timestamp_ms {
            metrics.newest_committed_timestamp_ms.set(metrics.newest_committed_timestamp_ms.get().max(ts));
        }
        ops.committed(
            LastCommit {
                snapshot_id: committed.snapshot_id,
                at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                files: file_count,
                rows: batch.rows,
            },
            batch.ranges.iter().map(|(tp, r)| (tp.clone(), r.end)),
        );
        let offsets: Vec<String> = batch.ranges.iter().map(|(tp, r)| format!("{tp}:[{},{})", r.start, r.end)).collect();
        tracing::info!(
            table = %table_ref.table_name(),
            snapshot_id = committed.snapshot_id,
            %commit_id,
            rows = batch.rows,
            skipped = batch.skipped,
            files = file_count,
            bytes = file_bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            offsets = %offsets.join(" "),
            "committed flush"
        );
        Ok(committed.table)
    }
}
