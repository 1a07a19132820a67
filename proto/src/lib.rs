//! The keyhaven wire contract and the types both ends share.
//!
//! # Layout
//!
//! - [`pb`]: code generated from `keyhaven/v1/keyhaven.proto` (messages, the
//!   `Credentials` and `Daemon` clients and servers), and
//!   `RetrieveRequest` and `RetrieveResponse`, written by hand so that the
//!   daemon reads a key where it lies in the request and sends metadata it
//!   encoded once (`retrieve_request.rs`, `retrieve_response.rs`).
//! - [`key`]: the four-field credential key, its limits and its text form.
//! - [`attributes`]: a credential's non-secret attributes and their rules.
//! - [`legacy`]: the legacy apps' keyring and database names, both ways.
//! - [`secret`]: [`Secret`], bytes that zeroize on drop and print redacted.
//! - [`paths`]: where the socket, database, config and key file live, with one
//!   documented precedence (flag > env > XDG > fallback).
//! - [`backup`]: the snapshot and export file formats.
//! - [`exit`]: the CLI's exit codes.
//! - `pipe` (Windows): who is on the other end of the named pipe (the
//!   client's token user SID for the daemon, the pipe's owner SID for the
//!   client).
//! - [`PROTOCOL`]: the wire protocol number exchanged by `Status`.
#![warn(missing_docs)]

pub mod attributes;
#[cfg(feature = "backup-files")]
pub mod backup;
pub mod exit;
pub mod key;
pub mod legacy;
pub mod paths;
#[cfg(windows)]
pub mod pipe;
mod retrieve_request;
mod retrieve_response;
pub mod secret;
pub mod time;
mod wire;

pub use attributes::{AttributeError, Attributes};
pub use key::{CanonicalKey, KeyError, KeyRef, Limits};
pub use secret::Secret;

/// The wire protocol number this crate speaks. A literal, not derived from
/// the crate version: it changes only when the contract changes in a way an
/// older peer cannot handle.
pub const PROTOCOL: u32 = 1;

/// The encoded `FileDescriptorSet` of `keyhaven.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keyhaven_descriptor.bin"));

/// Generated protobuf and gRPC code for package `keyhaven.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("keyhaven.v1");

    impl std::fmt::Debug for StoreRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("StoreRequest")
                .field("key", &self.key)
                .field("secret", &crate::secret::REDACTED)
                .field("label", &self.label)
                .field("expires_at", &self.expires_at)
                .field("expected_revision", &self.expected_revision)
                .field("attributes", &self.attributes)
                .field("clear_attributes", &self.clear_attributes)
                .finish()
        }
    }

    pub use crate::retrieve_request::RetrieveRequest;
    pub use crate::retrieve_response::RetrieveResponse;
}

#[cfg(test)]
mod tests {
    use super::pb;

    #[test]
    fn debug_of_messages_with_secrets_is_redacted() {
        let req = pb::StoreRequest {
            secret: b"canary-4242".to_vec(),
            ..Default::default()
        };
        let resp = pb::RetrieveResponse {
            secret: b"canary-4242".to_vec(),
            ..Default::default()
        };
        for text in [format!("{req:?}"), format!("{resp:?}"), format!("{req:#?}")] {
            assert!(!text.contains("canary"), "{text}");
            assert!(text.contains("REDACTED"), "{text}");
        }
    }
}
