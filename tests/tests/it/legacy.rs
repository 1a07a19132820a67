//! Legacy keyring read-through, hermetically: JellyTau's and Reel's entries
//! are seeded into the `keyring_core` mock store behind `TestKeyring`, and
//! the daemon runs in-process.

use std::time::{Duration, Instant};

use keyhaven::{AuditQuery, CredentialKey, ErrorKind, Secret, StoreOptions};
use keyhaven_daemon::server::config::LegacyOptions;
use keyhaven_tests::{KeyringMode, TestDaemon, TestKeyring};

const JELLYTAU: &str = "jellytau::srv-1::user-1::access_token";

fn jellyfin() -> CredentialKey {
    CredentialKey::new("jellyfin", "srv-1", "user-1", "").unwrap()
}

fn plex() -> CredentialKey {
    CredentialKey::new("plex", "", "123", "").unwrap()
}

async fn daemon(keyring: &std::sync::Arc<TestKeyring>, legacy: LegacyOptions) -> TestDaemon {
    let choice = keyring.choice();
    TestDaemon::start_with(|s| {
        s.keyring = choice;
        s.legacy = legacy;
        s.keyring_timeout = Duration::from_millis(300);
    })
    .await
}

async fn migrations(client: &keyhaven::Client, key: &CredentialKey) -> Vec<keyhaven::AuditEntry> {
    client
        .audit(&AuditQuery {
            key: Some(key.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.operation == "migrate")
        .collect()
}

#[tokio::test]
async fn a_miss_finds_jellytau_and_reel_entries_and_migrates_them_once() {
    let keyring = TestKeyring::new();
    keyring.seed("jellytau", JELLYTAU, b"jt-token");
    keyring.seed("gnome-reel.plex_123", "token", b"reel-token");
    let daemon = daemon(&keyring, LegacyOptions::default()).await;
    let client = daemon.client().await;

    let cred = client.retrieve(&jellyfin()).await.unwrap();
    assert_eq!(cred.secret.expose(), b"jt-token");
    let cred = client.retrieve(&plex()).await.unwrap();
    assert_eq!(cred.secret.expose(), b"reel-token");
    assert_eq!(keyring.legacy_reads(), 2);
    // Now served from the store; the legacy entries stay (no cleanup).
    client.retrieve(&plex()).await.unwrap();
    assert_eq!(keyring.legacy_reads(), 2);
    assert_eq!(keyring.legacy_entries().len(), 2);
    let listed = client.list(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 2);

    let audit = migrations(&client, &plex()).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].outcome, "OK");
    assert!(audit[0].detail.contains("gnome-reel.plex_123"), "{audit:?}");
    assert!(!audit[0].detail.contains("reel-token"));
}

#[tokio::test]
async fn the_jellytau_key_as_service_is_found_too() {
    let keyring = TestKeyring::new();
    keyring.seed(JELLYTAU, "whatever", b"jt-token-2");
    let daemon = daemon(&keyring, LegacyOptions::default()).await;
    let client = daemon.client().await;
    let cred = client.retrieve(&jellyfin()).await.unwrap();
    assert_eq!(cred.secret.expose(), b"jt-token-2");
}

