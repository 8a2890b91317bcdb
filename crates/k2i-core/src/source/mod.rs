//! The Kafka side: a consumer whose partitions start where the table says, never where Kafka's group
//! offsets say (invariant 1).
//!
//! The consumer is polled on a dedicated thread (see [`crate::engine`]). On assignment the rebalance
//! callback looks each partition's progress up in the table (a blocking catalog call on that thread) and
//! assigns the partitions *with* those offsets, so no record from a stale position is ever fetched;
//! partitions the table has never seen start per `auto_offset_reset`. Revocations are reported to the
//! engine, which drops the revoked partitions' buffered rows. Offsets are committed to Kafka only after the
//! Iceberg commit, synchronously, for lag tools.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::buffer::TopicPartition;
use crate::config::{KafkaConfig, OffsetReset};
use crate::error::{Error, ErrorKind, Result};

/// Looks up the table's next offset for partitions (absent: never seen). Runs on the polling thread.
pub type OffsetLookup = Box<dyn Fn(&[TopicPartition]) -> Result<HashMap<TopicPartition, i64>> + Send + Sync>;

/// Runs before partitions are given up, while this instance still owns them: finishes the flush in flight.
pub type RevokeHook = Box<dyn Fn(&[TopicPartition]) + Send + Sync>;

/// A change of assignment, for the engine to act on between polls.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignmentChange {
    /// Partitions assigned, each with the offset consumption starts at (`None`: per `auto_offset_reset`,
    /// the table has never seen it).
    Assigned(Vec<(TopicPartition, Option<i64>)>),
    /// Partitions taken away.
    Revoked(Vec<TopicPartition>),
}

/// The consumer's context: rebalance handling.
pub struct SourceContext {
    ops: std::sync::Arc<crate::ops::Ops>,
    lookup: OffsetLookup,
    before_revoke: RevokeHook,
    reset: OffsetReset,
    changes: Mutex<Vec<AssignmentChange>>,
    fatal: Mutex<Option<Error>>,
}

/// The consumer type k2i uses.
pub type KafkaConsumer = BaseConsumer<SourceContext>;

impl SourceContext {
    /// Takes the assignment changes since the last call.
    pub fn take_changes(&self) -> Vec<AssignmentChange> {
        self.changes.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    /// An error that happened inside a callback and must stop the engine.
    pub fn take_fatal(&self) -> Option<Error> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }

    fn record(&self, change: AssignmentChange) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.push(change);
        }
    }

    fn fail(&self, error: Error) {
        tracing::error!(error = %error, "partition assignment failed");
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(error);
        }
    }

    fn assign(&self, consumer: &KafkaConsumer, tpl: &TopicPartitionList) {
        let partitions = partitions_of(tpl);
        let recorded = match (self.lookup)(&partitions) {
            Ok(r) => r,
            Err(e) => {
                // Assigning without knowing the table's progress could duplicate or skip records; assign
                // nothing and stop the engine instead.
                self.fail(e);
                return;
            }
        };
        let mut assignment = TopicPartitionList::new();
        let mut starts = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let start = recorded.get(&tp).copied();
            let offset = start_offset(start, self.reset);
            if let Err(e) = assignment.add_partition_offset(&tp.topic, tp.partition, offset) {
                self.fail(Error::new(ErrorKind::Kafka, "cannot build the assignment").with("partition", &tp).source(e));
                return;
            }
            tracing::info!(partition = %tp, start = ?start, "assigned partition; starting from the table's progress");
            starts.push((tp, start));
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&assignment),
            _ => consumer.assign(&assignment),
        };
        match result {
            Ok(()) => self.record(AssignmentChange::Assigned(starts)),
            Err(e) => self.fail(Error::new(ErrorKind::Kafka, "cannot assign partitions").source(e)),
        }
    }

    fn revoke(&self, consumer: &KafkaConsumer, tpl: &TopicPartitionList) {
        let partitions = partitions_of(tpl);
        for tp in &partitions {
            tracing::info!(partition = %tp, "partition revoked");
        }
        // The revoke completes when this callback returns; the next owner then reads the table's progress.
        // Letting the flush in flight land first means the next owner starts after it, not under it.
        (self.before_revoke)(&partitions);
        self.record(AssignmentChange::Revoked(partitions));
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            self.fail(Error::new(ErrorKind::Kafka, "cannot unassign partitions").source(e));
        }
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, "librdkafka: {log_message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::trace!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "kafka client error: {reason}");
        self.ops.kafka(false, format!("{error}: {reason}"));
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): per-partition position, high watermark and
    /// lag against the committed offset, for `/status` and `k2i_consumer_lag_records`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let brokers_up = statistics.brokers.values().any(|b| b.state == "UP");
        self.ops.kafka(brokers_up, if brokers_up { "connected" } else { "no broker connection is up" });
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                // librdkafka reports -1 for the internal "UA" partition and for unknown values.
                if *id < 0 || !p.fetch_state.eq_ignore_ascii_case("active") {
                    continue;
                }
                let known = |v: i64| (v >= 0).then_some(v);
                let tp = TopicPartition { topic: topic.clone(), partition: *id };
                self.ops.partition_stats(&tp, known(p.next_offset), known(p.hi_offset), known(p.consumer_lag));
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(&self, consumer: &KafkaConsumer, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::warn!(error = ?other, "rebalance error; dropping the assignment");
                let all = partitions_of(tpl);
                self.record(AssignmentChange::Revoked(all));
                if let Err(e) = consumer.unassign() {
                    self.fail(Error::new(ErrorKind::Kafka, "cannot unassign after a rebalance error").source(e));
                }
            }
        }
    }
}

