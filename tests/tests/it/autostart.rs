//! Start-on-demand: `keyhaven --autostart` / `KEYHAVEN_AUTOSTART=1` start
//! `keyhavend` when nothing answers on the socket, never a second one beside
//! a live daemon, and never when a systemd socket unit owns the socket.

use std::process::Stdio;
use std::time::{Duration, Instant};

use keyhaven_proto::exit;
use keyhaven_tests::TestEnv;
use keyhaven_tests::{code, stderr, stdout};
use rustix::process::{Pid, Signal, kill_process};

fn daemon_pid(env: &TestEnv) -> i32 {
    let out = env.cli(&["status", "--json"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    i32::try_from(status["pid"].as_i64().unwrap()).unwrap()
}

/// Waits (bounded) until nothing answers on the environment's socket.
fn wait_until_gone(env: &TestEnv) {
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(env.socket()).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "daemon still answers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a daemon the CLI started (it is not this process's child).
struct Started(i32);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(pid) = Pid::from_raw(self.0) {
            let _ = kill_process(pid, Signal::TERM);
        }
    }
}

#[test]
fn the_cli_starts_the_daemon_only_when_asked_and_never_a_second_one() {
    let env = TestEnv::new();
    // Off by default: nothing running means "unavailable".
    let out = env.cli(&["list"], b"");
    assert_eq!(code(&out), i32::from(exit::UNAVAILABLE), "{}", stderr(&out));
    assert!(!env.database().exists());

    // --autostart starts it, and the command that started it is served.
    let out = env.cli(&["--autostart", "store", "jellyfin", "s", "u"], b"tok-1");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let first = Started(daemon_pid(&env));

    // With a daemon answering, KEYHAVEN_AUTOSTART=1 starts nothing new.
    let out = env
        .command("keyhaven")
        .args(["status", "--json"])
        .env("KEYHAVEN_AUTOSTART", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["pid"], first.0);

    // A crash leaves a stale socket; the next on-demand start replaces it.
    kill_process(Pid::from_raw(first.0).unwrap(), Signal::KILL).unwrap();
    wait_until_gone(&env);
    assert!(
        env.socket().exists(),
        "SIGKILL leaves the socket file behind"
    );
    let out = env
        .command("keyhaven")
        .args(["get", "jellyfin", "s", "u"])
        .env("KEYHAVEN_AUTOSTART", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "tok-1\n", "{}", stderr(&out));
    let second = Started(daemon_pid(&env));
    assert_ne!(second.0, first.0);
}

#[test]
fn autostart_stays_off_when_the_systemd_socket_unit_is_enabled() {
    let env = TestEnv::new();
    // What `systemctl --user enable keyhavend.socket` leaves behind.
    let wants = env.home().join(".config/systemd/user/sockets.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/user/keyhavend.socket",
        wants.join("keyhavend.socket"),
    )
    .unwrap();
    let out = env.cli(&["--autostart", "list"], b"");
    assert_eq!(code(&out), i32::from(exit::UNAVAILABLE), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("systemctl --user start keyhavend.socket"),
        "{}",
        stderr(&out)
    );
    assert!(!env.database().exists(), "a daemon was started anyway");
}
