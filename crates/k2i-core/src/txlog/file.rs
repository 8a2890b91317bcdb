//! The bytes of one log file: its header and frames, reading them under the damage rules, and appending a frame
//! so that a failure leaves nothing behind (the rules are in the module docs of `txlog`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{Record, io_error};
use crate::error::{Error, ErrorKind, Result};

const MAGIC: &[u8; 8] = b"K2ITXLG\0";
const VERSION: u16 = 1;
/// The file header: magic, version, two reserved bytes.
pub(super) const HEADER_LEN: usize = 12;
/// A frame's length and checksum, before its body.
pub(super) const FRAME_LEN: usize = 8;
/// A record larger than this is corruption, not data (an intent lists files and partitions: kilobytes).
const MAX_RECORD: u32 = 64 * 1024 * 1024;

fn header() -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// One record as a frame: length, CRC32C of the body, body.
pub(super) fn encode(record: &Record) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(record)
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot encode a transaction log record").source(e))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= MAX_RECORD)
        .ok_or_else(|| Error::new(ErrorKind::Internal, "a transaction log record is too large"))?;
    let mut frame = Vec::with_capacity(FRAME_LEN + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Reads the valid frame at the start of `bytes`: the record and the frame's length, or why it is not one.
fn parse_frame(bytes: &[u8]) -> std::result::Result<(Record, usize), &'static str> {
    let Some((len, rest)) = bytes.split_first_chunk::<4>() else { return Err("a record header is cut short") };
    let Some((crc, rest)) = rest.split_first_chunk::<4>() else { return Err("a record header is cut short") };
    let len = u32::from_le_bytes(*len);
    if len == 0 {
        return Err("a record has length zero");
    }
    if len > MAX_RECORD {
        return Err("a record length is implausible");
    }
    let Some(body) = rest.get(..len as usize) else { return Err("a record is cut short") };
    // Before the checksum because it is cheaper: the scan for a valid frame after damage tries every offset,
    // and a body encoded by `encode` is a JSON object with nothing around it.
    if body.first() != Some(&b'{') || body.last() != Some(&b'}') {
        return Err("a record is not a JSON object");
    }
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err("a record fails its checksum");
    }
    let record = serde_json::from_slice(body).map_err(|_| "a record is not a valid k2i record")?;
    Ok((record, FRAME_LEN + body.len()))
}

/// The offset of the first valid frame at or after `from`, trying every byte.
fn next_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&at| bytes.get(at..).is_some_and(|rest| parse_frame(rest).is_ok()))
}

/// Reads a file's records. In the newest file damage with no valid frame after it is a torn tail and is cut
/// off; any other damage is an error naming the file and byte offset.
pub(super) fn read_file(path: &Path, newest: bool) -> Result<Vec<Record>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_error("cannot read the transaction log", path, e))?;
    let corrupt = |offset: usize, what: &str| {
        Error::new(ErrorKind::Corrupt, format!("the transaction log is corrupt: {what}"))
            .with("file", path.display())
            .with("byte_offset", offset)
    };
    // Damage at `offset`, judged by what follows it.
    let damaged = |offset: usize, reason: &str| -> Result<()> {
        if let Some(next) = next_valid_frame(&bytes, offset + 1) {
            return Err(
                corrupt(offset, &format!("{reason}, and a valid record follows it")).with("next_record_offset", next)
            );
        }
        if !newest {
            return Err(corrupt(offset, &format!("{reason}, in a file that is not the newest")));
        }
        Ok(())
    };

    let torn_header = match bytes.get(..HEADER_LEN) {
        None => Some("the file header is cut short"),
        Some(header) if header.iter().all(|b| *b == 0) => Some("the file header is zero-filled"),
        Some(_) => None,
    };
    if let Some(reason) = torn_header {
        damaged(0, reason)?;
        // A crash while creating the file: nothing was ever appended to it.
        tracing::warn!(file = %path.display(), byte_offset = 0, reason, "transaction log file has a torn header; rewriting it");
        rewrite_header(path)?;
        return Ok(Vec::new());
    }
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(corrupt(0, "the file does not start with the k2i transaction log magic"));
    }
    let version = bytes.get(MAGIC.len()..MAGIC.len() + 2).and_then(|v| v.try_into().ok()).map(u16::from_le_bytes);
    if version != Some(VERSION) {
        return Err(corrupt(MAGIC.len(), &format!("unsupported format version {}", version.unwrap_or_default())));
    }

    let mut records = Vec::new();
    let mut offset = HEADER_LEN;
    while let Some(rest) = bytes.get(offset..).filter(|rest| !rest.is_empty()) {
        match parse_frame(rest) {
            Ok((record, used)) => {
                records.push(record);
                offset += used;
            }
            Err(reason) => {
                damaged(offset, reason)?;
                tracing::warn!(
                    file = %path.display(),
                    byte_offset = offset,
                    dropped_bytes = bytes.len() - offset,
                    reason,
                    "transaction log has a torn tail; truncating it to the last good record"
                );
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| {
                        f.set_len(offset as u64)?;
                        // The cut must be durable before anything is appended after it.
                        f.sync_all()
                    })
                    .map_err(|e| io_error("cannot truncate the transaction log", path, e))?;
                break;
            }
        }
    }
    Ok(records)
}

