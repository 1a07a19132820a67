//! Connecting to the daemon: which socket, whom to trust there, how long to
//! wait, and what to say when it goes wrong.
//!
//! The order is fixed so that no byte reaches a daemon that is not the
//! user's own (see `transport.rs` for the checks):
//!
//! 1. for the default socket, its directory is checked (owner, mode, no
//!    symbolic link);
//! 2. the path is looked at: missing, or not a socket at all (a regular file,
//!    a directory), is said as such;
//! 3. connect, bounded by [`ConnectOptions::connect_timeout`], then the
//!    server's uid (Windows: the pipe's owner) is checked;
//! 4. only then HTTP/2 and the `Status` handshake, bounded by
//!    [`ConnectOptions::handshake_timeout`].
//!
//! A refusal in 1 or 3 is [`ErrorKind::UntrustedDaemon`], and start-on-demand
//! never runs after one: another user's socket is not "nobody listening".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhaven_proto::paths::{self, Env, ProcessEnv};
use keyhaven_proto::pb::{self, daemon_client::DaemonClient};
use tonic::transport::Endpoint;

use crate::transport::{self, ConnectError, Peer, Probe, Trust};
use crate::{Autostart, Client, Error, ErrorKind, PROTOCOL, Result, autostart};

/// Environment variable naming one other uid whose daemon the client may
/// talk to (Unix). Only for setups where a daemon deliberately serves
/// another user (its `allowed_uids` names this one).
pub const ENV_ALLOW_DAEMON_UID: &str = "KEYHAVEN_ALLOW_DAEMON_UID";

/// How long connecting may take before the client gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the daemon may take to answer the first `Status` call.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long any later call may take to answer (for a Watch with a
/// snapshot: to send its first event), unless
/// [`ConnectOptions::request_timeout`] or [`Client::with_timeout`] says
/// otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to connect: the socket, start-on-demand, whom to trust, deadlines.
///
/// ```no_run
/// # async fn demo() -> Result<(), keyhaven::Error> {
/// use std::time::Duration;
/// use keyhaven::{Client, ConnectOptions};
///
/// let options = ConnectOptions::from_env()?.handshake_timeout(Duration::from_secs(2));
/// let client = Client::connect_with(options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    socket: PathBuf,
    default_socket: bool,
    autostart: Option<Autostart>,
    allow_daemon_uid: Option<u32>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    request_timeout: Duration,
}

impl ConnectOptions {
    /// Connect to `socket`, without start-on-demand and trusting only a
    /// daemon of this user. When `socket` is the default location, its
    /// directory is checked as for [`ConnectOptions::from_env`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        let default_socket = socket == paths::default_socket(&ProcessEnv);
        Self {
            socket,
            default_socket,
            autostart: None,
            allow_daemon_uid: None,
            connect_timeout: CONNECT_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// What [`Client::connect`] uses: the socket from `KEYHAVEN_SOCKET` or
    /// the default, start-on-demand from `KEYHAVEN_AUTOSTART`, and one other
    /// trusted uid from `KEYHAVEN_ALLOW_DAEMON_UID`. Fails when that
    /// variable is not a uid.
    pub fn from_env() -> Result<Self> {
        Self::from(&ProcessEnv)
    }

    fn from(env: &dyn Env) -> Result<Self> {
        let mut options = Self::new(paths::socket(None, env));
        options.autostart = Autostart::from_env(env);
        options.allow_daemon_uid = allowed_uid_from(env)?;
        Ok(options)
    }

    /// Starts `keyhavend` when nothing listens (see [`Autostart`]).
    pub fn autostart(mut self, autostart: Option<Autostart>) -> Self {
        self.autostart = autostart;
        self
    }

    /// Also trusts a daemon running as `uid` (Unix; ignored on Windows,
    /// where only the user's own pipe is trusted). For a daemon that
    /// deliberately serves another user; never needed for one's own.
    pub fn allow_daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.allow_daemon_uid = uid;
        self
    }

    /// How long each call may take to answer (default [`REQUEST_TIMEOUT`]);
    /// [`Client::with_timeout`] changes it for some calls.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting may take (default [`CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the daemon may take to answer the first `Status` call
    /// (default [`HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The socket to connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn trust(&self) -> Trust {
        Trust {
            allow_uid: self.allow_daemon_uid,
        }
    }
}

/// `KEYHAVEN_ALLOW_DAEMON_UID`, parsed; unset or empty is `None`.
fn allowed_uid_from(env: &dyn Env) -> Result<Option<u32>> {
    let Some(value) = env.var(ENV_ALLOW_DAEMON_UID).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(Some)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{ENV_ALLOW_DAEMON_UID}={} is not a uid (a number)",
                    value.to_string_lossy()
                ),
            )
        })
}

