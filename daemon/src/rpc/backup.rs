//! Backups: sealed snapshots, the portable export, restore, and automatic
//! snapshots. The rule: nothing here ever writes to a path a client names
//! (snapshots are streamed to the client, which writes its own file, so a
//! hardened unit's filesystem limits still hold), and a restore checks the
//! whole file before its first write, then writes each credential with
//! compare-and-swap, never replacing a newer stored revision unless asked.
//!
//! - [`take_snapshot`]: `VACUUM INTO` a private temporary file in the data
//!   directory (a read transaction: writers go on), `PRAGMA
//!   integrity_check`, then the manifest (counted from the snapshot itself,
//!   so it describes exactly those bytes) and its SHA-256. The file is
//!   removed when the [`Snapshot`] is dropped; files left by a daemon that
//!   was killed are removed by the next snapshot or restore.
//! - [`export`]: every matching credential, opened, for the CLI to encrypt.
//! - [`restore`]: a snapshot (checked: size, hash, integrity, key, every
//!   sealed row) or an export document, applied by the rules in
//!   `docs/backup.md`.
//! - [`automatic`]: with `backup_dir` set, a snapshot after
//!   `backup_every_writes` writes, at most once a day, keeping
//!   `backup_keep` files.
//!
//! The file formats themselves are in `keyhaven_proto::backup`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use keyhaven_proto::backup::{self as format, ExportDocument, Hasher, Manifest};
use keyhaven_proto::key::check_label;
use keyhaven_proto::pb::{self, restore_chunk::Part};
use keyhaven_proto::time::now_unix_ms;
use keyhaven_proto::{Attributes, CanonicalKey, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tonic::Status;

use crate::identity::Identity;
use crate::keys::vault::Vault;
use crate::rpc::convert::{parse_filter, to_pb};
use crate::rpc::shared::Shared;
use crate::rpc::snapshots::{AUTO_SUFFIX, Backups, TEMP_PREFIX, auto_files};
use crate::rpc::status::ServiceError;
use crate::store::audit::AuditLog;
use crate::store::crypto::{DataKey, Sealed};
use crate::store::events::EventKind;
use crate::store::{AttributeChange, ListFilter, Put, Store, StoreError};

/// Bytes per streamed chunk: well under the Daemon service's 64 KiB limit.
pub const CHUNK: usize = 32 * 1024;
/// Largest snapshot a restore accepts.
const MAX_SNAPSHOT: u64 = 1 << 30;
/// Largest export document a restore accepts.
const MAX_EXPORT: u64 = 256 << 20;
/// Automatic snapshots: at most one per this long.
const AUTO_MIN_INTERVAL_MS: i64 = 24 * 3600 * 1000;

/// A stream of gRPC messages.
pub type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Removes temporary files a killed daemon left in `dir` (other pids' only:
/// one daemon per store, so they are nobody's).
fn remove_stale(dir: &Path) {
    let mine = format!("{TEMP_PREFIX}{}-", std::process::id());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) && !name.starts_with(&mine) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a backup temporary file left by an earlier daemon")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale backup temporary file")
                }
            }
        }
    }
}

/// A file removed when dropped.
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A snapshot on disk in the data directory, removed when dropped.
#[derive(Debug)]
pub struct Snapshot {
    /// What it holds.
    pub manifest: Manifest,
    file: TempFile,
}

impl Snapshot {
    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.file.0
    }
}

