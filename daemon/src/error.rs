//! Why the daemon could not start. The layers below the server report
//! their own errors; each converts into a [`StartError`] where it is
//! defined, so this module depends on none of them.

use std::path::PathBuf;

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
    Key(Box<dyn std::error::Error + Send + Sync>),
    /// The store could not be opened.
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
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
