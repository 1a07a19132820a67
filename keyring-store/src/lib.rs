//! A [keyring-core] credential store backed by keyhavend.
//!
//! An app written against keyring-rs 4 (`keyring_core::Entry`) moves its
//! secrets into the daemon with one line at start-up, and keeps every
//! `Entry::new(service, user)` call:
//!
//! ```no_run
//! # fn main() -> keyring_core::Result<()> {
//! keyring_core::set_default_store(keyhaven_keyring_store::Store::new()?);
//!
//! let entry = keyring_core::Entry::new("my-app", "alice")?;
//! entry.set_password("hunter2")?;
//! assert_eq!(entry.get_password()?, "hunter2");
//! entry.delete_credential()?;
//! # Ok(()) }
//! ```
//!
//! [`Store::new`] connects as [`keyhaven::Client::connect`] does
//! (`KEYHAVEN_SOCKET` or the default socket, `KEYHAVEN_AUTOSTART`,
//! `KEYHAVEN_ALLOW_DAEMON_UID`); [`Store::new_with_options`] takes
//! [`ConnectOptions`].
//!
//! # Mapping
//!
//! Each `(service, user)` is one keyhaven key (provider, server_id,
//! user_id, token_type). Names that Reel and JellyTau already file their
//! tokens under land on the key the daemon's legacy read-through and
//! `keyhaven import` give them (the same functions decide,
//! `keyhaven_proto::legacy`); every other name gets a key of its own:
//!
//! | service | user | keyhaven key |
//! |---|---|---|
//! | `reel.{p}_{a}` or `gnome-reel.{p}_{a}` | `token` | `{p}`, `""`, `{a}`, `access_token` |
//! | `reel.{p}_{a}` or `gnome-reel.{p}_{a}` | `api_key` (any token-type name) | `{p}`, `""`, `{a}`, `api_key` |
//! | `jellytau` | `jellytau::{s}::{u}::access_token` | `jellyfin`, `{s}`, `{u}`, `access_token` |
//! | `jellytau::{s}::{u}::access_token` | anything | `jellyfin`, `{s}`, `{u}`, `access_token` |
//! | anything else | anything | `keyring_core`, escaped service, escaped user, `secret` |
//!
//! Reel source ids split at the first `_` (`plex_123`: provider `plex`,
//! account `123`). A name of a legacy shape that the legacy rules refuse
//! (no `_`, an empty account or token type, an ambiguous JellyTau name)
//! takes the last row. The `keyring_core` provider contains a `_`, which no
//! legacy name produces, so the last row never shares a key with the others
//! and maps one name to one key and back.
//!
//! Escaping (last row): `%`, control characters, U+2028, U+2029 and the
//! Unicode bidirectional controls, which keyhaven's ids refuse, become
//! `%XX` per UTF-8 byte; everything else, `:` included, is kept. The
//! escaped service and user may each be 256 bytes of UTF-8; a longer one is
//! refused with `Error::TooLong` naming it. So `Entry::new("my-app",
//! "alice")` is `keyhaven get keyring_core my-app alice secret`, and a user
//! `100%` is user id `100%25`.
//!
//! # Inside a tokio runtime
//!
//! The store runs its own thread with a current-thread runtime and the
//! client; a call sends it a job and blocks on a std channel for the answer.
//! So the synchronous API works from plain code, from `spawn_blocking`, and
//! straight from async functions on a multi-thread or current-thread
//! runtime: no "cannot block inside a runtime" panic, and no deadlock, as
//! the caller's runtime is not needed to finish a call. It does block the
//! calling thread for one round trip, as any keyring store does; in async
//! code with many calls, prefer `spawn_blocking` or the async
//! [`keyhaven::Client`].
//!
//! # Errors
//!
//! | situation | keyring-core error |
//! |---|---|
//! | no credential under the key, or it expired | `NoEntry` |
//! | daemon not running or unreachable, store locked, socket of another user, policy refuses the program | `NoStorageAccess` (the keyhaven error inside) |
//! | empty secret, secret over the daemon's limit, bad label | `Invalid` |
//! | escaped service or user over 256 bytes | `TooLong` |
//! | a secret that is not UTF-8, read with `get_password` | `BadEncoding` **without the bytes**: use `get_secret` |
//! | protocol mismatch, undecryptable credential, anything else | `PlatformFailure` (the keyhaven error inside) |
//!
//! No error, log line or `Debug` output of this crate contains a secret.
//!
//! # Limits
//!
//! - Escaped service and user: 256 bytes of UTF-8 each (`TooLong`).
//! - Secrets: 1 byte to the daemon's `max_secret_bytes` (64 KiB by
//!   default); an empty one is `Invalid`, as keyhaven stores none.
//! - `set_password` keeps an existing credential's label and drops its
//!   expiry; `update_attributes` changes only the `label`.
//! - `delete_credential` removes the credential from keyhaven; a Reel or
//!   JellyTau token still in the OS keyring is found again by the next read
//!   (the daemon's read-through), as after `keyhaven delete`.
//!
//! `docs/keyring-store.md` has the whole story.
//!
//! # Layout
//!
//! - [`Store`] (`lib.rs`): `CredentialStoreApi`: `build`, `search`.
//! - [`Cred`] (`cred.rs`): `CredentialApi`: set, get, delete, attributes.
//! - [`mapping`]: `(service, user)` to key and back, with the escaping.
//! - `worker.rs`: the background thread that owns the runtime and client.
//! - `error.rs`: the one mapping from keyhaven errors to keyring-core's.
//!
//! [keyring-core]: https://crates.io/crates/keyring-core
#![warn(missing_docs)]
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keyhaven::ListFilter;
use keyring_core::api::CredentialStoreApi;
use keyring_core::attributes::parse_attributes;
use keyring_core::{CredentialPersistence, Entry, Error, Result};

