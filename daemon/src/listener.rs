//! The Unix socket: binding it safely, and an accept loop that checks every
//! connection's peer credentials before a single byte of it is read.
//!
//! - The socket's directory is created 0700 and verified (owner, mode, not a
//!   symlink); the socket itself is set to 0600.
//! - A socket file that still answers belongs to a live daemon and is never
//!   taken over; one that refuses connections is stale and is replaced.
//! - Connections from a uid other than the daemon's own (or a configured
//!   allow-list) are closed unread, with a WARN naming uid and pid.
//! - A socket inherited from systemd or launchd is used as it is: the
//!   service manager created it with the unit's mode and directory, and
//!   removes it; keyhavend never unlinks it.
//! - Beyond `max_connections`, a bounded number of extra connections is
//!   admitted only to be answered RESOURCE_EXHAUSTED; past that they are
//!   closed.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::audit::AuditLog;
use crate::authority::AuthorityFixer;
use crate::error::StartError;
use crate::fsutil;
use crate::identity::Identity;

/// Connections past the limit that are still answered (with
/// RESOURCE_EXHAUSTED) rather than closed outright.
pub const OVERFLOW_CONNECTIONS: usize = 32;

/// Who is on the other end of a connection, taken from the kernel at
/// accept time. Attached to every request of that connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Uid, pid, executable and sandbox app id, read at accept time.
    pub identity: Identity,
    /// A daemon-local connection number, for logs.
    pub conn: u64,
    /// False when the connection is over `max_connections`: every request on
    /// it gets RESOURCE_EXHAUSTED.
    pub admitted: bool,
    /// The configured `max_connections`, for the refusal message.
    pub limit: usize,
}

/// A listening socket. One the daemon bound itself removes its file when
/// dropped (only if the file is still the one it created); an inherited one
/// belongs to the service manager and is left alone.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// The inode of the file this daemon created; `None` when inherited.
    ino: Option<u64>,
    inherited_from: Option<&'static str>,
}

