//! Test harness for keyhaven.
//!
//! # Layout
//!
//! - [`TestDaemon`]: the daemon in-process, on a temporary socket and
//!   database, started through the same `prepare` + `serve` path as
//!   `keyhavend`. The socket is bound before `start` returns, so tests
//!   connect at once: no sleeps, no fixed paths.
//! - [`TestEnv`] and [`DaemonProcess`]: the real `keyhavend` and `keyhaven`
//!   binaries in a private HOME / XDG tree, for end-to-end tests.
//! - [`Session`]: a private D-Bus session with a real gnome-keyring, for
//!   Secret Service tests.
//! - [`bin`], [`example`]: find (building if needed) a workspace binary or
//!   an example of the keyring store.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use keyhaven_daemon::Settings;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A daemon running inside the test process.
#[derive(Debug)]
pub struct TestDaemon {
    dir: TempDir,
    settings: Settings,
    socket: PathBuf,
    store: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), keyhaven_daemon::StartError>>>,
}

impl TestDaemon {
    /// Starts a daemon with default settings in a fresh temporary directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a daemon after `adjust` has changed its settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut settings = Settings::in_dir(dir.path());
        adjust(&mut settings);
        Self::start_in(dir, settings)
            .await
            .expect("the test daemon starts")
    }

    /// Starts a daemon with `settings`, keeping `dir` alive with it.
    pub async fn start_in(
        dir: TempDir,
        settings: Settings,
    ) -> Result<Self, keyhaven_daemon::StartError> {
        let prepared = keyhaven_daemon::prepare(&settings).await?;
        let socket = prepared.socket_path().to_path_buf();
        let store = prepared.store_path().to_path_buf();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(prepared.serve(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            dir,
            settings,
            socket,
            store,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The database path.
    pub fn store_path(&self) -> &Path {
        &self.store
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A connected client.
    pub async fn client(&self) -> keyhaven::Client {
        keyhaven::Client::connect_to(&self.socket)
            .await
            .expect("client connects to the test daemon")
    }

    /// A raw generated gRPC client, for sending requests the typed client
    /// would refuse to build.
    pub async fn raw(
        &self,
    ) -> keyhaven_proto::pb::credentials_client::CredentialsClient<tonic::transport::Channel> {
        let channel = raw_channel(&self.socket).await;
        keyhaven_proto::pb::credentials_client::CredentialsClient::new(channel)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Stops the daemon and waits for it; returns its temporary directory
    /// so the store can be reopened.
    pub async fn stop(mut self) -> (TempDir, Settings) {
        self.shutdown().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (dir, self.settings.clone())
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("daemon task does not panic")
                .expect("daemon stops cleanly");
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A tonic channel over the Unix socket at `path`, without the handshake
/// the `keyhaven` client performs.
pub async fn raw_channel(path: &Path) -> tonic::transport::Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://keyhaven.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .expect("raw channel connects")
}

/// Path of a workspace binary (`keyhavend`, `keyhaven`). The first call in
/// a test process runs `cargo build` for the binaries, with the daemon's
/// `fault-injection` feature the crash tests need, so a test never runs a
/// stale binary or one built without the hook (for instance after a plain
/// `cargo build`); when they are fresh that takes about a second.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        cargo_build(&[
            "-p",
            "keyhaven-daemon",
            "-p",
            "keyhaven-cli",
            "--bins",
            "--features",
            "keyhaven-daemon/fault-injection",
        ])
    });
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// Path of an example program of `keyhaven-keyring-store`; the first call
/// in a test process builds them (`cargo build --examples`), as [`bin`]
/// does the binaries.
pub fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| cargo_build(&["-p", "keyhaven-keyring-store", "--examples"]));
    let path = profile_dir().join("examples").join(name);
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// `target/<profile>`, from where the test binary runs.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Runs `cargo build` with `args` in the workspace, in the test binary's
/// profile.
fn cargo_build(args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace");
    let mut build = Command::new(cargo);
    build.current_dir(workspace).arg("build").args(args);
    if profile_dir().file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// A private HOME and XDG tree for running the real binaries.
#[derive(Debug)]
pub struct TestEnv {
    dir: TempDir,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh environment.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["home", "run"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
            set_mode(&dir.path().join(sub), 0o700);
        }
        Self { dir }
    }

    /// Root of the environment.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `$HOME`.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `$XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The default socket in this environment.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("keyhaven").join("keyhaven.sock")
    }

    /// The default database in this environment.
    pub fn database(&self) -> PathBuf {
        self.home().join(".local/share/keyhaven/keyhaven.db")
    }

    /// The default key file in this environment.
    pub fn key_file(&self) -> PathBuf {
        self.home().join(".config/keyhaven/keyhaven.key")
    }

    /// A command for binary `name` with this environment and nothing of the
    /// caller's keyhaven or XDG settings.
    pub fn command(&self, name: &str) -> Command {
        self.program(bin(name))
    }

    /// [`TestEnv::command`] for an example of `keyhaven-keyring-store`.
    pub fn example_command(&self, name: &str) -> Command {
        self.program(example(name))
    }

    fn program(&self, path: PathBuf) -> Command {
        let mut cmd = Command::new(path);
        for var in [
            "KEYHAVEN_SOCKET",
            "KEYHAVEN_DATA_DIR",
            "KEYHAVEN_CONFIG",
            "KEYHAVEN_KEY_FILE",
            "KEYHAVEN_LOG",
            "RUST_LOG",
            "XDG_DATA_HOME",
            "XDG_CONFIG_HOME",
            // Hermetic: no session bus, so no real keyring, unless a test
            // sets one up on purpose.
            "DBUS_SESSION_BUS_ADDRESS",
            "CREDENTIALS_DIRECTORY",
            "KEYHAVEN_FAULT",
            "KEYHAVEN_AUTOSTART",
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.runtime_dir());
        cmd
    }

    /// Runs `keyhaven` with `args`, feeding `stdin`.
    pub fn cli(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command("keyhaven")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyhaven");
        {
            use std::io::Write;
            let mut input = child.stdin.take().expect("stdin");
            // The CLI may exit (e.g. on a bad key) before reading stdin.
            match input.write_all(stdin) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
                _ => {}
            }
        }
        child.wait_with_output().expect("keyhaven runs")
    }

    /// Starts `keyhavend` and waits until it says it is serving.
    pub fn spawn_daemon(&self, extra_env: &[(&str, &str)]) -> DaemonProcess {
        DaemonProcess::spawn(self, extra_env)
    }
}

