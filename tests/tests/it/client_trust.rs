//! The client checks the daemon before it sends a byte: a socket served by
//! another uid, or a default socket directory that is not the user's own and
//! private, is refused (exit 9) and the server receives nothing; a server
//! that never answers, or something that is not a socket at the path, gets
//! a quick and accurate message.
//!
//! The planted server runs as uid 65534 in a child process of this test
//! binary (`planted_server_process` below, started by [`Planted::start`]);
//! it counts the bytes it receives.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyhaven_proto::exit;
use keyhaven_tests::{TestEnv, is_root, set_mode, skip};
use keyhaven_tests::{code, stderr};

const PLANTED_ENV: &str = "KEYHAVEN_TEST_PLANTED_SOCKET";
const OTHER_UID: u32 = 65534;

/// Runs `cmd` with `stdin` fed in and collects its output.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The CLI may exit before reading stdin.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

/// The body of the planted server when this binary runs as its child
/// process (see [`Planted::start`]); without the variable it does nothing.
/// It binds the socket (creating its directory), says `PLANTED ready`, and
/// for each connection reads until EOF or an HTTP/2 preface's worth of
/// bytes, then hangs up. A connection that starts with `STOP` makes it
/// print `PLANTED total=<bytes> connections=<n>` and exit.
#[test]
fn planted_server_process() {
    let Some(path) = std::env::var_os(PLANTED_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(&path).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "PLANTED ready").unwrap();
    out.flush().unwrap();
    let (mut total, mut connections) = (0usize, 0usize);
    for stream in listener.incoming() {
        let mut stream = stream.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while received.len() < 24 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        if received.starts_with(b"STOP") {
            writeln!(out, "PLANTED total={total} connections={connections}").unwrap();
            out.flush().unwrap();
            return;
        }
        total += received.len();
        connections += 1;
    }
}

/// A server of uid 65534 listening at a socket path it created.
struct Planted {
    child: Child,
    stdout: BufReader<ChildStdout>,
    socket: PathBuf,
}

impl Planted {
    fn start(socket: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "client_trust::planted_server_process",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(PLANTED_ENV, socket)
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the planted server exited before listening");
            if line.contains("PLANTED ready") {
                break;
            }
        }
        Self {
            child,
            stdout,
            socket: socket.to_path_buf(),
        }
    }

    /// Stops the server; returns (bytes received, connections).
    fn stop(mut self) -> (usize, usize) {
        let mut stop = UnixStream::connect(&self.socket).unwrap();
        stop.write_all(b"STOP").unwrap();
        drop(stop);
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the planted server exited without a count");
            if let Some(rest) = line.trim().strip_prefix("PLANTED total=") {
                let (total, connections) = rest.split_once(" connections=").unwrap();
                let _ = self.child.wait();
                return (total.parse().unwrap(), connections.parse().unwrap());
            }
        }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `/tmp`-like directory (mode 1777) for the fallback socket path.
fn shared_tmp() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    set_mode(tmp.path(), 0o1777);
    tmp
}

/// `${TMPDIR}/keyhaven-$UID/keyhaven.sock` for this (root) user.
fn fallback_socket(tmp: &Path) -> PathBuf {
    tmp.join(format!("keyhaven-{}", rustix::process::getuid().as_raw()))
        .join("keyhaven.sock")
}

/// `keyhaven` with the default socket in the fallback directory under
/// `tmp` (no XDG_RUNTIME_DIR, no KEYHAVEN_SOCKET).
fn cli_with_fallback(env: &TestEnv, tmp: &Path) -> Command {
    let mut cmd = env.command("keyhaven");
    cmd.env_remove("XDG_RUNTIME_DIR")
        .env_remove("KEYHAVEN_ALLOW_DAEMON_UID")
        .env("TMPDIR", tmp);
    cmd
}

