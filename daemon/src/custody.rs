//! Key custody: where the data key lives.
//!
//! The store never sees where its key came from; it gets a [`DataKey`]. A tier
//! implements [`KeySource`]. This version implements the key-file tier
//! ([`KeyFile`]); the systemd-credential and OS-keyring tiers slot in beside
//! it without touching the store.
//!
//! A missing key is never replaced by a new one while the store holds data
//! sealed with the old one: that would orphan every credential.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::{DataKey, KEY_LEN};
use crate::fsutil;

/// Where a data key is kept, most protective first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTier {
    /// A systemd credential (`$CREDENTIALS_DIRECTORY`).
    SystemdCredential,
    /// The OS keyring (Secret Service, Keychain, Credential Manager).
    Keyring,
    /// A 0600 file beside the config.
    File,
}

impl KeyTier {
    /// The name reported by `Status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemdCredential => "systemd-credential",
            Self::Keyring => "keyring",
            Self::File => "file",
        }
    }
}

impl fmt::Display for KeyTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the data key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key failed.
    #[error("could not {what} the data key file {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file exists but is not a keyhaven key.
    #[error("the data key file {path} is not a keyhaven key ({reason}); restore it from a backup")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key file's permissions or owner are wrong.
    #[error(transparent)]
    Insecure(Box<crate::error::StartError>),
    /// The key is gone but the store holds data sealed with it.
    #[error(
        "the data key is missing ({source_desc}) but the store {store} holds credentials sealed \
         with key {key_ids}; keyhaven will not create a new key over existing data. Restore the \
         key (from a backup), or move the store aside to start empty"
    )]
    Missing {
        /// Where the key was looked for.
        source_desc: String,
        /// The database path.
        store: PathBuf,
        /// The key ids the store was sealed with.
        key_ids: String,
    },
    /// The key found is not the one that sealed the store.
    #[error(
        "the data key from {source_desc} (id {found}) is not the key the store {store} was sealed \
         with ({expected}); refusing to start. Restore the right key; nothing was changed"
    )]
    WrongKey {
        /// Where the key came from.
        source_desc: String,
        /// Its id.
        found: String,
        /// The ids the store expects.
        expected: String,
        /// The database path.
        store: PathBuf,
    },
    /// The random number generator failed.
    #[error("could not generate a data key: {0}")]
    Generate(#[from] crate::crypto::CryptoError),
}

/// One custody tier.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// Which tier this is.
    fn tier(&self) -> KeyTier;
    /// Where the key is, for people ("key file /home/me/.config/...").
    fn describe(&self) -> String;
    /// The key, or `None` when this tier holds none.
    fn load(&self) -> Result<Option<DataKey>, KeyError>;
    /// Stores a newly generated key. Fails if one is already there.
    fn create(&self, key: &DataKey) -> Result<(), KeyError>;
}

const FILE_HEADER: &str = "keyhaven-data-key-v1 ";

/// The key-file tier: `keyhaven-data-key-v1 <64 hex digits>` in a 0600 file
/// inside a 0700 directory. It protects copies of the database alone
/// (backups, sync folders), not against programs running as the user.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// The key file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn malformed(&self, reason: &'static str) -> KeyError {
        KeyError::Malformed {
            path: self.path.clone(),
            reason,
        }
    }
}

