//! Error types, and the one place where errors become gRPC statuses.

use std::path::PathBuf;

use keyhaven_proto::KeyError;
use tonic::{Code, Status};

use crate::store::StoreError;

/// Why the daemon could not start. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A path could not be decided (no HOME).
    #[error(transparent)]
    NoHome(#[from] keyhaven_proto::paths::NoHome),
    /// The config file is malformed.
    #[error("config file {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file system operation failed.
    #[error("could not {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A directory or file is not private to this user.
    #[error("refusing {path}: {reason}")]
    Insecure {
        /// The path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Another daemon holds the store lock.
    #[error(
        "another keyhavend is already running on this store (lock {path} is held); stop it first"
    )]
    AlreadyRunning {
        /// The lock file.
        path: PathBuf,
    },
    /// A live daemon already answers on the socket.
    #[error("a daemon is already listening on {path}; refusing to take over a live socket")]
    SocketInUse {
        /// The socket.
        path: PathBuf,
    },
    /// The data key could not be loaded or does not fit the store.
    #[error(transparent)]
    Key(#[from] crate::custody::KeyError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting that names a path was given as an empty string.
    #[error(
        "{setting} is empty (set by {origin}); give it a directory, or leave it out to use the default"
    )]
    EmptySetting {
        /// The setting's name.
        setting: &'static str,
        /// Where it was set: the flag, or the config file.
        origin: String,
    },
}

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
