//! `keyhaven::compat`: auth code written for the OS keyring, moved onto the
//! daemon by swapping its storage calls, and the keys it lands under.

use keyhaven::compat::{SecureStorage, SourceCredentials};
use keyhaven::{CredentialKey, ErrorKind, Secret};
use keyhaven_tests::TestDaemon;

/// A few lines of a Reel-like auth service: it kept tokens in the keyring
/// under `reel.{source_id}`; now the same calls go to keyhaven.
struct AuthService {
    credentials: SourceCredentials,
}

impl AuthService {
    async fn login(&self, source_id: &str, token: &str) -> Result<(), keyhaven::Error> {
        self.credentials
            .save_credentials(source_id, "token", token)
            .await
    }

    async fn token(&self, source_id: &str) -> Result<Option<String>, keyhaven::Error> {
        let secret = self
            .credentials
            .load_credentials(source_id, "token")
            .await?;
        Ok(secret.map(|s| s.expose_str().unwrap_or_default().to_owned()))
    }

    async fn logout(&self, source_id: &str) -> Result<(), keyhaven::Error> {
        self.credentials
            .remove_credentials(source_id, "token")
            .await
    }
}

#[tokio::test]
async fn a_reel_style_auth_service_runs_on_the_daemon() {
    let daemon = TestDaemon::start().await;
    let auth = AuthService {
        credentials: SourceCredentials::new(daemon.client().await),
    };

    assert_eq!(auth.token("plex_123").await.unwrap(), None, "nothing yet");
    auth.login("plex_123", "tok-1").await.unwrap();
    assert_eq!(
        auth.token("plex_123").await.unwrap().as_deref(),
        Some("tok-1")
    );

    // A fresh login overwrites.
    auth.login("plex_123", "tok-2").await.unwrap();
    assert_eq!(
        auth.token("plex_123").await.unwrap().as_deref(),
        Some("tok-2")
    );

    // Other apps find it under the shared key.
    let client = daemon.client().await;
    let shared = CredentialKey::new("plex", "", "123", "access_token").unwrap();
    let cred = client.retrieve(&shared).await.unwrap();
    assert_eq!(cred.secret.expose(), b"tok-2");

    // API keys live beside tokens, not over them.
    auth.credentials
        .save_credentials("plex_123", "api_key", Secret::from("key-9"))
        .await
        .unwrap();
    let api = CredentialKey::new("plex", "", "123", "api_key").unwrap();
    assert_eq!(
        client.retrieve(&api).await.unwrap().secret.expose(),
        b"key-9"
    );

    auth.logout("plex_123").await.unwrap();
    assert_eq!(auth.token("plex_123").await.unwrap(), None, "removed");
    // Removing again is not an error, as with a keyring entry.
    auth.logout("plex_123").await.unwrap();
    // The API key is untouched.
    let loaded = auth
        .credentials
        .load_credentials("plex_123", "api_key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.expose(), b"key-9");

    let err = auth.login("plex123", "tok").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("plex123"), "{err}");
}

#[tokio::test]
async fn jellytau_style_storage_shares_the_jellyfin_key() {
    let daemon = TestDaemon::start().await;
    let storage = SecureStorage::new(daemon.client().await);
    let key = "jellytau::5f0c1a2b3c4d::9e8d7c6b5a49::access_token";

    assert_eq!(storage.retrieve(key).await.unwrap(), None);
    storage.store(key, "jf-token").await.unwrap();
    assert_eq!(
        storage.retrieve(key).await.unwrap().as_deref(),
        Some("jf-token")
    );

    // Another Jellyfin app of the same user reads it by the shared key,
    // and its refreshed token is what JellyTau then sees.
    let client = daemon.client().await;
    let shared =
        CredentialKey::new("jellyfin", "5f0c1a2b3c4d", "9e8d7c6b5a49", "access_token").unwrap();
    assert_eq!(
        client.retrieve(&shared).await.unwrap().secret.expose(),
        b"jf-token"
    );
    client
        .store(&shared, Secret::from("jf-refreshed"), Default::default())
        .await
        .unwrap();
    assert_eq!(
        storage.retrieve(key).await.unwrap().as_deref(),
        Some("jf-refreshed")
    );

    storage.delete(key).await.unwrap();
    assert_eq!(storage.retrieve(key).await.unwrap(), None);
    storage.delete(key).await.unwrap();

    for bad in [
        "jellytau::srv::usr",
        "jellytau::a::b::c::access_token",
        "other::srv::usr::access_token",
    ] {
        let err = storage.store(bad, "x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert!(err.to_string().contains("a JellyTau key is"), "{err}");
    }
    assert!(
        client.list(&Default::default()).await.unwrap().is_empty(),
        "refused keys store nothing"
    );
}
