//! The transaction log: an append-only, checksummed record of every flush's intent and outcome, so a
//! restart can tell which flushes landed and which left files behind.
//!
//! # On-disk format
//! The log is a directory of files `txlog-<sequence, 20 digits>.log`. Each file starts with a 12-byte header:
//! the magic `K2ITXLG\0`, a little-endian `u16` format version (1) and two reserved bytes. Frames follow:
//!
//! ```text
//! [length: u32 LE][crc32c of body: u32 LE][body: `length` bytes of JSON, one `Record`]
//! ```
//!
//! A frame is *valid* when its length is above 0 and at most 64 MiB, its body is a JSON object as the log
//! writes it (first byte `{`, last byte `}`), the CRC32C of the body matches, and the body parses as a
//! [`Record`]. A zero-length frame is never valid: no record encodes to nothing, and all-zero bytes would
//! otherwise read as a frame of length 0 whose CRC32C (0) matches.
//!
//! # Records
//! A flush appends, in order: [`Record::Intent`] before any data file is written, [`Record::Files`] once
//! they are, one [`Record::Attempt`] before each commit attempt (naming the snapshot the attempt's
//! compare-and-swap is pinned to), and then [`Record::Committed`] or [`Record::Aborted`]. A flush with an
//! intent and no outcome is *pending* ([`Pending`]); recovery resolves it against the table at the next start.
//! [`Record::SchemaChange`] notes schema updates; [`Record::Checkpoint`] opens every file but the first.
//!
//! # Durability
//! With `durability = "always"` (the default) every record is fsynced before `append` returns, and a new
//! file is fsynced together with its directory, so an acknowledged record survives power loss. With
//! `"interval"` records are fsynced at most every `fsync_interval`; a lost record is harmless because the
//! table, not the log, is the truth about progress: it can only leave orphan files behind. Unsynced pages
//! can reach the disk out of order, though, so a power loss can leave a hole of zeros before records that did
//! land: that is damage followed by a valid frame, and opening refuses it as corruption (see Damage). Removing
//! the log directory is then safe, for the same reason.
//!
//! # Appends
//! Two writers can never interleave a partial frame: a directory has one [`TxLog`] at a time (it holds an
//! exclusive lock on `LOCK` for its whole life), `append` takes `&mut self`, and each frame goes to the file in
//! one `write_all` of the whole frame. What remains is a failed append: a write or fsync error can leave part
//! of a frame (or a whole frame that was not made durable) at the end of the file, and the next append would
//! follow it — turning a torn tail into corruption in the middle of the file. So on failure the file is cut
//! back to its size before the append (`set_len`, then fsync) and the error returned. If that cut fails too,
//! the log is *poisoned*: every later append and checkpoint returns an error naming the file
//! ([`TxLog::is_poisoned`]). A restart repairs it: whatever the failed append left is a torn tail.
//!
//! # Damage
//! A file is read frame by frame up to the first bytes that are not a valid frame — the *damage*, at a byte
//! offset. From the damage offset + 1 the rest of the file is scanned, byte by byte, for a valid frame:
//! - **a valid frame follows** → corruption: records that were acknowledged after the damage would be lost by
//!   cutting it off, so opening fails with an error naming the file and the byte offsets of the damage and of
//!   the valid frame;
//! - **nothing valid follows, newest file** → a torn tail from a crash during an append: the file is truncated
//!   to the last good record, with a warning naming the file, the byte offset and how many bytes were dropped.
//!   Whatever the bytes are: a torn append on ext4 or XFS can leave a cut-short frame, a frame whose last
//!   blocks never reached the disk, or the file extended with zero-filled bytes;
//! - **nothing valid follows, older file** → corruption too: a file is fsynced before the next one is created,
//!   so an older file is always whole.
//!
//! The scan does not find frames in torn bytes by accident. A length is at most 2^26, so its fourth byte is a
//! control byte, which JSON text never holds raw: no candidate starts inside a record's body. Zero-filled
//! bytes fail at their length (0). Any other stray candidate must begin with `{`, end with `}`, match a
//! CRC32C (a 2^-32 chance) and parse. Only candidates that pass the length and brace checks cost a CRC, so
//! the scan is linear in what a crash leaves behind (16 MiB of zeros or of random bytes after the damage:
//! 30–60 ms in a release build). Bytes crafted to look like frame after frame could make it quadratic, but
//! only within one file, and files rotate at 16 MiB.
//!
//! A newest file shorter than its header, or whose header is all zeros, with no valid frame after it, is a
//! crash while creating the file: its header is rewritten. A wrong magic or an unknown version is never
//! repaired: it is not a file this version wrote.
//!
//! # Bounded size
//! When the current file passes [`ROTATE_BYTES`], and after every recovery, the log starts a new file that
//! begins with a checkpoint of the flushes still pending (their intents, files and attempts), then deletes
//! the older files.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