impl Client {
    /// Connects as `options` say. When nothing listens and start-on-demand
    /// is on, starts `keyhavend` on that socket and waits (bounded) for it
    /// to answer, unless a keyhavend socket unit is enabled for the user:
    /// then systemd owns the socket, and the error says to start the unit.
    /// Never after [`ErrorKind::UntrustedDaemon`].
    pub async fn connect_with(options: ConnectOptions) -> Result<Self> {
        let path = options.socket.as_path();
        let first = match connect_once(&options).await {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        let Some(auto) = options.autostart.as_ref() else {
            return Err(first);
        };
        if !first.nobody_listening() {
            return Err(first);
        }
        if let Some(unit) = autostart::enabled_socket_unit(&ProcessEnv) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{}; not starting keyhavend on demand because the systemd socket unit is \
                     enabled ({}): run `systemctl --user start keyhavend.socket`",
                    first.message,
                    unit.display()
                ),
            ));
        }
        let started = autostart::spawn(auto, path).map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                format!(
                    "{}; starting {} on demand failed: {e}",
                    first.message,
                    auto.program.display()
                ),
                e,
            )
        })?;
        loop {
            // Bounded polling: the daemon binds its socket once its store is
            // open; until then the socket is missing or still stale.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match connect_once(&options).await {
                Ok(client) => return Ok(client),
                Err(e) if e.nobody_listening() => {}
                Err(e) => return Err(e),
            }
            if let Some(status) = started.exited() {
                // Another client may have started a daemon first.
                return connect_once(&options).await.map_err(|_| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "keyhavend started on demand (pid {}) exited ({status}) without \
                             serving {}; run `{}` by hand to see why",
                            started.pid,
                            path.display(),
                            auto.program.display()
                        ),
                    )
                });
            }
            if Instant::now() > started.deadline {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "keyhavend started on demand (pid {}) did not answer on {} within {}s",
                        started.pid,
                        path.display(),
                        auto.timeout.as_secs()
                    ),
                ));
            }
        }
    }
}

/// Checks, connects and shakes hands once.
async fn connect_once(options: &ConnectOptions) -> Result<Client> {
    let socket = options.socket.clone();
    let trust = options.trust();
    if options.default_socket {
        transport::check_default_dir(&socket, trust).map_err(untrusted)?;
    }
    match transport::probe(&socket) {
        Ok(()) => {}
        Err(Probe::Missing(e)) => {
            return Err(Error::with_source(
                ErrorKind::Unavailable,
                format!(
                    "keyhavend is not running (no socket at {})",
                    socket.display()
                ),
                e,
            ));
        }
        Err(Probe::NotASocket(what)) => {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{} is {what}, not a socket: keyhavend is not running there. Remove it, or \
                     point --socket / KEYHAVEN_SOCKET at the daemon's socket",
                    socket.display()
                ),
            ));
        }
        Err(Probe::Failed(e)) => {
            return Err(Error::with_source(
                ErrorKind::Unavailable,
                format!("cannot reach keyhavend at {}: {e}", socket.display()),
                e,
            ));
        }
    }
    // What the connector saw: the peer once connected, or why it refused.
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen_in = seen.clone();
    let target = socket.clone();
    let connect_timeout = options.connect_timeout;
    let channel = Endpoint::from_static("http://keyhaven.invalid")
        .connect_timeout(connect_timeout)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let target = target.clone();
            let seen = seen_in.clone();
            async move {
                let attempt =
                    tokio::time::timeout(connect_timeout, transport::connect(&target, trust)).await;
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                match attempt {
                    Ok(Ok((stream, peer))) => {
                        seen.peer = Some(peer);
                        Ok(stream)
                    }
                    Ok(Err(ConnectError::Untrusted(refusal))) => {
                        seen.refusal = Some(refusal.clone());
                        Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            refusal,
                        ))
                    }
                    Ok(Err(ConnectError::Io(e))) => Err(e),
                    Err(_) => {
                        seen.timed_out = true;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connecting timed out",
                        ))
                    }
                }
            }
        }))
        .await;
    let seen_now = || seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => {
            let seen = seen_now();
            return Err(if let Some(refusal) = seen.refusal {
                untrusted(refusal)
            } else if seen.timed_out {
                Error::with_source(
                    ErrorKind::Unavailable,
                    format!(
                        "nothing accepted the connection to {} within {}s: keyhavend is hung or \
                         overloaded, or what listens there is not keyhavend",
                        socket.display(),
                        connect_timeout.as_secs_f32()
                    ),
                    e,
                )
            } else if let Some(peer) = seen.peer {
                closed_error(&socket, peer, e.to_string(), e)
            } else {
                connect_error(&socket, e)
            });
        }
    };
    let mut daemon = DaemonClient::new(channel.clone());
    let status = tokio::time::timeout(
        options.handshake_timeout,
        daemon.status(pb::StatusRequest {}),
    )
    .await;
    let peer = seen_now().peer.unwrap_or_default();
    let status = match status {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(handshake_error(&socket, peer, status)),
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the process serving {} ({}) accepted the connection but did not answer \
                     within {}s: keyhavend is hung or overloaded, or what listens there is not \
                     keyhavend",
                    socket.display(),
                    peer.describe(),
                    options.handshake_timeout.as_secs_f32()
                ),
            ));
        }
    };
    if status.protocol != PROTOCOL {
        return Err(Error::new(
            ErrorKind::ProtocolMismatch,
            format!(
                "keyhavend {} at {} speaks protocol {}, but this client ({}) speaks protocol \
                 {PROTOCOL}. After an upgrade the old daemon is still running: restart it \
                 (`systemctl --user restart keyhavend.service`, or stop keyhavend and start \
                 the new one); otherwise update this client",
                status.version,
                socket.display(),
                status.protocol,
                env!("CARGO_PKG_VERSION"),
            ),
        ));
    }
    Ok(Client {
        channel,
        socket,
        daemon: crate::status_from_pb(status),
        timeout: options.request_timeout,
    })
}

