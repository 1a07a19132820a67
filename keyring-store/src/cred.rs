//! An entry's credential: the keyhaven key its `(service, user)` maps to,
//! and the keyring-core operations on it, each one job on the worker
//! thread. The secret travels as a [`Secret`] (zeroized on drop, printed
//! redacted) until keyring-core's API hands it back as a plain `Vec<u8>`.

use std::collections::HashMap;
use std::sync::Arc;

use keyhaven::{Client, CredentialKey, ErrorKind, ListFilter, Metadata, Secret, StoreOptions};
use keyring_core::api::CredentialApi;
use keyring_core::{Credential, Error, Result};

use crate::worker::Worker;

/// How often a write is retried when another writer changed the credential
/// between this store's read and its compare-and-swap write.
const ATTEMPTS: u32 = 3;

/// The one attribute [`CredentialApi::update_attributes`] can change.
pub const LABEL: &str = "label";

/// A keyring entry's credential in keyhaven. Both a specifier (it can
/// create its credential) and a wrapper (a key names exactly one
/// credential, so there is never an ambiguity to report).
pub struct Cred {
    worker: Arc<Worker>,
    key: CredentialKey,
    name: Option<(String, String)>,
    label: Option<String>,
}

impl std::fmt::Debug for Cred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret: the store holds none.
        f.debug_struct("Cred")
            .field("name", &self.name)
            .field("key", &self.key.to_string())
            .field("label", &self.label)
            .finish()
    }
}

impl Cred {
    pub(crate) fn new(
        worker: Arc<Worker>,
        key: CredentialKey,
        name: Option<(String, String)>,
        label: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            worker,
            key,
            name,
            label,
        })
    }

    /// The keyhaven key this entry reads and writes: what `keyhaven get`
    /// and `keyhaven list` show.
    pub fn key(&self) -> &CredentialKey {
        &self.key
    }

    fn retrieve(&self) -> Result<keyhaven::Credential> {
        let key = self.key.clone();
        self.worker.call(
            "key",
            move |client| async move { client.retrieve(&key).await },
        )
    }
}

impl CredentialApi for Cred {
    /// Stores `secret` under the entry's key. An existing credential keeps
    /// its label (a new one gets the `label` modifier, if any); an expiry
    /// set by another program is dropped, as it was the old secret's.
    fn set_secret(&self, secret: &[u8]) -> Result<()> {
        if secret.is_empty() {
            return Err(Error::Invalid(
                "secret".into(),
                "keyhaven stores no empty secrets; delete the entry instead".into(),
            ));
        }
        let secret = Secret::new(secret.to_vec());
        let key = self.key.clone();
        let label = self.label.clone();
        self.worker.call("secret", move |client| async move {
            let mut attempt = 1;
            loop {
                let options = match find(&client, &key).await? {
                    Some(existing) => StoreOptions {
                        label: existing.label,
                        expires_at: None,
                        expected_revision: Some(existing.revision),
                        // The login's server, user name and device id stay.
                        attributes: None,
                    },
                    None => StoreOptions {
                        label: label.clone(),
                        ..StoreOptions::if_absent()
                    },
                };
                match client.store(&key, secret.clone(), options).await {
                    Err(e) if e.kind() == ErrorKind::Conflict && attempt < ATTEMPTS => attempt += 1,
                    other => return other.map(drop),
                }
            }
        })
    }

    fn get_secret(&self) -> Result<Vec<u8>> {
        Ok(self.retrieve()?.secret.into_vec())
    }

    /// As keyring-core's default, except that a secret that is not UTF-8
    /// is not put into the `BadEncoding` error (errors get printed and
    /// logged): it is `BadEncoding` with no bytes; read it with
    /// `get_secret`.
    fn get_password(&self) -> Result<String> {
        String::from_utf8(self.get_secret()?).map_err(|e| {
            drop(Secret::new(e.into_bytes()));
            Error::BadEncoding(Vec::new())
        })
    }

    /// The credential's keyhaven metadata: `provider`, `server_id`,
    /// `user_id`, `token_type`, `revision`, `created_at`, `updated_at`
    /// (RFC 3339, UTC) and, when set, `label` and `expires_at`; then its
    /// attributes (`server_url`, `device_id`, ...) under their own names.
    fn get_attributes(&self) -> Result<HashMap<String, String>> {
        Ok(attributes(&self.retrieve()?.metadata))
    }

