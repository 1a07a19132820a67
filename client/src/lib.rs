//! Client library for keyhavend, the per-user credential daemon.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyhaven::Error> {
//! use keyhaven::{Client, CredentialKey, Secret, StoreOptions};
//!
//! let client = Client::connect().await?; // $KEYHAVEN_SOCKET or the default socket
//! let key = CredentialKey::new("jellyfin", "srv-1", "user-1", "access_token")?;
//! client.store(&key, Secret::from("tok-123"), StoreOptions::default()).await?;
//! let cred = client.retrieve(&key).await?;
//! assert_eq!(cred.secret.expose(), b"tok-123");
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`Client`]: connects over the Unix socket (Windows: the named pipe,
//!   see `transport.rs`) as [`ConnectOptions`] say (`connect.rs`): it
//!   refuses, before sending a byte, a daemon of another user
//!   ([`ErrorKind::UntrustedDaemon`]), checks the daemon's protocol number,
//!   and offers typed `store` / `retrieve` / `delete` / `list` / `status`.
//! - [`Client::watch`] (a `Stream` of [`WatchEvent`]s), [`Client::logout`]
//!   and [`Client::audit`]: sharing one login between apps (`sharing.rs`).
//! - [`backup`]: snapshots, the portable export and restore (admin).
//! - [`Autostart`]: optional start-on-demand of `keyhavend`
//!   (`KEYHAVEN_AUTOSTART=1`), off where a systemd socket unit is enabled.
//! - [`Error`] with [`Error::kind`]: decide on outcomes without matching
//!   strings.
//! - Re-exported from `keyhaven-proto`: [`CredentialKey`] (the validated
//!   four-field key) and [`Secret`] (zeroized on drop, printed redacted).
#![warn(missing_docs)]
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyhaven_proto::paths::{self, ProcessEnv};
use keyhaven_proto::pb::{
    self, credentials_client::CredentialsClient, daemon_client::DaemonClient,
};
use keyhaven_proto::time::{from_unix_ms, to_unix_ms};
use tonic::transport::Channel;

pub mod autostart;
#[cfg(feature = "backup")]
pub mod backup;
pub mod compat;
mod connect;
mod sharing;
mod transport;

pub use autostart::Autostart;
pub use connect::{
    CONNECT_TIMEOUT, ConnectOptions, ENV_ALLOW_DAEMON_UID, HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT,
};
pub use keyhaven_proto::PROTOCOL;
pub use keyhaven_proto::attributes;
pub use keyhaven_proto::key::{DEFAULT_TOKEN_TYPE, KeyError, Limits};
pub use keyhaven_proto::{AttributeError, Attributes, CanonicalKey as CredentialKey, Secret};
pub use sharing::{AuditEntry, AuditQuery, Caller, EventKind, Watch, WatchEvent};

/// What went wrong, for deciding what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such credential, or it has expired.
    NotFound,
    /// The daemon refused the caller.
    PermissionDenied,
    /// A compare-and-swap write lost: the stored revision differs.
    Conflict,
    /// A key field, label or secret breaks its rules.
    InvalidArgument,
    /// A limit was hit (message size, connections).
    ResourceExhausted,
    /// The daemon is not running, not reachable, or its store is not open.
    Unavailable,
    /// The daemon speaks another protocol version.
    ProtocolMismatch,
    /// A stored credential cannot be decrypted (tampered or damaged).
    DataLoss,
    /// The socket is served by another user, or its directory is not the
    /// user's own and private: nothing was sent. Opt in to one other uid
    /// with [`ConnectOptions::allow_daemon_uid`] only if that is meant.
    UntrustedDaemon,
    /// Anything else.
    Other,
}

