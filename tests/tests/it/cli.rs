//! End to end: the real `keyhavend` and `keyhaven` binaries, each command a
//! separate process, in a private HOME and XDG_RUNTIME_DIR.

use std::os::unix::process::CommandExt;
use std::process::Stdio;

use keyhaven_proto::exit;
use keyhaven_tests::{TestEnv, database_files, file_contains, is_root, mode_of, set_mode, skip};
use keyhaven_tests::{code, stderr, stdout};

#[test]
fn walkthrough_across_processes_and_a_restart() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);

    let out = env.cli(
        &[
            "store",
            "jellyfin",
            "srv-1",
            "user-1",
            "--label",
            "Living room",
        ],
        b"tok-123",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("stored jellyfin::srv-1::user-1::access_token"),
        "{}",
        stdout(&out)
    );

    let out = env.cli(&["get", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "tok-123\n");
    let out = env.cli(
        &["get", "-n", "jellyfin", "srv-1", "user-1", "access_token"],
        b"",
    );
    assert_eq!(stdout(&out), "tok-123");

    // A trailing newline from `echo` is not part of the token.
    let out = env.cli(&["store", "plex", "", "", "api_key"], b"plex-token\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&env.cli(&["get", "-n", "plex", "", "", "api_key"], b"")),
        "plex-token"
    );

    let out = env.cli(&["list", "--json"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("tok-123") && !text.contains("plex-token"),
        "list shows a secret: {text}"
    );
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let jf = rows.iter().find(|r| r["provider"] == "jellyfin").unwrap();
    assert_eq!(jf["server_id"], "srv-1");
    assert_eq!(jf["user_id"], "user-1");
    assert_eq!(jf["token_type"], "access_token");
    assert_eq!(jf["label"], "Living room");
    assert!(jf["revision"].as_u64().unwrap() > 0);
    let table = stdout(&env.cli(&["list"], b""));
    assert!(
        table.contains("jellyfin::srv-1::user-1::access_token") && !table.contains("tok-123"),
        "{table}"
    );

    let out = env.cli(&["status", "--json"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["protocol"], keyhaven::PROTOCOL);
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["key_tier"], "file");
    assert_eq!(status["store_path"], env.database().display().to_string());
    assert_eq!(status["credential_count"], 2);
    let human = stdout(&env.cli(&["status"], b""));
    for needle in [
        "protocol 1",
        &format!("pid {}", daemon.pid()),
        "key tier:  file",
        "keyhaven.db",
    ] {
        assert!(human.contains(needle), "status lacks {needle:?}: {human}");
    }

    // Restart: SIGTERM stops it cleanly and removes the socket.
    let (status, log) = daemon.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}\n{log}");
    assert!(!env.socket().exists(), "socket removed on shutdown");
    let out = env.cli(&["get", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(code(&out), i32::from(exit::UNAVAILABLE));
    assert!(
        stderr(&out).contains("keyhavend is not running (no socket at"),
        "{}",
        stderr(&out)
    );

    let daemon = env.spawn_daemon(&[]);
    let out = env.cli(&["get", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(
        stdout(&out),
        "tok-123\n",
        "survives a restart: {}",
        stderr(&out)
    );

    let out = env.cli(&["delete", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env.cli(&["get", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(code(&out), i32::from(exit::NOT_FOUND));
    assert!(
        stderr(&out).contains("no credential jellyfin::srv-1::user-1::access_token"),
        "{}",
        stderr(&out)
    );
    drop(daemon);
}

#[test]
fn exit_codes_tell_outcomes_apart() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let cases: [(&[&str], &[u8], u8, &str); 6] = [
        (
            &["get", "jellyfin", "s", "nobody"],
            b"",
            exit::NOT_FOUND,
            "no credential",
        ),
        (
            &["store", "jelly fin", "s", "u"],
            b"x",
            exit::INVALID_INPUT,
            "key.provider may only contain",
        ),
        (
            &["store", "jellyfin", "s", "u"],
            b"",
            exit::INVALID_INPUT,
            "the secret is empty",
        ),
        (
            &["store", "jellyfin", "s", "u", "--if-revision", "42"],
            b"x",
            exit::CONFLICT,
            "does not exist",
        ),
        (
            &["delete", "jellyfin", "s", "nobody"],
            b"",
            exit::NOT_FOUND,
            "no credential",
        ),
        (&["get", "jellyfin"], b"", exit::USAGE, "required"),
    ];
    for (args, input, want, message) in cases {
        let out = env.cli(args, input);
        assert_eq!(code(&out), i32::from(want), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    let big = vec![b'x'; 70 * 1024];
    let out = env.cli(&["store", "jellyfin", "s", "u"], &big);
    assert_eq!(
        code(&out),
        i32::from(exit::INVALID_INPUT),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("max_secret_bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secret_file_is_read_and_secrets_never_reach_the_log() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[("KEYHAVEN_LOG", "trace")]);
    let canary = "log-canary-93ab71";
    let file = env.root().join("secret.txt");
    std::fs::write(&file, format!("{canary}\n")).unwrap();
    let out = env.cli(
        &[
            "store",
            "emby",
            "e1",
            "u",
            "--secret-file",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env.cli(&["store", "emby", "e2", "u"], canary.as_bytes());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&env.cli(&["get", "-n", "emby", "e1", "u"], b"")),
        canary
    );
    let _ = env.cli(&["list"], b"");
    let _ = env.cli(
        &["store", "emby", "e3", "u", "--if-revision", "1"],
        canary.as_bytes(),
    );
    let _ = env.cli(&["store", "emby", "bad\u{1}", "u"], canary.as_bytes());
    let (_, log) = daemon.stop();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "verbose logging was on:\n{log}"
    );
    assert!(
        !log.contains(canary),
        "the daemon log contains the secret:\n{log}"
    );
    for f in database_files(&env.database()) {
        assert!(!file_contains(&f, canary.as_bytes()), "{}", f.display());
    }
}

#[test]
fn a_second_daemon_exits_with_a_clear_message() {
    let env = TestEnv::new();
    let first = env.spawn_daemon(&[]);
    let out = env
        .command("keyhavend")
        .stdin(Stdio::null())
        .output()
        .expect("run keyhavend");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("another keyhavend is already running on this store"),
        "{err}"
    );
    // The first daemon keeps serving.
    let out = env.cli(&["status"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("pid {}", first.pid())));
}

#[test]
fn a_stale_socket_left_by_a_crash_is_replaced() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let out = env.cli(&["store", "jellyfin", "s", "u"], b"before-crash");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (status, _) = daemon.stop_with(rustix::process::Signal::KILL);
    assert!(!status.success());
    assert!(
        env.socket().exists(),
        "SIGKILL leaves the socket file behind"
    );
    let out = env.cli(&["status"], b"");
    assert_eq!(code(&out), i32::from(exit::UNAVAILABLE));
    assert!(stderr(&out).contains("stale socket"), "{}", stderr(&out));

    let _daemon = env.spawn_daemon(&[]);
    let out = env.cli(&["get", "jellyfin", "s", "u"], b"");
    assert_eq!(stdout(&out), "before-crash\n", "{}", stderr(&out));
    assert_eq!(mode_of(&env.socket()), 0o600);
}

#[test]
fn another_users_process_is_refused_even_when_it_can_reach_the_socket() {
    if !is_root() {
        skip(
            "another_users_process_is_refused_even_when_it_can_reach_the_socket",
            "needs root to run a client as another uid (65534); run the tests as root to exercise the peer-credential check",
        );
        return;
    }
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let out = env.cli(&["store", "jellyfin", "s", "u"], b"owner-only");
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Open every path component to everyone, so only the peer check stands
    // between uid 65534 and the daemon.
    let mut dir = env.socket().parent().unwrap().to_path_buf();
    loop {
        set_mode(&dir, 0o755);
        if dir == env.root() {
            break;
        }
        dir = dir.parent().unwrap().to_path_buf();
    }
    set_mode(&env.socket(), 0o777);
    let probe = std::os::unix::net::UnixStream::connect(env.socket());
    assert!(probe.is_ok(), "the socket is reachable");
    drop(probe);

    // The client would refuse root's daemon itself (exit 9, see
    // client_trust.rs); opting in to uid 0 lets it try, so that the
    // daemon's own check is what refuses here.
    let out = env
        .command("keyhaven")
        .args([
            "--socket",
            env.socket().to_str().unwrap(),
            "get",
            "jellyfin",
            "s",
            "u",
        ])
        .env("HOME", "/nonexistent")
        .env("KEYHAVEN_ALLOW_DAEMON_UID", "0")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("run keyhaven as uid 65534");
    let err = stderr(&out);
    assert_eq!(
        code(&out),
        i32::from(exit::UNAVAILABLE),
        "stdout {:?} stderr {err}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("owner-only"),
        "the secret leaked to another user"
    );
    assert!(err.contains("closed the connection"), "{err}");

    // The owner is still served.
    let out = env.cli(&["get", "jellyfin", "s", "u"], b"");
    assert_eq!(stdout(&out), "owner-only\n", "{}", stderr(&out));
    let (_, log) = daemon.stop();
    let refusal = log
        .lines()
        .find(|l| l.contains("refused a connection from another user"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        refusal.contains("WARN") && refusal.contains("uid=65534") && refusal.contains("pid="),
        "{refusal}"
    );
}