#[tokio::test]
async fn a_miss_everywhere_is_not_found_and_keys_of_no_layout_never_touch_the_keyring() {
    let keyring = TestKeyring::new();
    keyring.seed("reel.plex_999", "token", b"other");
    let daemon = daemon(&keyring, LegacyOptions::default()).await;
    let client = daemon.client().await;
    let err = client.retrieve(&plex()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // No layout holds a refresh token with a server id.
    keyring.set_mode(KeyringMode::Hanging);
    let started = Instant::now();
    let key = CredentialKey::new("jellyfin", "s", "u", "refresh_token").unwrap();
    let err = client.retrieve(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(started.elapsed() < Duration::from_millis(250));
    keyring.set_mode(KeyringMode::Open);
}

#[tokio::test]
async fn a_locked_absent_or_hanging_keyring_is_a_quick_not_found() {
    let keyring = TestKeyring::new();
    keyring.seed("reel.plex_123", "token", b"reel-token");
    let daemon = daemon(&keyring, LegacyOptions::default()).await;
    let client = daemon.client().await;
    for mode in [
        KeyringMode::Locked,
        KeyringMode::Absent,
        KeyringMode::Hanging,
    ] {
        keyring.set_mode(mode);
        let started = Instant::now();
        let err = client.retrieve(&plex()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{mode:?}: {err}");
        // The keyring timeout is 300 ms.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode:?}: {:?}",
            started.elapsed()
        );
    }
    keyring.set_mode(KeyringMode::Open);
    // Once the keyring answers again, the token is found.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.retrieve(&plex()).await {
            Ok(cred) => {
                assert_eq!(cred.secret.expose(), b"reel-token");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::NotFound);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn concurrent_misses_migrate_once() {
    let keyring = TestKeyring::new();
    keyring.seed("reel.plex_123", "token", b"reel-token");
    let daemon = daemon(&keyring, LegacyOptions::default()).await;
    let client = daemon.client().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.retrieve(&plex()).await.unwrap().secret
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().expose(), b"reel-token");
    }
    assert_eq!(keyring.legacy_reads(), 1);
    assert_eq!(migrations(&client, &plex()).await.len(), 1);
    let meta = client.list(&Default::default()).await.unwrap();
    assert_eq!(meta.len(), 1);
}

#[tokio::test]
async fn cleanup_removes_the_legacy_entry_only_when_configured() {
    for cleanup in [false, true] {
        let keyring = TestKeyring::new();
        keyring.seed("reel.plex_123", "token", b"reel-token");
        let daemon = daemon(
            &keyring,
            LegacyOptions {
                enabled: true,
                cleanup,
            },
        )
        .await;
        let client = daemon.client().await;
        client.retrieve(&plex()).await.unwrap();
        let left = keyring.legacy_entries();
        assert_eq!(left.is_empty(), cleanup, "cleanup={cleanup}: {left:?}");
    }
}

#[tokio::test]
async fn a_value_stored_by_an_app_wins_and_read_through_can_be_switched_off() {
    let keyring = TestKeyring::new();
    keyring.seed("reel.plex_123", "token", b"old-reel-token");
    let daemon = daemon(
        &keyring,
        LegacyOptions {
            enabled: false,
            cleanup: true,
        },
    )
    .await;
    let client = daemon.client().await;
    let err = client.retrieve(&plex()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(keyring.legacy_reads(), 0);
    client
        .store(&plex(), Secret::from("new"), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        client.retrieve(&plex()).await.unwrap().secret.expose(),
        b"new"
    );
    assert_eq!(keyring.legacy_entries().len(), 1);
}

#[tokio::test]
async fn jellytau_entries_whose_ids_do_not_round_trip_are_never_served() {
    let keyring = TestKeyring::new();
    // Both (a::b, u) and (a, b::u) write this name; both (x:, y) and
    // (x, :y) write the other. Neither account may get the token.
    keyring.seed(
        "jellytau",
        "jellytau::a::b::u::access_token",
        b"whose-token-1",
    );
    keyring.seed(
        "jellytau",
        "jellytau::x:::y::access_token",
        b"whose-token-2",
    );
    keyring.seed("jellytau::a::b::u::access_token", "any", b"whose-token-3");
    let daemon = daemon(&keyring, LegacyOptions::default()).await;
    let client = daemon.client().await;
    for (server, user) in [("a::b", "u"), ("a", "b::u"), ("x:", "y"), ("x", ":y")] {
        let key = CredentialKey::new("jellyfin", server, user, "").unwrap();
        let err = client.retrieve(&key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{key}: {err}");
    }
    assert_eq!(
        keyring.legacy_reads(),
        0,
        "no ambiguous entry was even read"
    );
    assert!(client.list(&Default::default()).await.unwrap().is_empty());
    assert_eq!(keyring.legacy_entries().len(), 3, "and none was touched");
}

#[tokio::test]
async fn a_call_past_its_deadline_is_unavailable_and_a_longer_deadline_waits_it_out() {
    // The read-through of a JellyTau key waits on the hanging keyring for
    // the daemon's keyring timeout (300 ms here), then answers not found.
    let keyring = TestKeyring::new();
    let daemon = daemon(&keyring, LegacyOptions::default()).await;
    let client = daemon.client().await;
    assert_eq!(client.timeout(), keyhaven::REQUEST_TIMEOUT);
    keyring.set_mode(KeyringMode::Hanging);
    let err = client
        .with_timeout(Duration::from_millis(50))
        .retrieve(&jellyfin())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("deadline"), "{err}");
    // The same call with the default deadline outlasts the keyring's.
    let err = client.retrieve(&jellyfin()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    keyring.set_mode(KeyringMode::Open);
    // The connection is still good for the next call.
    client
        .store(&jellyfin(), Secret::from("t"), Default::default())
        .await
        .unwrap();
}
