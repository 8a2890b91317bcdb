use std::io::Write;

use super::file::{AppendTarget, FRAME_LEN};
use super::*;

fn intent(id: &str) -> Record {
    Record::Intent(IntentRecord {
        commit_id: id.into(),
        table: "db.t".into(),
        data_dir: "/w/db/t/data".into(),
        ranges: vec![RangeRecord { topic: "t".into(), partition: 0, start: 0, end: 10 }],
        schema_id: 0,
    })
}

fn open(dir: &Path) -> Result<(TxLog, Vec<Pending>)> {
    TxLog::open(dir, Durability::Always)
}

fn ids(pending: &[Pending]) -> Vec<&str> {
    pending.iter().map(Pending::commit_id).collect()
}

fn the_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| !p.ends_with("LOCK")).collect();
    files.sort();
    files.pop().unwrap()
}

fn len(path: &Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

/// A log holding the intents of flushes a and b: its file, the file's bytes and where record a ends.
fn log_of_a_and_b(dir: &Path) -> (PathBuf, Vec<u8>, usize) {
    let (mut log, _) = open(dir).unwrap();
    log.append(intent("a")).unwrap();
    let end_of_a = len(&log.path);
    log.append(intent("b")).unwrap();
    drop(log);
    let path = the_file(dir);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes, end_of_a)
}

/// Opening `bytes` as the log's only file finds flush a alone and cuts the file back to the end of a.
fn assert_torn_back_to_a(dir: &Path, path: &Path, bytes: &[u8], end_of_a: usize, case: &str) {
    std::fs::write(path, bytes).unwrap();
    let (_, pending) = open(dir).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(ids(&pending), ["a"], "{case}");
    assert_eq!(len(path), end_of_a, "{case}: truncated to the last good record");
}

#[test]
fn pending_flushes_survive_a_reopen_until_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, pending) = open(dir.path()).unwrap();
    assert!(pending.is_empty());
    log.append(intent("a")).unwrap();
    log.append(Record::Files(FilesRecord { commit_id: "a".into(), files: vec!["/w/f1".into()] })).unwrap();
    log.append(intent("b")).unwrap();
    log.append(Record::Committed { commit_id: "b".into(), snapshot_id: 7 }).unwrap();
    drop(log);
    let (mut log, pending) = open(dir.path()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].commit_id(), "a");
    assert!(pending[0].files.is_some());
    log.append(Record::Aborted { commit_id: "a".into(), reason: "test".into() }).unwrap();
    drop(log);
    assert!(open(dir.path()).unwrap().1.is_empty());
}

#[test]
fn pending_flushes_read_their_intent_and_files_typed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    log.append(intent("a")).unwrap();
    let flush = log.pending().next().unwrap();
    assert!(flush.files().is_empty(), "no files record yet");
    log.append(Record::Files(FilesRecord { commit_id: "a".into(), files: vec!["/w/f1".into(), "/w/f2".into()] }))
        .unwrap();
    drop(log);
    let (_, pending) = open(dir.path()).unwrap();
    let intent = &pending[0].intent;
    assert_eq!(
        (intent.commit_id.as_str(), intent.table.as_str(), intent.data_dir.as_str(), intent.schema_id),
        ("a", "db.t", "/w/db/t/data", 0)
    );
    assert_eq!(intent.ranges, [RangeRecord { topic: "t".into(), partition: 0, start: 0, end: 10 }]);
    assert_eq!(pending[0].files(), ["/w/f1", "/w/f2"]);
}

