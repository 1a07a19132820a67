//! Drop-in replacements for the credential helpers media apps already have.
//!
//! Many apps keep their tokens in the OS keyring under names of their own.
//! The two types here keep those apps' call shapes, so switching to keyhaven
//! is a change of one constructor, while the token itself lands under the
//! shared four-field key that other apps can find:
//!
//! - [`SourceCredentials`]: Reel-style auth services, keyed by a source id
//!   such as `plex_123` and a token type (`token`, `api_key`).
//! - [`SecureStorage`]: JellyTau-style secure storage, keyed by a string
//!   `jellytau::{server_id}::{user_id}::access_token`.
//!
//! # Mapping
//!
//! | app call | keyhaven key (provider, server_id, user_id, token_type) |
//! |---|---|
//! | `save_credentials("plex_123", "token", ..)` | `plex`, `""`, `123`, `access_token` |
//! | `save_credentials("jellyfin_abc", "api_key", ..)` | `jellyfin`, `""`, `abc`, `api_key` |
//! | `save_credentials("emby_x_y", "refresh_token", ..)` | `emby`, `""`, `x_y`, `refresh_token` |
//! | `store("jellytau::{server}::{user}::access_token", ..)` | `jellyfin`, `{server}`, `{user}`, `access_token` |
//!
//! Source ids: the provider is the part before the first `_`, the account
//! is the rest; neither may be empty. Token types: `token` becomes
//! `access_token`; any other name (`api_key`, `refresh_token`, ...) is kept
//! as it is and must follow the token-type rules (ASCII letters, digits,
//! `.`, `_`, `-`).
//!
//! JellyTau keys are split on `::` and must have exactly four parts: the
//! first must be `jellytau` and the last `access_token`; the two in between
//! are the server id and the user id, taken verbatim (no `%` unescaping)
//! and neither may be empty. JellyTau's ids are hex UUIDs, so an id that
//! itself contains `::` would give more than four parts; such a key is
//! refused rather than guessed at, and so is one with a `:` next to a
//! separator (`jellytau::a:::b::access_token` could be server `a:` or user
//! `:b`).
//!
//! Every malformed name is an [`ErrorKind::InvalidArgument`] error that
//! says which rule it broke. Removing a credential that does not exist is
//! not an error, as with a keyring entry that was never written; a load of
//! one is `None`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyhaven::Error> {
//! use keyhaven::compat::SourceCredentials;
//!
//! let auth = SourceCredentials::new(keyhaven::Client::connect().await?);
//! auth.save_credentials("plex_123", "token", "tok-abc").await?;
//! let token = auth.load_credentials("plex_123", "token").await?;
//! assert_eq!(token.map(|t| t.expose().to_vec()), Some(b"tok-abc".to_vec()));
//! auth.remove_credentials("plex_123", "token").await?;
//! # Ok(()) }
//! ```

use crate::{Client, CredentialKey, Error, ErrorKind, Result, Secret, StoreOptions};

use keyhaven_proto::legacy::{self, LegacyError};
pub use keyhaven_proto::legacy::{JELLYTAU_PREFIX, JELLYTAU_PROVIDER};

/// The keyhaven key for a Reel-style `source_id` and `token_type`.
pub fn source_key(source_id: &str, token_type: &str) -> Result<CredentialKey> {
    legacy::source_key(source_id, token_type).map_err(from_legacy)
}

/// The keyhaven key for a JellyTau storage key
/// `jellytau::{server_id}::{user_id}::access_token`.
pub fn jellytau_key(key: &str) -> Result<CredentialKey> {
    legacy::jellytau_key(key).map_err(from_legacy)
}

/// A mapping failure as a client error (INVALID_ARGUMENT either way).
pub(crate) fn from_legacy(e: LegacyError) -> Error {
    match e {
        LegacyError::Shape(message) | LegacyError::Ambiguous(message) => invalid(message),
        LegacyError::Key(key) => key.into(),
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

/// Reel-style credential calls, keyed by source id and token type.
#[derive(Debug, Clone)]
pub struct SourceCredentials {
    client: Client,
}

impl SourceCredentials {
    /// Wraps a connected client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Stores `token` for `source_id`, replacing any earlier one.
    pub async fn save_credentials(
        &self,
        source_id: &str,
        token_type: &str,
        token: impl Into<Secret>,
    ) -> Result<()> {
        let key = source_key(source_id, token_type)?;
        store(&self.client, &key, token.into()).await
    }

    /// The token for `source_id`, or `None` when none is stored (or it has
    /// expired).
    pub async fn load_credentials(
        &self,
        source_id: &str,
        token_type: &str,
    ) -> Result<Option<Secret>> {
        let key = source_key(source_id, token_type)?;
        Ok(load(&self.client, &key).await?.map(|cred| cred.secret))
    }

    /// Removes the token for `source_id`; nothing stored is not an error.
    pub async fn remove_credentials(&self, source_id: &str, token_type: &str) -> Result<()> {
        let key = source_key(source_id, token_type)?;
        remove(&self.client, &key).await
    }
}

/// JellyTau-style secure storage, keyed by
/// `jellytau::{server_id}::{user_id}::access_token`.
#[derive(Debug, Clone)]
pub struct SecureStorage {
    client: Client,
}

impl SecureStorage {
    /// Wraps a connected client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Stores `value` under `key`, replacing any earlier one.
    pub async fn store(&self, key: &str, value: &str) -> Result<()> {
        let key = jellytau_key(key)?;
        store(&self.client, &key, Secret::from(value)).await
    }

    /// The value under `key`, or `None` when none is stored (or it has
    /// expired). A stored value that is not UTF-8 is an error.
    pub async fn retrieve(&self, key: &str) -> Result<Option<String>> {
        let key = jellytau_key(key)?;
        let Some(cred) = load(&self.client, &key).await? else {
            return Ok(None);
        };
        match cred.secret.expose_str() {
            Some(text) => Ok(Some(text.to_owned())),
            None => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the credential {key} is not UTF-8 text"),
            )),
        }
    }

    /// Removes the value under `key`; nothing stored is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let key = jellytau_key(key)?;
        remove(&self.client, &key).await
    }
}

