//! Framing: every message, both ways, is one frame, a 12-byte header and a payload.
//!
//! ```text
//! offset size field
//!      0    4 magic    "K2IR"
//!      4    2 version  big-endian u16, PROTOCOL_VERSION
//!      6    1 codec    0 = JSON, 1 = Arrow IPC stream bytes
//!      7    1 kind     the message kind
//!      8    4 length   big-endian u32, at most the receiver's max_frame_bytes
//!     12  len payload
//! ```
//!
//! A header is checked as a whole before any payload byte is read, in this order: magic, version, kind,
//! codec (HotData must be Arrow, every other kind JSON), length. A receiver never allocates more than
//! `max_frame_bytes` for one payload, and allocates it only as the bytes arrive.

use std::fmt;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::PROTOCOL_VERSION;
use crate::message::ErrorCode;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"K2IR";

/// The size of a frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    /// One compact UTF-8 JSON object.
    Json = 0,
    /// The next bytes of an Arrow IPC stream.
    Arrow = 1,
}

impl Codec {
    /// The codec with this wire byte, if any.
    pub fn from_byte(byte: u8) -> Option<Codec> {
        match byte {
            0 => Some(Codec::Json),
            1 => Some(Codec::Arrow),
            _ => None,
        }
    }
}

/// The message kind of a frame: requests below `0x80`, responses above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Request: is the server up, and what does it speak.
    Health = 0x01,
    /// Request: the tables this process serves.
    ListTables = 0x02,
    /// Request: the current Iceberg schema of one table.
    TableSchema = 0x03,
    /// Request: open a scan, answered by a whole scan (ReadState … ScanComplete).
    ScanBegin = 0x04,
    /// Request: close a scan.
    ScanEnd = 0x05,
    /// Response to Health.
    HealthReply = 0x81,
    /// Response to ListTables.
    Tables = 0x82,
    /// Response to TableSchema.
    Schema = 0x83,
    /// The first frame of a scan: the committed files and the cut.
    ReadState = 0x84,
    /// Announces one Arrow IPC stream of hot rows; HotData frames follow.
    HotStream = 0x85,
    /// The next bytes of the current Arrow IPC stream (the only Arrow-coded kind).
    HotData = 0x86,
    /// The last frame of a scan.
    ScanComplete = 0x87,
    /// Response to ScanEnd.
    ScanEnded = 0x88,
    /// A failed request.
    Error = 0xff,
}

impl Kind {
    /// Every kind of this protocol version, requests first.
    pub const ALL: [Kind; 14] = [
        Kind::Health,
        Kind::ListTables,
        Kind::TableSchema,
        Kind::ScanBegin,
        Kind::ScanEnd,
        Kind::HealthReply,
        Kind::Tables,
        Kind::Schema,
        Kind::ReadState,
        Kind::HotStream,
        Kind::HotData,
        Kind::ScanComplete,
        Kind::ScanEnded,
        Kind::Error,
    ];

    /// The kind with this wire byte, if this version defines one.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == byte)
    }

    /// The only codec a payload of this kind may have.
    pub fn codec(self) -> Codec {
        if self == Kind::HotData { Codec::Arrow } else { Codec::Json }
    }

    /// Whether clients send this kind (servers send the others).
    pub fn is_request(self) -> bool {
        (self as u8) < 0x80
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why bytes are not a frame. [`FrameError::code`] is the spec's error code for each.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame does not start with [`MAGIC`].
    #[error("read a frame starting with {0:02x?} instead of K2IR")]
    BadMagic([u8; 4]),
    /// A protocol version other than [`PROTOCOL_VERSION`].
    #[error("read a frame of protocol version {0}, this peer speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion(u16),
    /// A codec not allowed for the kind.
    #[error("read a {kind} frame with codec {codec}, which that kind does not allow")]
    UnsupportedCodec {
        /// The frame's kind.
        kind: Kind,
        /// The codec byte as received.
        codec: u8,
    },
    /// A kind byte this version does not define.
    #[error("read a frame of unknown kind {0:#04x}")]
    UnknownKind(u8),
    /// A payload longer than the receiver accepts (or, when sending, than a `u32` can count).
    #[error("refuse a frame of {length} payload bytes, more than the limit of {max}")]
    TooLarge {
        /// The payload length.
        length: u64,
        /// The limit it exceeds.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("read {got} of the {expected} bytes of a frame before the stream ended")]
    Truncated {
        /// The bytes the frame needs, as far as known (the header alone until it is read).
        expected: usize,
        /// The bytes received.
        got: usize,
    },
    /// Reading failed.
    #[error("read a frame: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The error code of the spec: what a server puts in its Error frame before closing the connection,
    /// and what a client reports (`truncated` and `io` are the client's own).
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::BadMagic(_) => ErrorCode::BadMagic.as_str(),
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion.as_str(),
            FrameError::UnsupportedCodec { .. } => ErrorCode::UnsupportedCodec.as_str(),
            FrameError::UnknownKind(_) => ErrorCode::UnknownKind.as_str(),
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge.as_str(),
            FrameError::Truncated { .. } => "truncated",
            FrameError::Io(_) => "io",
        }
    }
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol version; only [`PROTOCOL_VERSION`] parses.
    pub version: u16,
    /// The payload's codec, always `kind.codec()` once parsed.
    pub codec: Codec,
    /// The message kind.
    pub kind: Kind,
    /// The payload length in bytes.
    pub length: u32,
}

