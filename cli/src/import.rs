//! Bulk import of tokens from the places media apps kept them before
//! keyhaven: JellyTau's and Reel's keyring entries, Reel's `auth_tokens`
//! database, and JSON lines from scripts.
//!
//! The import runs in the client: it reads the source locally and writes
//! through the ordinary `Store` call with compare-and-swap, so no new RPC
//! ever carries a secret and the daemon's policy and audit apply as for any
//! app. Each credential is:
//!
//! - stored only if absent (`expected_revision = 0`), then read back and
//!   compared: **imported**;
//! - left alone when the store already has the same value: **present**;
//! - left alone when it has a different value: **conflict**, unless
//!   `overwrite`, which replaces exactly the revision that was compared;
//! - otherwise **failed**, with the reason (never the secret).
//!
//! Sources are never modified, except that a Reel database may be wiped
//! with `--wipe-source`, and then only the rows verified in the store, only
//! when every row was verified, and only a row whose token is still the one
//! imported (`DELETE ... WHERE id = ? AND token = ?`): a token Reel refreshed
//! after it was read stays in the file, and is reported. So an import killed
//! at any point leaves each credential in its source, in the store, or in
//! both; running it again finds the ones already done "present" and
//! completes the rest.
//!
//! JellyTau entries whose name more than one key could have written (ids
//! with `::`, or a `:` at the separator; see `keyhaven_proto::legacy`) are
//! skipped with the reason, never guessed at.

use std::path::Path;
use std::time::{Duration, SystemTime};

use keyhaven_proto::legacy;

use keyhaven::{Client, CredentialKey, ErrorKind, Secret, StoreOptions};

/// One credential read from a source.
#[derive(Debug)]
pub struct Candidate {
    /// Where in the source it came from, for people (`row 3`, `line 2`).
    pub origin: String,
    /// Its key, or why the source's names do not map to one.
    pub key: Result<CredentialKey, String>,
    /// The token.
    pub secret: Secret,
    /// A label to store with it.
    pub label: Option<String>,
    /// When it expires, if the source says.
    pub expires_at: Option<SystemTime>,
    /// The Reel row id, for `--wipe-source`.
    pub row_id: Option<i64>,
    /// Why it is not imported at all, when it is not a token.
    pub skip: Option<String>,
}

/// What happened to one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written and verified by reading it back.
    Imported,
    /// Would be written (dry run).
    WouldImport,
    /// The store already holds the same value.
    Present,
    /// The store holds a different value; it was kept.
    Conflict,
    /// The store held a different value and it was replaced (`overwrite`).
    Overwritten,
    /// Not a token (e.g. a Reel password row); left in the source.
    Skipped(String),
    /// Could not be imported.
    Failed(String),
}

impl Outcome {
    /// The word printed for it.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Imported => "imported",
            Self::WouldImport => "would import",
            Self::Present => "already present",
            Self::Conflict => "conflict",
            Self::Overwritten => "overwritten",
            Self::Skipped(_) => "skipped",
            Self::Failed(_) => "failed",
        }
    }

    /// The reason, for skipped and failed ones.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Skipped(r) | Self::Failed(r) => Some(r),
            Self::Conflict => Some("the store holds a different value; kept (use --overwrite)"),
            _ => None,
        }
    }

    /// True when the store now holds exactly the source's value.
    pub fn verified(&self) -> bool {
        matches!(self, Self::Imported | Self::Present | Self::Overwritten)
    }
}

/// Counts per outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Imported or overwritten.
    pub imported: u64,
    /// Would be imported (dry run).
    pub would_import: u64,
    /// Already present.
    pub present: u64,
    /// Conflicts kept.
    pub conflicts: u64,
    /// Skipped.
    pub skipped: u64,
    /// Failed.
    pub failed: u64,
}

impl Summary {
    /// Counts `outcome`.
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Imported | Outcome::Overwritten => self.imported += 1,
            Outcome::WouldImport => self.would_import += 1,
            Outcome::Present => self.present += 1,
            Outcome::Conflict => self.conflicts += 1,
            Outcome::Skipped(_) => self.skipped += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

/// How to import.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Only report what would happen; write nothing.
    pub dry_run: bool,
    /// Replace a different value in the store.
    pub overwrite: bool,
}

