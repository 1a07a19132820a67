//! The one place where errors become gRPC statuses.

use keyhaven_proto::KeyError;
use tonic::{Code, Status};

use crate::keys::vault::VaultError;
use crate::store::StoreError;

/// A request that cannot be served, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A key field or label breaks its rules.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Some other field is invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// A limit was exceeded; the message names it.
    #[error("{0}")]
    Limit(String),
    /// The per-app policy refused the caller; the message names the rule.
    #[error("{0}")]
    Denied(String),
    /// The store cannot serve now (its key is missing); the message says
    /// what to do.
    #[error("{0}")]
    Unavailable(String),
    /// The request cannot be done in the current state.
    #[error("{0}")]
    Precondition(String),
    /// A store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Status {
        let code = match &err {
            ServiceError::Key(_) | ServiceError::Invalid(_) => Code::InvalidArgument,
            ServiceError::Limit(_) => Code::ResourceExhausted,
            ServiceError::Denied(_) => Code::PermissionDenied,
            ServiceError::Unavailable(message) => {
                return Status::unavailable(message.clone());
            }
            ServiceError::Precondition(_) => Code::FailedPrecondition,
            ServiceError::Store(e) => match e {
                StoreError::NotFound { .. } => Code::NotFound,
                StoreError::Conflict { .. } => Code::FailedPrecondition,
                StoreError::Unsealable { .. } => Code::DataLoss,
                StoreError::Database(_)
                | StoreError::Read(_)
                | StoreError::Group(_)
                | StoreError::Sqlite(_)
                | StoreError::Write(_)
                | StoreError::Migrate(_)
                | StoreError::WrongKey { .. }
                | StoreError::MissingKey { .. }
                | StoreError::Crypto(_) => Code::Unavailable,
                StoreError::Corrupt { .. } => Code::DataLoss,
            },
        };
        if code == Code::Unavailable {
            // Details (paths, SQL errors) go to the daemon's log, not to callers.
            tracing::error!(error = %err, "store failure");
            return Status::new(
                code,
                "the credential store is unavailable; see the keyhavend log",
            );
        }
        Status::new(code, err.to_string())
    }
}

impl From<VaultError> for ServiceError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Store(s) => ServiceError::Store(s),
            VaultError::Refused(m) => ServiceError::Precondition(m),
            VaultError::Downgrade(m) => ServiceError::Denied(m),
            VaultError::Key(k) => ServiceError::Unavailable(k.to_string()),
            locked @ VaultError::Locked(_) => ServiceError::Unavailable(locked.to_string()),
        }
    }
}