#[test]
fn records_keep_their_on_disk_json_shape() {
    // Logs written before the records were typed structs must still read.
    let text = r#"{"type":"intent","commit_id":"a","table":"db.t","data_dir":"/w","ranges":[],"schema_id":0}"#;
    let record: Record = serde_json::from_str(text).unwrap();
    assert!(matches!(&record, Record::Intent(i) if i.commit_id == "a"));
    assert_eq!(serde_json::to_string(&record).unwrap(), text);
    let files: Record = serde_json::from_str(r#"{"type":"files","commit_id":"a","files":["/w/f"]}"#).unwrap();
    assert!(matches!(files, Record::Files(f) if f.files == ["/w/f"]));
}

#[test]
fn attempts_survive_a_reopen_and_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    log.append(intent("a")).unwrap();
    log.append(Record::Files(FilesRecord { commit_id: "a".into(), files: vec!["/w/f1".into()] })).unwrap();
    log.append(Record::Attempt { commit_id: "a".into(), base_snapshot_id: None }).unwrap();
    log.append(Record::Attempt { commit_id: "a".into(), base_snapshot_id: Some(5) }).unwrap();
    log.append(intent("b")).unwrap();
    log.append(Record::Attempt { commit_id: "b".into(), base_snapshot_id: Some(7) }).unwrap();
    log.append(Record::Committed { commit_id: "b".into(), snapshot_id: 8 }).unwrap();
    assert_eq!(log.pending().next().unwrap().bases, [None, Some(5)]);
    drop(log);
    let (mut log, pending) = open(dir.path()).unwrap();
    assert_eq!(ids(&pending), ["a"], "a resolved flush is gone with its attempts");
    assert_eq!(pending[0].bases, [None, Some(5)], "kept across a reopen");
    log.checkpoint().unwrap();
    log.append(Record::Attempt { commit_id: "a".into(), base_snapshot_id: Some(6) }).unwrap();
    drop(log);
    assert_eq!(the_file(dir.path()).file_name().unwrap(), "txlog-00000000000000000002.log");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "the checkpoint's file and LOCK only");
    let (_, pending) = open(dir.path()).unwrap();
    assert_eq!(pending[0].bases, [None, Some(5), Some(6)], "the checkpoint carried the attempts");
    assert_eq!(pending[0].files(), ["/w/f1"]);
}

#[test]
fn a_torn_tail_is_truncated_at_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, end_of_a) = log_of_a_and_b(dir.path());
    assert_torn_back_to_a(dir.path(), &path, &bytes[..bytes.len() - 5], end_of_a, "cut 5 bytes short");
}

#[test]
fn a_log_cut_at_any_byte_of_its_last_record_opens_at_the_record_before() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, end_of_a) = log_of_a_and_b(dir.path());
    for cut in end_of_a..bytes.len() {
        assert_torn_back_to_a(dir.path(), &path, &bytes[..cut], end_of_a, &format!("cut at {cut}"));
    }
}

#[test]
fn zero_filled_bytes_after_a_cut_at_any_byte_of_the_last_record_are_a_torn_tail() {
    // A torn append on ext4 or XFS can leave the file extended with zeros instead of the frame's bytes.
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, end_of_a) = log_of_a_and_b(dir.path());
    for cut in end_of_a..bytes.len() {
        for zeros in [1, 7, 8, 64, 4096] {
            let mut torn = bytes[..cut].to_vec();
            torn.resize(cut + zeros, 0);
            assert_torn_back_to_a(dir.path(), &path, &torn, end_of_a, &format!("cut at {cut}, then {zeros} zeros"));
        }
    }
}

#[test]
fn zeros_after_the_last_valid_record_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut bytes, _) = log_of_a_and_b(dir.path());
    let end_of_b = bytes.len();
    bytes.resize(end_of_b + 4096, 0);
    std::fs::write(&path, &bytes).unwrap();
    let (mut log, pending) = open(dir.path()).unwrap();
    assert_eq!(ids(&pending), ["a", "b"]);
    assert_eq!(len(&path), end_of_b);
    log.append(intent("c")).unwrap();
    drop(log);
    assert_eq!(ids(&open(dir.path()).unwrap().1), ["a", "b", "c"], "appends follow the last good record");
}

#[test]
fn a_flipped_byte_anywhere_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, end_of_a) = log_of_a_and_b(dir.path());
    for at in end_of_a..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0xff;
        assert_torn_back_to_a(dir.path(), &path, &flipped, end_of_a, &format!("byte {at} flipped"));
    }
}