mod cred;
mod error;
pub mod mapping;
mod worker;

pub use cred::{Cred, LABEL};
pub use keyhaven::ConnectOptions;

use worker::Worker;

/// The modifiers [`Store::build`](CredentialStoreApi::build) takes.
const MODIFIERS: [&str; 1] = ["+label"];

/// What [`Store::search`](CredentialStoreApi::search) matches on.
const SEARCH_KEYS: [&str; 6] = [
    "service",
    "user",
    "provider",
    "server_id",
    "user_id",
    "token_type",
];

/// The keyring-core store backed by keyhavend. Make one with [`Store::new`]
/// and pass it to `keyring_core::set_default_store`, or build entries from
/// it directly.
pub struct Store {
    id: String,
    worker: Arc<Worker>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("vendor", &self.vendor())
            .field("id", &self.id)
            .finish()
    }
}

impl Store {
    /// Connects to the daemon as [`keyhaven::Client::connect`] does, from
    /// the environment. `NoStorageAccess` when it cannot be reached (with
    /// the reason inside); later calls reconnect by themselves.
    pub fn new() -> Result<Arc<Self>> {
        let options = ConnectOptions::from_env()
            .map_err(|e| Error::Invalid("environment".into(), e.to_string()))?;
        Self::new_with_options(options)
    }

    /// Connects as `options` say (socket, start-on-demand, trust,
    /// timeouts).
    pub fn new_with_options(options: ConnectOptions) -> Result<Arc<Self>> {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "keyhaven-keyring-store {} on {}, instance {}",
            env!("CARGO_PKG_VERSION"),
            options.socket().display(),
            INSTANCES.fetch_add(1, Ordering::Relaxed) + 1
        );
        let worker = Worker::start(options)?;
        Ok(Arc::new(Self { id, worker }))
    }

    fn entry(&self, key: keyhaven::CredentialKey, name: Option<(String, String)>) -> Entry {
        Entry::new_with_credential(Cred::new(self.worker.clone(), key, name, None))
    }
}

impl CredentialStoreApi for Store {
    fn vendor(&self) -> String {
        format!(
            "keyhaven daemon store (keyhaven-keyring-store), {}",
            env!("CARGO_PKG_REPOSITORY")
        )
    }

    fn id(&self) -> String {
        self.id.clone()
    }

