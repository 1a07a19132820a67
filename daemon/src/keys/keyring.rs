//! The OS keyring, through `keyring-core` and the per-platform stores
//! (Secret Service over zbus on Linux, the macOS Keychain, the Windows
//! Credential Manager).
//!
//! Keyring stores are blocking and can hang (a locked keyring waiting for a
//! prompt, a session bus that never answers). Every call here runs on a
//! blocking thread under a timeout; while one call is stuck, further calls
//! fail at once instead of piling up threads. So no keyring problem can
//! hang start-up or a request: it becomes [`KeyringError`] within the
//! timeout.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use keyhaven_proto::legacy::KeyringName;

/// The default time a keyring call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The keyring service name keyhaven's entries are filed under.
pub const SERVICE: &str = "keyhaven";

/// Why the keyring could not be used. Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// No keyring on this system or session (no Secret Service, no D-Bus).
    #[error("no keyring is reachable: {0}")]
    Unavailable(String),
    /// The keyring exists but is locked or access was refused.
    #[error("the keyring is locked or refused access: {0}")]
    Locked(String),
    /// The keyring did not answer in time.
    #[error("the keyring did not answer within {0:?}")]
    Timeout(Duration),
    /// Anything else the keyring reported.
    #[error("keyring error: {0}")]
    Other(String),
}

/// A keyring holding byte secrets under `(SERVICE, user)` names.
pub trait KeyringBackend: Send + Sync + fmt::Debug {
    /// The secret, or `None` when there is no entry.
    fn get(&self, user: &str) -> Result<Option<Vec<u8>>, KeyringError>;
    /// Creates or replaces the entry.
    fn set(&self, user: &str, secret: &[u8]) -> Result<(), KeyringError>;
    /// Removes the entry; no entry is not an error.
    fn delete(&self, user: &str) -> Result<(), KeyringError>;
    /// For people: which keyring this is.
    fn describe(&self) -> String;

    /// The secret of the entry `(service, user)` in any service: other
    /// apps' entries (see `legacy.rs`). `None` when there is none.
    fn get_in(&self, service: &str, user: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        let _ = (service, user);
        Err(KeyringError::Other(
            "this keyring cannot read other services' entries".into(),
        ))
    }

    /// Creates or replaces the entry `(service, user)` (tests seed other
    /// apps' entries with it; the daemon never writes them).
    fn set_in(&self, service: &str, user: &str, secret: &[u8]) -> Result<(), KeyringError> {
        let _ = (service, user, secret);
        Err(KeyringError::Other(
            "this keyring cannot write other services' entries".into(),
        ))
    }

    /// Removes the entry `(service, user)`; no entry is not an error.
    fn delete_in(&self, service: &str, user: &str) -> Result<(), KeyringError> {
        let _ = (service, user);
        Err(KeyringError::Other(
            "this keyring cannot remove other services' entries".into(),
        ))
    }

    /// The names of the entries filed under `service` exactly, or of every
    /// entry when `service` is `None`. No secrets are read.
    fn names(&self, service: Option<&str>) -> Result<Vec<KeyringName>, KeyringError> {
        let _ = service;
        Err(KeyringError::Other(
            "this keyring cannot be searched".into(),
        ))
    }
}

/// Maps keyring-core errors onto [`KeyringError`] (no secret bytes kept).
pub fn map_core_error(e: keyring_core::Error) -> KeyringError {
    use keyring_core::Error as E;
    match e {
        E::NoStorageAccess(inner) => KeyringError::Locked(inner.to_string()),
        E::NoDefaultStore => KeyringError::Unavailable("no keyring store is configured".into()),
        E::PlatformFailure(inner) => {
            let text = inner.to_string();
            if text.contains("org.freedesktop.secrets")
                || text.contains("DBUS_SESSION_BUS_ADDRESS")
                || text.to_lowercase().contains("dbus")
            {
                KeyringError::Unavailable(text)
            } else {
                KeyringError::Other(text)
            }
        }
        E::BadDataFormat(_, inner) => KeyringError::Other(format!("malformed entry: {inner}")),
        E::BadEncoding(_) => KeyringError::Other("malformed entry".into()),
        other => KeyringError::Other(other.to_string()),
    }
}

/// A keyring-core credential store (the platform's, or the mock in tests).
pub struct CoreKeyring {
    store: Arc<keyring_core::CredentialStore>,
    search: Search,
}

/// How [`KeyringBackend::names`] finds the entries of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// By the `service` attribute (Secret Service, Keychain, the mock).
    Attributes,
    /// The Windows Credential Manager files an entry under one target name,
    /// `{user}{divider}{service}`, and searches only by a pattern on it: list
    /// them all and keep the names that end in `{divider}{service}`.
    TargetNames {
        /// Between user and service (`.` for keyring-rs' default store).
        divider: &'static str,
    },
}