#[test]
fn corruption_in_the_middle_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut bytes, end_of_a) = log_of_a_and_b(dir.path());
    bytes[HEADER_LEN + FRAME_LEN + 3] ^= 0xff; // inside the first record's body
    std::fs::write(&path, &bytes).unwrap();
    let error = open(dir.path()).err().expect("corruption is an error");
    assert_eq!(error.kind(), ErrorKind::Corrupt);
    let text = error.to_string();
    assert!(text.starts_with("the transaction log is corrupt: a record fails its checksum"), "{text}");
    assert!(text.contains(&format!("file={}", path.display())) && text.contains("byte_offset=12"), "{text}");
    assert_eq!(error.context("next_record_offset"), Some(end_of_a.to_string().as_str()), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "a corrupt file is left as it is");
}

#[test]
fn zeros_in_the_middle_followed_by_a_valid_record_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut bytes, end_of_a) = log_of_a_and_b(dir.path());
    bytes[HEADER_LEN..end_of_a].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let error = open(dir.path()).err().expect("record b follows the zeros");
    let text = error.to_string();
    assert!(text.starts_with("the transaction log is corrupt: a record has length zero, and a valid record follows"));
    assert_eq!(error.context("file"), Some(path.display().to_string().as_str()), "{text}");
    assert_eq!(error.context("byte_offset"), Some("12"), "{text}");
    assert_eq!(error.context("next_record_offset"), Some(end_of_a.to_string().as_str()), "{text}");
}

#[test]
fn damage_at_the_end_of_an_older_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, end_of_a) = log_of_a_and_b(dir.path());
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    std::fs::write(dir.path().join(file_name(2)), &bytes[..HEADER_LEN]).unwrap();
    let error = open(dir.path()).err().expect("an older file is always whole");
    let text = error.to_string();
    assert!(text.contains("in a file that is not the newest"), "{text}");
    assert_eq!(error.context("file"), Some(path.display().to_string().as_str()), "{text}");
    assert_eq!(error.context("byte_offset"), Some(end_of_a.to_string().as_str()), "{text}");
}

#[test]
fn a_zero_filled_header_in_the_newest_file_is_rewritten() {
    // A crash while creating the next file, on a file system that extended it with zeros.
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _) = log_of_a_and_b(dir.path());
    let newest = dir.path().join(file_name(2));
    std::fs::write(&newest, [0; 100]).unwrap();
    let (mut log, pending) = open(dir.path()).unwrap();
    assert_eq!(ids(&pending), ["a", "b"]);
    assert_eq!(std::fs::read(&newest).unwrap(), bytes[..HEADER_LEN], "a fresh header");
    log.append(intent("c")).unwrap();
    drop(log);
    assert_eq!(ids(&open(dir.path()).unwrap().1), ["a", "b", "c"]);
}

#[test]
fn a_file_that_is_not_a_k2i_log_is_never_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name(1));
    std::fs::write(&path, b"not a transaction log").unwrap();
    let error = open(dir.path()).err().expect("a foreign file is an error");
    assert!(error.to_string().contains("does not start with the k2i transaction log magic"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a transaction log");
}

/// The log's file, failing as told: a write stops after `write_limit` bytes; fsync or truncation fails.
struct Faulty {
    file: File,
    write_limit: Option<usize>,
    fail_sync: bool,
    fail_truncate: bool,
}

impl Faulty {
    fn of(log: &TxLog) -> Self {
        let file = OpenOptions::new().append(true).open(&log.path).unwrap();
        Self { file, write_limit: None, fail_sync: false, fail_truncate: false }
    }
}

impl AppendTarget for Faulty {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.write_limit {
            Some(limit) if limit < bytes.len() => {
                Write::write_all(&mut self.file, &bytes[..limit])?;
                Err(std::io::Error::other("injected: no space left on device"))
            }
            _ => Write::write_all(&mut self.file, bytes),
        }
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        if self.fail_sync { Err(std::io::Error::other("injected: fsync failed")) } else { self.file.sync_data() }
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if self.fail_truncate {
            Err(std::io::Error::other("injected: cannot truncate"))
        } else {
            AppendTarget::truncate(&mut self.file, len)
        }
    }
}

