//! The Python and Node example clients (`examples/`) against the real
//! `keyhavend`: each stores a token the Rust CLI reads back, reads a token
//! the Rust CLI stored, and watches a store made by the Rust CLI.
//!
//! Each also checks the daemon before sending a byte, as the Rust client
//! does: a socket, or a default socket directory, that another user planted,
//! or a directory others can write to, is refused with the clients' own
//! error (exit 9, `UNTRUSTED_DAEMON`), and the planted listener receives
//! nothing. `KEYHAVEN_ALLOW_DAEMON_UID` trusts another uid on purpose. Python
//! also checks the server's peer uid; Node cannot read it (its `net` module
//! has no `SO_PEERCRED`).
//!
//! A test whose interpreter or gRPC packages are missing says loudly that it
//! is skipped. CI installs them (see `.ci/run`) and sets
//! `KEYHAVEN_REQUIRE_OTHER_LANGUAGES=1`, which turns a skip into a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keyhaven_proto::exit;
use keyhaven_proto::paths::{SOCKET_NAME, current_uid};
use keyhaven_tests::{TestEnv, is_root, set_mode, skip};
use keyhaven_tests::{stderr, stdout};

/// Longest a single example run may take (interpreter and gRPC start-up).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a watcher may take to subscribe, and then to see the event.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// What the example clients print on stderr once the watch is registered.
const WATCH_READY: &str = "watching for changes";
/// The exit code both example clients use when they refuse a daemon that is
/// not the user's.
const EXIT_UNTRUSTED_DAEMON: i32 = 9;
/// The error code both example clients print when they refuse one.
const UNTRUSTED: &str = "UNTRUSTED_DAEMON";
/// Trusts the daemon of one other uid, on purpose.
const ALLOW_UID_VAR: &str = "KEYHAVEN_ALLOW_DAEMON_UID";
/// The other local user in these tests (`nobody`).
const OTHER_UID: u32 = 65534;
/// Longest a daemon run as another user may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// An example client: the interpreter and its script.
struct Example {
    program: &'static str,
    script: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python example, if `python3` on PATH can import the keyhaven
/// package of clients/python (where the example finds it when it is not
/// installed), i.e. has grpcio and protobuf recent enough for its
/// generated code.
fn python() -> Result<Example, String> {
    let mut probe = Command::new("python3");
    probe
        .args(["-c", "import keyhaven"])
        .env("PYTHONPATH", repo_root().join("clients/python"));
    match run_bounded(probe, b"", RUN_TIMEOUT) {
        Err(e) => Err(format!("python3 is not on PATH ({e})")),
        Ok(out) if !out.status.success() => Err(format!(
            "python3 cannot import the keyhaven package of clients/python \
             (pip install ./clients/python, or grpcio and protobuf): {}",
            last_line(&out.stderr)
        )),
        Ok(_) => Ok(Example {
            program: "python3",
            script: repo_root().join("examples/python/keyhaven_client.py"),
        }),
    }
}

/// The Node example, if `node` is on PATH and the keyhaven package
/// (clients/node) loads from examples/node: `npm ci` has run there (the
/// package itself has no dependencies to install).
fn node() -> Result<Example, String> {
    let mut probe = Command::new("node");
    probe.arg("--version");
    match run_bounded(probe, b"", RUN_TIMEOUT) {
        Err(e) => return Err(format!("node is not on PATH ({e})")),
        Ok(out) if !out.status.success() => {
            return Err(format!("node --version failed: {}", last_line(&out.stderr)));
        }
        Ok(_) => {}
    }
    let dir = repo_root().join("examples/node");
    // It needs nothing but Node: only the link examples/node/node_modules/keyhaven.
    let mut probe = Command::new("node");
    probe.current_dir(&dir).args([
        "-e",
        "try { require('keyhaven') } catch (e) { console.error(e.message.split('\\n')[0]); process.exit(1) }",
    ]);
    match run_bounded(probe, b"", RUN_TIMEOUT) {
        Err(e) => Err(format!("cannot run node in {} ({e})", dir.display())),
        Ok(out) if !out.status.success() => Err(format!(
            "the keyhaven package does not load in {}; run `npm ci` in examples/node: {}",
            dir.display(),
            last_line(&out.stderr)
        )),
        Ok(_) => Ok(Example {
            program: "node",
            script: dir.join("keyhaven_client.js"),
        }),
    }
}

/// Runs `body` with the example, or says why it cannot (a failure when CI
/// requires the other languages).
fn run_or_skip(test: &str, example: Result<Example, String>, body: fn(&Example)) {
    match example {
        Ok(example) => body(&example),
        Err(why) if std::env::var_os("KEYHAVEN_REQUIRE_OTHER_LANGUAGES").is_some() => {
            panic!("{test}: {why} (KEYHAVEN_REQUIRE_OTHER_LANGUAGES is set, so this is an error)")
        }
        Err(why) => skip(test, &why),
    }
}

/// True when the test runs as root; otherwise says loudly why it is skipped.
fn root_or_skip(test: &str) -> bool {
    if !is_root() {
        skip(
            test,
            "needs root to plant sockets and directories as, and run a server as, another uid (65534)",
        );
    }
    is_root()
}

#[test]
fn python_client_stores_reads_and_watches() {
    run_or_skip(
        "python_client_stores_reads_and_watches",
        python(),
        stores_reads_and_watches,
    );
}

#[test]
fn node_client_stores_reads_and_watches() {
    run_or_skip(
        "node_client_stores_reads_and_watches",
        node(),
        stores_reads_and_watches,
    );
}

#[test]
fn python_client_refuses_a_daemon_planted_by_another_user() {
    let test = "python_client_refuses_a_daemon_planted_by_another_user";
    if root_or_skip(test) {
        run_or_skip(test, python(), refuses_a_daemon_planted_by_another_user);
    }
}

#[test]
fn node_client_refuses_a_daemon_planted_by_another_user() {
    let test = "node_client_refuses_a_daemon_planted_by_another_user";
    if root_or_skip(test) {
        run_or_skip(test, node(), refuses_a_daemon_planted_by_another_user);
    }
}

#[test]
fn python_client_refuses_a_socket_directory_others_can_write_or_a_symlink() {
    run_or_skip(
        "python_client_refuses_a_socket_directory_others_can_write_or_a_symlink",
        python(),
        refuses_a_socket_directory_others_can_write_or_a_symlink,
    );
}

#[test]
fn node_client_refuses_a_socket_directory_others_can_write_or_a_symlink() {
    run_or_skip(
        "node_client_refuses_a_socket_directory_others_can_write_or_a_symlink",
        node(),
        refuses_a_socket_directory_others_can_write_or_a_symlink,
    );
}

/// Only Python: Node's `net` module cannot read the server's peer uid.
#[test]
fn python_client_refuses_a_server_running_as_another_user() {
    let test = "python_client_refuses_a_server_running_as_another_user";
    if root_or_skip(test) {
        run_or_skip(test, python(), refuses_a_server_running_as_another_user);
    }
}

/// The headless case: no `XDG_RUNTIME_DIR`, so the client looks in
/// `$TMPDIR/keyhaven-$UID`, where another user got first, made the
/// directory and listens. The client must not send a byte there, and must
/// say who owns it and how to trust that user on purpose; once the user
/// does, it connects.
fn refuses_a_daemon_planted_by_another_user(example: &Example) {
    let env = TestEnv::new();
    let tmp = env.root().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let dir = fallback_dir(&tmp);
    let planted = Planted::bind(&dir, 0o700);
    planted.chown_to(OTHER_UID);

    let secret = "canary-for-the-planted-socket";
    let out = run_headless(
        &env,
        example,
        &tmp,
        &[],
        &["store", "jellyfin", "srv", "user"],
        format!("{secret}\n").as_bytes(),
    );
    assert_untrusted(&out, &dir, OTHER_UID);
    assert!(
        stderr(&out).contains(&format!("{ALLOW_UID_VAR}={OTHER_UID}")),
        "the refusal names the opt-in: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(secret), "{}", stderr(&out));
    assert_eq!(
        planted.received(),
        (0, 0),
        "the planted socket got neither a connection nor a byte"
    );

    // The socket alone planted, in a directory of the user's: refused too.
    let env = TestEnv::new();
    let tmp = env.root().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let planted_socket = Planted::bind(&fallback_dir(&tmp), 0o700);
    rustix::fs::chown(
        &planted_socket.socket,
        Some(rustix::fs::Uid::from_raw(OTHER_UID)),
        Some(rustix::fs::Gid::from_raw(OTHER_UID)),
    )
    .unwrap();
    let out = run_headless(
        &env,
        example,
        &tmp,
        &[],
        &["get", "jellyfin", "s", "u"],
        b"",
    );
    assert_untrusted(&out, &planted_socket.socket, OTHER_UID);
    assert_eq!(planted_socket.received(), (0, 0));

    // Trusted on purpose: the check passes and the client connects and
    // starts HTTP/2; this listener never answers, so it then gives up
    // waiting for the handshake.
    let out = run_headless(
        &env,
        example,
        &tmp,
        &[(ALLOW_UID_VAR, &OTHER_UID.to_string())],
        &["get", "jellyfin", "srv", "user"],
        b"",
    );
    assert!(!stderr(&out).contains(UNTRUSTED), "{}", stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::UNAVAILABLE)),
        "{}",
        stderr(&out)
    );
    let (connections, bytes) = planted_socket.received();
    assert!(
        connections >= 1 && bytes > 0,
        "with {ALLOW_UID_VAR} the client connects and speaks: {connections} connections, {bytes} bytes"
    );

