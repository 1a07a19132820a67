//! The keyring tier against a real Secret Service: gnome-keyring on a
//! private D-Bus session bus, with the real `keyhavend` and `keyhaven`.
//! Skipped, loudly, when dbus-daemon, gnome-keyring-daemon, dbus-send or
//! secret-tool is missing (`.ci/run` installs them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keyhaven_tests::{Session, TestEnv, have, skip};

const TOKENS: usize = 4;
const WAIT: Duration = Duration::from_secs(20);

fn status(env: &TestEnv) -> serde_json::Value {
    let out = env.cli(&["status", "--json"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_until(env: &TestEnv, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(env);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_tokens(env: &TestEnv) {
    for i in 0..TOKENS {
        let out = env.cli(&["get", "-n", "plex", "", &format!("acct-{i}")], b"");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, format!("plex-token-{i}").as_bytes());
    }
}

fn write_config(env: &TestEnv) -> PathBuf {
    let dir = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&dir).unwrap();
    keyhaven_tests::set_mode(&dir, 0o700);
    let config = dir.join("config.toml");
    std::fs::write(&config, "key_retry_seconds = 1\n").unwrap();
    config
}

#[test]
fn the_key_lives_in_a_real_secret_service_and_survives_locks_and_absence() {
    let name = "the_key_lives_in_a_real_secret_service_and_survives_locks_and_absence";
    for program in [
        "dbus-daemon",
        "dbus-send",
        "gnome-keyring-daemon",
        "secret-tool",
    ] {
        if !have(program) {
            let why = format!(
                "{program} is not installed (apt-get install gnome-keyring dbus libsecret-tools)"
            );
            // CI installs them; there a missing one is a failure.
            assert!(
                std::env::var_os("KEYHAVEN_REQUIRE_SECRET_SERVICE").is_none(),
                "{why}"
            );
            skip(name, &why);
            return;
        }
    }
    let env = TestEnv::new();
    write_config(&env);
    let mut session = Session::start(&env);
    session.start_keyring(true);

    // A new store keeps its key in the keyring, not in a file.
    let daemon = session.daemon(&[]);
    let s = status(&env);
    assert_eq!(s["key_tier"], "keyring", "{s}");
    assert!(!env.key_file().exists());
    let items = session.keyhaven_items();
    assert!(items.contains("attribute.service = keyhaven"), "{items}");
    assert!(items.contains("attribute.username = data-key "), "{items}");
    assert!(
        items.contains("keyhaven-data-key-v1 "),
        "the key is in the keyring: {items}"
    );
    for i in 0..TOKENS {
        let out = env.cli(
            &["store", "plex", "", &format!("acct-{i}")],
            format!("plex-token-{i}").as_bytes(),
        );
        assert!(out.status.success());
    }
    let (stopped, log) = daemon.stop();
    assert!(stopped.success(), "{stopped:?}\n{log}");

    // Locked keyring (gnome-keyring started without the password): the
    // daemon starts, says the store is locked and why, within the keyring
    // timeout, and creates no key.
    session.stop_keyring();
    session.start_keyring(false);
    let daemon = session.daemon(&[]);
    let s = status(&env);
    let problem = s["key_problem"].as_str().unwrap_or_default().to_owned();
    assert!(problem.contains("keyring"), "{s}");
    let out = env.cli(&["get", "plex", "", "acct-0"], b"");
    assert_eq!(out.status.code(), Some(5), "UNAVAILABLE while locked");
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
    assert!(
        !env.key_file().exists(),
        "no key generated over a locked store"
    );

    // Unlocking (here: the keyring coming back unlocked) brings the store
    // back without restarting keyhavend.
    session.stop_keyring();
    session.start_keyring(true);
    let s = status_until(&env, |s| s["key_problem"].is_null());
    assert_eq!(s["key_tier"], "keyring", "{s}");
    check_tokens(&env);
    drop(daemon);

    // No keyring at all: the existing store waits for it, naming it.
    session.stop_keyring();
    let daemon = session.daemon(&[]);
    let s = status(&env);
    assert!(
        s["key_problem"]
            .as_str()
            .unwrap_or_default()
            .contains("keyring"),
        "{s}"
    );
    session.start_keyring(true);
    let s = status_until(&env, |s| s["key_problem"].is_null());
    assert_eq!(s["key_tier"], "keyring", "{s}");
    check_tokens(&env);
    drop(daemon);

    // Moving the key to the file, killed after the write: both hold it,
    // the keyring (higher) is used, every token reads; the move completes
    // when run again, and the keyring entry is gone.
    // Keyring to file is a downgrade: the config has to allow it.
    let daemon = session.daemon(&[]);
    let out = env.cli(&["key", "move", "--to", "file"], b"");
    assert_eq!(
        out.status.code(),
        Some(i32::from(keyhaven_proto::exit::PERMISSION_DENIED)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_key_downgrade"));
    assert!(!env.key_file().exists());
    drop(daemon);
    let config_dir = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        "allow_key_downgrade = true\n",
    )
    .unwrap();
    let daemon = session.daemon(&[("KEYHAVEN_FAULT", "move:after-write")]);
    let out = env.cli(&["key", "move", "--to", "file"], b"");
    assert!(!out.status.success());
    let (killed, _) = daemon.wait_exit();
    assert!(!killed.success());
    assert!(env.key_file().exists());
    let daemon = session.daemon(&[]);
    assert_eq!(status(&env)["key_tier"], "keyring");
    check_tokens(&env);
    let out = env.cli(&["key", "move", "--to", "file"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&env)["key_tier"], "file");
    assert!(!session.keyhaven_items().contains("keyhaven-data-key-v1"));
    check_tokens(&env);

    // And back, then a rotation in the keyring.
    let out = env.cli(&["key", "move", "--to", "keyring"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.key_file().exists());
    let out = env.cli(&["key", "rotate"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_tokens(&env);
    let (stopped, log) = daemon.stop();
    assert!(stopped.success(), "{log}");
    for i in 0..TOKENS {
        assert!(!log.contains(&format!("plex-token-{i}")));
    }
}
