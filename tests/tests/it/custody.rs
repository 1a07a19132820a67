//! Key custody, hermetically: the keyring is the `keyring_core` mock store
//! behind switches that make it locked, absent or hanging. The daemon runs
//! in-process on a temporary socket.

use std::time::{Duration, Instant};

use keyhaven::{Client, CredentialKey, DaemonStatus, ErrorKind, Secret, StoreOptions};
use keyhaven_daemon::keys::custody::KeyTier;
use keyhaven_tests::{KeyringMode, TestDaemon, TestKeyring, mode_of, set_mode};

fn key(n: usize) -> CredentialKey {
    CredentialKey::new("jellyfin", "srv", &format!("user-{n}"), "").unwrap()
}

async fn fill(client: &Client, n: usize) {
    for i in 0..n {
        let secret = Secret::from(format!("token-{i}"));
        client
            .store(&key(i), secret, StoreOptions::default())
            .await
            .unwrap();
    }
}

async fn check_all(client: &Client, n: usize) {
    for i in 0..n {
        let cred = client.retrieve(&key(i)).await.unwrap();
        assert_eq!(
            cred.secret.expose_str(),
            Some(format!("token-{i}").as_str())
        );
    }
}

fn tier<'a>(status: &'a DaemonStatus, name: &str) -> &'a keyhaven::KeyTierState {
    status.key_tiers.iter().find(|t| t.tier == name).unwrap()
}

