//! What the CLI writes to a terminal: text from the daemon or another
//! program (an executable path with escape sequences, bidi controls) is shown
//! escaped, never raw; bidi controls are refused in keys and labels; and a
//! reader that goes away (`keyhaven list | head -1`) ends the command
//! quietly.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use keyhaven_proto::exit;
use keyhaven_tests::{TestDaemon, TestEnv, bin};
use keyhaven_tests::{code, stderr, stdout};
use tonic::Code;

/// Raw bytes that would steer a terminal: ESC, BEL, CSI (C1), and the
/// UTF-8 of U+202E.
fn assert_inert(what: &str, bytes: &[u8]) {
    assert_no_controls(what, bytes);
    let rlo = "\u{202e}".as_bytes();
    assert!(
        !bytes.windows(rlo.len()).any(|w| w == rlo),
        "{what} wrote a raw U+202E: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// No raw ESC, BEL or CSI (JSON escapes these; bidi text stays as it is,
/// so that the JSON is exact).
fn assert_no_controls(what: &str, bytes: &[u8]) {
    for (bad, name) in [
        (&b"\x1b"[..], "ESC"),
        (&b"\x07"[..], "BEL"),
        (&b"\xc2\x9b"[..], "CSI"),
    ] {
        assert!(
            !bytes.windows(bad.len()).any(|w| w == bad),
            "{what} wrote a raw {name}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn escape_sequences_in_an_executable_path_are_shown_inert_by_watch_and_audit() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    // A program whose path turns text red and sets the window title
    // (OSC 0), with a right-to-left override in its name.
    let dir_name = b"bin\x1b[31mred\x1b]0;pwned\x07";
    let dir = env.root().join(OsStr::from_bytes(dir_name));
    std::fs::create_dir(&dir).unwrap();
    let evil = dir.join("keyhaven\u{202e}txt");
    std::fs::copy(bin("keyhaven"), &evil).unwrap();

    // A watcher reading along: it has subscribed once it printed SYNCED.
    let mut watch = env
        .command("keyhaven")
        .args(["watch", "--snapshot", "--count", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap());
    let mut first = Vec::new();
    lines.read_until(b'\n', &mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("SYNCED"),
        "{first:?}"
    );

    let mut store = Command::new(&evil);
    store
        .env_remove("KEYHAVEN_SOCKET")
        .env_remove("KEYHAVEN_ALLOW_DAEMON_UID")
        .env("HOME", env.home())
        .env("XDG_RUNTIME_DIR", env.runtime_dir())
        .args(["store", "jellyfin", "srv", "usr"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = store.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"tok").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let mut rest = Vec::new();
    lines.read_to_end(&mut rest).unwrap();
    assert!(watch.wait().unwrap().success());
    assert_inert("watch", &rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("STORED jellyfin::srv::usr::access_token"),
        "{text}"
    );
    assert!(
        text.contains("bin\\x1b[31mred\\x1b]0;pwned\\x07/keyhaven\\u{202e}txt"),
        "{text}"
    );

    let out = env.cli(&["audit"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_inert("audit", &out.stdout);
    assert!(
        stdout(&out).contains("bin\\x1b[31mred\\x1b]0;pwned\\x07/keyhaven\\u{202e}txt"),
        "{}",
        stdout(&out)
    );
    // JSON stays exact: the path is there as it is, escaped the JSON way.
    let out = env.cli(&["audit", "--json"], b"");
    assert_no_controls("audit --json", &out.stdout);
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let exe = entries
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| {
            e["caller"]["executable"]
                .as_str()
                .filter(|p| p.contains("pwned"))
        })
        .unwrap_or_else(|| panic!("no entry by the evil path: {entries}"));
    assert!(
        exe.ends_with("bin\u{1b}[31mred\u{1b}]0;pwned\u{7}/keyhaven\u{202e}txt"),
        "{exe:?}"
    );
}

#[test]
fn bidi_controls_in_keys_and_labels_are_refused_by_the_cli() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let cases: [(&[&str], &str); 3] = [
        (
            &["store", "jellyfin", "srv\u{202e}1", "usr"],
            "key.server_id contains a bidirectional control character (U+202E) at byte 3",
        ),
        (
            &["store", "jellyfin", "srv", "\u{2066}usr"],
            "key.user_id contains a bidirectional control character (U+2066) at byte 0",
        ),
        (
            &[
                "store",
                "jellyfin",
                "srv",
                "usr",
                "--label",
                "Salon\u{200f}",
            ],
            "label contains a bidirectional control character (U+200F) at byte 5",
        ),
    ];
    for (args, want) in cases {
        let out = env.cli(args, b"tok");
        assert_eq!(code(&out), i32::from(exit::INVALID_INPUT), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert_inert("an error", &out.stderr);
    }
    let out = env.cli(&["list", "--json"], b"");
    assert_eq!(stdout(&out).trim(), "[]", "nothing was stored");
}

#[tokio::test]
async fn bidi_controls_in_keys_and_labels_are_refused_by_the_daemon() {
    use keyhaven_proto::pb;
    let daemon = TestDaemon::start().await;
    let mut raw = daemon.raw().await;
    let key = |server: &str, user: &str| pb::CredentialKey {
        provider: "jellyfin".into(),
        server_id: server.into(),
        user_id: user.into(),
        token_type: String::new(),
    };
    let cases = [
        (
            key("srv\u{202e}", "usr"),
            None,
            "key.server_id contains a bidirectional control character (U+202E)",
        ),
        (
            key("srv", "u\u{061c}"),
            None,
            "key.user_id contains a bidirectional control character (U+061C)",
        ),
        (
            key("srv", "usr"),
            Some("Living\u{202d}room".to_owned()),
            "label contains a bidirectional control character (U+202D)",
        ),
    ];
    for (key, label, want) in cases {
        let status = raw
            .store(pb::StoreRequest {
                key: Some(key),
                secret: b"tok".to_vec(),
                label,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(want), "{status:?}");
    }
    let client = daemon.client().await;
    assert!(client.list(&Default::default()).await.unwrap().is_empty());
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    // Far more than a pipe holds (64 KiB), so `list` is still writing when
    // the reader goes away.
    let long = "x".repeat(240);
    let mut input = String::new();
    for i in 0..300 {
        input.push_str(&format!(
            "{{\"provider\":\"jellyfin\",\"server_id\":\"{long}{i:03}\",\"user_id\":\"{long}\",\"secret\":\"t{i}\",\"label\":\"{long}\"}}\n"
        ));
    }
    let out = env.cli(&["import", "json"], input.as_bytes());
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let mut child = env
        .command("keyhaven")
        .arg("list")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        // `| head -1`: one line, then the reader is gone.
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("KEY "), "{line}");
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}