impl BoundSocket {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Some("systemd")` or `Some("launchd")` when the socket was passed in
    /// by a service manager.
    pub fn inherited_from(&self) -> Option<&'static str> {
        self.inherited_from
    }

    /// Takes the listener out for serving; the file is still removed on drop.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(ino) = self.ino
            && let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.ino() == ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the socket at `path`: private directory, stale-socket replacement,
/// mode 0600. Must run inside a tokio runtime.
pub fn bind(path: &Path) -> Result<BoundSocket, StartError> {
    let dir = path.parent().ok_or_else(|| StartError::Insecure {
        path: path.to_path_buf(),
        reason: "the socket path has no directory".into(),
    })?;
    fsutil::ensure_private_dir(dir)?;
    remove_if_stale(path)?;
    let io_err = |what, source| StartError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(|e| io_err("bind the socket", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("set the mode of", e))?;
    let ino = std::fs::symlink_metadata(path)
        .map_err(|e| io_err("inspect", e))?
        .ino();
    Ok(BoundSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
        ino: Some(ino),
        inherited_from: None,
    })
}

/// Uses the socket a service manager passed in when there is one, else
/// binds `path` (see [`bind`]). Must run inside a tokio runtime.
pub fn bind_or_adopt(
    path: &Path,
    inherited: Option<crate::platform::InheritedSocket>,
) -> Result<BoundSocket, StartError> {
    let Some(inherited) = inherited else {
        return bind(path);
    };
    let manager = inherited.manager;
    let io_err = |what, source| StartError::Io {
        what,
        path: PathBuf::from(manager),
        source,
    };
    let local = inherited
        .listener
        .local_addr()
        .map_err(|e| io_err("read the address of the socket passed in by", e))?;
    let listener = UnixListener::from_std(inherited.listener)
        .map_err(|e| io_err("register the socket passed in by", e))?;
    // The unit decides the path; `--socket` and KEYHAVEN_SOCKET do not apply.
    let path = local
        .as_pathname()
        .map_or_else(|| path.to_path_buf(), Path::to_path_buf);
    tracing::info!(socket = %path.display(), manager, "using the socket passed in by the service manager");
    Ok(BoundSocket {
        listener: Some(listener),
        path,
        ino: None,
        inherited_from: Some(manager),
    })
}

fn remove_if_stale(path: &Path) -> Result<(), StartError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StartError::Io {
                what: "inspect",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(StartError::Insecure {
            path: path.to_path_buf(),
            reason: "it exists and is not a socket; remove it if it is yours".into(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(StartError::SocketInUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket left by a previous daemon");
            std::fs::remove_file(path).map_err(|source| StartError::Io {
                what: "remove the stale socket",
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(StartError::Io {
            what: "probe the existing socket",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// How many admitted connections are open right now; the idle exit waits
/// for this to stay at zero.
#[derive(Debug, Clone)]
pub struct OpenConnections(Arc<watch::Sender<usize>>);

impl Default for OpenConnections {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl OpenConnections {
    fn opened(&self) -> ConnectionGuard {
        self.0.send_modify(|n| *n += 1);
        ConnectionGuard(self.clone())
    }

    /// Completes once no connection has been open for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            if rx.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            // Any change (a connection opening) restarts the wait.
            if tokio::time::timeout(idle, rx.changed()).await.is_err() {
                return;
            }
        }
    }
}

/// Decrements the open-connection count when the connection closes.
#[derive(Debug)]
struct ConnectionGuard(OpenConnections);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A connection that passed the peer check, carrying its [`Peer`] and the
/// connection-limit permit it holds until it closes.
#[derive(Debug)]
pub struct PeerStream {
    inner: UnixStream,
    peer: Peer,
    fixer: AuthorityFixer,
    eof: bool,
    _permit: OwnedSemaphorePermit,
    _open: ConnectionGuard,
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Client bytes go through the AuthorityFixer (see `authority.rs`)
        // before the HTTP/2 server sees them.
        let this = &mut *self;
        loop {
            if this.fixer.has_output() {
                let chunk = this.fixer.take_output(buf.remaining());
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 8192];
            let mut raw_buf = ReadBuf::new(&mut raw);
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if raw_buf.filled().is_empty() => {
                    this.eof = true;
                    this.fixer.finish();
                }
                Poll::Ready(Ok(())) => {
                    if let Err(e) = this.fixer.feed(raw_buf.filled()) {
                        tracing::debug!(conn = this.peer.conn, error = %e, "closing connection");
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Who may connect, and how many at once.
#[derive(Debug, Clone)]
pub struct AcceptPolicy {
    /// The daemon's own uid.
    pub own_uid: u32,
    /// Further uids allowed.
    pub allowed_uids: Vec<u32>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Where refusals are recorded.
    pub audit: Option<AuditLog>,
    /// Counts the connections that are open.
    pub open: OpenConnections,
}

impl AcceptPolicy {
    fn allows(&self, uid: u32) -> bool {
        uid == self.own_uid || self.allowed_uids.contains(&uid)
    }
}

/// Spawns the accept loop and returns the stream of admitted connections for
/// tonic. The loop ends when the stream is dropped (at shutdown).
pub fn incoming(
    listener: UnixListener,
    policy: AcceptPolicy,
) -> ReceiverStream<io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(listener, policy, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: UnixListener,
    policy: AcceptPolicy,
    tx: mpsc::Sender<io::Result<PeerStream>>,
) {
    let admitted = Arc::new(Semaphore::new(policy.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let counter = AtomicU64::new(0);
    loop {
        let stream = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _addr)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!(conn, error = %e, "closing a connection whose peer credentials cannot be read");
                continue;
            }
        };
        let uid = cred.uid();
        let pid = cred.pid().unwrap_or(0);
        if !policy.allows(uid) {
            tracing::warn!(
                conn,
                uid,
                pid,
                own_uid = policy.own_uid,
                "refused a connection from another user; closed before reading any request"
            );
            if let Some(audit) = &policy.audit {
                let who = Identity {
                    uid,
                    pid,
                    executable: None,
                    app_id: None,
                };
                let status = tonic::Status::permission_denied(format!(
                    "uid {uid} is not the daemon's user ({})",
                    policy.own_uid
                ));
                audit.outcome(&who, "connect", None, Some(&status));
            }
            continue;
        }
        let identity = Identity::of_process(uid, pid);
        let (permit, is_admitted) = match admitted.clone().try_acquire_owned() {
            Ok(p) => (p, true),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(p) => {
                    tracing::warn!(
                        conn,
                        uid,
                        pid,
                        limit = policy.max_connections,
                        "connection limit reached; answering RESOURCE_EXHAUSTED"
                    );
                    if let Some(audit) = &policy.audit {
                        let status = tonic::Status::resource_exhausted("max_connections reached");
                        audit.outcome(&identity, "connect", None, Some(&status));
                    }
                    (p, false)
                }
                Err(_) => {
                    tracing::warn!(
                        conn,
                        uid,
                        pid,
                        "connection limit and overflow reached; closing"
                    );
                    continue;
                }
            },
        };
        tracing::trace!(conn, uid, pid, "accepted");
        let peer = Peer {
            identity,
            conn,
            admitted: is_admitted,
            limit: policy.max_connections,
        };
        let item = PeerStream {
            inner: stream,
            peer,
            fixer: AuthorityFixer::new(),
            eof: false,
            _permit: permit,
            _open: policy.open.opened(),
        };
        if tx.send(Ok(item)).await.is_err() {
            return;
        }
    }
}

/// The gRPC interceptor that turns away requests on connections past the
/// limit, and requests that somehow lack a checked peer.
#[allow(clippy::result_large_err)]
pub fn admit(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    match req.extensions().get::<Peer>() {
        Some(peer) if peer.admitted => Ok(req),
        Some(peer) => Err(tonic::Status::resource_exhausted(format!(
            "too many connections: keyhavend serves at most {} at once (max_connections); \
             close idle connections or retry later",
            peer.limit
        ))),
        None => Err(tonic::Status::permission_denied(
            "connection has no verified peer credentials",
        )),
    }
}
