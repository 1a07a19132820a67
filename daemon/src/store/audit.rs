//! The audit log: every Retrieve, Store, Delete, Logout, List, Watch, every
//! admin action and every refusal, with time, caller, key and outcome, in
//! the store's `audit_log` table. Never a secret.
//!
//! The rule: a request is answered only after its record is in the queue
//! (or, for a successful read, counted in its connection's read slot,
//! which the writer empties into every batch: [`ReadSlots`]), and the
//! queue never drops a record. Requests hand records to a bounded
//! queue and wait only when it is full (back-pressure: a flood of cheap
//! calls slows the flood, it does not push other records out). One
//! background task writes them in batches (one transaction each), so
//! auditing adds no fsync to a Retrieve. A batch lingers up to [`LINGER`]
//! for company, so under any load the log costs at most one commit per
//! interval instead of one per request; a crash loses at most that interval
//! of audit records, never a credential write. If a batch cannot be written
//! (disk full, I/O error) the writer keeps it and retries, and until it is
//! written every audited request is refused UNAVAILABLE rather than served
//! unrecorded. [`AuditLog::flush`] waits until everything queued before it
//! is written, so a query sees the caller's own recent actions.
//!
//! Storage: a row per record, except that the successful reads a caller
//! makes in one batch are one row listing each credential read ([`Row`]),
//! which [`AuditLog::query`] returns as an entry each.
//!
//! Retention: entries older than `max_age` are pruned by the maintenance
//! task. `max_entries` never removes an entry younger than `max_age`: past
//! it the log keeps growing and a WARN says so, so no read can be pushed
//! out of the log by a flood of newer records.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use keyhaven_proto::time::now_unix_ms;
use keyhaven_proto::{CanonicalKey, KeyRef};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::identity::Identity;
use crate::store::{Database, StoreError};

/// Records waiting to be written before new ones are dropped.
const QUEUE: usize = 8192;
/// Most records written in one transaction: half the queue, which is
/// when a lingering batch is woken early. Under load a batch is then one
/// linger interval of records, so the repeated reads in it fold into one
/// record each (at 40,000 reads a second of 1,000 credentials, about four
/// reads to a record) and the log costs one commit per interval.
const BATCH: usize = QUEUE / 2;
/// How long the first record of a batch waits for more before the batch is
/// written. A flush (an audit query, shutdown) writes at once.
pub const LINGER: Duration = Duration::from_millis(100);
/// Records per INSERT statement, largest first ([`COLUMNS`] bound values
/// each, far below SQLite's limit on variables); the last must be 1.
const ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];
/// Slots for the reads not yet queued ([`ReadSlots`]); a connection uses
/// the slot of its number, so up to this many connections polling at once
/// each keep their own.
const READ_SLOTS: usize = 64;

/// What a caller did (or tried), as recorded in the audit log. The text
/// form is what `Audit.Query` returns and the CLI shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Credentials.Store.
    Store,
    /// Credentials.Retrieve.
    Retrieve,
    /// Credentials.Delete.
    Delete,
    /// Credentials.List.
    List,
    /// Credentials.Watch.
    Watch,
    /// Credentials.Logout, and each credential it removed.
    Logout,
    /// Daemon.RotateKey.
    RotateKey,
    /// Daemon.MoveKey.
    MoveKey,
    /// Daemon.Backup.
    Backup,
    /// Daemon.Export, and each credential it exported.
    Export,
    /// Daemon.Restore, and each credential it wrote.
    Restore,
    /// Audit.Query.
    AuditQuery,
    /// A connection refused before any request (another uid, too many).
    Connect,
    /// A legacy keyring entry migrated by the read-through.
    Migrate,
}

