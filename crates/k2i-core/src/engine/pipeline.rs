//! One table's pipeline on the polling thread: its buffer, flush policy, pending flush, pause reasons and
//! state, the partitions it owns, and what it knows of the table's progress.
//!
//! ```text
//!  polled batch ─► decode stage ─► TableBuffer ─► (policy due) Sealed ─► pending ─► Job::Flush ─► actor
//!                                                                          ▲                         │
//!                 pause(BufferFull) when buffer + pending + in flight hold max_size_mb   Outcome ◄───┘
//! ```
//!
//! At most one flush per table is in flight: while the actor writes and commits flush N, the pipeline keeps
//! decoding into the buffer. If flush N+1 is due before N's outcome is back, it waits as the pending flush
//! and decoding goes on into the buffer; the table's partitions pause (reason `BufferFull`) only when the
//! buffer, the pending flush and the one in flight together hold `buffer.max_size_mb`. (Pausing whenever a
//! flush waits stalled fast formats: librdkafka fetches a resumed partition up to a second later.) Flushes
//! commit in order, so each partition's ranges stay contiguous. A failed table pauses its partitions for
//! good and takes no more records; other tables of the process go on.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio::sync::{mpsc, oneshot};

use super::actor::{self, Job, Outcome};
use super::{IngestSummary, METADATA_TIMEOUT};
use crate::buffer::policy::FlushPolicy;
use crate::buffer::{Header, RecordMeta, TableBuffer};
use crate::config::{BreakingChangeAction, Config, ErrorPolicy};
use crate::decode::Outcome as Decoded;
use crate::error::{Error, ErrorKind, Result};
use crate::flush::Sealed;
use crate::ops::{Ops, ResumeAction};
use crate::progress::{OffsetRange, Progress, TopicPartition};
use crate::source::{self, KafkaConsumer, Resume, Start};

/// Why a table's partitions are paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseReason {
    /// A flush is due while the previous one is still in flight.
    BufferFull,
    /// The table failed.
    Failed,
    /// A record's schema is being fetched from the registry or applied to the table.
    Schema,
    /// A record's schema is a breaking change and `on_breaking_change = "pause"`.
    Breaking,
    /// Dead letters wait for the dead-letter topic's acknowledgement (an outage).
    DeadLetter,
}

/// The set of reasons a table's partitions are paused: paused while it is not empty, whichever reasons
/// come and go (a later issue adds a breaking schema change; one reason lifting never resumes a table
/// another reason still holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseReasons(BTreeSet<PauseReason>);

impl PauseReasons {
    /// Sets or clears one reason.
    pub fn set(&mut self, reason: PauseReason, on: bool) {
        if on {
            self.0.insert(reason);
        } else {
            self.0.remove(&reason);
        }
    }

    /// Whether any reason holds.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `reason` holds.
    pub fn has(&self, reason: PauseReason) -> bool {
        self.0.contains(&reason)
    }
}

/// What a table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    /// Consuming.
    Running,
    /// Its partitions are paused for at least one reason.
    Paused,
    /// Stopped by an error; the process goes on with its other tables.
    Failed,
}

/// One table's pipeline.
pub struct TablePipeline {
    /// Index in the engine's list (the actor's outcomes carry it).
    pub index: usize,
    /// `namespace.table`.
    pub name: String,
    buffer: TableBuffer,
    policy: FlushPolicy,
    /// Sealed but not yet handed to the actor.
    pending: Option<Sealed>,
    /// Flushes handed to the actor whose outcome is not back yet (at most one while running; the stop may
    /// hand over the pending flush and the rest of the buffer together).
    in_flight: usize,
    /// The hot-view tag and the memory of each flush handed to the actor, oldest first (flushes end in order).
    in_flight_bytes: std::collections::VecDeque<(u64, usize)>,
    pause: PauseReasons,
    /// Whether the consumer's partitions of this table are paused right now.
    paused: bool,
    /// The error of the last flush that could not land, until one lands again.
    unlanded: Option<Error>,
    failed: Option<Error>,
    jobs: mpsc::Sender<Job>,
    assigned: HashSet<TopicPartition>,
    /// The table's next offset per partition, as far as this pipeline knows (lookups + own commits).
    committed: HashMap<TopicPartition, i64>,
    /// Offsets skipped because Kafka had deleted them, until the next flush of their partition records them.
    gaps: BTreeMap<TopicPartition, OffsetRange>,
    /// Assigned partitions the table has never recorded, until their first record is read.
    unrecorded: HashSet<TopicPartition>,
    /// The first offset read from each partition the table had never recorded (for a resync).
    first_read: HashMap<TopicPartition, i64>,
    /// Per-partition record and byte counters, looked up once per partition, not per record.
    counters: HashMap<TopicPartition, (IntCounter, IntCounter)>,
    last_counters: Option<(TopicPartition, IntCounter, IntCounter)>,
    summary: IngestSummary,
    /// When the oldest record not yet committed arrived (of a flush pending or in flight; the buffer keeps
    /// its own): the readiness stall clock.
    waiting_since: Option<Instant>,
    /// A progress lookup in flight (`--until-caught-up` refreshes).
    refresh: Option<oneshot::Receiver<Result<Progress>>>,
    /// The stop has begun: nothing more will be consumed.
    stopping: bool,
    /// What the table waits for before it decodes again (its partitions are paused, positioned at the first
    /// record not consumed).
    parked: Option<Parked>,
    /// An operator's decision for the records of a schema id that was a breaking change.
    decisions: HashMap<u32, ResumeAction>,
    /// The schema id that paused the table last (for a decision that arrives between two pauses).
    last_breaking: Option<u32>,
    /// The dead-letter producer (`errors.policy` or `on_breaking_change` = `dead-letter`).
    dead_letters: Option<crate::dead_letter::DeadLetters>,
    /// The table's hot view (the buffer publishes to it; a resync or a failure clears it).
    hot: Arc<crate::buffer::hot::HotTable>,
    /// Whether the read-state RPC serves the hot view.
    reads: bool,
}