impl fmt::Debug for CoreKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreKeyring")
            .field("vendor", &self.store.vendor())
            .finish()
    }
}

impl CoreKeyring {
    /// Wraps a keyring-core store.
    pub fn new(store: Arc<keyring_core::CredentialStore>) -> Self {
        Self {
            store,
            search: Search::Attributes,
        }
    }

    /// A store whose entries are named `{user}{divider}{service}` and which
    /// cannot search by service (the Windows Credential Manager).
    pub fn with_target_names(
        store: Arc<keyring_core::CredentialStore>,
        divider: &'static str,
    ) -> Self {
        Self {
            store,
            search: Search::TargetNames { divider },
        }
    }

    fn entry(&self, user: &str) -> Result<keyring_core::Entry, KeyringError> {
        self.entry_in(SERVICE, user)
    }

    fn entry_in(&self, service: &str, user: &str) -> Result<keyring_core::Entry, KeyringError> {
        self.store
            .build(service, user, None)
            .map_err(map_core_error)
    }
}

/// The service and user of a found entry: the Secret Service reports them
/// as the `service` and `username` attributes, other stores as specifiers.
fn entry_name(entry: &keyring_core::Entry) -> Option<KeyringName> {
    if let Some((service, user)) = entry.get_specifiers() {
        return Some(KeyringName { service, user });
    }
    let attributes = entry.get_attributes().ok()?;
    Some(KeyringName {
        service: attributes.get("service")?.clone(),
        user: attributes.get("username").cloned().unwrap_or_default(),
    })
}

impl KeyringBackend for CoreKeyring {
    fn get(&self, user: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        match self.entry(user)?.get_secret() {
            Ok(bytes) => Ok(Some(bytes)),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_core_error(e)),
        }
    }

    fn set(&self, user: &str, secret: &[u8]) -> Result<(), KeyringError> {
        self.entry(user)?.set_secret(secret).map_err(map_core_error)
    }

    fn delete(&self, user: &str) -> Result<(), KeyringError> {
        match self.entry(user)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_core_error(e)),
        }
    }

    fn describe(&self) -> String {
        self.store.vendor()
    }

    fn get_in(&self, service: &str, user: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        match self.entry_in(service, user)?.get_secret() {
            Ok(bytes) => Ok(Some(bytes)),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_core_error(e)),
        }
    }

    fn set_in(&self, service: &str, user: &str, secret: &[u8]) -> Result<(), KeyringError> {
        self.entry_in(service, user)?
            .set_secret(secret)
            .map_err(map_core_error)
    }

    fn delete_in(&self, service: &str, user: &str) -> Result<(), KeyringError> {
        match self.entry_in(service, user)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_core_error(e)),
        }
    }

    fn names(&self, service: Option<&str>) -> Result<Vec<KeyringName>, KeyringError> {
        if let Search::TargetNames { divider } = self.search {
            let all = self
                .store
                .search(&std::collections::HashMap::new())
                .map_err(map_core_error)?;
            let targets = all.iter().filter_map(|e| {
                let (service, user) = e.get_specifiers()?;
                Some(format!("{user}{divider}{service}"))
            });
            return Ok(names_by_target(targets, divider, service));
        }
        let mut spec = std::collections::HashMap::new();
        if let Some(service) = service {
            spec.insert("service", service);
        }
        let found = self.store.search(&spec).map_err(map_core_error)?;
        let mut names: Vec<KeyringName> = found
            .iter()
            .filter_map(entry_name)
            // Some stores match attributes as substrings.
            .filter(|n| service.is_none_or(|s| n.service == s))
            .collect();
        names.sort_by(|a, b| (&a.service, &a.user).cmp(&(&b.service, &b.user)));
        names.dedup();
        Ok(names)
    }
}

/// The entries of `service` (all entries when `None`) among target names
/// of the form `{user}{divider}{service}`. A user or service may contain the
/// divider itself, so the user is what is left when `{divider}{service}` is
/// cut off the end, never a split at the first or last divider.
fn names_by_target(
    targets: impl Iterator<Item = String>,
    divider: &str,
    service: Option<&str>,
) -> Vec<KeyringName> {
    let mut names: Vec<KeyringName> = targets
        .filter_map(|target| match service {
            Some(service) => {
                let user = target.strip_suffix(service)?.strip_suffix(divider)?;
                Some(KeyringName {
                    service: service.to_owned(),
                    user: user.to_owned(),
                })
            }
            None => {
                let (user, service) = target.rsplit_once(divider)?;
                Some(KeyringName {
                    service: service.to_owned(),
                    user: user.to_owned(),
                })
            }
        })
        .collect();
    names.sort_by(|a, b| (&a.service, &a.user).cmp(&(&b.service, &b.user)));
    names.dedup();
    names
}

