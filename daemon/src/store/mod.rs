//! The credential store: SQLite, every secret sealed.
//!
//! WAL mode with `synchronous=FULL`, so an acknowledged write survives a
//! crash or power loss. Writes are serialized by one write lock: Stores
//! are committed in groups on a rusqlite connection (see [`Store::put`]);
//! deletions, rotation and the audit log go through sqlx's single writer.
//! Retrieve and List read through [`Readers`] on the request's own thread;
//! other reads use sqlx's reader pool. The database file is created 0600
//! before SQLite opens it, so the `-wal` and `-shm` files inherit that mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyhaven_proto::{CanonicalKey, Secret, time::now_unix_ms};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, Sqlite, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::error::StartError;
use crate::fsutil;
use crate::identity::Identity;
use crate::store::crypto::{CryptoError, DataKey, Sealed};
use crate::store::events::{Event, EventBus, EventKind};
use crate::store::readers::{ReadError, Readers};

pub mod attributes;
pub mod audit;
pub mod crypto;
pub(crate) mod events;
pub(crate) mod model;
pub(crate) mod readers;

pub use model::{AttributeChange, ListFilter, Metadata, Put};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError::Store(Box::new(e))
    }
}

/// A store failure, in terms a caller can act on. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such credential, or it has expired.
    #[error("{}", if *.expired { format!("credential {key} has expired") } else { format!("no credential {key}") })]
    NotFound {
        /// The key asked for.
        key: CanonicalKey,
        /// True when a row exists but its `expires_at` has passed.
        expired: bool,
    },
    /// Compare-and-swap failed.
    #[error("{}", conflict_message(.key, *.expected, *.actual))]
    Conflict {
        /// The key.
        key: CanonicalKey,
        /// The revision the caller expected (0: must not exist).
        expected: u64,
        /// The stored revision, `None` when absent.
        actual: Option<u64>,
    },
    /// The row exists but its secret cannot be opened with the store's key.
    #[error(
        "credential {key} cannot be decrypted: {reason}. The row was tampered with or copied \
         from another credential; other credentials are unaffected"
    )]
    Unsealable {
        /// The key.
        key: CanonicalKey,
        /// Why.
        reason: CryptoError,
    },
    /// A row holds values no valid write could have produced.
    #[error("credential row {row_id} is corrupt: {reason}")]
    Corrupt {
        /// The SQLite rowid.
        row_id: i64,
        /// What is wrong.
        reason: String,
    },
    /// The store is sealed with a key other than the one given.
    #[error("the store is sealed with key {expected}, not {found}")]
    WrongKey {
        /// The key ids recorded in the store.
        expected: String,
        /// The id of the key given.
        found: String,
    },
    /// The store's record of its key does not open with the key.
    #[error("the check value of key {key_id} does not verify: wrong key or damaged store")]
    MissingKey {
        /// The key id.
        key_id: String,
    },
    /// Sealing failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// SQLite failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The transaction this Store was grouped into failed; nothing of the
    /// group was written.
    #[error("database error: {0}")]
    Group(String),
    /// SQLite failed on the group writer's connection.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A read on the request's thread failed.
    #[error("database read failed: {0}")]
    Read(#[from] ReadError),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn conflict_message(key: &CanonicalKey, expected: u64, actual: Option<u64>) -> String {
    match (expected, actual) {
        (0, Some(rev)) => format!("credential {key} already exists (revision {rev})"),
        (_, None) => format!("credential {key} does not exist (expected revision {expected})"),
        (_, Some(rev)) => {
            format!("credential {key} is at revision {rev}, not {expected}; re-read it and retry")
        }
    }
}

#[derive(FromRow)]
struct Row {
    id: i64,
    provider: String,
    server_id: String,
    user_id: String,
    token_type: String,
    label: Option<String>,
    revision: i64,
    created_at: i64,
    updated_at: i64,
    expires_at: Option<i64>,
    attributes: Option<Vec<u8>>,
}

#[derive(FromRow)]
struct SealedRow {
    #[sqlx(flatten)]
    row: Row,
    ciphertext: Vec<u8>,
    nonce: Vec<u8>,
    key_id: String,
}

