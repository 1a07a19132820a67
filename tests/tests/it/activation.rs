//! Socket activation as systemd does it, with `systemd-socket-activate`
//! (Debian package `systemd`) standing in for the user manager: it listens
//! on the socket, starts `keyhavend` on the first connection and hands the
//! socket over through `LISTEN_FDS`. Readiness is read from a notify socket
//! the test binds, exactly as systemd reads `NOTIFY_SOCKET` for a
//! `Type=notify` unit.

use std::io::Read;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keyhaven_tests::{TestEnv, bin, skip};
use keyhaven_tests::{stderr, stdout};

const DEADLINE: Duration = Duration::from_secs(30);

fn socket_activate() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join("systemd-socket-activate"))
        .find(|p| p.is_file())
}

/// `systemd-socket-activate` listening on the environment's default socket,
/// ready to start keyhavend with `NOTIFY_SOCKET` pointing at the returned
/// datagram socket.
struct Activation {
    child: Child,
    notify: UnixDatagram,
    socket: PathBuf,
}

impl Activation {
    fn start(tool: &Path, env: &TestEnv, socket_type: &[&str]) -> Self {
        let notify_path = env.root().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let socket = env.socket();
        // The socket unit's DirectoryMode=0700.
        std::fs::create_dir(socket.parent().unwrap()).unwrap();
        keyhaven_tests::set_mode(socket.parent().unwrap(), 0o700);
        // systemd-socket-activate passes on only a few variables; the rest
        // go through -E, like Environment= in a unit.
        let setenv = |name: &str, value: &Path| format!("{name}={}", value.display());
        let child = Command::new(tool)
            .args(socket_type)
            .arg("-l")
            .arg(&socket)
            .arg("-E")
            .arg(setenv("NOTIFY_SOCKET", &notify_path))
            .arg("-E")
            .arg(setenv("HOME", &env.home()))
            .arg("-E")
            .arg(setenv("XDG_RUNTIME_DIR", &env.runtime_dir()))
            .arg(bin("keyhavend"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn systemd-socket-activate");
        let this = Self {
            child,
            notify,
            socket,
        };
        // The socket appears once systemd-socket-activate listens.
        let start = Instant::now();
        while !this.socket.exists() {
            assert!(
                start.elapsed() < DEADLINE,
                "systemd-socket-activate did not create {}",
                this.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        this
    }

    /// Waits for a notification containing `state` (e.g. `READY=1`).
    fn expect_notification(&self, state: &str) {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < DEADLINE {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if text.lines().any(|l| l == state) {
                        return;
                    }
                    seen.push(text);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the notify socket: {e}"),
            }
        }
        panic!("no {state} within {DEADLINE:?}; got {seen:?}");
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits (bounded) for the daemon to exit; returns its status and log.
    fn wait(mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("keyhavend did not exit within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (status, log)
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn first_connection_starts_the_daemon_which_reports_ready_and_stopping() {
    let name = "first_connection_starts_the_daemon_which_reports_ready_and_stopping";
    let Some(tool) = socket_activate() else {
        skip(
            name,
            "systemd-socket-activate not found (apt-get install -y systemd)",
        );
        return;
    };
    let env = TestEnv::new();
    let activation = Activation::start(&tool, &env, &[]);
    // Listening, but nothing started yet: no store has been created.
    assert!(!env.database().exists());

    // The CLI's connection is what starts the daemon, and it is served.
    let out = env.cli(&["store", "jellyfin", "srv-1", "user-1"], b"tok-123");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("stored jellyfin::srv-1::user-1::access_token"),
        "{}",
        stdout(&out)
    );
    activation.expect_notification("READY=1");
    assert!(env.database().exists());
    let out = env.cli(&["get", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(stdout(&out), "tok-123\n", "{}", stderr(&out));

    activation.signal(rustix::process::Signal::TERM);
    activation.expect_notification("STOPPING=1");
    let socket = activation.socket.clone();
    let (exit, log) = activation.wait();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(
        log.contains("using the socket passed in by the service manager"),
        "{log}"
    );
    // The socket belongs to the service manager: the daemon leaves it.
    assert!(socket.exists(), "keyhavend removed the inherited socket");
}

#[test]
fn another_users_connection_to_an_activated_daemon_is_refused() {
    let name = "another_users_connection_to_an_activated_daemon_is_refused";
    if !keyhaven_tests::is_root() {
        skip(
            name,
            "needs root to run a client as another uid (65534); run the tests as root to exercise the peer check on an inherited socket",
        );
        return;
    }
    let Some(tool) = socket_activate() else {
        skip(
            name,
            "systemd-socket-activate not found (apt-get install -y systemd)",
        );
        return;
    };
    let env = TestEnv::new();
    let activation = Activation::start(&tool, &env, &[]);
    // Open every path component and the socket to everyone, so only the
    // daemon's peer check stands between uid 65534 and the store.
    let mut dir = env.socket().parent().unwrap().to_path_buf();
    loop {
        keyhaven_tests::set_mode(&dir, 0o755);
        if dir == env.root() {
            break;
        }
        dir = dir.parent().unwrap().to_path_buf();
    }
    keyhaven_tests::set_mode(&env.socket(), 0o777);

    // The foreign connection is the one that starts the daemon.
    let out = {
        use std::os::unix::process::CommandExt;
        env.command("keyhaven")
            .args(["--socket", env.socket().to_str().unwrap(), "list"])
            .env("HOME", "/nonexistent")
            // Past the client's own refusal of root's socket (exit 9), so
            // that the daemon's peer check is what is tested.
            .env("KEYHAVEN_ALLOW_DAEMON_UID", "0")
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert_eq!(
        out.status.code(),
        Some(i32::from(keyhaven_proto::exit::UNAVAILABLE)),
        "{}",
        stderr(&out)
    );
    activation.expect_notification("READY=1");

    // The owner is served by the same daemon.
    let out = env.cli(&["store", "plex", "", "acct"], b"tok");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    activation.signal(rustix::process::Signal::TERM);
    let (exit, log) = activation.wait();
    assert!(exit.success(), "{exit:?}\n{log}");
    let refusal = log
        .lines()
        .find(|l| l.contains("refused a connection from another user"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(refusal.contains("uid=65534"), "{refusal}");
}

#[test]
fn idle_daemon_exits_when_socket_activated() {
    let name = "idle_daemon_exits_when_socket_activated";
    let Some(tool) = socket_activate() else {
        skip(
            name,
            "systemd-socket-activate not found (apt-get install -y systemd)",
        );
        return;
    };
    let env = TestEnv::new();
    let config = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&config).unwrap();
    keyhaven_tests::set_mode(&config, 0o700);
    std::fs::write(config.join("config.toml"), "idle_exit_seconds = 1\n").unwrap();
    let activation = Activation::start(&tool, &env, &[]);
    let out = env.cli(&["list"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    activation.expect_notification("READY=1");
    // No further connection: the daemon stops by itself.
    activation.expect_notification("STOPPING=1");
    let (exit, log) = activation.wait();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(
        log.contains("no connections for idle_exit_seconds"),
        "{log}"
    );
}

#[test]
fn an_inherited_datagram_socket_is_refused() {
    let name = "an_inherited_datagram_socket_is_refused";
    let Some(tool) = socket_activate() else {
        skip(
            name,
            "systemd-socket-activate not found (apt-get install -y systemd)",
        );
        return;
    };
    let env = TestEnv::new();
    let activation = Activation::start(&tool, &env, &["--datagram"]);
    // A datagram is the "connection" that starts the program.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"x", &activation.socket)
        .unwrap();
    let (exit, log) = activation.wait();
    assert!(
        !exit.success(),
        "keyhavend served a datagram socket:\n{log}"
    );
    assert!(log.contains("systemd"), "{log}");
    assert!(!env.database().exists(), "started anyway:\n{log}");
    // And a stream client cannot connect to it.
    assert!(UnixStream::connect(env.socket()).is_err());
}

/// The library entry point systemd and launchd use, in-process: a socket
/// bound by someone else is served as it is, through the same peer check,
/// and left in place when the daemon stops.
#[tokio::test]
async fn prepare_with_listener_serves_an_inherited_socket_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = keyhaven_daemon::Settings::in_dir(dir.path());
    let run = dir.path().join("manager");
    std::fs::create_dir(&run).unwrap();
    keyhaven_tests::set_mode(&run, 0o700);
    let path = run.join("inherited.sock");
    let inherited = keyhaven_daemon::InheritedSocket {
        listener: std::os::unix::net::UnixListener::bind(&path).unwrap(),
        manager: "test",
    };
    let prepared = keyhaven_daemon::prepare_with_listener(&settings, inherited)
        .await
        .unwrap();
    assert_eq!(prepared.socket_path(), path);
    assert_eq!(prepared.inherited_from(), Some("test"));
    assert!(
        !settings.socket.exists(),
        "bound its own socket as well as the inherited one"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(prepared.serve(async move {
        let _ = stopped.await;
    }));

    let client = keyhaven::Client::connect_to(&path).await.unwrap();
    let key = keyhaven::CredentialKey::new("plex", "", "acct", "").unwrap();
    client
        .store(
            &key,
            keyhaven::Secret::from("tok"),
            keyhaven::StoreOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(client.retrieve(&key).await.unwrap().secret.expose(), b"tok");
    drop(client);

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        path.exists(),
        "the daemon removed a socket it did not create"
    );
}
