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
//! - A connection must send its first request (a complete HTTP/2 HEADERS
//!   block) within `first_request_deadline` of being accepted, or it is
//!   closed: connections that say nothing cannot hold slots.
//! - At `max_connections`, the connection idle longest (no request in
//!   flight, no open stream such as Watch) is closed to make room for the
//!   newcomer, so idle connections never lock other apps out; its client
//!   reconnects on its next request. Only when every connection is busy is
//!   a bounded number of extra connections admitted, to be answered
//!   RESOURCE_EXHAUSTED; past that they are closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tonic::transport::server::Connected;

use crate::identity::Identity;
use crate::net::authority::AuthorityFixer;
pub use crate::net::platform::{BoundSocket, bind_or_adopt};
use crate::net::platform::{Conn, Listener};
use crate::store::audit::{AuditLog, Operation};

/// Connections past the limit that are still answered (with
/// RESOURCE_EXHAUSTED) rather than closed outright.
pub const OVERFLOW_CONNECTIONS: usize = 32;

/// Largest `max_connections` accepted: beyond this the daemon would run
/// out of file descriptors long before the limit meant anything.
pub const MAX_CONNECTIONS_CEILING: usize = 4096;

/// Default for how long a new connection may take to send its first
/// request.
pub const DEFAULT_FIRST_REQUEST_DEADLINE: Duration = Duration::from_secs(5);

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
    /// What the connection's stream, its requests and the accept loop share.
    pub state: Arc<ConnState>,
}

/// Set in [`ConnState::busy`] once the connection is being closed.
const CLOSING: usize = 1 << (usize::BITS - 1);

/// Orders request starts and ends across connections: the idle connection
/// with the smallest tick has been idle longest.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

fn tick() -> u64 {
    ACTIVITY.fetch_add(1, Ordering::Relaxed)
}