/// A table parked on a record's schema.
#[derive(Debug)]
struct Parked {
    schema_id: u32,
    /// The record's topic (for the subject of a retry).
    topic: String,
    /// The record's partition: if it is revoked, the park ends (its next owner meets the record).
    partition: i32,
    wait: Wait,
}

#[derive(Debug)]
enum Wait {
    /// The actor fetches the schema; after a failure, asked again at `retry_at`.
    Fetch { retry_at: Option<Instant>, failures: u32 },
    /// The actor applies a compatible change.
    Change,
    /// A breaking change: until an operator's resume.
    Breaking { reason: String, message: String },
    /// An operator's retry: the actor tries the subject's latest schema.
    Reread,
}

/// Whether a record was consumed or the table parked on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Park,
}

impl TablePipeline {
    /// A pipeline whose flushes go to `jobs`.
    pub fn new(
        index: usize,
        name: String,
        buffer: TableBuffer,
        hot: Arc<crate::buffer::hot::HotTable>,
        config: &Config,
        jobs: mpsc::Sender<Job>,
    ) -> Self {
        Self {
            hot,
            reads: config.rpc.enabled,
            index,
            name,
            buffer,
            policy: FlushPolicy::new(&config.buffer),
            pending: None,
            in_flight: 0,
            in_flight_bytes: std::collections::VecDeque::new(),
            pause: PauseReasons::default(),
            paused: false,
            failed: None,
            unlanded: None,
            jobs,
            assigned: HashSet::new(),
            committed: HashMap::new(),
            gaps: BTreeMap::new(),
            unrecorded: HashSet::new(),
            first_read: HashMap::new(),
            counters: HashMap::new(),
            last_counters: None,
            summary: IngestSummary::default(),
            waiting_since: None,
            refresh: None,
            stopping: false,
            parked: None,
            decisions: HashMap::new(),
            last_breaking: None,
            dead_letters: None,
        }
    }

    /// Seals what was decoded since the last publication, so readers of the hot view see it now (with the
    /// read-state RPC on, every few milliseconds).
    pub fn publish(&mut self) -> Result<()> {
        if self.has_unpublished() { self.buffer.publish() } else { Ok(()) }
    }

    /// Whether rows were decoded that readers of the hot view cannot see yet.
    pub fn has_unpublished(&self) -> bool {
        self.failed.is_none() && self.buffer.unpublished() > 0
    }

    /// Sends dead letters through `dead_letters`.
    pub fn with_dead_letters(mut self, dead_letters: Option<crate::dead_letter::DeadLetters>) -> Self {
        self.dead_letters = dead_letters;
        self
    }

    /// Running, paused or failed.
    pub fn state(&self) -> TableState {
        if self.failed.is_some() {
            TableState::Failed
        } else if !self.pause.any() {
            TableState::Running
        } else {
            TableState::Paused
        }
    }

    /// What this table did so far.
    pub fn summary(&self) -> &IngestSummary {
        &self.summary
    }

    /// The error that stopped the table.
    pub fn take_error(&mut self) -> Option<Error> {
        self.failed.take()
    }