fn data_dir(vault: &Vault) -> PathBuf {
    vault
        .database()
        .path()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn internal(what: &str, e: impl std::fmt::Display) -> ServiceError {
    tracing::error!(error = %e, "{what}");
    ServiceError::Unavailable(format!("{what}; see the keyhavend log"))
}

/// Takes a consistent snapshot of the store while it keeps serving.
pub async fn take_snapshot(vault: &Vault, backups: &Backups) -> Result<Snapshot, ServiceError> {
    let store = vault.store()?;
    let key_now = store.key().id().to_owned();
    let dir = data_dir(vault);
    remove_stale(&dir);
    let tmp = TempFile(backups.temp_path(&dir, "snapshot"));
    let db = vault.database().path().to_path_buf();
    let target = tmp.0.clone();
    let manifest = tokio::task::spawn_blocking(move || snapshot_blocking(&db, &target, &key_now))
        .await
        .map_err(|e| internal("the snapshot task failed", e))??;
    Ok(Snapshot {
        manifest,
        file: tmp,
    })
}

fn snapshot_blocking(db: &Path, tmp: &Path, key_now: &str) -> Result<Manifest, ServiceError> {
    use rusqlite::OpenFlags;
    let fail = |e: rusqlite::Error| internal("taking a snapshot failed", e);
    crate::fsutil::write_new_private_file(tmp, b"")
        .map_err(|e| internal("cannot create the snapshot's temporary file", e))?;
    let taken_at = now_unix_ms();
    {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(fail)?;
        let target = tmp.to_str().ok_or_else(|| {
            internal(
                "taking a snapshot failed",
                "the data directory's path is not UTF-8",
            )
        })?;
        // One read transaction: a consistent copy while writers go on.
        conn.execute("VACUUM INTO ?1", [target]).map_err(fail)?;
    }
    let snap = rusqlite::Connection::open_with_flags(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    // A standalone file: no -wal or -shm beside it.
    let _: String = snap
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(fail)?;
    check_integrity(&snap).map_err(|e| internal("the snapshot failed its integrity check", e))?;
    let count: i64 = snap
        .query_row("SELECT COUNT(*) FROM auth_tokens", [], |r| r.get(0))
        .map_err(fail)?;
    let last: i64 = snap
        .query_row(
            "SELECT value FROM store_meta WHERE name = 'last_revision'",
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    let store_id: String = snap
        .query_row(
            "SELECT value FROM store_info WHERE name = 'store_id'",
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    let row_key: Option<String> = snap
        .query_row("SELECT MIN(key_id) FROM auth_tokens", [], |r| r.get(0))
        .map_err(fail)?;
    drop(snap);
    let (size, sha256) = hash_file(tmp).map_err(|e| internal("reading the snapshot failed", e))?;
    Ok(Manifest {
        format: format::SNAPSHOT_FORMAT.to_owned(),
        format_version: format::SNAPSHOT_FORMAT_VERSION,
        store_id,
        key_id: row_key.unwrap_or_else(|| key_now.to_owned()),
        credential_count: u64::try_from(count).unwrap_or(0),
        highest_revision: u64::try_from(last).unwrap_or(0),
        taken_at: format::rfc3339(taken_at),
        taken_at_unix_ms: taken_at,
        size,
        sha256,
    })
}

fn check_integrity(conn: &rusqlite::Connection) -> Result<(), String> {
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(verdict)
    }
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hasher.finish()))
}

/// `Backup`: a snapshot, streamed: the manifest, then the bytes. The
/// temporary file goes when the stream ends or the client goes away.
pub async fn backup(shared: &Shared) -> Result<MessageStream<pb::BackupChunk>, ServiceError> {
    let snapshot = take_snapshot(&shared.vault, &shared.backups).await?;
    let manifest = snapshot.manifest.clone();
    shared
        .backups
        .record(manifest.taken_at_unix_ms, "streamed to a client".to_owned());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let chunk = |part| Ok(pb::BackupChunk { part: Some(part) });
        if tx
            .send(chunk(pb::backup_chunk::Part::Manifest(manifest.to_pb())))
            .await
            .is_err()
        {
            return;
        }
        let mut file = match tokio::fs::File::open(snapshot.path()).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::from(internal(
                        "reading the snapshot failed",
                        e,
                    ))))
                    .await;
                return;
            }
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send(chunk(pb::backup_chunk::Part::Data(buf[..n].to_vec())))
                        .await
                        .is_err()
                    {
                        // The client went away; the file goes with `snapshot`.
                        return;
                    }
                    crate::fault::point("backup:streaming");
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::from(internal(
                            "reading the snapshot failed",
                            e,
                        ))))
                        .await;
                    return;
                }
            }
        }
        drop(snapshot);
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// `Export`: every matching credential with its secret, one audit entry
/// each.
pub async fn export(
    shared: &Shared,
    who: &Identity,
    req: pb::ExportRequest,
) -> Result<MessageStream<pb::ExportedCredential>, ServiceError> {
    let filter = parse_filter(
        req.provider,
        req.server_id,
        req.user_id,
        req.match_empty_server_id,
        req.match_empty_user_id,
        req.attributes,
    )?;
    let store = shared.vault.store()?;
    let (_, rows) = store.snapshot(&filter).await?;
    let mut out = Vec::with_capacity(rows.len());
    for meta in rows {
        match store.get(&meta.key).await {
            Ok((meta, secret)) => {
                let key = meta.key.clone();
                out.push(pb::ExportedCredential {
                    metadata: Some(to_pb(meta)),
                    secret: secret.into_vec(),
                });
                let _ = shared
                    .audit
                    .outcome(
                        who,
                        crate::store::audit::Operation::Export,
                        Some(key.clone()),
                        None,
                    )
                    .await;
            }
            // Expired, or deleted since the listing: not part of the export.
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Box::pin(tokio_stream::iter(out.into_iter().map(Ok))))
}

/// One credential a restore offers.
struct Candidate {
    key: CanonicalKey,
    secret: Secret,
    label: Option<String>,
    attributes: Attributes,
    expires_at: Option<i64>,
    revision: u64,
}

/// `Restore`: reads the options and every byte, checks the whole file,
/// then applies each credential.
pub async fn restore(
    shared: &Shared,
    who: &Identity,
    mut input: tonic::Streaming<pb::RestoreChunk>,
) -> Result<MessageStream<pb::RestoreOutcome>, ServiceError> {
    let first = input.message().await.map_err(|s| {
        ServiceError::Invalid(format!("reading the restore failed: {}", s.message()))
    })?;
    let Some(pb::RestoreChunk {
        part: Some(Part::Options(options)),
    }) = first
    else {
        return Err(ServiceError::Invalid(
            "a restore starts with its options".into(),
        ));
    };
    let store = shared.vault.store()?;
    let kind = pb::RestoreKind::try_from(options.kind).unwrap_or(pb::RestoreKind::Unspecified);
    let candidates = match kind {
        pb::RestoreKind::Snapshot => {
            let manifest = options
                .manifest
                .as_ref()
                .ok_or_else(|| {
                    ServiceError::Invalid("a snapshot restore needs its manifest".into())
                })
                .and_then(|m| {
                    Manifest::from_pb(m).map_err(|e| ServiceError::Invalid(e.to_string()))
                })?;
            if manifest.size > MAX_SNAPSHOT {
                return Err(ServiceError::Limit(format!(
                    "the snapshot is {} bytes; the limit is {MAX_SNAPSHOT}",
                    manifest.size
                )));
            }
            let dir = data_dir(&shared.vault);
            remove_stale(&dir);
            let tmp = TempFile(shared.backups.temp_path(&dir, "restore"));
            receive_snapshot(&mut input, &tmp.0, &manifest).await?;
            let key = store.key();
            let path = tmp.0.clone();
            let candidates =
                tokio::task::spawn_blocking(move || open_snapshot(&path, &manifest, &key))
                    .await
                    .map_err(|e| internal("the restore task failed", e))??;
            drop(tmp);
            candidates
        }
        pb::RestoreKind::Export => {
            if options.size > MAX_EXPORT {
                return Err(ServiceError::Limit(format!(
                    "the export is {} bytes; the limit is {MAX_EXPORT}",
                    options.size
                )));
            }
            let json = receive_all(&mut input, options.size).await?;
            let doc =
                ExportDocument::parse(&json).map_err(|e| ServiceError::Invalid(e.to_string()))?;
            doc.credentials
                .iter()
                .map(|e| {
                    Ok(Candidate {
                        key: e.key()?,
                        secret: e
                            .secret()
                            .map_err(|e| ServiceError::Invalid(e.to_string()))?,
                        label: e.label.clone(),
                        attributes: e.attributes.clone(),
                        expires_at: e.expires_at_unix_ms,
                        revision: e.revision,
                    })
                })
                .collect::<Result<Vec<_>, ServiceError>>()?
        }
        pb::RestoreKind::Unspecified => {
            return Err(ServiceError::Invalid(
                "the restore's kind is not given (snapshot or export)".into(),
            ));
        }
    };
    // Every credential must be one the store accepts, before the first write.
    let mut seen = std::collections::HashSet::new();
    for c in &candidates {
        if !seen.insert(c.key.to_string()) {
            return Err(ServiceError::Invalid(format!(
                "credential {} appears twice in the file",
                c.key
            )));
        }
        if let Some(label) = &c.label {
            check_label(label).map_err(|e| {
                ServiceError::Invalid(format!("credential {} in the file: {e}", c.key))
            })?;
        }
        keyhaven_proto::attributes::check(&c.attributes)
            .map_err(|e| ServiceError::Invalid(format!("credential {} in the file: {e}", c.key)))?;
        if c.secret.is_empty() || c.secret.len() > shared.max_secret_bytes {
            return Err(ServiceError::Invalid(format!(
                "credential {} in the file has a secret of {} bytes; this daemon takes 1 to {} \
                 (max_secret_bytes)",
                c.key,
                c.secret.len(),
                shared.max_secret_bytes
            )));
        }
    }
    let outcomes = apply(
        &store,
        &shared.audit,
        who,
        candidates,
        options.dry_run,
        options.overwrite,
    )
    .await?;
    Ok(Box::pin(tokio_stream::iter(outcomes.into_iter().map(Ok))))
}

async fn receive_snapshot(
    input: &mut tonic::Streaming<pb::RestoreChunk>,
    path: &Path,
    manifest: &Manifest,
) -> Result<(), ServiceError> {
    let create = crate::fsutil::write_new_private_file(path, b"");
    create.map_err(|e| internal("cannot create the restore's temporary file", e))?;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(|e| internal("cannot open the restore's temporary file", e))?;
    let mut hasher = Hasher::default();
    let mut total = 0u64;
    while let Some(data) = next_data(input).await? {
        total += data.len() as u64;
        if total > manifest.size {
            return Err(ServiceError::Invalid(format!(
                "the snapshot has more bytes than its manifest says ({})",
                manifest.size
            )));
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| internal("writing the restore's temporary file failed", e))?;
    }
    file.flush()
        .await
        .map_err(|e| internal("writing the restore's temporary file failed", e))?;
    if total < manifest.size {
        return Err(ServiceError::Invalid(format!(
            "the snapshot is truncated: {total} of {} bytes",
            manifest.size
        )));
    }
    if hasher.finish() != manifest.sha256 {
        return Err(ServiceError::Invalid(
            "the snapshot's bytes do not match its SHA-256: the file was damaged or changed".into(),
        ));
    }
    Ok(())
}

async fn receive_all(
    input: &mut tonic::Streaming<pb::RestoreChunk>,
    size: u64,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ServiceError> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
        usize::try_from(size).unwrap_or(0).min(MAX_EXPORT as usize),
    ));
    while let Some(data) = next_data(input).await? {
        if out.len() as u64 + data.len() as u64 > size {
            return Err(ServiceError::Invalid(
                "the export has more bytes than announced".into(),
            ));
        }
        out.extend_from_slice(&data);
        let mut data = data;
        zeroize::Zeroize::zeroize(&mut data);
    }
    if (out.len() as u64) < size {
        return Err(ServiceError::Invalid(format!(
            "the export is truncated: {} of {size} bytes",
            out.len()
        )));
    }
    Ok(out)
}