/// An error from the client library. The message is meant for people; use
/// [`Error::kind`] in code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Nothing listens on the socket: it is missing, or stale (refused).
    fn nobody_listening(&self) -> bool {
        use std::io::ErrorKind as Io;
        self.kind == ErrorKind::Unavailable
            && self
                .source
                .as_deref()
                .and_then(|s| io_error_in(s as &(dyn std::error::Error + 'static)))
                .is_some_and(|e| matches!(e.kind(), Io::NotFound | Io::ConnectionRefused))
    }

    /// The exit code the `keyhaven` CLI uses for this error.
    pub fn exit_code(&self) -> u8 {
        use keyhaven_proto::exit;
        match self.kind {
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::PermissionDenied => exit::PERMISSION_DENIED,
            ErrorKind::Conflict => exit::CONFLICT,
            ErrorKind::InvalidArgument | ErrorKind::ResourceExhausted => exit::INVALID_INPUT,
            ErrorKind::Unavailable => exit::UNAVAILABLE,
            ErrorKind::ProtocolMismatch => exit::PROTOCOL_MISMATCH,
            ErrorKind::UntrustedDaemon => exit::UNTRUSTED_DAEMON,
            ErrorKind::DataLoss | ErrorKind::Other => exit::FAILURE,
        }
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        Self::new(ErrorKind::InvalidArgument, e.to_string())
    }
}

impl From<AttributeError> for Error {
    fn from(e: AttributeError) -> Self {
        Self::new(ErrorKind::InvalidArgument, e.to_string())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let kind = match status.code() {
            Code::NotFound => ErrorKind::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => ErrorKind::PermissionDenied,
            Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => ErrorKind::Conflict,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => ErrorKind::Unavailable,
            Code::DataLoss => ErrorKind::DataLoss,
            Code::Unimplemented => ErrorKind::ProtocolMismatch,
            _ => ErrorKind::Other,
        };
        // tonic's words for a call that passed its deadline here.
        let message = if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
            "keyhavend did not answer within this call's deadline (ConnectOptions::request_timeout, \
             Client::with_timeout)"
                .to_owned()
        } else {
            status.message().to_owned()
        };
        Self::with_source(kind, message, status)
    }
}

/// The deadline of calls whose work grows with the store: rotating the
/// key, moving it, and the answer to a backup, export or restore (their
/// data then streams without a deadline).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Credentials asked for per `List` page.
const LIST_PAGE_SIZE: u32 = 500;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything about a stored credential except its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Its key.
    pub key: CredentialKey,
    /// Store-wide unique revision, increasing with every write.
    pub revision: u64,
    /// First written.
    pub created_at: SystemTime,
    /// Last written.
    pub updated_at: SystemTime,
    /// When it stops being served, if ever.
    pub expires_at: Option<SystemTime>,
    /// A label for people.
    pub label: Option<String>,
    /// Non-secret attributes: which server, which user, which device id
    /// (names in [`attributes`]). Stored unsealed.
    pub attributes: Attributes,
}

/// A credential read from the daemon.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Its metadata.
    pub metadata: Metadata,
    /// The token. Zeroized on drop, printed redacted.
    pub secret: Secret,
}

/// Options of [`Client::store`].
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// A label for people; `None` clears it.
    pub label: Option<String>,
    /// When the credential stops being served.
    pub expires_at: Option<SystemTime>,
    /// Compare-and-swap: `None` writes unconditionally, `Some(0)` only if the
    /// credential does not exist, `Some(n)` only if it is at revision `n`.
    pub expected_revision: Option<u64>,
    /// `None` keeps the stored attributes (a new credential has none);
    /// `Some(map)` replaces them, and `Some` of an empty map removes them.
    pub attributes: Option<Attributes>,
}

impl StoreOptions {
    /// Only create: fail with [`ErrorKind::Conflict`] if it exists.
    pub fn if_absent() -> Self {
        Self {
            expected_revision: Some(0),
            ..Self::default()
        }
    }

    /// Only replace revision `revision`: fail with [`ErrorKind::Conflict`]
    /// if another write came first.
    pub fn if_revision(revision: u64) -> Self {
        Self {
            expected_revision: Some(revision),
            ..Self::default()
        }
    }
}

/// The result of [`Client::store`].
#[derive(Debug, Clone)]
pub struct Stored {
    /// The new metadata.
    pub metadata: Metadata,
    /// True when nothing was stored under the key before.
    pub created: bool,
}

/// What [`Client::list`] selects. `None` matches anything; `Some("")`
/// matches only empty ids.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Exact provider.
    pub provider: Option<String>,
    /// Exact server id.
    pub server_id: Option<String>,
    /// Exact user id.
    pub user_id: Option<String>,
    /// Only credentials carrying every one of these attributes, exactly.
    pub attributes: Attributes,
}

/// What the daemon says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    /// Daemon version.
    pub version: String,
    /// Wire protocol number.
    pub protocol: u32,
    /// Daemon pid.
    pub pid: u32,
    /// Database path.
    pub store_path: String,
    /// Key tier: `file`, `keyring` or `systemd-credential`.
    pub key_tier: String,
    /// Where the key is.
    pub key_source: String,
    /// Stored credentials.
    pub credential_count: u64,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Why the store is locked; `None` when it is open.
    pub key_problem: Option<String>,
    /// The data key's id (not secret); empty when locked.
    pub key_id: String,
    /// Every key tier as the daemon last saw it.
    pub key_tiers: Vec<KeyTierState>,
    /// Which per-app policy is in force, and where it came from.
    pub policy: String,
    /// When the last snapshot was taken and where it went (`None`: none
    /// since the daemon started, and none in its `backup_dir`).
    pub last_backup: Option<(SystemTime, String)>,
}

