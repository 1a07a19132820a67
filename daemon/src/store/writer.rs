//! The store's one write path: a thread that owns the database's only
//! read-write connection and takes every write as a job, in arrival order.
//!
//! Two kinds of job: a closure run on the connection (a deletion, a
//! rotation, an audit batch, attaching a key), and an item of a group (a
//! Store). Consecutive group items are taken together, up to
//! [`MAX_GROUP`], and handed to the group handler at once, which commits
//! them in one transaction: N Stores waiting share one fsync. A closure
//! queued between two Stores ends the group, so order is kept. With one
//! thread there is no lock between writers, and no transaction of the
//! daemon ever waits for another of its own.
//!
//! A job that panics is logged and its caller told the write failed; the
//! thread goes on with the next job (the panic unwound the job's
//! transaction, which rolled it back).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

/// Most items committed as one group.
pub const MAX_GROUP: usize = 256;
/// Jobs queued before callers wait to queue.
const QUEUE: usize = 4096;

/// Why a write did not run.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The write connection could not be opened or set up.
    #[error("{0}")]
    Open(#[from] rusqlite::Error),
    /// The database is in another journal mode than WAL.
    #[error("the database is in journal mode {0}, not WAL")]
    NotWal(String),
    /// The store is closing (or closed): the write was not done.
    #[error("the store is closing")]
    Closed,
    /// The job panicked; its transaction was rolled back.
    #[error("the write failed inside the daemon (see its log); nothing was written")]
    Panicked,
}

type Closure = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job<G> {
    Item(G),
    Run(Closure),
    Close(oneshot::Sender<()>),
}

/// The handle to the writer thread. Cheap to clone.
pub struct Writer<G> {
    jobs: mpsc::Sender<Job<G>>,
}

impl<G> Clone for Writer<G> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<G> std::fmt::Debug for Writer<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<G: Send + 'static> Writer<G> {
    /// Opens the read-write connection to the database at `path` (WAL,
    /// `synchronous=FULL`: a commit returns after its fsync) and starts
    /// the thread. `on_group` commits a group of items.
    pub fn start(
        path: &Path,
        on_group: impl FnMut(&mut Connection, Vec<G>) + Send + 'static,
    ) -> Result<Self, WriteError> {
        let conn = open(path)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("keyhaven-writer".into())
            .spawn(move || serve(conn, queue, on_group))
            .map_err(|e| WriteError::Open(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Self { jobs })
    }

    /// Queues `item` for the next group. The group handler answers it.
    pub async fn item(&self, item: G) -> Result<(), WriteError> {
        self.jobs
            .send(Job::Item(item))
            .await
            .map_err(|_| WriteError::Closed)
    }

    /// Runs `job` on the write connection, after every job queued before
    /// it, and returns what it returns.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, WriteError> {
        let (reply, answer) = oneshot::channel();
        let closure: Closure = Box::new(move |conn| {
            let _ = reply.send(job(conn));
        });
        self.jobs
            .send(Job::Run(closure))
            .await
            .map_err(|_| WriteError::Closed)?;
        // A dropped reply means the job panicked (or never ran).
        answer.await.map_err(|_| WriteError::Panicked)
    }

    /// Finishes the jobs queued so far, then closes the connection (the
    /// last connection to close checkpoints and removes the WAL). Later
    /// writes fail with [`WriteError::Closed`].
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.jobs.send(Job::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

fn open(path: &Path) -> Result<Connection, WriteError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Only a reader recovering the WAL index after a crash can hold a
    // lock the writer must wait for.
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(WriteError::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

fn serve<G>(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Job<G>>,
    mut on_group: impl FnMut(&mut Connection, Vec<G>),
) {
    let mut next: Option<Job<G>> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match queue.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Item(first) => {
                let mut group = Vec::with_capacity(MAX_GROUP.min(queue.len() + 1));
                group.push(first);
                while group.len() < MAX_GROUP {
                    match queue.try_recv() {
                        Ok(Job::Item(item)) => group.push(item),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                guarded("a group of Stores", || on_group(&mut conn, group));
            }
            Job::Run(job) => guarded("a write", || job(&mut conn)),
            Job::Close(ack) => {
                queue.close();
                // Jobs queued before the close still run; later ones are
                // refused by the closed queue.
                while let Ok(job) = queue.try_recv() {
                    match job {
                        Job::Item(item) => guarded("a group of Stores", || {
                            on_group(&mut conn, vec![item]);
                        }),
                        Job::Run(job) => guarded("a write", || job(&mut conn)),
                        Job::Close(other) => drop(other.send(())),
                    }
                }
                drop(conn);
                let _ = ack.send(());
                return;
            }
        }
    }
}

/// Runs `f`; a panic is logged and the thread goes on.
fn guarded(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("{what} panicked in the store's writer; it was rolled back");
    }
}