fn rewrite_header(path: &Path) -> Result<()> {
    std::fs::write(path, header())
        .and_then(|()| File::open(path)?.sync_all())
        .map_err(|e| io_error("cannot rewrite a transaction log header", path, e))
}

/// A failed write to the log, and whether what it left was removed (`undo`): cutting the file back to its
/// size before an append, or deleting a new file. An `undo` error poisons the log.
pub(super) struct AppendFailure {
    pub(super) error: Error,
    pub(super) path: PathBuf,
    pub(super) undo: std::io::Result<()>,
}

/// What appending a frame needs from a file: the seam tests use to make a write or an fsync fail partway.
pub(super) trait AppendTarget {
    /// Writes all of `bytes` at the end of the file.
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes the written bytes durable.
    fn sync_data(&mut self) -> std::io::Result<()>;
    /// Cuts the file to `len` bytes and makes the new length durable.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl AppendTarget for File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        Write::write_all(self, bytes)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        // fdatasync: the bytes and the file length needed to read them back, not the timestamps.
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        // sync_all, not sync_data: the length is what changed.
        self.sync_all()
    }
}

/// Appends one frame (in one `write_all`) to a file whose last good record ends at `size`, fsyncing it if
/// `sync`. On failure the file is cut back to `size`, so the next append follows the last good record.
pub(super) fn append_frame(
    target: &mut impl AppendTarget,
    path: &Path,
    size: u64,
    frame: &[u8],
    sync: bool,
) -> std::result::Result<(), AppendFailure> {
    let written =
        target.write_all(frame).map_err(|e| io_error("cannot append to the transaction log", path, e)).and_then(|()| {
            if sync {
                target.sync_data().map_err(|e| io_error("cannot fsync the transaction log", path, e))
            } else {
                Ok(())
            }
        });
    // A failed fsync too: the frame may be in the page cache only, and a later fsync could make it durable
    // after the caller was told it failed.
    written.map_err(|error| AppendFailure { error, path: path.to_owned(), undo: target.truncate(size) })
}

/// Creates `path` holding the header and `first` (a checkpoint frame, or nothing), durable together with its
/// directory entry. On failure a file it created is deleted again.
pub(super) fn create_file(dir: &Path, path: &Path, first: &[u8]) -> std::result::Result<File, AppendFailure> {
    let mut file = OpenOptions::new().create_new(true).append(true).open(path).map_err(|e| AppendFailure {
        error: io_error("cannot create a transaction log file", path, e),
        path: path.to_owned(),
        // Nothing was created (or it is not this call's to delete).
        undo: Ok(()),
    })?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + first.len());
    bytes.extend_from_slice(&header());
    bytes.extend_from_slice(first);
    let written = Write::write_all(&mut file, &bytes)
        .map_err(|e| io_error("cannot write a transaction log file", path, e))
        .and_then(|()| file.sync_all().map_err(|e| io_error("cannot fsync a new transaction log file", path, e)))
        // The new name must survive a crash too: fsync the directory entry.
        .and_then(|()| sync_dir(dir));
    match written {
        Ok(()) => Ok(file),
        Err(error) => {
            // Left behind, it would be the newest file and its checkpoint would replace the state of every
            // record appended to the current file after it.
            let undo = std::fs::remove_file(path).and_then(|()| File::open(dir)?.sync_all());
            Err(AppendFailure { error, path: path.to_owned(), undo })
        }
    }
}

/// Makes the directory's entries (a new or deleted file name) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot fsync the transaction log directory", dir, e))
}
