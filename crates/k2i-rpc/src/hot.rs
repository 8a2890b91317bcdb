//! Hot rows on the wire: one Arrow IPC stream (schema, record batches, end-of-stream marker) cut into HotData
//! frames.
//!
//! The frame boundaries mean nothing to Arrow: the payloads of one stream's HotData frames, concatenated, are
//! the stream, which any Arrow library reads. The encoder emits frames as soon as the IPC writer produces
//! bytes, so it holds about one encoded batch, never the whole stream.

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, SchemaRef};
use bytes::Bytes;

use crate::frame::Frame;

/// Encodes one stream of hot rows into HotData frames of at most `max_frame_bytes` payload bytes each.
pub struct HotEncoder {
    writer: StreamWriter<Vec<u8>>,
    max_frame_bytes: usize,
}

impl HotEncoder {
    /// Starts a stream of rows of `schema`; its schema message goes out with the first frames.
    pub fn new(schema: &SchemaRef, max_frame_bytes: u32) -> Result<HotEncoder, ArrowError> {
        if max_frame_bytes == 0 {
            return Err(ArrowError::InvalidArgumentError("max_frame_bytes must be at least 1".to_owned()));
        }
        let writer = StreamWriter::try_new(Vec::new(), schema)?;
        Ok(HotEncoder { writer, max_frame_bytes: max_frame_bytes as usize })
    }

    /// Encodes one batch; returns the frames of every byte produced so far.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Vec<Frame>, ArrowError> {
        self.writer.write(batch)?;
        Ok(self.drain())
    }

    /// Ends the stream; returns its last frames.
    pub fn finish(mut self) -> Result<Vec<Frame>, ArrowError> {
        self.writer.finish()?;
        Ok(self.drain())
    }

    fn drain(&mut self) -> Vec<Frame> {
        let mut bytes = Bytes::from(std::mem::take(self.writer.get_mut()));
        let mut frames = Vec::with_capacity(bytes.len().div_ceil(self.max_frame_bytes));
        while !bytes.is_empty() {
            let chunk = bytes.split_to(bytes.len().min(self.max_frame_bytes));
            frames.push(Frame::hot_data(chunk));
        }
        frames
    }
}

/// Decodes one stream of hot rows from the payloads of its HotData frames, batch by batch as they complete.
#[derive(Default)]
pub struct HotDecoder {
    decoder: StreamDecoder,
    batches: Vec<RecordBatch>,
}

impl HotDecoder {
    /// A decoder waiting for the stream's first bytes.
    pub fn new() -> HotDecoder {
        HotDecoder::default()
    }

    /// Feeds the payload of the next HotData frame.
    pub fn push(&mut self, payload: Bytes) -> Result<(), ArrowError> {
        let mut buffer = Buffer::from(payload);
        while !buffer.is_empty() {
            if let Some(batch) = self.decoder.decode(&mut buffer)? {
                self.batches.push(batch);
            }
        }
        Ok(())
    }

    /// Ends the stream: its schema and batches, or an error if the stream stopped inside a message or never
    /// sent its schema.
    pub fn finish(mut self) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
        self.decoder.finish()?;
        let schema =
            self.decoder.schema().ok_or_else(|| ArrowError::IpcError("the stream has no schema".to_owned()))?;
        Ok((schema, self.batches))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BooleanArray, Int64Array, StringArray};
    use arrow_ipc::reader::StreamReader;
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    /// `rows` rows with a non-null Int64, a nullable Utf8 and a Boolean column; values depend on `seed`.
    pub(crate) fn batch(seed: i64, rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, false),
        ]));
        let ids = (0..rows as i64).map(|i| seed + i);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter(ids.clone().map(|i| (i % 3 != 0).then(|| format!("row-{i}"))))),
            Arc::new(BooleanArray::from_iter(ids.map(|i| Some(i % 2 == 0)))),
        ];
        RecordBatch::try_new(schema, columns).expect("columns match the schema")
    }

    #[test]
    fn small_frames_carry_a_stream_any_arrow_reader_reads() {
        let batches = [batch(0, 5), batch(100, 0), batch(200, 17)];
        let mut encoder = HotEncoder::new(&batches[0].schema(), 64).expect("a valid limit");
        let mut frames = Vec::new();
        for b in &batches {
            let produced = encoder.push(b).expect("the batch matches the schema");
            assert!(!produced.is_empty(), "a batch's bytes go out at once");
            frames.extend(produced);
        }
        frames.extend(encoder.finish().expect("an open stream finishes"));
        assert!(frames.iter().all(|f| f.payload().len() <= 64 && !f.payload().is_empty()));

        let stream: Vec<u8> = frames.iter().flat_map(|f| f.payload().to_vec()).collect();
        let read: Vec<RecordBatch> =
            StreamReader::try_new(&stream[..], None).expect("a stream").collect::<Result<_, _>>().expect("batches");
        assert_eq!(read, batches);

        let mut decoder = HotDecoder::new();
        for f in &frames {
            decoder.push(f.payload().clone()).expect("valid stream bytes");
        }
        let (schema, decoded) = decoder.finish().expect("a complete stream");
        assert_eq!((schema, decoded), (batches[0].schema(), batches.to_vec()));
    }

    #[test]
    fn a_stream_cut_inside_a_message_or_without_schema_fails() {
        let b = batch(0, 3);
        let mut encoder = HotEncoder::new(&b.schema(), 1 << 20).expect("a valid limit");
        let mut stream = encoder.push(&b).expect("the batch matches the schema");
        stream.extend(encoder.finish().expect("an open stream finishes"));
        let bytes: Vec<u8> = stream.iter().flat_map(|f| f.payload().to_vec()).collect();
        let mut decoder = HotDecoder::new();
        decoder.push(Bytes::copy_from_slice(&bytes[..bytes.len() / 2])).expect("a valid prefix");
        assert!(decoder.finish().is_err());
        assert!(HotDecoder::new().finish().is_err());
        assert!(HotEncoder::new(&b.schema(), 0).is_err());
    }
}
