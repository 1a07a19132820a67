//! The credential store: SQLite, every secret sealed.
//!
//! WAL mode with `synchronous=FULL`, so an acknowledged write survives a
//! crash or power loss. The database is reached through rusqlite only:
//!
//! - every write goes through [`writer`]: one thread owns the only
//!   read-write connection and runs writes one after another (Stores in
//!   groups, one transaction and one fsync per group; deletions, expiry,
//!   rotation, key attachment and audit batches as jobs). No lock between
//!   writers exists because there is only one. Events are published on that
//!   thread right after each commit, so they go out in revision order;
//! - reads go through [`readers`]: read-only connections used on the
//!   request's own thread (a WAL reader never waits for the writer).
//!
//! sqlx serves in one place: [`Database::open`] applies the migrations with
//! `sqlx::migrate!` on a connection of its own, because every store since
//! the first records them in sqlx's `_sqlx_migrations` table. (The CLI also
//! reads Reel's foreign database with sqlx.) The database file is created
//! 0600 before SQLite opens it, so the `-wal` and `-shm` files inherit
//! that mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyhaven_proto::{CanonicalKey, KeyRef, Secret, time::now_unix_ms};
use tokio::sync::oneshot;

use crate::error::StartError;
use crate::fsutil;
use crate::identity::Identity;
use crate::store::cache::{Cached, ReadCache};
use crate::store::crypto::{CryptoError, DataKey, Sealed};
use crate::store::events::{Event, EventBus, EventKind};
use crate::store::readers::{ReadError, Readers};
use crate::store::writer::{WriteError, Writer};

pub mod attributes;
pub mod audit;
pub(crate) mod cache;
pub mod crypto;
pub(crate) mod events;
pub(crate) mod model;
pub(crate) mod readers;
pub(crate) mod writer;

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
    /// SQLite failed while migrating.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The transaction this Store was grouped into failed; nothing of the
    /// group was written.
    #[error("database error: {0}")]
    Group(String),
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The write did not run (the store is closing, or the job failed).
    #[error("database write failed: {0}")]
    Write(#[from] WriteError),
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

struct SealedRow {
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
        // Stored keys may predate a rule (bidi controls): still readable.
        let key = CanonicalKey::from_stored(
            &self.provider,
            &self.server_id,
            &self.user_id,
            &self.token_type,
        )
        .map_err(|e| StoreError::Corrupt {
            row_id: self.id,
            reason: e.to_string(),
        })?;
        self.metadata_of(key)
    }

    /// The metadata of a row already known to be `key`'s.
    fn metadata_of(self, key: CanonicalKey) -> Result<Metadata, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            row_id: self.id,
            reason,
        };
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
/// to clone: clones share the writer thread and the readers.
#[derive(Debug, Clone)]
pub struct Database {
    writer: Writer<PutJob>,
    readers: Arc<Readers>,
    cache: Arc<ReadCache>,
    path: PathBuf,
}

/// The data key in use, swapped by a rotation on the writer thread.
type KeyCell = std::sync::RwLock<Arc<DataKey>>;

/// The store, ready to serve: the database plus its data key and the
/// change feed writes are published on.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    key: Arc<KeyCell>,
    events: EventBus,
}

/// A Store waiting for its group's commit.
struct PutJob {
    put: Put,
    actor: Identity,
    key: Arc<KeyCell>,
    events: EventBus,
    reply: oneshot::Sender<Result<(Metadata, bool), StoreError>>,
}