impl Operation {
    /// The name stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Retrieve => "retrieve",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Logout => "logout",
            Self::RotateKey => "rotate-key",
            Self::MoveKey => "move-key",
            Self::Backup => "backup",
            Self::Export => "export",
            Self::Restore => "restore",
            Self::AuditQuery => "audit-query",
            Self::Connect => "connect",
            Self::Migrate => "migrate",
        }
    }

    /// True for the requests that change credentials one by one (their
    /// success is logged with the caller).
    pub fn is_write(self) -> bool {
        matches!(self, Self::Store | Self::Delete | Self::Logout)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened.
#[derive(Debug, Clone)]
pub struct Record {
    /// Unix ms.
    pub at: i64,
    /// Who.
    pub caller: Identity,
    /// `retrieve`, `store`, `delete`, `logout`, `list`, `watch`, `connect`.
    pub operation: Operation,
    /// Which credential, when the operation has one. Shared: a read takes
    /// the read cache's copy of the key instead of making one.
    pub key: Option<Arc<CanonicalKey>>,
    /// `OK` or the gRPC code name of the refusal.
    pub outcome: &'static str,
    /// Why, for refusals. Never a secret.
    pub detail: String,
    /// How many requests the record stands for: 1, or more for the
    /// successful reads of one credential by one caller folded into it.
    pub reads: u64,
    /// Unix ms of the last of those requests (`at` is the first).
    pub last_at: i64,
}

impl Record {
    /// A record of one request at `at`.
    pub fn new(
        at: i64,
        caller: Identity,
        operation: Operation,
        key: Option<CanonicalKey>,
        outcome: &'static str,
        detail: String,
    ) -> Self {
        Self {
            at,
            caller,
            operation,
            key: key.map(Arc::new),
            outcome,
            detail,
            reads: 1,
            last_at: at,
        }
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Row id; newer entries have larger ids.
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// Caller uid.
    pub uid: u32,
    /// Caller pid.
    pub pid: i32,
    /// Caller executable ('' when unknown).
    pub executable: String,
    /// Caller sandbox app id ('' when none).
    pub app_id: String,
    /// The operation.
    pub operation: String,
    /// The key, when there was one.
    pub key: Option<CanonicalKey>,
    /// `OK` or a gRPC code name.
    pub outcome: String,
    /// Explanation.
    pub detail: String,
}

/// What to select, newest first.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact key.
    pub key: Option<CanonicalKey>,
    /// Substring of the executable or app id.
    pub program: Option<String>,
    /// At or after (Unix ms).
    pub since: Option<i64>,
    /// Before (Unix ms).
    pub until: Option<i64>,
    /// Only ids below this (pagination).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Retention limits.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Keep at most this many entries.
    pub max_entries: u64,
    /// Keep entries at most this old.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

enum Message {
    Record(Record),
    /// A read slot was empty and now holds a read: the writer must write a
    /// batch (which empties the slots) within [`LINGER`].
    Nudge,
    Flush(oneshot::Sender<()>),
}

/// The successful reads of one credential by one connection that are not
/// yet in the queue, as one record counting them.
#[derive(Debug)]
struct Pending {
    conn: u64,
    record: Record,
}

impl Pending {
    /// True when these are reads of `key` by `caller` on connection `conn`.
    fn holds(&self, conn: u64, caller: &Identity, key: KeyRef<'_>) -> bool {
        self.conn == conn
            && self.record.key.as_deref().is_some_and(|k| key == *k)
            && self.record.caller == *caller
    }
}

/// The reads not yet queued, one slot per connection number (modulo
/// [`READ_SLOTS`]). A successful Retrieve of the credential its slot
/// already holds for its connection only counts itself there: no record
/// is built, queued or folded, which is what an app polling its token
/// costs. Any other read displaces the slot's reads into the queue.
///
/// The slots are part of the queue: the writer empties every slot into
/// each batch it writes (a read that fills an empty slot nudges it, so
/// that is within [`LINGER`]), a flush writes them, and so does the
/// writer's last batch when the daemon stops. A read counted in a slot is
/// as recorded as one in the queue: both are in memory until the batch is
/// committed.
#[derive(Debug)]
struct ReadSlots(Box<[std::sync::Mutex<Option<Pending>>]>);

impl ReadSlots {
    fn new() -> Self {
        Self((0..READ_SLOTS).map(|_| Default::default()).collect())
    }

    fn slot(&self, conn: u64) -> std::sync::MutexGuard<'_, Option<Pending>> {
        let i = usize::try_from(conn % READ_SLOTS as u64).unwrap_or(0);
        // A panic while a slot was held cannot leave it half-written: every
        // change is one assignment.
        self.0[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves every slot's reads into `batch`.
    fn drain_into(&self, batch: &mut Vec<Record>) {
        for conn in 0..READ_SLOTS as u64 {
            if let Some(pending) = self.slot(conn).take() {
                batch.push(pending.record);
            }
        }
    }
}

/// Handle for recording and querying; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
    /// Wakes the lingering writer early: on a flush, or when the queue is
    /// half full.
    wake: Arc<Notify>,
    /// Set while the writer cannot write its batch; requests are refused.
    failing: Arc<AtomicBool>,
    /// Successful reads counted but not yet queued.
    reads: Arc<ReadSlots>,
    store: Database,
}

/// The audit log cannot take the record, so the request is not served.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the audit log cannot be written (see keyhavend's log); requests are refused until it can, \
     so that nothing is served unrecorded"
)]
pub struct AuditUnavailable;

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Record(r) => write!(f, "Record({})", r.operation),
            Self::Nudge => f.write_str("Nudge"),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditLog {
    /// Starts the writer task. It ends when every handle is dropped.
    pub fn start(store: Database) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        let failing = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(ReadSlots::new());
        tokio::spawn(writer(
            store.clone(),
            rx,
            wake.clone(),
            failing.clone(),
            reads.clone(),
        ));
        Self {
            tx,
            wake,
            failing,
            reads,
            store,
        }
    }

    /// True while a batch cannot be written (requests are refused).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Queues a record, waiting for room when the queue is full. Fails
    /// while the log cannot be written, or once the writer is gone.
    pub async fn record(&self, record: Record) -> Result<(), AuditUnavailable> {
        if self.failing.load(Ordering::Acquire) {
            return Err(AuditUnavailable);
        }
        self.send(Message::Record(record)).await
    }

    /// Records a successful read of `key` by `caller` on connection
    /// `conn`: counted in the connection's slot when that holds reads of
    /// the same credential, otherwise put there, displacing the slot's
    /// reads into the queue (see [`ReadSlots`]). `shared` is as for
    /// [`Self::try_read`]. Fails like [`Self::record`].
    pub async fn read(
        &self,
        conn: u64,
        caller: &Identity,
        key: KeyRef<'_>,
        shared: Option<&Arc<CanonicalKey>>,
    ) -> Result<(), AuditUnavailable> {
        match self.try_read(conn, caller, key, shared) {
            Some(done) => done,
            // The wait for room, boxed: the future of a read that needs no
            // room stays small.
            None => Box::pin(self.read_when_room(conn, caller, key, now_unix_ms())).await,
        }
    }

    /// [`Self::read`] if it needs no wait: `None`, with nothing recorded,
    /// when the queue has no room. `shared` is a copy of the key the
    /// record may keep (the read cache's), so that none is made.
    pub fn try_read(
        &self,
        conn: u64,
        caller: &Identity,
        key: KeyRef<'_>,
        shared: Option<&Arc<CanonicalKey>>,
    ) -> Option<Result<(), AuditUnavailable>> {
        if self.failing.load(Ordering::Acquire) {
            return Some(Err(AuditUnavailable));
        }
        self.place(conn, caller, key, shared, now_unix_ms(), None)
    }

    /// [`Self::read`] when the queue is full. Room is taken before a read
    /// leaves its slot, so a request cancelled while it waits loses no
    /// record.
    async fn read_when_room(
        &self,
        conn: u64,
        caller: &Identity,
        key: KeyRef<'_>,
        now: i64,
    ) -> Result<(), AuditUnavailable> {
        loop {
            self.wake.notify_one();
            let room = self.tx.reserve().await.map_err(|_| AuditUnavailable)?;
            if let Some(done) = self.place(conn, caller, key, None, now, Some(room)) {
                return done;
            }
        }
    }

    /// Counts the read in its slot, or puts it there and queues what it
    /// displaced, with `room` or room found without waiting. `None` when
    /// the queue has no room.
    fn place(
        &self,
        conn: u64,
        caller: &Identity,
        key: KeyRef<'_>,
        shared: Option<&Arc<CanonicalKey>>,
        now: i64,
        room: Option<mpsc::Permit<'_, Message>>,
    ) -> Option<Result<(), AuditUnavailable>> {
        let mut slot = self.reads.slot(conn);
        if let Some(p) = slot.as_mut().filter(|p| p.holds(conn, caller, key)) {
            p.record.reads += 1;
            p.record.last_at = now;
            return Some(Ok(()));
        }
        let permit = match room {
            Some(permit) => permit,
            None => match self.tx.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Closed(())) => return Some(Err(AuditUnavailable)),
                Err(mpsc::error::TrySendError::Full(())) => return None,
            },
        };
        let mut record = Record::new(
            now,
            caller.clone(),
            Operation::Retrieve,
            None,
            "OK",
            String::new(),
        );
        record.key = Some(match shared {
            Some(shared) if key == **shared => shared.clone(),
            _ => Arc::new(key.to_owned()),
        });
        let displaced = slot.replace(Pending { conn, record });
        drop(slot);
        Some(self.sent(permit, displaced))
    }

    /// Sends what a read displaced from its slot (or, when the slot was
    /// empty, a nudge) with room already taken. Both reads are accounted
    /// for by now, so this is not refused when the log has just started
    /// failing: the queue keeps them until they can be written.
    fn sent(
        &self,
        permit: mpsc::Permit<'_, Message>,
        displaced: Option<Pending>,
    ) -> Result<(), AuditUnavailable> {
        permit.send(displaced.map_or(Message::Nudge, |p| Message::Record(p.record)));
        if self.tx.capacity() < QUEUE / 2 {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Puts a message in the queue, waiting for room when it is full. Fails
    /// only once the writer is gone.
    async fn send(&self, message: Message) -> Result<(), AuditUnavailable> {
        let sent = match self.tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.wake.notify_one();
                self.tx.send(message).await.map_err(|_| AuditUnavailable)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditUnavailable),
        };
        if self.tx.capacity() < QUEUE / 2 {
            self.wake.notify_one();
        }
        sent
    }

    /// Records the outcome of a request on connection `conn`: a successful
    /// read through [`Self::read`]; anything else is queued after the
    /// reads the connection's slot holds, so that a connection's records
    /// are in the order it made its requests.
    pub async fn request(
        &self,
        conn: u64,
        caller: &Identity,
        operation: Operation,
        key: Option<CanonicalKey>,
        status: Option<&tonic::Status>,
    ) -> Result<(), AuditUnavailable> {
        match (operation, key, status) {
            (Operation::Retrieve, Some(key), None) => {
                self.read(conn, caller, key.view(), None).await
            }
            (operation, key, status) => {
                let holds = |s: &Option<Pending>| s.as_ref().is_some_and(|p| p.conn == conn);
                if holds(&self.reads.slot(conn)) {
                    // Room first, so a cancelled request loses no read;
                    // accounted reads are queued even while the log fails.
                    let permit = self.tx.reserve().await.map_err(|_| AuditUnavailable)?;
                    let mut slot = self.reads.slot(conn);
                    if holds(&slot) {
                        let displaced = slot.take();
                        drop(slot);
                        self.sent(permit, displaced)?;
                    }
                }
                self.outcome(caller, operation, key, status).await
            }
        }
    }

    /// Records a request's outcome.
    pub async fn outcome(
        &self,
        caller: &Identity,
        operation: Operation,
        key: Option<CanonicalKey>,
        status: Option<&tonic::Status>,
    ) -> Result<(), AuditUnavailable> {
        let (outcome, detail) = match status {
            None => ("OK", String::new()),
            Some(s) => (code_name(s.code()), s.message().to_owned()),
        };
        self.record(Record::new(
            now_unix_ms(),
            caller.clone(),
            operation,
            key,
            outcome,
            detail,
        ))
        .await
    }

    /// Waits until every record queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            self.wake.notify_one();
            let _ = rx.await;
        }
    }

    /// Entries matching `filter`, newest first. A group row (the reads of
    /// one caller in one batch, see [`Row`]) is one entry per credential
    /// it lists.
    pub async fn query(&self, filter: &Filter) -> Result<Vec<Entry>, StoreError> {
        let mut escaped = None;
        if let Some(p) = &filter.program {
            escaped = Some(format!(
                "%{}%",
                p.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            ));
        }
        let filter = Filter {
            program: escaped,
            ..filter.clone()
        };
        self.store
            .read(move |conn| query_entries(conn, &filter))
            .await
    }

    /// Deletes entries older than the retention age; returns how many.
    /// Beyond `max_entries` nothing younger is deleted: a WARN says the log
    /// is over its size and why.
    pub async fn prune(&self, retention: Retention) -> Result<u64, StoreError> {
        let cutoff =
            now_unix_ms() - i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let (by_age, kept) = self
            .store
            .write(move |conn| {
                // A group goes when its last read is older than the cutoff
                // (the time index finds the candidates by their first).
                let deleted: Vec<i64> = conn
                    .prepare_cached(
                        "DELETE FROM audit_log WHERE at < ?1 AND COALESCE(last_at, at) < ?1 \
                         RETURNING entries",
                    )?
                    .query_map([cutoff], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let kept: i64 =
                    conn.query_row("SELECT COALESCE(SUM(entries), 0) FROM audit_log", [], |r| {
                        r.get(0)
                    })?;
                let by_age = deleted
                    .iter()
                    .map(|&n| u64::try_from(n).unwrap_or(0))
                    .sum::<u64>();
                Ok((by_age, kept))
            })
            .await?;
        if u64::try_from(kept).unwrap_or(0) > retention.max_entries {
            tracing::warn!(
                entries = kept,
                audit_max_entries = retention.max_entries,
                audit_max_age_days = retention.max_age.as_secs() / 86_400,
                "the audit log holds more entries than audit_max_entries, all younger than \
                 audit_max_age_days; none is deleted early, so no request goes unrecorded \
                 (lower audit_max_age_days or raise audit_max_entries)"
            );
        }
        Ok(by_age)
    }
}

