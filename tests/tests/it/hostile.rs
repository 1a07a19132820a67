//! Hostile surroundings: directories planted by another user, a daemon
//! whose memory another process of the same uid would like to read, and a
//! damaged database.

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use keyhaven_daemon::Settings;
use keyhaven_tests::{TestEnv, is_root, set_mode, skip};

#[tokio::test]
async fn a_runtime_directory_planted_by_another_user_is_refused() {
    if !is_root() {
        skip(
            "a_runtime_directory_planted_by_another_user_is_refused",
            "needs root to create a directory owned by another uid",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::in_dir(dir.path());
    // Another user got there first (the /tmp fallback is shared).
    let run = settings.socket.parent().unwrap();
    std::fs::create_dir_all(run).unwrap();
    set_mode(run, 0o700);
    rustix::fs::chown(
        run,
        Some(rustix::fs::Uid::from_raw(65534)),
        Some(rustix::fs::Gid::from_raw(65534)),
    )
    .unwrap();
    let err = keyhaven_daemon::prepare(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("owned by uid 65534") && err.contains("another user"),
        "{err}"
    );
    // Same for the data directory.
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::in_dir(dir.path());
    std::fs::create_dir_all(&settings.data_dir).unwrap();
    set_mode(&settings.data_dir, 0o700);
    rustix::fs::chown(
        &settings.data_dir,
        Some(rustix::fs::Uid::from_raw(65534)),
        None,
    )
    .unwrap();
    let err = keyhaven_daemon::prepare(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
}

#[test]
fn the_daemon_is_not_dumpable_and_writes_no_core() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "core dumps off: {core}");
    drop(daemon);

    // Non-dumpable shows as /proc/<pid> owned by root even when the process
    // runs as another user: observable only when we can start it as one.
    if !is_root() {
        skip(
            "the_daemon_is_not_dumpable_and_writes_no_core (dumpable part)",
            "needs root to run the daemon as another uid",
        );
        return;
    }
    let home = tempfile::tempdir().unwrap();
    set_mode(home.path(), 0o755);
    for sub in ["home", "run"] {
        let p = home.path().join(sub);
        std::fs::create_dir(&p).unwrap();
        rustix::fs::chown(
            &p,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .unwrap();
        set_mode(&p, 0o700);
    }
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(keyhaven_tests::bin("keyhavend"))
        .env_clear()
        .env("HOME", home.path().join("home"))
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is serving (its socket appears), bounded.
    let socket = home.path().join("run/keyhaven/keyhaven.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon as uid 65534 did not start"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon as uid 65534 exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let owner = std::fs::metadata(format!("/proc/{}/environ", child.id()))
        .unwrap()
        .uid();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        owner, 0,
        "a non-dumpable process's /proc files belong to root, not to its uid"
    );
}

#[tokio::test]
async fn a_truncated_database_is_refused_with_a_clear_message_and_kept() {
    let daemon = keyhaven_tests::TestDaemon::start().await;
    let client = daemon.client().await;
    for i in 0..50 {
        let k = keyhaven::CredentialKey::new("jellyfin", "s", &format!("u{i}"), "").unwrap();
        client
            .store(
                &k,
                keyhaven::Secret::from("t"),
                keyhaven::StoreOptions::default(),
            )
            .await
            .unwrap();
    }
    drop(client);
    let (dir, settings) = daemon.stop().await;
    let db = settings.database();
    let bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192);
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let truncated = std::fs::read(&db).unwrap();
    let result = keyhaven_daemon::prepare(&settings).await;
    match result {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("malformed") || text.contains("database"),
                "the refusal says what is wrong: {text}"
            );
        }
        Ok(prepared) => {
            // SQLite may open a truncated file; then reads must fail loudly,
            // never return an empty store.
            let path = prepared.socket_path().to_path_buf();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(prepared.serve(async move {
                let _ = rx.await;
            }));
            let client = keyhaven::Client::connect_to(&path).await.unwrap();
            let listed = client.list(&keyhaven::ListFilter::default()).await;
            assert!(
                listed.is_err(),
                "a damaged store is not silently empty: {listed:?}"
            );
            let _ = tx.send(());
            let _ = task.await;
        }
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        truncated,
        "never wiped or rewritten"
    );
    drop(dir);
}

#[test]
fn a_write_ahead_log_deleted_after_a_crash_stops_start_up() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let out = env.cli(&["store", "jellyfin", "s", "u"], b"in-the-wal");
    assert!(out.status.success());
    let (status, _) = daemon.stop_with(rustix::process::Signal::KILL);
    assert!(!status.success());
    let [db, wal, shm] = keyhaven_tests::database_files(&env.database());
    assert!(wal.exists() && shm.exists(), "a crash leaves both");
    std::fs::remove_file(&wal).unwrap();
    let out = env
        .command("keyhavend")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "start-up refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("write-ahead log is missing") && err.contains("may be lost"),
        "{err}"
    );
    assert!(db.exists() && shm.exists(), "nothing deleted");
    // The user accepts the loss: start-up goes on, the store is consistent.
    std::fs::remove_file(&shm).unwrap();
    let _daemon = env.spawn_daemon(&[]);
    let out = env.cli(&["status", "--json"], b"");
    assert!(out.status.success());
}
