//! When a table's buffer is flushed: by records, by bytes, or by the age of its oldest record.
//!
//! A pure function of the buffer's state and a time the caller read, so tests drive it with any clock. The
//! caller reads the clock once per batch of polled records (or when idle), not per record: `now = None`
//! means "not read this time", and only the age trigger needs it.

use std::time::{Duration, Instant};

use crate::config::BufferConfig;

/// The flush triggers of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush at this many records (stored or skipped).
    pub max_records: usize,
    /// Flush at this many buffered bytes: half of `buffer.max_size_mb`, because the other half is the flush
    /// in flight (the table pauses when the buffer, a flush waiting and the one in flight hold it all).
    pub max_bytes: usize,
    /// Flush when the oldest buffered record has waited this long.
    pub max_age: Duration,
}

/// Why a flush is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `flush_batch_size` records.
    Records,
    /// Half of the memory cap.
    Bytes,
    /// `flush_interval` since the oldest record.
    Age,
}

impl FlushPolicy {
    /// The policy `[buffer]` configures.
    pub fn new(buffer: &BufferConfig) -> Self {
        Self {
            max_records: buffer.flush_batch_size.get(),
            max_bytes: usize::try_from(buffer.max_size_mb.get() * 1024 * 1024 / 2).unwrap_or(usize::MAX),
            max_age: buffer.flush_interval.get(),
        }
    }

    /// Whether a buffer holding `records` records and `bytes` bytes, whose oldest record arrived at
    /// `first_record_at`, must be flushed at `now`.
    pub fn due(
        &self,
        records: usize,
        bytes: usize,
        first_record_at: Option<Instant>,
        now: Option<Instant>,
    ) -> Option<Trigger> {
        if records == 0 {
            return None;
        }
        if records >= self.max_records {
            return Some(Trigger::Records);
        }
        if bytes >= self.max_bytes {
            return Some(Trigger::Bytes);
        }
        match (first_record_at, now) {
            (Some(first), Some(now)) if now.saturating_duration_since(first) >= self.max_age => Some(Trigger::Age),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: FlushPolicy = FlushPolicy { max_records: 100, max_bytes: 1000, max_age: Duration::from_secs(5) };

    #[test]
    fn each_trigger_fires_at_its_threshold_and_not_before() {
        let t0 = Instant::now();
        let later = |s| Some(t0 + Duration::from_secs(s));
        assert_eq!(POLICY.due(0, 0, None, later(60)), None, "an empty buffer is never due");
        assert_eq!(POLICY.due(99, 999, Some(t0), later(4)), None);
        assert_eq!(POLICY.due(100, 0, Some(t0), None), Some(Trigger::Records));
        assert_eq!(POLICY.due(1, 1000, Some(t0), None), Some(Trigger::Bytes));
        assert_eq!(POLICY.due(1, 1, Some(t0), later(5)), Some(Trigger::Age));
        assert_eq!(POLICY.due(1, 1, Some(t0), None), None, "age needs a clock reading");
    }

    #[test]
    fn a_clock_that_went_backwards_does_not_fire_the_age_trigger() {
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(POLICY.due(1, 1, Some(t0), Some(t0 - Duration::from_secs(3))), None);
    }
}