/// Polls the daemon's status until `done` holds (bounded).
async fn status_until(client: &Client, done: impl Fn(&DaemonStatus) -> bool) -> DaemonStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client.status().await.unwrap();
        if done(&status) || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_store_keeps_its_key_in_a_reachable_keyring_not_a_file() {
    let keyring = TestKeyring::new();
    let choice = keyring.choice();
    let daemon = TestDaemon::start_with(|s| s.keyring = choice.clone()).await;
    let client = daemon.client().await;
    let status = client.status().await.unwrap();
    assert_eq!(status.key_tier, "keyring", "{status:?}");
    assert_eq!(tier(&status, "keyring").state, "active");
    assert!(
        !daemon.settings().key_file.exists(),
        "no key file when the keyring holds the key"
    );
    let entries = keyring.entries();
    assert_eq!(
        entries.len(),
        1,
        "{:?}",
        entries.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    assert!(entries[0].0.starts_with("data-key "));
    assert!(entries[0].1.starts_with(b"keyhaven-data-key-v1 "));
    fill(&client, 3).await;
    drop(client);
    let (dir, settings) = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    check_all(&daemon.client().await, 3).await;
}

#[tokio::test]
async fn without_a_keyring_the_key_goes_to_a_private_file() {
    let keyring = TestKeyring::new();
    keyring.set_mode(KeyringMode::Absent);
    let choice = keyring.choice();
    let daemon = TestDaemon::start_with(|s| s.keyring = choice.clone()).await;
    let status = daemon.client().await.status().await.unwrap();
    assert_eq!(status.key_tier, "file");
    assert_eq!(tier(&status, "keyring").state, "unavailable");
    assert!(
        tier(&status, "keyring").detail.contains("gone"),
        "{status:?}"
    );
    assert_eq!(mode_of(&daemon.settings().key_file), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_keyring_delays_neither_start_up_nor_requests() {
    let keyring = TestKeyring::new();
    keyring.set_mode(KeyringMode::Hanging);
    let choice = keyring.choice();
    let started = Instant::now();
    let daemon = TestDaemon::start_with(|s| {
        s.keyring = choice.clone();
        s.keyring_timeout = Duration::from_millis(300);
    })
    .await;
    // Start-up waited for the keyring's timeout, not for the keyring. (Not a
    // timing assertion: the keyring never answers, so without the timeout
    // start-up would never finish.)
    let client = daemon.client().await;
    let status = client.status().await.unwrap();
    assert_eq!(status.key_tier, "file");
    assert!(
        tier(&status, "keyring").detail.contains("did not answer"),
        "{status:?}"
    );
    fill(&client, 2).await;
    check_all(&client, 2).await;
    assert!(started.elapsed() < Duration::from_secs(600));
    keyring.set_mode(KeyringMode::Open);
}

#[tokio::test]
async fn a_locked_keyring_locks_the_store_until_it_is_unlocked_without_a_restart() {
    let keyring = TestKeyring::new();
    let choice = keyring.choice();
    let daemon = TestDaemon::start_with(|s| {
        s.keyring = choice.clone();
        s.key_retry = Duration::from_millis(50);
    })
    .await;
    fill(&daemon.client().await, 3).await;
    let (dir, settings) = daemon.stop().await;

    // After a reboot, before the user has unlocked the keyring.
    keyring.set_mode(KeyringMode::Locked);
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let client = daemon.client().await;
    let status = client.status().await.unwrap();
    let problem = status.key_problem.clone().expect("the store is locked");
    assert!(
        problem.contains("locked") && problem.contains("unlock it"),
        "{problem}"
    );
    assert_eq!(status.key_tier, "");
    let err = client.retrieve(&key(0)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string().contains("the credential store is locked"),
        "{err}"
    );
    let err = client
        .store(&key(9), Secret::from("x"), StoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        !daemon.settings().key_file.exists(),
        "no new key was made in the meantime"
    );

    keyring.set_mode(KeyringMode::Open);
    let status = status_until(&client, |s| s.key_problem.is_none()).await;
    assert_eq!(status.key_tier, "keyring", "{status:?}");
    check_all(&client, 3).await;
}

#[tokio::test]
async fn pinning_an_unavailable_keyring_makes_start_up_fail_clearly() {
    let keyring = TestKeyring::new();
    keyring.set_mode(KeyringMode::Locked);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = keyhaven_daemon::Settings::in_dir(dir.path());
    settings.keyring = keyring.choice();
    settings.key_source = Some(KeyTier::Keyring);
    let err = keyhaven_daemon::prepare(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key_source = \"keyring\"") && err.contains("will not fall back"),
        "{err}"
    );
    assert!(!settings.key_file.exists());
}

#[tokio::test]
async fn a_missing_or_wrong_key_file_locks_the_store_and_restoring_it_unlocks() {
    let daemon = TestDaemon::start_with(|s| s.key_retry = Duration::from_millis(50)).await;
    fill(&daemon.client().await, 2).await;
    let (dir, settings) = daemon.stop().await;
    let key_file = settings.key_file.clone();
    let original = std::fs::read(&key_file).unwrap();
    let db_before = std::fs::read(settings.database()).unwrap();

    std::fs::remove_file(&key_file).unwrap();
    let daemon = TestDaemon::start_in(dir, settings.clone()).await.unwrap();
    let client = daemon.client().await;
    let problem = client.status().await.unwrap().key_problem.unwrap();
    assert!(
        problem.contains("was not found") && problem.contains("never creates a new key"),
        "{problem}"
    );
    assert_eq!(
        client.retrieve(&key(0)).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert!(
        !key_file.exists(),
        "no key was generated over existing data"
    );

    // A key that is not this store's: named, refused, nothing wiped.
    std::fs::write(
        &key_file,
        format!("keyhaven-data-key-v1 {}\n", "ab".repeat(32)),
    )
    .unwrap();
    set_mode(&key_file, 0o600);
    let status = status_until(&client, |s| {
        s.key_problem
            .as_deref()
            .is_some_and(|p| p.contains("do not fit"))
    })
    .await;
    assert!(status.key_problem.unwrap().contains("do not fit"));
    assert_eq!(
        std::fs::read(settings.database()).unwrap().len(),
        db_before.len()
    );

    // The right key comes back: served again, no restart.
    std::fs::write(&key_file, &original).unwrap();
    let status = status_until(&client, |s| s.key_problem.is_none()).await;
    assert_eq!(status.key_tier, "file");
    check_all(&client, 2).await;
}

#[tokio::test]
async fn a_systemd_credential_is_the_first_choice() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    // What `systemd-creds decrypt` hands the service: the key's text form.
    let key = keyhaven_daemon::store::crypto::DataKey::generate().unwrap();
    std::fs::write(
        creds.join("keyhaven.key"),
        keyhaven_daemon::keys::custody::key_to_text(&key).as_bytes(),
    )
    .unwrap();
    let keyring = TestKeyring::new();
    let mut settings = keyhaven_daemon::Settings::in_dir(dir.path());
    settings.credentials_dir = Some(creds.clone());
    settings.keyring = keyring.choice();
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let client = daemon.client().await;
    let status = client.status().await.unwrap();
    assert_eq!(status.key_tier, "systemd-credential", "{status:?}");
    assert_eq!(status.key_id, key.id());
    assert_eq!(tier(&status, "keyring").state, "skipped");
    assert!(keyring.entries().is_empty() && !daemon.settings().key_file.exists());
    fill(&client, 2).await;
    let err = client.rotate_key().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("systemd credential"), "{err}");
    drop(client);

    // Without the credential the store stays locked; with it, it opens.
    let (dir, mut settings) = daemon.stop().await;
    settings.credentials_dir = None;
    let daemon = TestDaemon::start_in(dir, settings.clone()).await.unwrap();
    assert!(
        daemon
            .client()
            .await
            .status()
            .await
            .unwrap()
            .key_problem
            .is_some()
    );
    let (dir, mut settings) = daemon.stop().await;
    settings.credentials_dir = Some(creds);
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    check_all(&daemon.client().await, 2).await;
}

#[tokio::test]
async fn rotation_reseals_every_credential_under_a_new_key() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    fill(&client, 40).await;
    let before = client.status().await.unwrap();
    let old_file = std::fs::read(&daemon.settings().key_file).unwrap();
    let rotation = client.rotate_key().await.unwrap();
    assert_eq!(rotation.old_key_id, before.key_id);
    assert_ne!(rotation.new_key_id, rotation.old_key_id);
    assert_eq!(rotation.resealed, 40);
    assert_eq!(rotation.tier, "file");
    assert_ne!(
        std::fs::read(&daemon.settings().key_file).unwrap(),
        old_file
    );
    let next = daemon.settings().key_file.with_extension("key.next");
    assert!(!next.exists(), "no pending key left behind");
    check_all(&client, 40).await;
    assert_eq!(client.status().await.unwrap().key_id, rotation.new_key_id);
    drop(client);
    // The old key can no longer open anything: restore it and the store
    // stays locked.
    let (dir, settings) = daemon.stop().await;
    std::fs::write(&settings.key_file, &old_file).unwrap();
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let problem = daemon
        .client()
        .await
        .status()
        .await
        .unwrap()
        .key_problem
        .unwrap();
    assert!(problem.contains(&rotation.new_key_id), "{problem}");
}