/// The metadata columns, as a literal so queries stay `&'static str`.
macro_rules! meta_columns {
    () => {
        "id, provider, server_id, user_id, token_type, label, revision, created_at, updated_at, expires_at, attributes"
    };
}

/// The WHERE clause selecting one credential by its four key fields.
macro_rules! by_key {
    () => {
        " WHERE provider = ? AND server_id = ? AND user_id = ? AND token_type = ?"
    };
}

impl SealedRow {
    /// `meta_columns!`, then ciphertext, nonce and key id.
    fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            row: Row::from_sqlite(r)?,
            ciphertext: r.get(11)?,
            nonce: r.get(12)?,
            key_id: r.get(13)?,
        })
    }
}

impl Row {
    /// The metadata columns of a rusqlite row, in `meta_columns!` order.
    fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            provider: r.get(1)?,
            server_id: r.get(2)?,
            user_id: r.get(3)?,
            token_type: r.get(4)?,
            label: r.get(5)?,
            revision: r.get(6)?,
            created_at: r.get(7)?,
            updated_at: r.get(8)?,
            expires_at: r.get(9)?,
            attributes: r.get(10)?,
        })
    }

    fn metadata(self) -> Result<Metadata, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            row_id: self.id,
            reason,
        };
        // Stored keys may predate a rule (bidi controls): still readable.
        let key = CanonicalKey::from_stored(
            &self.provider,
            &self.server_id,
            &self.user_id,
            &self.token_type,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        let revision = u64::try_from(self.revision)
            .ok()
            .filter(|r| *r > 0)
            .ok_or_else(|| corrupt(format!("revision {} is not positive", self.revision)))?;
        let attributes =
            crate::store::attributes::decode(self.attributes.as_deref()).map_err(corrupt)?;
        Ok(Metadata {
            key,
            revision,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            label: self.label,
            attributes,
        })
    }
}

/// An open, migrated database whose data key is not attached yet. Cheap
/// to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct Database {
    writer: SqlitePool,
    reader: SqlitePool,
    readers: Arc<Readers>,
    groups: Arc<GroupWriter>,
    /// Held by every write transaction of this process (credentials, audit
    /// log, rotation), so the two write connections never contend inside
    /// SQLite, where a waiter would sleep in SQLite's busy handler.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    path: PathBuf,
}

/// The store, ready to serve: database plus data key, and the handle of
/// the task that commits Stores in groups.
///
/// Every write holds `write_lock` from its transaction's start until its
/// events are published, so events go out in revision order.
#[derive(Debug, Clone)]
pub struct Store {
    core: Core,
    puts: mpsc::Sender<PutJob>,
}

