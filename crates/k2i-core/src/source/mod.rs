//! The Kafka side: a consumer whose partitions start where the table says, never where Kafka's group
//! offsets say (invariant 1).
//!
//! The consumer is polled on a dedicated thread (see [`crate::engine`]). On assignment the rebalance
//! callback looks each partition's progress up in the table — a blocking catalog call on the polling thread,
//! the one k2i allows, because librdkafka requires the assignment to be made inside the callback — and
//! assigns the partitions *with* those offsets, so no record from a stale position is ever fetched.
//!
//! Positions are k2i's decision, never librdkafka's (invariant 8): `auto.offset.reset` is `error`
//! internally, so a position Kafka does not have surfaces instead of silently moving. Each recorded
//! partition's next offset is checked against the partition's watermarks when it is assigned (and again
//! when a fetch reports an out-of-range position, see [`check_position`]):
//! - above the high watermark (the topic was deleted and recreated, or this is another cluster): stop with
//!   an error naming topic, partition, the table's offset and the watermark;
//! - below the low watermark (retention or delete-records passed the table's progress): per
//!   `kafka.on_data_loss`, stop (`fail`, the default) or jump to the low watermark and record the gap in
//!   the next snapshot's summary (`k2i.gaps`) and in `k2i_offsets_lost_total` (`skip`).
//!
//! A partition the table has never recorded starts per `auto_offset_reset`, except a new partition of a
//! topic the table already records (partitions added to the topic): it starts at its beginning, whatever
//! `auto_offset_reset` says, or its first records would be skipped. Revocations are reported to the engine,
//! which drops the revoked partitions' buffered rows. Offsets are committed to Kafka only after the Iceberg
//! commit, synchronously, for lag tools.
//!
//! A connection no retry can fix stops the ingest instead of retrying for ever, as librdkafka would: the
//! broker refused the credentials (SASL) or the TLS handshake failed (an untrusted broker certificate, a
//! refused client certificate). [`subscribe`] waits for the first broker answer so such a refusal surfaces
//! at start, before anything else reads from Kafka; later (credentials rotated under a running instance)
//! the context's error callback stops the polling loop. See [`refused_connection`] and
//! docs/kafka-security.md.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

pub use crate::config::DataLossPolicy;
use crate::config::{KafkaConfig, OffsetReset};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{OffsetRange, Progress, TopicPartition};

/// Looks up the progress the table records (every partition it has recorded). Runs on the polling thread.
pub type OffsetLookup = Box<dyn Fn() -> Result<Progress> + Send + Sync>;

/// Where a partition starts after assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The table's next offset (`None`: the table has never recorded the partition).
    pub recorded: Option<i64>,
    /// Offsets skipped because Kafka no longer has them (`kafka.on_data_loss = "skip"`).
    pub gap: Option<OffsetRange>,
}

/// How long a watermark query in the rebalance callback may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs before partitions are given up, while this instance still owns them: finishes the flush in flight.
pub type RevokeHook = Box<dyn Fn(&[TopicPartition]) + Send + Sync>;

/// A change of assignment, for the engine to act on between polls.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignmentChange {
    /// Partitions assigned, each with where consumption starts.
    Assigned(Vec<(TopicPartition, Start)>),
    /// Partitions taken away.
    Revoked(Vec<TopicPartition>),
}