/// Where a partition starts: the table's next offset, or per `auto_offset_reset` when the table has none.
pub fn start_offset(recorded: Option<i64>, reset: OffsetReset) -> Offset {
    match (recorded, reset) {
        (Some(next), _) => Offset::Offset(next),
        (None, OffsetReset::Earliest) => Offset::Beginning,
        (None, OffsetReset::Latest) => Offset::End,
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| TopicPartition { topic: e.topic().to_owned(), partition: e.partition() }).collect()
}

/// librdkafka properties set by k2i, before the user's `kafka.properties`.
fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka.bootstrap_servers.join(","))
        .set("group.id", &kafka.consumer_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "auto.offset.reset",
            match kafka.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        )
        // librdkafka prefetches up to 64 MiB per consumer by default; 16 MiB keeps memory near the buffer
        // cap and still saturates a partition. Overridable through kafka.properties.
        .set("queued.max.messages.kbytes", "16384")
        // When that prefetch queue is full librdkafka backs a partition's fetching off for
        // fetch.queue.backoff.ms, 1 s by default: the consumer then idles most of the time (measured: 3x
        // slower). 10 ms keeps the queue topped up.
        .set("fetch.queue.backoff.ms", "10")
        .set("client.id", format!("k2i-{}", env!("CARGO_PKG_VERSION")))
        // Per-partition lag and high watermarks for /status and /metrics come from these statistics.
        .set("statistics.interval.ms", "1000");
    for (key, value) in &kafka.properties {
        config.set(key, value.expose());
    }
    config
}

/// Creates the consumer and subscribes it to the topics.
pub fn subscribe(
    kafka: &KafkaConfig,
    ops: std::sync::Arc<crate::ops::Ops>,
    lookup: OffsetLookup,
    before_revoke: RevokeHook,
) -> Result<KafkaConsumer> {
    let context = SourceContext {
        ops,
        lookup,
        before_revoke,
        reset: kafka.auto_offset_reset,
        changes: Mutex::new(Vec::new()),
        fatal: Mutex::new(None),
    };
    let consumer: KafkaConsumer = base_config(kafka)
        .create_with_context(context)
        .map_err(|e| Error::new(ErrorKind::Kafka, "cannot create the Kafka consumer").source(e))?;
    let topics = kafka.topic_list();
    consumer
        .subscribe(&topics)
        .map_err(|e| Error::new(ErrorKind::Kafka, "cannot subscribe").with("topics", topics.join(",")).source(e))?;
    Ok(consumer)
}

/// Low and high watermarks of every partition of the topics, read once (for `--until-caught-up`).
pub fn watermarks(
    consumer: &KafkaConsumer,
    topics: &[&str],
    timeout: Duration,
) -> Result<HashMap<TopicPartition, (i64, i64)>> {
    let mut out = HashMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Error::new(ErrorKind::Kafka, "cannot read topic metadata").with("topic", topic).source(e))?;
        let Some(meta) = metadata.topics().iter().find(|t| t.name() == *topic) else {
            return Err(Error::new(ErrorKind::Kafka, "the topic does not exist").with("topic", topic));
        };
        if let Some(err) = meta.error() {
            return Err(Error::new(ErrorKind::Kafka, "the topic is not available")
                .with("topic", topic)
                .with("error", format!("{:?}", rdkafka::types::RDKafkaErrorCode::from(err))));
        }
        for partition in meta.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout).map_err(|e| {
                Error::new(ErrorKind::Kafka, "cannot read watermarks")
                    .with("topic", topic)
                    .with("partition", partition.id())
                    .source(e)
            })?;
            out.insert(TopicPartition { topic: (*topic).to_owned(), partition: partition.id() }, (low, high));
        }
    }
    Ok(out)
}