    /// Changes the `label` and the credential's attributes (`server_url`,
    /// `device_id`, ...): a value replaces the stored one, `""` removes it.
    /// The names [`get_attributes`](Self::get_attributes) reports as
    /// metadata (`provider`, `revision`, ...) are the key or bookkeeping and
    /// are refused as `Invalid`.
    fn update_attributes(&self, attributes: &HashMap<&str, &str>) -> Result<()> {
        let mut label = None;
        let mut changes: Vec<(String, String)> = Vec::new();
        for (name, value) in attributes {
            if *name == LABEL {
                keyhaven_proto::key::check_label(value)
                    .map_err(|e| Error::Invalid(LABEL.into(), e.to_string()))?;
                label = Some((!value.is_empty()).then(|| (*value).to_owned()));
            } else if METADATA.contains(name) {
                return Err(Error::Invalid(
                    (*name).to_owned(),
                    "cannot be updated: it is the key or bookkeeping of a keyhaven credential"
                        .into(),
                ));
            } else {
                keyhaven::attributes::check_name(name)
                    .map_err(|e| Error::Invalid((*name).to_owned(), e.to_string()))?;
                changes.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        if label.is_none() && changes.is_empty() {
            // Nothing to change: still `NoEntry` when there is no credential.
            return self.retrieve().map(drop);
        }
        let key = self.key.clone();
        self.worker.call(LABEL, move |client| async move {
            let mut attempt = 1;
            loop {
                let current = client.retrieve(&key).await?;
                let mut merged = current.metadata.attributes.clone();
                for (name, value) in &changes {
                    if value.is_empty() {
                        merged.remove(name);
                    } else {
                        merged.insert(name.clone(), value.clone());
                    }
                }
                let options = StoreOptions {
                    label: label.clone().unwrap_or(current.metadata.label.clone()),
                    expires_at: current.metadata.expires_at,
                    expected_revision: Some(current.metadata.revision),
                    attributes: Some(merged),
                };
                match client.store(&key, current.secret, options).await {
                    Err(e) if e.kind() == ErrorKind::Conflict && attempt < ATTEMPTS => attempt += 1,
                    other => return other.map(drop),
                }
            }
        })
    }

    fn delete_credential(&self) -> Result<()> {
        let key = self.key.clone();
        self.worker.call("key", move |client| async move {
            client.delete(&key, None).await.map(drop)
        })
    }

    /// `NoEntry` unless the credential exists; this entry is its own
    /// wrapper.
    fn get_credential(&self) -> Result<Option<Arc<Credential>>> {
        self.retrieve().map(|_| None)
    }

    fn get_specifiers(&self) -> Option<(String, String)> {
        self.name.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn debug_fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The metadata of `key`, read with `List` (metadata only: no secret moves,
/// and a credential that has expired is still seen, so it can be replaced).
async fn find(client: &Client, key: &CredentialKey) -> keyhaven::Result<Option<Metadata>> {
    let filter = ListFilter {
        provider: Some(key.provider().to_owned()),
        server_id: Some(key.server_id().to_owned()),
        user_id: Some(key.user_id().to_owned()),
        ..ListFilter::default()
    };
    Ok(client
        .list(&filter)
        .await?
        .into_iter()
        .find(|m| m.key == *key))
}

/// The names of metadata [`attributes`] reports, which are not the
/// credential's own attributes.
const METADATA: [&str; 8] = [
    "provider",
    "server_id",
    "user_id",
    "token_type",
    "revision",
    "created_at",
    "updated_at",
    "expires_at",
];

pub(crate) fn attributes(m: &Metadata) -> HashMap<String, String> {
    let time = |t| keyhaven_proto::time::rfc3339(keyhaven::system_to_ms(t));
    // The credential's attributes first: metadata of the same name wins.
    let mut out: HashMap<String, String> = m
        .attributes
        .iter()
        .filter(|(name, _)| !METADATA.contains(&name.as_str()) && name.as_str() != LABEL)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    out.extend([
        ("provider".to_owned(), m.key.provider().to_owned()),
        ("server_id".to_owned(), m.key.server_id().to_owned()),
        ("user_id".to_owned(), m.key.user_id().to_owned()),
        ("token_type".to_owned(), m.key.token_type().to_owned()),
        ("revision".to_owned(), m.revision.to_string()),
        ("created_at".to_owned(), time(m.created_at)),
        ("updated_at".to_owned(), time(m.updated_at)),
    ]);
    if let Some(label) = &m.label {
        out.insert(LABEL.to_owned(), label.clone());
    }
    if let Some(t) = m.expires_at {
        out.insert("expires_at".to_owned(), time(t));
    }
    out
}
