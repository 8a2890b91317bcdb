//! k2i-rpc: the read-state wire protocol between a running `k2i ingest` and local readers.
//!
//! A reader connects to the engine's Unix socket (`rpc.socket_path`) and asks for the table's state at one
//! log sequence number (LSN): the committed data files of the current snapshot plus the rows that are
//! buffered but not yet committed, as Arrow IPC. Together they are a consistent, millisecond-fresh view.
//!
//! The protocol is not built yet: this crate holds only its version number so the engine, the client
//! library and the CLI agree on it from the first release. Framing and messages arrive with the read-state
//! issue and are specified in `docs/rpc.md` then.

/// The protocol version a client sends in its first frame; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;