impl Header {
    /// Checks a received header: magic, version, kind, the kind's codec, and `length <= max_frame_bytes`.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_frame_bytes: u32) -> Result<Header, FrameError> {
        let [m0, m1, m2, m3, v0, v1, codec, kind, l0, l1, l2, l3] = *bytes;
        let magic = [m0, m1, m2, m3];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([v0, v1]);
        if version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let kind = Kind::from_byte(kind).ok_or(FrameError::UnknownKind(kind))?;
        let codec = Codec::from_byte(codec)
            .filter(|c| *c == kind.codec())
            .ok_or(FrameError::UnsupportedCodec { kind, codec })?;
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        if length > max_frame_bytes {
            return Err(FrameError::TooLarge { length: length.into(), max: max_frame_bytes });
        }
        Ok(Header { version, codec, kind, length })
    }

    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4..6].copy_from_slice(&self.version.to_be_bytes());
        bytes[6] = self.codec as u8;
        bytes[7] = self.kind as u8;
        bytes[8..].copy_from_slice(&self.length.to_be_bytes());
        bytes
    }
}

/// One message on the wire: a kind and its payload, whose codec the kind decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    kind: Kind,
    /// Invariant: at most `u32::MAX` bytes, so the header can count it.
    payload: Bytes,
}

impl Frame {
    /// A frame of `kind`; fails with [`FrameError::TooLarge`] if the payload is over `u32::MAX` bytes.
    pub fn new(kind: Kind, payload: impl Into<Bytes>) -> Result<Frame, FrameError> {
        let payload = payload.into();
        match u32::try_from(payload.len()) {
            Ok(_) => Ok(Frame { kind, payload }),
            Err(_) => Err(FrameError::TooLarge { length: payload.len() as u64, max: u32::MAX }),
        }
    }

    /// A HotData frame of a chunk the caller has bounded by a `u32` frame limit.
    pub(crate) fn hot_data(chunk: Bytes) -> Frame {
        debug_assert!(u32::try_from(chunk.len()).is_ok());
        Frame { kind: Kind::HotData, payload: chunk }
    }

    /// The message kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The payload's codec.
    pub fn codec(&self) -> Codec {
        self.kind.codec()
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The header this frame is sent with.
    pub fn header(&self) -> Header {
        // Lossless: `new` and `hot_data` bound the payload by u32::MAX.
        let length = self.payload.len() as u32;
        Header { version: PROTOCOL_VERSION, codec: self.codec(), kind: self.kind, length }
    }

    /// The frame's wire bytes, header then payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.payload.len());
        bytes.extend_from_slice(&self.header().encode());
        bytes.extend_from_slice(&self.payload);
        bytes
    }
}

/// Decodes the frame at the start of `buf`: `Ok(None)` until `buf` holds all of it, then the frame and the
/// bytes it took. A bad header fails as soon as its 12 bytes are there.
pub fn decode(buf: &[u8], max_frame_bytes: u32) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else { return Ok(None) };
    let header = Header::parse(head, max_frame_bytes)?;
    let end = HEADER_LEN + header.length as usize;
    let Some(payload) = buf.get(HEADER_LEN..end) else { return Ok(None) };
    Ok(Some((Frame { kind: header.kind, payload: Bytes::copy_from_slice(payload) }, end)))
}

