//! The polling loop: one consumer for the process, its rebalance changes, batches of records routed to the
//! table pipelines, flush outcomes from the actors, `--until-caught-up`, and the stop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, consumer::Consumer};

use super::actor::Delivered;
use super::pipeline::{TablePipeline, TableState};
use crate::config::{Config, OffsetReset};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::Ops;
use crate::progress::TopicPartition;
use crate::source::{AssignmentChange, KafkaConsumer};

/// How long one poll waits for a record; bounds the latency of flush triggers and shutdown.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Records decoded per batch at most: the unit the decoder stage gets, and how often the clock is read. A
/// batch also stops where `flush_batch_size` would make a table's buffer due.
const BATCH: usize = 256;
/// With the read-state RPC on: how often decoded rows are sealed for readers (a chunk per table at most this
/// often, so a slow trickle of records does not become thousands of tiny chunks), and so the longest a row
/// waits to be readable once decoded.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(5);

/// Flush outcomes from the actors. Read by the polling loop and by the revoke hook, which runs inside
/// `poll` on the polling thread too; the mutexes only satisfy librdkafka's `Send + Sync` bound on the
/// consumer context.
pub struct Inbox {
    rx: Mutex<Receiver<Delivered>>,
    /// Outcomes the revoke hook received while waiting, for the loop to apply.
    early: Mutex<Vec<Delivered>>,
    /// Flushes handed to actors whose outcome has not been received.
    in_flight: Mutex<usize>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inbox {
    /// An inbox reading `rx`.
    pub fn new(rx: Receiver<Delivered>) -> Self {
        Self { rx: Mutex::new(rx), early: Mutex::new(Vec::new()), in_flight: Mutex::new(0) }
    }

    fn sent(&self) {
        *lock(&self.in_flight) += 1;
    }

    fn received(&self) {
        let mut n = lock(&self.in_flight);
        *n = n.saturating_sub(1);
    }

    /// Every outcome that has arrived.
    fn take(&self) -> Vec<Delivered> {
        let mut out = std::mem::take(&mut *lock(&self.early));
        let rx = lock(&self.rx);
        while let Ok(delivered) = rx.try_recv() {
            if delivered.outcome.is_flush() {
                self.received();
            }
            out.push(delivered);
        }
        out
    }

    /// Waits until every flush in flight has its outcome, or `deadline`. For the revoke hook: the next owner
    /// of a partition then starts after the flush, not under it.
    pub fn wait_all(&self, deadline: Instant) {
        let rx = lock(&self.rx);
        while *lock(&self.in_flight) > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return };
            match rx.recv_timeout(left) {
                Ok(delivered) => {
                    if delivered.outcome.is_flush() {
                        self.received();
                    }
                    lock(&self.early).push(delivered);
                }
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    *lock(&self.in_flight) = 0;
                    return;
                }
            }
        }
    }

    /// Waits for one outcome (at the stop).
    fn wait_one(&self, timeout: Duration) -> Option<Delivered> {
        let delivered = lock(&self.rx).recv_timeout(timeout).ok()?;
        if delivered.outcome.is_flush() {
            self.received();
        }
        Some(delivered)
    }
}

/// The polling loop's state.
pub struct Poller<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The consumer.
    pub consumer: &'a KafkaConsumer,
    /// Outcomes of the actors.
    pub inbox: &'a Inbox,
    /// Health and metrics.
    pub ops: &'a Ops,
    /// One per table (one today; the multi-table issue adds routing by topic).
    pub pipelines: Vec<TablePipeline>,
    /// With `--until-caught-up`: every partition's (low, high) watermarks read at start.
    pub targets: Option<HashMap<TopicPartition, (i64, i64)>>,
    /// Which pipeline a topic's records go to (from [`Config::tables`]).
    routes: HashMap<String, usize>,
    last_refresh: Instant,
    /// When rows were last sealed for readers (read-state RPC).
    last_publish: Instant,
}

