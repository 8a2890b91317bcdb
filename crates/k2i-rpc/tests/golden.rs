//! Golden frames: every kind, both ways, as hex here and as one-frame files in `testdata/rpc/golden/` (which
//! other implementations of the protocol test against), plus a bounded fuzz of the parsers seeded with them.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use k2i_rpc::frame::{self, Frame, HEADER_LEN, Kind};
use k2i_rpc::hot::{HotDecoder, HotEncoder};
use k2i_rpc::message::*;
use serde_json::json;

const HEALTH: &str = "
    4b324952 0001 00 01 00000002
    7b7d
";
const LIST_TABLES: &str = "
    4b324952 0001 00 02 00000002
    7b7d
";
const TABLE_SCHEMA: &str = "
    4b324952 0001 00 03 00000015
    7b227461626c65223a226e732e6576656e7473227d
";
const SCAN_BEGIN: &str = "
    4b324952 0001 00 04 000000c8
    7b227461626c65223a226e732e6576656e7473222c226d61785f6c736e223a313030322c2273696e63655f6c736e223a
    313030302c22636f6c756d6e73223a5b226964222c226e616d65225d2c2266696c746572223a7b22706172746974696f
    6e73223a5b7b22746f706963223a226576656e7473222c22706172746974696f6e223a307d5d2c226f6666736574735f
    66726f6d223a5b7b22746f706963223a226576656e7473222c22706172746974696f6e223a302c226f6666736574223a
    313030307d5d7d7d
";
const SCAN_BEGIN_MINIMAL: &str = "
    4b324952 0001 00 04 00000015
    7b227461626c65223a226e732e6576656e7473227d
";
const SCAN_END: &str = "
    4b324952 0001 00 05 0000000d
    7b227363616e5f6964223a377d
";
const HEALTH_REPLY: &str = "
    4b324952 0001 00 81 00000054
    7b22737461747573223a226f6b222c2276657273696f6e223a22302e312e30222c2270726f746f636f6c223a312c226d
    61785f6672616d655f6279746573223a36373130383836342c227461626c6573223a327d
";
const TABLES: &str = "
    4b324952 0001 00 82 0000009a
    7b227461626c6573223a5b7b226e616d65223a226e732e6576656e7473222c226c736e223a313030322c22636f6d6d69
    747465645f6c736e223a313030302c22736e617073686f745f6964223a34322c22686f745f726f7773223a327d2c7b22
    6e616d65223a226e732e6672657368222c226c736e223a302c22636f6d6d69747465645f6c736e223a302c22686f745f
    726f7773223a307d5d7d
";
const SCHEMA: &str = "
    4b324952 0001 00 83 000000c2
    7b227461626c65223a226e732e6576656e7473222c22736368656d615f6964223a302c22736368656d61223a7b227479
    7065223a22737472756374222c22736368656d612d6964223a302c226669656c6473223a5b7b226964223a312c226e61
    6d65223a226964222c227265717569726564223a747275652c2274797065223a226c6f6e67227d2c7b226964223a322c
    226e616d65223a226e616d65222c227265717569726564223a66616c73652c2274797065223a22737472696e67227d5d
    7d7d
";
const READ_STATE: &str = "
    4b324952 0001 00 84 000001ba
    7b227363616e5f6964223a372c227461626c65223a226e732e6576656e7473222c226c736e223a313030322c22636f6d
    6d69747465645f6c736e223a313030302c22736e617073686f745f6964223a34322c22736368656d615f6964223a302c
    2277617465726d61726b73223a5b7b22746f706963223a226576656e7473222c22706172746974696f6e223a302c226e
    6578745f6f6666736574223a313030327d5d2c2266696c6573223a5b7b2270617468223a2266696c653a2f2f2f772f6e
    732f6576656e74732f646174612f782e70617271756574222c22666f726d6174223a2270617271756574222c2273697a
    65223a313032342c22726f7773223a313030302c22706172746974696f6e223a7b2269645f6275636b6574223a337d2c
    22736e617073686f745f6964223a34322c226c736e223a313030302c226f66667365745f72616e676573223a5b7b2274
    6f706963223a226576656e7473222c22706172746974696f6e223a302c227374617274223a302c22656e64223a313030
    307d5d7d5d2c22686f745f726f7773223a322c22686f745f73747265616d73223a312c22657870697265735f696e5f6d
    73223a3330303030307d