#[test]
fn a_socket_planted_by_another_uid_is_refused_before_any_byte() {
    let name = "a_socket_planted_by_another_uid_is_refused_before_any_byte";
    if !is_root() {
        skip(
            name,
            "needs root to run the planted server as uid 65534; run the tests as root",
        );
        return;
    }
    let env = TestEnv::new();
    let tmp = shared_tmp();
    let socket = fallback_socket(tmp.path());
    // Uid 65534 got to the shared fallback directory first.
    let planted = Planted::start(&socket);

    // The stock CLI on the default path: the directory's owner is refused.
    for autostart in [false, true] {
        let mut cmd = cli_with_fallback(&env, tmp.path());
        if autostart {
            cmd.arg("--autostart");
        }
        cmd.args(["store", "jellyfin", "srv", "usr"]);
        let out = run(cmd, b"token-canary-7c1d");
        let err = stderr(&out);
        assert_eq!(code(&out), i32::from(exit::UNTRUSTED_DAEMON), "{err}");
        for needle in [
            format!(
                "{} is owned by uid {OTHER_UID}",
                socket.parent().unwrap().display()
            ),
            format!("--allow-daemon-uid {OTHER_UID}"),
            format!("KEYHAVEN_ALLOW_DAEMON_UID={OTHER_UID}"),
            "nothing was sent".to_owned(),
        ] {
            assert!(err.contains(&needle), "{needle:?} not in {err}");
        }
    }
    // Autostart did not start a daemon of ours beside it.
    assert!(socket.exists());

    // The same socket named explicitly: the server's uid is refused.
    let mut cmd = env.command("keyhaven");
    cmd.env_remove("KEYHAVEN_ALLOW_DAEMON_UID")
        .args(["--socket", socket.to_str().unwrap()])
        .args(["store", "jellyfin", "srv", "usr"]);
    let out = run(cmd, b"token-canary-7c1d");
    let err = stderr(&out);
    assert_eq!(code(&out), i32::from(exit::UNTRUSTED_DAEMON), "{err}");
    for needle in [
        format!("{} is served by uid {OTHER_UID}", socket.display()),
        format!("--allow-daemon-uid {OTHER_UID}"),
        format!("KEYHAVEN_ALLOW_DAEMON_UID={OTHER_UID}"),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in {err}");
    }

    let (bytes, connections) = planted.stop();
    assert_eq!(connections, 1, "only the explicit --socket run connected");
    assert_eq!(bytes, 0, "the planted server received bytes");
}

#[test]
fn a_daemon_of_another_uid_is_used_only_when_allowed() {
    let name = "a_daemon_of_another_uid_is_used_only_when_allowed";
    if !is_root() {
        skip(
            name,
            "needs root to run the planted server as uid 65534; run the tests as root",
        );
        return;
    }
    let env = TestEnv::new();
    let tmp = shared_tmp();
    let socket = fallback_socket(tmp.path());
    let planted = Planted::start(&socket);
    // Explicit socket and the default path, both opted in by the variable:
    // the client connects and speaks; this server then hangs up.
    let mut explicit = env.command("keyhaven");
    explicit
        .env("KEYHAVEN_ALLOW_DAEMON_UID", OTHER_UID.to_string())
        .args(["--socket", socket.to_str().unwrap(), "status"]);
    let mut default = cli_with_fallback(&env, tmp.path());
    default
        .env("KEYHAVEN_ALLOW_DAEMON_UID", OTHER_UID.to_string())
        .arg("status");
    let mut flag = cli_with_fallback(&env, tmp.path());
    flag.args(["--allow-daemon-uid", &OTHER_UID.to_string(), "status"]);
    for cmd in [explicit, default, flag] {
        let out = run(cmd, b"");
        let err = stderr(&out);
        assert_eq!(code(&out), i32::from(exit::UNAVAILABLE), "{err}");
        assert!(err.contains("closed the connection"), "{err}");
        assert!(err.contains(&format!("runs as uid {OTHER_UID}")), "{err}");
    }
    // Another uid than the one allowed is still refused.
    let mut cmd = env.command("keyhaven");
    cmd.env("KEYHAVEN_ALLOW_DAEMON_UID", "4242").args([
        "--socket",
        socket.to_str().unwrap(),
        "status",
    ]);
    let out = run(cmd, b"");
    assert_eq!(
        code(&out),
        i32::from(exit::UNTRUSTED_DAEMON),
        "{}",
        stderr(&out)
    );
    let (bytes, connections) = planted.stop();
    assert!(connections >= 4, "{connections} connections");
    assert!(
        bytes >= 3 * 24,
        "the allowed runs sent their preface: {bytes}"
    );
}

