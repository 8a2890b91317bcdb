//! k2i-core: the k2i engine as a library.
//!
//! The data path, one module per stage: [`source`] (Kafka) → [`decode`] (payload → Arrow) → [`buffer`]
//! (hot rows with their offset ranges) → [`sink`] (Parquet data files) → [`commit`] (Iceberg snapshot with
//! the offsets in its summary). [`catalog`] opens the catalog and table, [`schema`] owns the table schema
//! and its evolution, [`txlog`] records every flush's intent and outcome, [`recovery`] reconciles it with the
//! table at start, [`engine`] wires the stages together, [`config`] is the configuration, [`fault`] holds
//! the test-only fault points, [`tls`] sets up TLS for the HTTP clients.

pub mod buffer;
pub mod catalog;
pub mod commit;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod engine;
mod error;
pub mod fault;
pub mod flush;
pub mod ops;
pub mod progress;
pub mod read;
pub mod recovery;
pub mod schema;
pub mod sink;
pub mod source;
pub mod storage;
pub mod table;
pub mod tls;
pub mod txlog;

pub use error::{Error, ErrorKind, Result};