struct EntryRow {
    id: i64,
    at: i64,
    uid: i64,
    pid: i64,
    executable: String,
    app_id: String,
    operation: String,
    provider: Option<String>,
    server_id: Option<String>,
    user_id: Option<String>,
    token_type: Option<String>,
    outcome: String,
    detail: String,
}

impl EntryRow {
    fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            at: r.get(1)?,
            uid: r.get(2)?,
            pid: r.get(3)?,
            executable: r.get(4)?,
            app_id: r.get(5)?,
            operation: r.get(6)?,
            provider: r.get(7)?,
            server_id: r.get(8)?,
            user_id: r.get(9)?,
            token_type: r.get(10)?,
            outcome: r.get(11)?,
            detail: r.get(12)?,
        })
    }

    fn into_entry(self) -> Entry {
        let key = match (
            &self.provider,
            &self.server_id,
            &self.user_id,
            &self.token_type,
        ) {
            (Some(p), Some(s), Some(u), Some(t)) => CanonicalKey::from_stored(p, s, u, t).ok(),
            _ => None,
        };
        Entry {
            id: self.id,
            at: self.at,
            uid: u32::try_from(self.uid).unwrap_or(u32::MAX),
            pid: i32::try_from(self.pid).unwrap_or(0),
            executable: self.executable,
            app_id: self.app_id,
            operation: self.operation,
            key,
            outcome: self.outcome,
            detail: self.detail,
        }
    }
}

