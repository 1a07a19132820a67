//! Unix: the socket file (private directory, stale-socket replacement,
//! mode 0600), peer credentials from the kernel, socket activation (systemd
//! on Linux, launchd on macOS), the systemd readiness protocol, signals and
//! process hardening.
//!
//! - The socket's directory is created 0700 and verified (owner, mode, not a
//!   symlink); the socket itself is set to 0600.
//! - A socket file that still answers belongs to a live daemon and is never
//!   taken over; one that refuses connections is stale and is replaced.
//! - A socket inherited from systemd or launchd is used as it is: the
//!   service manager created it with the unit's mode and directory, and
//!   removes it; keyhavend never unlinks it.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::error::StartError;
use crate::fsutil;

/// The listening socket type served by [`crate::server::serve`].
pub type Listener = UnixListener;
/// One accepted connection.
pub type Conn = UnixStream;

/// Who is on the other end, from the kernel (`SO_PEERCRED`, `getpeereid`).
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    /// Effective uid.
    pub uid: u32,
    /// Pid, 0 when the platform does not say.
    pub pid: i32,
}

/// Waits for the next connection.
pub async fn accept(listener: &Listener) -> io::Result<Conn> {
    listener.accept().await.map(|(stream, _addr)| stream)
}

/// The peer's uid and pid.
pub fn peer_cred(conn: &Conn) -> io::Result<PeerCred> {
    let cred = conn.peer_cred()?;
    Ok(PeerCred {
        uid: cred.uid(),
        pid: cred.pid().unwrap_or(0),
    })
}

/// The daemon's own uid: only peers with it (or an allowed uid) get in.
pub fn own_uid() -> u32 {
    keyhaven_proto::paths::current_uid()
}

/// A listening socket. One the daemon bound itself removes its file when
/// dropped (only if the file is still the one it created); an inherited one
/// belongs to the service manager and is left alone.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// The inode of the file this daemon created; `None` when inherited.
    ino: Option<u64>,
    inherited_from: Option<&'static str>,
}