mod file;
#[cfg(test)]
mod tests;

use file::{AppendFailure, HEADER_LEN, append_frame, create_file, encode, read_file, sync_dir};

/// A file larger than this is rotated.
pub const ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// One offset range of a flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset.
    pub start: i64,
    /// One past the last offset.
    pub end: i64,
}

/// A flush is about to write data files named `k2i-<commit_id>-…` into `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecord {
    /// The flush's commit id.
    pub commit_id: String,
    /// `namespace.table`.
    pub table: String,
    /// Where the data files go (their names start with `k2i-<commit_id>-`).
    pub data_dir: String,
    /// The offset ranges the flush covers.
    pub ranges: Vec<RangeRecord>,
    /// The table schema the flush was decoded with.
    pub schema_id: i32,
}

/// The flush's data files are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesRecord {
    /// The flush's commit id.
    pub commit_id: String,
    /// Full paths of the files.
    pub files: Vec<String>,
}

/// A record of the log. On disk a JSON object whose `type` names the variant, with the variant's fields
/// beside it (`{"type":"intent","commit_id":…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A flush is about to write data files.
    Intent(IntentRecord),
    /// The flush's data files are written.
    Files(FilesRecord),
    /// A commit attempt of the flush is about to start. Appended before each attempt, so after a crash
    /// recovery knows every snapshot an attempt may have been committed on top of.
    Attempt {
        /// The flush's commit id.
        commit_id: String,
        /// The snapshot the attempt's compare-and-swap is pinned to; `None` when the table had no snapshot.
        base_snapshot_id: Option<i64>,
    },
    /// The flush's snapshot is in the table.
    Committed {
        /// The flush's commit id.
        commit_id: String,
        /// The snapshot.
        snapshot_id: i64,
    },
    /// The flush will never be committed; its files were deleted.
    Aborted {
        /// The flush's commit id.
        commit_id: String,
        /// Why (fenced, crashed before committing, …).
        reason: String,
    },
    /// The table schema changed.
    SchemaChange {
        /// The new schema id.
        schema_id: i32,
        /// The columns added.
        columns: Vec<String>,
    },
    /// The first record of a new file: the flushes still pending when older files were deleted.
    Checkpoint {
        /// Pending intents, each followed by its files record if any, then its attempt records in order.
        pending: Vec<Record>,
    },
}

/// How records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync every record.
    Always,
    /// fsync at most this often.
    Interval(Duration),
}

/// A flush that was started and not yet resolved.
///
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The intent.
    pub intent: IntentRecord,
    /// The files record, if the files were written.
    pub files: Option<FilesRecord>,
    /// The base snapshot of every commit attempt, in order (from its [`Record::Attempt`]; `None`: the table
    /// had no snapshot). Empty if no attempt started.
    pub bases: Vec<Option<i64>>,
}

impl Pending {
    /// The commit id.
    pub fn commit_id(&self) -> &str {
        &self.intent.commit_id
    }