/// Sleeps until a record arrives, lets it linger (only the first record of
/// a batch wakes this task, so a request costs no wake-up), then writes
/// everything queued and every read slot, `BATCH` records per
/// transaction, and answers the flushes that were waiting. When the last
/// handle is gone, writes what the slots still hold.
async fn writer(
    store: Database,
    mut rx: mpsc::Receiver<Message>,
    wake: Arc<Notify>,
    failing: Arc<AtomicBool>,
    reads: Arc<ReadSlots>,
) {
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    let mut keys = KeyJson::default();
    while let Some(first) = rx.recv().await {
        if !matches!(first, Message::Flush(_)) {
            tokio::select! {
                () = tokio::time::sleep_until(Instant::now() + LINGER) => {}
                () = wake.notified() => {}
            }
        }
        let mut next = Some(first);
        let mut drained = false;
        loop {
            while let Some(msg) = next {
                match msg {
                    Message::Record(r) => batch.push(r),
                    Message::Nudge => {}
                    Message::Flush(ack) => waiting.push(ack),
                }
                if batch.len() == BATCH {
                    write_until_done(&store, &mut batch, &failing, &mut keys).await;
                }
                next = rx.try_recv().ok();
            }
            if drained {
                break;
            }
            // The slots, then what was queued meanwhile: a record queued
            // before a read that this takes from a slot is in the channel
            // by now, so the batch has it too.
            reads.drain_into(&mut batch);
            drained = true;
            next = rx.try_recv().ok();
        }
        write_until_done(&store, &mut batch, &failing, &mut keys).await;
        for ack in waiting.drain(..) {
            let _ = ack.send(());
        }
    }
    reads.drain_into(&mut batch);
    write_until_done(&store, &mut batch, &failing, &mut keys).await;
}

/// What a batch writes: a row per record, except for successful reads,
/// which are grouped: one row holds the reads one caller made in the
/// batch (which spans at most [`LINGER`]), up to that caller's next other
/// record, so that a connection's records stay in the order of its
/// requests. In a group, the reads of one credential (that share the read
/// cache's copy of its key, as reads the cache answers do) are folded into
/// one element, which says how many reads it stands for and when the last
/// was: `keyhaven audit` still shows every credential read, by whom and
/// when, and a read of another credential costs an element of a row, not
/// a row (migration `20261202000003_audit_read_groups.sql`).
#[derive(Debug)]
enum Row {
    One(Record),
    /// Successful reads of one caller, in the order of their first read,
    /// and their `reads` column (filled in by [`write_until_done`]).
    Reads(Vec<Record>, String),
}