impl BoundSocket {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Some("systemd")` or `Some("launchd")` when the socket was passed in
    /// by a service manager.
    pub fn inherited_from(&self) -> Option<&'static str> {
        self.inherited_from
    }

    /// Takes the listener out for serving; the file is still removed on drop.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(ino) = self.ino
            && let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.ino() == ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the socket at `path`: private directory, stale-socket replacement,
/// mode 0600. Must run inside a tokio runtime.
pub fn bind(path: &Path) -> Result<BoundSocket, StartError> {
    let dir = path.parent().ok_or_else(|| StartError::Insecure {
        path: path.to_path_buf(),
        reason: "the socket path has no directory".into(),
    })?;
    fsutil::ensure_private_dir(dir)?;
    remove_if_stale(path)?;
    let io_err = |what, source| StartError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(|e| io_err("bind the socket", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("set the mode of", e))?;
    let ino = std::fs::symlink_metadata(path)
        .map_err(|e| io_err("inspect", e))?
        .ino();
    Ok(BoundSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
        ino: Some(ino),
        inherited_from: None,
    })
}

/// Uses the socket a service manager passed in when there is one, else
/// binds `path` (see [`bind`]). Must run inside a tokio runtime.
pub fn bind_or_adopt(
    path: &Path,
    inherited: Option<InheritedSocket>,
) -> Result<BoundSocket, StartError> {
    let Some(inherited) = inherited else {
        return bind(path);
    };
    let manager = inherited.manager;
    let io_err = |what, source| StartError::Io {
        what,
        path: PathBuf::from(manager),
        source,
    };
    let local = inherited
        .listener
        .local_addr()
        .map_err(|e| io_err("read the address of the socket passed in by", e))?;
    inherited
        .listener
        .set_nonblocking(true)
        .map_err(|e| io_err("set non-blocking mode on the socket passed in by", e))?;
    let listener = UnixListener::from_std(inherited.listener)
        .map_err(|e| io_err("register the socket passed in by", e))?;
    // The unit decides the path; `--socket` and KEYHAVEN_SOCKET do not apply.
    let path = local
        .as_pathname()
        .map_or_else(|| path.to_path_buf(), Path::to_path_buf);
    tracing::info!(socket = %path.display(), manager, "using the socket passed in by the service manager");
    Ok(BoundSocket {
        listener: Some(listener),
        path,
        ino: None,
        inherited_from: Some(manager),
    })
}

fn remove_if_stale(path: &Path) -> Result<(), StartError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StartError::Io {
                what: "inspect",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(StartError::Insecure {
            path: path.to_path_buf(),
            reason: "it exists and is not a socket; remove it if it is yours".into(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(StartError::SocketInUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket left by a previous daemon");
            std::fs::remove_file(path).map_err(|source| StartError::Io {
                what: "remove the stale socket",
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(StartError::Io {
            what: "probe the existing socket",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A listening socket handed over by the service manager.
#[derive(Debug)]
pub struct InheritedSocket {
    /// The listener, verified to be a Unix stream socket.
    pub listener: StdUnixListener,
    /// Who handed it over, for logs: `systemd` or `launchd`.
    pub manager: &'static str,
}

/// The socket the service manager passed in, if any. Run before threads
/// start. An inherited file descriptor that is not a listening Unix stream
/// socket is an error, not silently ignored.
pub fn take_inherited_socket() -> Result<Option<InheritedSocket>, StartError> {
    let Some((listener, manager)) = manager::take()? else {
        return Ok(None);
    };
    verify_unix_stream(&listener).map_err(|source| StartError::Io {
        what: "use the socket passed in by",
        path: manager.into(),
        source,
    })?;
    Ok(Some(InheritedSocket { listener, manager }))
}

/// A Unix-domain (`local_addr` fails for other families), stream-type
/// socket.
fn verify_unix_stream(listener: &StdUnixListener) -> io::Result<()> {
    listener.local_addr()?;
    let kind = rustix::net::sockopt::socket_type(listener)?;
    if kind != rustix::net::SocketType::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the inherited socket is not a stream socket; use ListenStream= in the socket unit",
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod manager {
    use std::os::unix::net::UnixListener;

    use crate::error::StartError;

    /// systemd's `LISTEN_FDS` / `LISTEN_PID`, through listenfd (which also
    /// removes the variables from the environment).
    pub(super) fn take() -> Result<Option<(UnixListener, &'static str)>, StartError> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() == 0 {
            return Ok(None);
        }
        if fds.len() > 1 {
            tracing::warn!(
                count = fds.len(),
                "systemd passed more than one socket; keyhavend uses the first"
            );
        }
        let listener = fds.take_unix_listener(0).map_err(|source| StartError::Io {
            what: "take the socket passed in by",
            path: "systemd (LISTEN_FDS)".into(),
            source,
        })?;
        Ok(listener.map(|l| (l, "systemd")))
    }
}

#[cfg(target_os = "macos")]
mod manager {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;

    use crate::error::StartError;

    /// The name of the socket in the launchd agent's `Sockets` dictionary
    /// (`packaging/launchd/org.keyhaven.keyhavend.plist`).
    pub(crate) const LAUNCHD_SOCKET_NAME: &str = "Listeners";

    /// launchd's `launch_activate_socket`. Not started by launchd (ESRCH)
    /// or no such socket in the plist (ENOENT) means "no inherited socket".
    pub(super) fn take() -> Result<Option<(UnixListener, &'static str)>, StartError> {
        let fds = match raunch::activate_socket(LAUNCHD_SOCKET_NAME) {
            Ok(fds) => fds,
            // Not started by launchd, or a plist without the socket: the
            // daemon binds its own socket.
            Err(raunch::Error::NotManaged | raunch::Error::NotInPlist) => return Ok(None),
            Err(e) => {
                return Err(StartError::Io {
                    what: "take the socket passed in by",
                    path: "launchd (launch_activate_socket)".into(),
                    source: std::io::Error::other(e),
                });
            }
        };
        let mut owned = fds.into_iter().map(|fd| {
            // SAFETY: launch_activate_socket hands these descriptors to this
            // process, open and owned by nobody else; each is wrapped once.
            #[allow(unsafe_code)]
            unsafe {
                OwnedFd::from_raw_fd(fd)
            }
        });
        let Some(first) = owned.next() else {
            return Ok(None);
        };
        if owned.next().is_some() {
            tracing::warn!("launchd passed more than one socket; keyhavend uses the first");
        }
        Ok(Some((UnixListener::from(first), "launchd")))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod manager {
    use std::os::unix::net::UnixListener;

    use crate::error::StartError;

    pub(super) fn take() -> Result<Option<(UnixListener, &'static str)>, StartError> {
        Ok(None)
    }
}

/// Tells systemd the daemon is serving (`READY=1`). A no-op without
/// `NOTIFY_SOCKET` and on systems without systemd.
pub fn notify_ready() {
    #[cfg(target_os = "linux")]
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not send READY=1 to the service manager");
    }
}

/// Tells systemd the daemon is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    #[cfg(target_os = "linux")]
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::warn!(error = %e, "could not send STOPPING=1 to the service manager");
    }
}

/// Completes on SIGTERM or SIGINT.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    })
}

/// Runs `reload` on every SIGHUP (the daemon re-reads its policy then,
/// without dropping connections).
pub fn on_hangup(reload: impl Fn() + Send + 'static) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload();
        }
    });
    Ok(())
}

/// No core dumps, and not dumpable: another process cannot read the data
/// key or secrets out of this one's memory through ptrace or /proc.
pub fn harden_process() {
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    #[cfg(target_os = "linux")]
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

/// Linux: unmaps the pages of keyhavend's own executable, for a daemon
/// with nothing to do. A page fault on a file mapping maps the cached
/// pages around it too (the kernel's fault-around, 64 KiB), so the code
/// the daemon ran once (flags, config, migrations, key loading) and the
/// code next to what it runs kept most of the idle resident set mapped:
/// about 8 of 13.5 MiB. The pages stay in the page cache, so code that
/// runs again is mapped again at its first use by a minor fault, from
/// memory, not from the disk. Returns how many bytes were advised.
///
/// Only read-only mappings of the executable file that hold no private
/// copy of a page (smaps `Anonymous: 0 kB`) are advised: for those,
/// `MADV_DONTNEED` drops nothing that the file does not hold. The RELRO
/// segment, whose pages the loader relocated, has such copies and is left
/// alone, as are the heap, the stacks and every library. Best effort: on
/// any error nothing changes. Elsewhere a no-op.
#[cfg(target_os = "linux")]
pub fn release_code_pages() -> usize {
    let mut released = 0;
    let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return 0;
    };
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // A mapping's header: start-end perms offset dev inode path
            let perms = fields.next().unwrap_or("w");
            let ours = fields.nth(3).map(std::path::Path::new) == Some(exe.as_path());
            candidate = (ours && !perms.contains('w')).then_some((start, end));
        } else if first == "Anonymous:"
            && let Some((start, end)) = candidate.take()
            && fields.next() == Some("0")
        {
            // SAFETY: a whole read-only mapping of this process's
            // executable file (page aligned, from smaps) without a
            // private page: dropping its pages loses nothing, and the
            // kernel maps them again from the file on the next access.
            #[allow(unsafe_code)]
            let advised = unsafe {
                rustix::mm::madvise(
                    start as *mut std::ffi::c_void,
                    end.saturating_sub(start),
                    rustix::mm::Advice::LinuxDontNeed,
                )
            };
            if advised.is_ok() {
                released += end.saturating_sub(start);
            }
        }
    }
    released
}

/// Nothing to do outside Linux (see the Linux version).
#[cfg(not(target_os = "linux"))]
pub fn release_code_pages() -> usize {
    0
}
