//! `keyhaven` as a user runs it without a daemon: help and the message a
//! person sees when the daemon is not running. (Also makes
//! `cargo test --workspace` build the binary the end-to-end tests use.)
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::process::Command;

#[test]
fn help_lists_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyhaven"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for command in [
        "store", "get", "delete", "list", "watch", "logout", "audit", "status",
    ] {
        assert!(text.contains(command), "--help lacks {command}:\n{text}");
    }
    assert!(text.contains("Exit codes"), "{text}");
}

#[test]
fn a_missing_daemon_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-here.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_keyhaven"))
        .env("KEYHAVEN_SOCKET", &socket)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("keyhavend is not running (no socket at"),
        "{err}"
    );
    assert!(err.contains("nobody-here.sock"), "{err}");
}