/// A running `keyhavend` process, its stderr collected.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// How long a daemon may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl DaemonProcess {
    fn spawn(env: &TestEnv, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = env.command("keyhavend");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn keyhavend");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let serving = line.contains("keyhavend is serving");
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&(line + "\n"));
                if serving && let Some(tx) = ready.take() {
                    let _ = tx.send(true);
                }
            }
            if let Some(tx) = ready.take() {
                let _ = tx.send(false);
            }
        });
        let mut this = Self {
            child,
            log,
            reader: Some(reader),
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(true) => this,
            Ok(false) => {
                let _ = this.child.wait();
                panic!("keyhavend exited before serving:\n{}", this.log())
            }
            Err(_) => {
                let _ = this.child.kill();
                panic!(
                    "keyhavend did not start within {START_TIMEOUT:?}:\n{}",
                    this.log()
                )
            }
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `signal` and waits for the process to exit; returns its exit
    /// status and full log.
    pub fn stop_with(
        mut self,
        signal: rustix::process::Signal,
    ) -> (std::process::ExitStatus, String) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal keyhavend");
        let status = self.child.wait().expect("wait for keyhavend");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.log();
        (status, log)
    }

    /// Waits (bounded) for the process to exit on its own; returns its
    /// exit status and full log.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for keyhavend") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "keyhavend did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.log();
        (status, log)
    }

    /// SIGTERM, then wait.
    pub fn stop(self) -> (std::process::ExitStatus, String) {
        self.stop_with(rustix::process::Signal::TERM)
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sets a path's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A path's permission bits (no file type bits).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// True when `needle` occurs anywhere in the file (missing file: false).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

/// The database file and its `-wal` / `-shm` companions.
pub fn database_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// True when the tests run as root (needed to switch uid).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every `.rs` file under `dir`, recursively (for tests that read the
/// source: the layer check, the docs' test tables).
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// A finished process's stdout, as text (lossy).
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished process's stderr, as text (lossy).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A finished process's exit code; panics if a signal ended it.
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

/// Prints a loud skip notice straight to the process's stderr, past the
/// test harness's output capture, so it shows in every `cargo test` run.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED {test}: {why} ***\n"
    );
}