";
const HOT_STREAM: &str = "
    4b324952 0001 00 85 00000018
    7b22736368656d615f6964223a302c22726f7773223a327d
";
const HOT_DATA: &str = "
    4b324952 0001 01 86 000002c8
    ffffffffb80000001000000000000a000c000a00090004000a0000001000000000010400080008000000040008000000
    040000000200000054000000140000001000140010000e000f0004000000080010000000180000000c00000000000105
    10000000000000000400040004000000040000006e616d650000000010001400100000000f0004000000080010000000
    1800000020000000000000021c00000008000c0004000b00080000004000000000000001000000000200000069640000
    fffffffff8000000100000000c001a0018001700040008000c0000002000000000010000000000000000000000000003
    04000a0018000c00080004000a0000003c00000010000000020000000000000000000000020000000200000000000000
    000000000000000002000000000000000100000000000000000000000500000000000000000000000000000000000000
    000000000000000010000000000000004000000000000000010000000000000080000000000000000c00000000000000
    c00000000000000001000000000000000000000000000000000000000000000000000000000000000000000000000000
    00000000000000000000000000000000e803000000000000e90300000000000000000000000000000000000000000000
    000000000000000000000000000000000000000000000000000000000000000001000000000000000000000000000000
    000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    000000000100000001000000000000000000000000000000000000000000000000000000000000000000000000000000
    000000000000000000000000000000006100000000000000000000000000000000000000000000000000000000000000
    0000000000000000000000000000000000000000000000000000000000000000ffffffff00000000
";
const SCAN_COMPLETE: &str = "
    4b324952 0001 00 87 00000022
    7b227363616e5f6964223a372c22726f7773223a322c226279746573223a3731327d
";
const SCAN_ENDED: &str = "
    4b324952 0001 00 88 0000000d
    7b227363616e5f6964223a377d
";
const ERROR: &str = "
    4b324952 0001 00 ff 00000035
    7b22636f6465223a22756e6b6e6f776e5f7461626c65222c226d657373616765223a226e6f207461626c65206e732e6e
    6f7065227d
";

/// The bytes of a hex constant; whitespace separates the header's fields for reading.
fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex")).collect()
}

enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    fn to_frame(&self) -> Frame {
        match self {
            Message::Request(r) => r.to_frame(),
            Message::Response(r) => r.to_frame(),
        }
        .expect("a small message")
    }
}

/// Two hot rows, `id` 1000 and 1001, `name` "a" and null: the rows of the golden scan.
fn hot_batch() -> RecordBatch {
    let schema = Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]);
    let columns: Vec<ArrayRef> =
        vec![Arc::new(Int64Array::from(vec![1000, 1001])), Arc::new(StringArray::from(vec![Some("a"), None]))];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}