/// Reads one frame: `Ok(None)` on a clean end of stream before its first byte, [`FrameError::Truncated`] if the
/// stream ends inside it.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max_frame_bytes: u32) -> Result<Option<Frame>, FrameError> {
    let mut head = [0; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut head[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated { expected: HEADER_LEN, got }),
            n => got += n,
        }
    }
    let header = Header::parse(&head, max_frame_bytes)?;
    let length = header.length as usize;
    // The buffer grows as bytes arrive: a peer announcing a large frame and sending nothing costs little.
    let mut payload = Vec::with_capacity(length.min(64 * 1024));
    r.take(header.length.into()).read_to_end(&mut payload).await?;
    if payload.len() < length {
        return Err(FrameError::Truncated { expected: HEADER_LEN + length, got: HEADER_LEN + payload.len() });
    }
    Ok(Some(Frame { kind: header.kind, payload: payload.into() }))
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    w.write_all(&frame.header().encode()).await?;
    w.write_all(&frame.payload).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1024;

    fn frame_bytes(header: [u8; HEADER_LEN], payload: &[u8]) -> Vec<u8> {
        [&header[..], payload].concat()
    }

    fn health() -> Vec<u8> {
        frame_bytes(*b"K2IR\x00\x01\x00\x01\x00\x00\x00\x02", b"{}")
    }

    /// Parses a header and returns its error, or panics (the test fails) if it parses.
    fn header_error(bytes: &[u8]) -> FrameError {
        let head = bytes.first_chunk::<HEADER_LEN>().expect("a test header has 12 bytes");
        Header::parse(head, MAX).expect_err("the header is malformed")
    }

    #[test]
    fn a_header_round_trips_for_every_kind() {
        for kind in Kind::ALL {
            let header = Header { version: PROTOCOL_VERSION, codec: kind.codec(), kind, length: 7 };
            assert_eq!(Header::parse(&header.encode(), MAX).ok(), Some(header));
            assert_eq!(kind.is_request(), (kind as u8) < 0x80);
        }
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let bytes = health();
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(matches!(header_error(&wrong), FrameError::BadMagic(m) if m == *b"X2IR"));
        let mut wrong = bytes.clone();
        wrong[5] = 2;
        assert!(matches!(header_error(&wrong), FrameError::UnsupportedVersion(2)));
        let mut wrong = bytes.clone();
        wrong[7] = 0x06;
        assert!(matches!(header_error(&wrong), FrameError::UnknownKind(0x06)));
        let mut wrong = bytes.clone();
        wrong[6] = 1;
        let err = header_error(&wrong);
        assert!(matches!(err, FrameError::UnsupportedCodec { kind: Kind::Health, codec: 1 }));
        assert_eq!(err.code(), "unsupported_codec");
        let hot_data_as_json = *b"K2IR\x00\x01\x00\x86\x00\x00\x00\x00";
        assert!(matches!(header_error(&hot_data_as_json), FrameError::UnsupportedCodec { codec: 0, .. }));
        let mut wrong = bytes.clone();
        wrong[6] = 9;
        assert!(matches!(header_error(&wrong), FrameError::UnsupportedCodec { codec: 9, .. }));
        let mut wrong = bytes;
        wrong[8..12].copy_from_slice(&(MAX + 1).to_be_bytes());
        let err = header_error(&wrong);
        assert!(matches!(err, FrameError::TooLarge { length: 1025, max: MAX }));
        assert_eq!(err.code(), "frame_too_large");
        assert_eq!(decode(&wrong, MAX).err().map(|e| e.code()), Some("frame_too_large"));
    }

    #[test]
    fn a_frame_at_the_limit_is_accepted() {
        let frame = Frame::new(Kind::HotData, vec![7; MAX as usize]).expect("fits a u32");
        let bytes = frame.encode();
        assert_eq!(decode(&bytes, MAX).ok().flatten(), Some((frame, bytes.len())));
        assert!(matches!(decode(&bytes, MAX - 1), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn decode_waits_for_the_whole_frame_and_stops_at_its_end() {
        let bytes = [health(), health()].concat();
        for len in 0..HEADER_LEN + 2 {
            assert!(matches!(decode(&bytes[..len], MAX), Ok(None)), "{len} bytes");
        }
        let (frame, used) = decode(&bytes, MAX).ok().flatten().expect("a whole frame");
        assert_eq!((frame.kind(), frame.payload().as_ref(), used), (Kind::Health, &b"{}"[..], HEADER_LEN + 2));
    }

    #[tokio::test]
    async fn read_frame_reports_a_truncation_at_every_length() {
        let bytes = frame_bytes(*b"K2IR\x00\x01\x00\x03\x00\x00\x00\x15", br#"{"table":"ns.events"}"#);
        assert!(matches!(read_frame(&mut &bytes[..0], MAX).await, Ok(None)));
        for len in 1..bytes.len() {
            let expected = if len < HEADER_LEN { HEADER_LEN } else { bytes.len() };
            match read_frame(&mut &bytes[..len], MAX).await {
                Err(FrameError::Truncated { expected: e, got }) => assert_eq!((e, got), (expected, len)),
                other => panic!("{len} bytes read as {other:?}"),
            }
        }
        let mut whole = &bytes[..];
        let frame = read_frame(&mut whole, MAX).await.ok().flatten().expect("a whole frame");
        assert_eq!(frame.encode(), bytes);
        assert!(matches!(read_frame(&mut whole, MAX).await, Ok(None)));
        assert!(matches!(read_frame(&mut &b"HTTP/1.1 200 OK\r\n"[..], MAX).await, Err(FrameError::BadMagic(_))));
    }

    #[tokio::test]
    async fn write_frame_writes_the_encoding() {
        let frame = Frame::new(Kind::ScanEnded, &br#"{"scan_id":7}"#[..]).expect("fits a u32");
        let mut out = Vec::new();
        write_frame(&mut out, &frame).await.expect("writing to a Vec cannot fail");
        assert_eq!(out, frame.encode());
    }
}
