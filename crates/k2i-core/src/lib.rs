//! k2i-core: the k2i engine as a library.
//!
//! Today it holds the configuration ([`config`]); the data path (source → decode → buffer → sink → commit,
//! with the transaction log and recovery beside it) arrives module by module as described in
//! `docs/architecture.md`.

pub mod config;
