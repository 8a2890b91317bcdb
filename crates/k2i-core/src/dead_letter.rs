//! The dead-letter topic: records that cannot be stored (`errors.policy = "dead-letter"`) or whose writer
//! schema is a breaking change (`on_breaking_change = "dead-letter"`) are produced, unchanged, to
//! `errors.dead_letter_topic` with headers saying why.
//!
//! Nothing is lost between the table and the dead-letter topic: a dead-lettered record's offset is part of
//! the table's next commit, and [`DeadLetters::settle`] must report every dead letter acknowledged
//! (idempotent producer, `acks=all`) before a flush is sealed. A failed delivery is produced again; while any
//! is unacknowledged the table does not flush and its partitions pause (a dead-letter outage pauses, it does
//! not drop). A crash between the acknowledgement and the commit re-reads the record on restart and produces
//! it again: a dead letter can repeat, and its `k2i.source.*` headers let consumers drop repeats.
//!
//! Headers added to the original ones:
//! `k2i.error.kind`, `k2i.error.reason`, `k2i.source.topic`, `k2i.source.partition`, `k2i.source.offset`,
//! `k2i.schema.id` (registry formats, when known) and `k2i.version`.
//!
//! The producer connects like the consumer (the same `kafka.properties`, so `[kafka.security]` too), and a
//! connection no retry can fix (refused credentials, a failed TLS handshake) stops the table with a
//! configuration error, at start or at the next settle, instead of pausing it for ever.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use crate::config::KafkaConfig;
use crate::error::{Error, ErrorKind, Result};

/// Header names of a dead letter.
pub mod header {
    /// The error kind (the `k2i_decode_errors_total` label, or `breaking_schema`).
    pub const KIND: &str = "k2i.error.kind";
    /// What is wrong, in words.
    pub const REASON: &str = "k2i.error.reason";
    /// The record's source topic.
    pub const TOPIC: &str = "k2i.source.topic";
    /// Its partition.
    pub const PARTITION: &str = "k2i.source.partition";
    /// Its offset.
    pub const OFFSET: &str = "k2i.source.offset";
    /// The registry schema id of its value, when it has one.
    pub const SCHEMA_ID: &str = "k2i.schema.id";
    /// The k2i version that dead-lettered it.
    pub const VERSION: &str = "k2i.version";
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone)]
pub struct Why<'a> {
    /// The error kind.
    pub kind: &'a str,
    /// What is wrong.
    pub reason: &'a str,
    /// The registry schema id, if known.
    pub schema_id: Option<u32>,
}

/// A dead letter kept until the topic acknowledges it.
struct Letter {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    delivery: Option<DeliveryFuture>,
    attempts: u32,
    source: String,
}

/// The producer's context: keeps the first connection refusal librdkafka reports (on the producer's own
/// polling thread) for [`DeadLetters::settle`].
#[derive(Clone, Default)]
struct Refusal(Arc<Mutex<Option<Error>>>);

impl Refusal {
    fn take(&self) -> Option<Error> {
        self.0.lock().ok().and_then(|mut r| r.take())
    }
}

impl ClientContext for Refusal {
    fn error(&self, error: KafkaError, reason: &str) {
        match crate::source::refused_connection(&error, reason, "dead-letter producer") {
            Some(refused) => {
                if let Ok(mut slot) = self.0.lock() {
                    slot.get_or_insert(refused);
                }
            }
            None => tracing::warn!(error = %error, "dead-letter producer error: {reason}"),
        }
    }
}

/// The dead-letter producer of one table's pipeline.
pub struct DeadLetters {
    producer: FutureProducer<Refusal>,
    refusal: Refusal,
    topic: String,
    letters: Vec<Letter>,
    last_error: Option<String>,
}

