//! The Python and Node example clients (`examples/`) against the real
//! `keyhavend`: each stores a token the Rust CLI reads back, reads a token
//! the Rust CLI stored, and watches a store made by the Rust CLI.
//!
//! A test whose interpreter or gRPC packages are missing says loudly that it
//! is skipped. CI installs them (see `.ci/run`) and sets
//! `KEYHAVEN_REQUIRE_OTHER_LANGUAGES=1`, which turns a skip into a failure.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keyhaven_proto::exit;
use keyhaven_tests::{TestEnv, skip};

/// Longest a single example run may take (interpreter start-up and, for
/// Python, generating the gRPC code).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a watcher may take to subscribe, and then to see the event.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// What the example clients print on stderr once the watch is registered.
const WATCH_READY: &str = "watching for changes";

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

/// The Python example, if `python3` on PATH can import grpc and grpc_tools.
fn python() -> Result<Example, String> {
    let mut probe = Command::new("python3");
    probe.args(["-c", "import grpc, grpc_tools"]);
    match run_bounded(probe, b"", RUN_TIMEOUT) {
        Err(e) => Err(format!("python3 is not on PATH ({e})")),
        Ok(out) if !out.status.success() => Err(format!(
            "python3 cannot import grpc / grpc_tools (pip install grpcio grpcio-tools): {}",
            last_line(&out.stderr)
        )),
        Ok(_) => Ok(Example {
            program: "python3",
            script: repo_root().join("examples/python/keyhaven_client.py"),
        }),
    }
}

/// The Node example, if `node` is on PATH and `npm ci` has run in
/// examples/node.
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
    let modules = dir.join("node_modules");
    for package in ["@grpc/grpc-js", "@grpc/proto-loader"] {
        if !modules.join(package).join("package.json").is_file() {
            return Err(format!(
                "{} is not installed; run `npm ci` in {}",
                package,
                dir.display()
            ));
        }
    }
    Ok(Example {
        program: "node",
        script: dir.join("keyhaven_client.js"),
    })
}

/// Runs the test body, or says why it cannot (a failure when CI requires
/// the other languages).
fn run_or_skip(test: &str, example: Result<Example, String>) {
    match example {
        Ok(example) => stores_reads_and_watches(&example),
        Err(why) if std::env::var_os("KEYHAVEN_REQUIRE_OTHER_LANGUAGES").is_some() => {
            panic!("{test}: {why} (KEYHAVEN_REQUIRE_OTHER_LANGUAGES is set, so this is an error)")
        }
        Err(why) => skip(test, &why),
    }
}

#[test]
fn python_client_stores_reads_and_watches() {
    run_or_skip("python_client_stores_reads_and_watches", python());
}

#[test]
fn node_client_stores_reads_and_watches() {
    run_or_skip("node_client_stores_reads_and_watches", node());
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
    for var in ["KEYHAVEN_SOCKET", "KEYHAVEN_PROTO_DIR"] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", env.home())
        .env("XDG_RUNTIME_DIR", env.runtime_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}