    // A value that is not a uid is a usage error, not silently ignored.
    let out = run_headless(
        &env,
        example,
        &tmp,
        &[(ALLOW_UID_VAR, "nobody")],
        &["get", "jellyfin", "srv", "user"],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::USAGE)),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(ALLOW_UID_VAR), "{}", stderr(&out));
    assert_eq!(planted_socket.received(), (0, 0));
}

/// A default socket directory of the user's own that others could write
/// to (so anyone could have replaced the socket), or that is a symlink, is
/// refused before connecting; `KEYHAVEN_ALLOW_DAEMON_UID` does not change
/// that.
fn refuses_a_socket_directory_others_can_write_or_a_symlink(example: &Example) {
    let me = current_uid();
    // Group-writable, at the fallback path.
    let env = TestEnv::new();
    let tmp = env.root().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let dir = fallback_dir(&tmp);
    let planted = Planted::bind(&dir, 0o770);
    let out = run_headless(
        &env,
        example,
        &tmp,
        &[],
        &["get", "jellyfin", "s", "u"],
        b"",
    );
    assert_untrusted(&out, &dir, me);
    assert!(stderr(&out).contains("mode 0770"), "{}", stderr(&out));
    assert_eq!(planted.received(), (0, 0));
    let allow = me.to_string();
    let out = run_headless(
        &env,
        example,
        &tmp,
        &[(ALLOW_UID_VAR, &allow)],
        &["get", "jellyfin", "s", "u"],
        b"",
    );
    assert_untrusted(&out, &dir, me);
    assert_eq!(planted.received(), (0, 0));

    // Other-writable, at the XDG_RUNTIME_DIR path.
    let env = TestEnv::new();
    let dir = env.socket().parent().unwrap().to_path_buf();
    let planted = Planted::bind(&dir, 0o703);
    let out = run_example(&env, example, &["get", "jellyfin", "s", "u"], b"");
    assert_untrusted(&out, &dir, me);
    assert!(stderr(&out).contains("mode 0703"), "{}", stderr(&out));
    assert_eq!(planted.received(), (0, 0));

    // A symlink to a private directory: keyhavend never makes one.
    let env = TestEnv::new();
    let tmp = env.root().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let target = env.root().join("elsewhere");
    let planted = Planted::bind(&target, 0o700);
    let link = fallback_dir(&tmp);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = run_headless(
        &env,
        example,
        &tmp,
        &[],
        &["get", "jellyfin", "s", "u"],
        b"",
    );
    assert_untrusted(&out, &link, me);
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert_eq!(planted.received(), (0, 0));
}