#[test]
fn a_failed_write_is_cut_back_so_the_next_append_follows_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    log.append(intent("a")).unwrap();
    let frame = encode(&intent("b")).unwrap();
    for written in 0..frame.len() {
        let mut target = Faulty { write_limit: Some(written), ..Faulty::of(&log) };
        let failure = append_frame(&mut target, &log.path, log.size, &frame, true).expect_err("the write fails");
        assert!(failure.error.to_string().starts_with("cannot append to the transaction log"), "{}", failure.error);
        assert!(failure.undo.is_ok());
        assert_eq!(len(&log.path) as u64, log.size, "{written} bytes written, then cut back");
    }
    log.append(intent("c")).unwrap();
    drop(log);
    assert_eq!(ids(&open(dir.path()).unwrap().1), ["a", "c"]);
}

#[test]
fn a_failed_fsync_is_cut_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    log.append(intent("a")).unwrap();
    let frame = encode(&intent("b")).unwrap();
    let mut target = Faulty { fail_sync: true, ..Faulty::of(&log) };
    let failure = append_frame(&mut target, &log.path, log.size, &frame, true).expect_err("the fsync fails");
    assert!(failure.error.to_string().starts_with("cannot fsync the transaction log"), "{}", failure.error);
    assert_eq!(len(&log.path) as u64, log.size, "the whole frame is removed: its caller was told it failed");
    drop(log);
    assert_eq!(ids(&open(dir.path()).unwrap().1), ["a"]);
}

#[test]
fn an_append_that_cannot_be_undone_poisons_the_log_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    log.append(intent("a")).unwrap();
    // A read-only handle: the write fails, and so does cutting the file back.
    log.file = File::open(&log.path).unwrap();
    let error = log.append(intent("b")).expect_err("the write fails");
    assert!(error.to_string().starts_with("cannot undo a failed write, so the transaction log is poisoned"), "{error}");
    assert!(log.is_poisoned());
    assert_eq!(ids(&log.pending().cloned().collect::<Vec<_>>()), ["a"], "a failed record is not applied");
    let path = log.path.clone();
    for later in [log.append(intent("c")), log.checkpoint()] {
        let error = later.expect_err("a poisoned log refuses");
        assert!(error.to_string().starts_with("the transaction log is poisoned"), "{error}");
        assert_eq!(error.context("file"), Some(path.display().to_string().as_str()));
    }
    drop(log);
    let (log, pending) = open(dir.path()).unwrap();
    assert!(!log.is_poisoned());
    assert_eq!(ids(&pending), ["a"]);
}

#[test]
fn a_partial_frame_that_could_not_be_cut_back_is_a_torn_tail_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    log.append(intent("a")).unwrap();
    let end_of_a = log.size as usize;
    let frame = encode(&intent("b")).unwrap();
    let mut target = Faulty { write_limit: Some(frame.len() / 2), fail_truncate: true, ..Faulty::of(&log) };
    let failure = append_frame(&mut target, &log.path, log.size, &frame, true).expect_err("the write fails");
    assert!(failure.undo.is_err());
    assert_eq!(len(&log.path), end_of_a + frame.len() / 2, "the partial frame is still there");
    let path = log.path.clone();
    drop(log);
    let (_, pending) = open(dir.path()).unwrap();
    assert_eq!(ids(&pending), ["a"]);
    assert_eq!(len(&path), end_of_a);
}

#[test]
fn two_processes_cannot_share_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = open(dir.path()).unwrap();
    let second = open(dir.path()).err().expect("the directory is locked");
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
    let (_, pending) = open(dir.path()).unwrap();
    assert_eq!(ids(&pending), ["a", "c"]);
}
