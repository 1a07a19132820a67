//! Key custody: where the data key lives, and how it is found again.
//!
//! Three tiers, tried in this order; the first that holds the store's key
//! is used and reported by `Status`:
//!
//! 1. **systemd credential**: `$CREDENTIALS_DIRECTORY/<credential_name>`,
//!    e.g. set up with `systemd-creds encrypt` and `LoadCredentialEncrypted=`
//!    (TPM- or host-key-sealed; read-only to keyhaven);
//! 2. **keyring**: the OS keyring (Secret Service, Keychain, Credential
//!    Manager), each call bounded by a timeout (see `keyring.rs`);
//! 3. **file**: a 0600 key file in a 0700 directory.
//!
//! Each writable tier has two slots: *current* and *pending*. Rotation
//! writes the new key to the pending slot before re-sealing, so whatever
//! point a crash interrupts it at, one of the slots holds the key the rows
//! are sealed with (see `vault.rs`, `Vault::rotate`).
//!
//! A missing key is never replaced by a new one while the store holds data
//! sealed with the old one: that would orphan every credential.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::fsutil;
use crate::keys::keyring::{Keyring, KeyringError};
use crate::store::crypto::{DataKey, KEY_LEN};

/// Where a data key is kept, most protective first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyTier {
    /// A systemd credential (`$CREDENTIALS_DIRECTORY`).
    SystemdCredential,
    /// The OS keyring.
    Keyring,
    /// A 0600 file beside the config.
    File,
}

impl KeyTier {
    /// All tiers, in the order they are tried.
    pub const ALL: [KeyTier; 3] = [Self::SystemdCredential, Self::Keyring, Self::File];

    /// The name reported by `Status` and used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemdCredential => "systemd-credential",
            Self::Keyring => "keyring",
            Self::File => "file",
        }
    }

    /// True when this tier protects the key less than `other` (it comes
    /// later in [`KeyTier::ALL`]).
    pub fn weaker_than(self, other: KeyTier) -> bool {
        let rank = |t: KeyTier| Self::ALL.iter().position(|a| *a == t);
        rank(self) > rank(other)
    }

    /// Parses a name given in the config or on the command line.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for KeyTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of a tier's two places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The key in use.
    Current,
    /// A key being rotated in.
    Pending,
}

impl From<KeyError> for crate::error::StartError {
    fn from(e: KeyError) -> Self {
        crate::error::StartError::Key(Box::new(e))
    }
}

/// Why the data key could not be had or kept.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("could not {what} the data key file {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored key is not a keyhaven key.
    #[error("the data key in {place} is not a keyhaven key ({reason}); restore it from a backup")]
    Malformed {
        /// Where it was read.
        place: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key file's permissions or owner are wrong.
    #[error(transparent)]
    Insecure(Box<crate::error::StartError>),
    /// The keyring failed.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The tier cannot be written (a systemd credential).
    #[error("the {0} tier is read-only to keyhaven")]
    ReadOnly(KeyTier),
    /// The tier pinned by `key_source` is not usable.
    #[error(
        "key_source = \"{tier}\" is set, but {problem}; keyhavend will not fall back to another \
         tier. Fix it, or change key_source in the config"
    )]
    Pinned {
        /// The pinned tier.
        tier: KeyTier,
        /// What is wrong with it.
        problem: String,
    },
    /// The random number generator failed.
    #[error("could not generate a data key: {0}")]
    Generate(#[from] crate::store::crypto::CryptoError),
}

/// The settings custody needs.
#[derive(Debug, Clone)]
pub struct CustodyConfig {
    /// `$CREDENTIALS_DIRECTORY`, when systemd provides one.
    pub credentials_dir: Option<PathBuf>,
    /// The credential's file name inside it.
    pub credential_name: String,
    /// The key file (file tier).
    pub key_file: PathBuf,
    /// The keyring.
    pub keyring: Keyring,
    /// `key_source`: use only this tier.
    pub pinned: Option<KeyTier>,
}

