//! Read-through to the legacy apps' keyring entries on a `Retrieve` miss.
//!
//! When a key is not in the store, the daemon looks where JellyTau and Reel
//! kept the same credential (the layouts are in
//! [`keyhaven_proto::legacy`]). A token found there is written into the
//! store (only if still absent), read back and compared, and only then
//! served; with `legacy_keyring_cleanup = true` the legacy entry is removed
//! after that verified write, never before. So a crash at any point leaves
//! the token in the store, in the keyring, or in both.
//!
//! A key whose JellyTau name would not read back as that same key (an id
//! with `::`, or a `:` at the separator) is never looked up there: another
//! account's entry could answer it.
//!
//! Misses for the same key are serialised by a per-key lock, so concurrent
//! misses migrate once: the second caller finds the row the first wrote.
//! The whole keyring lookup is one call bounded by the keyring timeout; an
//! absent, locked or slow keyring is a debug line and the normal NOT_FOUND.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyhaven_proto::legacy::{self, KeyringName, Location};
use keyhaven_proto::{CanonicalKey, Secret};

use crate::identity::Identity;
use crate::keys::keyring::{Keyring, KeyringError};
use crate::store::audit::{AuditLog, Record};
use crate::store::{AttributeChange, Metadata, Put, Store, StoreError};

/// What the read-through does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Look in the legacy layouts at all (`legacy_read_through`).
    pub enabled: bool,
    /// Remove the legacy entry after a verified migration
    /// (`legacy_keyring_cleanup`).
    pub cleanup: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            enabled: true,
            cleanup: false,
        }
    }
}

/// The read-through: options, the keyring and the per-key locks.
#[derive(Debug)]
pub struct ReadThrough {
    options: Options,
    keyring: Keyring,
    locks: Mutex<HashMap<CanonicalKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// A legacy entry that was found, with its secret.
struct Found {
    name: KeyringName,
    secret: Secret,
}

impl ReadThrough {
    /// A read-through over `keyring`.
    pub fn new(options: Options, keyring: Keyring) -> Self {
        Self {
            options,
            keyring,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Called after `store` had no row for `key`: migrates the credential
    /// from a legacy keyring entry and returns it, or returns the original
    /// NOT_FOUND when there is none (or the keyring cannot be used).
    pub async fn on_miss(
        &self,
        store: &Store,
        key: &CanonicalKey,
        audit: &AuditLog,
        miss: StoreError,
    ) -> Result<(Metadata, Secret), StoreError> {
        let locations = legacy::keyring_locations(key);
        if !self.options.enabled || locations.is_empty() || self.keyring.is_disabled() {
            if let Err(e @ legacy::LegacyError::Ambiguous(_)) = legacy::jellytau_name_of(key) {
                tracing::debug!(%key, reason = %e, "not looked up in the legacy keyring");
            }
            return Err(miss);
        }
        let lock = self.lock_for(key);
        let _guard = lock.lock().await;
        let result = self.migrate(store, key, locations, audit, miss).await;
        drop(_guard);
        self.release(key, &lock);
        result
    }

    async fn migrate(
        &self,
        store: &Store,
        key: &CanonicalKey,
        locations: Vec<Location>,
        audit: &AuditLog,
        miss: StoreError,
    ) -> Result<(Metadata, Secret), StoreError> {
        // Another miss may have migrated it while this one waited.
        match store.get(key).await {
            Err(StoreError::NotFound { .. }) => {}
            other => return other,
        }
        let found = match self.keyring.call(move |k| lookup(k, &locations)).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::debug!(%key, "not in the store nor in any legacy keyring entry");
                return Err(miss);
            }
            Err(e) => {
                tracing::debug!(%key, error = %e, "legacy keyring not usable; answering not found");
                return Err(miss);
            }
        };
        let daemon = daemon_identity();
        let put = Put {
            key: key.clone(),
            secret: found.secret.clone(),
            label: Some("migrated from a legacy keyring entry".into()),
            expires_at: None,
            expected_revision: Some(0),
            attributes: AttributeChange::Keep,
        };
        match store.put(put, &daemon).await {
            Ok(_) => crate::fault::point("legacy:after-store"),
            // Stored by an app meanwhile: that value wins.
            Err(StoreError::Conflict { .. }) => return store.get(key).await,
            Err(e) => {
                tracing::warn!(%key, legacy = %found.name, error = %e,
                    "migrating a legacy keyring entry failed; it stays in the keyring");
                record(audit, key, "FAILED", format!("store: {e}")).await;
                return Err(e);
            }
        }
        let (meta, secret) = store.get(key).await?;
        if secret.expose() != found.secret.expose() {
            tracing::warn!(%key, legacy = %found.name,
                "the migrated credential did not read back the same; the legacy entry is kept");
            record(
                audit,
                key,
                "FAILED",
                format!("read-back differs; {} kept", found.name),
            )
            .await;
            return Ok((meta, secret));
        }
        tracing::info!(%key, legacy = %found.name, "migrated a legacy keyring entry into the store");
        let mut detail = format!("from {}", found.name);
        if self.options.cleanup {
            crate::fault::point("legacy:before-cleanup");
            let name = found.name.clone();
            match self
                .keyring
                .call(move |k| k.delete_in(&name.service, &name.user))
                .await
            {
                Ok(()) => {
                    tracing::info!(%key, legacy = %found.name, "removed the migrated legacy keyring entry");
                    detail.push_str("; legacy entry removed");
                }
                Err(e) => {
                    tracing::warn!(%key, legacy = %found.name, error = %e,
                        "could not remove the migrated legacy keyring entry");
                    detail.push_str(&format!("; legacy entry not removed: {e}"));
                }
            }
        }
        record(audit, key, "OK", detail).await;
        Ok((meta, secret))
    }

