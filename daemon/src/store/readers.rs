//! Point reads on the request's own thread.
//!
//! A pool that runs each SQLite connection on a worker thread (as sqlx's
//! does) hands each query over a channel: two thread wake-ups per query,
//! several times the cost of the read itself. Retrieve and List are single indexed lookups
//! of a few microseconds, so they run here instead, synchronously, on
//! read-only connections kept in a small idle list. In WAL mode a reader
//! never waits for the writer; the one case SQLite can answer BUSY (a
//! connection recovering the WAL index after a crash) is retried off the
//! runtime with a real timeout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Idle connections kept; more are opened on demand and closed after use.
const MAX_IDLE: usize = 4;
/// Statements cached per connection.
const STATEMENTS: usize = 16;
/// Address space each reader maps the database file with (SQLite's
/// `mmap_size`): a million credentials fit.
const MMAP_BYTES: i64 = 1 << 30;
/// How long a retried read may wait for a lock.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// Read-only connections to one database.
#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Option<Vec<Connection>>>,
}

/// A read failure.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// SQLite refused or failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was closed (the daemon is stopping).
    #[error("the database is closed")]
    Closed,
}

impl Readers {
    /// Readers of the database at `path` (opened lazily).
    pub fn new(path: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Some(Vec::new())),
        })
    }

    fn open(&self) -> Result<Connection, ReadError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::ZERO)?;
        // Pages of the database file are read through a memory map, not a
        // pread per page: a point read of a large store costs what one of
        // a small store does. The map is of the file, shared with the page
        // cache; only this process writes the file (the lock file).
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        crate::store::attributes::register(&conn)?;
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, ReadError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .ok_or(ReadError::Closed)?
            .pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => self.open(),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(idle) = idle.as_mut()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    /// Runs `read` on a reader connection, on this thread. If SQLite
    /// answers BUSY, runs it again on a blocking thread, waiting up to
    /// [`BUSY_WAIT`] for the lock.
    pub async fn read<R, F>(self: &Arc<Self>, read: F) -> Result<R, ReadError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let conn = self.take()?;
        let first = read(&conn);
        self.give_back(conn);
        match first {
            Err(e) if is_busy(&e) => {}
            other => return Ok(other?),
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.take()?;
            conn.busy_timeout(BUSY_WAIT)?;
            let result = read(&conn);
            conn.busy_timeout(Duration::ZERO)?;
            this.give_back(conn);
            Ok(result?)
        })
        .await
        .map_err(|_| ReadError::Closed)?
    }

    /// Closes every idle connection; later reads fail with `Closed`.
    pub fn close(&self) {
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
