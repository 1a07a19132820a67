//! The RPC layer: one file per gRPC service ([`credentials`], [`daemon`],
//! [`audit`]), what they share ([`shared`]: the caller's context, the
//! policy check, auditing every outcome), the wire conversions
//! ([`convert`]), the one mapping from errors to statuses ([`status`]),
//! and the parts behind particular calls: [`watch`], [`backup`] (Backup,
//! Export, Restore and automatic snapshots; [`snapshots`] holds their
//! state), [`legacy`] (the read-through
//! on a Retrieve miss), [`policy`] and [`limits`].

pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod convert;
pub(crate) mod credentials;
pub(crate) mod daemon;
pub(crate) mod legacy;
pub mod limits;
pub mod policy;
pub(crate) mod shared;
pub(crate) mod snapshots;
pub(crate) mod status;
pub(crate) mod watch;