/// What every write needs; shared by [`Store`] and its committer task.
#[derive(Debug, Clone)]
pub struct Core {
    inner: Arc<Database>,
    key: Arc<std::sync::RwLock<Arc<DataKey>>>,
    events: EventBus,
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::ops::Deref for Store {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// A Store waiting for its group's commit.
struct PutJob {
    put: Put,
    actor: Identity,
    reply: oneshot::Sender<Result<(Metadata, bool), StoreError>>,
}

/// Most Stores committed in one transaction.
const MAX_GROUP: usize = 256;
/// Stores queued for the committer before callers wait to queue.
const PUT_QUEUE: usize = 4096;

impl Database {
    /// Opens (creating if needed) the database at `path`, whose directory
    /// must already be private, and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StartError> {
        refuse_lost_wal(path)?;
        fsutil::ensure_private_file(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = PathBuf::from(side);
            if side.exists() {
                fsutil::verify_private(&side, false)?;
            }
        }
        refuse_read_only(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let refused = |e: StoreError| open_refused(path, e);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|e| refused(e.into()))?;
        MIGRATOR.run(&writer).await.map_err(|e| refused(e.into()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| refused(e.into()))?;
        Ok(Self {
            writer,
            reader,
            readers: Readers::new(path),
            groups: Arc::new(GroupWriter::new(path)),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            path: path.to_path_buf(),
        })
    }

    /// The ids of the data keys this store was sealed with; empty for a
    /// store that has never been keyed.
    pub async fn key_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT key_id FROM data_keys ORDER BY created_at")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// The ids of the keys the stored credentials are sealed with (empty
    /// when there are none): any key that opens them must have one of these.
    pub async fn row_key_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT key_id FROM auth_tokens ORDER BY key_id")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// The single writer connection's pool (for the audit log).
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Taken around every write transaction (see the field).
    pub(crate) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().await
    }

    /// The readers' pool (for the audit log).
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes both pools, checkpointing the WAL.
    pub async fn close(&self) {
        self.readers.close();
        self.groups.close();
        self.reader.close().await;
        self.writer.close().await;
    }

    /// How many credentials are stored (no key needed).
    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_tokens")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// This store's random id.
    pub async fn store_id(&self) -> Result<String, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM store_info WHERE name = 'store_id'")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Attaches the data key: verifies its check value, or records it when
    /// the store has never seen it and no credential is sealed with another
    /// key. Forgets recorded keys no credential uses any more.
    pub async fn with_key(&self, key: DataKey, events: EventBus) -> Result<Store, StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let known: Vec<(String, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT key_id, check_nonce, check_value FROM data_keys")
                .fetch_all(&mut *tx)
                .await?;
        let sealed_with: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT key_id FROM auth_tokens")
                .fetch_all(&mut *tx)
                .await?;
        let is_known = known.iter().any(|(id, _, _)| id == key.id());
        if !is_known && sealed_with.iter().any(|id| id != key.id()) {
            return Err(StoreError::WrongKey {
                expected: sealed_with.join(", "),
                found: key.id().to_owned(),
            });
        }
        if !is_known {
            let check = key.seal_check()?;
            sqlx::query(
                "INSERT INTO data_keys (key_id, check_nonce, check_value, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(key.id())
            .bind(&check.nonce)
            .bind(&check.ciphertext)
            .bind(now_unix_ms())
            .execute(&mut *tx)
            .await?;
        } else if let Some((_, nonce, value)) = known.iter().find(|(id, _, _)| id == key.id()) {
            let check = Sealed {
                nonce: nonce.clone(),
                ciphertext: value.clone(),
            };
            if !key.verify_check(&check) {
                return Err(StoreError::MissingKey {
                    key_id: key.id().to_owned(),
                });
            }
        }
        sqlx::query(
            "DELETE FROM data_keys WHERE key_id != ? \
             AND key_id NOT IN (SELECT DISTINCT key_id FROM auth_tokens)",
        )
        .bind(key.id())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let core = Core {
            inner: Arc::new(self.clone()),
            key: Arc::new(std::sync::RwLock::new(Arc::new(key))),
            events,
            write_lock: self.write_lock.clone(),
        };
        let (puts, queue) = mpsc::channel(PUT_QUEUE);
        tokio::spawn(commit_groups(core.clone(), queue));
        Ok(Store { core, puts })
    }
}

/// The committer: one group per loop, as large as the queue at that moment.
async fn commit_groups(core: Core, mut queue: mpsc::Receiver<PutJob>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = queue.recv().await {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        core.commit_group(std::mem::take(&mut group)).await;
    }
}

impl Core {
    /// The data key in use.
    pub fn key(&self) -> Arc<DataKey> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes `jobs` in one transaction, then publishes their events in
    /// revision order and answers each caller.
    async fn commit_group(&self, jobs: Vec<PutJob>) {
        // The lock comes first: a rotation holds it, so the key read here
        // is the one every row will be sealed with when this group commits.
        let _guard = self.write_lock.lock().await;
        let key = self.key();
        let (replies, puts): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| (j.reply, (j.put, j.actor)))
            .unzip();
        let now = now_unix_ms();
        let groups = self.inner.groups.clone();
        let written = tokio::task::spawn_blocking(move || {
            groups.with_conn(|conn| write_group(conn, &key, puts, now))
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Group("the group writer panicked".to_owned())));
        match written {
            Ok(outcomes) => {
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    if let Ok((meta, created, actor)) = &outcome {
                        self.events.publish(Event {
                            kind: if *created {
                                EventKind::Stored
                            } else {
                                EventKind::Updated
                            },
                            metadata: meta.clone(),
                            time: now,
                            actor: Some(actor.clone()),
                        });
                    }
                    let _ = reply.send(outcome.map(|(meta, created, _)| (meta, created)));
                }
            }
            Err(e) => {
                // Rolled back: nothing of the group was written.
                let message = e.to_string();
                tracing::error!(error = %message, stores = replies.len(), "a group of Stores failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Group(message.clone())));
                }
            }
        }
    }
}

