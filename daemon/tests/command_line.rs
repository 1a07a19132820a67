//! `keyhavend` as a user runs it: flags and start-up errors.
//! (Also makes `cargo test --workspace` build the binary that the
//! end-to-end tests in `tests/` spawn.)
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::process::Command;

fn keyhavend() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyhavend"));
    for var in [
        "KEYHAVEN_CONFIG",
        "KEYHAVEN_SOCKET",
        "KEYHAVEN_DATA_DIR",
        "KEYHAVEN_KEY_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn version_and_help() {
    let out = keyhavend().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim(),
        format!("keyhavend {}", env!("CARGO_PKG_VERSION"))
    );
    let out = keyhavend().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--socket",
        "--data-dir",
        "--key-file",
        "--config",
        "--log-format",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn config_errors_stop_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = keyhavend().arg("--config").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("missing.toml"), "{err}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "max_conections = 3\n").unwrap();
    let out = keyhavend().arg("--config").arg(&typo).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max_conections"), "{err}");

    let bad_policy = dir.path().join("policy.toml");
    std::fs::write(
        &bad_policy,
        "[policy]\n[[policy.rules]]\naccess = [\"read\"]\n",
    )
    .unwrap();
    let out = keyhavend()
        .arg("--config")
        .arg(&bad_policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("policy rule 1") && err.contains("exe or app_id"),
        "{err}"
    );
}
