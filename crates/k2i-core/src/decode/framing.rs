//! Confluent's wire framing of Schema Registry formats.
//!
//! ```text
//! [magic: 0x00][schema id: u32 big-endian][message indexes (Protobuf only)][payload]
//! ```
//!
//! For Protobuf, the message indexes select the message type inside the schema's file: a zig-zag varint count
//! followed by that many zig-zag varint indexes, the path from a top-level message down through nested
//! messages (`[1, 0]` is the first message nested in the file's second message). The common case `[0]` (the
//! file's first message) is written as a single `0` byte, i.e. a count of zero. Parsing borrows the record's
//! bytes and allocates nothing: the indexes are read lazily through [`MessageIndexes::iter`].

/// Why a record's bytes are not a valid frame. Each is a record error for the error policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes at all (a tombstone has no value and is not a frame either).
    #[error("the value is empty; a Schema Registry frame starts with a magic byte 0")]
    Empty,
    /// The first byte is not 0.
    #[error("the value does not start with the Schema Registry magic byte 0 (found {0:#04x})")]
    BadMagic(u8),
    /// Fewer bytes than the frame header needs.
    #[error("the frame is cut short: {what} needs {needed} more byte(s)")]
    Truncated {
        /// The part being read.
        what: &'static str,
        /// Missing bytes.
        needed: usize,
    },
    /// A varint longer than 10 bytes or past the end.
    #[error("the message-index array holds a malformed varint at byte {at}")]
    BadVarint {
        /// Offset in the record's value.
        at: usize,
    },
    /// A negative or implausible count (more levels than any schema nests).
    #[error("the message-index array has an invalid count {0}")]
    BadCount(i64),
    /// A negative index.
    #[error("the message-index array has a negative index {0}")]
    NegativeIndex(i64),
}

/// The most nesting levels a message-index path may have (protoc allows far fewer in practice).
pub const MAX_INDEX_DEPTH: i64 = 64;

/// A framed record: the schema id and what follows the 5-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The registry's schema id.
    pub schema_id: u32,
    /// The bytes after the header.
    pub body: &'a [u8],
}

/// Splits the 5-byte header off a framed value (Avro, JSON Schema, and the first step for Protobuf).
pub fn split(value: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (&magic, rest) = value.split_first().ok_or(FrameError::Empty)?;
    if magic != 0 {
        return Err(FrameError::BadMagic(magic));
    }
    let Some((id, body)) = rest.split_first_chunk::<4>() else {
        return Err(FrameError::Truncated { what: "the schema id", needed: 4 - rest.len() });
    };
    Ok(Frame { schema_id: u32::from_be_bytes(*id), body })
}

/// The message-index path of a Protobuf frame, validated, read lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageIndexes<'a> {
    /// Number of indexes (the short form `0` reads as one index, 0).
    len: usize,
    /// The encoded indexes (empty for the short form).
    encoded: &'a [u8],
}

impl<'a> MessageIndexes<'a> {
    /// How many levels the path has (at least 1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a path has at least one index.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The indexes as encoded (empty for the short form): equal bytes select the same message.
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// The indexes, top-level first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + 'a {
        let mut bytes = self.encoded;
        let short = self.encoded.is_empty();
        let mut left = self.len;
        std::iter::from_fn(move || {
            left = left.checked_sub(1)?;
            if short {
                return Some(0);
            }
            // Validated by `split_protobuf`: every varint is well formed and non-negative.
            let (value, used) = zigzag(bytes, 0).ok()?;
            bytes = &bytes[used..];
            usize::try_from(value).ok()
        })
    }
}

/// A framed Protobuf record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtobufFrame<'a> {
    /// The registry's schema id.
    pub schema_id: u32,
    /// Which message of the schema's file the payload is.
    pub indexes: MessageIndexes<'a>,
    /// The Protobuf-encoded message.
    pub payload: &'a [u8],
}