/// The read-write connection groups of Stores are committed on, used from
/// one blocking thread at a time: the whole transaction of a group runs
/// there, so a group costs one thread hand-off instead of two per
/// statement (sqlx), which under load was most of a commit's time.
#[derive(Debug)]
struct GroupWriter {
    path: PathBuf,
    conn: std::sync::Mutex<WriterConn>,
}

#[derive(Debug)]
enum WriterConn {
    Unopened,
    Open(rusqlite::Connection),
    Closed,
}

impl GroupWriter {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            conn: std::sync::Mutex::new(WriterConn::Unopened),
        }
    }

    /// Opens the connection like sqlx's writer: WAL, `synchronous=FULL`
    /// (a commit returns after its fsync), foreign keys, a busy timeout.
    fn open(&self) -> Result<rusqlite::Connection, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Group(format!(
                "the database is in journal mode {mode}, not WAL"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(8);
        Ok(conn)
    }

    /// Runs `f` on the connection, opening it on first use. Blocking: call
    /// from a blocking thread.
    fn with_conn<R>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let WriterConn::Unopened = *slot {
            *slot = WriterConn::Open(self.open()?);
        }
        match &mut *slot {
            WriterConn::Open(conn) => f(conn),
            _ => Err(StoreError::Group("the store is closing".to_owned())),
        }
    }

    /// Closes the connection; later groups fail.
    fn close(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = WriterConn::Closed;
    }
}

/// What one Store of a group came to: its metadata, whether it created the
/// credential, and who wrote it; or why it was refused.
type Outcome = Result<(Metadata, bool, Identity), StoreError>;

/// The transaction of one group. A compare-and-swap miss fails only its own
/// Store; any database error fails (and rolls back) the whole group. Stores
/// run in arrival order, so a later Store of the same key sees the earlier.
fn write_group(
    conn: &mut rusqlite::Connection,
    key: &DataKey,
    puts: Vec<(Put, Identity)>,
    now: i64,
) -> Result<Vec<Outcome>, StoreError> {
    use rusqlite::OptionalExtension;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let last: i64 = tx.query_row(
        "SELECT value FROM store_meta WHERE name = 'last_revision'",
        [],
        |r| r.get(0),
    )?;
    let mut revision = u64::try_from(last).map_err(|_| StoreError::Corrupt {
        row_id: 0,
        reason: format!("store revision counter is {last}"),
    })?;
    let first_revision = revision;
    let mut outcomes = Vec::with_capacity(puts.len());
    for (put, actor) in puts {
        let k = &put.key;
        let existing = tx
            .prepare_cached(concat!(
                "SELECT ",
                meta_columns!(),
                " FROM auth_tokens",
                by_key!()
            ))?
            .query_row(
                (k.provider(), k.server_id(), k.user_id(), k.token_type()),
                Row::from_sqlite,
            )
            .optional()?
            .map(Row::metadata)
            .transpose()?;
        if let Some(expected) = put.expected_revision {
            let actual = existing.as_ref().map(|m| m.revision);
            let ok = match (expected, actual) {
                (0, None) => true,
                (e, Some(a)) => e == a,
                (_, None) => false,
            };
            if !ok {
                outcomes.push(Err(StoreError::Conflict {
                    key: put.key,
                    expected,
                    actual,
                }));
                continue;
            }
        }
        let sealed = key.seal(k, put.secret.expose())?;
        revision += 1;
        let created_at = existing.as_ref().map_or(now, |m| m.created_at);
        let attributes = match put.attributes {
            AttributeChange::Replace(attributes) => attributes,
            AttributeChange::Keep => existing
                .as_ref()
                .map(|m| m.attributes.clone())
                .unwrap_or_default(),
        };
        tx.prepare_cached(
            "INSERT INTO auth_tokens (provider, server_id, user_id, token_type, ciphertext, nonce, \
             key_id, label, revision, created_at, updated_at, expires_at, attributes) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (provider, server_id, user_id, token_type) DO UPDATE SET \
             ciphertext = excluded.ciphertext, nonce = excluded.nonce, key_id = excluded.key_id, \
             label = excluded.label, revision = excluded.revision, \
             updated_at = excluded.updated_at, expires_at = excluded.expires_at, \
             attributes = excluded.attributes",
        )?
        .execute(rusqlite::params![
            k.provider(),
            k.server_id(),
            k.user_id(),
            k.token_type(),
            sealed.ciphertext,
            sealed.nonce,
            key.id(),
            put.label.as_deref(),
            revision_to_sql(revision),
            created_at,
            now,
            put.expires_at,
            crate::store::attributes::encode(&attributes),
        ])?;
        let meta = Metadata {
            key: put.key,
            revision,
            created_at,
            updated_at: now,
            expires_at: put.expires_at,
            label: put.label,
            attributes,
        };
        outcomes.push(Ok((meta, existing.is_none(), actor)));
    }
    if revision != first_revision {
        tx.execute(
            "UPDATE store_meta SET value = ? WHERE name = 'last_revision'",
            [revision_to_sql(revision)],
        )?;
    }
    tx.commit()?;
    Ok(outcomes)
}