/// A keyhavend running as uid 65534 whose socket file has been handed to
/// the user: the owner checks pass, and only the peer uid read after
/// connecting tells. The Python client refuses before sending a byte.
fn refuses_a_server_running_as_another_user(example: &Example) {
    let other = OtherUsersDaemon::spawn();
    rustix::fs::chown(
        &other.socket,
        Some(rustix::fs::Uid::from_raw(current_uid())),
        None,
    )
    .unwrap();
    let env = TestEnv::new();
    let socket = other.socket.to_str().unwrap();
    let mut cmd = run_example_command(&env, example, &["get", "jellyfin", "s", "u"]);
    cmd.env("KEYHAVEN_SOCKET", socket);
    let out = run_bounded(cmd, b"", RUN_TIMEOUT).unwrap();
    assert_untrusted(&out, &other.socket, OTHER_UID);
    assert!(
        stderr(&out).contains(&format!("runs as uid {OTHER_UID}")),
        "{}",
        stderr(&out)
    );

    // Trusted on purpose: the client goes on, and that daemon's own peer
    // check turns this uid away (UNAVAILABLE, not a trust refusal).
    let mut cmd = run_example_command(&env, example, &["get", "jellyfin", "s", "u"]);
    cmd.env("KEYHAVEN_SOCKET", socket)
        .env(ALLOW_UID_VAR, OTHER_UID.to_string());
    let out = run_bounded(cmd, b"", RUN_TIMEOUT).unwrap();
    assert!(!stderr(&out).contains(UNTRUSTED), "{}", stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::UNAVAILABLE)),
        "{}",
        stderr(&out)
    );
}

