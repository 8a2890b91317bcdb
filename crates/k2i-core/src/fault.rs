//! Fault points for crash tests. **Test-only**: they do nothing unless `K2I_FAULT` is set.
//!
//! `K2I_FAULT=<point>:<action>[,<point>:<action>…]`, read once per process. Points, in the order a flush
//! passes them:
//! - `after-intent` — the flush intent is in the transaction log, no data file written yet;
//! - `after-data-files` — data files written, files recorded in the log, catalog not yet called;
//! - `after-commit` — the snapshot is committed in the catalog, the log does not know yet;
//! - `after-committed-record` — the log says committed, Kafka offsets not yet committed;
//! - `after-schema-change` — a writer schema's change is committed in the catalog, the transaction log and
//!   the polling thread do not know yet;
//! - `after-dead-letters` — the dead-letter topic acknowledged the dead letters of the flush about to be
//!   sealed, the flush (with their offsets) is not committed yet;
//! - `recovery` — at the start of start-up recovery (for readiness tests: `pause` holds the process in the
//!   `recovering` phase).
//!
//! Actions: `abort` ends the process at once like SIGKILL (no flush, no destructors, no log line after
//! the one naming the point); `pause` blocks the flush until the file named by `K2I_FAULT_RELEASE` exists
//! (forever without it), so a test can freeze an instance at a precise point and turn it into a zombie.
//! A point can be limited to its n-th passage with `@n` (`after-commit@3:abort`).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable selecting faults.
pub const FAULT_VAR: &str = "K2I_FAULT";
/// The environment variable naming the file that releases a `pause`.
pub const RELEASE_VAR: &str = "K2I_FAULT_RELEASE";

/// A named place in the flush path where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// After the intent record, before data files.
    AfterIntent,
    /// After the data files, before the catalog commit.
    AfterDataFiles,
    /// After the catalog commit, before the committed record.
    AfterCommit,
    /// After the committed record, before the Kafka offset commit.
    AfterCommittedRecord,
    /// After a schema change's catalog commit, before its log record.
    AfterSchemaChange,
    /// After the dead letters before a flush are acknowledged, before it is sealed.
    AfterDeadLetters,
    /// At the start of recovery.
    Recovery,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Self::AfterIntent => "after-intent",
            Self::AfterDataFiles => "after-data-files",
            Self::AfterCommit => "after-commit",
            Self::AfterCommittedRecord => "after-committed-record",
            Self::AfterSchemaChange => "after-schema-change",
            Self::AfterDeadLetters => "after-dead-letters",
            Self::Recovery => "recovery",
        }
    }

    const ALL: [Point; 7] = [
        Self::AfterIntent,
        Self::AfterDataFiles,
        Self::AfterCommit,
        Self::AfterCommittedRecord,
        Self::AfterSchemaChange,
        Self::AfterDeadLetters,
        Self::Recovery,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Abort,
    Pause,
}

struct Fault {
    action: Action,
    /// Fire only on this passage (1-based); `None`: every passage.
    nth: Option<u64>,
    passages: AtomicU64,
}

fn faults() -> &'static HashMap<Point, Fault> {
    static FAULTS: OnceLock<HashMap<Point, Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| std::env::var(FAULT_VAR).map(|spec| parse(&spec)).unwrap_or_default())
}

fn parse(spec: &str) -> HashMap<Point, Fault> {
    let mut out = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((point, action)) = item.split_once(':') else {
            tracing::error!(item, "ignoring malformed {FAULT_VAR} entry (want point:action)");
            continue;
        };
        let (point, nth) = match point.split_once('@') {
            Some((p, n)) => (p, n.parse().ok()),
            None => (point, None),
        };
        let Some(point) = Point::ALL.into_iter().find(|p| p.name() == point) else {
            tracing::error!(point, "ignoring unknown fault point");
            continue;
        };
        let action = match action {
            "abort" => Action::Abort,
            "pause" => Action::Pause,
            other => {
                tracing::error!(action = other, "ignoring unknown fault action (abort | pause)");
                continue;
            }
        };
        out.insert(point, Fault { action, nth, passages: AtomicU64::new(0) });
    }
    out
}

/// Passes a fault point: does nothing unless `K2I_FAULT` selects it.
pub fn hit(point: Point) {
    let Some(fault) = faults().get(&point) else { return };
    let passage = fault.passages.fetch_add(1, Ordering::SeqCst) + 1;
    if fault.nth.is_some_and(|n| n != passage) {
        return;
    }
    match fault.action {
        Action::Abort => {
            // eprintln, not tracing: the line must be out before the process dies.
            eprintln!("k2i: fault point {} reached: aborting", point.name());
            std::process::abort();
        }
        Action::Pause => {
            eprintln!("k2i: fault point {} reached: pausing", point.name());
            let release = std::env::var_os(RELEASE_VAR).map(std::path::PathBuf::from);
            loop {
                if release.as_ref().is_some_and(|p| p.exists()) {
                    eprintln!("k2i: fault point {} released", point.name());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_points_actions_and_passages() {
        let faults = parse("after-commit@3:abort, after-intent:pause,bogus:abort,after-data-files:explode");
        assert_eq!(faults.len(), 2);
        assert_eq!(faults[&Point::AfterCommit].action, Action::Abort);
        assert_eq!(faults[&Point::AfterCommit].nth, Some(3));
        assert_eq!(faults[&Point::AfterIntent].action, Action::Pause);
        assert!(faults[&Point::AfterIntent].nth.is_none());
    }
}