async fn next_data(
    input: &mut tonic::Streaming<pb::RestoreChunk>,
) -> Result<Option<Vec<u8>>, ServiceError> {
    match input.message().await {
        Ok(None) => Ok(None),
        Ok(Some(pb::RestoreChunk {
            part: Some(Part::Data(data)),
        })) => Ok(Some(data)),
        Ok(Some(_)) => Err(ServiceError::Invalid(
            "only the first message of a restore carries options".into(),
        )),
        Err(s) => Err(ServiceError::Invalid(format!(
            "the restore's bytes did not all arrive: {}",
            s.message()
        ))),
    }
}

/// Checks a received snapshot (integrity, key, every sealed row) and
/// opens every credential with `key`.
fn open_snapshot(
    path: &Path,
    manifest: &Manifest,
    key: &DataKey,
) -> Result<Vec<Candidate>, ServiceError> {
    use rusqlite::OpenFlags;
    let damaged =
        |e: String| ServiceError::Invalid(format!("the snapshot's database is damaged: {e}"));
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| damaged(e.to_string()))?;
    check_integrity(&conn).map_err(damaged)?;
    let wrong_key = |found: &str| {
        ServiceError::Precondition(format!(
            "the snapshot is sealed with data key {found}, but this daemon's key is {}: a \
             snapshot opens only with the key it was taken with (restore it where that key is, \
             or use an export, which needs only its passphrase)",
            key.id()
        ))
    };
    if manifest.key_id != key.id() {
        return Err(wrong_key(&manifest.key_id));
    }
    let check: Option<(Vec<u8>, Vec<u8>)> = {
        use rusqlite::OptionalExtension;
        conn.query_row(
            "SELECT check_nonce, check_value FROM data_keys WHERE key_id = ?1",
            [key.id()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| damaged(e.to_string()))?
    };
    let verified =
        check.is_some_and(|(nonce, ciphertext)| key.verify_check(&Sealed { nonce, ciphertext }));
    if !verified {
        return Err(wrong_key(&manifest.key_id));
    }
    // Snapshots taken before attributes existed have no such column.
    let has_attributes = conn
        .prepare("SELECT attributes FROM auth_tokens LIMIT 0")
        .is_ok();
    let sql = format!(
        "SELECT provider, server_id, user_id, token_type, ciphertext, nonce, key_id, label, \
         revision, expires_at, {} FROM auth_tokens ORDER BY provider, server_id, user_id, token_type",
        if has_attributes { "attributes" } else { "NULL" }
    );
    let mut stmt = conn.prepare(&sql).map_err(|e| damaged(e.to_string()))?;
    type RawRow = (
        String,
        String,
        String,
        String,
        Vec<u8>,
        Vec<u8>,
        String,
        Option<String>,
        i64,
        Option<i64>,
        Option<Vec<u8>>,
    );
    let rows: Vec<RawRow> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| damaged(e.to_string()))?;
    let mut out = Vec::with_capacity(rows.len());
    for (
        provider,
        server,
        user,
        token_type,
        ciphertext,
        nonce,
        key_id,
        label,
        revision,
        expires,
        attributes,
    ) in rows
    {
        let canonical = CanonicalKey::new(&provider, &server, &user, &token_type)
            .map_err(|e| damaged(format!("a row's key is invalid: {e}")))?;
        if key_id != key.id() {
            return Err(wrong_key(&key_id));
        }
        let secret = key
            .open(canonical.view(), &Sealed { nonce, ciphertext })
            .map_err(|e| damaged(format!("credential {canonical} does not open: {e}")))?;
        let attributes = crate::store::attributes::decode(attributes.as_deref())
            .map_err(|e| damaged(format!("credential {canonical}: {e}")))?;
        out.push(Candidate {
            key: canonical,
            secret,
            label,
            attributes,
            expires_at: expires,
            revision: u64::try_from(revision).unwrap_or(0),
        });
    }
    if out.len() as u64 != manifest.credential_count {
        return Err(damaged(format!(
            "it holds {} credentials, its manifest says {}",
            out.len(),
            manifest.credential_count
        )));
    }
    Ok(out)
}

