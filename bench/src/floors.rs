//! The floors: what the parts keyhaven is built from cost on this machine,
//! measured the same way as keyhaven itself.
//!
//! - `raw_echo`: 100 bytes there and back on a warm Unix socket (the
//!   kernel's floor for any local IPC).
//! - `tonic_echo`: the cheapest unary call on keyhaven's own stack (tonic
//!   0.14, HTTP/2 over a Unix socket, prost), server on a 2-worker tokio
//!   runtime like keyhavend.
//! - `sqlite_read`: a point read by unique key in a table shaped like
//!   keyhaven's `auth_tokens`.
//! - `sqlite_upsert_fsync`: one upsert per transaction with WAL and
//!   `synchronous=FULL`, the durable single-write floor.
//! - `sqlx_read` (informational): the same point read through sqlx.
//!
//! The echo servers run in their own process (`keyhaven-bench serve KIND
//! SOCKET`), so they can be pinned to a CPU like the daemon is.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::report::{CpuMark, Group, Measurement, Placed, Point, Report, print_line};
use crate::stats::{
    Placement, Plan, latency_async, latency_blocking, on_pinned_thread, on_thread_at, spawn_on,
    throughput_async, throughput_threads,
};

mod echo {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("keyhaven.bench.v1");
}

use echo::EchoMessage;
use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};

/// The echoed payload size, about a token's.
const PAYLOAD: usize = 100;
/// Rows in the SQLite floors' table.
const ROWS: u64 = 1000;

/// The server process of a floor: `raw-echo` or `tonic-echo` on `socket`,
/// until killed. (`secret-service-client` is the Secret Service section's
/// client process, writing its result to `socket`.)
pub fn serve(kind: &str, socket: &Path) -> Result<()> {
    if kind == "secret-service-client" {
        return crate::secret_service::client(socket);
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", socket.display())),
    }
    match kind {
        "raw-echo" => serve_raw(socket),
        "tonic-echo" => serve_tonic(socket),
        other => bail!("unknown floor server {other:?} (raw-echo, tonic-echo)"),
    }
}

