//! Writes in parts an object store accepts.
//!
//! The object-store writers upload a file written in one call with a single request, and a file written in
//! several calls as a multipart (S3, GCS) or block-list (Azure) upload with **one part per call**. The Parquet
//! writer calls once per row group, and a row group of small rows can be a few MiB: S3 refuses a multipart
//! upload whose parts (but the last) are under 5 MiB (`EntityTooSmall`, at the very end of the upload). So
//! every writer k2i opens gathers its calls into parts of at least [`PART_BYTES`]; the last part may be
//! smaller, and a file under one part still goes up in a single request.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use iceberg::io::{FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage};
use serde::{Deserialize, Serialize};

/// The smallest part handed to an object store's writer: above S3's 5 MiB minimum, and large enough that a
/// 128 MiB data file takes 16 parts (S3 allows 10,000).
pub const PART_BYTES: usize = 8 << 20;

/// A [`FileWrite`] that hands `inner` parts of at least `part` bytes.
pub struct Chunked {
    inner: Box<dyn FileWrite>,
    buffer: BytesMut,
    part: usize,
}

impl Chunked {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn FileWrite>, part: usize) -> Self {
        Self { inner, buffer: BytesMut::new(), part }
    }
}

#[async_trait]
impl FileWrite for Chunked {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        // A call that is a whole part by itself goes through without a copy.
        if self.buffer.is_empty() && bs.len() >= self.part {
            return self.inner.write(bs).await.map_err(classify);
        }
        self.buffer.extend_from_slice(&bs);
        if self.buffer.len() >= self.part {
            let part = self.buffer.split().freeze();
            self.inner.write(part).await.map_err(classify)?;
        }
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        if !self.buffer.is_empty() {
            let last = self.buffer.split().freeze();
            self.inner.write(last).await.map_err(classify)?;
        }
        self.inner.close().await.map_err(classify)
    }
}

/// A store's failure as k2i reports it: permanent (not retryable, so the table stops with it instead of
/// retrying for ever) when the store refused for good — see [`super::is_transient`] —, and with any
/// signature cut out of the message. The OpenDAL error is not kept as the source: its text (the request URL)
/// is what could leak.
fn classify(e: iceberg::Error) -> iceberg::Error {
    let mut cause = std::error::Error::source(&e);
    let mut store = None;
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<opendal::Error>() {
            store = Some(found);
            break;
        }
        cause = c.source();
    }
    let Some(store) = store else { return e };
    let text = super::redact_signatures(&format!("{}: {store}", e.message()));
    if super::is_transient(store) {
        iceberg::Error::new(iceberg::ErrorKind::Unexpected, text).with_retryable(true)
    } else {
        iceberg::Error::new(iceberg::ErrorKind::PreconditionFailed, text)
    }
}

/// A storage whose writers (also those of its output files) are [`Chunked`] and whose errors are
/// [`classify`]d; everything else is `inner`'s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunking {
    inner: Arc<dyn Storage>,
}

impl Chunking {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self { inner }
    }
}

#[async_trait]
#[typetag::serde(name = "K2iChunking")]
impl Storage for Chunking {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        self.inner.exists(path).await.map_err(classify)
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        self.inner.metadata(path).await.map_err(classify)
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        self.inner.read(path).await.map_err(classify)
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        self.inner.reader(path).await.map_err(classify)
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.inner.write(path, bs).await.map_err(classify)
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Ok(Box::new(Chunked::new(self.inner.writer(path).await.map_err(classify)?, PART_BYTES)))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        self.inner.delete(path).await.map_err(classify)
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        self.inner.delete_prefix(path).await.map_err(classify)
    }

    async fn delete_stream(&self, paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        self.inner.delete_stream(paths).await.map_err(classify)
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        // Through this storage, so the file's errors are classified too.
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        // Through this storage, so the file's writer is chunked too.
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the size of every write it gets.
    struct Parts(Arc<Mutex<Vec<usize>>>);

    #[async_trait]
    impl FileWrite for Parts {
        async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
            self.0.lock().unwrap().push(bs.len());
            Ok(())
        }

        async fn close(&mut self) -> iceberg::Result<()> {
            Ok(())
        }
    }

    async fn parts_for(writes: &[usize]) -> Vec<usize> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut w = Chunked::new(Box::new(Parts(seen.clone())), 10);
        for n in writes {
            w.write(Bytes::from(vec![0u8; *n])).await.unwrap();
        }
        w.close().await.unwrap();
        let parts = seen.lock().unwrap().clone();
        assert_eq!(parts.iter().sum::<usize>(), writes.iter().sum::<usize>(), "no byte lost or repeated");
        parts
    }

    #[tokio::test]
    async fn small_writes_become_parts_of_at_least_the_part_size() {
        assert_eq!(parts_for(&[3, 3, 3, 3, 3]).await, [12, 3]);
        assert_eq!(parts_for(&[4]).await, [4], "a small file is one write");
        assert_eq!(parts_for(&[25, 2, 9]).await, [25, 11], "a whole part passes as is");
        assert_eq!(parts_for(&[]).await, Vec::<usize>::new());
    }
}