/// Opens the platform's keyring (blocking; may fail or hang, so callers go
/// through [`Keyring`]).
pub fn platform_backend() -> Result<Arc<dyn KeyringBackend>, KeyringError> {
    platform::open()
}

#[cfg(target_os = "linux")]
mod platform {
    use std::sync::Arc;

    use super::{CoreKeyring, KeyringBackend, KeyringError, map_core_error};

    pub(super) fn open() -> Result<Arc<dyn KeyringBackend>, KeyringError> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| std::path::Path::new(&d).join("bus"))
                .is_none_or(|bus| !bus.exists())
        {
            return Err(KeyringError::Unavailable(
                "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set), so no Secret Service"
                    .into(),
            ));
        }
        let store = zbus_secret_service_keyring_store::Store::new().map_err(|e| {
            match map_core_error(e) {
                KeyringError::Other(text) => KeyringError::Unavailable(text),
                other => other,
            }
        })?;
        Ok(Arc::new(CoreKeyring::new(store)))
    }
}

/// The macOS login Keychain.
#[cfg(target_os = "macos")]
mod platform {
    use std::sync::Arc;

    use super::{CoreKeyring, KeyringBackend, KeyringError, map_core_error};

    pub(super) fn open() -> Result<Arc<dyn KeyringBackend>, KeyringError> {
        let store = apple_native_keyring_store::keychain::Store::new().map_err(map_core_error)?;
        Ok(Arc::new(CoreKeyring::new(store)))
    }
}

/// The Windows Credential Manager.
#[cfg(windows)]
mod platform {
    use std::sync::Arc;

    use super::{CoreKeyring, KeyringBackend, KeyringError, map_core_error};

    pub(super) fn open() -> Result<Arc<dyn KeyringBackend>, KeyringError> {
        // keyring-rs' default: target name `{user}.{service}`.
        let store = windows_native_keyring_store::Store::new().map_err(map_core_error)?;
        Ok(Arc::new(CoreKeyring::with_target_names(store, ".")))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    use std::sync::Arc;

    use super::{KeyringBackend, KeyringError};

    pub(super) fn open() -> Result<Arc<dyn KeyringBackend>, KeyringError> {
        Err(KeyringError::Unavailable(
            "this build has no keyring store for this platform".into(),
        ))
    }
}

/// How to reach a keyring.
#[derive(Debug, Clone, Default)]
pub enum KeyringChoice {
    /// The platform keyring (Secret Service, Keychain, Credential Manager).
    #[default]
    Platform,
    /// No keyring at all.
    Disabled,
    /// A given backend (tests).
    Custom(Arc<dyn KeyringBackend>),
}

/// The opened platform keyring. Some stores (zbus) block in their `Drop`,
/// which panics inside the async runtime, so the last reference is dropped
/// on a plain thread of its own.
#[derive(Debug, Default)]
struct Opened(Mutex<Option<Arc<dyn KeyringBackend>>>);

impl Opened {
    fn get(&self) -> Option<Arc<dyn KeyringBackend>> {
        self.0.lock().ok().and_then(|s| s.clone())
    }

    fn set(&self, backend: Arc<dyn KeyringBackend>) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(backend);
        }
    }

    /// Forgets the open keyring (after a failure: the next call reconnects,
    /// e.g. to a keyring daemon that was restarted).
    fn clear(&self) {
        let old = self.0.lock().ok().and_then(|mut s| s.take());
        if let Some(old) = old {
            release(old);
        }
    }
}

/// Drops a backend reference; the last one is dropped on a plain thread,
/// outside the async runtime (see [`Opened`]).
fn release(backend: Arc<dyn KeyringBackend>) {
    if Arc::strong_count(&backend) == 1 {
        let _ = std::thread::Builder::new()
            .name("keyring-close".into())
            .spawn(move || drop(backend));
    }
}

/// Keyring calls that may be in flight at once; calls stuck past their
/// timeout keep their place until they return, so a keyring that never
/// answers costs at most this many threads.
const MAX_IN_FLIGHT: usize = 4;

impl Drop for Opened {
    fn drop(&mut self) {
        let backend = self.0.get_mut().ok().and_then(Option::take);
        if let Some(backend) = backend {
            let _ = std::thread::Builder::new()
                .name("keyring-close".into())
                .spawn(move || drop(backend));
        }
    }
}