/// One connection's shared state: its requests in flight, whether it has
/// sent one yet, when it was last active, and the signal that closes it.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests in flight (until their response body ends), plus
    /// [`CLOSING`] once the connection is being closed.
    busy: AtomicUsize,
    /// A first request arrived: the first-request deadline no longer
    /// applies.
    requested: AtomicBool,
    /// [`tick`] of the last request start or end (or of the accept).
    last_active: AtomicU64,
    /// The reader to wake when the connection is told to close.
    waker: Mutex<Option<Waker>>,
    /// The connection-limit permit, held until the connection closes or
    /// handed to a newcomer when this connection is closed for it.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl ConnState {
    fn new(permit: OwnedSemaphorePermit) -> Arc<Self> {
        Arc::new(Self {
            last_active: AtomicU64::new(tick()),
            permit: Mutex::new(Some(permit)),
            ..Self::default()
        })
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requested.store(true, Ordering::Release);
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.last_active.store(tick(), Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// True while no request is in flight and the connection is open.
    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    fn is_closing(&self) -> bool {
        self.busy.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Marks an idle connection closing and wakes its reader; returns its
    /// permit. `None` when a request arrived in the meantime.
    fn close_if_idle(&self) -> Option<OwnedSemaphorePermit> {
        self.busy
            .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
        lock(&self.permit).take()
    }

    fn set_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.waker);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request in flight on a connection; dropped when its response ends.
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.last_active.store(tick(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
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

    /// Completes once a connection is open.
    pub async fn until_busy(&self) {
        let mut rx = self.0.subscribe();
        if rx.wait_for(|n| *n > 0).await.is_err() {
            std::future::pending::<()>().await;
        }
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
    /// Where bytes for the fixer are read, allocated on its first use and
    /// kept: zeroing a fresh 8 KiB buffer for every read cost a gRPC C-core
    /// client (which keeps the fixer) a third of its requests' work.
    scratch: Vec<u8>,
    eof: bool,
    /// Until the first request arrives: when the connection is closed.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _open: ConnectionGuard,
}

impl Drop for PeerStream {
    fn drop(&mut self) {
        // The permit goes back now, even if a request's Peer outlives the
        // connection somewhere.
        drop(lock(&self.peer.state.permit).take());
    }
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl PeerStream {
    /// `Some` when the connection must end now: it was closed to make room
    /// (end of stream), or it sent no request in time (an error).
    fn must_end(&mut self, cx: &mut Context<'_>) -> Option<io::Result<()>> {
        let state = &self.peer.state;
        // Register first, then look: a close signalled in between still
        // wakes this reader.
        state.set_waker(cx.waker());
        if state.is_closing() {
            tracing::debug!(
                conn = self.peer.conn,
                "closing an idle connection to make room for a new one"
            );
            return Some(Ok(()));
        }
        if let Some(deadline) = self.deadline.as_mut() {
            if state.requested.load(Ordering::Acquire) {
                self.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(
                    conn = self.peer.conn,
                    "no request within the first-request deadline; closing the connection"
                );
                return Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the first-request deadline",
                )));
            }
        }
        None
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
        if let Some(end) = this.must_end(cx) {
            return Poll::Ready(end);
        }
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
            if this.scratch.is_empty() {
                this.scratch = vec![0; 8192];
            }
            let mut raw_buf = ReadBuf::new(&mut this.scratch);
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
    /// How long a new connection may take to send its first request.
    pub first_request_deadline: Duration,
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

/// The accept loop, running: the stream of admitted connections for tonic,
/// and the task, which ends only at shutdown (the stream dropped) or on a
/// fatal error.
#[derive(Debug)]
pub struct Incoming {
    /// Connections that passed the peer check.
    pub stream: ReceiverStream<io::Result<PeerStream>>,
    /// The loop; `Err` when it could not run.
    pub task: tokio::task::JoinHandle<io::Result<()>>,
}

/// Spawns the accept loop. It ends when the stream is dropped (at shutdown)
/// or when it cannot go on.
pub fn incoming(listener: Listener, policy: AcceptPolicy) -> Incoming {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(accept_loop(listener, policy, tx));
    Incoming {
        stream: ReceiverStream::new(rx),
        task,
    }
}

/// The admitted connections, for closing the one idle longest.
#[derive(Debug, Default)]
struct Admitted(Vec<Weak<ConnState>>);

impl Admitted {
    fn add(&mut self, state: &Arc<ConnState>) {
        self.0.retain(|w| w.strong_count() > 0);
        self.0.push(Arc::downgrade(state));
    }

    /// Closes the connection idle longest and returns its permit; `None`
    /// when every connection is busy.
    fn evict_idlest(&mut self) -> Option<(u64, OwnedSemaphorePermit)> {
        let mut idle: Vec<(u64, Arc<ConnState>)> = Vec::new();
        self.0.retain(|w| match w.upgrade() {
            Some(state) if state.is_closing() => false,
            Some(state) => {
                if state.is_idle() {
                    idle.push((state.last_active.load(Ordering::Relaxed), state));
                }
                true
            }
            None => false,
        });
        idle.sort_by_key(|(last, _)| *last);
        idle.into_iter()
            .find_map(|(last, state)| state.close_if_idle().map(|p| (last, p)))
    }
}

async fn accept_loop(
    listener: Listener,
    policy: AcceptPolicy,
    tx: mpsc::Sender<io::Result<PeerStream>>,
) -> io::Result<()> {
    if policy.max_connections == 0 || policy.max_connections > MAX_CONNECTIONS_CEILING {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "max_connections is {}; it must be between 1 and {MAX_CONNECTIONS_CEILING}",
                policy.max_connections
            ),
        ));
    }
    let admitted = Arc::new(Semaphore::new(policy.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let mut open = Admitted::default();
    let counter = AtomicU64::new(0);
    loop {
        let stream = tokio::select! {
            () = tx.closed() => return Ok(()),
            accepted = crate::net::platform::accept(&listener) => match accepted {
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
        let cred = match crate::net::platform::peer_cred(&stream) {
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
                let _ = audit
                    .outcome(&who, Operation::Connect, None, Some(&status))
                    .await;
            }
            continue;
        }
        let identity = Identity::of_process(uid, pid);
        let free = admitted.clone().try_acquire_owned().ok().or_else(|| {
            let (idle_since, permit) = open.evict_idlest()?;
            tracing::debug!(
                conn,
                idle_since,
                limit = policy.max_connections,
                "connection limit reached; closed the connection idle longest to make room"
            );
            Some(permit)
        });
        let (permit, is_admitted) = match free {
            Some(p) => (p, true),
            None => match overflow.clone().try_acquire_owned() {
                Ok(p) => {
                    tracing::warn!(
                        conn,
                        uid,
                        pid,
                        limit = policy.max_connections,
                        "connection limit reached and every connection is busy; answering RESOURCE_EXHAUSTED"
                    );
                    if let Some(audit) = &policy.audit {
                        let status = tonic::Status::resource_exhausted("max_connections reached");
                        let _ = audit
                            .outcome(&identity, Operation::Connect, None, Some(&status))
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
        let state = ConnState::new(permit);
        if is_admitted {
            open.add(&state);
        }
        let peer = Peer {
            identity,
            conn,
            admitted: is_admitted,
            limit: policy.max_connections,
            state,
        };
        let item = PeerStream {
            inner: stream,
            peer,
            fixer: AuthorityFixer::new(),
            scratch: Vec::new(),
            eof: false,
            deadline: Some(Box::pin(tokio::time::sleep(policy.first_request_deadline))),
            _open: policy.open.opened(),
        };
        if tx.send(Ok(item)).await.is_err() {
            return Ok(());
        }
    }
}

/// A tower layer that counts each connection's requests in flight, from
/// the call until its response body ends or is dropped, so the accept loop
/// knows which connections are idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests { inner }
    }
}

/// See [`TrackRequestsLayer`].
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for TrackRequests<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<Peer>()
            .map(|peer| peer.state.begin());
        TrackedFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`TrackRequests`], its body carrying the request's
    /// count. A named future, not a boxed one: no allocation per request.
    #[allow(missing_debug_implementations)]
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody { inner: body, guard })))
    }
}

/// A response body that keeps its request counted until it ends.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    guard: Option<RequestGuard>,
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Ended: the request is done even if hyper keeps the body.
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Turns away requests on connections past the limit, and requests that
/// somehow lack a checked peer: the status to answer with, before any
/// service sees the request (`rpc::limits::GrpcBoundary` asks).
#[allow(clippy::result_large_err)]
pub fn admit(extensions: &http::Extensions) -> Result<(), tonic::Status> {
    match extensions.get::<Peer>() {
        Some(peer) if peer.admitted => Ok(()),
        Some(peer) => Err(tonic::Status::resource_exhausted(format!(
            "too many connections: keyhavend serves at most {} at once (max_connections) \
             and every one of them has a request in flight; retry later",
            peer.limit
        ))),
        None => Err(tonic::Status::permission_denied(
            "connection has no verified peer credentials",
        )),
    }
}
