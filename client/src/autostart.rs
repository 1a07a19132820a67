//! Starting `keyhavend` on demand, for systems where no service manager
//! starts it (no systemd socket unit, no launchd agent, no logon task).
//!
//! Off by default. On with `KEYHAVEN_AUTOSTART=1` (or the CLI's
//! `--autostart`), and then still off when a keyhavend socket unit is
//! enabled for the user: there systemd owns the socket and a second daemon
//! must not be started beside it.
//!
//! When it applies and nothing answers on the socket, `keyhavend` (next to
//! the running program, else from `PATH`) is started detached from the
//! caller, with the same socket, and the caller waits a bounded time for it
//! to answer. A live daemon is never replaced; a stale socket is replaced by
//! the new daemon itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyhaven_proto::paths::Env;

/// Environment variable that turns start-on-demand on (`1`, `true`, `yes`).
pub const ENV_AUTOSTART: &str = "KEYHAVEN_AUTOSTART";

/// How long a started daemon may take to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Start-on-demand settings.
#[derive(Debug, Clone)]
pub struct Autostart {
    /// The daemon program to run.
    pub program: PathBuf,
    /// How long to wait for it to answer.
    pub timeout: Duration,
}

impl Default for Autostart {
    fn default() -> Self {
        Self {
            program: default_program(),
            timeout: START_TIMEOUT,
        }
    }
}

impl Autostart {
    /// `Some` when `KEYHAVEN_AUTOSTART` asks for it.
    pub fn from_env(env: &dyn Env) -> Option<Self> {
        let on = env.var(ENV_AUTOSTART).is_some_and(|v| {
            matches!(
                v.to_string_lossy().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        on.then(Self::default)
    }
}

/// `keyhavend` beside the current executable (both land in the same
/// directory with `cargo install` and the packages), else from `PATH`.
fn default_program() -> PathBuf {
    let name = format!("keyhavend{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The enabled keyhavend socket unit of this user, if there is one:
/// `sockets.target.wants/keyhavend.socket` in the user's or the system-wide
/// user unit configuration.
pub fn enabled_socket_unit(env: &dyn Env) -> Option<PathBuf> {
    let wants = Path::new("sockets.target.wants").join("keyhavend.socket");
    let mut dirs = Vec::new();
    if let Some(xdg) = env
        .var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        dirs.push(xdg.join("systemd/user"));
    } else if let Some(home) = env.var("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config/systemd/user"));
    }
    dirs.push(PathBuf::from("/etc/systemd/user"));
    dirs.into_iter()
        .map(|d| d.join(&wants))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// Starts `keyhavend --socket <socket>` detached. The returned handle is
/// waited for on a background thread so that it never lingers as a zombie.
pub(crate) fn spawn(auto: &Autostart, socket: &Path) -> std::io::Result<Started> {
    let mut cmd = Command::new(&auto.program);
    cmd.arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // The daemon must not take the caller's activation variables.
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET");
    detach(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    Ok(Started {
        pid,
        exited: rx,
        deadline: Instant::now() + auto.timeout,
    })
}

/// Own process group (Unix) or no console (Windows): the daemon outlives
/// the caller and does not get its terminal's Ctrl-C.
fn detach(cmd: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    }
}

/// A daemon this process started.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) pid: u32,
    exited: std::sync::mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
    pub(crate) deadline: Instant,
}

impl Started {
    /// `Some(description)` once the daemon has exited.
    pub(crate) fn exited(&self) -> Option<String> {
        match self.exited.try_recv() {
            Ok(Ok(status)) => Some(status.to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some("unknown status".into()),
        }
    }
}