/// One scan of `ns.events` told in frames: the committed file holds offsets 0..1000 (LSNs 1..=1000), the two
/// hot rows offsets 1000 and 1001 (LSNs 1001 and 1002).
fn goldens() -> Vec<(&'static str, &'static str, Message)> {
    use Message::{Request as Q, Response as R};
    let events = |partition| PartitionRef { topic: "events".into(), partition };
    vec![
        ("health", HEALTH, Q(Request::Health)),
        ("list-tables", LIST_TABLES, Q(Request::ListTables)),
        ("table-schema", TABLE_SCHEMA, Q(Request::TableSchema(TableSchemaRequest { table: "ns.events".into() }))),
        (
            "scan-begin",
            SCAN_BEGIN,
            Q(Request::ScanBegin(ScanBegin {
                table: "ns.events".into(),
                max_lsn: Some(1002),
                since_lsn: Some(1000),
                columns: Some(vec!["id".into(), "name".into()]),
                filter: Some(Filter {
                    partitions: Some(vec![events(0)]),
                    offsets_from: Some(vec![OffsetFrom { topic: "events".into(), partition: 0, offset: 1000 }]),
                }),
            })),
        ),
        (
            "scan-begin-minimal",
            SCAN_BEGIN_MINIMAL,
            Q(Request::ScanBegin(ScanBegin { table: "ns.events".into(), ..ScanBegin::default() })),
        ),
        ("scan-end", SCAN_END, Q(Request::ScanEnd(ScanEnd { scan_id: 7 }))),
        (
            "health-reply",
            HEALTH_REPLY,
            R(Response::HealthReply(HealthReply {
                status: "ok".into(),
                version: "0.1.0".into(),
                protocol: 1,
                max_frame_bytes: 64 << 20,
                tables: 2,
            })),
        ),
        (
            "tables",
            TABLES,
            R(Response::Tables(Tables {
                tables: vec![
                    TableInfo {
                        name: "ns.events".into(),
                        lsn: 1002,
                        committed_lsn: 1000,
                        snapshot_id: Some(42),
                        hot_rows: 2,
                    },
                    TableInfo { name: "ns.fresh".into(), lsn: 0, committed_lsn: 0, snapshot_id: None, hot_rows: 0 },
                ],
            })),
        ),
        (
            "schema",
            SCHEMA,
            R(Response::Schema(SchemaReply {
                table: "ns.events".into(),
                schema_id: 0,
                schema: json!({"type": "struct", "schema-id": 0, "fields": [
                    {"id": 1, "name": "id", "required": true, "type": "long"},
                    {"id": 2, "name": "name", "required": false, "type": "string"},
                ]}),
            })),
        ),
        (
            "read-state",
            READ_STATE,
            R(Response::ReadState(ReadState {
                scan_id: 7,
                table: "ns.events".into(),
                lsn: 1002,
                committed_lsn: 1000,
                snapshot_id: Some(42),
                schema_id: 0,
                watermarks: vec![Watermark { topic: "events".into(), partition: 0, next_offset: 1002 }],
                files: vec![DataFileRef {
                    path: "file:///w/ns/events/data/x.parquet".into(),
                    format: "parquet".into(),
                    size: 1024,
                    rows: 1000,
                    partition: Some(json!({"id_bucket": 3})),
                    snapshot_id: 42,
                    lsn: Some(1000),
                    offset_ranges: vec![OffsetRangeRef { topic: "events".into(), partition: 0, start: 0, end: 1000 }],
                }],
                filter: None,
                delete_files: 0,
                hot_rows: 2,
                hot_streams: 1,
                expires_in_ms: 300_000,
            })),
        ),
        ("hot-stream", HOT_STREAM, R(Response::HotStream(HotStream { schema_id: 0, rows: 2 }))),
        ("hot-data", HOT_DATA, R(Response::HotData(Bytes::from(unhex(HOT_DATA).split_off(HEADER_LEN))))),
        ("scan-complete", SCAN_COMPLETE, R(Response::ScanComplete(ScanComplete { scan_id: 7, rows: 2, bytes: 712 }))),
        ("scan-ended", SCAN_ENDED, R(Response::ScanEnded(ScanEnded { scan_id: 7 }))),
        ("error", ERROR, R(Response::Error(ErrorReply::new(ErrorCode::UnknownTable, "no table ns.nope")))),
    ]
}

const MAX: u32 = 1 << 20;

#[test]
fn every_golden_frame_encodes_and_decodes_exactly() {
    for (name, hex, message) in goldens() {
        let bytes = unhex(hex);
        assert_eq!(message.to_frame().encode(), bytes, "{name} encodes");
        let (frame, used) = frame::decode(&bytes, MAX).ok().flatten().expect("a whole frame");
        assert_eq!(used, bytes.len(), "{name} is one frame");
        match &message {
            Message::Request(r) => assert_eq!(Request::from_frame(&frame).as_ref(), Ok(r), "{name} decodes"),
            Message::Response(r) => assert_eq!(Response::from_frame(&frame).as_ref(), Ok(r), "{name} decodes"),
        }
    }
}

#[test]
fn the_golden_files_hold_the_golden_frames() {
    // The checkout's path at run time (cargo sets it): a test binary reused from another checkout of the
    // same sources must not read that checkout's files.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let dir = format!("{root}/../../testdata/rpc/golden");
    for (name, hex, _) in goldens() {
        let file = std::fs::read(format!("{dir}/{name}.bin")).expect("a golden file per vector");
        assert_eq!(file, unhex(hex), "{name}.bin");
    }
}

#[test]
fn every_kind_has_a_golden_frame() {
    let kinds: Vec<Kind> = goldens().iter().map(|(_, _, m)| m.to_frame().kind()).collect();
    assert!(Kind::ALL.iter().all(|k| kinds.contains(k)), "{kinds:?}");
}