/// The refusal both clients give: their own exit code and error code, the
/// path they checked and the uid they found there.
fn assert_untrusted(out: &Output, path: &Path, uid: u32) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(EXIT_UNTRUSTED_DAEMON),
        "stdout {:?} stderr {err}",
        stdout(out)
    );
    assert!(err.contains(UNTRUSTED), "{err}");
    assert!(
        err.contains(&path.display().to_string()),
        "names the path: {err}"
    );
    assert!(
        err.contains(&format!("uid {uid}")),
        "names uid {uid}: {err}"
    );
    assert!(
        err.contains(ALLOW_UID_VAR),
        "names the opt-in variable: {err}"
    );
    assert!(err.contains("Nothing was sent"), "{err}");
}

/// `${TMPDIR}/keyhaven-$UID`: the socket directory without XDG_RUNTIME_DIR.
fn fallback_dir(tmp: &Path) -> PathBuf {
    tmp.join(format!("keyhaven-{}", current_uid()))
}

/// A socket somebody planted: a listener that accepts nothing until asked
/// what it received.
struct Planted {
    listener: UnixListener,
    socket: PathBuf,
}

impl Planted {
    /// Binds `dir/keyhaven.sock`, creating `dir` with `mode`.
    fn bind(dir: &Path, mode: u32) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        set_mode(dir, mode);
        let socket = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&socket).unwrap();
        Self { listener, socket }
    }

    /// Hands the socket and its directory to `uid`, as if that user had
    /// made them.
    fn chown_to(&self, uid: u32) {
        for path in [&self.socket, self.socket.parent().unwrap()] {
            rustix::fs::chown(
                path,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(uid)),
            )
            .unwrap();
        }
    }

    /// The connections made since the last call, and the bytes they sent.
    /// Call it once the clients have exited: a connection waits in the
    /// backlog until accepted, with what was written to it, so none is
    /// missed, and each ends at once.
    fn received(&self) -> (usize, usize) {
        self.listener.set_nonblocking(true).unwrap();
        let (mut connections, mut bytes) = (0, 0);
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
                    let mut data = Vec::new();
                    stream.read_to_end(&mut data).unwrap();
                    connections += 1;
                    bytes += data.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("accept on the planted socket: {e}"),
            }
        }
        (connections, bytes)
    }
}

/// `keyhavend` running as uid 65534 in a tree of its own; killed on drop.
struct OtherUsersDaemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl OtherUsersDaemon {
    fn spawn() -> Self {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        for sub in ["home", "run"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p).unwrap();
            set_mode(&p, 0o700);
            rustix::fs::chown(
                &p,
                Some(rustix::fs::Uid::from_raw(OTHER_UID)),
                Some(rustix::fs::Gid::from_raw(OTHER_UID)),
            )
            .unwrap();
        }
        let mut child = Command::new(keyhaven_tests::bin("keyhavend"))
            .env_clear()
            .env("HOME", dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let socket = dir.path().join("run/keyhaven").join(SOCKET_NAME);
        let mut this = Self {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut log = String::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("keyhavend is serving") => return this,
                Ok(line) => log.push_str(&(line + "\n")),
                Err(_) => {
                    let _ = this.child.kill();
                    panic!("keyhavend as uid {OTHER_UID} did not start:\n{log}");
                }
            }
        }
    }
}

impl Drop for OtherUsersDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stores_reads_and_watches(example: &Example) {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let lang = example.program;

    // The example stores; the Rust CLI reads it back. The example finds the
    // socket through XDG_RUNTIME_DIR, as an app would.
    let server = format!("srv-{lang}");
    let token = format!("tok-from-{lang}");
    let out = run_example(
        &env,
        example,
        &["store", "jellyfin", &server, "user-1"],
        format!("{token}\n").as_bytes(),
    );
    assert_success(&out, "example store");
    let want = format!("stored jellyfin::{server}::user-1::access_token (revision ");
    assert!(stdout(&out).starts_with(&want), "{}", stdout(&out));
    let out = env.cli(&["get", "-n", "jellyfin", &server, "user-1"], b"");
    assert_success(&out, "keyhaven get");
    assert_eq!(stdout(&out), token, "the trailing newline is not stored");