/// A keyring for tests: the in-memory `keyring_core` mock store, plus
/// switches that make it act locked, absent, or hang, as real keyrings do.
#[derive(Debug)]
pub struct TestKeyring {
    inner: keyhaven_daemon::keys::keyring::CoreKeyring,
    mode: Mutex<KeyringMode>,
    gate: std::sync::Condvar,
    names: Mutex<Vec<String>>,
    legacy: Mutex<Vec<keyhaven_daemon::keys::keyring::KeyringName>>,
    legacy_reads: std::sync::atomic::AtomicUsize,
}

/// How a [`TestKeyring`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringMode {
    /// Works.
    Open,
    /// Answers "locked".
    Locked,
    /// Answers "no keyring".
    Absent,
    /// Never answers until set to another mode.
    Hanging,
}

impl TestKeyring {
    /// A working, empty keyring.
    pub fn new() -> std::sync::Arc<Self> {
        let store: std::sync::Arc<keyring_core::CredentialStore> =
            keyring_core::mock::Store::new().expect("mock keyring store");
        std::sync::Arc::new(Self {
            inner: keyhaven_daemon::keys::keyring::CoreKeyring::new(store),
            mode: Mutex::new(KeyringMode::Open),
            gate: std::sync::Condvar::new(),
            names: Mutex::new(Vec::new()),
            legacy: Mutex::new(Vec::new()),
            legacy_reads: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Switches behaviour; releases calls hanging in `Hanging` mode.
    pub fn set_mode(&self, mode: KeyringMode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
        self.gate.notify_all();
    }

    /// The keyring as the daemon's settings take it.
    pub fn choice(self: &std::sync::Arc<Self>) -> keyhaven_daemon::keys::keyring::KeyringChoice {
        keyhaven_daemon::keys::keyring::KeyringChoice::Custom(self.clone())
    }

    /// The entries that hold a secret now, with their secrets.
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        use keyhaven_daemon::keys::keyring::KeyringBackend;
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        names
            .into_iter()
            .filter_map(|n| self.inner.get(&n).ok().flatten().map(|v| (n, v)))
            .collect()
    }

    /// Files an entry under another app's service and user, the way that
    /// app's keyring crate would (the mode does not apply).
    pub fn seed(&self, service: &str, user: &str, secret: &[u8]) {
        use keyhaven_daemon::keys::keyring::KeyringBackend;
        let mut legacy = self.legacy.lock().unwrap_or_else(|e| e.into_inner());
        let name = keyhaven_daemon::keys::keyring::KeyringName {
            service: service.into(),
            user: user.into(),
        };
        if !legacy.contains(&name) {
            legacy.push(name);
        }
        self.inner
            .set_in(service, user, secret)
            .expect("the mock store takes the entry");
    }

    /// The other apps' entries that hold a secret now (service, user).
    pub fn legacy_entries(&self) -> Vec<(String, String)> {
        use keyhaven_daemon::keys::keyring::KeyringBackend;
        let legacy = self
            .legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        legacy
            .into_iter()
            .filter(|n| {
                self.inner
                    .get_in(&n.service, &n.user)
                    .ok()
                    .flatten()
                    .is_some()
            })
            .map(|n| (n.service, n.user))
            .collect()
    }

    /// How many times another app's entry was read with a secret in it.
    pub fn legacy_reads(&self) -> usize {
        self.legacy_reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn gate(&self) -> Result<(), keyhaven_daemon::keys::keyring::KeyringError> {
        use keyhaven_daemon::keys::keyring::KeyringError;
        let mut mode = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        while *mode == KeyringMode::Hanging {
            mode = self.gate.wait(mode).unwrap_or_else(|e| e.into_inner());
        }
        match *mode {
            KeyringMode::Locked => Err(KeyringError::Locked("the test keyring is locked".into())),
            KeyringMode::Absent => {
                Err(KeyringError::Unavailable("the test keyring is gone".into()))
            }
            _ => Ok(()),
        }
    }
}

impl keyhaven_daemon::keys::keyring::KeyringBackend for TestKeyring {
    fn get(
        &self,
        user: &str,
    ) -> Result<Option<Vec<u8>>, keyhaven_daemon::keys::keyring::KeyringError> {
        self.gate()?;
        self.inner.get(user)
    }
    fn set(
        &self,
        user: &str,
        secret: &[u8],
    ) -> Result<(), keyhaven_daemon::keys::keyring::KeyringError> {
        self.gate()?;
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if !names.iter().any(|n| n == user) {
            names.push(user.to_owned());
        }
        self.inner.set(user, secret)
    }
    fn delete(&self, user: &str) -> Result<(), keyhaven_daemon::keys::keyring::KeyringError> {
        self.gate()?;
        self.inner.delete(user)
    }
    fn describe(&self) -> String {
        "test keyring".into()
    }
    fn get_in(
        &self,
        service: &str,
        user: &str,
    ) -> Result<Option<Vec<u8>>, keyhaven_daemon::keys::keyring::KeyringError> {
        self.gate()?;
        let found = self.inner.get_in(service, user)?;
        if found.is_some() {
            self.legacy_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(found)
    }
    fn delete_in(
        &self,
        service: &str,
        user: &str,
    ) -> Result<(), keyhaven_daemon::keys::keyring::KeyringError> {
        self.gate()?;
        self.inner.delete_in(service, user)
    }
    fn names(
        &self,
        service: Option<&str>,
    ) -> Result<
        Vec<keyhaven_daemon::keys::keyring::KeyringName>,
        keyhaven_daemon::keys::keyring::KeyringError,
    > {
        self.gate()?;
        self.inner.names(service)
    }
}

impl Drop for TestKeyring {
    fn drop(&mut self) {
        self.set_mode(KeyringMode::Open);
    }
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("address", &self.address)
            .field("keyring", &self.keyring.as_ref().map(Child::id))
            .finish()
    }
}

/// The login password of the gnome-keyring a [`Session`] starts.
pub const SECRET_SERVICE_PASSWORD: &str = "correct horse";
/// How long a [`Session`] waits for the bus or the keyring.
pub const SECRET_SERVICE_WAIT: Duration = Duration::from_secs(20);

/// True when `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private session bus and, when started, a gnome-keyring on it (stopped
/// with the bus when dropped). The keyring's login password is
/// [`SECRET_SERVICE_SECRET_SERVICE_PASSWORD`].
pub struct Session<'a> {
    env: &'a TestEnv,
    bus: Child,
    address: String,
    keyring: Option<Child>,
}

impl<'a> Session<'a> {
    /// Starts the bus (no keyring yet).
    pub fn start(env: &'a TestEnv) -> Self {
        let socket = env.runtime_dir().join("bus");
        // A session bus without service activation: a keyring runs only
        // when the test starts one (otherwise D-Bus would start
        // gnome-keyring on demand, with the wrong HOME).
        let config = env.root().join("session.conf");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>session</type><listen>unix:path={}</listen>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
                socket.display()
            ),
        )
        .expect("the private D-Bus session and gnome-keyring");
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .env("HOME", env.home())
            .env("XDG_RUNTIME_DIR", env.runtime_dir())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the private D-Bus session and gnome-keyring");
        let mut line = String::new();
        BufReader::new(
            bus.stdout
                .take()
                .expect("the private D-Bus session and gnome-keyring"),
        )
        .read_line(&mut line)
        .expect("the private D-Bus session and gnome-keyring");
        Self {
            env,
            bus,
            address: line.trim().to_owned(),
            keyring: None,
        }
    }