impl Row {
    /// How many entries (and ids) the row takes.
    fn entries(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Reads(reads, _) => reads.len(),
        }
    }
}

/// Groups the successful reads in `batch` (in time order) into [`Row`]s.
fn group_reads(batch: Vec<Record>) -> Vec<Row> {
    use std::collections::HashMap;
    use std::hash::BuildHasher;
    fn foldable(r: &Record) -> bool {
        r.operation == Operation::Retrieve
            && r.key.is_some()
            && r.outcome == "OK"
            && r.detail.is_empty()
    }
    /// The same identity, strings and all (not only equal ones).
    fn same_strings(a: &Identity, b: &Identity) -> bool {
        fn same(x: &Option<Arc<str>>, y: &Option<Arc<str>>) -> bool {
            match (x, y) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            }
        }
        a.uid == b.uid
            && a.pid == b.pid
            && same(&a.executable, &b.executable)
            && same(&a.app_id, &b.app_id)
    }
    fn same_caller(a: &Record, b: &Record) -> bool {
        let (x, y) = (&a.caller, &b.caller);
        x.uid == y.uid && x.pid == y.pid && x.executable == y.executable && x.app_id == y.app_id
    }
    // Each record hashed once (foldhash, seeded per batch). Two callers or
    // credentials whose hashes collide only get a row or an element each.
    let state = foldhash::fast::RandomState::default();
    // The row each caller's reads go to, while it takes more.
    let mut open: HashMap<u64, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(batch.len(), state.clone());
    // Where each credential's reads are in their caller's open row.
    let mut elements: HashMap<u64, (usize, usize), foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(batch.len(), state.clone());
    let mut rows: Vec<Row> = Vec::with_capacity(batch.len());
    // The last caller hashed: a connection's records share its identity's
    // strings, so a run of them is hashed once.
    let mut last: Option<(Identity, u64)> = None;
    for record in batch {
        let c = &record.caller;
        let caller = match &last {
            Some((seen, hash)) if same_strings(seen, c) => *hash,
            _ => {
                let hash = state.hash_one((c.uid, c.pid, &c.executable, &c.app_id));
                last = Some((c.clone(), hash));
                hash
            }
        };
        let row = open.get(&caller).copied().filter(|&i| match &rows[i] {
            Row::Reads(reads, _) => same_caller(&reads[0], &record),
            Row::One(_) => false,
        });
        if !foldable(&record) {
            if row.is_some() {
                open.remove(&caller);
            }
            rows.push(Row::One(record));
            continue;
        }
        // By the address of the key: reads of a credential share the read
        // cache's copy, so this folds them without hashing four strings; a
        // read with a copy of its own gets an element of its own.
        let element = state.hash_one((caller, record.key.as_ref().map(Arc::as_ptr)));
        let Some(i) = row else {
            open.insert(caller, rows.len());
            elements.insert(element, (rows.len(), 0));
            rows.push(Row::Reads(vec![record], String::new()));
            continue;
        };
        let Row::Reads(reads, _) = &mut rows[i] else {
            unreachable!("open rows are groups")
        };
        match elements.get(&element) {
            Some(&(row, at)) if row == i && reads[at].key == record.key => {
                let first = &mut reads[at];
                first.reads += record.reads;
                first.at = first.at.min(record.at);
                first.last_at = first.last_at.max(record.last_at);
            }
            _ => {
                elements.insert(element, (i, reads.len()));
                reads.push(record);
            }
        }
    }
    rows
}