/// One OS thread per connection: read exactly [`PAYLOAD`] bytes, write
/// them back, until the client hangs up.
fn serve_raw(socket: &Path) -> Result<()> {
    let listener =
        UnixListener::bind(socket).with_context(|| format!("bind {}", socket.display()))?;
    for conn in listener.incoming() {
        let mut conn = conn.context("accept")?;
        std::thread::spawn(move || {
            let mut buf = [0u8; PAYLOAD];
            while conn.read_exact(&mut buf).is_ok() {
                if conn.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

#[derive(Debug)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(
        &self,
        request: tonic::Request<EchoMessage>,
    ) -> Result<tonic::Response<EchoMessage>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// The tonic server, on a runtime shaped like keyhavend's (2 workers) and
/// with the HTTP/2 settings keyhavend's server uses.
fn serve_tonic(socket: &Path) -> Result<()> {
    // A subscriber that wants nothing, as keyhavend's wants nothing below
    // INFO: the spans h2 and tonic open on every request are then off at
    // their call sites. Without any subscriber, tracing's `log` feature
    // (which sqlx turns on in this binary) formats each of them for the
    // `log` crate, about 14,000 instructions per Echo that a plain tonic
    // server does not spend, and the floor would be that much too high.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())
        .context("set the echo server's tracing subscriber")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::UnixListener::bind(socket)
            .with_context(|| format!("bind {}", socket.display()))?;
        tonic::transport::Server::builder()
            .max_concurrent_streams(64)
            .http2_max_header_list_size(16 * 1024)
            .timeout(Duration::from_secs(30))
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .context("tonic echo server")
    })
}

/// A floor's server process; killed when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    /// Starts `me serve KIND SOCKET` on `cpu` (`None`: unpinned) and waits
    /// until the socket accepts connections.
    pub(crate) fn start(me: &Path, kind: &str, socket: &Path, cpu: Option<usize>) -> Result<Self> {
        Self::start_under(&[], me, kind, socket, cpu, Duration::from_secs(10))
    }

    /// As [`Server::start`], run under `wrapper` (e.g. valgrind and its
    /// options) when that is not empty, waiting up to `patience`.
    pub(crate) fn start_under(
        wrapper: &[std::ffi::OsString],
        me: &Path,
        kind: &str,
        socket: &Path,
        cpu: Option<usize>,
        patience: Duration,
    ) -> Result<Self> {
        let mut cmd = crate::stats::command_under(wrapper, me);
        cmd.arg("serve")
            .arg(kind)
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = spawn_on(&mut cmd, cpu)?;
        let mut server = Self {
            child,
            socket: socket.to_owned(),
        };
        let deadline = Instant::now() + patience;
        loop {
            if UnixStream::connect(socket).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("the {kind} server exited early: {status}");
            }
            if Instant::now() > deadline {
                bail!(
                    "the {kind} server did not listen on {} in {} s",
                    socket.display(),
                    patience.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Every floor, in report order.
pub fn run(plan: &Plan, me: &Path, report: &mut Report) -> Result<()> {
    warn_if_busy();
    let dir = tempfile::tempdir().context("temp dir for the floors")?;
    report.measurements.push(raw_echo(plan, me, dir.path())?);
    report.measurements.push(tonic_echo(plan, me, dir.path())?);
    let db = dir.path().join("floor.db");
    let setup = create_db(&db)?;
    report.measurements.push(sqlite_read(plan, &db)?);
    report.measurements.push(sqlx_read(plan, &db)?);
    drop(setup);
    report
        .measurements
        .push(sqlite_upsert_fsync(plan, &dir.path().join("upsert.db"))?);
    Ok(())
}

fn raw_echo(plan: &Plan, me: &Path, dir: &Path) -> Result<Measurement> {
    let mut m = Measurement::new(
        "raw_echo",
        Group::Floor,
        "100-byte echo on a warm std Unix socket, blocking client, one server thread per \
         connection (separate process)",
    );
    let socket = dir.join("raw.sock");
    let round_trip = |conn: &mut UnixStream| -> Result<()> {
        let out = [7u8; PAYLOAD];
        let mut back = [0u8; PAYLOAD];
        conn.write_all(&out)?;
        conn.read_exact(&mut back)?;
        Ok(())
    };
    for placement in Placement::ALL {
        let _server = Server::start(me, "raw-echo", &socket, Some(placement.server_cpu()))?;
        let summary = on_thread_at(Some(placement.client_cpu()), || {
            let mut conn = UnixStream::connect(&socket).context("connect to raw-echo")?;
            latency_blocking(plan, |_| round_trip(&mut conn))
        })?;
        m.latency.push(Placed { placement, summary });
    }
    let server = Server::start(me, "raw-echo", &socket, None)?;
    for &clients in &plan.clients {
        let conns = (0..clients)
            .map(|_| UnixStream::connect(&socket).context("connect to raw-echo"))
            .collect::<Result<Vec<_>>>()?;
        let mark = CpuMark::now(server.child.id());
        let summary = throughput_threads(conns, plan.duration, |conn, _| round_trip(conn))?;
        m.throughput.push(Point::since(mark, clients, summary));
    }
    print_line(&m);
    Ok(m)
}

/// A tonic channel over the Unix socket `socket` (the server named `what`
/// in errors), set up like the keyhaven client's.
pub(crate) async fn unix_channel(socket: &Path, what: &str) -> Result<tonic::transport::Channel> {
    let target = socket.to_owned();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let target = target.clone();
            async move {
                tokio::net::UnixStream::connect(&target)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .with_context(|| format!("connect to {what} at {}", socket.display()))
}

/// An Echo client on [`unix_channel`].
pub(crate) async fn echo_channel(socket: &Path) -> Result<EchoClient<tonic::transport::Channel>> {
    Ok(EchoClient::new(unix_channel(socket, "tonic-echo").await?))
}

/// One Echo call with a [`PAYLOAD`]-byte payload.
pub(crate) async fn echo_once(mut client: EchoClient<tonic::transport::Channel>) -> Result<()> {
    let reply = client
        .echo(EchoMessage {
            payload: vec![7u8; PAYLOAD],
        })
        .await
        .context("Echo")?;
    if reply.get_ref().payload.len() != PAYLOAD {
        bail!("Echo returned {} bytes", reply.get_ref().payload.len());
    }
    Ok(())
}

fn tonic_echo(plan: &Plan, me: &Path, dir: &Path) -> Result<Measurement> {
    let mut m = Measurement::new(
        "tonic_echo",
        Group::Floor,
        "unary tonic Echo, 100-byte payload, HTTP/2 over a Unix socket; server on a 2-worker \
         tokio runtime (separate process), client channel set up like keyhaven's",
    );
    let socket = dir.join("tonic.sock");
    for placement in Placement::ALL {
        let _server = Server::start(me, "tonic-echo", &socket, Some(placement.server_cpu()))?;
        let summary = on_pinned_thread(placement.client_cpu(), || async {
            let client = echo_channel(&socket).await?;
            latency_async(plan, |_| echo_once(client.clone())).await
        })?;
        m.latency.push(Placed { placement, summary });
    }
    let server = Server::start(me, "tonic-echo", &socket, None)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("client runtime")?;
    for &clients in &plan.clients {
        let (mark, summary) = runtime.block_on(async {
            let mut channels = Vec::with_capacity(clients);
            for _ in 0..clients {
                channels.push(echo_channel(&socket).await?);
            }
            let mark = CpuMark::now(server.child.id());
            let summary = throughput_async(channels, plan.duration, |client, _| {
                echo_once(EchoClient::clone(&client))
            })
            .await?;
            Ok::<_, anyhow::Error>((mark, summary))
        })?;
        m.throughput.push(Point::since(mark, clients, summary));
    }
    print_line(&m);
    Ok(m)
}

/// keyhaven's schema: the first migration itself, so the floor's table is
/// the store's table.
const SCHEMA: &str = include_str!("../../migrations/20261123000001_initial.sql");

const READ: &str = "SELECT ciphertext, nonce, key_id, label, revision, created_at, updated_at, \
     expires_at FROM auth_tokens \
     WHERE provider = ?1 AND server_id = ?2 AND user_id = ?3 AND token_type = ?4";

const UPSERT: &str = "INSERT INTO auth_tokens (provider, server_id, user_id, token_type, \
     ciphertext, nonce, key_id, label, revision, created_at, updated_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'k1', NULL, 1, ?7, ?7, NULL) \
     ON CONFLICT (provider, server_id, user_id, token_type) DO UPDATE SET \
     ciphertext = excluded.ciphertext, nonce = excluded.nonce, \
     revision = auth_tokens.revision + 1, updated_at = excluded.updated_at";

/// The unique key of row `k`.
fn key(k: u64) -> [String; 4] {
    [
        format!("provider-{}", k % 4),
        format!("server-{k}"),
        format!("user-{k}"),
        "access".to_owned(),
    ]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A read-write connection with keyhaven's settings.
fn open_rw(path: &Path) -> Result<rusqlite::Connection> {
    let conn =
        rusqlite::Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Creates the database with [`ROWS`] rows; the returned connection keeps
/// the WAL files in place while readers run.
fn create_db(path: &Path) -> Result<rusqlite::Connection> {
    let mut conn = open_rw(path)?;
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(UPSERT)?;
        for k in 0..ROWS {
            let [p, s, u, t] = key(k);
            stmt.execute(rusqlite::params![
                p,
                s,
                u,
                t,
                [9u8; 116],
                [3u8; 12],
                now_ms()
            ])?;
        }
    }
    tx.commit()?;
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    Ok(conn)
}

fn open_ro(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("open {} read-only", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// The row of `keys[i % ROWS]`, read and decoded like a Retrieve would.
fn read_row(conn: &rusqlite::Connection, keys: &[[String; 4]], i: u64) -> Result<()> {
    let [p, s, u, t] = &keys[(i % ROWS) as usize];
    let mut stmt = conn.prepare_cached(READ)?;
    let (ciphertext, nonce): (Vec<u8>, Vec<u8>) = stmt.query_row([p, s, u, t], |row| {
        let _: String = row.get(2)?;
        let _: Option<String> = row.get(3)?;
        let _: i64 = row.get(4)?;
        Ok((row.get(0)?, row.get(1)?))
    })?;
    if ciphertext.is_empty() || nonce.len() != 12 {
        bail!("row {i} is malformed");
    }
    Ok(())
}

/// A floor without a server: single-client latency on a thread pinned to
/// CPU 0, then one thread per client. `open(c)` gives client `c` its
/// connection.
fn local_floor<C: Send>(
    plan: &Plan,
    m: &mut Measurement,
    open: impl Fn(usize) -> Result<C> + Sync,
    op: impl Fn(&mut C, u64) -> Result<()> + Sync,
) -> Result<()> {
    let placement = Placement::SameCpu;
    let summary = on_thread_at(Some(placement.client_cpu()), || {
        let mut conn = open(0)?;
        latency_blocking(plan, |i| op(&mut conn, i))
    })?;
    m.latency.push(Placed { placement, summary });
    for &clients in &plan.clients {
        let conns = (0..clients).map(&open).collect::<Result<Vec<_>>>()?;
        let summary = throughput_threads(conns, plan.duration, &op)?;
        m.throughput.push(Point::new(clients, summary));
    }
    Ok(())
}

fn sqlite_read(plan: &Plan, db: &Path) -> Result<Measurement> {
    let mut m = Measurement::new(
        "sqlite_read",
        Group::Floor,
        "rusqlite point read by unique key (prepare_cached), auth_tokens table with 1000 rows, \
         WAL; own read-only connection per client",
    );
    let keys: Vec<[String; 4]> = (0..ROWS).map(key).collect();
    local_floor(
        plan,
        &mut m,
        |_| open_ro(db),
        |conn, i| read_row(conn, &keys, i),
    )?;
    print_line(&m);
    Ok(m)
}

/// The same point read through sqlx (a 4-connection read-only pool like
/// keyhavend's reader), on a 2-worker runtime.
fn sqlx_read(plan: &Plan, db: &Path) -> Result<Measurement> {
    use sqlx::Row as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    let mut m = Measurement::new(
        "sqlx_read",
        Group::Floor,
        "the sqlite_read point read through sqlx 0.9 (pool of 4 read-only connections, each \
         behind sqlx's worker thread); informational",
    );
    let keys: std::sync::Arc<Vec<[String; 4]>> = std::sync::Arc::new((0..ROWS).map(key).collect());
    let options = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5));
    let read = |pool: sqlx::SqlitePool, keys: std::sync::Arc<Vec<[String; 4]>>, i: u64| async move {
        let [p, s, u, t] = &keys[(i % ROWS) as usize];
        let row = sqlx::query(READ)
            .bind(p)
            .bind(s)
            .bind(u)
            .bind(t)
            .fetch_one(&pool)
            .await?;
        let nonce: Vec<u8> = row.try_get(1)?;
        if nonce.len() != 12 {
            bail!("row {i} is malformed");
        }
        Ok(())
    };
    let summary = on_pinned_thread(Placement::SameCpu.client_cpu(), || async {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let summary = latency_async(plan, |i| read(pool.clone(), keys.clone(), i)).await;
        pool.close().await;
        summary
    })?;
    m.latency.push(Placed {
        placement: Placement::SameCpu,
        summary,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("client runtime")?;
    runtime.block_on(async {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        for &clients in &plan.clients {
            let handles = vec![pool.clone(); clients];
            let keys = keys.clone();
            let summary = throughput_async(handles, plan.duration, move |pool, i| {
                read(sqlx::SqlitePool::clone(&pool), keys.clone(), i)
            })
            .await?;
            m.throughput.push(Point::new(clients, summary));
        }
        pool.close().await;
        anyhow::Ok(())
    })?;
    print_line(&m);
    Ok(m)
}

/// One upsert of client `client`'s row `i % 16`, its own transaction.
fn upsert(conn: &rusqlite::Connection, client: usize, i: u64) -> Result<()> {
    let mut stmt = conn.prepare_cached(UPSERT)?;
    stmt.execute(rusqlite::params![
        "provider-w",
        format!("client-{client}"),
        format!("user-{}", i % 16),
        "access",
        [9u8; 116],
        [3u8; 12],
        now_ms()
    ])?;
    Ok(())
}

fn sqlite_upsert_fsync(plan: &Plan, db: &Path) -> Result<Measurement> {
    let fs = filesystem_of(db.parent().unwrap_or(db));
    let mut m = Measurement::new(
        "sqlite_upsert_fsync",
        Group::Floor,
        &format!(
            "rusqlite INSERT .. ON CONFLICT DO UPDATE, one row per autocommit transaction, WAL, \
             synchronous=FULL, busy_timeout=5000, on {fs}; own connection and keys per client"
        ),
    );
    let setup = open_rw(db)?;
    setup.execute_batch(SCHEMA)?;
    local_floor(
        plan,
        &mut m,
        |c| Ok((c, open_rw(db)?)),
        |(c, conn), i| upsert(conn, *c, i),
    )?;
    drop(setup);
    print_line(&m);
    Ok(m)
}

/// The filesystem type and mount point holding `dir` (from
/// `/proc/self/mounts`), for the record: fsync on tmpfs is free.
fn filesystem_of(dir: &Path) -> String {
    let Ok(dir) = dir.canonicalize() else {
        return "an unknown filesystem".to_owned();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "an unknown filesystem".to_owned();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, point, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), format!("{kind} ({point})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "an unknown filesystem".to_owned(), |(_, s)| s)
}

/// Says so when the machine is busy (1-minute load average of 0.5 or
/// more): other work skews every figure, the pinned ones most.
pub(crate) fn warn_if_busy() {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    if let Some(load) = load.filter(|l| *l >= 0.5) {
        eprintln!(
            "warning: 1-minute load average {load:.2} before the run (a build that just \
             finished counts too): if something is still running, these figures are skewed"
        );
    }
}