impl Database {
    /// Opens (creating if needed) the database at `path`, whose directory
    /// must already be private, applies pending migrations, and starts the
    /// writer thread.
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
        let refused = |e: StoreError| open_refused(path, e);
        migrate(path).await.map_err(refused)?;
        let cache = Arc::new(ReadCache::default());
        let invalidated = cache.clone();
        let writer = Writer::start(path, move |conn, jobs| {
            commit_group(conn, jobs, &invalidated)
        })
        .map_err(|e| refused(e.into()))?;
        Ok(Self {
            writer,
            readers: Readers::new(path),
            cache,
            path: path.to_path_buf(),
        })
    }

    /// Runs `job` on the write connection (see [`writer`]).
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.writer.run(job).await?
    }

    /// Runs `read` on a read-only connection (see [`readers`]).
    pub(crate) async fn read<R, F>(&self, read: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        Ok(self.readers.read(read).await?)
    }

    /// The ids of the data keys this store was sealed with; empty for a
    /// store that has never been keyed.
    pub async fn key_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT key_id FROM data_keys ORDER BY created_at")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
    }

    /// The ids of the keys the stored credentials are sealed with (empty
    /// when there are none): any key that opens them must have one of these.
    pub async fn row_key_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT DISTINCT key_id FROM auth_tokens ORDER BY key_id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
    }

    /// Finishes the queued writes and closes every connection, which
    /// checkpoints the WAL.
    pub async fn close(&self) {
        self.readers.close();
        self.writer.close().await;
    }

    /// How many credentials are stored (no key needed).
    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .read(|conn| conn.query_row("SELECT COUNT(*) FROM auth_tokens", [], |r| r.get(0)))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// This store's random id.
    pub async fn store_id(&self) -> Result<String, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT value FROM store_info WHERE name = 'store_id'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Attaches the data key: verifies its check value, or records it when
    /// the store has never seen it and no credential is sealed with another
    /// key. Forgets recorded keys no credential uses any more.
    pub async fn with_key(&self, key: DataKey, events: EventBus) -> Result<Store, StoreError> {
        let key = Arc::new(key);
        let attach = key.clone();
        let cache = self.cache.clone();
        self.write(move |conn| {
            attach_key(conn, &attach)?;
            cache.clear();
            Ok(())
        })
        .await?;
        Ok(Store {
            db: self.clone(),
            key: Arc::new(std::sync::RwLock::new(key)),
            events,
        })
    }
}

/// Applies pending migrations on a connection of their own. This is the
/// one place sqlx still touches the store: `sqlx::migrate!` embeds the
/// migrations and records them in `_sqlx_migrations`, as every store since
/// the first has.
async fn migrate(path: &Path) -> Result<(), StoreError> {
    use sqlx::ConnectOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    MIGRATOR.run(&mut conn).await?;
    sqlx::Connection::close(conn).await?;
    Ok(())
}

/// [`Database::with_key`]'s transaction.
fn attach_key(conn: &mut rusqlite::Connection, key: &DataKey) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let known: Vec<(String, Vec<u8>, Vec<u8>)> = tx
        .prepare("SELECT key_id, check_nonce, check_value FROM data_keys")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let sealed_with: Vec<String> = tx
        .prepare("SELECT DISTINCT key_id FROM auth_tokens")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let is_known = known.iter().any(|(id, _, _)| id == key.id());
    if !is_known && sealed_with.iter().any(|id| id != key.id()) {
        return Err(StoreError::WrongKey {
            expected: sealed_with.join(", "),
            found: key.id().to_owned(),
        });
    }
    if !is_known {
        let check = key.seal_check()?;
        tx.execute(
            "INSERT INTO data_keys (key_id, check_nonce, check_value, created_at) VALUES (?, ?, ?, ?)",
            rusqlite::params![key.id(), check.nonce, check.ciphertext, now_unix_ms()],
        )?;
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
    forget_unused(&tx, key.id())?;
    tx.commit()?;
    Ok(())
}

/// Deletes recorded keys other than `current` that seal no credential.
fn forget_unused(conn: &rusqlite::Connection, current: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM data_keys WHERE key_id != ? \
         AND key_id NOT IN (SELECT DISTINCT key_id FROM auth_tokens)",
        [current],
    )
}