    /// An entry for `(service, user)`, mapped as the crate docs say. The
    /// one modifier is `label`: the label a credential this entry creates
    /// gets (an existing one keeps its own). Nothing is sent to the daemon.
    fn build(
        &self,
        service: &str,
        user: &str,
        modifiers: Option<&HashMap<&str, &str>>,
    ) -> Result<Entry> {
        let mods = parse_attributes(&MODIFIERS, modifiers)?;
        let label = mods.get(LABEL).cloned();
        if let Some(label) = &label {
            keyhaven_proto::key::check_label(label)
                .map_err(|e| Error::Invalid(LABEL.into(), e.to_string()))?;
        }
        let (key, _) = mapping::key_for(service, user)?;
        let name = Some((service.to_owned(), user.to_owned()));
        Ok(Entry::new_with_credential(Cred::new(
            self.worker.clone(),
            key,
            name,
            label,
        )))
    }

    /// The daemon's credentials matching `spec`, each as an entry of its
    /// own key. Every condition is an exact match and all must hold:
    ///
    /// - `provider`, `server_id`, `user_id`, `token_type`: the key's field;
    /// - `service` and `user` together: the key that name maps to;
    /// - `service` or `user` alone: that part of the entry name the key
    ///   reads back as (what `get_specifiers` returns).
    ///
    /// An empty spec returns every credential. A credential that no entry
    /// name reaches (one the CLI stored as `plex::srv::u::access_token`,
    /// say) is returned with no specifiers, and only when `service` and
    /// `user` are not asked for.
    fn search(&self, spec: &HashMap<&str, &str>) -> Result<Vec<Entry>> {
        let spec = parse_attributes(&SEARCH_KEYS, Some(spec))?;
        let field = |name: &str| spec.get(name).cloned();
        let (service, user) = (field("service"), field("user"));
        let mut want = [
            field("provider"),
            field("server_id"),
            field("user_id"),
            field("token_type"),
        ];
        if let (Some(service), Some(user)) = (&service, &user) {
            let (key, _) = mapping::key_for(service, user)?;
            let fields = [
                key.provider(),
                key.server_id(),
                key.user_id(),
                key.token_type(),
            ];
            for (want, got) in want.iter_mut().zip(fields) {
                match want {
                    Some(w) if w != got => return Ok(Vec::new()),
                    _ => *want = Some(got.to_owned()),
                }
            }
        }
        let [provider, server_id, user_id, token_type] = want;
        let filter = ListFilter {
            provider,
            server_id,
            user_id,
            ..ListFilter::default()
        };
        let found = self.worker.call(
            "spec",
            move |client| async move { client.list(&filter).await },
        )?;
        let one_part = service.is_some() != user.is_some();
        let mut entries = Vec::new();
        for meta in found {
            if token_type
                .as_ref()
                .is_some_and(|t| t != meta.key.token_type())
            {
                continue;
            }
            let name = mapping::name_for(&meta.key);
            if one_part {
                let Some((s, u)) = &name else { continue };
                if service.as_ref().is_some_and(|w| w != s) || user.as_ref().is_some_and(|w| w != u)
                {
                    continue;
                }
            }
            entries.push(self.entry(meta.key, name));
        }
        Ok(entries)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn persistence(&self) -> CredentialPersistence {
        CredentialPersistence::UntilDelete
    }

    fn debug_fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket path where nothing listens.
    fn nowhere() -> ConnectOptions {
        let path = std::env::temp_dir().join(format!(
            "keyhaven-keyring-store-test-{}/none.sock",
            std::process::id()
        ));
        ConnectOptions::new(path)
    }

    fn assert_no_daemon(result: Result<Arc<Store>>) {
        match result {
            Err(Error::NoStorageAccess(e)) => {
                assert!(e.to_string().contains("not running"), "{e}")
            }
            other => panic!("expected NoStorageAccess, got {other:?}"),
        }
    }

    #[test]
    fn no_daemon_is_no_storage_access_from_plain_code() {
        assert_no_daemon(Store::new_with_options(nowhere()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_daemon_is_no_storage_access_inside_a_current_thread_runtime() {
        assert_no_daemon(Store::new_with_options(nowhere()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_daemon_is_no_storage_access_inside_a_multi_thread_runtime() {
        assert_no_daemon(Store::new_with_options(nowhere()));
    }
}