/// One key tier as the daemon saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTierState {
    /// `systemd-credential`, `keyring` or `file`.
    pub tier: String,
    /// `active`, `holds-key`, `empty`, `unavailable`, `not-configured` or
    /// `skipped`.
    pub state: String,
    /// Details: where, which key id, what failed.
    pub detail: String,
}

/// The result of [`Client::rotate_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// Key id before.
    pub old_key_id: String,
    /// Key id after.
    pub new_key_id: String,
    /// Credentials re-sealed.
    pub resealed: u64,
    /// Tier holding the key.
    pub tier: String,
}

/// A connection to keyhavend. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    socket: PathBuf,
    daemon: DaemonStatus,
    /// Each call's deadline (sent to the daemon as `grpc-timeout` too).
    timeout: Duration,
}

impl Client {
    /// Connects to the default socket: `$KEYHAVEN_SOCKET`, else
    /// `$XDG_RUNTIME_DIR/keyhaven/keyhaven.sock`, else
    /// `${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock`. With
    /// `KEYHAVEN_AUTOSTART=1`, starts the daemon if none answers (see
    /// [`Client::connect_with`]); `KEYHAVEN_ALLOW_DAEMON_UID` names one
    /// other uid whose daemon is trusted (see [`ConnectOptions::from_env`]).
    pub async fn connect() -> Result<Self> {
        Self::connect_with(ConnectOptions::from_env()?).await
    }

    /// Connects to `path`, starting `keyhavend` there when nothing listens
    /// and `autostart` is given (see [`Client::connect_with`]).
    pub async fn connect_or_start(
        path: impl AsRef<Path>,
        autostart: Option<Autostart>,
    ) -> Result<Self> {
        Self::connect_with(ConnectOptions::new(path.as_ref()).autostart(autostart)).await
    }

    /// The socket [`Client::connect`] uses.
    pub fn default_socket() -> PathBuf {
        paths::socket(None, &ProcessEnv)
    }

    /// Connects to the socket at `path` and checks the daemon's protocol.
    pub async fn connect_to(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with(ConnectOptions::new(path.as_ref())).await
    }

    /// The socket this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's status as of connecting.
    pub fn daemon(&self) -> &DaemonStatus {
        &self.daemon
    }

