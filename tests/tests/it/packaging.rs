//! The files in `packaging/` agree with the binaries: generated completions
//! are current, and the units point where the package puts things.

use std::path::PathBuf;

use keyhaven_tests::TestEnv;

fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("packaging")
}

#[test]
fn completions_in_packaging_are_current() {
    let env = TestEnv::new();
    for (shell, file) in [
        ("bash", "keyhaven.bash"),
        ("zsh", "_keyhaven"),
        ("fish", "keyhaven.fish"),
    ] {
        let out = env.cli(&["completions", shell], b"");
        assert!(out.status.success(), "{shell}: {out:?}");
        let shipped = std::fs::read(packaging().join("completions").join(file)).unwrap();
        assert!(
            out.stdout == shipped,
            "packaging/completions/{file} is out of date; regenerate it with \
             `keyhaven completions {shell} > packaging/completions/{file}`"
        );
        // Completion covers the real subcommands.
        let text = String::from_utf8(out.stdout).unwrap();
        for sub in ["store", "get", "list", "watch", "status"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
}

#[test]
fn units_use_the_default_socket_and_the_packaged_binary() {
    let dir = packaging().join("systemd");
    let socket = std::fs::read_to_string(dir.join("keyhavend.socket")).unwrap();
    let service = std::fs::read_to_string(dir.join("keyhavend.service")).unwrap();
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    let socket = lines(&socket);
    let service = lines(&service);
    // %t is $XDG_RUNTIME_DIR: the client's default socket path.
    assert!(socket.contains(&"ListenStream=%t/keyhaven/keyhaven.sock".to_string()));
    assert!(socket.contains(&"SocketMode=0600".to_string()));
    assert!(socket.contains(&"DirectoryMode=0700".to_string()));
    assert!(service.contains(&"Type=notify".to_string()));
    // The Debian package installs the daemon here.
    assert!(service.contains(&"ExecStart=/usr/bin/keyhavend".to_string()));
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../daemon/Cargo.toml"),
    )
    .unwrap();
    assert!(manifest.contains(r#"["target/release/keyhavend", "usr/bin/", "755"]"#));
    assert!(manifest.contains(r#""usr/lib/systemd/user/""#));
}