    fn lock_for(&self, key: &CanonicalKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    /// Forgets the key's lock once nobody else holds or waits for it.
    fn release(&self, key: &CanonicalKey, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else has it.
        if Arc::strong_count(lock) == 2 {
            locks.remove(key);
        }
    }
}

/// Looks in `locations` in order; the first entry holding a secret wins.
fn lookup(
    keyring: &dyn crate::keys::keyring::KeyringBackend,
    locations: &[Location],
) -> Result<Option<Found>, KeyringError> {
    for location in locations {
        let names = match location {
            Location::Exact(name) => vec![name.clone()],
            Location::AnyUserOf(service) => match keyring.names(Some(service)) {
                Ok(names) => names,
                // A keyring that cannot search still answers exact names;
                // say so, or this placement is never found without a trace.
                Err(KeyringError::Other(e)) => {
                    tracing::warn!(%service, error = %e,
                        "could not search the keyring for a legacy entry; looking in the other places");
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        for name in names {
            if let Some(bytes) = keyring.get_in(&name.service, &name.user)?
                && !bytes.is_empty()
            {
                let Some(secret) = legacy_secret(bytes) else {
                    tracing::warn!(legacy = %name,
                        "a legacy keyring entry is not a UTF-16 string as keyring-rs writes on \
                         Windows; it is left alone");
                    continue;
                };
                return Ok(Some(Found { name, secret }));
            }
        }
    }
    Ok(None)
}

/// The token an app stored in its entry. The apps stored strings with
/// keyring-rs' `set_password`, which on Windows writes them as UTF-16LE
/// (the Credential Manager's native text) and elsewhere as UTF-8; the token
/// they read back, and that keyhaven must serve byte for byte, is the UTF-8
/// string. `None` for bytes the app itself could not read as a string.
fn legacy_secret(bytes: Vec<u8>) -> Option<Secret> {
    if cfg!(windows) {
        return utf16le_to_utf8(&bytes).map(|s| Secret::new(s.into_bytes()));
    }
    Some(Secret::new(bytes))
}

/// Decodes UTF-16LE strictly (odd lengths and unpaired surrogates fail, as
/// they do in keyring-rs' `get_password`). The intermediate copy is wiped.
fn utf16le_to_utf8(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units = zeroize::Zeroizing::new(
        bytes
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect::<Vec<u16>>(),
    );
    String::from_utf16(&units).ok()
}

/// The daemon itself, as the actor of migrations.
pub fn daemon_identity() -> Identity {
    let mut id = Identity::of_process(
        crate::net::platform::own_uid(),
        i32::try_from(std::process::id()).unwrap_or(0),
    );
    if id.executable.is_none() {
        id.executable = Some("keyhavend".into());
    }
    id
}

/// A migration's record. Its failure is not the caller's: the Retrieve
/// that triggered it is audited (and refused if the log is failing) on its own.
async fn record(audit: &AuditLog, key: &CanonicalKey, outcome: &'static str, detail: String) {
    let _ = audit
        .record(Record::new(
            keyhaven_proto::time::now_unix_ms(),
            daemon_identity(),
            crate::store::audit::Operation::Migrate,
            Some(key.clone()),
            outcome,
            detail,
        ))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windows_password_decodes_to_the_original_utf8() {
        let token = "tök-😀-123";
        let wide: Vec<u8> = token.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(utf16le_to_utf8(&wide).as_deref(), Some(token));
        assert_eq!(utf16le_to_utf8(&wide[..wide.len() - 1]), None);
        // An unpaired surrogate is no string.
        assert_eq!(utf16le_to_utf8(&[0x00, 0xD8, 0x41, 0x00]), None);
    }
}