impl Store {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Re-seals every credential under `new_key` in one transaction and
    /// switches to it. Either every row moves to the new key or none does.
    /// Fails, changing nothing, if any row cannot be opened.
    pub async fn rotate_to(&self, new_key: DataKey) -> Result<u64, StoreError> {
        let _guard = self.write_lock.lock().await;
        let old = self.key();
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let check = new_key.seal_check()?;
        sqlx::query(
            "INSERT OR REPLACE INTO data_keys (key_id, check_nonce, check_value, created_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(new_key.id())
        .bind(&check.nonce)
        .bind(&check.ciphertext)
        .bind(now_unix_ms())
        .execute(&mut *tx)
        .await?;
        let sql = concat!(
            "SELECT ",
            meta_columns!(),
            ", ciphertext, nonce, key_id FROM auth_tokens"
        );
        let rows: Vec<SealedRow> = sqlx::query_as(sql).fetch_all(&mut *tx).await?;
        let count = rows.len() as u64;
        for row in rows {
            let id = row.row.id;
            let meta = row.row.metadata()?;
            let sealed = Sealed {
                nonce: row.nonce,
                ciphertext: row.ciphertext,
            };
            let secret = if row.key_id == old.id() {
                old.open(&meta.key, &sealed)
            } else {
                Err(CryptoError::Open)
            }
            .map_err(|reason| StoreError::Unsealable {
                key: meta.key.clone(),
                reason,
            })?;
            let resealed = new_key.seal(&meta.key, secret.expose())?;
            sqlx::query(
                "UPDATE auth_tokens SET ciphertext = ?, nonce = ?, key_id = ? WHERE id = ?",
            )
            .bind(&resealed.ciphertext)
            .bind(&resealed.nonce)
            .bind(new_key.id())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        crate::fault::point("rotate:after-reseal");
        match self.key.write() {
            Ok(mut k) => *k = Arc::new(new_key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new_key),
        }
        Ok(count)
    }

    /// Forgets recorded keys that neither seal a credential nor are in use.
    pub async fn forget_unused_keys(&self) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "DELETE FROM data_keys WHERE key_id != ? \
             AND key_id NOT IN (SELECT DISTINCT key_id FROM auth_tokens)",
        )
        .bind(self.key().id().to_owned())
        .execute(&self.inner.writer)
        .await?;
        Ok(())
    }