#[derive(Debug, Clone, Default)]
struct Seen {
    peer: Option<Peer>,
    refusal: Option<transport::Untrusted>,
    timed_out: bool,
}

fn untrusted(refusal: transport::Untrusted) -> Error {
    Error::with_source(ErrorKind::UntrustedDaemon, refusal.0.clone(), refusal)
}

fn connect_error(socket: &Path, e: tonic::transport::Error) -> Error {
    use std::io::ErrorKind as Io;
    let path = socket.display();
    let (kind, message) = match crate::io_error_in(&e).map(std::io::Error::kind) {
        Some(Io::ConnectionRefused) => (
            ErrorKind::Unavailable,
            format!("keyhavend is not running (stale socket at {path}, nothing is listening)"),
        ),
        Some(Io::PermissionDenied) => (
            ErrorKind::PermissionDenied,
            format!(
                "permission denied opening {path}: the socket or its directory is closed to you"
            ),
        ),
        Some(Io::NotFound) => (
            ErrorKind::Unavailable,
            format!("keyhavend is not running (no socket at {path})"),
        ),
        _ => (
            ErrorKind::Unavailable,
            format!("cannot connect to keyhavend at {path}: {e}"),
        ),
    };
    Error::with_source(kind, message, e)
}

fn handshake_error(socket: &Path, peer: Peer, status: tonic::Status) -> Error {
    let err = Error::from(status);
    match err.kind() {
        ErrorKind::Unavailable | ErrorKind::Other => {
            let detail = err.message.clone();
            closed_error(socket, peer, detail, err)
        }
        _ => err,
    }
}

fn closed_error(
    socket: &Path,
    peer: Peer,
    detail: String,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    // Only a daemon of another uid (opted in to) refuses this client for
    // being another user's.
    #[cfg(unix)]
    let foreign = peer.uid.is_some() && peer.uid != Some(keyhaven_proto::paths::current_uid());
    #[cfg(windows)]
    let foreign = false;
    let hint = if foreign {
        format!(
            "it runs as uid {} and refuses processes of other users unless its allowed_uids \
             names yours; see its log",
            peer.uid.unwrap_or_default()
        )
    } else {
        "see its log".to_owned()
    };
    Error::with_source(
        ErrorKind::Unavailable,
        format!(
            "keyhavend at {} ({}) closed the connection without answering ({detail}); {hint}",
            socket.display(),
            peer.describe()
        ),
        source,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_allowed_uid_comes_from_the_environment_and_must_be_a_number() {
        let env = |v: &'static str| {
            move |name: &str| (name == ENV_ALLOW_DAEMON_UID).then(|| OsString::from(v))
        };
        assert_eq!(allowed_uid_from(&env("65534")).unwrap(), Some(65534));
        assert_eq!(allowed_uid_from(&env("")).unwrap(), None);
        let err = allowed_uid_from(&env("nobody")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("KEYHAVEN_ALLOW_DAEMON_UID=nobody"));
        let options = ConnectOptions::from(&env("7")).unwrap();
        assert_eq!(options.trust().allow_uid, Some(7));
    }
}