impl DeadLetters {
    /// A producer for `topic` with the consumer's connection settings (`kafka.properties` included, so the
    /// same security applies), idempotent with `acks=all`.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self> {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", kafka.bootstrap_servers.join(","))
            .set("client.id", format!("k2i-{}-dead-letters", env!("CARGO_PKG_VERSION")))
            .set("message.timeout.ms", "10000");
        for (key, value) in &kafka.properties {
            // Consumer-only properties would only make librdkafka warn.
            if !CONSUMER_ONLY.contains(&key.as_str()) {
                config.set(key, value.expose()?);
            }
        }
        // After the user's properties: these two are what makes "acknowledged" mean "stored".
        config.set("enable.idempotence", "true").set("acks", "all");
        let refusal = Refusal::default();
        let producer: FutureProducer<Refusal> = config
            .create_with_context(refusal.clone())
            .map_err(|e| crate::source::creation_error("cannot create the dead-letter producer", e))?;
        crate::source::await_connection(
            "dead-letter producer",
            &kafka.bootstrap_servers.join(","),
            || producer.client().fetch_metadata(Some(topic), Duration::from_millis(250)).is_ok(),
            || refusal.take().map(|e| e.with("topic", topic)),
        )?;
        Ok(Self { producer, refusal, topic: topic.to_owned(), letters: Vec::new(), last_error: None })
    }

    /// The topic dead letters go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues `message` as a dead letter (produced at once; acknowledged by a later [`DeadLetters::settle`]).
    pub fn send(&mut self, message: &BorrowedMessage<'_>, why: &Why<'_>) {
        // rdkafka panics on a header name that is not UTF-8: such headers are left out (the reason says so).
        let original = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            message
                .headers()
                .map(|h| h.iter().map(|x| (x.key.to_owned(), x.value.map(<[u8]>::to_vec))).collect::<Vec<_>>())
                .unwrap_or_default()
        }));
        let (mut headers, dropped) = match original {
            Ok(headers) => (headers, false),
            Err(_) => (Vec::new(), true),
        };
        let reason = if dropped {
            format!("{} (the original headers were left out: a name is not valid UTF-8)", why.reason)
        } else {
            why.reason.to_owned()
        };
        let mut add = |name: &str, value: String| headers.push((name.to_owned(), Some(value.into_bytes())));
        add(header::KIND, why.kind.to_owned());
        add(header::REASON, reason);
        add(header::TOPIC, message.topic().to_owned());
        add(header::PARTITION, message.partition().to_string());
        add(header::OFFSET, message.offset().to_string());
        if let Some(id) = why.schema_id {
            add(header::SCHEMA_ID, id.to_string());
        }
        add(header::VERSION, env!("CARGO_PKG_VERSION").to_owned());
        let mut letter = Letter {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            timestamp: message.timestamp().to_millis(),
            headers,
            delivery: None,
            attempts: 0,
            source: format!("{}/{}@{}", message.topic(), message.partition(), message.offset()),
        };
        self.submit(&mut letter);
        self.letters.push(letter);
    }

    fn submit(&mut self, letter: &mut Letter) {
        let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len());
        for (key, value) in &letter.headers {
            headers = headers.insert(Header { key, value: value.as_deref() });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &letter.value {
            record = record.payload(value.as_slice());
        }
        if let Some(ts) = letter.timestamp {
            record = record.timestamp(ts);
        }
        letter.attempts += 1;
        match self.producer.send_result(record) {
            Ok(delivery) => letter.delivery = Some(delivery),
            Err((e, _)) => {
                self.last_error = Some(e.to_string());
                letter.delivery = None;
            }
        }
    }

    /// Dead letters not acknowledged yet.
    pub fn pending(&self) -> usize {
        self.letters.len()
    }

    /// Waits up to `wait` for every dead letter to be acknowledged, producing failed ones again. `Ok` when
    /// none is left; otherwise an error naming the topic, how many wait, and the last delivery error.
    pub fn settle(&mut self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            // Deliveries to a broker that refuses the producer only time out: the refusal says why.
            if let Some(refused) = self.refusal.take() {
                return Err(refused.with("topic", &self.topic).with("pending", self.letters.len()));
            }
            let mut fatal: Option<String> = None;
            let mut letters = std::mem::take(&mut self.letters);
            for letter in &mut letters {
                if letter.delivery.is_none() {
                    self.submit(letter);
                }
            }
            letters.retain_mut(|letter| {
                let Some(delivery) = letter.delivery.as_mut() else { return true };
                match delivery.now_or_never() {
                    None => true,
                    Some(Ok(Ok(_))) => false,
                    Some(Ok(Err((e, _)))) => {
                        if permanent(&e) {
                            fatal.get_or_insert_with(|| format!("{} (dead letter of {})", e, letter.source));
                        }
                        tracing::warn!(source = %letter.source, attempt = letter.attempts, error = %e, "a dead letter was not delivered; producing it again");
                        self.last_error = Some(e.to_string());
                        letter.delivery = None;
                        true
                    }
                    Some(Err(_)) => {
                        letter.delivery = None;
                        true
                    }
                }
            });
            self.letters = letters;
            if let Some(reason) = fatal {
                // Retrying cannot deliver it: the table stops (the next start re-reads the record).
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("the dead-letter topic refuses a dead letter: {reason}"),
                )
                .with("topic", &self.topic));
            }
            if self.letters.is_empty() {
                self.last_error = None;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(ErrorKind::Transient, "dead letters are not acknowledged yet")
                    .with("topic", &self.topic)
                    .with("pending", self.letters.len())
                    .with("last_error", self.last_error.as_deref().unwrap_or("none yet (still in flight)")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Delivery errors no retry can fix.
fn permanent(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidRecord
        )
    )
}

/// Consumer properties a producer would only warn about.
const CONSUMER_ONLY: [&str; 12] = [
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "fetch.min.bytes",
    "queued.max.messages.kbytes",
    "isolation.level",
];