    /// The event bus writes are published on.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Writes a credential, honouring `expected_revision`, and publishes a
    /// STORED or UPDATED event naming `actor`. Returns once the write is
    /// durable (its group's commit, fsync included, is done).
    ///
    /// Concurrent Stores are committed together: the committer task takes
    /// every Store queued while the previous commit ran and writes them in
    /// one transaction, so N waiting callers share one fsync. Each keeps
    /// its own compare-and-swap check, in arrival order.
    pub async fn put(&self, put: Put, actor: &Identity) -> Result<(Metadata, bool), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = PutJob {
            put,
            actor: actor.clone(),
            reply,
        };
        let closed = || StoreError::Group("the store is closing".to_owned());
        self.puts.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Reads and opens a credential. Expired credentials are not returned.
    pub async fn get(&self, key: &CanonicalKey) -> Result<(Metadata, Secret), StoreError> {
        let sql = concat!(
            "SELECT ",
            meta_columns!(),
            ", ciphertext, nonce, key_id FROM auth_tokens",
            by_key!()
        );
        let k = key.clone();
        let row = self
            .inner
            .readers
            .read(move |conn| {
                use rusqlite::OptionalExtension;
                conn.prepare_cached(sql)?
                    .query_row(
                        (k.provider(), k.server_id(), k.user_id(), k.token_type()),
                        SealedRow::from_sqlite,
                    )
                    .optional()
            })
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                key: key.clone(),
                expired: false,
            });
        };
        let meta = row.row.metadata()?;
        if meta.expires_at.is_some_and(|t| t <= now_unix_ms()) {
            return Err(StoreError::NotFound {
                key: key.clone(),
                expired: true,
            });
        }
        let data_key = self.key();
        if row.key_id != data_key.id() {
            return Err(StoreError::Unsealable {
                key: key.clone(),
                reason: CryptoError::Open,
            });
        }
        let sealed = Sealed {
            nonce: row.nonce,
            ciphertext: row.ciphertext,
        };
        let secret = data_key
            .open(key, &sealed)
            .map_err(|reason| StoreError::Unsealable {
                key: key.clone(),
                reason,
            })?;
        Ok((meta, secret))
    }

    /// Deletes a credential, honouring `expected_revision`, and publishes a
    /// DELETED event. Returns the metadata it had.
    pub async fn delete(
        &self,
        key: &CanonicalKey,
        expected_revision: Option<u64>,
        actor: &Identity,
    ) -> Result<Metadata, StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(meta) = fetch_meta(&mut tx, key).await? else {
            return Err(StoreError::NotFound {
                key: key.clone(),
                expired: false,
            });
        };
        if let Some(expected) = expected_revision
            && expected != meta.revision
        {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                actual: Some(meta.revision),
            });
        }
        self.remove_and_publish(tx, vec![meta.clone()], EventKind::Deleted, Some(actor))
            .await?;
        Ok(meta)
    }

    /// Deletes every credential of `provider` + `server_id` (+ `user_id`)
    /// in one transaction; one DELETED event each. Returns them with the
    /// revision each deletion consumed.
    pub async fn logout(
        &self,
        provider: &str,
        server_id: &str,
        user_id: Option<&str>,
        actor: &Identity,
    ) -> Result<Vec<Metadata>, StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let sql = concat!(
            "SELECT ",
            meta_columns!(),
            " FROM auth_tokens WHERE provider = ?1 AND server_id = ?2 \
             AND (?3 IS NULL OR user_id = ?3) ORDER BY user_id, token_type"
        );
        let rows: Vec<Row> = sqlx::query_as(sql)
            .bind(provider)
            .bind(server_id)
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        let rows = rows
            .into_iter()
            .map(Row::metadata)
            .collect::<Result<_, _>>()?;
        self.remove_and_publish(tx, rows, EventKind::Deleted, Some(actor))
            .await
    }

    /// Removes every credential whose `expires_at` has passed, publishing an
    /// EXPIRED event for each. Returns how many were removed.
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        let _guard = self.write_lock.lock().await;
        let now = now_unix_ms();
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let sql = concat!(
            "SELECT ",
            meta_columns!(),
            " FROM auth_tokens WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1000"
        );
        let rows: Vec<Row> = sqlx::query_as(sql).bind(now).fetch_all(&mut *tx).await?;
        let rows = rows
            .into_iter()
            .map(Row::metadata)
            .collect::<Result<_, _>>()?;
        let removed = self
            .remove_and_publish(tx, rows, EventKind::Expired, None)
            .await?;
        Ok(removed.len())
    }

    /// Deletes `rows` inside `tx`, each consuming a revision (so revisions
    /// order every change), commits, and publishes one `kind` event per row.
    /// The caller holds the write lock. Returns the rows with the revision
    /// each deletion consumed.
    async fn remove_and_publish(
        &self,
        mut tx: Transaction<'static, Sqlite>,
        rows: Vec<Metadata>,
        kind: EventKind,
        actor: Option<&Identity>,
    ) -> Result<Vec<Metadata>, StoreError> {
        let mut removed = Vec::with_capacity(rows.len());
        for meta in rows {
            sqlx::query(concat!("DELETE FROM auth_tokens", by_key!()))
                .bind(meta.key.provider())
                .bind(meta.key.server_id())
                .bind(meta.key.user_id())
                .bind(meta.key.token_type())
                .execute(&mut *tx)
                .await?;
            let revision = next_revision(&mut tx).await?;
            removed.push(Metadata { revision, ..meta });
        }
        tx.commit().await?;
        let now = now_unix_ms();
        for meta in &removed {
            self.events.publish(Event {
                kind,
                metadata: meta.clone(),
                time: now,
                actor: actor.cloned(),
            });
        }
        Ok(removed)
    }

    /// The store's latest revision and every credential matching `filter`,
    /// read in one transaction: a consistent snapshot for `Watch`.
    pub async fn snapshot(&self, filter: &ListFilter) -> Result<(u64, Vec<Metadata>), StoreError> {
        let mut tx = self.inner.reader.begin().await?;
        let last: i64 =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE name = 'last_revision'")
                .fetch_one(&mut *tx)
                .await?;
        let sql = concat!(
            "SELECT ",
            meta_columns!(),
            " FROM auth_tokens \
             WHERE (?1 IS NULL OR provider = ?1) AND (?2 IS NULL OR server_id = ?2) \
             AND (?3 IS NULL OR user_id = ?3) \
             ORDER BY provider, server_id, user_id, token_type"
        );
        let rows: Vec<Row> = sqlx::query_as(sql)
            .bind(filter.provider.as_deref())
            .bind(filter.server_id.as_deref())
            .bind(filter.user_id.as_deref())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut metas = Vec::with_capacity(rows.len());
        for row in rows {
            let meta = row.metadata()?;
            if filter.matches_attributes(&meta) {
                metas.push(meta);
            }
        }
        Ok((u64::try_from(last).unwrap_or(0), metas))
    }

    /// Metadata in key order, filtered and paginated. Never secrets.
    ///
    /// The WHERE clause names only the fields given, so SQLite seeks the
    /// unique key index instead of scanning the table (a `?1 IS NULL OR`
    /// form cannot use the index): a List costs the same with a thousand
    /// credentials or a million.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Metadata>, StoreError> {
        use rusqlite::types::Value;
        let mut sql = String::from(concat!(
            "SELECT ",
            meta_columns!(),
            " FROM auth_tokens WHERE 1"
        ));
        let mut args: Vec<Value> = Vec::with_capacity(8);
        for (column, value) in [
            ("provider", &filter.provider),
            ("server_id", &filter.server_id),
            ("user_id", &filter.user_id),
        ] {
            if let Some(value) = value {
                sql.push_str(" AND ");
                sql.push_str(column);
                sql.push_str(" = ?");
                args.push(Value::Text(value.clone()));
            }
        }
        for (name, value) in &filter.attributes {
            sql.push_str(" AND keyhaven_attribute(attributes, ?) = ?");
            args.push(Value::Text(name.clone()));
            args.push(Value::Text(value.clone()));
        }
        if let Some(after) = &filter.after {
            sql.push_str(" AND (provider, server_id, user_id, token_type) > (?, ?, ?, ?)");
            for field in [
                after.provider(),
                after.server_id(),
                after.user_id(),
                after.token_type(),
            ] {
                args.push(Value::Text(field.to_owned()));
            }
        }
        sql.push_str(" ORDER BY provider, server_id, user_id, token_type LIMIT ?");
        args.push(Value::Integer(i64::from(filter.limit)));
        let rows = self
            .inner
            .readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(args.iter()), Row::from_sqlite)?;
                rows.collect::<rusqlite::Result<Vec<Row>>>()
            })
            .await?;
        rows.into_iter().map(Row::metadata).collect()
    }
}