/// The consumer's context: rebalance handling.
pub struct SourceContext {
    ops: std::sync::Arc<crate::ops::Ops>,
    lookup: OffsetLookup,
    before_revoke: RevokeHook,
    reset: OffsetReset,
    on_data_loss: DataLossPolicy,
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
        tracing::error!(error = %error, "the consumer stopped the ingest");
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(error);
        }
    }

    fn assign(&self, consumer: &KafkaConsumer, tpl: &TopicPartitionList) {
        let partitions = partitions_of(tpl);
        self.ops.assigning(true);
        let recorded = (self.lookup)();
        self.ops.assigning(false);
        let recorded = match recorded {
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
            let (offset, start) = match recorded.get(&tp).copied() {
                Some(next) => match check_position(consumer, &tp, next, self.on_data_loss) {
                    Ok(Resume::At(offset)) => (Offset::Offset(offset), Start { recorded: Some(next), gap: None }),
                    Ok(Resume::AfterGap(gap)) => {
                        (Offset::Offset(gap.end), Start { recorded: Some(next), gap: Some(gap) })
                    }
                    Err(e) => {
                        self.fail(e);
                        return;
                    }
                },
                None if recorded.keys().any(|known| known.topic == tp.topic) => {
                    tracing::info!(partition = %tp, "a new partition of a topic the table records; starting at its beginning");
                    (Offset::Beginning, Start { recorded: None, gap: None })
                }
                None => (start_offset(None, self.reset), Start { recorded: None, gap: None }),
            };
            if let Err(e) = assignment.add_partition_offset(&tp.topic, tp.partition, offset) {
                self.fail(
                    Error::new(ErrorKind::Internal, "cannot build the assignment").with("partition", &tp).source(e),
                );
                return;
            }
            tracing::info!(partition = %tp, start = ?start.recorded, "assigned partition; starting from the table's progress");
            starts.push((tp, start));
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&assignment),
            _ => consumer.assign(&assignment),
        };
        match result {
            Ok(()) => self.record(AssignmentChange::Assigned(starts)),
            Err(e) => self.fail(Error::new(ErrorKind::Transient, "cannot assign partitions").source(e)),
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
            self.fail(Error::new(ErrorKind::Transient, "cannot unassign partitions").source(e));
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
        if let Some(refused) = refused_connection(&error, reason, "consumer") {
            self.ops.kafka(false, refused.to_string());
            self.fail(refused);
            return;
        }
        // A fatal error (a fenced static member, an idempotence violation) leaves the client unusable:
        // stop with it instead of polling a dead consumer.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fail(
                Error::new(ErrorKind::Transient, format!("the Kafka client hit a fatal error: {reason}")).source(error),
            );
            return;
        }
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
                    self.fail(Error::new(ErrorKind::Transient, "cannot unassign after a rebalance error").source(e));
                }
            }
        }
    }
}

/// How a recorded partition resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// At the table's next offset.
    At(i64),
    /// After a gap Kafka no longer has: at the gap's end (the low watermark).
    AfterGap(OffsetRange),
}

/// Where a position stands against a partition's watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Kafka has the offset (or it is the next one to be written).
    InRange,
    /// Past the end of the partition: Kafka never had it.
    AboveHigh,
    /// Deleted by retention or delete-records.
    BelowLow,
}

/// Places `next` against the low and high watermarks (`high` is the offset the next record will get, so
/// `next == high` means caught up).
pub fn standing(next: i64, low: i64, high: i64) -> Standing {
    if next > high {
        Standing::AboveHigh
    } else if next < low {
        Standing::BelowLow
    } else {
        Standing::InRange
    }
}

/// Checks the table's next offset of a partition against Kafka's watermarks: in range → resume there;
/// above the high watermark → a configuration error (topic recreated, wrong cluster); below the low
/// watermark → per `policy`.
pub fn check_position(
    consumer: &KafkaConsumer,
    tp: &TopicPartition,
    next: i64,
    policy: DataLossPolicy,
) -> Result<Resume> {
    let (low, high) = consumer
        .fetch_watermarks(&tp.topic, tp.partition, WATERMARK_TIMEOUT)
        .map_err(|e| Error::new(ErrorKind::Transient, "cannot read watermarks").with("partition", tp).source(e))?;
    match standing(next, low, high) {
        Standing::InRange => Ok(Resume::At(next)),
        Standing::AboveHigh => Err(Error::new(
            ErrorKind::Config,
            "the table's progress for a partition is beyond the end of the Kafka partition (was the topic deleted and recreated, or is this another cluster?)",
        )
        .with("topic", &tp.topic)
        .with("partition", tp.partition)
        .with("table_offset", next)
        .with("high_watermark", high)
        .with("fix", "point k2i at a new table, or set the progress with `k2i table set-progress`")),
        Standing::BelowLow => match policy {
            DataLossPolicy::Fail => Err(Error::new(
                ErrorKind::Config,
                "Kafka no longer has the records after the table's progress (retention or delete-records passed it)",
            )
            .with("topic", &tp.topic)
            .with("partition", tp.partition)
            .with("table_offset", next)
            .with("low_watermark", low)
            .with("lost_records", low - next)
            .with("fix", "set kafka.on_data_loss = \"skip\" to resume at the low watermark and record the gap")),
            DataLossPolicy::Skip => {
                tracing::warn!(partition = %tp, table_offset = next, low_watermark = low, lost = low - next,
                    "Kafka no longer has records after the table's progress; skipping to the low watermark (kafka.on_data_loss = skip)");
                Ok(Resume::AfterGap(OffsetRange { start: next, end: low }))
            }
        },
    }
}