/// The writer's group handler: commits `jobs` in one transaction, then
/// publishes their events in revision order and answers each caller.
/// Runs on the writer thread, so no other write can come between the
/// commit and the events.
fn commit_group(conn: &mut rusqlite::Connection, jobs: Vec<PutJob>, cache: &ReadCache) {
    let Some(first) = jobs.first() else { return };
    let key = first.key.read().unwrap_or_else(|e| e.into_inner()).clone();
    let events = first.events.clone();
    let (replies, puts): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .map(|j| (j.reply, (j.put, j.actor)))
        .unzip();
    let now = now_unix_ms();
    match write_group(conn, &key, puts, now) {
        Ok(outcomes) => {
            cache.invalidate(outcomes.iter().flatten().map(|(meta, _, _)| &meta.key));
            for (outcome, reply) in outcomes.into_iter().zip(replies) {
                if let Ok((meta, created, actor)) = &outcome {
                    events.publish(Event {
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
        &self.db.path
    }

    /// The data key in use.
    pub fn key(&self) -> Arc<DataKey> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-seals every credential under `new_key` in one transaction and
    /// switches to it. Either every row moves to the new key or none does.
    /// Fails, changing nothing, if any row cannot be opened. Runs on the
    /// writer thread, so no Store is sealed with the old key after it.
    pub async fn rotate_to(&self, new_key: DataKey) -> Result<u64, StoreError> {
        let cell = self.key.clone();
        let cache = self.db.cache.clone();
        self.db
            .write(move |conn| {
                let old = cell.read().unwrap_or_else(|e| e.into_inner()).clone();
                let count = reseal(conn, &old, &new_key)?;
                cache.clear();
                crate::fault::point("rotate:after-reseal");
                match cell.write() {
                    Ok(mut k) => *k = Arc::new(new_key),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(new_key),
                }
                Ok(count)
            })
            .await
    }

    /// Forgets recorded keys that neither seal a credential nor are in use.
    pub async fn forget_unused_keys(&self) -> Result<(), StoreError> {
        let current = self.key().id().to_owned();
        self.db
            .write(move |conn| Ok(forget_unused(conn, &current).map(drop)?))
            .await
    }

    /// The event bus writes are published on.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Writes a credential, honouring `expected_revision`, and publishes a
    /// STORED or UPDATED event naming `actor`. Returns once the write is
    /// durable (its group's commit, fsync included, is done).
    ///
    /// Concurrent Stores are committed together: the writer takes every
    /// Store queued while the previous commit ran and writes them in one
    /// transaction, so N waiting callers share one fsync. Each keeps its
    /// own compare-and-swap check, in arrival order.
    pub async fn put(&self, put: Put, actor: &Identity) -> Result<(Metadata, bool), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.db
            .writer
            .item(PutJob {
                put,
                actor: actor.clone(),
                key: self.key.clone(),
                events: self.events.clone(),
                reply,
            })
            .await?;
        answer.await.map_err(|_| WriteError::Panicked)?
    }

    /// Reads and opens a credential. Expired credentials are not returned.
    /// A credential read before comes from the read cache (sealed, as in
    /// the database; see [`cache`]).
    pub async fn get(&self, key: &CanonicalKey) -> Result<(Metadata, Secret), StoreError> {
        let (cached, secret) = self.get_cached(key.view()).await?;
        Ok((cached.meta.clone(), secret))
    }

    /// Like [`Self::get`], with the credential as the read cache holds it
    /// (its metadata is not copied). The key is borrowed: a read the cache
    /// answers copies none of it and waits for nothing.
    pub async fn get_cached(&self, key: KeyRef<'_>) -> Result<(Arc<Cached>, Secret), StoreError> {
        match self.db.cache.get(key) {
            Ok(cached) => self.open_cached(key, cached),
            // The database read, boxed: the future of a cache hit stays small.
            Err(miss) => Box::pin(self.get_uncached(key.to_owned(), miss)).await,
        }
    }

    /// [`Self::get_cached`] if the read cache has the credential: `None`
    /// on a miss.
    pub fn get_now(&self, key: KeyRef<'_>) -> Option<Result<(Arc<Cached>, Secret), StoreError>> {
        let cached = self.db.cache.get(key).ok()?;
        Some(self.open_cached(key, cached))
    }

    /// A cache miss: the row from the database, then into the cache.
    async fn get_uncached(
        &self,
        key: CanonicalKey,
        miss: cache::Miss,
    ) -> Result<(Arc<Cached>, Secret), StoreError> {
        let Some(cached) = self.read_sealed(&key).await? else {
            return Err(StoreError::NotFound {
                key,
                expired: false,
            });
        };
        let cached = Arc::new(cached);
        self.db.cache.insert(key.clone(), cached.clone(), miss);
        self.open_cached(key.view(), cached)
    }

    /// Opens a stored credential, unless it has expired.
    fn open_cached(
        &self,
        key: KeyRef<'_>,
        cached: Arc<Cached>,
    ) -> Result<(Arc<Cached>, Secret), StoreError> {
        let Cached {
            meta,
            sealed,
            key_id,
            ..
        } = &*cached;
        if meta.expires_at.is_some_and(|t| t <= now_unix_ms()) {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
                expired: true,
            });
        }
        let data_key = self.key();
        if key_id != data_key.id() {
            return Err(StoreError::Unsealable {
                key: key.to_owned(),
                reason: CryptoError::Open,
            });
        }
        let secret = data_key
            .open(key, sealed)
            .map_err(|reason| StoreError::Unsealable {
                key: key.to_owned(),
                reason,
            })?;
        Ok((cached, secret))
    }

    /// The row of `key`, sealed, from the database.
    async fn read_sealed(&self, key: &CanonicalKey) -> Result<Option<Cached>, StoreError> {
        let sql = concat!(
            "SELECT ",
            meta_columns!(),
            ", ciphertext, nonce, key_id FROM auth_tokens",
            by_key!()
        );
        let k = key.clone();
        let row = self
            .db
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
        let Some(row) = row else { return Ok(None) };
        // The row was found by this key: no need to parse its key fields.
        Ok(Some(Cached {
            key: Arc::new(key.clone()),
            meta: row.row.metadata_of(key.clone())?,
            sealed: Sealed {
                nonce: row.nonce,
                ciphertext: row.ciphertext,
            },
            key_id: row.key_id,
            encoded_metadata: Default::default(),
        }))
    }

    /// Deletes a credential, honouring `expected_revision`, and publishes a
    /// DELETED event. Returns the metadata it had.
    pub async fn delete(
        &self,
        key: &CanonicalKey,
        expected_revision: Option<u64>,
        actor: &Identity,
    ) -> Result<Metadata, StoreError> {
        let (key, actor, events) = (key.clone(), actor.clone(), self.events.clone());
        let cache = self.db.cache.clone();
        self.db
            .write(move |conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let Some(meta) = fetch_meta(&tx, &key)? else {
                    return Err(StoreError::NotFound {
                        key,
                        expired: false,
                    });
                };
                if let Some(expected) = expected_revision
                    && expected != meta.revision
                {
                    return Err(StoreError::Conflict {
                        key,
                        expected,
                        actual: Some(meta.revision),
                    });
                }
                remove_and_publish(
                    tx,
                    vec![meta.clone()],
                    &cache,
                    &events,
                    EventKind::Deleted,
                    Some(actor),
                )?;
                Ok(meta)
            })
            .await
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
        let (provider, server_id) = (provider.to_owned(), server_id.to_owned());
        let user_id = user_id.map(str::to_owned);
        let (actor, events) = (actor.clone(), self.events.clone());
        let cache = self.db.cache.clone();
        self.db
            .write(move |conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let sql = concat!(
                    "SELECT ",
                    meta_columns!(),
                    " FROM auth_tokens WHERE provider = ?1 AND server_id = ?2 \
                     AND (?3 IS NULL OR user_id = ?3) ORDER BY user_id, token_type"
                );
                let rows = tx
                    .prepare_cached(sql)?
                    .query_map((&provider, &server_id, &user_id), Row::from_sqlite)?
                    .collect::<rusqlite::Result<Vec<Row>>>()?
                    .into_iter()
                    .map(Row::metadata)
                    .collect::<Result<_, _>>()?;
                remove_and_publish(tx, rows, &cache, &events, EventKind::Deleted, Some(actor))
            })
            .await
    }

    /// Removes every credential whose `expires_at` has passed, publishing an
    /// EXPIRED event for each. Returns how many were removed.
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        let events = self.events.clone();
        let cache = self.db.cache.clone();
        self.db
            .write(move |conn| {
                let now = now_unix_ms();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let sql = concat!(
                    "SELECT ",
                    meta_columns!(),
                    " FROM auth_tokens WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1000"
                );
                let rows = tx
                    .prepare_cached(sql)?
                    .query_map([now], Row::from_sqlite)?
                    .collect::<rusqlite::Result<Vec<Row>>>()?
                    .into_iter()
                    .map(Row::metadata)
                    .collect::<Result<_, _>>()?;
                let removed =
                    remove_and_publish(tx, rows, &cache, &events, EventKind::Expired, None)?;
                Ok(removed.len())
            })
            .await
    }

    /// The store's latest revision and every credential matching `filter`,
    /// read in one transaction: a consistent snapshot for `Watch`.
    pub async fn snapshot(&self, filter: &ListFilter) -> Result<(u64, Vec<Metadata>), StoreError> {
        let f = filter.clone();
        let (last, rows) = self
            .db
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let last: i64 = tx.query_row(
                    "SELECT value FROM store_meta WHERE name = 'last_revision'",
                    [],
                    |r| r.get(0),
                )?;
                let sql = concat!(
                    "SELECT ",
                    meta_columns!(),
                    " FROM auth_tokens \
                     WHERE (?1 IS NULL OR provider = ?1) AND (?2 IS NULL OR server_id = ?2) \
                     AND (?3 IS NULL OR user_id = ?3) \
                     ORDER BY provider, server_id, user_id, token_type"
                );
                let rows = tx
                    .prepare_cached(sql)?
                    .query_map((&f.provider, &f.server_id, &f.user_id), Row::from_sqlite)?
                    .collect::<rusqlite::Result<Vec<Row>>>()?;
                tx.commit()?;
                Ok((last, rows))
            })
            .await?;
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
            .db
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
        .is_some_and(|code| code & 0xff == SQLITE_READONLY)
        || matches!(
            &error,
            StoreError::Write(WriteError::Open(e)) | StoreError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly)
        );
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