/// A clean shutdown removes both `-wal` and `-shm`; a crash leaves both.
/// A `-shm` without its `-wal` means the write-ahead log was deleted after a
/// crash, taking the writes acknowledged since the last checkpoint with it.
/// Opening anyway would serve an older store as if nothing happened, so
/// start-up stops and says so.
/// SQLite's SQLITE_READONLY; extended codes keep it in the low byte.
const SQLITE_READONLY: i64 = 8;

/// Why the database at `path` could not be opened. A read-only database
/// (its file, its directory, or the file system) is said in those words,
/// with the path and the fix; SQLite alone says only "attempt to write a
/// readonly database".
fn open_refused(path: &Path, error: StoreError) -> StartError {
    let sqlx_error = match &error {
        StoreError::Database(e) => Some(e),
        StoreError::Migrate(
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
        ) => Some(e),
        _ => None,
    };
    let read_only = sqlx_error
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_READONLY);
    if !read_only {
        return error.into();
    }
    read_only_error(path, &format!("SQLite: {error}"))
}

/// Refuses a database that this process cannot write (checked before
/// SQLite opens it, which would otherwise open it read-only and fail at the
/// first write with "attempt to write a readonly database").
#[cfg(unix)]
fn refuse_read_only(path: &Path) -> Result<(), StartError> {
    use rustix::fs::{Access, access};
    use rustix::io::Errno;
    let dir = path.parent().unwrap_or(Path::new("."));
    for (p, what) in [(path, "the file"), (dir, "its directory")] {
        match access(p, Access::WRITE_OK) {
            Err(e) if e == Errno::ACCESS || e == Errno::PERM || e == Errno::ROFS => {
                let cause = if e == Errno::ROFS {
                    "the file system is mounted read-only".to_owned()
                } else {
                    format!("{what} {} is not writable", p.display())
                };
                return Err(read_only_error(path, &cause));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_read_only(_path: &Path) -> Result<(), StartError> {
    Ok(())
}

fn read_only_error(path: &Path, cause: &str) -> StartError {
    let dir = path.parent().unwrap_or(Path::new("."));
    StartError::Io {
        what: "open the database",
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it is read-only for {who} ({cause}). keyhavend writes to the \
                 database, to its -wal and -shm files beside it and to their directory {dir}: \
                 make them writable by this user (`chmod u+w {dir} {db}`, and check that the \
                 file system is not mounted read-only), or point data_dir (--data-dir, \
                 KEYHAVEN_DATA_DIR) at a writable directory",
                who = this_user(),
                dir = dir.display(),
                db = path.display(),
            ),
        ),
    }
}

#[cfg(unix)]
fn this_user() -> String {
    format!("uid {}", keyhaven_proto::paths::current_uid())
}

#[cfg(not(unix))]
fn this_user() -> String {
    "this user".to_owned()
}

fn refuse_lost_wal(path: &Path) -> Result<(), StartError> {
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let (wal, shm) = (side("-wal"), side("-shm"));
    if path.exists() && shm.exists() && !wal.exists() {
        return Err(StartError::Insecure {
            path: wal,
            reason: format!(
                "the write-ahead log is missing although {} shows the last run did not stop \
                 cleanly: credentials written since the last checkpoint may be lost. Restore \
                 the -wal file if you have it; to accept the loss, delete {} and start again",
                shm.display(),
                shm.display()
            ),
        });
    }
    Ok(())
}

fn bind_key<'q, O>(
    q: sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments>,
    key: &'q CanonicalKey,
) -> sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments> {
    q.bind(key.provider())
        .bind(key.server_id())
        .bind(key.user_id())
        .bind(key.token_type())
}

async fn fetch_meta(
    tx: &mut Transaction<'static, Sqlite>,
    key: &CanonicalKey,
) -> Result<Option<Metadata>, StoreError> {
    let sql = concat!("SELECT ", meta_columns!(), " FROM auth_tokens", by_key!());
    let row: Option<Row> = bind_key(sqlx::query_as(sql), key)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(Row::metadata).transpose()
}

async fn next_revision(tx: &mut Transaction<'static, Sqlite>) -> Result<u64, StoreError> {
    let rev: i64 = sqlx::query_scalar(
        "UPDATE store_meta SET value = value + 1 WHERE name = 'last_revision' RETURNING value",
    )
    .fetch_one(&mut **tx)
    .await?;
    u64::try_from(rev).map_err(|_| StoreError::Corrupt {
        row_id: 0,
        reason: format!("store revision counter is {rev}"),
    })
}

fn revision_to_sql(rev: u64) -> i64 {
    i64::try_from(rev).unwrap_or(i64::MAX)
}