/// How long a new client waits for a broker's first answer before leaving the connection to librdkafka's
/// retries (a broker that is down is not a refusal: the instance starts and reports Kafka down in
/// `/status`).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The connection failure behind a librdkafka error event, when no retry can fix it: the broker refused
/// the SASL authentication (wrong password, user or mechanism), or the TLS handshake failed (the broker's
/// certificate is not trusted by `ssl.ca.location`, the client certificate was refused). A configuration
/// error (exit 2) naming the broker and librdkafka's cause; librdkafka's reasons never contain a
/// credential. `client` names the k2i client (consumer, dead-letter producer).
pub(crate) fn refused_connection(error: &KafkaError, reason: &str, client: &str) -> Option<Error> {
    let tls = (
        "cannot complete the TLS handshake with the Kafka broker",
        "check kafka.security.ssl_ca_location (the CA that signed the broker's certificate) and, when the \
         broker requires client certificates, ssl_cert_location, ssl_key_location and ssl_key_password",
    );
    let (what, fix) = match error.rdkafka_error_code()? {
        RDKafkaErrorCode::Authentication => (
            "cannot authenticate to the Kafka broker",
            "check kafka.security.sasl_mechanism, sasl_username and sasl_password (or sasl.* in \
             kafka.properties) against the broker's listener",
        ),
        // Not a connection cut mid-handshake (a broker restarting): that one is retried like any other.
        RDKafkaErrorCode::SSL if !reason.contains("Disconnected") => tls,
        // A broker refusing the client's certificate (mTLS) sends a TLS alert once the client's side of the
        // handshake is done (TLS 1.3), which librdkafka reports as a transport failure: OpenSSL's "SSL alert
        // number N" is the only sign. The one place k2i reads librdkafka's text: without it, a refused or
        // missing client certificate would be retried for ever.
        RDKafkaErrorCode::BrokerTransportFailure if reason.contains("SSL alert number") => tls,
        _ => return None,
    };
    let (broker, cause) = split_broker(reason);
    Some(
        Error::new(ErrorKind::Config, format!("{what} {}: {cause}", broker.unwrap_or("(unnamed)")))
            .with("client", client)
            .with("fix", fix),
    )
}

/// Splits librdkafka's `<protocol>://<host>:<port>/<node id or "bootstrap">: <cause>` into the broker's
/// address and the cause (dropping the address librdkafka repeats for a coordinator connection).
fn split_broker(reason: &str) -> (Option<&str>, &str) {
    let Some((name, cause)) = reason.split_once(": ") else { return (None, reason) };
    let Some((_, address)) = name.split_once("://") else { return (None, reason) };
    let address = address.rsplit_once('/').map_or(address, |(address, _)| address);
    let cause = cause.strip_prefix(address).and_then(|c| c.strip_prefix(": ")).unwrap_or(cause);
    (Some(address), cause)
}

/// Waits up to [`CONNECT_WAIT`] for a new client's first broker answer (`answered` makes one bounded
/// metadata request) and returns the refusal its context recorded meanwhile (`refused`), so a wrong
/// password or an untrusted certificate stops k2i at start. Without an answer or a refusal in that time
/// the client keeps retrying on its own (the broker may be down).
pub(crate) fn await_connection(
    client: &str,
    servers: &str,
    answered: impl Fn() -> bool,
    refused: impl Fn() -> Option<Error>,
) -> Result<()> {
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        let ok = answered();
        if let Some(error) = refused() {
            return Err(error);
        }
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(client, bootstrap_servers = servers, waited = ?CONNECT_WAIT,
                "no Kafka broker answered yet; starting anyway, the client keeps retrying");
            return Ok(());
        }
    }
}