/// Stores of one restore in flight at once: they are committed together
/// in groups (one fsync each), so a large restore takes seconds, not one
/// fsync per credential.
const IN_FLIGHT: usize = 256;

/// Applies each candidate by the rules (see the module doc): decides every
/// outcome from what is stored, then writes the restored and replaced ones
/// concurrently, each with its own compare-and-swap.
async fn apply(
    store: &Store,
    audit: &AuditLog,
    who: &Identity,
    candidates: Vec<Candidate>,
    dry_run: bool,
    overwrite: bool,
) -> Result<Vec<pb::RestoreOutcome>, ServiceError> {
    use pb::RestoreResult as R;
    let (_, rows) = store.snapshot(&ListFilter::default()).await?;
    let stored: HashMap<String, u64> = rows
        .into_iter()
        .map(|m| (m.key.to_string(), m.revision))
        .collect();
    let now = now_unix_ms();
    let mut out = Vec::with_capacity(candidates.len());
    let mut writes = Vec::new();
    for c in candidates {
        let current = stored.get(&c.key.to_string()).copied();
        let mut outcome = pb::RestoreOutcome {
            key: Some(c.key.to_pb()),
            result: R::Unspecified as i32,
            file_revision: c.revision,
            stored_revision: current.unwrap_or(0),
            new_revision: 0,
            detail: String::new(),
        };
        if c.expires_at.is_some_and(|t| t <= now) {
            outcome.result = R::Skipped as i32;
            outcome.detail = format!(
                "it expired at {}",
                format::rfc3339(c.expires_at.unwrap_or(0))
            );
            out.push(outcome);
            continue;
        }
        let (decision, expected) = match current {
            None => (R::Restored, 0),
            Some(rev) => {
                let same = match store.get(&c.key).await {
                    Ok((meta, secret)) => {
                        secret.expose() == c.secret.expose()
                            && meta.label == c.label
                            && meta.attributes == c.attributes
                            && meta.expires_at == c.expires_at
                    }
                    Err(_) => false,
                };
                if same {
                    (R::Unchanged, rev)
                } else if rev >= c.revision && !overwrite {
                    (R::Skipped, rev)
                } else {
                    (R::Replaced, rev)
                }
            }
        };
        outcome.result = decision as i32;
        if matches!(decision, R::Restored | R::Replaced) && !dry_run {
            writes.push((
                out.len(),
                Put {
                    key: c.key,
                    secret: c.secret,
                    label: c.label,
                    expires_at: c.expires_at,
                    expected_revision: Some(expected),
                    attributes: AttributeChange::Replace(c.attributes),
                },
            ));
        }
        out.push(outcome);
    }
    let mut running = tokio::task::JoinSet::new();
    let mut done = Vec::with_capacity(writes.len());
    for (i, put) in writes {
        if running.len() >= IN_FLIGHT
            && let Some(result) = running.join_next().await
        {
            done.push(result);
        }
        let (store, who) = (store.clone(), who.clone());
        running.spawn(async move {
            let key = put.key.clone();
            (i, key, store.put(put, &who).await)
        });
    }
    while let Some(result) = running.join_next().await {
        done.push(result);
    }
    for result in done {
        let Ok((i, key, written)) = result else {
            tracing::error!("restore: a write task failed");
            continue;
        };
        let outcome = &mut out[i];
        match written {
            Ok((meta, _)) => {
                outcome.new_revision = meta.revision;
                let _ = audit
                    .outcome(
                        who,
                        crate::store::audit::Operation::Restore,
                        Some(key.clone()),
                        None,
                    )
                    .await;
            }
            Err(StoreError::Conflict { actual, .. }) => {
                outcome.result = R::Failed as i32;
                outcome.detail = format!(
                    "it changed while restoring (now {}); nothing was replaced, run the \
                     restore again",
                    actual.map_or("deleted".to_owned(), |r| format!("revision {r}"))
                );
            }
            Err(e) => {
                tracing::error!(key = %key, error = %e, "restore: a credential was not written");
                outcome.result = R::Failed as i32;
                outcome.detail = "the store refused the write; see the keyhavend log".into();
            }
        }
    }
    // A write task that panicked left its outcome undecided: say so.
    for outcome in &mut out {
        if matches!(R::try_from(outcome.result), Ok(R::Restored | R::Replaced))
            && outcome.new_revision == 0
            && !dry_run
        {
            outcome.result = R::Failed as i32;
            outcome.detail = "the write did not finish; see the keyhavend log".into();
        }
    }
    Ok(out)
}

