//! Unix: socket activation (systemd on Linux, launchd on macOS) and the
//! systemd readiness protocol.

use std::io;
use std::os::unix::net::UnixListener;

use crate::error::StartError;

/// A listening socket handed over by the service manager.
#[derive(Debug)]
pub struct InheritedSocket {
    /// The listener, verified to be a Unix stream socket.
    pub listener: UnixListener,
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
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Io {
            what: "set non-blocking mode on the socket passed in by",
            path: manager.into(),
            source,
        })?;
    Ok(Some(InheritedSocket { listener, manager }))
}

/// A Unix-domain (`local_addr` fails for other families), stream-type
/// socket.
fn verify_unix_stream(listener: &UnixListener) -> io::Result<()> {
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
    const ENOENT: i32 = 2;
    const ESRCH: i32 = 3;

    /// launchd's `launch_activate_socket`. Not started by launchd (ESRCH)
    /// or no such socket in the plist (ENOENT) means "no inherited socket".
    pub(super) fn take() -> Result<Option<(UnixListener, &'static str)>, StartError> {
        let fds = match raunch::activate_socket(LAUNCHD_SOCKET_NAME) {
            Ok(fds) => fds,
            Err(e) if matches!(e.raw_os_error(), Some(ENOENT | ESRCH)) => return Ok(None),
            Err(source) => {
                return Err(StartError::Io {
                    what: "take the socket passed in by",
                    path: "launchd (launch_activate_socket)".into(),
                    source,
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