/// Re-seals every row from `old` to `new_key` in one transaction and
/// records `new_key`; returns how many rows moved.
fn reseal(
    conn: &mut rusqlite::Connection,
    old: &DataKey,
    new_key: &DataKey,
) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let check = new_key.seal_check()?;
    tx.execute(
        "INSERT OR REPLACE INTO data_keys (key_id, check_nonce, check_value, created_at) \
         VALUES (?, ?, ?, ?)",
        rusqlite::params![new_key.id(), check.nonce, check.ciphertext, now_unix_ms()],
    )?;
    let sql = concat!(
        "SELECT ",
        meta_columns!(),
        ", ciphertext, nonce, key_id FROM auth_tokens"
    );
    let rows = tx
        .prepare(sql)?
        .query_map([], SealedRow::from_sqlite)?
        .collect::<rusqlite::Result<Vec<SealedRow>>>()?;
    let count = rows.len() as u64;
    {
        let mut update = tx.prepare_cached(
            "UPDATE auth_tokens SET ciphertext = ?, nonce = ?, key_id = ? WHERE id = ?",
        )?;
        for row in rows {
            let id = row.row.id;
            let meta = row.row.metadata()?;
            let sealed = Sealed {
                nonce: row.nonce,
                ciphertext: row.ciphertext,
            };
            let secret = if row.key_id == old.id() {
                old.open(meta.key.view(), &sealed)
            } else {
                Err(CryptoError::Open)
            }
            .map_err(|reason| StoreError::Unsealable {
                key: meta.key.clone(),
                reason,
            })?;
            let resealed = new_key.seal(&meta.key, secret.expose())?;
            update.execute(rusqlite::params![
                resealed.ciphertext,
                resealed.nonce,
                new_key.id(),
                id
            ])?;
        }
    }
    tx.commit()?;
    Ok(count)
}

