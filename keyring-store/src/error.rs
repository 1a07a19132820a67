//! The one mapping from the client library's errors to keyring-core's, by
//! [`ErrorKind`], never by message. The daemon's messages name keys and
//! limits, never secrets, and they are kept: the keyhaven error is the
//! platform error inside `NoStorageAccess` and `PlatformFailure`.
//!
//! | keyhaven [`ErrorKind`] | keyring-core [`Error`] |
//! |---|---|
//! | `NotFound` (no such credential, or expired) | `NoEntry` |
//! | `Unavailable` (daemon not running or not reachable, store locked) | `NoStorageAccess` |
//! | `UntrustedDaemon` (the socket is another user's: nothing was sent) | `NoStorageAccess` |
//! | `PermissionDenied` (the per-app policy refused this program) | `NoStorageAccess` |
//! | `InvalidArgument` (empty or oversize secret, bad label) | `Invalid(what, message)` |
//! | `ProtocolMismatch`, `DataLoss`, `Conflict`, `ResourceExhausted`, other | `PlatformFailure` |

use keyhaven::ErrorKind;
use keyring_core::Error;

/// `err` as keyring-core's error; `what` names the parameter an
/// `InvalidArgument` is about (`secret`, `label`, ...).
pub(crate) fn to_keyring(err: keyhaven::Error, what: &str) -> Error {
    match err.kind() {
        ErrorKind::NotFound => Error::NoEntry,
        ErrorKind::Unavailable | ErrorKind::UntrustedDaemon | ErrorKind::PermissionDenied => {
            Error::NoStorageAccess(Box::new(err))
        }
        ErrorKind::InvalidArgument => Error::Invalid(what.to_owned(), err.to_string()),
        _ => Error::PlatformFailure(Box::new(err)),
    }
}

/// The background thread is gone (it panicked): nothing can be sent.
pub(crate) fn worker_gone() -> Error {
    Error::PlatformFailure("the keyhaven store's background thread has stopped".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn mapped(code: Code) -> Error {
        to_keyring(keyhaven::Error::from(Status::new(code, "why")), "secret")
    }

    #[test]
    fn each_kind_maps_to_its_keyring_variant_keeping_the_message() {
        assert!(matches!(mapped(Code::NotFound), Error::NoEntry));
        for code in [Code::Unavailable, Code::PermissionDenied] {
            match mapped(code) {
                Error::NoStorageAccess(e) => assert_eq!(e.to_string(), "why"),
                other => panic!("{code:?}: {other:?}"),
            }
        }
        match mapped(Code::InvalidArgument) {
            Error::Invalid(what, message) => assert_eq!((&*what, &*message), ("secret", "why")),
            other => panic!("{other:?}"),
        }
        for code in [
            Code::Unimplemented,
            Code::DataLoss,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            match mapped(code) {
                Error::PlatformFailure(e) => assert_eq!(e.to_string(), "why"),
                other => panic!("{code:?}: {other:?}"),
            }
        }
    }
}
