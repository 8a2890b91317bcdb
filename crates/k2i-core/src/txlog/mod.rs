//! The transaction log: an append-only, checksummed record of every flush's intent and outcome, so a
//! restart can tell which flushes landed and which left files behind.
//!
//! # On-disk format
//! The log is a directory of files `txlog-<sequence, 20 digits>.log`. Each file starts with a 12-byte header:
//! the magic `K2ITXLG\0`, a little-endian `u16` format version (1) and two reserved bytes. Records follow:
//!
//! ```text
//! [length: u32 LE][crc32c of body: u32 LE][body: `length` bytes of JSON, one `Record`]
//! ```
//!
//! # Durability
//! With `durability = "always"` (the default) every record is fsynced before `append` returns, and a new
//! file is fsynced together with its directory, so an acknowledged record survives power loss. With
//! `"interval"` records are fsynced at most every `fsync_interval`; a lost record is harmless because the
//! table, not the log, is the truth about progress: it can only leave orphan files behind.
//!
//! # Damage
//! A record cut short or failing its checksum at the very end of the newest file is a torn write from a
//! crash: the file is truncated to the last good record, with a warning naming the file and byte offset.
//! The same damage anywhere else — followed by more data — is corruption and an error with the same detail.
//!
//! # Bounded size
//! When the current file passes [`ROTATE_BYTES`], and after every recovery, the log starts a new file that
//! begins with a checkpoint of the flushes still pending, then deletes the older files.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

const MAGIC: &[u8; 8] = b"K2ITXLG\0";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 12;
const FRAME_LEN: usize = 8;
/// A file larger than this is rotated.
pub const ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// A record larger than this is corruption, not data (an intent lists files and partitions: kilobytes).
const MAX_RECORD: u32 = 64 * 1024 * 1024;

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

/// A record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A flush is about to write data files named `k2i-<commit_id>-…` into `data_dir`.
    Intent {
        /// The flush's commit id.
        commit_id: String,
        /// `namespace.table`.
        table: String,
        /// Where the data files go (their names start with `k2i-<commit_id>-`).
        data_dir: String,
        /// The offset ranges the flush covers.
        ranges: Vec<RangeRecord>,
        /// The table schema the flush was decoded with.
        schema_id: i32,
    },
    /// The flush's data files are written.
    Files {
        /// The flush's commit id.
        commit_id: String,
        /// Full paths of the files.
        files: Vec<String>,
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
        /// Pending intents, each followed by its files record if any.
        pending: Vec<Record>,
    },
}

impl Record {
    fn commit_id(&self) -> Option<&str> {
        match self {
            Self::Intent { commit_id, .. }
            | Self::Files { commit_id, .. }
            | Self::Committed { commit_id, .. }
            | Self::Aborted { commit_id, .. } => Some(commit_id),
            Self::SchemaChange { .. } | Self::Checkpoint { .. } => None,
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The intent record.
    pub intent: Record,
    /// The files record, if the files were written.
    pub files: Option<Record>,
}

impl Pending {
    /// The commit id.
    pub fn commit_id(&self) -> &str {
        self.intent.commit_id().unwrap_or_default()
    }
}

/// The open log.
pub struct TxLog {
    /// Held open with an exclusive lock for the life of the log: two processes must never share a log
    /// (one's recovery would delete the other's in-flight files).
    _lock: File,
    dir: PathBuf,
    file: File,
    path: PathBuf,
    sequence: u64,
    size: u64,
    durability: Durability,
    last_sync: Instant,
    pending: BTreeMap<String, Pending>,
}

fn io_error(message: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Internal, message.to_owned()).with("file", path.display()).source(e)
}

fn file_name(sequence: u64) -> String {
    format!("txlog-{sequence:020}.log")
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
        let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
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
                let file = create_file(dir, &path)?;
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
        };
        Ok((log, pending.into_values().collect()))
    }

    /// The flushes started and not yet resolved.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.pending.values()
    }

    /// Appends a record (and makes it durable per the policy); rotates the file when it is large.
    pub fn append(&mut self, record: Record) -> Result<()> {
        let frame = encode(&record)?;
        self.file.write_all(&frame).map_err(|e| io_error("cannot append to the transaction log", &self.path, e))?;
        self.size += frame.len() as u64;
        let due = match self.durability {
            Durability::Always => true,
            Durability::Interval(every) => self.last_sync.elapsed() >= every,
        };
        if due {
            // fsync the data, not the metadata: the file's length is covered by the frame length check on read.
            self.file.sync_data().map_err(|e| io_error("cannot fsync the transaction log", &self.path, e))?;
            self.last_sync = Instant::now();
        }
        apply(&mut self.pending, record);
        if self.size > ROTATE_BYTES {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Starts a new file with a checkpoint of the pending flushes and deletes the older files.
    pub fn checkpoint(&mut self) -> Result<()> {
        // With interval durability the current file may hold unsynced records; once it is no longer the newest
        // file a torn record in it would be corruption, so make it whole first.
        self.file.sync_data().map_err(|e| io_error("cannot fsync the transaction log", &self.path, e))?;
        let sequence = self.sequence + 1;
        let path = self.dir.join(file_name(sequence));
        let mut file = create_file(&self.dir, &path)?;
        let pending: Vec<Record> =
            self.pending.values().flat_map(|p| std::iter::once(p.intent.clone()).chain(p.files.clone())).collect();
        let frame = encode(&Record::Checkpoint { pending })?;
        file.write_all(&frame).map_err(|e| io_error("cannot write a checkpoint", &path, e))?;
        // The checkpoint must be durable before the files it replaces are deleted.
        file.sync_all().map_err(|e| io_error("cannot fsync a checkpoint", &path, e))?;
        let old: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| io_error("cannot list the transaction log directory", &self.dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p != &path
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("txlog-") && n.ends_with(".log"))
            })
            .collect();
        for old_path in old {
            std::fs::remove_file(&old_path)
                .map_err(|e| io_error("cannot delete an old transaction log file", &old_path, e))?;
        }
        sync_dir(&self.dir)?;
        self.file = file;
        self.size = (HEADER_LEN + frame.len()) as u64;
        self.path = path;
        self.sequence = sequence;
        Ok(())
    }
}