    // The Rust CLI stores; the example reads it back.
    let out = env.cli(
        &["store", "plex", "", "acct-9", "api_key"],
        b"plex-from-rust",
    );
    assert_success(&out, "keyhaven store");
    let out = run_example(
        &env,
        example,
        &["get", "plex", "", "acct-9", "api_key"],
        b"",
    );
    assert_success(&out, "example get");
    assert_eq!(stdout(&out), "plex-from-rust\n");

    // A missing credential: the CLI's exit code and the gRPC code name.
    let out = run_example(&env, example, &["get", "plex", "", "nobody"], b"");
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::NOT_FOUND)),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));

    // The example watches; the Rust CLI stores; the watcher prints one
    // STORED event with the key and no secret, then exits.
    let secret = format!("watched-secret-{lang}");
    let mut watcher = Watcher::spawn(run_example_command(
        &env,
        example,
        &["watch", "--count", "1"],
    ));
    watcher.wait_until_subscribed();
    let out = env.cli(&["store", "jellyfin", "srv-w", "user-w"], secret.as_bytes());
    assert_success(&out, "keyhaven store (watched)");
    let revision: u64 = stdout(&out)
        .trim_end()
        .rsplit_once("(revision ")
        .and_then(|(_, n)| n.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {:?}", stdout(&out)));
    let (status, events, log) = watcher.finish();
    assert!(status.success(), "watch failed ({status}):\n{log}");
    assert!(
        !events.contains(&secret),
        "the watcher printed the secret: {events}"
    );
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.len(), 1, "one event for --count 1: {events}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["kind"], "STORED", "{event}");
    assert_eq!(
        event["key"], "jellyfin::srv-w::user-w::access_token",
        "{event}"
    );
    assert_eq!(event["provider"], "jellyfin", "{event}");
    assert_eq!(event["server_id"], "srv-w", "{event}");
    assert_eq!(event["user_id"], "user-w", "{event}");
    assert_eq!(event["token_type"], "access_token", "{event}");
    assert_eq!(event["revision"], revision, "{event}");
    assert_eq!(
        event["actor"]["uid"],
        keyhaven_proto::paths::current_uid(),
        "the actor is this user's CLI: {event}"
    );
    drop(daemon);
}

/// A command running `example` with `args` in `env`: HOME and
/// XDG_RUNTIME_DIR point into the test's tree, nothing of the caller's
/// keyhaven settings leaks in.
fn run_example_command(env: &TestEnv, example: &Example, args: &[&str]) -> Command {
    let mut cmd = Command::new(example.program);
    cmd.arg(&example.script).args(args);
    for var in [
        "KEYHAVEN_SOCKET",
        "KEYHAVEN_PROTO_DIR",
        ALLOW_UID_VAR,
        "TMPDIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", env.home())
        .env("XDG_RUNTIME_DIR", env.runtime_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs `example` as in the headless case: no XDG_RUNTIME_DIR, TMPDIR =
/// `tmp`, so it looks for `tmp/keyhaven-$UID/keyhaven.sock`.
fn run_headless(
    env: &TestEnv,
    example: &Example,
    tmp: &Path,
    vars: &[(&str, &str)],
    args: &[&str],
    stdin: &[u8],
) -> Output {
    let mut cmd = run_example_command(env, example, args);
    cmd.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", tmp);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run_bounded(cmd, stdin, RUN_TIMEOUT).unwrap()
}

fn run_example(env: &TestEnv, example: &Example, args: &[&str], stdin: &[u8]) -> Output {
    let cmd = run_example_command(env, example, args);
    run_bounded(cmd, stdin, RUN_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "cannot run {} {}: {e}",
            example.program,
            example.script.display()
        )
    })
}

/// Runs `cmd` with `stdin`, killing it if it takes longer than `timeout`.
fn run_bounded(mut cmd: Command, stdin: &[u8], timeout: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().unwrap();
    match input.write_all(stdin) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
        _ => {}
    }
    drop(input);
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("{cmd:?} did not finish within {timeout:?}")
        }
    }
}

/// A `watch` running in the background, its stderr read line by line.
struct Watcher {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stdout_text: mpsc::Receiver<String>,
    log: String,
}