impl<'a> Poller<'a> {
    /// A loop over `pipelines`.
    pub fn new(
        config: &'a Config,
        consumer: &'a KafkaConsumer,
        inbox: &'a Inbox,
        ops: &'a Ops,
        pipelines: Vec<TablePipeline>,
        targets: Option<HashMap<TopicPartition, (i64, i64)>>,
    ) -> Self {
        let routes = config
            .tables()
            .into_iter()
            .enumerate()
            .flat_map(|(index, table)| table.topics.into_iter().map(move |topic| (topic, index)))
            .collect();
        let now = Instant::now();
        Self { config, consumer, inbox, ops, pipelines, targets, routes, last_refresh: now, last_publish: now }
    }

    /// The table a topic's records go to. The consumer subscribes to exactly the configured topics, so
    /// every topic has a route; `0` is never reached with one table either way.
    fn route(&self, topic: &str) -> usize {
        self.routes.get(topic).copied().unwrap_or(0)
    }

    /// Runs until shutdown, caught up, or every table failed; then stops cleanly (the last flushes are
    /// handed over; [`Poller::finish`] waits for them).
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        loop {
            if shutdown.load(Ordering::SeqCst) {
                break;
            }
            self.take_fatal()?;
            if self.pipelines.iter().all(|p| p.state() == TableState::Failed) {
                return Ok(());
            }
            // Assignment changes first: an outcome the revoke hook received (a fenced flush, say) must see the
            // partitions this instance still owns, not those it gave up.
            for change in self.consumer.context().take_changes() {
                self.apply(change)?;
            }
            self.apply_outcomes()?;
            let resumes = self.ops.take_resumes();
            let now = Instant::now();
            for p in &mut self.pipelines {
                for action in &resumes {
                    p.resume(*action, self.consumer, self.config, self.ops)?;
                }
                p.tick(now)?;
            }
            for p in &mut self.pipelines {
                if p.hand_over()? {
                    self.inbox.sent();
                }
            }
            let idle = self.poll_batch()?;
            self.publish();
            // A batch run has nobody to resume a paused table: a breaking schema change stops it instead.
            if self.targets.is_some() {
                for p in &mut self.pipelines {
                    // Nor waits out an outage: a flush that could not land through every retry stops it.
                    if let Some(error) = p.take_unlanded() {
                        p.fail(error, self.consumer, self.ops);
                    }
                    if let Some(reason) = p.breaking_pause() {
                        let error = Error::new(
                            ErrorKind::InvalidRecord,
                            format!("{reason} (with --until-caught-up k2i stops instead of waiting for a resume)"),
                        );
                        p.fail(error, self.consumer, self.ops);
                    }
                }
            }
            // The rebalance callback runs inside poll: an error it raised must stop the loop before anything
            // below (a caught-up check) reads the state it left, and partitions it revoked must leave the
            // buffers before the next flush is sealed (else that flush, or the new owner's, is fenced).
            self.take_fatal()?;
            for change in self.consumer.context().take_changes() {
                self.apply(change)?;
            }
            let now = Instant::now();
            if idle && self.targets.is_some() {
                self.cover_gaps();
                self.refresh_committed();
            }
            let force = self.targets.is_some() && self.all_consumed();
            for p in &mut self.pipelines {
                p.poll_refresh();
                if p.maybe_flush(Some(now), force && p.has_buffered(), self.consumer, self.ops)? {
                    self.inbox.sent();
                }
                p.report(self.ops);
                if self.targets.is_none() {
                    let limit = self.config.buffer.flush_interval.get() * self.config.monitoring.stall_flush_intervals;
                    p.watch_stall(limit, self.ops);
                }
            }
            // Everything below the start's high watermarks is in the table; what is buffered beyond them is
            // drained below (so the stop does not wait for an idle moment under continuous production).
            if self.targets.is_some() && self.all_committed() {
                tracing::info!("caught up with the high watermarks read at start");
                break;
            }
        }
        // Clean stop: whatever is buffered is flushed and committed before the process exits — after the last
        // revocations and outcomes are applied (a revoked partition's rows must not be drained; a table whose
        // actor already failed reports that failure, not "the actor has stopped").
        for change in self.consumer.context().take_changes() {
            self.apply(change)?;
        }
        self.apply_outcomes()?;
        for index in 0..self.pipelines.len() {
            match self.pipelines[index].drain() {
                Ok(sent) => (0..sent).for_each(|_| self.inbox.sent()),
                Err(error) => {
                    self.apply_outcomes()?;
                    self.pipelines[index].fail(error, self.consumer, self.ops);
                }
            }
        }
        Ok(())
    }

    /// After the stop: waits for the outcomes of the flushes in flight and applies them. Returns early if
    /// every actor has ended (`actors_done`), so a crashed actor cannot hang the stop.
    pub fn finish(&mut self, actors_done: impl Fn() -> bool) -> Result<()> {
        loop {
            self.apply_outcomes()?;
            if !self.pipelines.iter().any(TablePipeline::in_flight) || actors_done() {
                return self.apply_outcomes();
            }
            if let Some(Delivered { table, outcome }) = self.inbox.wait_one(Duration::from_millis(50)) {
                self.pipelines[table].on_outcome(outcome, self.consumer, self.config, self.ops)?;
            }
        }
    }

    fn take_fatal(&self) -> Result<()> {
        match self.consumer.context().take_fatal() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn apply_outcomes(&mut self) -> Result<()> {
        for Delivered { table, outcome } in self.inbox.take() {
            self.pipelines[table].on_outcome(outcome, self.consumer, self.config, self.ops)?;
        }
        Ok(())
    }

    /// Polls up to [`BATCH`] records (waiting only for the first) and hands them to their tables' decoder
    /// stage. Returns whether the poll came back empty.
    fn poll_batch(&mut self) -> Result<bool> {
        let limit = self.pipelines.iter().map(TablePipeline::room).min().unwrap_or(BATCH).min(BATCH);
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(limit);
        let mut out_of_range = false;
        let mut timeout = self.poll_timeout();
        while batch.len() < limit {
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => batch.push(message),
                Some(Err(rdkafka::error::KafkaError::MessageConsumption(code)))
                    if matches!(
                        code,
                        rdkafka::types::RDKafkaErrorCode::AutoOffsetReset
                            | rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                    ) =>
                {
                    // auto.offset.reset = error: a position Kafka does not have (the topic was recreated, or
                    // retention passed it while running). k2i decides per partition; librdkafka never moves it.
                    tracing::warn!(error = ?code, "a partition's position is out of range; checking owned partitions");
                    out_of_range = true;
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka fetch error");
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        let idle = batch.is_empty();
        let single = self.pipelines.len() == 1;
        for index in 0..self.pipelines.len() {
            // Borrowed apart so the routing lookup and the pipeline can be used together (no copy of the batch).
            let (routes, pipeline) = (&self.routes, &mut self.pipelines[index]);
            let mine = batch.iter().filter(|m| single || routes.get(m.topic()).copied().unwrap_or(0) == index);
            let result = pipeline.decode(mine, self.consumer, self.config, self.ops);
            if let Err(error) = result {
                // A schema job refused because the actor failed: its own outcome has the real error.
                self.apply_outcomes()?;
                self.pipelines[index].fail(error, self.consumer, self.ops);
            }
        }
        drop(batch);
        if out_of_range {
            for p in &mut self.pipelines {
                if let Err(error) = p.check_positions(self.consumer, self.config, self.ops) {
                    p.fail(error, self.consumer, self.ops);
                }
            }
        }
        Ok(idle)
    }

    /// With the read-state RPC on: seals what was decoded for readers, at most every [`PUBLISH_INTERVAL`].
    fn publish(&mut self) {
        if !self.config.rpc.enabled || self.last_publish.elapsed() < PUBLISH_INTERVAL {
            return;
        }
        self.last_publish = Instant::now();
        for p in &mut self.pipelines {
            if let Err(error) = p.publish() {
                p.fail(error, self.consumer, self.ops);
            }
        }
    }

    /// How long the next poll may wait for its first record: not past the next publication when decoded
    /// rows wait for it.
    fn poll_timeout(&self) -> Duration {
        if self.config.rpc.enabled && self.pipelines.iter().any(TablePipeline::has_unpublished) {
            PUBLISH_INTERVAL.saturating_sub(self.last_publish.elapsed())
        } else {
            POLL_TIMEOUT
        }
    }

    fn apply(&mut self, change: AssignmentChange) -> Result<()> {
        match change {
            AssignmentChange::Assigned(partitions) => {
                let mut by_table: HashMap<usize, Vec<_>> = HashMap::new();
                for (tp, start) in partitions {
                    by_table.entry(self.route(&tp.topic)).or_default().push((tp, start));
                }
                for (index, partitions) in by_table {
                    self.pipelines[index].assign(partitions, self.consumer, self.ops);
                }
            }
            AssignmentChange::Revoked(partitions) => {
                for index in 0..self.pipelines.len() {
                    let mine: Vec<TopicPartition> =
                        partitions.iter().filter(|tp| self.route(&tp.topic) == index).cloned().collect();
                    self.pipelines[index].revoke(&mine, self.ops)?;
                }
            }
        }
        Ok(())
    }

    fn owner(&self, tp: &TopicPartition) -> &TablePipeline {
        &self.pipelines[self.route(&tp.topic)]
    }

    /// With `--until-caught-up`: whether every partition has been consumed up to its start high watermark.
    fn all_consumed(&self) -> bool {
        let Some(targets) = &self.targets else { return false };
        targets.iter().all(|(tp, &(low, high))| {
            let p = self.owner(tp);
            let position = p.position(tp).or_else(|| p.committed(tp));
            position.is_some_and(|n| n >= high) || self.nothing_to_read(tp, low, high, p.committed(tp))
        })
    }

    fn all_committed(&self) -> bool {
        let Some(targets) = &self.targets else { return false };
        targets.iter().all(|(tp, &(low, high))| {
            let next = self.owner(tp).committed(tp);
            next.is_some_and(|n| n >= high) || self.nothing_to_read(tp, low, high, next)
        })
    }

    /// Whether a partition has nothing this run must read: empty and never recorded, or never recorded with
    /// `auto_offset_reset = "latest"` — unless its topic is recorded (a partition added to the topic starts
    /// at its beginning, see `source`).
    fn nothing_to_read(&self, tp: &TopicPartition, low: i64, high: i64, recorded: Option<i64>) -> bool {
        recorded.is_none()
            && (high <= low
                || (self.config.kafka.auto_offset_reset == OffsetReset::Latest
                    && !self.owner(tp).records_topic(&tp.topic)))
    }

    /// Partitions other instances own reach the high watermark only in the table: read its progress when
    /// idle, at most once a second.
    fn refresh_committed(&mut self) {
        if self.last_refresh.elapsed() < Duration::from_secs(1) || self.all_committed() {
            return;
        }
        self.last_refresh = Instant::now();
        for p in &mut self.pipelines {
            p.refresh();
        }
    }

    /// When the consumer's position is past the last delivered record (transaction markers, compaction),
    /// records the real position so the partition can be committed as caught up.
    fn cover_gaps(&mut self) {
        let Some(targets) = &self.targets else { return };
        let Ok(positions) = self.consumer.position() else { return };
        for element in positions.elements() {
            let tp = TopicPartition { topic: element.topic().to_owned(), partition: element.partition() };
            let (Some(&(_, high)), Offset::Offset(position)) = (targets.get(&tp), element.offset()) else { continue };
            if position >= high {
                let index = self.route(&tp.topic);
                self.pipelines[index].cover(&tp, position);
            }
        }
    }
}

/// The first error of the failed tables, if every table failed.
pub fn first_error(pipelines: &mut [TablePipeline]) -> Option<Error> {
    pipelines.iter_mut().find_map(TablePipeline::take_error)
}