fn apply(pending: &mut BTreeMap<String, Pending>, record: Record) {
    match record {
        Record::Intent { ref commit_id, .. } => {
            pending.insert(commit_id.clone(), Pending { intent: record.clone(), files: None });
        }
        Record::Files { ref commit_id, .. } => {
            if let Some(p) = pending.get_mut(commit_id) {
                p.files = Some(record.clone());
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

fn encode(record: &Record) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(record)
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot encode a transaction log record").source(e))?;
    let len = u32::try_from(body.len())
        .map_err(|_| Error::new(ErrorKind::Internal, "a transaction log record is too large"))?;
    let mut frame = Vec::with_capacity(FRAME_LEN + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn create_file(dir: &Path, path: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(|e| io_error("cannot create a transaction log file", path, e))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&[0, 0]);
    file.write_all(&header).map_err(|e| io_error("cannot write a transaction log header", path, e))?;
    file.sync_all().map_err(|e| io_error("cannot fsync a new transaction log file", path, e))?;
    // The new name must survive a crash too: fsync the directory entry.
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot fsync the transaction log directory", dir, e))
}

/// Reads a file's records. In the newest file a damaged tail is truncated; anywhere else damage is an error.
fn read_file(path: &Path, newest: bool) -> Result<Vec<Record>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_error("cannot read the transaction log", path, e))?;
    let corrupt = |offset: usize, what: &str| {
        Error::new(ErrorKind::Internal, format!("the transaction log is corrupt: {what}"))
            .with("file", path.display())
            .with("byte_offset", offset)
    };
    if bytes.len() < HEADER_LEN {
        if newest {
            // A crash while creating the file: nothing was ever appended to it.
            tracing::warn!(file = %path.display(), byte_offset = 0, "transaction log file has a torn header; rewriting it");
            rewrite_header(path)?;
            return Ok(Vec::new());
        }
        return Err(corrupt(0, "the file header is cut short"));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt(0, "the file does not start with the k2i transaction log magic"));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(corrupt(8, &format!("unsupported format version {version}")));
    }
    let mut records = Vec::new();
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        let damage = match parse_frame(&bytes[offset..]) {
            Ok((record, used)) => {
                records.push(record);
                offset += used;
                continue;
            }
            Err(damage) => damage,
        };
        // Torn tail: the damaged frame reaches the end of the file (nothing was written after it).
        if newest && damage.reaches_end {
            tracing::warn!(
                file = %path.display(),
                byte_offset = offset,
                reason = damage.reason,
                "transaction log has a torn tail record; truncating it"
            );
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| {
                    f.set_len(offset as u64)?;
                    f.sync_all()
                })
                .map_err(|e| io_error("cannot truncate the transaction log", path, e))?;
            break;
        }
        return Err(corrupt(offset, damage.reason));
    }
    Ok(records)
}

struct Damage {
    reason: &'static str,
    reaches_end: bool,
}