/// Splits a Confluent Protobuf frame: header, message indexes, payload.
pub fn split_protobuf(value: &[u8]) -> Result<ProtobufFrame<'_>, FrameError> {
    let Frame { schema_id, body } = split(value)?;
    let header = value.len() - body.len();
    let (count, mut used) = zigzag(body, header)?;
    if count == 0 {
        let indexes = MessageIndexes { len: 1, encoded: &[] };
        return Ok(ProtobufFrame { schema_id, indexes, payload: &body[used..] });
    }
    if !(1..=MAX_INDEX_DEPTH).contains(&count) {
        return Err(FrameError::BadCount(count));
    }
    let start = used;
    for _ in 0..count {
        let (index, n) = zigzag(&body[used..], header + used)?;
        if index < 0 {
            return Err(FrameError::NegativeIndex(index));
        }
        used += n;
    }
    let len = usize::try_from(count).map_err(|_| FrameError::BadCount(count))?;
    Ok(ProtobufFrame {
        schema_id,
        indexes: MessageIndexes { len, encoded: &body[start..used] },
        payload: &body[used..],
    })
}

/// Reads one zig-zag varint; `at` is its offset in the value (for the error). Returns the value and the bytes
/// it used.
fn zigzag(bytes: &[u8], at: usize) -> Result<(i64, usize), FrameError> {
    let mut raw: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Zig-zag: 0 → 0, 1 → -1, 2 → 1, 3 → -2, …
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Ok((value, i + 1));
        }
    }
    Err(FrameError::BadVarint { at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zz(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn frame(id: u32, indexes: Option<&[i64]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        match indexes {
            None => out.push(0),
            Some(list) => {
                out.extend(zz(list.len() as i64));
                for &i in list {
                    out.extend(zz(i));
                }
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn the_header_gives_the_schema_id_big_endian() {
        let bytes = [0, 0, 0, 1, 0x2c, 9, 9];
        assert_eq!(split(&bytes).unwrap(), Frame { schema_id: 300, body: &[9, 9] });
        assert_eq!(split(&[]).unwrap_err(), FrameError::Empty);
        assert_eq!(split(&[1, 0, 0, 0, 1]).unwrap_err(), FrameError::BadMagic(1));
        assert_eq!(split(&[0, 0, 0]).unwrap_err(), FrameError::Truncated { what: "the schema id", needed: 2 });
    }

    #[test]
    fn the_single_zero_is_the_first_message_and_longer_paths_read_in_order() {
        let short = frame(7, None, b"msg");
        let f = split_protobuf(&short).unwrap();
        assert_eq!((f.schema_id, f.indexes.iter().collect::<Vec<_>>(), f.payload), (7, vec![0], &b"msg"[..]));
        let nested = frame(7, Some(&[2, 0, 65]), b"m");
        let f = split_protobuf(&nested).unwrap();
        assert_eq!(f.indexes.iter().collect::<Vec<_>>(), [2, 0, 65], "65 needs two varint bytes");
        assert_eq!(f.indexes.len(), 3);
        assert_eq!(f.payload, b"m");
        // An explicit [0] (count 1) is the same message as the short form.
        assert_eq!(split_protobuf(&frame(7, Some(&[0]), b"")).unwrap().indexes.iter().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn malformed_index_arrays_are_record_errors_not_panics() {
        let mut negative_count = vec![0, 0, 0, 0, 1];
        negative_count.extend(zz(-1));
        assert_eq!(split_protobuf(&negative_count).unwrap_err(), FrameError::BadCount(-1));
        let mut deep = vec![0, 0, 0, 0, 1];
        deep.extend(zz(MAX_INDEX_DEPTH + 1));
        assert_eq!(split_protobuf(&deep).unwrap_err(), FrameError::BadCount(MAX_INDEX_DEPTH + 1));
        assert_eq!(split_protobuf(&frame(1, Some(&[1, -3]), b"")).unwrap_err(), FrameError::NegativeIndex(-3));
        // Count 2, then one index, then nothing.
        let mut cut = vec![0, 0, 0, 0, 1];
        cut.extend(zz(2));
        cut.extend(zz(1));
        assert_eq!(split_protobuf(&cut).unwrap_err(), FrameError::BadVarint { at: 7 });
        // A varint that never ends.
        let mut endless = vec![0, 0, 0, 0, 1];
        endless.extend([0xff; 11]);
        assert!(matches!(split_protobuf(&endless).unwrap_err(), FrameError::BadVarint { at: 5 }));
        assert_eq!(split_protobuf(&[0, 0, 0, 0, 1]).unwrap_err(), FrameError::BadVarint { at: 5 });
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap, deterministic sweep over short inputs (a fuzz target covers more).
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8).collect();
            if let Ok(f) = split_protobuf(&bytes) {
                assert_eq!(f.indexes.iter().count(), f.indexes.len());
            }
        }
    }
}