    /// The environment that points a process at this session.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS", self.address.clone()),
            ("HOME", self.env.home().display().to_string()),
            (
                "XDG_RUNTIME_DIR",
                self.env.runtime_dir().display().to_string(),
            ),
        ]
    }

    /// A command with [`Session::vars`] set.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (k, v) in self.vars() {
            cmd.env(k, v);
        }
        cmd
    }

    /// True while a Secret Service owns its bus name.
    pub fn secrets_owned(&self) -> bool {
        let out = self
            .command("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .output()
            .expect("the private D-Bus session and gnome-keyring");
        String::from_utf8_lossy(&out.stdout).contains("boolean true")
    }

    /// Starts gnome-keyring; `unlocked` feeds it the login password.
    pub fn start_keyring(&mut self, unlocked: bool) {
        let mut cmd = self.command("gnome-keyring-daemon");
        cmd.args(["--foreground", "--components=secrets"]);
        if unlocked {
            cmd.arg("--unlock");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the private D-Bus session and gnome-keyring");
        let mut stdin = child
            .stdin
            .take()
            .expect("the private D-Bus session and gnome-keyring");
        if unlocked {
            stdin
                .write_all(SECRET_SERVICE_PASSWORD.as_bytes())
                .expect("the private D-Bus session and gnome-keyring");
        }
        drop(stdin);
        self.keyring = Some(child);
        let deadline = Instant::now() + SECRET_SERVICE_WAIT;
        while !self.secrets_owned() {
            assert!(
                Instant::now() < deadline,
                "gnome-keyring did not take the bus name"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops gnome-keyring and waits until its bus name is gone.
    pub fn stop_keyring(&mut self) {
        if let Some(mut child) = self.keyring.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + SECRET_SERVICE_WAIT;
        while self.secrets_owned() {
            assert!(Instant::now() < deadline, "gnome-keyring did not go away");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The keyhaven entries in the keyring, as `secret-tool` prints them.
    pub fn keyhaven_items(&self) -> String {
        let out = self
            .command("secret-tool")
            .args(["search", "--all", "--unlock", "service", "keyhaven"])
            .stdin(Stdio::null())
            .output()
            .expect("the private D-Bus session and gnome-keyring");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Starts `keyhavend` on this session with `extra` variables.
    pub fn daemon(&self, extra: &[(&str, &str)]) -> DaemonProcess {
        let vars = self.vars();
        let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        self.env.spawn_daemon(&all)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.keyring.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// A connection to a store's database file from outside the daemon, as a
/// test that inspects or damages it needs; `read_only` opens it `mode=ro`.
pub async fn db_connection(path: &Path, read_only: bool) -> sqlx::SqliteConnection {
    let mode = if read_only { "?mode=ro" } else { "" };
    let url = format!("sqlite://{}{mode}", path.display());
    <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("open the database file")
}

/// Runs one statement on the database file at `path` from outside the
/// daemon, as another program (or a damaged disk) might.
pub async fn sql(path: &Path, statement: &str) {
    let mut conn = db_connection(path, false).await;
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .expect("run the statement");
    sqlx::Connection::close(conn).await.expect("close");
}
