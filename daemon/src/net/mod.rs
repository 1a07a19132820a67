//! The network layer: the endpoint clients connect to, and everything that
//! happens to a connection before gRPC sees it. The peer's credentials are
//! checked on accept, before a byte is read ([`listener`]); `:authority`
//! values that hyper refuses are fixed on the way in ([`authority`]);
//! [`platform`] is what differs per OS (Unix socket or named pipe, socket
//! activation, readiness, signals).

pub mod authority;
pub(crate) mod listener;
pub mod platform;
