//! k2i-rpc: the read-state wire protocol between a running `k2i ingest` and local readers.
//!
//! A reader connects to the engine's Unix socket (`rpc.socket_path`) and asks for a table's state at one log
//! sequence number (LSN): the committed data files of the current snapshot plus the rows that are buffered but
//! not committed yet, as Arrow IPC. Every row up to the LSN is in exactly one of the two. The contract is
//! `docs/rpc.md`; golden frames for other implementations are in `testdata/rpc/golden/`.
//!
//! - [`frame`]: the 12-byte header, kinds, codecs, and reading and writing frames.
//! - [`message`]: the JSON payload of every kind, as [`message::Request`] and [`message::Response`].
//! - [`hot`]: hot rows as one Arrow IPC stream cut into HotData frames, and back.
//! - [`client`]: an async client, and [`client::filter_batch`] to apply a scan's filter to committed rows.
//!
//! ```no_run
//! use k2i_rpc::client::{Client, ClientError};
//! use k2i_rpc::message::ScanBegin;
//!
//! async fn read(socket: &str) -> Result<(), ClientError> {
//!     let mut client = Client::connect(socket).await?;
//!     let scan = client.scan(ScanBegin { table: "ns.events".into(), ..ScanBegin::default() }).await?;
//!     for file in &scan.state.files {
//!         println!("committed: {} ({} rows)", file.path, file.rows);
//!     }
//!     for part in &scan.hot {
//!         for batch in &part.batches {
//!             println!("hot, schema {}: {} rows", part.schema_id, batch.num_rows());
//!         }
//!     }
//!     // Until this (or `rpc.scan_ttl`), k2i's maintenance keeps the files above.
//!     client.end_scan(scan.state.scan_id).await
//! }
//! ```

pub mod client;
pub mod frame;
pub mod hot;
pub mod message;

/// The protocol version every frame header carries; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;