    /// This client with another deadline for each call, e.g. a short one
    /// for a read on a UI thread: `client.with_timeout(d).retrieve(&key)`.
    /// Shares the connection.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `message` as a request for work that grows with the store (key
    /// rotation, backups, restores): bounded by [`ADMIN_TIMEOUT`], or this
    /// client's deadline when that is longer.
    pub(crate) fn admin_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout.max(ADMIN_TIMEOUT));
        request
    }

    /// `message` as a request bounded by this client's deadline.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    fn credentials(&self) -> CredentialsClient<Channel> {
        CredentialsClient::new(self.channel.clone())
            .max_decoding_message_size(2 * 1024 * 1024)
            .max_encoding_message_size(2 * 1024 * 1024)
    }

    /// Stores `secret` under `key`.
    pub async fn store(
        &self,
        key: &CredentialKey,
        secret: Secret,
        options: StoreOptions,
    ) -> Result<Stored> {
        if let Some(label) = &options.label {
            keyhaven_proto::key::check_label(label)?;
        }
        if let Some(attributes) = &options.attributes {
            attributes::check(attributes)?;
        }
        let expires_at = options.expires_at.map(|t| from_unix_ms(system_to_ms(t)));
        let clear_attributes = options.attributes.as_ref().is_some_and(|a| a.is_empty());
        let request = pb::StoreRequest {
            key: Some(key.to_pb()),
            secret: secret.into_vec(),
            label: options.label,
            expires_at,
            expected_revision: options.expected_revision,
            attributes: options.attributes.unwrap_or_default(),
            clear_attributes,
        };
        let response = self
            .credentials()
            .store(self.request(request))
            .await?
            .into_inner();
        Ok(Stored {
            metadata: metadata_from_pb(response.metadata)?,
            created: response.created,
        })
    }

    /// Reads the credential under `key`.
    pub async fn retrieve(&self, key: &CredentialKey) -> Result<Credential> {
        let request = pb::RetrieveRequest::new(key.to_pb());
        let mut response = self
            .credentials()
            .retrieve(self.request(request))
            .await?
            .into_inner();
        let secret = Secret::new(std::mem::take(&mut response.secret));
        Ok(Credential {
            metadata: metadata_from_pb(response.metadata.take())?,
            secret,
        })
    }

    /// Deletes the credential under `key`; with `expected_revision`, only if
    /// it is still at that revision.
    pub async fn delete(
        &self,
        key: &CredentialKey,
        expected_revision: Option<u64>,
    ) -> Result<Metadata> {
        let request = pb::DeleteRequest {
            key: Some(key.to_pb()),
            expected_revision,
        };
        let response = self
            .credentials()
            .delete(self.request(request))
            .await?
            .into_inner();
        metadata_from_pb(response.metadata)
    }

    /// Every credential matching `filter`, in key order (all pages).
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Metadata>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListRequest {
                provider: filter.provider.clone().unwrap_or_default(),
                server_id: filter.server_id.clone().unwrap_or_default(),
                user_id: filter.user_id.clone().unwrap_or_default(),
                match_empty_server_id: filter.server_id.is_some(),
                match_empty_user_id: filter.user_id.is_some(),
                // A page of the largest keys and labels (about 1 KiB each)
                // is about 500 KiB: under this client's 2 MiB decoding
                // limit (the daemon does not cap its answers).
                page_size: LIST_PAGE_SIZE,
                page_token,
                attributes: filter.attributes.clone(),
            };
            let page = self
                .credentials()
                .list(self.request(request))
                .await?
                .into_inner();
            for m in page.credentials {
                out.push(metadata_from_pb(Some(m))?);
            }
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Re-seals every credential under a new data key (crash-safe).
    pub async fn rotate_key(&self) -> Result<KeyRotation> {
        let r = DaemonClient::new(self.channel.clone())
            .rotate_key(self.admin_request(pb::RotateKeyRequest {}))
            .await?
            .into_inner();
        Ok(KeyRotation {
            old_key_id: r.old_key_id,
            new_key_id: r.new_key_id,
            resealed: r.resealed,
            tier: r.tier,
        })
    }

    /// Moves the data key to `to` (`keyring` or `file`); returns the tier it
    /// came from.
    pub async fn move_key(&self, to: &str) -> Result<String> {
        let r = DaemonClient::new(self.channel.clone())
            .move_key(self.admin_request(pb::MoveKeyRequest { to: to.to_owned() }))
            .await?
            .into_inner();
        Ok(r.from)
    }

    /// Asks the daemon for its current status.
    pub async fn status(&self) -> Result<DaemonStatus> {
        let status = DaemonClient::new(self.channel.clone())
            .status(self.request(pb::StatusRequest {}))
            .await?
            .into_inner();
        Ok(status_from_pb(status))
    }
}

fn status_from_pb(s: pb::StatusResponse) -> DaemonStatus {
    DaemonStatus {
        version: s.version,
        protocol: s.protocol,
        pid: s.pid,
        store_path: s.store_path,
        key_tier: s.key_tier,
        key_source: s.key_source,
        credential_count: s.credential_count,
        uptime_seconds: s.uptime_seconds,
        key_problem: (!s.key_problem.is_empty()).then_some(s.key_problem),
        key_id: s.key_id,
        key_tiers: s
            .key_tiers
            .into_iter()
            .map(|t| KeyTierState {
                tier: t.tier,
                state: t.state,
                detail: t.detail,
            })
            .collect(),
        policy: s.policy,
        last_backup: s
            .last_backup_at
            .as_ref()
            .and_then(to_unix_ms)
            .map(|ms| (ms_to_system(ms), s.last_backup)),
    }
}

fn metadata_from_pb(m: Option<pb::CredentialMetadata>) -> Result<Metadata> {
    let bad = |what: &str| Error::new(ErrorKind::Other, format!("the daemon sent {what}"));
    let m = m.ok_or_else(|| bad("no metadata"))?;
    let key = CredentialKey::from_pb_stored(m.key.as_ref()).map_err(|_| bad("an invalid key"))?;
    let time = |ts: Option<prost_types::Timestamp>| -> Result<Option<SystemTime>> {
        ts.map(|ts| {
            to_unix_ms(&ts)
                .map(ms_to_system)
                .ok_or_else(|| bad("an invalid timestamp"))
        })
        .transpose()
    };
    Ok(Metadata {
        key,
        revision: m.revision,
        created_at: time(m.created_at)?.unwrap_or(UNIX_EPOCH),
        updated_at: time(m.updated_at)?.unwrap_or(UNIX_EPOCH),
        expires_at: time(m.expires_at)?,
        label: m.label,
        attributes: m.attributes,
    })
}

/// Unix milliseconds of a `SystemTime` (negative before 1970).
pub fn system_to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn ms_to_system(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn io_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}