impl KeySource for KeyFile {
    fn tier(&self) -> KeyTier {
        KeyTier::File
    }

    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }

    fn load(&self) -> Result<Option<DataKey>, KeyError> {
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyError::Io {
                    what: "inspect",
                    path: self.path.clone(),
                    source,
                });
            }
            Ok(_) => {}
        }
        fsutil::verify_private(&self.path, false).map_err(|e| KeyError::Insecure(Box::new(e)))?;
        let text =
            Zeroizing::new(
                std::fs::read_to_string(&self.path).map_err(|source| KeyError::Io {
                    what: "read",
                    path: self.path.clone(),
                    source,
                })?,
            );
        let hex = text
            .trim_end()
            .strip_prefix(FILE_HEADER)
            .ok_or_else(|| self.malformed("missing header"))?;
        if hex.len() != KEY_LEN * 2 {
            return Err(self.malformed("wrong length"));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| self.malformed("not hexadecimal"))?;
        }
        Ok(Some(DataKey::from_bytes(*bytes)))
    }

    fn create(&self, key: &DataKey) -> Result<(), KeyError> {
        if let Some(dir) = self.path.parent() {
            fsutil::ensure_private_dir(dir).map_err(|e| KeyError::Insecure(Box::new(e)))?;
        }
        let mut text = Zeroizing::new(String::with_capacity(FILE_HEADER.len() + 2 * KEY_LEN + 1));
        text.push_str(FILE_HEADER);
        for b in key.expose_bytes() {
            text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            text.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        text.push('\n');
        fsutil::write_new_private_file(&self.path, text.as_bytes()).map_err(|source| KeyError::Io {
            what: "create",
            path: self.path.clone(),
            source,
        })
    }
}

/// The data key in use and where it came from.
#[derive(Debug)]
pub struct LoadedKey {
    /// The key.
    pub key: DataKey,
    /// Its tier.
    pub tier: KeyTier,
    /// Where it is, for `Status` and logs.
    pub source_desc: String,
    /// True when this start generated it.
    pub created: bool,
}

/// Loads the key from `source`, or generates and stores one when the store
/// was never sealed (`store_key_ids` empty). Refuses when the store was
/// sealed but the key is gone, or when the key is not one the store knows.
pub fn obtain(
    source: &dyn KeySource,
    store_key_ids: &[String],
    store_path: &Path,
) -> Result<LoadedKey, KeyError> {
    match source.load()? {
        Some(key) => {
            if !store_key_ids.is_empty() && !store_key_ids.iter().any(|id| id == key.id()) {
                return Err(KeyError::WrongKey {
                    source_desc: source.describe(),
                    found: key.id().to_owned(),
                    expected: store_key_ids.join(", "),
                    store: store_path.to_path_buf(),
                });
            }
            Ok(LoadedKey {
                key,
                tier: source.tier(),
                source_desc: source.describe(),
                created: false,
            })
        }
        None if store_key_ids.is_empty() => {
            let key = DataKey::generate()?;
            source.create(&key)?;
            Ok(LoadedKey {
                key,
                tier: source.tier(),
                source_desc: source.describe(),
                created: true,
            })
        }
        None => Err(KeyError::Missing {
            source_desc: source.describe(),
            store: store_path.to_path_buf(),
            key_ids: store_key_ids.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn key_file_is_created_0600_and_reloads_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let kf = KeyFile::new(tmp.path().join("cfg/keyhaven.key"));
        let db = tmp.path().join("db");
        let first = obtain(&kf, &[], &db).unwrap();
        assert!(first.created);
        let mode = std::fs::metadata(kf.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(tmp.path().join("cfg"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let again = obtain(&kf, &[first.key.id().to_owned()], &db).unwrap();
        assert!(!again.created);
        assert_eq!(again.key.id(), first.key.id());
    }

    #[test]
    fn a_missing_key_is_never_replaced_over_sealed_data() {
        let tmp = tempfile::tempdir().unwrap();
        let kf = KeyFile::new(tmp.path().join("k"));
        let err = obtain(&kf, &["0011223344556677".into()], Path::new("/db")).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }));
        assert!(
            err.to_string().contains("will not create a new key"),
            "{err}"
        );
        assert!(!kf.path().exists());
    }

    #[test]
    fn a_foreign_or_damaged_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let kf = KeyFile::new(tmp.path().join("cfg/k"));
        obtain(&kf, &[], Path::new("/db")).unwrap();
        let err = obtain(&kf, &["ffffffffffffffff".into()], Path::new("/db")).unwrap_err();
        assert!(matches!(err, KeyError::WrongKey { .. }), "{err}");
        std::fs::write(kf.path(), "garbage").unwrap();
        let err = obtain(&kf, &[], Path::new("/db")).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        std::fs::set_permissions(kf.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = obtain(&kf, &[], Path::new("/db")).unwrap_err();
        assert!(err.to_string().contains("mode is 644"), "{err}");
    }
}
