//! What lands on disk: modes, no plaintext, tamper detection, the lock, the
//! socket rules and the key checks at start-up.

use std::os::unix::fs::PermissionsExt;

use keyhaven::{CredentialKey, ErrorKind, Secret, StoreOptions};
use keyhaven_daemon::StartError;
use keyhaven_tests::{TestDaemon, database_files, file_contains, mode_of, set_mode};

fn key(server: &str) -> CredentialKey {
    CredentialKey::new("jellyfin", server, "user-1", "").unwrap()
}

#[tokio::test]
async fn files_are_private_from_creation() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    client
        .store(&key("s"), Secret::from("t"), StoreOptions::default())
        .await
        .unwrap();
    let socket = daemon.socket();
    assert_eq!(mode_of(socket), 0o600, "socket");
    assert_eq!(mode_of(socket.parent().unwrap()), 0o700, "socket directory");
    assert_eq!(
        mode_of(&daemon.settings().data_dir),
        0o700,
        "data directory"
    );
    for file in database_files(daemon.store_path()) {
        assert!(file.exists(), "{} exists while serving", file.display());
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode_of(&daemon.settings().key_file), 0o600, "key file");
    assert_eq!(
        mode_of(daemon.settings().key_file.parent().unwrap()),
        0o700,
        "key directory"
    );
}

#[tokio::test]
async fn the_database_never_holds_the_secret_in_plaintext() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let canary = b"plaintext-canary-5c1e0d9b";
    client
        .store(
            &key("s"),
            Secret::new(canary.to_vec()),
            StoreOptions::default(),
        )
        .await
        .unwrap();
    client
        .store(
            &key("t"),
            Secret::new(canary.to_vec()),
            StoreOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        client.retrieve(&key("s")).await.unwrap().secret.expose(),
        canary
    );
    let files = database_files(daemon.store_path());
    // While serving: the write is in the WAL.
    assert!(
        std::fs::metadata(&files[1]).unwrap().len() > 0,
        "WAL has content"
    );
    for f in &files {
        assert!(
            !file_contains(f, canary),
            "{} contains the secret",
            f.display()
        );
    }
    // And after a clean stop, when the WAL is checkpointed into the file.
    let (dir, _) = daemon.stop().await;
    for f in &files {
        assert!(
            !file_contains(f, canary),
            "{} contains the secret",
            f.display()
        );
    }
    // The key file holds the key, not the secret.
    assert!(!file_contains(
        &dir.path().join("config/keyhaven.key"),
        canary
    ));
}

#[tokio::test]
async fn credentials_survive_a_restart() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let stored = client
        .store(&key("s"), Secret::from("durable"), StoreOptions::default())
        .await
        .unwrap();
    drop(client);
    let (dir, settings) = daemon.stop().await;
    assert!(!settings.socket.exists(), "a clean stop removes the socket");
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let cred = daemon.client().await.retrieve(&key("s")).await.unwrap();
    assert_eq!(cred.secret.expose(), b"durable");
    assert_eq!(cred.metadata.revision, stored.metadata.revision);
}

#[tokio::test]
async fn a_row_copied_onto_another_key_fails_to_open_and_others_still_open() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    client
        .store(&key("a"), Secret::from("secret-a"), StoreOptions::default())
        .await
        .unwrap();
    client
        .store(&key("b"), Secret::from("secret-b"), StoreOptions::default())
        .await
        .unwrap();
    client
        .store(&key("c"), Secret::from("secret-c"), StoreOptions::default())
        .await
        .unwrap();
    // An attacker with write access to the database swaps a's sealed secret
    // into b's row.
    keyhaven_tests::sql(
        daemon.store_path(),
        "UPDATE auth_tokens SET ciphertext = (SELECT ciphertext FROM auth_tokens WHERE server_id = 'a'), \
         nonce = (SELECT nonce FROM auth_tokens WHERE server_id = 'a') WHERE server_id = 'b'",
    )
    .await;
    // And flips a bit in c's ciphertext.
    keyhaven_tests::sql(
        daemon.store_path(),
        "UPDATE auth_tokens SET ciphertext = \
         CAST(substr(ciphertext, 1, 2) || x'00' || substr(ciphertext, 4) AS BLOB) WHERE server_id = 'c'",
    )
    .await;
    for server in ["b", "c"] {
        let err = client.retrieve(&key(server)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("cannot be decrypted") && text.contains(&key(server).to_string()),
            "{text}"
        );
        assert!(!text.contains("secret-"), "{text}");
    }
    assert_eq!(
        client.retrieve(&key("a")).await.unwrap().secret.expose(),
        b"secret-a"
    );
    // The daemon still serves writes; rewriting the damaged key heals it.
    client
        .store(&key("b"), Secret::from("fresh-b"), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        client.retrieve(&key("b")).await.unwrap().secret.expose(),
        b"fresh-b"
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_store_is_refused() {
    let first = TestDaemon::start().await;
    let mut settings = first.settings().clone();
    settings.socket = first.dir().join("run2/other.sock");
    let err = keyhaven_daemon::prepare(&settings).await.unwrap_err();
    assert!(matches!(err, StartError::AlreadyRunning { .. }), "{err}");
    assert!(err.to_string().contains("already running"), "{err}");
    // The first one is unaffected.
    first.client().await.status().await.unwrap();
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let settings = keyhaven_daemon::Settings::in_dir(dir.path());
    let run = settings.socket.parent().unwrap();
    std::fs::create_dir_all(run).unwrap();
    set_mode(run, 0o700);
    // A socket file nobody listens on, as a crashed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&settings.socket).unwrap());
    assert!(settings.socket.exists());
    let daemon = TestDaemon::start_in(dir, settings.clone()).await.unwrap();
    daemon.client().await.status().await.unwrap();

    // A second store pointed at the same, live socket must not steal it.
    let other = tempfile::tempdir().unwrap();
    let mut rival = keyhaven_daemon::Settings::in_dir(other.path());
    rival.socket = settings.socket.clone();
    let err = keyhaven_daemon::prepare(&rival).await.unwrap_err();
    assert!(matches!(err, StartError::SocketInUse { .. }), "{err}");
    daemon.client().await.status().await.unwrap();

    // Something that is not a socket is never deleted.
    let third = tempfile::tempdir().unwrap();
    let mut s3 = keyhaven_daemon::Settings::in_dir(third.path());
    std::fs::create_dir_all(s3.socket.parent().unwrap()).unwrap();
    set_mode(s3.socket.parent().unwrap(), 0o700);
    std::fs::write(&s3.socket, b"precious").unwrap();
    let err = keyhaven_daemon::prepare(&s3).await.unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&s3.socket).unwrap(), b"precious");
    s3.socket = third.path().join("elsewhere/k.sock");
    keyhaven_daemon::prepare(&s3).await.unwrap();
}

#[tokio::test]
async fn socket_directories_that_are_not_private_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = keyhaven_daemon::Settings::in_dir(dir.path());
    let run = settings.socket.parent().unwrap().to_path_buf();

    std::fs::create_dir_all(&run).unwrap();
    set_mode(&run, 0o755);
    let err = keyhaven_daemon::prepare(&settings).await.unwrap_err();
    assert!(err.to_string().contains("mode is 755"), "{err}");
    std::fs::remove_dir(&run).unwrap();

    // A symlink planted where the directory should be.
    let elsewhere = dir.path().join("attacker-dir");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &run).unwrap();
    let err = keyhaven_daemon::prepare(&settings).await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing created through the link"
    );
}