    /// Full paths of the flush's data files; empty until its files record is written.
    pub fn files(&self) -> &[String] {
        self.files.as_ref().map_or(&[], |f| &f.files)
    }
}

/// The open log.
pub struct TxLog {
    /// Held open with an exclusive lock for the life of the log: two processes must never share a log
    /// (one's recovery would delete the other's in-flight files, and their frames could interleave).
    _lock: File,
    dir: PathBuf,
    file: File,
    path: PathBuf,
    sequence: u64,
    /// The length of `file` up to its last good record: where the next frame starts.
    size: u64,
    durability: Durability,
    last_sync: Instant,
    pending: BTreeMap<String, Pending>,
    /// Set when a failed append or checkpoint could not be undone (see the module docs).
    poisoned: bool,
}

fn io_error(message: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, message.to_owned()).with("file", path.display()).source(e)
}

fn file_name(sequence: u64) -> String {
    format!("txlog-{sequence:020}.log")
}

fn is_log_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("txlog-") && n.ends_with(".log"))
}

impl TxLog {
    /// Opens (creating if needed) the log in `dir`, reads every record, repairs a torn tail, and returns the
    /// log ready to append with the flushes still pending.
    pub fn open(dir: &Path, durability: Durability) -> Result<(Self, Vec<Pending>)> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create the transaction log directory", dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("cannot open the transaction log lock", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "another k2i process uses this transaction log directory; give each instance its own log_dir",
                )
                .with("log_dir", dir.display()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_error("cannot lock the transaction log", &lock_path, e));
            }
        }
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| io_error("cannot list the transaction log directory", dir, e))?
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let name = path.file_name()?.to_str()?;
                let seq = name.strip_prefix("txlog-")?.strip_suffix(".log")?.parse().ok()?;
                Some((seq, path))
            })
            .collect();
        files.sort();
        let mut pending = BTreeMap::new();
        for (i, (_, path)) in files.iter().enumerate() {
            let newest = i + 1 == files.len();
            for record in read_file(path, newest)? {
                apply(&mut pending, record);
            }
        }
        let sequence = files.last().map_or(0, |(seq, _)| *seq);
        let (file, path, size) = match files.last() {
            Some((_, path)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| io_error("cannot open the transaction log", path, e))?;
                let size = file.metadata().map_err(|e| io_error("cannot stat the transaction log", path, e))?.len();
                (file, path.clone(), size)
            }
            None => {
                let path = dir.join(file_name(1));
                let file = create_file(dir, &path, &[]).map_err(|failure| failure.error)?;
                (file, path, HEADER_LEN as u64)
            }
        };
        let log = Self {
            _lock: lock,
            dir: dir.to_owned(),
            file,
            path,
            sequence: sequence.max(1),
            size,
            durability,
            last_sync: Instant::now(),
            pending: pending.clone(),
            poisoned: false,
        };
        Ok((log, pending.into_values().collect()))
    }

    /// The flushes started and not yet resolved.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.pending.values()
    }

    /// Whether an append or checkpoint failed in a way that could not be undone; if so every later one fails
    /// until the process restarts and the log is opened again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Appends a record (and makes it durable per the policy; `attempt` records always); rotates the file
    /// when it is large. If writing the record fails, the file is cut back to where it was (or the log is
    /// poisoned) and the record is not applied; if only the rotation after it fails, the record is in the log,
    /// the append succeeds and the failure is logged (a failed rotation poisons the log or is retried by the
    /// next append: a durable `committed` record must not turn a landed commit into a failure).
    pub fn append(&mut self, record: Record) -> Result<()> {
        self.check_not_poisoned()?;
        let frame = encode(&record)?;
        // An attempt record is always made durable before its request is sent, whatever the policy: recovery
        // keeps a flush's files only while an attempt could still land, and it can only know that from it.
        let sync = matches!(record, Record::Attempt { .. })
            || match self.durability {
                Durability::Always => true,
                Durability::Interval(every) => self.last_sync.elapsed() >= every,
            };
        if let Err(failure) = append_frame(&mut self.file, &self.path, self.size, &frame, sync) {
            return Err(self.undo_failed(failure));
        }
        self.size += frame.len() as u64;
        if sync {
            self.last_sync = Instant::now();
        }
        apply(&mut self.pending, record);
        if self.size > ROTATE_BYTES {
            // The record is durable (per the policy) even if rotating fails.
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, file = %self.path.display(), "cannot rotate the transaction log; the record is in it");
            }
        }
        Ok(())
    }

    /// Starts a new file with a checkpoint of the pending flushes and deletes the older files.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.check_not_poisoned()?;
        // With interval durability the current file may hold unsynced records; once it is no longer the newest
        // file a torn record in it would be corruption, so make it whole first.
        self.file.sync_data().map_err(|e| io_error("cannot fsync the transaction log", &self.path, e))?;
        let sequence = self.sequence + 1;
        let path = self.dir.join(file_name(sequence));
        let records: Vec<Record> = self
            .pending
            .values()
            .flat_map(|p| {
                let attempts = p
                    .bases
                    .iter()
                    .map(|base| Record::Attempt { commit_id: p.commit_id().to_owned(), base_snapshot_id: *base });
                std::iter::once(Record::Intent(p.intent.clone()))
                    .chain(p.files.clone().map(Record::Files))
                    .chain(attempts)
            })
            .collect();
        let frame = encode(&Record::Checkpoint { pending: records })?;
        // The checkpoint must be durable, name included, before the files it replaces are deleted.
        let file = create_file(&self.dir, &path, &frame).map_err(|failure| self.undo_failed(failure))?;
        // From here on appends go to the new file, so a failure deleting the older ones leaves a log that still
        // reads right: older files first, then the checkpoint replaces what they say.
        self.file = file;
        self.size = (HEADER_LEN + frame.len()) as u64;
        self.path = path;
        self.sequence = sequence;
        let old: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| io_error("cannot list the transaction log directory", &self.dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p != &self.path && is_log_file(p))
            .collect();
        for old_path in old {
            std::fs::remove_file(&old_path)
                .map_err(|e| io_error("cannot delete an old transaction log file", &old_path, e))?;
        }
        sync_dir(&self.dir)
    }

    fn check_not_poisoned(&self) -> Result<()> {
        if !self.poisoned {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Io,
            "the transaction log is poisoned: an earlier append failed and could not be undone; restart to repair it",
        )
        .with("file", self.path.display()))
    }

    /// The error for a failed append or new file; poisons the log when what it left could not be removed.
    fn undo_failed(&mut self, failure: AppendFailure) -> Error {
        let AppendFailure { error, path, undo } = failure;
        match undo {
            Ok(()) => error,
            Err(undo) => {
                self.poisoned = true;
                Error::new(
                    ErrorKind::Io,
                    "cannot undo a failed write, so the transaction log is poisoned until a restart",
                )
                .with("file", path.display())
                .with("undo_error", undo)
                .source(error)
            }
        }
    }
}

/// Applies one record to the pending flushes.
fn apply(pending: &mut BTreeMap<String, Pending>, record: Record) {
    match record {
        Record::Intent(intent) => {
            pending.insert(intent.commit_id.clone(), Pending { intent, files: None, bases: Vec::new() });
        }
        Record::Files(files) => {
            if let Some(p) = pending.get_mut(&files.commit_id) {
                p.files = Some(files);
            }
        }
        Record::Attempt { commit_id, base_snapshot_id } => {
            if let Some(p) = pending.get_mut(&commit_id) {
                p.bases.push(base_snapshot_id);
            }
        }
        Record::Committed { commit_id, .. } | Record::Aborted { commit_id, .. } => {
            pending.remove(&commit_id);
        }
        Record::SchemaChange { .. } => {}
        Record::Checkpoint { pending: records } => {
            pending.clear();
            for r in records {
                apply(pending, r);
            }
        }
    }
}