/// Imports one credential (see the module docs for the rules).
pub async fn import_one(client: &Client, candidate: &Candidate, options: Options) -> Outcome {
    if let Some(reason) = &candidate.skip {
        return Outcome::Skipped(reason.clone());
    }
    let key = match &candidate.key {
        Ok(key) => key,
        Err(reason) => return Outcome::Failed(reason.clone()),
    };
    if candidate.secret.is_empty() {
        return Outcome::Failed("the source holds an empty token".into());
    }
    match import_key(client, key, candidate, options).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

async fn import_key(
    client: &Client,
    key: &CredentialKey,
    candidate: &Candidate,
    options: Options,
) -> keyhaven::Result<Outcome> {
    // Twice at most: a write that loses a race is judged again.
    for _ in 0..2 {
        let existing = match current(client, key).await? {
            Some(existing) => existing,
            None if options.dry_run => return Ok(Outcome::WouldImport),
            None => {
                let store_options = StoreOptions {
                    label: candidate.label.clone(),
                    expires_at: candidate.expires_at,
                    expected_revision: Some(0),
                    attributes: None,
                };
                match client
                    .store(key, candidate.secret.clone(), store_options)
                    .await
                {
                    Ok(_) => return verify(client, key, candidate, Outcome::Imported).await,
                    Err(e) if e.kind() == ErrorKind::Conflict => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        if existing.secret.expose() == candidate.secret.expose() {
            return Ok(Outcome::Present);
        }
        if !options.overwrite {
            return Ok(Outcome::Conflict);
        }
        if options.dry_run {
            return Ok(Outcome::WouldImport);
        }
        let store_options = StoreOptions {
            label: candidate.label.clone(),
            expires_at: candidate.expires_at,
            expected_revision: Some(existing.metadata.revision),
            attributes: None,
        };
        match client
            .store(key, candidate.secret.clone(), store_options)
            .await
        {
            Ok(_) => return verify(client, key, candidate, Outcome::Overwritten).await,
            Err(e) if e.kind() == ErrorKind::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Outcome::Failed(
        "another client kept writing this credential; try again".into(),
    ))
}

/// The stored credential, if there is one. A dry run must not write, so
/// existence is checked with `List` (which never reads through to legacy
/// keyrings) before the value is read.
async fn current(
    client: &Client,
    key: &CredentialKey,
) -> keyhaven::Result<Option<keyhaven::Credential>> {
    let filter = keyhaven::ListFilter {
        provider: Some(key.provider().to_owned()),
        server_id: Some(key.server_id().to_owned()),
        user_id: Some(key.user_id().to_owned()),
        ..keyhaven::ListFilter::default()
    };
    let listed = client.list(&filter).await?;
    if !listed.iter().any(|m| &m.key == key) {
        return Ok(None);
    }
    match client.retrieve(key).await {
        Ok(cred) => Ok(Some(cred)),
        // Deleted or expired meanwhile.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn verify(
    client: &Client,
    key: &CredentialKey,
    candidate: &Candidate,
    done: Outcome,
) -> keyhaven::Result<Outcome> {
    let back = client.retrieve(key).await?;
    Ok(if back.secret.expose() == candidate.secret.expose() {
        done
    } else {
        Outcome::Failed("the stored value did not read back the same".into())
    })
}

/// One JSON line of `import json`.
pub fn parse_json_line(line_no: usize, line: &str) -> Candidate {
    let origin = format!("line {line_no}");
    let failed = |origin: String, reason: String| Candidate {
        origin,
        key: Err(reason),
        secret: Secret::default(),
        label: None,
        expires_at: None,
        row_id: None,
        skip: None,
    };
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        // serde_json's message names a position, never the text.
        Err(e) => return failed(origin, format!("not a JSON object: {e}")),
    };
    let Some(object) = value.as_object() else {
        return failed(origin, "not a JSON object".into());
    };
    let text = |name: &str| object.get(name).and_then(|v| v.as_str());
    for required in ["provider", "secret"] {
        if text(required).is_none() {
            return failed(origin, format!("\"{required}\" (a string) is required"));
        }
    }
    let key = CredentialKey::new(
        text("provider").unwrap_or_default(),
        text("server_id").unwrap_or_default(),
        text("user_id").unwrap_or_default(),
        text("token_type").unwrap_or_default(),
    )
    .map_err(|e| e.to_string());
    let expires_at = match object.get("expires_at") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(secs) => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
            None => {
                return failed(
                    origin,
                    "\"expires_at\" must be Unix seconds (a number)".into(),
                );
            }
        },
    };
    Candidate {
        origin,
        key,
        secret: Secret::from(text("secret").unwrap_or_default()),
        label: text("label").map(str::to_owned),
        expires_at,
        row_id: None,
        skip: None,
    }
}

/// Why a Reel database could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the Reel database {path}: {source}")]
pub struct ReelDbError {
    path: String,
    source: sqlx::Error,
}

#[derive(sqlx::FromRow)]
struct ReelRow {
    id: i64,
    source_id: String,
    token_type: String,
    token: String,
    expires_at: Option<String>,
}

/// Every row of Reel's `auth_tokens` table. The file is opened read-only.
pub async fn read_reel_db(path: &Path) -> Result<Vec<Candidate>, ReelDbError> {
    use sqlx::ConnectOptions;
    let error = |source| ReelDbError {
        path: path.display().to_string(),
        source,
    };
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(error)?;
    let rows: Vec<ReelRow> = sqlx::query_as(
        "SELECT id, source_id, token_type, token, CAST(expires_at AS TEXT) AS expires_at \
         FROM auth_tokens ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(error)?;
    let _ = sqlx::Connection::close(conn).await;
    Ok(rows.into_iter().map(reel_candidate).collect())
}

fn reel_candidate(row: ReelRow) -> Candidate {
    let origin = format!(
        "row {} (source {:?}, {})",
        row.id, row.source_id, row.token_type
    );
    // Reel files username/password logins as `password_{username}`.
    let skip = row
        .token_type
        .starts_with("password_")
        .then(|| "a password, not a token".to_owned());
    let key = legacy::source_key(&row.source_id, &row.token_type).map_err(|e| e.to_string());
    Candidate {
        origin,
        key,
        secret: Secret::from(row.token),
        label: Some(format!("imported from Reel ({})", row.source_id))
            .filter(|l| keyhaven_proto::key::check_label(l).is_ok()),
        expires_at: row.expires_at.as_deref().and_then(parse_time),
        row_id: Some(row.id),
        skip,
    }
}

/// What `--wipe-source` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiped {
    /// Rows removed: each still held the token that was imported.
    pub removed: u64,
    /// Rows kept because their token changed after it was read (Reel
    /// refreshed it): the newer token is not in the store yet.
    pub changed: Vec<i64>,
}

/// Removes the verified `rows` (row id and the token imported from it)
/// from Reel's database, each only if it still holds that token.
pub async fn wipe_reel_rows(path: &Path, rows: &[(i64, &Secret)]) -> Result<Wiped, ReelDbError> {
    use sqlx::ConnectOptions;
    let error = |source| ReelDbError {
        path: path.display().to_string(),
        source,
    };
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(error)?;
    let mut wiped = Wiped::default();
    for (id, token) in rows {
        // Tokens were read as text; compare as text (a BLOB never equals it).
        let Ok(token) = std::str::from_utf8(token.expose()) else {
            wiped.changed.push(*id);
            continue;
        };
        let removed = sqlx::query("DELETE FROM auth_tokens WHERE id = ? AND token = ?")
            .bind(id)
            .bind(token)
            .execute(&mut conn)
            .await
            .map_err(error)?
            .rows_affected();
        if removed > 0 {
            wiped.removed += removed;
            continue;
        }
        // Not removed: changed meanwhile, or already gone.
        let (still_there,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM auth_tokens WHERE id = ?")
                .bind(id)
                .fetch_one(&mut conn)
                .await
                .map_err(error)?;
        if still_there > 0 {
            wiped.changed.push(*id);
        }
    }
    let _ = sqlx::Connection::close(conn).await;
    Ok(wiped)
}

/// Reel's timestamps: `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) or Unix seconds.
fn parse_time(text: &str) -> Option<SystemTime> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    }
    let text = text.get(..19)?;
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// Which legacy keyring entries `import keyring` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringQuery {
    /// JellyTau's entry for one server and user.
    JellyTau {
        /// The server id.
        server_id: String,
        /// The user id.
        user_id: String,
    },
    /// Reel's entries (token and API key) for one source id.
    Reel {
        /// E.g. `plex_123`.
        source_id: String,
    },
    /// Every entry of this layout the Secret Service has (searched by
    /// attributes).
    Discover(legacy::Layout),
}

/// How long reading the keyring may take before the import gives up.
pub const KEYRING_TIMEOUT: Duration = Duration::from_secs(20);

/// Reads the legacy keyring entries `query` names. The keyring is only
/// read: a migrated entry stays until the app or the user removes it.
pub async fn read_keyring(query: KeyringQuery) -> Result<Vec<Candidate>, String> {
    // The keyring stores block, and the Secret Service one blocks even
    // when dropped: all of it runs on a plain thread.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keyring-import".into())
        .spawn(move || {
            let _ = tx.send(keyring_source::read(&query));
        })
        .map_err(|e| format!("cannot start the keyring reader: {e}"))?;
    match tokio::time::timeout(KEYRING_TIMEOUT, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the keyring reader stopped".into()),
        Err(_) => Err(format!(
            "the keyring did not answer within {KEYRING_TIMEOUT:?} (locked, waiting for a prompt?)"
        )),
    }
}

mod keyring_source {
    use std::collections::HashMap;
    use std::sync::Arc;

    use keyhaven_proto::legacy::{self, KeyringName, LegacyError, Location};
    use keyring_core::{CredentialStore, Entry};

    use super::{Candidate, KeyringQuery};
    use keyhaven::{CredentialKey, Secret};

    /// An entry's name and the key it maps to (or why it does not).
    type Named = (KeyringName, Result<CredentialKey, LegacyError>);

    pub(super) fn read(query: &KeyringQuery) -> Result<Vec<Candidate>, String> {
        // A key JellyTau's layout cannot hold unambiguously is refused
        // before the keyring is opened.
        let jellytau = match query {
            KeyringQuery::JellyTau { server_id, user_id } => {
                let key = CredentialKey::new(legacy::JELLYTAU_PROVIDER, server_id, user_id, "")
                    .map_err(|e| e.to_string())?;
                legacy::jellytau_name_of(&key).map_err(|e| format!("not importing: {e}"))?;
                Some(key)
            }
            _ => None,
        };
        let store = open()?;
        let names: Vec<Named> = match query {
            KeyringQuery::JellyTau { .. } => match &jellytau {
                Some(key) => located(&store, key)?,
                None => Vec::new(),
            },
            KeyringQuery::Reel { source_id } => {
                let mut out = Vec::new();
                for token_type in [legacy::REEL_TOKEN, "api_key"] {
                    let key =
                        legacy::source_key(source_id, token_type).map_err(|e| e.to_string())?;
                    out.extend(located(&store, &key)?);
                }
                out
            }
            KeyringQuery::Discover(layout) => all_names(&store)?
                .into_iter()
                .filter_map(|name| match legacy::classify(&name) {
                    Some((l, key)) if l == *layout => Some((name, key)),
                    _ => None,
                })
                .collect(),
        };
        let mut out = Vec::new();
        for (name, key) in names {
            let key = match key {
                // Which account it belongs to cannot be told: not even read.
                Err(LegacyError::Ambiguous(reason)) => {
                    out.push(Candidate {
                        skip: Some(reason),
                        ..failed(&name, String::new())
                    });
                    continue;
                }
                other => other.map_err(|e| e.to_string()),
            };
            let secret = match store
                .build(&name.service, &name.user, None)
                .and_then(|e| e.get_secret())
            {
                Ok(bytes) => Secret::new(bytes),
                Err(keyring_core::Error::NoEntry) => continue,
                Err(e) => {
                    out.push(failed(&name, format!("cannot read it: {e}")));
                    continue;
                }
            };
            out.push(Candidate {
                origin: format!("keyring {name}"),
                key,
                secret,
                label: Some("imported from a legacy keyring entry".into()),
                expires_at: None,
                row_id: None,
                skip: None,
            });
        }
        release(store);
        Ok(out)
    }

    /// The entries that exist at `key`'s legacy locations.
    fn located(store: &Arc<CredentialStore>, key: &CredentialKey) -> Result<Vec<Named>, String> {
        let mut out = Vec::new();
        for location in legacy::keyring_locations(key) {
            let names = match location {
                Location::Exact(name) => vec![name],
                Location::AnyUserOf(service) => search(store, Some(&service))?,
            };
            for name in names {
                if !out.iter().any(|(n, _)| n == &name) {
                    out.push((name, Ok(key.clone())));
                }
            }
        }
        Ok(out)
    }

    fn all_names(store: &Arc<CredentialStore>) -> Result<Vec<KeyringName>, String> {
        search(store, None)
    }

    fn search(
        store: &Arc<CredentialStore>,
        service: Option<&str>,
    ) -> Result<Vec<KeyringName>, String> {
        let mut spec = HashMap::new();
        if let Some(service) = service {
            spec.insert("service", service);
        }
        let found = store
            .search(&spec)
            .map_err(|e| format!("cannot search the keyring: {e}"))?;
        let mut names: Vec<KeyringName> = found
            .iter()
            .filter_map(name_of)
            .filter(|n| service.is_none_or(|s| n.service == s))
            .collect();
        names.sort_by(|a, b| (&a.service, &a.user).cmp(&(&b.service, &b.user)));
        names.dedup();
        Ok(names)
    }

    fn name_of(entry: &Entry) -> Option<KeyringName> {
        if let Some((service, user)) = entry.get_specifiers() {
            return Some(KeyringName { service, user });
        }
        let attributes = entry.get_attributes().ok()?;
        Some(KeyringName {
            service: attributes.get("service")?.clone(),
            user: attributes.get("username").cloned().unwrap_or_default(),
        })
    }

    fn failed(name: &KeyringName, reason: String) -> Candidate {
        Candidate {
            origin: format!("keyring {name}"),
            key: Err(reason),
            secret: Secret::default(),
            label: None,
            expires_at: None,
            row_id: None,
            skip: None,
        }
    }

    fn release(store: Arc<CredentialStore>) {
        drop(store);
    }

    #[cfg(target_os = "linux")]
    fn open() -> Result<Arc<CredentialStore>, String> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| std::path::Path::new(&d).join("bus"))
                .is_none_or(|bus| !bus.exists())
        {
            return Err("no D-Bus session bus, so no Secret Service to read".into());
        }
        let store: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new()
            .map_err(|e| format!("cannot reach the Secret Service: {e}"))?;
        Ok(store)
    }

    #[cfg(not(target_os = "linux"))]
    fn open() -> Result<Arc<CredentialStore>, String> {
        Err("importing from the keyring is only implemented for the Secret Service (Linux)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reel_times_parse() {
        let t = parse_time("2024-02-29 12:00:01.5").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_709_208_001
        );
        assert!(parse_time("soon").is_none());
        assert!(parse_time("1700000000").is_some());
    }

    #[test]
    fn json_lines_map_and_errors_never_echo_the_secret() {
        let c = parse_json_line(
            1,
            r#"{"provider":"plex","server_id":"","user_id":"ü::1","secret":"s3cr3t","label":"x","expires_at":1700000000}"#,
        );
        let key = c.key.unwrap();
        assert_eq!(
            (key.provider(), key.user_id(), key.token_type()),
            ("plex", "ü::1", "access_token")
        );
        assert_eq!(c.secret.expose(), b"s3cr3t");
        for bad in [
            r#"{"provider":"plex","secret":"s3cr3t""#,
            r#"{"provider":"p l","secret":"s3cr3t"}"#,
            r#"{"secret":"s3cr3t"}"#,
            r#"["s3cr3t"]"#,
        ] {
            let reason = parse_json_line(2, bad).key.unwrap_err();
            assert!(!reason.contains("s3cr3t"), "{reason}");
        }
    }
}