/// A keyring behind a timeout, opened lazily.
#[derive(Debug, Clone)]
pub struct Keyring {
    choice: KeyringChoice,
    timeout: Duration,
    state: Arc<Opened>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Keyring {
    /// A keyring reached through `choice`, each call bounded by `timeout`.
    pub fn new(choice: KeyringChoice, timeout: Duration) -> Self {
        Self {
            choice,
            timeout,
            state: Arc::new(Opened::default()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// True when keyrings are disabled outright.
    pub fn is_disabled(&self) -> bool {
        matches!(self.choice, KeyringChoice::Disabled)
    }

    /// Which keyring, when known.
    pub fn describe(&self) -> String {
        match &self.choice {
            KeyringChoice::Disabled => "disabled".into(),
            KeyringChoice::Custom(b) => b.describe(),
            KeyringChoice::Platform => self
                .state
                .get()
                .map(|b| b.describe())
                .unwrap_or_else(|| "the OS keyring".into()),
        }
    }

    /// Runs `f` against the backend on a blocking thread, within the
    /// timeout. When too many earlier calls are still stuck, fails at once.
    /// After a failure or a timeout the keyring is reopened on the next call.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn KeyringBackend) -> Result<T, KeyringError> + Send + 'static,
    ) -> Result<T, KeyringError> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(KeyringError::Timeout(self.timeout));
        };
        let choice = self.choice.clone();
        let state = self.state.clone();
        let after_timeout = self.state.clone();
        let task = tokio::task::spawn_blocking(move || {
            let backend = match choice {
                KeyringChoice::Disabled => {
                    return Err(KeyringError::Unavailable("keyrings are disabled".into()));
                }
                KeyringChoice::Custom(b) => b,
                KeyringChoice::Platform => match state.get() {
                    Some(b) => b,
                    None => {
                        let b = platform_backend()?;
                        state.set(b.clone());
                        b
                    }
                },
            };
            let result = f(backend.as_ref());
            if result.is_err() {
                state.clear();
            }
            release(backend);
            // The place is given back only when the call really returned.
            drop(permit);
            result
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(KeyringError::Other(format!("keyring call failed: {join}"))),
            Err(_) => {
                after_timeout.clear();
                Err(KeyringError::Timeout(self.timeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Stuck;

    /// Answers far later than the timeout (but not so late that the
    /// test runtime waits long for its blocking thread at the end).
    impl KeyringBackend for Stuck {
        fn get(&self, _: &str) -> Result<Option<Vec<u8>>, KeyringError> {
            std::thread::sleep(Duration::from_millis(500));
            Ok(None)
        }
        fn set(&self, _: &str, _: &[u8]) -> Result<(), KeyringError> {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        }
        fn delete(&self, _: &str) -> Result<(), KeyringError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "stuck".into()
        }
    }

    #[tokio::test]
    async fn a_stuck_keyring_times_out_and_does_not_pile_up_threads() {
        let k = Keyring::new(
            KeyringChoice::Custom(Arc::new(Stuck)),
            Duration::from_millis(50),
        );
        let first = k.call(|b| b.get("x")).await;
        assert_eq!(first, Err(KeyringError::Timeout(Duration::from_millis(50))));
        // The first call is still stuck: the next fails at once.
        let second = k.call(|b| b.get("x")).await;
        assert_eq!(
            second,
            Err(KeyringError::Timeout(Duration::from_millis(50)))
        );
    }

    #[test]
    fn windows_target_names_find_a_service_even_with_dots_in_it() {
        let targets = [
            "jellytau.jellytau::srv.example::u1::access_token",
            "other.jellytau::srv.example::u1::access_token",
            "x.jellytau::srv.example::u1::access_token.more",
            "token.reel.plex_123",
            "nodivider",
        ]
        .map(String::from);
        let service = "jellytau::srv.example::u1::access_token";
        let name = |service: &str, user: &str| KeyringName {
            service: service.into(),
            user: user.into(),
        };
        let found = names_by_target(targets.clone().into_iter(), ".", Some(service));
        assert_eq!(
            found,
            vec![name(service, "jellytau"), name(service, "other"),]
        );
        let all = names_by_target(targets.into_iter(), ".", None);
        assert_eq!(all.len(), 4);
    }

    #[tokio::test]
    async fn mock_store_round_trip_and_injected_errors() {
        let store: Arc<keyring_core::CredentialStore> = keyring_core::mock::Store::new().unwrap();
        let core = CoreKeyring::new(store);
        let k = Keyring::new(KeyringChoice::Custom(Arc::new(core)), DEFAULT_TIMEOUT);
        assert_eq!(k.call(|b| b.get("u")).await, Ok(None));
        k.call(|b| b.set("u", b"bytes")).await.unwrap();
        assert_eq!(k.call(|b| b.get("u")).await, Ok(Some(b"bytes".to_vec())));
        k.call(|b| b.delete("u")).await.unwrap();
        assert_eq!(k.call(|b| b.get("u")).await, Ok(None));
        assert_eq!(k.call(|b| b.delete("u")).await, Ok(()));
    }
}