/// What probing one tier found.
#[derive(Debug)]
pub enum Probe {
    /// The tier answered; these slots hold keys.
    Keys {
        /// The current slot.
        current: Option<Box<DataKey>>,
        /// The pending slot.
        pending: Option<Box<DataKey>>,
    },
    /// The tier cannot be used now; why.
    Unavailable(String),
    /// Not set up (systemd credential without `$CREDENTIALS_DIRECTORY`).
    NotConfigured,
}

impl Probe {
    fn is_reachable(&self) -> bool {
        matches!(self, Self::Keys { .. })
    }
}

/// What a tier was found to hold; its text form is what `Status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierState {
    /// It holds the key in use.
    Active,
    /// It holds a key, not the one in use.
    HoldsKey,
    /// Reachable and empty.
    Empty,
    /// Configured but not reachable (the detail says why).
    Unavailable,
    /// Not set up on this machine.
    NotConfigured,
    /// Not looked at: a stronger tier holds the key.
    Skipped,
}

impl TierState {
    /// The name `Status` reports (`keyhaven.v1.KeyTierState.state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::HoldsKey => "holds-key",
            Self::Empty => "empty",
            Self::Unavailable => "unavailable",
            Self::NotConfigured => "not-configured",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for TierState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier's state, for `Status` and `keyhaven doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierReport {
    /// The tier.
    pub tier: KeyTier,
    /// What it holds.
    pub state: TierState,
    /// Details for people (key id, path, error).
    pub detail: String,
}

/// The outcome of looking for the store's key.
#[derive(Debug)]
pub enum Resolution {
    /// Found: use `key` from `tier`/`slot`.
    Ready {
        /// The key.
        key: Box<DataKey>,
        /// Its tier.
        tier: KeyTier,
        /// Its slot (Pending: an interrupted rotation to finish).
        slot: Slot,
    },
    /// A new store: generate a key and keep it in `tier`.
    Generate {
        /// The tier to keep it in.
        tier: KeyTier,
    },
    /// The key is not available now; serve UNAVAILABLE and retry.
    Waiting {
        /// What is missing, in words a person can act on.
        problem: String,
    },
}

const FILE_HEADER: &str = "keyhaven-data-key-v1 ";

/// The text form of a key: `keyhaven-data-key-v1 <64 hex digits>\n`.
pub fn key_to_text(key: &DataKey) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(FILE_HEADER.len() + 2 * KEY_LEN + 1));
    text.push_str(FILE_HEADER);
    for b in key.expose_bytes() {
        text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    text.push('\n');
    text
}

/// Parses the text form, or 32 raw bytes (a credential made with
/// `systemd-creds encrypt` from random bytes).
pub fn key_from_bytes(bytes: &[u8]) -> Result<DataKey, &'static str> {
    if bytes.len() == KEY_LEN {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        raw.copy_from_slice(bytes);
        return Ok(DataKey::from_bytes(&raw));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "neither text nor 32 raw bytes")?;
    let hex = text
        .trim_end()
        .strip_prefix(FILE_HEADER)
        .ok_or("missing header")?;
    if hex.len() != KEY_LEN * 2 {
        return Err("wrong length");
    }
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or("not hexadecimal")?, 16)
            .map_err(|_| "not hexadecimal")?;
    }
    Ok(DataKey::from_bytes(&raw))
}

/// Key custody for one store.
#[derive(Debug, Clone)]
pub struct Custody {
    config: CustodyConfig,
    store_id: String,
}