/// A client creation error without the property's value: librdkafka's message repeats it, and it may be a
/// secret (a mistyped `sasl.password` key is not recognised as one).
pub(crate) fn creation_error(what: &str, error: KafkaError) -> Error {
    match error {
        KafkaError::ClientConfig(_, description, key, _) => {
            Error::new(ErrorKind::Config, format!("{what}: {description}")).with("property", key)
        }
        other => Error::new(ErrorKind::Config, what.to_owned()).source(other),
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
fn base_config(kafka: &KafkaConfig) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka.bootstrap_servers.join(","))
        .set("group.id", &kafka.consumer_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Never let librdkafka move a position: an offset Kafka does not have is k2i's decision (the
        // partition's start per auto_offset_reset is given explicitly as a logical offset instead).
        .set("auto.offset.reset", "error")
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
        config.set(key, value.expose()?);
    }
    Ok(config)
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
        on_data_loss: kafka.on_data_loss,
        changes: Mutex::new(Vec::new()),
        fatal: Mutex::new(None),
    };
    let consumer: KafkaConsumer = base_config(kafka)?
        .create_with_context(context)
        .map_err(|e| creation_error("cannot create the Kafka consumer", e))?;
    let topics = kafka.topic_list();
    let probe = topics.first().copied();
    await_connection(
        "consumer",
        &kafka.bootstrap_servers.join(","),
        || consumer.fetch_metadata(probe, Duration::from_millis(250)).is_ok(),
        || {
            // Nothing is subscribed yet, so a poll returns no record: it serves the error events the
            // metadata request raised, and the context records a refusal as fatal.
            while consumer.poll(Duration::ZERO).is_some() {}
            consumer.context().take_fatal()
        },
    )?;
    consumer
        .subscribe(&topics)
        .map_err(|e| Error::new(ErrorKind::Transient, "cannot subscribe").with("topics", topics.join(",")).source(e))?;
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
        let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| {
            Error::new(ErrorKind::Transient, "cannot read topic metadata").with("topic", topic).source(e)
        })?;
        let Some(meta) = metadata.topics().iter().find(|t| t.name() == *topic) else {
            return Err(Error::new(ErrorKind::Config, "the topic does not exist").with("topic", topic));
        };
        if let Some(err) = meta.error() {
            return Err(Error::new(ErrorKind::Transient, "the topic is not available")
                .with("topic", topic)
                .with("error", format!("{:?}", RDKafkaErrorCode::from(err))));
        }
        for partition in meta.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout).map_err(|e| {
                Error::new(ErrorKind::Transient, "cannot read watermarks")
                    .with("topic", topic)
                    .with("partition", partition.id())
                    .source(e)
            })?;
            out.insert(TopicPartition { topic: (*topic).to_owned(), partition: partition.id() }, (low, high));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_placed_against_the_watermarks() {
        assert_eq!(standing(10, 0, 10), Standing::InRange, "caught up");
        assert_eq!(standing(0, 0, 0), Standing::InRange, "empty partition, never written");
        assert_eq!(standing(1000, 0, 0), Standing::AboveHigh, "topic recreated");
        assert_eq!(standing(5, 8, 20), Standing::BelowLow, "retention passed the progress");
        assert_eq!(standing(8, 8, 20), Standing::InRange);
    }

    #[test]
    fn a_refused_connection_names_the_broker_and_librdkafkas_cause() {
        let auth = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let reason = "sasl_ssl://127.0.0.1:19094/bootstrap: SASL authentication error: Authentication failed \
                      during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512";
        let error = refused_connection(&auth, reason, "consumer").unwrap();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(
            error.to_string().starts_with(
                "cannot authenticate to the Kafka broker 127.0.0.1:19094: SASL authentication error: \
                 Authentication failed"
            ),
            "{error}"
        );
        let tls = KafkaError::Global(RDKafkaErrorCode::SSL);
        let reason = "ssl://127.0.0.1:19095/1: 127.0.0.1:19095: SSL handshake failed: certificate verify failed";
        let error = refused_connection(&tls, reason, "dead-letter producer").unwrap();
        assert!(
            error.to_string().starts_with(
                "cannot complete the TLS handshake with the Kafka broker 127.0.0.1:19095: SSL handshake failed: \
                 certificate verify failed (client=dead-letter producer, fix="
            ),
            "{error}"
        );
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let alert = "ssl://127.0.0.1:19095/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad \
                     certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)";
        let error = refused_connection(&transport, alert, "consumer").unwrap();
        assert!(
            error.to_string().starts_with(
                "cannot complete the TLS handshake with the Kafka broker 127.0.0.1:19095: Receive failed: \
                 error:0A000412:SSL routines::sslv3 alert bad certificate"
            ),
            "{error}"
        );
        let down = "plaintext://127.0.0.1:19092/bootstrap: Connect to ipv4#127.0.0.1:19092 failed: Connection refused";
        assert!(refused_connection(&transport, down, "consumer").is_none(), "a broker that is down is retried");
        assert_eq!(split_broker("no broker here"), (None, "no broker here"));
    }
}