/// Automatic snapshots until shutdown: counts writes on the event bus and,
/// after `every_writes` of them and at most once a day, writes a snapshot
/// into `backup_dir` (temporary name, fsync, rename), keeping the newest
/// `keep`.
pub async fn automatic(shared: Arc<Shared>) {
    let Some(dir) = shared.backups.auto.dir.clone() else {
        return;
    };
    if let Err(e) = crate::fsutil::ensure_private_dir(&dir) {
        tracing::error!(error = %e, "backup_dir is unusable; no automatic snapshots");
        return;
    }
    let every = shared.backups.auto.every_writes.max(1);
    let mut events = shared.vault.events().subscribe();
    let mut stopping = shared.stopping.clone();
    let mut writes = 0u64;
    loop {
        if *stopping.borrow() {
            return;
        }
        tokio::select! {
            changed = stopping.changed() => if changed.is_err() { return },
            event = events.recv() => match event {
                Ok(e) if matches!(e.kind, EventKind::Stored | EventKind::Updated | EventKind::Deleted) => writes += 1,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => writes += n,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
        let recent = shared
            .backups
            .last_auto
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| now_unix_ms() - at < AUTO_MIN_INTERVAL_MS);
        if writes >= every && !recent {
            writes = 0;
            match write_auto(&shared, &dir).await {
                Ok(path) => tracing::info!(file = %path.display(), "automatic snapshot written"),
                Err(e) => tracing::error!(error = %e, "automatic snapshot failed"),
            }
        }
    }
}

async fn write_auto(shared: &Shared, dir: &Path) -> Result<PathBuf, String> {
    let snapshot = take_snapshot(&shared.vault, &shared.backups)
        .await
        .map_err(|e| e.to_string())?;
    remove_stale(dir);
    let m = &snapshot.manifest;
    let stamp = m.taken_at.replace([':', '-'], "");
    let final_path = dir.join(format!(
        "keyhaven-{stamp}-r{}{AUTO_SUFFIX}",
        m.highest_revision
    ));
    let tmp = TempFile(shared.backups.temp_path(dir, "auto"));
    let src = snapshot.path().to_path_buf();
    let header = m.header();
    let target = tmp.0.clone();
    let fin = final_path.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut out = options.open(&target)?;
        out.write_all(&header)?;
        std::io::copy(&mut std::fs::File::open(&src)?, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&target, &fin)?;
        #[cfg(unix)]
        if let Some(parent) = fin.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot write {}: {e}", final_path.display()))?;
    drop(tmp);
    shared
        .backups
        .record(m.taken_at_unix_ms, final_path.display().to_string());
    *shared
        .backups
        .last_auto
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(m.taken_at_unix_ms);
    let files = auto_files(dir);
    let keep = shared.backups.auto.keep.max(1);
    if files.len() > keep {
        for old in &files[..files.len() - keep] {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(final_path)
}