#[test]
fn a_default_socket_directory_others_can_write_is_refused() {
    let env = TestEnv::new();
    let tmp = shared_tmp();
    let socket = fallback_socket(tmp.path());
    let dir = socket.parent().unwrap();
    std::fs::create_dir(dir).unwrap();
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    for (mode, who) in [
        (0o777, "group and others"),
        (0o770, "its group"),
        (0o702, "others"),
    ] {
        set_mode(dir, mode);
        let mut cmd = cli_with_fallback(&env, tmp.path());
        cmd.args(["store", "jellyfin", "srv", "usr"]);
        let out = run(cmd, b"token");
        let err = stderr(&out);
        assert_eq!(code(&out), i32::from(exit::UNTRUSTED_DAEMON), "{err}");
        assert!(
            err.contains(&format!(
                "{} (owned by uid {}) is writable by {who} (mode {mode:04o})",
                dir.display(),
                rustix::process::getuid().as_raw()
            )),
            "{err}"
        );
        assert!(
            matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the client connected despite the refusal"
        );
    }
    // A symbolic link in place of the directory is refused too.
    set_mode(dir, 0o700);
    let real = tmp.path().join("elsewhere");
    std::fs::rename(dir, &real).unwrap();
    std::os::unix::fs::symlink(&real, dir).unwrap();
    let mut cmd = cli_with_fallback(&env, tmp.path());
    cmd.arg("status");
    let out = run(cmd, b"");
    assert_eq!(
        code(&out),
        i32::from(exit::UNTRUSTED_DAEMON),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
}

#[test]
fn a_server_that_accepts_and_never_answers_is_given_up_on_within_seconds() {
    let env = TestEnv::new();
    let socket = env.root().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts and holds every connection, never reading or writing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    let started = Instant::now();
    let mut cmd = env.command("keyhaven");
    cmd.args(["--socket", socket.to_str().unwrap(), "status"]);
    let out = run(cmd, b"");
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), i32::from(exit::UNAVAILABLE), "{err}");
    assert!(
        err.contains("accepted the connection but did not answer within 5s"),
        "{err}"
    );
    assert!(
        !err.contains("other user") && !err.contains("another user"),
        "blames another user: {err}"
    );
    // The issue measured 30 s before; the handshake deadline is 5 s.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_regular_file_or_a_directory_at_the_socket_path_is_named_as_such() {
    let env = TestEnv::new();
    let file = env.root().join("file.sock");
    std::fs::write(&file, b"not a socket").unwrap();
    let dir = env.root().join("dir.sock");
    std::fs::create_dir(&dir).unwrap();
    for (path, what) in [(&file, "a regular file"), (&dir, "a directory")] {
        let mut cmd = env.command("keyhaven");
        cmd.args(["--socket", path.to_str().unwrap(), "--autostart", "status"]);
        let out = run(cmd, b"");
        let err = stderr(&out);
        assert_eq!(code(&out), i32::from(exit::UNAVAILABLE), "{err}");
        assert!(
            err.contains(&format!("{} is {what}, not a socket", path.display())),
            "{err}"
        );
        assert!(!err.contains("stale"), "{err}");
    }
    // Left as they were: nothing was started on or over them.
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
    assert!(dir.is_dir());
}