fn parse_frame(bytes: &[u8]) -> std::result::Result<(Record, usize), Damage> {
    let Some(frame) = bytes.get(..FRAME_LEN) else {
        return Err(Damage { reason: "a record header is cut short", reaches_end: true });
    };
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len > MAX_RECORD {
        // A torn length field is only possible as the last bytes of the file.
        return Err(Damage { reason: "a record length is implausible", reaches_end: bytes.len() <= FRAME_LEN + 16 });
    }
    let end = FRAME_LEN + len as usize;
    let Some(body) = bytes.get(FRAME_LEN..end) else {
        return Err(Damage { reason: "a record is cut short", reaches_end: true });
    };
    let reaches_end = end == bytes.len();
    if crc32c::crc32c(body) != crc {
        return Err(Damage { reason: "a record fails its checksum", reaches_end });
    }
    serde_json::from_slice(body)
        .map(|r| (r, end))
        .map_err(|_| Damage { reason: "a record is not a valid k2i record", reaches_end })
}

fn rewrite_header(path: &Path) -> Result<()> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&[0, 0]);
    std::fs::write(path, header)
        .and_then(|()| File::open(path)?.sync_all())
        .map_err(|e| io_error("cannot rewrite a transaction log header", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str) -> Record {
        Record::Intent {
            commit_id: id.into(),
            table: "db.t".into(),
            data_dir: "/w/db/t/data".into(),
            ranges: vec![RangeRecord { topic: "t".into(), partition: 0, start: 0, end: 10 }],
            schema_id: 0,
        }
    }

    fn the_file(dir: &Path) -> PathBuf {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| !p.ends_with("LOCK")).collect();
        files.sort();
        files.pop().unwrap()
    }

    #[test]
    fn pending_flushes_survive_a_reopen_until_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, pending) = TxLog::open(dir.path(), Durability::Always).unwrap();
        assert!(pending.is_empty());
        log.append(intent("a")).unwrap();
        log.append(Record::Files { commit_id: "a".into(), files: vec!["/w/f1".into()] }).unwrap();
        log.append(intent("b")).unwrap();
        log.append(Record::Committed { commit_id: "b".into(), snapshot_id: 7 }).unwrap();
        drop(log);
        let (mut log, pending) = TxLog::open(dir.path(), Durability::Always).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].commit_id(), "a");
        assert!(pending[0].files.is_some());
        log.append(Record::Aborted { commit_id: "a".into(), reason: "test".into() }).unwrap();
        drop(log);
        assert!(TxLog::open(dir.path(), Durability::Always).unwrap().1.is_empty());
    }

    #[test]
    fn a_torn_tail_is_truncated_at_the_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = TxLog::open(dir.path(), Durability::Always).unwrap();
        log.append(intent("a")).unwrap();
        let good_len = std::fs::metadata(the_file(dir.path())).unwrap().len();
        log.append(intent("b")).unwrap();
        drop(log);
        let path = the_file(dir.path());
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (_, pending) = TxLog::open(dir.path(), Durability::Always).unwrap();
        assert_eq!(pending.iter().map(Pending::commit_id).collect::<Vec<_>>(), ["a"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len, "truncated to the last good record");
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = TxLog::open(dir.path(), Durability::Always).unwrap();
        log.append(intent("a")).unwrap();
        log.append(intent("b")).unwrap();
        drop(log);
        let path = the_file(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN + FRAME_LEN + 3] ^= 0xff; // inside the first record's body
        std::fs::write(&path, &bytes).unwrap();
        let error = TxLog::open(dir.path(), Durability::Always).err().expect("corruption is an error");
        let text = error.to_string();
        assert!(text.starts_with("the transaction log is corrupt: a record fails its checksum"), "{text}");
        assert!(text.contains(&format!("file={}", path.display())) && text.contains("byte_offset=12"), "{text}");
    }

    #[test]
    fn two_processes_cannot_share_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let (_first, _) = TxLog::open(dir.path(), Durability::Always).unwrap();
        let second = TxLog::open(dir.path(), Durability::Always).err().expect("the directory is locked");
        assert!(second.to_string().starts_with("another k2i process uses this transaction log directory"), "{second}");
    }

    #[test]
    fn checkpoints_keep_pending_flushes_and_drop_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = TxLog::open(dir.path(), Durability::Interval(Duration::from_secs(1))).unwrap();
        log.append(intent("a")).unwrap();
        log.append(intent("b")).unwrap();
        log.append(Record::Committed { commit_id: "b".into(), snapshot_id: 1 }).unwrap();
        log.checkpoint().unwrap();
        log.append(intent("c")).unwrap();
        drop(log);
        let logs = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name() != "LOCK").count();
        assert_eq!(logs, 1, "older files are deleted");
        let (_, pending) = TxLog::open(dir.path(), Durability::Always).unwrap();
        assert_eq!(pending.iter().map(Pending::commit_id).collect::<Vec<_>>(), ["a", "c"]);
    }
}