#[test]
fn the_golden_hot_data_is_the_encoders_stream_of_the_golden_rows() {
    let batch = hot_batch();
    let mut encoder = HotEncoder::new(&batch.schema(), MAX).expect("a valid limit");
    let mut frames = encoder.push(&batch).expect("the batch matches the schema");
    frames.extend(encoder.finish().expect("an open stream finishes"));
    let stream: Vec<u8> = frames.iter().flat_map(|f| f.payload().to_vec()).collect();
    assert_eq!(stream, unhex(HOT_DATA)[HEADER_LEN..]);

    let mut decoder = HotDecoder::new();
    decoder.push(Bytes::from(stream)).expect("valid stream bytes");
    assert_eq!(decoder.finish().expect("a complete stream"), (batch.schema(), vec![batch]));
}

/// xorshift64: a fixed seed, so every run checks the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// A golden frame with a few bytes set, inserted or removed anywhere, or truncated.
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = rng.byte(),
            1 => bytes.insert(at, rng.byte()),
            2 if at < bytes.len() => drop(bytes.remove(at)),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// A golden payload with a few JSON-ish bytes set, re-framed with a correct length so the message parsers
/// see it.
fn mutate_payload(rng: &mut Rng, golden: &[u8]) -> Vec<u8> {
    const JSONISH: &[u8] = b"{}[]\":,0123456789-. etrufalsn\\";
    let mut bytes = golden.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = HEADER_LEN + rng.below(bytes.len() - HEADER_LEN);
        bytes[at] = JSONISH[rng.below(JSONISH.len())];
    }
    let length = (bytes.len() - HEADER_LEN) as u32;
    bytes[8..HEADER_LEN].copy_from_slice(&length.to_be_bytes());
    bytes
}

/// Random bytes, half of them behind a valid magic and version so the rest of the header gets exercised.
fn random(rng: &mut Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..rng.below(40)).map(|_| rng.byte()).collect();
    if rng.below(2) == 0 && bytes.len() >= HEADER_LEN {
        bytes[..6].copy_from_slice(b"K2IR\x00\x01");
        let length = (bytes.len() - HEADER_LEN) as u32;
        bytes[8..HEADER_LEN].copy_from_slice(&length.to_be_bytes());
    }
    bytes
}

/// The parsers never panic; an accepted frame re-encodes to the bytes it came from, and an accepted message
/// re-encodes to a frame that decodes to the same message (the bytes differ only where the input was not
/// canonical JSON: whitespace, unknown fields, other number spellings).
fn check(input: &[u8]) -> Result<Outcome, String> {
    let Ok(Some((frame, used))) = frame::decode(input, MAX) else { return Ok(Outcome::NoFrame) };
    if frame.encode() != input[..used] {
        return Err("the frame re-encodes differently".into());
    }
    if frame.kind().is_request() {
        assert!(Response::from_frame(&frame).is_err());
        let Ok(request) = Request::from_frame(&frame) else { return Ok(Outcome::Frame) };
        let again = request.to_frame().map_err(|e| e.to_string())?;
        if Request::from_frame(&again).as_ref() != Ok(&request) {
            return Err(format!("{request:?} does not survive re-encoding"));
        }
    } else {
        assert!(Request::from_frame(&frame).is_err());
        let Ok(response) = Response::from_frame(&frame) else { return Ok(Outcome::Frame) };
        let again = response.to_frame().map_err(|e| e.to_string())?;
        if Response::from_frame(&again).as_ref() != Ok(&response) {
            return Err(format!("{response:?} does not survive re-encoding"));
        }
    }
    Ok(Outcome::Message)
}

/// How far an input got.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Outcome {
    NoFrame,
    Frame,
    Message,
}

#[test]
fn fuzzed_frames_never_panic_and_accepted_ones_round_trip() {
    let goldens: Vec<Vec<u8>> = goldens().iter().map(|(_, hex, _)| unhex(hex)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = std::collections::HashMap::new();
    for i in 0..50_000 {
        let golden = &goldens[rng.below(goldens.len())];
        let input = match i % 3 {
            0 => random(&mut rng),
            1 => mutate(&mut rng, golden.clone()),
            _ => mutate_payload(&mut rng, golden),
        };
        match check(&input) {
            Ok(outcome) => *outcomes.entry(outcome).or_insert(0) += 1,
            Err(problem) => panic!("input {i} ({input:02x?}): {problem}"),
        }
    }
    // Guards the generator: many inputs must get past the header, and some past the message parsers.
    let count = |o| outcomes.get(&o).copied().unwrap_or(0);
    assert!(count(Outcome::Frame) > 10_000 && count(Outcome::Message) > 2_000, "{outcomes:?}");
}
