//! keyhavend: one daemon per user that owns the token store and serves it
//! over gRPC on a Unix socket (on Windows, a named pipe).
//!
//! # Layout
//!
//! Layers, from the top; each depends only on the ones below it
//! (`tests/tests/it/layers.rs` checks that, and that no two modules import
//! each other). ARCHITECTURE.md follows one request through them.
//!
//! - [`server`]: start-up, the serve loop, background upkeep; its
//!   [`config`](server::config) resolves settings from flags, environment
//!   and the optional TOML file.
//! - [`rpc`]: the gRPC services, one file each, with what they share:
//!   validation, the per-app policy, message limits, Watch, backups and the
//!   legacy read-through, and the one mapping of errors to statuses.
//! - [`net`]: the endpoint (Unix socket or named pipe), the peer check of
//!   every connection before a byte is read, per-connection state, the
//!   `:authority` fix for gRPC C core clients; `net::platform` is what
//!   differs per OS.
//! - [`keys`]: where the data key lives (systemd credential, OS keyring,
//!   key file) and the vault that finds it, waits for it, rotates and moves
//!   it.
//! - [`store`]: SQLite: the database and its one write path, point reads,
//!   sealing (AES-256-GCM bound to the credential key), attributes, the
//!   change feed and the audit log.
//! - Shared by all: [`error`] (start-up errors), [`identity`] (who is
//!   calling), [`fsutil`] (private files and directories), [`fault`]
//!   (crash points for tests).
#![warn(missing_docs)]

pub mod error;
pub(crate) mod fault;
pub(crate) mod fsutil;
pub mod identity;
pub mod keys;
pub mod net;
pub mod rpc;
pub mod server;
pub mod store;

pub use error::StartError;
pub use net::platform::InheritedSocket;
pub use server::config::Settings;
pub use server::{Prepared, prepare, prepare_with_listener, serve};
