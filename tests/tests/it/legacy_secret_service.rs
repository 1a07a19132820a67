//! Legacy tokens in a real Secret Service: gnome-keyring on a private bus,
//! seeded with `secret-tool` the way JellyTau and Reel (through the keyring
//! crate: attributes `service` and `username`) left them; then the daemon's
//! read-through and `keyhaven import keyring`, with and without ids.
//! Skipped, loudly, when the programs are missing.

use std::io::Write;
use std::process::{Output, Stdio};

use keyhaven_tests::{Session, TestEnv, have, skip};

fn cli(env: &TestEnv, session: &Session<'_>, args: &[&str]) -> Output {
    let mut cmd = env.command("keyhaven");
    for (k, v) in session.vars() {
        cmd.env(k, v);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("keyhaven runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `secret-tool store` with the keyring crate's attributes.
fn seed(session: &Session<'_>, service: &str, user: &str, secret: &str) {
    let mut child = session
        .command("secret-tool")
        .args([
            "store",
            &format!("--label=keyring-rs for service '{service}', user '{user}'"),
            "service",
            service,
            "username",
            user,
            "target",
            "default",
            "application",
            "rust-keyring",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// False (after saying so) when the programs a real Secret Service needs
/// are missing; CI sets `KEYHAVEN_REQUIRE_SECRET_SERVICE` to fail instead.
fn available(test: &str) -> bool {
    for program in [
        "dbus-daemon",
        "dbus-send",
        "gnome-keyring-daemon",
        "secret-tool",
    ] {
        if !have(program) {
            assert!(
                std::env::var_os("KEYHAVEN_REQUIRE_SECRET_SERVICE").is_none(),
                "{program} is missing"
            );
            skip(test, &format!("{program} is not installed"));
            return false;
        }
    }
    true
}

/// The secret `secret-tool lookup` finds, if any.
fn lookup(session: &Session<'_>, service: &str, user: &str) -> Option<String> {
    let out = session
        .command("secret-tool")
        .args(["lookup", "service", service, "username", user])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_daemon_killed_during_a_migration_loses_nothing() {
    if !available("a_daemon_killed_during_a_migration_loses_nothing") {
        return;
    }
    for point in ["legacy:after-store", "legacy:before-cleanup"] {
        let env = TestEnv::new();
        let dir = env.home().join(".config/keyhaven");
        std::fs::create_dir_all(&dir).unwrap();
        keyhaven_tests::set_mode(&dir, 0o700);
        std::fs::write(dir.join("config.toml"), "legacy_keyring_cleanup = true\n").unwrap();
        let mut session = Session::start(&env);
        session.start_keyring(true);
        seed(&session, "reel.plex_7", "token", "tok-7");
        let daemon = session.daemon(&[("KEYHAVEN_FAULT", point)]);
        let out = cli(&env, &session, &["get", "-n", "plex", "", "7"]);
        assert!(!out.status.success(), "{point}: the daemon died first");
        let (status, log) = daemon.wait_exit();
        assert!(!status.success(), "{point}: {log}");
        // Killed after the write: the token is in the store and still in
        // the keyring.
        assert_eq!(
            lookup(&session, "reel.plex_7", "token").as_deref(),
            Some("tok-7")
        );
        let _daemon = session.daemon(&[]);
        let out = cli(&env, &session, &["get", "-n", "plex", "", "7"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "tok-7",
            "{point}: {}",
            text(&out)
        );
        let out = cli(&env, &session, &["list", "--json"]);
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.len(), 1, "{point}");
    }
}

#[test]
fn cleanup_removes_the_entry_from_a_real_keyring_after_the_verified_write() {
    if !available("cleanup_removes_the_entry_from_a_real_keyring_after_the_verified_write") {
        return;
    }
    let env = TestEnv::new();
    let dir = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&dir).unwrap();
    keyhaven_tests::set_mode(&dir, 0o700);
    std::fs::write(dir.join("config.toml"), "legacy_keyring_cleanup = true\n").unwrap();
    let mut session = Session::start(&env);
    session.start_keyring(true);
    seed(&session, "gnome-reel.plex_8", "token", "tok-8");
    let _daemon = session.daemon(&[]);
    let out = cli(&env, &session, &["get", "-n", "plex", "", "8"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tok-8",
        "{}",
        text(&out)
    );
    assert_eq!(lookup(&session, "gnome-reel.plex_8", "token"), None);
}

#[test]
fn seeded_legacy_entries_are_read_through_and_discovered() {
    if !available("seeded_legacy_entries_are_read_through_and_discovered") {
        return;
    }
    let env = TestEnv::new();
    let mut session = Session::start(&env);
    session.start_keyring(true);
    seed(&session, "reel.plex_123", "token", "reel-plex-token");
    seed(
        &session,
        "gnome-reel.jellyfin_abc",
        "api_key",
        "reel-jf-key",
    );
    seed(
        &session,
        "jellytau",
        "jellytau::srv-1::user-1::access_token",
        "jt-token",
    );
    seed(
        &session,
        "jellytau",
        "jellytau::srv-2::ü_2::access_token",
        "jt-token-2",
    );
    let _daemon = session.daemon(&[]);

    // A Retrieve miss reads through to Reel's entry.
    let out = cli(&env, &session, &["get", "-n", "plex", "", "123"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, b"reel-plex-token");

    // Discovery: every Reel entry, without ids.
    let out = cli(
        &env,
        &session,
        &["import", "keyring", "--reel", "--dry-run"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("already present: plex::::123::access_token"),
        "{t}"
    );
    assert!(t.contains("would import: jellyfin::::abc::api_key"), "{t}");
    assert!(!t.contains("reel-jf-key"), "{t}");
    let out = cli(&env, &session, &["import", "keyring", "--reel"]);
    assert!(
        text(&out).contains("imported: jellyfin::::abc::api_key"),
        "{}",
        text(&out)
    );

    // JellyTau, by ids and by discovery.
    let out = cli(
        &env,
        &session,
        &[
            "import",
            "keyring",
            "--jellytau",
            "--server",
            "srv-1",
            "--user",
            "user-1",
        ],
    );
    assert!(
        text(&out).contains("imported: jellyfin::srv-1::user-1::access_token"),
        "{}",
        text(&out)
    );
    let out = cli(
        &env,
        &session,
        &["import", "keyring", "--jellytau", "--json"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(r#""outcome":"already present""#), "{t}");
    assert!(
        t.contains(r#""key":"jellyfin::srv-2::ü_2::access_token""#),
        "{t}"
    );
    assert!(t.contains(r#""outcome":"imported""#), "{t}");

    // A re-run changes nothing; each seeded token is there exactly once.
    let out = cli(&env, &session, &["import", "keyring", "--reel"]);
    assert!(
        text(&out).contains("summary: 0 imported, 2 already present"),
        "{}",
        text(&out)
    );
    let out = cli(&env, &session, &["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
    for (args, want) in [
        (["plex", "", "123", "access_token"], "reel-plex-token"),
        (["jellyfin", "", "abc", "api_key"], "reel-jf-key"),
        (["jellyfin", "srv-1", "user-1", "access_token"], "jt-token"),
        (["jellyfin", "srv-2", "ü_2", "access_token"], "jt-token-2"),
    ] {
        let mut all = vec!["get", "-n"];
        all.extend(args);
        let out = cli(&env, &session, &all);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
}