impl Watcher {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let (text_tx, stdout_text) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            let _ = text_tx.send(text);
        });
        Self {
            child,
            stderr_lines,
            stdout_text,
            log: String::new(),
        }
    }

    /// Waits for the "watching" line; fails with the watcher's stderr if it
    /// exits first (e.g. UNIMPLEMENTED from a daemon without Watch).
    fn wait_until_subscribed(&mut self) {
        let deadline = Instant::now() + WATCH_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains(WATCH_READY);
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if ready {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Its stderr is closed, so it has exited; the kill only
                    // bounds the wait.
                    let _ = self.child.kill();
                    let status = self.child.wait().unwrap();
                    panic!(
                        "the watcher exited ({status}) before subscribing:\n{}",
                        self.log
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "the watcher did not subscribe within {WATCH_TIMEOUT:?}:\n{}",
                        self.log
                    );
                }
            }
        }
    }

    /// Waits for the watcher to exit by itself; returns its status, stdout
    /// and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let text = match self.stdout_text.recv_timeout(WATCH_TIMEOUT) {
            Ok(text) => text,
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.log
                    .extend(self.stderr_lines.try_iter().map(|l| l + "\n"));
                panic!(
                    "the watcher did not print its event and exit within {WATCH_TIMEOUT:?}:\n{}",
                    self.log
                );
            }
        };
        // Its stdout is closed: it has exited or is about to.
        let pid = rustix::process::Pid::from_child(&self.child);
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(WATCH_TIMEOUT) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                panic!("the watcher closed its output but did not exit");
            }
        };
        let mut log = self.log;
        log.extend(self.stderr_lines.try_iter().map(|l| l + "\n"));
        (status, text, log)
    }
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

/// The flow of docs/integrating.md across languages: one app (Python)
/// logs in and stores the token with its attributes; a new app (Node)
/// finds the login by its server, shows its names and reuses the token and
/// device id; the CLI sees the same login.
#[test]
fn a_login_stored_from_python_is_found_and_reused_from_node() {
    let test = "a_login_stored_from_python_is_found_and_reused_from_node";
    if let Err(why) = python().and_then(|_| node()) {
        return run_or_skip(test, Err(why), |_| {});
    }
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let socket = env.socket();
    let root = repo_root();
    let store = format!(
        r#"
import sys
sys.path.insert(0, {python_pkg:?})
import keyhaven
with keyhaven.connect({socket:?}) as client:
    client.store(
        keyhaven.Key("jellyfin", "4fd1c2e7", "a1b2c3"),
        b"tok-from-python",
        attributes={{
            "server_url": "https://jf.example.org",
            "server_name": "Living room",
            "user_name": "alice",
            "device_id": "dev-py-1",
            "client_name": "PyApp",
        }},
    )
"#,
        python_pkg = root.join("clients/python").display().to_string(),
        socket = socket.display().to_string(),
    );
    let out = run_bounded(
        {
            let mut c = Command::new("python3");
            c.args(["-c", &store]);
            c
        },
        b"",
        RUN_TIMEOUT,
    )
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let find = format!(
        r#"
const keyhaven = require({node_pkg:?});
(async () => {{
  const client = await keyhaven.connect({{ socket: {socket:?} }});
  const logins = await client.list({{ provider: "jellyfin", attributes: {{ server_url: "https://jf.example.org" }} }});
  const {{ secret }} = await client.get(logins[0].key);
  console.log(JSON.stringify({{
    count: logins.length,
    shown: `${{logins[0].attributes.server_name}} as ${{logins[0].attributes.user_name}}`,
    device: logins[0].attributes.device_id,
    token: secret.toString(),
  }}));
  client.close();
}})().catch((e) => {{ console.error(e.message); process.exit(1); }});
"#,
        node_pkg = root.join("clients/node").display().to_string(),
        socket = socket.display().to_string(),
    );
    let out = run_bounded(
        {
            let mut c = Command::new("node");
            c.args(["-e", &find]);
            c
        },
        b"",
        RUN_TIMEOUT,
    )
    .expect("node runs");
    assert!(
        out.status.success(),
        "node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["count"], 1, "{found}");
    assert_eq!(found["shown"], "Living room as alice");
    assert_eq!(found["device"], "dev-py-1");
    assert_eq!(found["token"], "tok-from-python");

    let out = env.cli(&["list", "--json", "--attr", "client_name=PyApp"], b"");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["attributes"]["device_id"], "dev-py-1");
}