#[tokio::test]
async fn the_key_moves_between_the_file_and_the_keyring() {
    let keyring = TestKeyring::new();
    keyring.set_mode(KeyringMode::Absent);
    let choice = keyring.choice();
    let daemon = TestDaemon::start_with(|s| s.keyring = choice.clone()).await;
    let client = daemon.client().await;
    fill(&client, 5).await;
    assert_eq!(client.status().await.unwrap().key_tier, "file");

    // The keyring turns up (the user logged in to a desktop session).
    keyring.set_mode(KeyringMode::Open);
    assert_eq!(client.move_key("keyring").await.unwrap(), "file");
    assert!(
        !daemon.settings().key_file.exists(),
        "the file copy is gone"
    );
    assert_eq!(keyring.entries().len(), 1);
    let status = client.status().await.unwrap();
    assert_eq!(status.key_tier, "keyring");
    check_all(&client, 5).await;
    drop(client);

    let (dir, settings) = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let client = daemon.client().await;
    assert_eq!(client.status().await.unwrap().key_tier, "keyring");
    check_all(&client, 5).await;

    // Keyring to key file weakens the key's protection: refused unless the
    // config allows downgrades, and nothing moves.
    let err = client.move_key("file").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("allow_key_downgrade"), "{err}");
    assert_eq!(keyring.entries().len(), 1);
    assert!(!daemon.settings().key_file.exists());
    assert_eq!(client.status().await.unwrap().key_tier, "keyring");
    drop(client);

    let (dir, mut settings) = daemon.stop().await;
    settings.allow_key_downgrade = true;
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let client = daemon.client().await;
    assert_eq!(client.move_key("file").await.unwrap(), "keyring");
    assert!(keyring.entries().is_empty());
    assert_eq!(mode_of(&daemon.settings().key_file), 0o600);
    check_all(&client, 5).await;
    let err = client.move_key("systemd-credential").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = client.move_key("usb-stick").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

/// `status` and `doctor` read the tier reports: after a rotation they name
/// the new key id, after a move the tier the key left is no longer in use.
#[tokio::test]
async fn status_follows_the_key_through_rotation_and_moves() {
    let keyring = TestKeyring::new();
    keyring.set_mode(KeyringMode::Absent);
    let choice = keyring.choice();
    let daemon = TestDaemon::start_with(|s| s.keyring = choice.clone()).await;
    let client = daemon.client().await;
    fill(&client, 2).await;
    let before = client.status().await.unwrap();
    assert_eq!(tier(&before, "file").state, "active");

    let rotation = client.rotate_key().await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.key_id, rotation.new_key_id);
    for text in [&status.key_source, &tier(&status, "file").detail] {
        assert!(text.contains(&rotation.new_key_id), "{status:?}");
        assert!(!text.contains(&rotation.old_key_id), "{status:?}");
    }

    keyring.set_mode(KeyringMode::Open);
    assert_eq!(client.move_key("keyring").await.unwrap(), "file");
    let status = client.status().await.unwrap();
    assert_eq!(status.key_tier, "keyring");
    let active: Vec<_> = status
        .key_tiers
        .iter()
        .filter(|t| t.state == "active")
        .map(|t| t.tier.as_str())
        .collect();
    assert_eq!(active, ["keyring"], "{status:?}");
    assert!(
        tier(&status, "keyring")
            .detail
            .contains(&rotation.new_key_id),
        "{status:?}"
    );
    assert!(
        !tier(&status, "file").detail.contains("key id"),
        "the file no longer holds the key: {status:?}"
    );
    check_all(&client, 2).await;
}

/// A start-up failure in key custody names its cause once: the daemon's
/// errors carry their cause in the message, and the log line must not
/// append it a second time (it did, e.g. "Access denied" twice on Windows).
#[test]
fn a_key_file_that_cannot_be_written_names_its_cause_once() {
    let env = keyhaven_tests::TestEnv::new();
    let key_file = env.key_file();
    let dir = key_file.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    set_mode(dir, 0o700);
    // A directory where the key file's temporary copy goes: writing the new
    // store's key fails with "Is a directory" (os error 21).
    std::fs::create_dir(dir.join("keyhaven.key.tmp")).unwrap();
    let out = env.command("keyhavend").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("keyhaven.key"), "{err}");
    assert_eq!(err.matches("os error 21").count(), 1, "{err}");
}