async fn store(client: &Client, key: &CredentialKey, secret: Secret) -> Result<()> {
    client.store(key, secret, StoreOptions::default()).await?;
    Ok(())
}

async fn load(client: &Client, key: &CredentialKey) -> Result<Option<crate::Credential>> {
    match client.retrieve(key).await {
        Ok(cred) => Ok(Some(cred)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn remove(client: &Client, key: &CredentialKey) -> Result<()> {
    match client.delete(key, None).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(key: &CredentialKey) -> (&str, &str, &str, &str) {
        (
            key.provider(),
            key.server_id(),
            key.user_id(),
            key.token_type(),
        )
    }

    #[test]
    fn source_ids_split_at_the_first_underscore() {
        let cases = [
            (("plex_123", "token"), ("plex", "", "123", "access_token")),
            (
                ("jellyfin_abc", "api_key"),
                ("jellyfin", "", "abc", "api_key"),
            ),
            (
                ("emby_x_y", "refresh_token"),
                ("emby", "", "x_y", "refresh_token"),
            ),
            (
                ("plex_123", "access_token"),
                ("plex", "", "123", "access_token"),
            ),
        ];
        for ((source, token_type), want) in cases {
            let key = source_key(source, token_type).unwrap();
            assert_eq!(fields(&key), want, "{source} {token_type}");
        }
    }

    #[test]
    fn bad_source_ids_are_refused_with_the_rule() {
        let cases = [
            ("plex123", "token", "it has no '_'"),
            ("_123", "token", "the provider is empty"),
            ("plex_", "token", "the account is empty"),
            ("", "token", "it has no '_'"),
            ("ple x_1", "token", "key.provider may only contain"),
            ("plex_1", "", "token type for source \"plex_1\" is empty"),
            ("plex_1", "api key", "key.token_type may only contain"),
        ];
        for (source, token_type, want) in cases {
            let err = source_key(source, token_type).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(
                err.to_string().contains(want),
                "{source:?} {token_type:?}: {err}"
            );
        }
    }

    #[test]
    fn jellytau_keys_map_to_jellyfin() {
        let key = jellytau_key("jellytau::4fd1c2e7a9b04c1e::e2f5a0b1c3d4::access_token").unwrap();
        assert_eq!(
            fields(&key),
            (
                "jellyfin",
                "4fd1c2e7a9b04c1e",
                "e2f5a0b1c3d4",
                "access_token"
            )
        );
        // Taken verbatim: no %-unescaping of the text form.
        let key = jellytau_key("jellytau::a%3Ab::u::access_token").unwrap();
        assert_eq!(key.server_id(), "a%3Ab");
    }

    #[test]
    fn other_shapes_of_jellytau_keys_are_refused() {
        let cases = [
            ("jellytau::srv::usr", "has 3 '::'-separated parts, not 4"),
            (
                "jellytau::srv::x::usr::access_token",
                "has 5 '::'-separated parts, not 4",
            ),
            ("reel::srv::usr::access_token", "starts with \"reel\""),
            (
                "jellytau::srv::usr::refresh_token",
                "ends with \"refresh_token\"",
            ),
            ("jellytau::::usr::access_token", "the server id is empty"),
            ("jellytau::srv::::access_token", "the user id is empty"),
            (
                "jellytau::s\nv::usr::access_token",
                "key.server_id contains a control",
            ),
            ("", "has 1 '::'-separated parts, not 4"),
        ];
        for (key, want) in cases {
            let err = jellytau_key(key).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            let text = err.to_string();
            assert!(text.contains(want), "{key:?}: {text}");
            if !want.starts_with("key.") {
                assert!(text.starts_with("a JellyTau key is"), "{key:?}: {text}");
            }
        }
    }
}