    /// Stops the table: its partitions pause for good, nothing more is flushed (the last commit is where
    /// the next start resumes).
    pub fn fail(&mut self, error: Error, consumer: &KafkaConsumer, ops: &Ops) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(table = %self.name, error = %error.with_causes(), "the table stopped");
        ops.table_failed(error.to_string());
        self.hot.fail(error.to_string());
        self.failed = Some(error);
        self.pending = None;
        self.parked = None;
        self.pause.set(PauseReason::Failed, true);
        self.apply_pause(consumer, ops);
    }

    /// Whether a flush of this table is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Records the table's known progress (start lookup, refreshes): never moves a partition backwards.
    pub fn learn(&mut self, progress: impl IntoIterator<Item = (TopicPartition, i64)>) {
        for (tp, next) in progress {
            let entry = self.committed.entry(tp).or_insert(next);
            *entry = (*entry).max(next);
        }
    }

    /// The table's known next offset of a partition.
    pub fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.committed.get(tp).copied()
    }

    /// Whether the table records any partition of `topic`.
    pub fn records_topic(&self, topic: &str) -> bool {
        self.committed.keys().any(|tp| tp.topic == topic)
    }

    /// The offset after the last consumed record of a partition (or where it was assigned).
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.buffer.position(tp)
    }

    /// How many more records the buffer takes before `flush_batch_size` makes it due (at least 1), so a
    /// polled batch never overshoots the trigger.
    pub fn room(&self) -> usize {
        self.policy.max_records.saturating_sub(self.buffer.records()).max(1)
    }

    /// Whether anything was consumed since the last flush.
    pub fn has_buffered(&self) -> bool {
        !self.buffer.ranges().is_empty()
    }

    /// Marks a partition consumed up to `end` although no record was delivered (trailing transaction
    /// markers, compaction), for `--until-caught-up`.
    pub fn cover(&mut self, tp: &TopicPartition, end: i64) {
        if self.buffer.position(tp).is_some_and(|p| p < end) {
            self.buffer.cover(tp, end);
        }
    }

    /// Partitions assigned to this table, with where they start.
    pub fn assign(&mut self, partitions: Vec<(TopicPartition, Start)>, consumer: &KafkaConsumer, ops: &Ops) {
        let mut added = TopicPartitionList::new();
        for (tp, _) in &partitions {
            added.add_partition(&tp.topic, tp.partition);
        }
        for (tp, start) in partitions {
            if let Some(next) = start.recorded {
                // Also after a gap: the next range starts at the table's progress and so covers the gap,
                // which the flush records in its summary.
                self.buffer.set_position(tp.clone(), next);
                self.hot.start_partition(tp.clone(), next);
                self.learn([(tp.clone(), next)]);
            }
            if let Some(gap) = start.gap {
                self.record_gap(&tp, gap, ops);
            }
            ops.assigned(&tp, start.recorded);
            if start.recorded.is_none() {
                self.unrecorded.insert(tp.clone());
            }
            self.assigned.insert(tp);
        }
        // Newly assigned partitions follow the table's state explicitly: librdkafka keeps a partition paused by
        // the application across a revoke and a later assignment, so one paused before it was taken away
        // would otherwise never be fetched again.
        let result = if self.pause.any() { consumer.pause(&added) } else { consumer.resume(&added) };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused = self.pause.any(), "cannot pause or resume newly assigned partitions");
        }
        // The assignment read the table as it is now; readers' committed part catches up with it (until then the
        // hot view holds back partitions that start beyond it). A full queue skips it: the next commit catches up.
        if self.reads {
            let _ = self.jobs.try_send(Job::Refresh);
        }
    }

    /// Partitions taken away: their buffered rows and their part of the pending flush are dropped (the next
    /// owner re-reads them from the table's progress).
    pub fn revoke(&mut self, partitions: &[TopicPartition], ops: &Ops) -> Result<()> {
        if let Some(pending) = self.pending.take() {
            let tag = pending.meta().hot;
            self.pending = pending.without(partitions)?;
            if self.pending.is_none() {
                self.hot.forget(tag);
            }
        }
        if self.pending.is_none() && self.in_flight == 0 {
            self.waiting_since = None;
        }
        if let Some(parked) = &self.parked
            && partitions.iter().any(|tp| tp.partition == parked.partition && tp.topic == parked.topic)
        {
            tracing::info!(table = %self.name, schema_id = parked.schema_id, "the parked record's partition was revoked; the park ends");
            self.end_park(ops);
        }
        let dropped = self.buffer.drop_partitions(partitions)?;
        if dropped > 0 {
            tracing::info!(table = %self.name, rows = dropped, "dropped buffered rows of revoked partitions");
        }
        for tp in partitions {
            self.assigned.remove(tp);
            ops.revoked(tp);
            self.counters.remove(tp);
            self.unrecorded.remove(tp);
            self.first_read.remove(tp);
            self.gaps.remove(tp);
        }
        self.last_counters = None;
        Ok(())
    }

    /// The decoder stage: decodes a batch of polled records of this table into its buffer, in order. A
    /// later issue runs this on a worker pool sharded by partition; the batch is the unit it will hand over.
    ///
    /// A record whose schema must be fetched or applied first, or that a breaking change pauses, parks the
    /// table: it and the table's later records of the batch are not consumed, the table's partitions pause
    /// and seek back to the first record not consumed, and they resume once the actor's outcome is back —
    /// the polling thread never waits for the registry or the catalog, and other tables go on.
    pub fn decode<'m>(
        &mut self,
        messages: impl Iterator<Item = &'m BorrowedMessage<'m>>,
        consumer: &KafkaConsumer,
        config: &Config,
        ops: &Ops,
    ) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        let mut rewind: Vec<(TopicPartition, i64)> = Vec::new();
        for message in messages {
            if self.parked.is_none() && self.record(message, config, ops)? == Flow::Go {
                continue;
            }
            // The first record of each partition not consumed: every earlier one of the batch was.
            if !rewind.iter().any(|(tp, _)| tp.topic == message.topic() && tp.partition == message.partition()) {
                let tp = TopicPartition { topic: message.topic().to_owned(), partition: message.partition() };
                rewind.push((tp, message.offset()));
            }
        }
        if !rewind.is_empty() {
            self.apply_pause(consumer, ops);
            for (tp, at) in rewind {
                if let Err(e) = consumer.seek(&tp.topic, tp.partition, Offset::Offset(at), METADATA_TIMEOUT) {
                    // Revoked during this batch's poll: the next owner reads it from the table's progress.
                    let owned = consumer
                        .assignment()
                        .map(|a| a.find_partition(&tp.topic, tp.partition).is_some())
                        .unwrap_or(true);
                    if owned {
                        return Err(Error::new(
                            ErrorKind::Transient,
                            "cannot seek back to the first record not consumed",
                        )
                        .with("partition", &tp)
                        .source(e));
                    }
                    tracing::debug!(partition = %tp, "not seeking a partition revoked meanwhile");
                }
            }
        }
        Ok(())
    }

    /// Parks the table (see [`TablePipeline::decode`]).
    fn park(&mut self, parked: Parked) {
        let reason =
            if matches!(parked.wait, Wait::Breaking { .. }) { PauseReason::Breaking } else { PauseReason::Schema };
        self.pause.set(reason, true);
        self.parked = Some(parked);
    }

    /// The table decodes again.
    fn unpark(&mut self, consumer: &KafkaConsumer, ops: &Ops) {
        self.end_park(ops);
        self.apply_pause(consumer, ops);
    }

    /// Forgets the park and its pause reasons (the partitions resume at the next `apply_pause`).
    fn end_park(&mut self, ops: &Ops) {
        if self.parked.take().is_some_and(|p| matches!(p.wait, Wait::Breaking { .. } | Wait::Reread)) {
            ops.metrics.schema_paused.set(0);
        }
        self.pause.set(PauseReason::Schema, false);
        self.pause.set(PauseReason::Breaking, false);
        ops.schema(None);
    }

    /// Why the last flush could not land, while none has landed since (taken: a batch run stops on it).
    pub fn take_unlanded(&mut self) -> Option<Error> {
        self.unlanded.take()
    }

    /// Why the table is paused by a breaking schema change, if it is.
    pub fn breaking_pause(&self) -> Option<String> {
        match &self.parked {
            Some(Parked { schema_id, wait: Wait::Breaking { reason, .. }, .. }) => Some(format!(
                "table {} paused by a breaking schema change in schema id {schema_id}: {reason}",
                self.name
            )),
            _ => None,
        }
    }

    /// Asks the actor again for a schema whose fetch failed, once its backoff has passed.
    pub fn tick(&mut self, now: Instant) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        if let Some(Parked { schema_id, wait: Wait::Fetch { retry_at, .. }, .. }) = &mut self.parked
            && retry_at.is_some_and(|t| t <= now)
        {
            *retry_at = None;
            let schema_id = *schema_id;
            self.jobs.blocking_send(Job::Resolve { schema_id }).map_err(|_| actor::gone(&self.name))?;
        }
        Ok(())
    }

    /// An operator's resume of a table paused by a breaking schema change.
    pub fn resume(&mut self, action: ResumeAction, consumer: &KafkaConsumer, config: &Config, ops: &Ops) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        // A decision that arrives while the table is not parked on the breaking record (a retry is checking it,
        // or its outcome just resumed the table and the record is about to park it again) applies to the schema
        // id that paused it last: never lost between the two.
        let parked_on_breaking = matches!(&self.parked, Some(Parked { wait: Wait::Breaking { .. }, .. }));
        let decision =
            action == ResumeAction::Skip || (action == ResumeAction::DeadLetter && self.dead_letters.is_some());
        if !parked_on_breaking {
            if decision && let Some(schema_id) = self.last_breaking {
                tracing::info!(table = %self.name, schema_id, action = ?action, "resume decision recorded for the schema id that paused the table");
                self.decisions.insert(schema_id, action);
            }
            return Ok(());
        }
        let Some(Parked { schema_id, topic, wait: Wait::Breaking { message, reason }, .. }) = &self.parked else {
            return Ok(());
        };
        let schema_id = *schema_id;
        tracing::info!(table = %self.name, schema_id, action = ?action, paused_for = %reason, "resume requested");
        match action {
            ResumeAction::Skip => {
                self.decisions.insert(schema_id, ResumeAction::Skip);
                self.unpark(consumer, ops);
            }
            ResumeAction::DeadLetter if self.dead_letters.is_some() => {
                self.decisions.insert(schema_id, ResumeAction::DeadLetter);
                self.unpark(consumer, ops);
            }
            ResumeAction::DeadLetter => {
                tracing::error!(
                    table = %self.name,
                    schema_id,
                    "cannot dead-letter: errors.dead_letter_topic is not configured; the table stays paused"
                );
            }
            ResumeAction::Retry => {
                let strategy =
                    config.kafka.format.registry.as_ref().map(|r| r.subject_name_strategy).unwrap_or_default();
                let subject = crate::decode::registry::subject(strategy, topic, Some(message))?;
                self.buffer.forget_plans();
                self.jobs.blocking_send(Job::Reread { schema_id, subject }).map_err(|_| actor::gone(&self.name))?;
                if let Some(parked) = &mut self.parked {
                    parked.wait = Wait::Reread;
                }
            }
        }
        Ok(())
    }

    /// A record whose writer schema is a breaking change, per the operator's decision for its schema id or
    /// `on_breaking_change`.
    fn breaking(
        &mut self,
        message: &BorrowedMessage<'_>,
        schema_id: u32,
        reason: String,
        message_name: String,
        config: &Config,
        ops: &Ops,
    ) -> Result<Flow> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        ops.metrics.schema_breaking.inc();
        let decision = self.decisions.get(&schema_id).copied();
        let dead_letter = decision == Some(ResumeAction::DeadLetter)
            || (decision.is_none() && config.schema_evolution.on_breaking_change == BreakingChangeAction::DeadLetter);
        if dead_letter && let Some(letters) = self.dead_letters.as_mut() {
            let why = crate::dead_letter::Why { kind: "breaking_schema", reason: &reason, schema_id: Some(schema_id) };
            letters.send(message, &why);
            ops.metrics.records_dead_lettered.inc();
            ops.metrics.decode_errors.with_label_values(&["breaking_schema"]).inc();
            self.buffer.skip(topic, partition, offset);
            return Ok(Flow::Go);
        }
        let skip = decision == Some(ResumeAction::Skip)
            || (decision.is_none() && config.schema_evolution.on_breaking_change == BreakingChangeAction::SkipMessage);
        if skip {
            ops.metrics.records_skipped.inc();
            ops.metrics.decode_errors.with_label_values(&["breaking_schema"]).inc();
            tracing::debug!(topic, partition, offset, schema_id, reason, "skipped a record of a breaking schema");
            self.buffer.skip(topic, partition, offset);
            return Ok(Flow::Go);
        }
        let strategy = config.kafka.format.registry.as_ref().map(|r| r.subject_name_strategy).unwrap_or_default();
        let subject = crate::decode::registry::subject(strategy, topic, Some(&message_name)).unwrap_or_default();
        match config.schema_evolution.on_breaking_change {
            BreakingChangeAction::Pause => {
                let text = format!(
                    "table {} paused by a breaking schema change: schema id {schema_id} (subject {subject}) at \
                     {topic}/{partition}@{offset}: {reason}; resume with `k2i resume` or POST /resume",
                    self.name
                );
                tracing::error!(table = %self.name, schema_id, subject, topic, partition, offset, reason, "paused by a breaking schema change");
                ops.schema(Some(text));
                ops.metrics.schema_paused.set(1);
                self.last_breaking = Some(schema_id);
                self.park(Parked {
                    schema_id,
                    topic: topic.to_owned(),
                    partition,
                    wait: Wait::Breaking { reason, message: message_name },
                });
                Ok(Flow::Park)
            }
            _ => Err(Error::new(ErrorKind::InvalidRecord, format!("a breaking schema change: {reason}"))
                .with("topic", topic)
                .with("partition", partition)
                .with("offset", offset)
                .with("schema_id", schema_id)
                .with("subject", subject)),
        }
    }

    fn record(&mut self, message: &BorrowedMessage<'_>, config: &Config, ops: &Ops) -> Result<Flow> {
        // Collected only when the table stores headers: no per-record allocation otherwise.
        let headers: Option<Vec<Header<'_>>> = match (config.kafka.include_headers, message.headers()) {
            // rdkafka panics on a header name that is not UTF-8; such a record goes to the error policy.
            (true, Some(h)) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                h.iter().map(|header| (header.key, header.value)).collect::<Vec<_>>()
            })) {
                Ok(headers) => Some(headers),
                Err(_) => {
                    let reason = "a header name is not valid UTF-8".to_owned();
                    return self.invalid(message, "header_not_utf8", reason, config, ops).map(|()| Flow::Go);
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
            let metrics = &ops.metrics;
            let (records, bytes) = self.counters.entry(tp.clone()).or_insert_with(|| {
                let labels = [meta.topic, &meta.partition.to_string()];
                (metrics.records_consumed.with_label_values(&labels), metrics.bytes_consumed.with_label_values(&labels))
            });
            self.last_counters = Some((tp, records.clone(), bytes.clone()));
        }
        for _ in 0..3 {
            match self.buffer.push(&meta, message.payload())? {
                Decoded::Appended => {
                    self.count(message);
                    return Ok(Flow::Go);
                }
                Decoded::NeedsColumns(additions) => self.evolve(additions)?,
                Decoded::Invalid { kind, reason } => {
                    self.count(message);
                    return self.invalid(message, kind, reason, config, ops).map(|()| Flow::Go);
                }
                Decoded::NeedsSchema(schema_id) => {
                    self.park(Parked {
                        schema_id,
                        topic: meta.topic.to_owned(),
                        partition: meta.partition,
                        wait: Wait::Fetch { retry_at: None, failures: 0 },
                    });
                    self.jobs.blocking_send(Job::Resolve { schema_id }).map_err(|_| actor::gone(&self.name))?;
                    return Ok(Flow::Park);
                }
                Decoded::NeedsChange { schema_id, change } => {
                    self.park(Parked {
                        schema_id,
                        topic: meta.topic.to_owned(),
                        partition: meta.partition,
                        wait: Wait::Change,
                    });
                    self.jobs.blocking_send(Job::Change { schema_id, change }).map_err(|_| actor::gone(&self.name))?;
                    return Ok(Flow::Park);
                }
                Decoded::Breaking { schema_id, reason, message: name } => {
                    let flow = self.breaking(message, schema_id, reason, name, config, ops)?;
                    if flow == Flow::Go {
                        self.count(message);
                    }
                    return Ok(flow);
                }
            }
        }
        Err(Error::new(ErrorKind::Internal, "a record still needs new columns after the schema update")
            .with("topic", meta.topic)
            .with("partition", meta.partition)
            .with("offset", meta.offset))
    }

    /// Counts a consumed record (not one the table parked on: it is read again).
    fn count(&self, message: &BorrowedMessage<'_>) {
        if let Some((_, records, bytes)) = &self.last_counters {
            records.inc();
            bytes.inc_by((message.payload_len() + message.key().map_or(0, <[u8]>::len)) as u64);
        }
    }

    /// Routes a record that cannot be stored per `errors.policy`.
    fn invalid(
        &mut self,
        message: &BorrowedMessage<'_>,
        kind: &'static str,
        reason: String,
        config: &Config,
        ops: &Ops,
    ) -> Result<()> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        ops.metrics.decode_errors.with_label_values(&[kind]).inc();
        match config.errors.policy {
            ErrorPolicy::Skip => {
                ops.metrics.records_skipped.inc();
                tracing::debug!(topic, partition, offset, reason, "skipped a record");
                self.buffer.skip(topic, partition, offset);
                Ok(())
            }
            ErrorPolicy::DeadLetter if self.dead_letters.is_some() => {
                let schema_id = match config.kafka.format.kind.needs_registry() {
                    true => message.payload().and_then(|v| crate::decode::framing::split(v).ok()).map(|f| f.schema_id),
                    false => None,
                };
                let why = crate::dead_letter::Why { kind, reason: &reason, schema_id };
                if let Some(letters) = self.dead_letters.as_mut() {
                    letters.send(message, &why);
                }
                ops.metrics.records_dead_lettered.inc();
                tracing::debug!(topic, partition, offset, reason, "dead-lettered a record");
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

    /// Asks the actor for new columns and waits: the record cannot be decoded before the table has them.
    /// The job runs in order with the table's flushes (after the one in flight).
    fn evolve(&mut self, additions: Vec<crate::schema::Addition>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.jobs.blocking_send(Job::Evolve { additions, reply }).map_err(|_| actor::gone(&self.name))?;
        let schema = actor::wait_reply(answer, &self.name)?;
        self.buffer.set_schema(schema)
    }

    /// Seals the buffer when the policy (or `force`, for `--until-caught-up`) says so and no flush is
    /// pending, then hands over what it can. Returns whether a flush was handed over.
    pub fn maybe_flush(
        &mut self,
        now: Option<Instant>,
        force: bool,
        consumer: &KafkaConsumer,
        ops: &Ops,
    ) -> Result<bool> {
        if self.failed.is_some() {
            return Ok(false);
        }
        if self.pending.is_none() {
            let due = force
                || self
                    .policy
                    .due(self.buffer.records(), self.buffer.bytes(), self.buffer.first_record_at(), now)
                    .is_some();
            let first_record_at = self.buffer.first_record_at();
            // Dead-lettered offsets are committed with the flush: only once the topic has them all (and while
            // the table waits for that, it asks again even with nothing buffered, so the pause can lift).
            let settled = if due || self.pause.has(PauseReason::DeadLetter) {
                self.dead_letters_settled(Duration::from_millis(200), ops)?
            } else {
                true
            };
            let due = due && settled;
            self.apply_pause(consumer, ops);
            if due && let Some(batch) = self.buffer.take()? {
                self.waiting_since = self.waiting_since.or(first_record_at).or_else(|| Some(Instant::now()));
                let mut sealed = Sealed::new(batch);
                let covered = self.covered_gaps(&sealed);
                for tp in covered {
                    if let Some(gap) = self.gaps.remove(&tp) {
                        sealed.add_gap(tp, gap);
                    }
                }
                self.pending = Some(sealed);
                // The gauges follow the flush at once, not at the next idle poll.
                ops.buffer(self.buffer.rows(), self.buffer.bytes(), self.paused);
            }
        }
        let handed = self.hand_over()?;
        // Pause while the buffer, the flush waiting for the one in flight and the one in flight together hold
        // the whole cap (rows decode to more than their wire size; the flush trigger is half the cap): memory
        // stays near `max_size_mb`. A pending flush can also vanish without being handed over (a resync, or
        // all its partitions revoked): the sum follows it.
        let held: usize = self.in_flight_bytes.iter().map(|(_, bytes)| bytes).sum::<usize>()
            + self.pending.as_ref().map_or(0, Sealed::bytes);
        let full = held > 0 && self.buffer.bytes().saturating_add(held) >= self.policy.max_bytes.saturating_mul(2);
        self.pause.set(PauseReason::BufferFull, full);
        self.apply_pause(consumer, ops);
        Ok(handed)
    }

    /// Whether every dead letter is acknowledged (waiting up to `wait`); while not, the table pauses and
    /// `/readyz` says why.
    fn dead_letters_settled(&mut self, wait: Duration, ops: &Ops) -> Result<bool> {
        let Some(letters) = self.dead_letters.as_mut() else { return Ok(true) };
        if letters.pending() == 0 && !self.pause.has(PauseReason::DeadLetter) {
            return Ok(true);
        }
        let had = letters.pending();
        match letters.settle(wait) {
            Ok(()) => {
                if had > 0 {
                    crate::fault::hit(crate::fault::Point::AfterDeadLetters);
                }
                if self.pause.has(PauseReason::DeadLetter) {
                    tracing::info!(table = %self.name, "the dead-letter topic acknowledged every dead letter; resuming");
                    ops.dead_letters(None);
                }
                self.pause.set(PauseReason::DeadLetter, false);
                Ok(true)
            }
            // A dead letter the topic can never take (too large, not authorized): retrying cannot help.
            Err(error) if !error.is_retryable() => Err(error),
            Err(error) => {
                if !self.pause.has(PauseReason::DeadLetter) {
                    tracing::warn!(table = %self.name, error = %error, "the dead-letter topic does not acknowledge; the table pauses");
                }
                ops.dead_letters(Some(format!("table {}: {error}", self.name)));
                self.pause.set(PauseReason::DeadLetter, true);
                Ok(false)
            }
        }
    }

    /// Hands the pending flush to the actor if none is in flight. Returns whether one was handed over.
    pub fn hand_over(&mut self) -> Result<bool> {
        if self.in_flight > 0 || self.failed.is_some() {
            return Ok(false);
        }
        let Some(sealed) = self.pending.take() else { return Ok(false) };
        let held = (sealed.meta().hot, sealed.bytes());
        match self.jobs.try_send(Job::Flush(sealed)) {
            Ok(()) => {
                self.in_flight += 1;
                self.in_flight_bytes.push_back(held);
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(Job::Flush(sealed))) => {
                self.pending = Some(sealed);
                Ok(false)
            }
            Err(_) => Err(actor::gone(&self.name)),
        }
    }

    /// At a clean stop: hands over whatever is buffered, waiting for room in the actor's queue. Returns how
    /// many flushes were handed over.
    pub fn drain(&mut self) -> Result<usize> {
        self.stopping = true;
        if self.failed.is_some() {
            return Ok(0);
        }
        let settled = match self.dead_letters.as_mut() {
            Some(letters) => match letters.settle(Duration::from_secs(30)) {
                Ok(()) => true,
                Err(error) => {
                    // The next start re-reads these records and dead-letters them again.
                    tracing::error!(table = %self.name, error = %error, "stopping without the last flush: dead letters are not acknowledged");
                    false
                }
            },
            None => true,
        };
        let mut last = if settled { self.buffer.take()?.map(Sealed::new) } else { None };
        if let Some(sealed) = last.as_mut() {
            for tp in self.covered_gaps(sealed) {
                if let Some(gap) = self.gaps.remove(&tp) {
                    sealed.add_gap(tp, gap);
                }
            }
        }
        let mut sent = 0;
        for sealed in self.pending.take().into_iter().chain(last) {
            let held = (sealed.meta().hot, sealed.bytes());
            self.jobs.blocking_send(Job::Flush(sealed)).map_err(|_| actor::gone(&self.name))?;
            self.in_flight += 1;
            self.in_flight_bytes.push_back(held);
            sent += 1;
        }
        Ok(sent)
    }

    /// Applies a flush's outcome.
    pub fn on_outcome(&mut self, outcome: Outcome, consumer: &KafkaConsumer, config: &Config, ops: &Ops) -> Result<()> {
        let outcome = match outcome {
            Outcome::Resolved { schema_id, result } => {
                self.on_resolved(schema_id, result, consumer, ops);
                return Ok(());
            }
            Outcome::Evolved(Ok(schema)) => {
                self.buffer.set_schema(schema)?;
                self.unpark(consumer, ops);
                return Ok(());
            }
            Outcome::Evolved(Err(error)) => {
                self.fail(error, consumer, ops);
                return Ok(());
            }
            Outcome::Reread(result) => {
                match result {
                    Ok(Some(reader)) => {
                        tracing::info!(table = %self.name, reader, "checking the paused records with the subject's latest schema")
                    }
                    Ok(None) => {
                        tracing::info!(table = %self.name, "the subject's latest schema is the paused one; checking the table again")
                    }
                    Err(e) => {
                        tracing::warn!(table = %self.name, error = %e, "cannot read the subject's latest schema; checking the table again")
                    }
                }
                self.unpark(consumer, ops);
                return Ok(());
            }
            flush => flush,
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        let tag = self.in_flight_bytes.pop_front().map(|(tag, _)| tag);
        if self.in_flight == 0 {
            self.in_flight_bytes.clear();
        }
        match outcome {
            Outcome::Committed(report) => {
                for (tp, range) in &report.ranges {
                    self.committed.insert(tp.clone(), range.end);
                }
                self.summary.rows += report.rows as u64;
                self.summary.skipped += report.skipped as u64;
                self.summary.commits += 1;
                self.summary.files += report.files as u64;
                // Whatever still waits (a flush pending or in flight) has waited at most since now.
                let more = self.in_flight > 0 || self.pending.is_some();
                self.waiting_since = more.then(Instant::now);
                ops.stalled(None);
                if self.unlanded.take().is_some() {
                    ops.unlanded(None);
                    tracing::info!(table = %self.name, "flushes land again");
                }
            }
            // Stopping: what did not land is read again by the next start; the stop reports it.
            Outcome::Unlanded(error) if self.stopping => self.fail(error, consumer, ops),
            Outcome::Unlanded(error) => {
                tracing::warn!(table = %self.name, error = %error.with_causes(), "a flush could not land for now; its records are read again from the table's progress");
                ops.unlanded(Some(format!("table {}: {}", self.name, error.with_causes())));
                self.unlanded = Some(error);
                self.waiting_since = None;
                self.resync(consumer, config, "a flush could not land", false, tag)?
            }
            // While stopping nothing more is consumed: the next start resumes from the table anyway.
            Outcome::Fenced if self.stopping => {
                self.pending = None;
                self.hot.forget_from(tag);
            }
            Outcome::Fenced => {
                self.waiting_since = None;
                // The catalog answered: an earlier unlanded attempt is resolved (it landed, or another writer won).
                if self.unlanded.take().is_some() {
                    ops.unlanded(None);
                }
                self.resync(consumer, config, "a flush was fenced", true, tag)?
            }
            Outcome::Failed(error) => self.fail(error, consumer, ops),
            Outcome::Resolved { .. } | Outcome::Evolved(_) | Outcome::Reread(_) => {}
        }
        Ok(())
    }

    fn on_resolved(&mut self, schema_id: u32, result: Result<()>, consumer: &KafkaConsumer, ops: &Ops) {
        let Some(Parked { schema_id: waiting, wait: Wait::Fetch { retry_at, failures }, .. }) = &mut self.parked else {
            return;
        };
        if *waiting != schema_id {
            return;
        }
        match result {
            Ok(()) => self.unpark(consumer, ops),
            Err(error) => {
                *failures += 1;
                let backoff = Duration::from_secs(1 << (*failures).min(5));
                *retry_at = Some(Instant::now() + backoff);
                tracing::warn!(table = %self.name, schema_id, error = %error, retry_in_s = backoff.as_secs(), "cannot fetch a record's schema; the table waits");
                ops.schema(Some(format!("table {} waits for schema id {schema_id}: {error}", self.name)));
            }
        }
    }

    /// After a fenced or unlanded flush (`why`): drop everything not yet committed and restart every owned
    /// partition from the table's progress (which another writer may have advanced).
    ///
    /// `ask_table`: read the progress from the table (after a fence: another writer moved it). Else (after an
    /// unlanded flush, when the catalog or the store just failed every retry) from what this pipeline knows
    /// the table holds, without a network call that would fail too: if the unlanded attempt landed after all,
    /// the first flush of the records read again is fenced, and that resync asks the table.
    ///
    /// Flush `tag`, the flushes after it and the buffer leave the hot view (their rows come back with new
    /// LSNs).
    fn resync(
        &mut self,
        consumer: &KafkaConsumer,
        config: &Config,
        why: &str,
        ask_table: bool,
        tag: Option<u64>,
    ) -> Result<()> {
        let owned: Vec<TopicPartition> = self.assigned.iter().cloned().collect();
        let pending = self.pending.take().map(|p| p.meta().hot);
        let dropped = self.buffer.drop_partitions(&owned)?;
        self.hot.forget_from(tag.into_iter().chain(pending).min());
        let recorded = if ask_table {
            let (reply, answer) = oneshot::channel();
            self.jobs.blocking_send(Job::Progress { reply }).map_err(|_| actor::gone(&self.name))?;
            actor::wait_reply(answer, &self.name)?
        } else {
            owned.iter().filter_map(|tp| self.committed.get(tp).map(|next| (tp.clone(), *next))).collect()
        };
        for tp in &owned {
            let known = recorded.get(tp).copied();
            if let Some(next) = known {
                self.buffer.set_position(tp.clone(), next);
                self.hot.start_partition(tp.clone(), next);
            }
            // Never committed yet: back to the first offset this instance read (with `latest`, `End` would skip
            // what the fenced flush held). Nothing read yet: the consumer's position is still where the
            // assignment put it (a new partition of a recorded topic at its beginning): leave it there.
            let Some(start) = known.or_else(|| self.first_read.get(tp).copied()) else { continue };
            let offset = source::start_offset(Some(start), config.kafka.auto_offset_reset);
            consumer.seek(&tp.topic, tp.partition, offset, METADATA_TIMEOUT).map_err(|e| {
                Error::new(ErrorKind::Transient, "cannot seek back to the table's progress")
                    .with("partition", tp)
                    .source(e)
            })?;
        }
        self.learn(recorded.into_iter().filter(|(tp, _)| owned.contains(tp)));
        tracing::warn!(
            table = %self.name,
            partitions = owned.len(),
            dropped_rows = dropped,
            "{why}; restarted owned partitions from the table's progress"
        );
        Ok(())
    }

    /// After an out-of-range fetch: checks every owned partition's position against its watermarks.
    pub fn check_positions(&mut self, consumer: &KafkaConsumer, config: &Config, ops: &Ops) -> Result<()> {
        let owned: Vec<TopicPartition> = self.assigned.iter().cloned().collect();
        for tp in owned {
            let Some(next) = self.buffer.position(&tp) else { continue };
            match source::check_position(consumer, &tp, next, config.kafka.on_data_loss)? {
                // In range after all (e.g. a broker's log was truncated above our position and then grew
                // back): with auto.offset.reset = error the fetcher stopped, so restart it where we are.
                Resume::At(at) => {
                    consumer.seek(&tp.topic, tp.partition, Offset::Offset(at), METADATA_TIMEOUT).map_err(|e| {
                        Error::new(ErrorKind::Transient, "cannot restart a partition's fetch")
                            .with("partition", &tp)
                            .source(e)
                    })?;
                }
                Resume::AfterGap(gap) => {
                    self.record_gap(&tp, gap, ops);
                    consumer.seek(&tp.topic, tp.partition, Offset::Offset(gap.end), METADATA_TIMEOUT).map_err(|e| {
                        Error::new(ErrorKind::Transient, "cannot seek to the low watermark")
                            .with("partition", &tp)
                            .source(e)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The partitions whose recorded gap this flush covers: its range reaches past the gap (an idle
    /// partition's empty range at the table's progress does not).
    fn covered_gaps(&self, sealed: &Sealed) -> Vec<TopicPartition> {
        let ranges = &sealed.meta().ranges;
        self.gaps
            .iter()
            .filter(|(tp, gap)| ranges.get(*tp).is_some_and(|r| r.end >= gap.end))
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    fn record_gap(&mut self, tp: &TopicPartition, gap: OffsetRange, ops: &Ops) {
        ops.metrics.offsets_lost.inc_by(u64::try_from(gap.end - gap.start).unwrap_or_default());
        self.gaps.entry(tp.clone()).and_modify(|g| g.end = g.end.max(gap.end)).or_insert(gap);
    }

    /// Readiness turns false while data has waited more than `limit` (`monitoring.stall_flush_intervals` ×
    /// `buffer.flush_interval`) for a commit (a hung catalog, a stuck flush), and true again once commits flow.
    pub fn watch_stall(&self, limit: Duration, ops: &Ops) {
        let buffered = self.buffer.first_record_at().filter(|_| self.buffer.records() > 0);
        let oldest = match (self.waiting_since, buffered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Waiting since the oldest uncommitted record arrived, not since the last commit: after an idle spell
        // new records have not waited long just because the previous commit is old.
        let since = oldest.map(|t| t.elapsed()).unwrap_or_default();
        let stalled = since > limit;
        ops.stalled(stalled.then(|| format!("data of {} has waited {}s for a commit", self.name, since.as_secs())));
    }

    /// Publishes the buffer gauges.
    pub fn report(&self, ops: &Ops) {
        ops.buffer(self.buffer.rows(), self.buffer.bytes(), self.paused);
    }

    /// With `--until-caught-up` and several instances, partitions other instances own reach the high
    /// watermark only in the table: asks the actor for the table's progress (at most one lookup at a time;
    /// [`TablePipeline::poll_refresh`] learns the answer without waiting for it).
    pub fn refresh(&mut self) {
        if self.refresh.is_some() {
            return;
        }
        let (reply, answer) = oneshot::channel();
        if self.jobs.try_send(Job::Progress { reply }).is_ok() {
            self.refresh = Some(answer);
        }
    }

    /// Learns the answer of a progress lookup, if it has arrived.
    pub fn poll_refresh(&mut self) {
        let Some(answer) = &mut self.refresh else { return };
        match answer.try_recv() {
            Ok(Ok(progress)) => self.learn(progress),
            Ok(Err(e)) => tracing::warn!(table = %self.name, error = %e, "cannot refresh the table's progress"),
            Err(oneshot::error::TryRecvError::Empty) => return,
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
        self.refresh = None;
    }

    /// Pauses or resumes this table's partitions to match its pause reasons.
    fn apply_pause(&mut self, consumer: &KafkaConsumer, ops: &Ops) {
        let pause = self.pause.any();
        if pause == self.paused {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &self.assigned {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let result = if pause { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
        match result {
            Ok(()) => {
                let metrics = &ops.metrics;
                if pause {
                    metrics.consumer_pauses.inc()
                } else {
                    metrics.consumer_resumes.inc()
                }
                self.paused = pause;
                tracing::debug!(
                    table = %self.name,
                    partitions = self.assigned.len(),
                    paused = pause,
                    reasons = ?self.pause,
                    "paused or resumed the table's partitions"
                );
            }
            Err(e) => tracing::warn!(error = %e, paused = pause, "cannot pause or resume partitions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_stays_paused_while_any_reason_holds() {
        let mut reasons = PauseReasons::default();
        assert!(!reasons.any());
        reasons.set(PauseReason::BufferFull, true);
        reasons.set(PauseReason::Failed, true);
        reasons.set(PauseReason::BufferFull, false);
        assert!(reasons.any(), "the flush was handed over, but the table failed");
        reasons.set(PauseReason::Failed, false);
        reasons.set(PauseReason::Failed, false);
        assert!(!reasons.any());
    }
}