/// Writes the batch, retrying (and refusing audited requests meanwhile)
/// until it is in the log. A record is never thrown away.
async fn write_until_done(
    store: &Database,
    batch: &mut Vec<Record>,
    failing: &AtomicBool,
    keys: &mut KeyJson,
) {
    if batch.is_empty() {
        return;
    }
    // In the order things happened: the reads taken from the slots at the
    // end of the batch are as old as their first read. (A stable sort: the
    // records of one instant keep the order they were queued in.)
    batch.sort_by_key(|r| r.at);
    let mut rows = group_reads(std::mem::take(batch));
    for row in &mut rows {
        if let Row::Reads(reads, json) = row {
            *json = reads_json(reads, keys);
        }
    }
    let rows: Arc<[Row]> = rows.into();
    let mut delay = Duration::from_millis(100);
    loop {
        match write_batch(store, rows.clone()).await {
            Ok(()) => {
                if failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!("the audit log can be written again; serving requests");
                }
                return;
            }
            Err(e) => {
                if !failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        error = %e,
                        rows = rows.len(),
                        "could not write audit records; refusing audited requests until they are written"
                    );
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Columns of an audit row that a record fills.
const COLUMNS: usize = 13;

/// Binds `r`, as entry `id`, to the statement's parameters
/// `first + 1 ..= first + COLUMNS`, straight from the record: no copy of
/// its strings.
fn bind_record(
    insert: &mut rusqlite::CachedStatement<'_>,
    first: usize,
    id: i64,
    r: &Record,
) -> rusqlite::Result<()> {
    let k = r.key.as_deref();
    insert.raw_bind_parameter(first + 1, id)?;
    insert.raw_bind_parameter(first + 2, r.at)?;
    insert.raw_bind_parameter(first + 3, i64::from(r.caller.uid))?;
    insert.raw_bind_parameter(first + 4, i64::from(r.caller.pid))?;
    insert.raw_bind_parameter(first + 5, r.caller.executable.as_deref().unwrap_or(""))?;
    insert.raw_bind_parameter(first + 6, r.caller.app_id.as_deref().unwrap_or(""))?;
    insert.raw_bind_parameter(first + 7, r.operation.as_str())?;
    insert.raw_bind_parameter(first + 8, k.map(CanonicalKey::provider))?;
    insert.raw_bind_parameter(first + 9, k.map(CanonicalKey::server_id))?;
    insert.raw_bind_parameter(first + 10, k.map(CanonicalKey::user_id))?;
    insert.raw_bind_parameter(first + 11, k.map(CanonicalKey::token_type))?;
    insert.raw_bind_parameter(first + 12, r.outcome)?;
    insert.raw_bind_parameter(first + 13, r.detail.as_str())?;
    Ok(())
}

/// `INSERT INTO audit_log ... VALUES` with `rows` rows of parameters.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_log (id, at, uid, pid, executable, app_id, operation, provider, \
         server_id, user_id, token_type, outcome, detail) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

/// The `reads` column of a group: a JSON array with an element
/// `[first_at, last_at, reads, provider, server_id, user_id, token_type]`
/// per credential read.
fn reads_json(reads: &[Record], keys: &mut KeyJson) -> String {
    // Room for every element: three numbers of up to 20 characters, the
    // key's fields, quotes and commas (escapes are rare: keys are names).
    let room = reads
        .iter()
        .map(|r| {
            80 + r.key.as_deref().map_or(0, |k| {
                k.provider().len() + k.server_id().len() + k.user_id().len() + k.token_type().len()
            })
        })
        .sum();
    // Bytes, checked as UTF-8 once at the end: pieces pushed onto a
    // `String` one by one cost as much again.
    let mut json = Vec::with_capacity(room);
    json.push(b'[');
    for (i, r) in reads.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.push(b'[');
        let at = json.len();
        push_json_int(&mut json, r.at);
        json.push(b',');
        if r.last_at == r.at {
            // One read: its last is its first, already written.
            json.extend_from_within(at..json.len() - 1);
        } else {
            push_json_int(&mut json, r.last_at);
        }
        json.push(b',');
        push_json_int(&mut json, i64::try_from(r.reads).unwrap_or(i64::MAX));
        if let Some(k) = &r.key {
            json.extend_from_slice(keys.of(k));
        }
        json.push(b']');
    }
    json.push(b']');
    String::from_utf8(json).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The end of a group element for each key written lately,
/// `,"provider","server_id","user_id","token_type"`, by the key's address:
/// reads share the read cache's copy of a key, so a credential read again
/// and again is encoded once, not once per read.
#[derive(Default)]
struct KeyJson(std::collections::HashMap<usize, KeptKey, foldhash::fast::RandomState>);

/// A key [`KeyJson`] holds (so that its address stays its own) and its
/// encoding.
type KeptKey = (Arc<CanonicalKey>, Box<[u8]>);

impl KeyJson {
    /// Keys kept (each with its encoding, some 100 bytes).
    const MOST: usize = 4096;

    fn of(&mut self, key: &Arc<CanonicalKey>) -> &[u8] {
        let at = Arc::as_ptr(key) as usize;
        // An entry holds its key, so no other key can be at that address
        // while the entry is here.
        if !self
            .0
            .get(&at)
            .is_some_and(|(kept, _)| Arc::ptr_eq(kept, key))
        {
            if self.0.len() >= Self::MOST {
                self.0.clear();
            }
            let json = key_json(key);
            self.0.insert(at, (key.clone(), json.into_boxed_slice()));
        }
        self.0.get(&at).map_or(&[], |(_, json)| json)
    }
}

/// How a group element ends for `key`:
/// `,"provider","server_id","user_id","token_type"` (its closing `]` not
/// included).
fn key_json(key: &CanonicalKey) -> Vec<u8> {
    let mut json = Vec::with_capacity(64);
    for field in [
        key.provider(),
        key.server_id(),
        key.user_id(),
        key.token_type(),
    ] {
        json.push(b',');
        push_json_string(&mut json, field);
    }
    json
}

/// Appends `n` in decimal, two digits at a time.
fn push_json_int(json: &mut Vec<u8>, n: i64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
                                2021222324252627282930313233343536373839\
                                4041424344454647484950515253545556575859\
                                6061626364656667686970717273747576777879\
                                8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    while rest >= 100 {
        let pair = usize::try_from(rest % 100).unwrap_or(0) * 2;
        rest /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        let pair = usize::try_from(rest).unwrap_or(0) * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + u8::try_from(rest).unwrap_or(0);
    }
    if n < 0 {
        json.push(b'-');
    }
    json.extend_from_slice(&digits[at..]);
}

/// Appends `s` as a JSON string.
fn push_json_string(json: &mut Vec<u8>, s: &str) {
    json.push(b'"');
    let bytes = s.as_bytes();
    let escape = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    // Every byte looked at, without stopping early: the compiler can then
    // check many at once, and keys almost never need an escape.
    if !bytes.iter().fold(false, |any, &b| any | escape(b)) {
        json.extend_from_slice(bytes);
        json.push(b'"');
        return;
    }
    for &b in bytes {
        match b {
            b'"' => json.extend_from_slice(b"\\\""),
            b'\\' => json.extend_from_slice(b"\\\\"),
            0..0x20 => {
                json.extend_from_slice(b"\\u00");
                json.push(HEX[usize::from(b >> 4)]);
                json.push(HEX[usize::from(b & 0xf)]);
            }
            // Multi-byte characters are copied byte by byte, unchanged.
            b => json.push(b),
        }
    }
    json.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

async fn write_batch(store: &Database, rows: Arc<[Row]>) -> Result<(), StoreError> {
    store
        .write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Ids given here, so that a group's entries take as many as
            // they are: `id - entries + 1 ..= id`.
            let mut next: i64 = tx
                .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_log")?
                .query_row([], |r| r.get(0))?;
            let mut ones: Vec<(i64, &Record)> = Vec::with_capacity(rows.len());
            let mut groups: Vec<(i64, &[Record], &str)> = Vec::new();
            for row in rows.iter() {
                let last = next + i64::try_from(row.entries()).unwrap_or(i64::MAX) - 1;
                match row {
                    Row::One(r) => ones.push((last, r)),
                    Row::Reads(reads, json) => groups.push((last, reads, json)),
                }
                next = last + 1;
            }
            // A few statements, all kept prepared: the records are written
            // in chunks of these sizes, largest first, so a batch of any
            // length takes a handful of steps (a step's fixed cost is as
            // much as a row's), and no statement is prepared again per
            // batch length.
            let mut rest: &[(i64, &Record)] = &ones;
            for rows in ROWS_PER_INSERT {
                if rest.len() < rows {
                    continue;
                }
                let mut insert = tx.prepare_cached(&insert_sql(rows))?;
                while rest.len() >= rows {
                    let (chunk, tail) = rest.split_at(rows);
                    for (i, (id, r)) in chunk.iter().enumerate() {
                        bind_record(&mut insert, i * COLUMNS, *id, r)?;
                    }
                    insert.raw_execute()?;
                    rest = tail;
                }
            }
            if !groups.is_empty() {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO audit_log (id, at, last_at, uid, pid, executable, app_id, \
                     operation, outcome, entries, reads) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, 'retrieve', 'OK', ?, ?)",
                )?;
                for (id, reads, json) in groups {
                    let caller = &reads[0].caller;
                    let first = reads.iter().map(|r| r.at).min().unwrap_or(0);
                    let last = reads.iter().map(|r| r.last_at).max().unwrap_or(first);
                    insert.execute(rusqlite::params![
                        id,
                        first,
                        last,
                        caller.uid,
                        caller.pid,
                        caller.executable.as_deref().unwrap_or(""),
                        caller.app_id.as_deref().unwrap_or(""),
                        i64::try_from(reads.len()).unwrap_or(i64::MAX),
                        json,
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
}

/// One page of [`AuditLog::query`]'s rows.
const QUERY_PAGE: u32 = 256;

/// [`AuditLog::query`] on a read connection; `filter.program` is already
/// a LIKE pattern.
fn query_entries(conn: &rusqlite::Connection, filter: &Filter) -> rusqlite::Result<Vec<Entry>> {
    use rusqlite::types::Value;
    let k = filter.key.as_ref();
    let text = |v: Option<&str>| v.map_or(Value::Null, |v| Value::Text(v.to_owned()));
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    if filter.limit == 0 {
        return Ok(Vec::new());
    }
    let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
    let page = filter.limit.min(QUERY_PAGE);
    // How a group's element for the key ends: only groups holding it are
    // read (the encoding is the one `reads_json` writes).
    let element_end = k.map(|k| {
        let mut end = key_json(k);
        end.push(b']');
        String::from_utf8_lossy(&end).into_owned()
    });
    let mut params = vec![
        text(k.map(CanonicalKey::provider)),
        text(k.map(CanonicalKey::server_id)),
        text(k.map(CanonicalKey::user_id)),
        text(k.map(CanonicalKey::token_type)),
        text(filter.program.as_deref()),
        int(filter.since),
        int(filter.until),
        int(filter.before_id),
        Value::Integer(i64::from(page)),
        Value::Null,
        text(element_end.as_deref()),
    ];
    // Rows newest first, a page at a time; a group row stands for several
    // entries, which are matched one by one below. The SQL conditions on a
    // group only rule out groups none of whose reads can match.
    let mut select = conn.prepare_cached(
        "SELECT id, at, uid, pid, executable, app_id, operation, provider, server_id, \
         user_id, token_type, outcome, detail, entries, reads FROM audit_log \
         WHERE (?1 IS NULL OR instr(reads, ?11) > 0 \
                OR (provider = ?1 AND server_id = ?2 AND user_id = ?3 AND token_type = ?4)) \
         AND (?5 IS NULL OR executable LIKE ?5 ESCAPE '\\' OR app_id LIKE ?5 ESCAPE '\\') \
         AND (?6 IS NULL OR COALESCE(last_at, at) >= ?6) AND (?7 IS NULL OR at < ?7) \
         AND (?8 IS NULL OR id - entries + 1 < ?8) \
         AND (?10 IS NULL OR id < ?10) \
         ORDER BY id DESC LIMIT ?9",
    )?;
    let mut elements = conn.prepare_cached(
        "SELECT key, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
         value ->> 5, value ->> 6 FROM json_each(?1) ORDER BY key DESC",
    )?;
    let mut entries = Vec::new();
    loop {
        let rows: Vec<(EntryRow, i64, Option<String>)> = select
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                Ok((EntryRow::from_sqlite(r)?, r.get(13)?, r.get(14)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(oldest) = rows.last().map(|(row, _, _)| row.id) else {
            return Ok(entries);
        };
        let full_page = rows.len() == usize::try_from(page).unwrap_or(usize::MAX);
        for (row, count, reads) in rows {
            let Some(reads) = reads else {
                entries.push(row.into_entry());
                if entries.len() >= limit {
                    return Ok(entries);
                }
                continue;
            };
            let first_id = row.id - count + 1;
            let found = elements
                .query_map([reads], |r| {
                    let index: i64 = r.get(0)?;
                    let key = match (
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ) {
                        (Some(p), Some(s), Some(u), Some(t)) => {
                            CanonicalKey::from_stored(&p, &s, &u, &t).ok()
                        }
                        _ => None,
                    };
                    let reads: i64 = r.get::<_, Option<i64>>(3)?.unwrap_or(1);
                    let last_at: i64 = r.get::<_, Option<i64>>(2)?.unwrap_or(0);
                    Ok(Entry {
                        id: first_id + index,
                        at: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                        uid: u32::try_from(row.uid).unwrap_or(u32::MAX),
                        pid: i32::try_from(row.pid).unwrap_or(0),
                        executable: row.executable.clone(),
                        app_id: row.app_id.clone(),
                        operation: row.operation.clone(),
                        key,
                        outcome: row.outcome.clone(),
                        detail: reads_detail(reads, last_at),
                    })
                })?
                .collect::<rusqlite::Result<Vec<Entry>>>()?;
            for entry in found {
                let wanted = filter
                    .key
                    .as_ref()
                    .is_none_or(|k| entry.key.as_ref() == Some(k))
                    && filter.since.is_none_or(|t| entry.at >= t)
                    && filter.until.is_none_or(|t| entry.at < t)
                    && filter.before_id.is_none_or(|id| entry.id < id);
                if wanted {
                    entries.push(entry);
                    if entries.len() >= limit {
                        return Ok(entries);
                    }
                }
            }
        }
        if !full_page {
            return Ok(entries);
        }
        params[9] = Value::Integer(oldest);
    }
}

/// The detail of an entry that stands for `reads` reads.
fn reads_detail(reads: i64, last_at: i64) -> String {
    if reads > 1 {
        format!(
            "{reads} reads, the last at {}",
            keyhaven_proto::time::rfc3339(last_at)
        )
    } else {
        String::new()
    }
}

/// The canonical gRPC name of a status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyJson, Operation, Record, push_json_int, push_json_string, reads_json};
    use crate::identity::Identity;
    use keyhaven_proto::CanonicalKey;
    use std::sync::Arc;

    /// A group's JSON names each read's own credential, whether its key's
    /// encoding was made for it or kept from an earlier read (the same
    /// copy of the key, an equal copy, a different key, after the cache
    /// was emptied).
    #[test]
    fn each_element_names_its_own_credential_through_the_key_cache() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let who = Identity {
            uid: 1,
            pid: 2,
            executable: None,
            app_id: None,
        };
        let key = |s: &str| Arc::new(CanonicalKey::new("jellyfin", s, "u\"q", "").unwrap());
        let read = |k: &Arc<CanonicalKey>, at: i64| {
            let mut r = Record::new(
                at,
                who.clone(),
                Operation::Retrieve,
                None,
                "OK",
                String::new(),
            );
            r.key = Some(k.clone());
            r
        };
        let (a, b) = (key("a"), key("b"));
        let mut keys = KeyJson::default();
        let mut reads = vec![read(&a, 5), read(&b, 6), read(&a, 7), read(&key("a"), 8)];
        reads[1].reads = 3;
        reads[1].last_at = 9;
        for _ in 0..KeyJson::MOST + 3 {
            keys.of(&key("filler"));
        }
        for _ in 0..2 {
            let json = reads_json(&reads, &mut keys);
            let back: Vec<(i64, i64, i64, String, String)> = conn
                .prepare(
                    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 4, value ->> 5 \
                     FROM json_each(?1) ORDER BY key",
                )
                .unwrap()
                .query_map([&json], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let q = "u\"q".to_owned();
            assert_eq!(
                back,
                [
                    (5, 5, 1, "a".to_owned(), q.clone()),
                    (6, 9, 3, "b".to_owned(), q.clone()),
                    (7, 7, 1, "a".to_owned(), q.clone()),
                    (8, 8, 1, "a".to_owned(), q),
                ],
                "{json}"
            );
        }
        assert!(keys.0.len() <= KeyJson::MOST);
    }

    /// What `reads_json` writes, SQLite's JSON functions read back exactly:
    /// strings with quotes, backslashes, control and non-ASCII characters,
    /// and numbers of every length and sign.
    #[test]
    fn sqlite_reads_back_what_the_group_encoding_writes() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let strings = [
            "",
            "plain",
            "quo\"te",
            "back\\slash",
            "ctl\u{1}\n\t\u{1f}",
            "ünï 🔑",
            "\"\\\"",
        ];
        let mut json = vec![b'['];
        for (i, s) in strings.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            push_json_string(&mut json, s);
        }
        json.push(b']');
        let json = String::from_utf8(json).unwrap();
        let back: Vec<String> = conn
            .prepare("SELECT value FROM json_each(?1) ORDER BY key")
            .unwrap()
            .query_map([&json], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, strings, "{json}");

        let numbers = [
            0,
            7,
            9,
            10,
            99,
            100,
            101,
            1_733_000_000_123,
            -1,
            -100,
            i64::MAX,
            i64::MIN,
        ];
        for n in numbers {
            let mut json = Vec::new();
            push_json_int(&mut json, n);
            assert_eq!(String::from_utf8(json.clone()).unwrap(), n.to_string());
            let back: i64 = conn
                .query_row(
                    "SELECT json_extract(?1, '$')",
                    [String::from_utf8(json).unwrap()],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(back, n);
        }
    }
}
