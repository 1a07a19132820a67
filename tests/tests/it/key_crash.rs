//! Rotation interrupted by SIGKILL between each of its steps (the daemon
//! kills itself at a named point when `KEYHAVEN_FAULT` says so): afterwards
//! the daemon opens with the old or the new key and every token is readable.

use std::os::unix::process::ExitStatusExt;

use keyhaven_tests::TestEnv;

const TOKENS: usize = 15;

fn status_json(env: &TestEnv) -> serde_json::Value {
    let out = env.cli(&["status", "--json"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_tokens(env: &TestEnv) {
    for i in 0..TOKENS {
        let out = env.cli(&["get", "-n", "jellyfin", "srv", &format!("u{i}")], b"");
        assert!(
            out.status.success(),
            "token {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, format!("token-{i}").as_bytes());
    }
}

#[test]
fn rotation_killed_at_every_step_leaves_every_token_readable() {
    for (point, finished) in [
        ("rotate:after-pending", false),
        ("rotate:after-reseal", true),
        ("rotate:after-promote", true),
    ] {
        let env = TestEnv::new();
        let daemon = env.spawn_daemon(&[("KEYHAVEN_FAULT", point)]);
        for i in 0..TOKENS {
            let out = env.cli(
                &["store", "jellyfin", "srv", &format!("u{i}")],
                format!("token-{i}").as_bytes(),
            );
            assert!(out.status.success());
        }
        let old_id = status_json(&env)["key_id"].as_str().unwrap().to_owned();
        let out = env.cli(&["key", "rotate"], b"");
        assert!(
            !out.status.success(),
            "{point}: the daemon died mid-rotation"
        );
        let (status, log) = daemon.wait_exit();
        assert_eq!(
            status.signal(),
            Some(9),
            "{point}: killed by SIGKILL\n{log}"
        );
        assert!(log.contains(point), "{log}");

        let daemon = env.spawn_daemon(&[]);
        let after = status_json(&env);
        assert!(after["key_problem"].is_null(), "{point}: {after}");
        let new_id = after["key_id"].as_str().unwrap().to_owned();
        assert_eq!(
            new_id != old_id,
            finished,
            "{point}: old {old_id}, now {new_id}"
        );
        check_tokens(&env);
        let pending = env.key_file().with_extension("key.next");
        assert!(!pending.exists(), "{point}: the pending key was cleaned up");
        // And the key can be rotated again.
        let out = env.cli(&["key", "rotate"], b"");
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_tokens(&env);
        let (status, _) = daemon.stop();
        assert!(status.success());
    }
}
