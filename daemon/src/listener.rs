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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::audit::AuditLog;
use crate::authority::AuthorityFixer;
use crate::identity::Identity;
pub use crate::platform::{BoundSocket, bind_or_adopt};
use crate::platform::{Conn, Listener};

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
    inner: Conn,
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
            if this.fixer.is_transparent() {
                // Nothing left to fix on this connection: no copies.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
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
    listener: Listener,
    policy: AcceptPolicy,
) -> ReceiverStream<io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(listener, policy, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: Listener,
    policy: AcceptPolicy,
    tx: mpsc::Sender<io::Result<PeerStream>>,
) {
    let admitted = Arc::new(Semaphore::new(policy.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let counter = AtomicU64::new(0);
    loop {
        let stream = tokio::select! {
            () = tx.closed() => return,
            accepted = crate::platform::accept(&listener) => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let cred = match crate::platform::peer_cred(&stream) {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!(conn, error = %e, "closing a connection whose peer credentials cannot be read");
                continue;
            }
        };
        let (uid, pid) = (cred.uid, cred.pid);
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
                let _ = audit.outcome(&who, "connect", None, Some(&status)).await;
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
                        let _ = audit
                            .outcome(&identity, "connect", None, Some(&status))
                            .await;
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