impl Custody {
    /// Custody for the store with id `store_id` (keyring entries are named
    /// after it, so two stores of one user do not share a key).
    pub fn new(config: CustodyConfig, store_id: &str) -> Self {
        Self {
            config,
            store_id: store_id.to_owned(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CustodyConfig {
        &self.config
    }

    /// The tiers to consider, honouring `key_source`. The systemd
    /// credential tier exists only where systemd does (Linux): elsewhere it
    /// is neither probed nor reported, unless `key_source` names it.
    pub fn tiers(&self) -> Vec<KeyTier> {
        match self.config.pinned {
            Some(t) => vec![t],
            None => KeyTier::ALL
                .into_iter()
                .filter(|t| *t != KeyTier::SystemdCredential || cfg!(target_os = "linux"))
                .collect(),
        }
    }

    fn keyring_user(&self, slot: Slot) -> String {
        match slot {
            Slot::Current => format!("data-key {}", self.store_id),
            Slot::Pending => format!("data-key-next {}", self.store_id),
        }
    }

    fn file_path(&self, slot: Slot) -> PathBuf {
        match slot {
            Slot::Current => self.config.key_file.clone(),
            Slot::Pending => {
                let mut p = self.config.key_file.as_os_str().to_owned();
                p.push(".next");
                PathBuf::from(p)
            }
        }
    }

    fn credential_path(&self) -> Option<PathBuf> {
        self.config
            .credentials_dir
            .as_ref()
            .map(|d| d.join(&self.config.credential_name))
    }

    /// Where a tier keeps its key, for people.
    pub fn describe(&self, tier: KeyTier) -> String {
        match tier {
            KeyTier::SystemdCredential => match self.credential_path() {
                Some(p) => format!("systemd credential {}", p.display()),
                None => "systemd credential (no $CREDENTIALS_DIRECTORY)".into(),
            },
            KeyTier::Keyring => format!(
                "{} entry \"{}\" / \"{}\"",
                self.config.keyring.describe(),
                crate::keys::keyring::SERVICE,
                self.keyring_user(Slot::Current)
            ),
            KeyTier::File => format!("key file {}", self.config.key_file.display()),
        }
    }

    /// Reads one slot of one tier.
    pub async fn read(&self, tier: KeyTier, slot: Slot) -> Result<Option<DataKey>, KeyError> {
        match tier {
            KeyTier::SystemdCredential => {
                let Some(path) = self.credential_path().filter(|_| slot == Slot::Current) else {
                    return Ok(None);
                };
                read_key_file(&path, false)
            }
            KeyTier::Keyring => {
                let user = self.keyring_user(slot);
                let bytes = self.config.keyring.call(move |k| k.get(&user)).await?;
                let Some(bytes) = bytes.map(Zeroizing::new) else {
                    return Ok(None);
                };
                key_from_bytes(&bytes)
                    .map(Some)
                    .map_err(|reason| KeyError::Malformed {
                        place: self.describe(KeyTier::Keyring),
                        reason,
                    })
            }
            KeyTier::File => read_key_file(&self.file_path(slot), true),
        }
    }

    /// Writes `key` into one slot of one tier, durably, and reads it back.
    pub async fn write(&self, tier: KeyTier, slot: Slot, key: &DataKey) -> Result<(), KeyError> {
        match tier {
            KeyTier::SystemdCredential => return Err(KeyError::ReadOnly(tier)),
            KeyTier::Keyring => {
                let user = self.keyring_user(slot);
                let text = key_to_text(key);
                // Wiped on drop even if the call times out before it runs.
                let bytes = Zeroizing::new(text.as_bytes().to_vec());
                self.config
                    .keyring
                    .call(move |k| k.set(&user, &bytes))
                    .await?;
            }
            KeyTier::File => write_key_file(&self.file_path(slot), key)?,
        }
        match self.read(tier, slot).await? {
            Some(back) if back.id() == key.id() => Ok(()),
            _ => Err(KeyError::Malformed {
                place: self.describe(tier),
                reason: "the key read back differs from the key written",
            }),
        }
    }

    /// Removes one slot of one tier (absent is fine).
    pub async fn erase(&self, tier: KeyTier, slot: Slot) -> Result<(), KeyError> {
        match tier {
            KeyTier::SystemdCredential => Err(KeyError::ReadOnly(tier)),
            KeyTier::Keyring => {
                let user = self.keyring_user(slot);
                Ok(self.config.keyring.call(move |k| k.delete(&user)).await?)
            }
            KeyTier::File => {
                let path = self.file_path(slot);
                match std::fs::remove_file(&path) {
                    Ok(()) => sync_parent(&path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(KeyError::Io {
                        what: "remove",
                        path,
                        source,
                    }),
                }
            }
        }
    }

    /// What one tier holds now.
    pub async fn probe(&self, tier: KeyTier) -> Probe {
        if tier == KeyTier::SystemdCredential && self.credential_path().is_none() {
            return Probe::NotConfigured;
        }
        if tier == KeyTier::Keyring && self.config.keyring.is_disabled() {
            return Probe::NotConfigured;
        }
        let current = match self.read(tier, Slot::Current).await {
            Ok(k) => k,
            Err(e) => return Probe::Unavailable(e.to_string()),
        };
        let pending = if tier == KeyTier::SystemdCredential {
            None
        } else {
            match self.read(tier, Slot::Pending).await {
                Ok(k) => k,
                Err(e) => return Probe::Unavailable(e.to_string()),
            }
        };
        Probe::Keys {
            current: current.map(Box::new),
            pending: pending.map(Box::new),
        }
    }

    /// Looks through the tiers for a key that opens the store. `needed`
    /// holds the key ids the store's rows are sealed with; empty means a
    /// new store. Also returns a report per tier.
    pub async fn resolve(
        &self,
        needed: &[String],
    ) -> Result<(Resolution, Vec<TierReport>), KeyError> {
        let mut reports = Vec::new();
        let mut found: Option<(Box<DataKey>, KeyTier, Slot)> = None;
        let mut foreign = Vec::new();
        let mut unavailable = Vec::new();
        let mut first_writable = None;
        for tier in self.tiers() {
            if found.is_some() {
                reports.push(TierReport {
                    tier,
                    state: TierState::Skipped,
                    detail: self.describe(tier),
                });
                continue;
            }
            let probe = self.probe(tier).await;
            if probe.is_reachable()
                && tier != KeyTier::SystemdCredential
                && first_writable.is_none()
            {
                first_writable = Some(tier);
            }
            match probe {
                Probe::NotConfigured => reports.push(TierReport {
                    tier,
                    state: TierState::NotConfigured,
                    detail: self.describe(tier),
                }),
                Probe::Unavailable(why) => {
                    unavailable.push(format!("{tier}: {why}"));
                    reports.push(TierReport {
                        tier,
                        state: TierState::Unavailable,
                        detail: why,
                    });
                }
                Probe::Keys { current, pending } => {
                    let fits =
                        |k: &DataKey| needed.is_empty() || needed.iter().any(|id| id == k.id());
                    let mut holding = Vec::new();
                    for (slot, key) in [(Slot::Current, current), (Slot::Pending, pending)] {
                        let Some(key) = key else { continue };
                        holding.push(key.id().to_owned());
                        if found.is_none() && fits(&key) {
                            found = Some((key, tier, slot));
                        } else if !fits(&key) {
                            foreign.push(format!("{} (in {tier})", key.id()));
                        }
                    }
                    let state = match (&found, holding.is_empty()) {
                        (Some((_, t, _)), _) if *t == tier => TierState::Active,
                        (_, true) => TierState::Empty,
                        (_, false) => TierState::HoldsKey,
                    };
                    let detail = if holding.is_empty() {
                        self.describe(tier)
                    } else {
                        format!("{}; key id {}", self.describe(tier), holding.join(", "))
                    };
                    reports.push(TierReport {
                        tier,
                        state,
                        detail,
                    });
                }
            }
        }
        if let Some((key, tier, slot)) = found {
            return Ok((Resolution::Ready { key, tier, slot }, reports));
        }
        if let Some(tier) = self.config.pinned
            && !unavailable.is_empty()
        {
            return Err(KeyError::Pinned {
                tier,
                problem: unavailable.join("; "),
            });
        }
        if needed.is_empty() {
            return match first_writable {
                Some(tier) => Ok((Resolution::Generate { tier }, reports)),
                None => Err(KeyError::Pinned {
                    tier: self.config.pinned.unwrap_or(KeyTier::File),
                    problem: format!("no tier can keep a new key ({})", unavailable.join("; ")),
                }),
            };
        }
        let mut problem = format!(
            "the data key this store is sealed with (id {}) was not found",
            needed.join(", ")
        );
        if !unavailable.is_empty() {
            problem.push_str(&format!(
                "; not reachable: {}. If your keyring is locked, unlock it: keyhavend retries on \
                 its own",
                unavailable.join("; ")
            ));
        }
        if !foreign.is_empty() {
            problem.push_str(&format!(
                "; other keys present that do not fit this store: {}",
                foreign.join(", ")
            ));
        }
        if unavailable.is_empty() {
            problem.push_str(
                ". Restore the key (file or keyring entry) from a backup; keyhaven never creates \
                 a new key over existing data",
            );
        }
        Ok((Resolution::Waiting { problem }, reports))
    }
}

fn read_key_file(path: &Path, must_be_private: bool) -> Result<Option<DataKey>, KeyError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::Io {
                what: "inspect",
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(_) => {}
    }
    if must_be_private {
        fsutil::verify_private(path, false).map_err(|e| KeyError::Insecure(Box::new(e)))?;
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?);
    key_from_bytes(&bytes)
        .map(Some)
        .map_err(|reason| KeyError::Malformed {
            place: path.display().to_string(),
            reason,
        })
}

/// Replaces `path` atomically: a new 0600 temporary file, fsync, rename,
/// fsync of the directory (Unix).
fn write_key_file(path: &Path, key: &DataKey) -> Result<(), KeyError> {
    let io = |what, source| KeyError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fsutil::ensure_private_dir(dir).map_err(|e| KeyError::Insecure(Box::new(e)))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove a stale temporary copy of", e)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| io("create", e))?;
    file.write_all(key_to_text(key).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("replace", e))?;
    sync_parent(path)
}

/// Makes a new or removed name in the key file's directory durable. Unix
/// only: Windows refuses to open a directory as a file (Access denied), and
/// NTFS journals its metadata, so there is nothing to sync there.
#[cfg(unix)]
fn sync_parent(path: &Path) -> Result<(), KeyError> {
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| KeyError::Io {
                what: "sync the directory of",
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn sync_parent(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::keys::keyring::{CoreKeyring, KeyringChoice};

    fn custody(dir: &Path, keyring: KeyringChoice, pinned: Option<KeyTier>) -> Custody {
        Custody::new(
            CustodyConfig {
                credentials_dir: None,
                credential_name: "keyhaven.key".into(),
                key_file: dir.join("cfg/keyhaven.key"),
                keyring: Keyring::new(keyring, Duration::from_secs(2)),
                pinned,
            },
            "store-1",
        )
    }

    fn mock() -> KeyringChoice {
        let store: Arc<keyring_core::CredentialStore> = keyring_core::mock::Store::new().unwrap();
        KeyringChoice::Custom(Arc::new(CoreKeyring::new(store)))
    }

    #[tokio::test]
    async fn key_file_round_trip_is_atomic_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let c = custody(tmp.path(), KeyringChoice::Disabled, None);
        let key = DataKey::generate().unwrap();
        c.write(KeyTier::File, Slot::Current, &key).await.unwrap();
        let mode = std::fs::metadata(tmp.path().join("cfg/keyhaven.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = c.read(KeyTier::File, Slot::Current).await.unwrap().unwrap();
        assert_eq!(back.id(), key.id());
        let other = DataKey::generate().unwrap();
        c.write(KeyTier::File, Slot::Current, &other).await.unwrap();
        assert_eq!(
            c.read(KeyTier::File, Slot::Current)
                .await
                .unwrap()
                .unwrap()
                .id(),
            other.id()
        );
        assert!(!tmp.path().join("cfg/keyhaven.key.tmp").exists());
    }

    #[tokio::test]
    async fn a_new_store_prefers_the_keyring_then_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (r, _) = custody(tmp.path(), mock(), None)
            .resolve(&[])
            .await
            .unwrap();
        assert!(
            matches!(
                r,
                Resolution::Generate {
                    tier: KeyTier::Keyring
                }
            ),
            "{r:?}"
        );
        let (r, reports) = custody(tmp.path(), KeyringChoice::Disabled, None)
            .resolve(&[])
            .await
            .unwrap();
        assert!(
            matches!(
                r,
                Resolution::Generate {
                    tier: KeyTier::File
                }
            ),
            "{r:?}"
        );
        assert_eq!(reports[1].state, TierState::NotConfigured);
    }

    #[tokio::test]
    async fn a_missing_key_means_waiting_never_a_new_key() {
        let tmp = tempfile::tempdir().unwrap();
        let c = custody(tmp.path(), KeyringChoice::Disabled, None);
        let (r, _) = c.resolve(&["0011223344556677".into()]).await.unwrap();
        let Resolution::Waiting { problem } = r else {
            panic!("{r:?}")
        };
        assert!(
            problem.contains("0011223344556677") && problem.contains("never creates"),
            "{problem}"
        );
        assert!(!tmp.path().join("cfg/keyhaven.key").exists());
    }

    #[tokio::test]
    async fn a_foreign_or_damaged_key_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let c = custody(tmp.path(), KeyringChoice::Disabled, None);
        let key = DataKey::generate().unwrap();
        c.write(KeyTier::File, Slot::Current, &key).await.unwrap();
        let (r, _) = c.resolve(&["ffffffffffffffff".into()]).await.unwrap();
        let Resolution::Waiting { problem } = r else {
            panic!("{r:?}")
        };
        assert!(
            problem.contains(key.id()) && problem.contains("do not fit"),
            "{problem}"
        );
        let path = tmp.path().join("cfg/keyhaven.key");
        std::fs::write(&path, "garbage").unwrap();
        let err = c.read(KeyTier::File, Slot::Current).await.unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = c.read(KeyTier::File, Slot::Current).await.unwrap_err();
        assert!(err.to_string().contains("mode is 644"), "{err}");
    }

    #[tokio::test]
    async fn the_pending_slot_is_found_after_an_interrupted_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let c = custody(tmp.path(), mock(), None);
        let old = DataKey::generate().unwrap();
        let new = DataKey::generate().unwrap();
        c.write(KeyTier::Keyring, Slot::Current, &old)
            .await
            .unwrap();
        c.write(KeyTier::Keyring, Slot::Pending, &new)
            .await
            .unwrap();
        let (r, _) = c.resolve(&[new.id().to_owned()]).await.unwrap();
        let Resolution::Ready { key, tier, slot } = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (key.id(), tier, slot),
            (new.id(), KeyTier::Keyring, Slot::Pending)
        );
    }

    #[tokio::test]
    async fn a_pinned_tier_that_is_unavailable_fails_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        #[derive(Debug)]
        struct Locked;
        impl crate::keys::keyring::KeyringBackend for Locked {
            fn get(&self, _: &str) -> Result<Option<Vec<u8>>, KeyringError> {
                Err(KeyringError::Locked("collection is locked".into()))
            }
            fn set(&self, _: &str, _: &[u8]) -> Result<(), KeyringError> {
                Err(KeyringError::Locked("collection is locked".into()))
            }
            fn delete(&self, _: &str) -> Result<(), KeyringError> {
                Ok(())
            }
            fn describe(&self) -> String {
                "locked".into()
            }
        }
        let c = custody(
            tmp.path(),
            KeyringChoice::Custom(Arc::new(Locked)),
            Some(KeyTier::Keyring),
        );
        let err = c.resolve(&[]).await.unwrap_err().to_string();
        assert!(
            err.contains("key_source = \"keyring\"") && err.contains("locked"),
            "{err}"
        );
    }

    #[test]
    fn raw_and_text_keys_parse() {
        let key = DataKey::generate().unwrap();
        assert_eq!(key_from_bytes(key.expose_bytes()).unwrap().id(), key.id());
        assert_eq!(
            key_from_bytes(key_to_text(&key).as_bytes()).unwrap().id(),
            key.id()
        );
        assert!(key_from_bytes(b"keyhaven-data-key-v1 zz").is_err());
    }
}