/// Deletes `rows` inside `tx`, each consuming a revision (so revisions
/// order every change), commits, and publishes one `kind` event per row.
/// Returns the rows with the revision each deletion consumed.
fn remove_and_publish(
    tx: rusqlite::Transaction<'_>,
    rows: Vec<Metadata>,
    cache: &ReadCache,
    events: &EventBus,
    kind: EventKind,
    actor: Option<Identity>,
) -> Result<Vec<Metadata>, StoreError> {
    let mut removed = Vec::with_capacity(rows.len());
    for meta in rows {
        let k = &meta.key;
        tx.prepare_cached(concat!("DELETE FROM auth_tokens", by_key!()))?
            .execute((k.provider(), k.server_id(), k.user_id(), k.token_type()))?;
        let revision = next_revision(&tx)?;
        removed.push(Metadata { revision, ..meta });
    }
    tx.commit()?;
    cache.invalidate(removed.iter().map(|m| &m.key));
    let now = now_unix_ms();
    for meta in &removed {
        events.publish(Event {
            kind,
            metadata: meta.clone(),
            time: now,
            actor: actor.clone(),
        });
    }
    Ok(removed)
}

fn fetch_meta(
    conn: &rusqlite::Connection,
    key: &CanonicalKey,
) -> Result<Option<Metadata>, StoreError> {
    use rusqlite::OptionalExtension;
    let sql = concat!("SELECT ", meta_columns!(), " FROM auth_tokens", by_key!());
    conn.prepare_cached(sql)?
        .query_row(
            (
                key.provider(),
                key.server_id(),
                key.user_id(),
                key.token_type(),
            ),
            Row::from_sqlite,
        )
        .optional()?
        .map(Row::metadata)
        .transpose()
}

fn next_revision(conn: &rusqlite::Connection) -> Result<u64, StoreError> {
    let rev: i64 = conn.query_row(
        "UPDATE store_meta SET value = value + 1 WHERE name = 'last_revision' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    u64::try_from(rev).map_err(|_| StoreError::Corrupt {
        row_id: 0,
        reason: format!("store revision counter is {rev}"),
    })
}

fn revision_to_sql(rev: u64) -> i64 {
    i64::try_from(rev).unwrap_or(i64::MAX)
}
