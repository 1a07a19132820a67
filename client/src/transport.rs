//! The byte stream to the daemon: a Unix socket, or on Windows the named
//! pipe `\\.\pipe\keyhaven-<user>`, and the checks that decide whether the
//! other end may receive anything at all.
//!
//! A token must never reach another user's daemon, so nothing is written
//! before the other end is known to be this user's:
//!
//! - Unix: after `connect` and before the first byte, the server's peer uid
//!   (`SO_PEERCRED`, `getpeereid` on macOS and the BSDs) must be the
//!   client's own uid, unless the user opted in to one other uid
//!   ([`Trust::allow_uid`]). For the default socket, whose directory may sit
//!   in the shared `/tmp`, that directory must also be the user's own (or
//!   the opted-in uid's), not a symbolic link, and not writable by group or
//!   others: checked with `lstat` before connecting.
//! - Windows: the pipe object's owner SID (`GetSecurityInfo`) must be the
//!   client's own user SID. The owner is whoever created the pipe; the
//!   server's PID would only say which process answers.

use std::fmt;
use std::io;
use std::path::Path;

use hyper_util::rt::TokioIo;

/// Who may serve the socket besides this user.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(windows, allow(dead_code))] // the opt-in names a Unix uid
pub(crate) struct Trust {
    /// One other uid the user opted in to (Unix only).
    pub(crate) allow_uid: Option<u32>,
}

/// Who answered on the socket, as the kernel reports it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Peer {
    /// The server's uid (Unix).
    pub(crate) uid: Option<u32>,
    /// The server's pid, where the platform reports it.
    pub(crate) pid: Option<i32>,
}

impl Peer {
    /// `pid 123, uid 1000`, or what of it is known.
    pub(crate) fn describe(&self) -> String {
        match (self.pid, self.uid) {
            (Some(pid), Some(uid)) => format!("pid {pid}, uid {uid}"),
            (Some(pid), None) => format!("pid {pid}"),
            (None, Some(uid)) => format!("uid {uid}"),
            (None, None) => "pid unknown".into(),
        }
    }
}

/// Why the client will not talk to what is at the socket: the message says
/// what was found and how to opt in, where opting in makes sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Untrusted(pub(crate) String);

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untrusted {}

/// Why a connection failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The other end is not this user's; nothing was sent.
    Untrusted(Untrusted),
    /// The connection itself failed.
    Io(io::Error),
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// What is at `path`, when it is not something to connect to.
#[derive(Debug)]
#[cfg_attr(windows, allow(dead_code))] // a pipe is only found by connecting
pub(crate) enum Probe {
    /// Nothing there.
    Missing(io::Error),
    /// Something that is not a socket: `a regular file`, `a directory`, ...
    NotASocket(&'static str),
    /// It cannot be looked at.
    Failed(io::Error),
}

/// Looks at `path` before connecting. Named pipes cannot be looked at
/// without connecting, so on Windows this always succeeds and [`connect`]
/// reports a missing pipe.
pub(crate) fn probe(path: &Path) -> Result<(), Probe> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Probe::Missing(e)),
            Err(e) => return Err(Probe::Failed(e)),
        };
        // A symbolic link is followed, as connect() will; a dangling one
        // is "nothing there".
        let file_type = if meta.file_type().is_symlink() {
            match std::fs::metadata(path) {
                Ok(meta) => meta.file_type(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Probe::Missing(e)),
                Err(e) => return Err(Probe::Failed(e)),
            }
        } else {
            meta.file_type()
        };
        if file_type.is_socket() {
            Ok(())
        } else if file_type.is_file() {
            Err(Probe::NotASocket("a regular file"))
        } else if file_type.is_dir() {
            Err(Probe::NotASocket("a directory"))
        } else if file_type.is_fifo() {
            Err(Probe::NotASocket("a named pipe (FIFO)"))
        } else {
            Err(Probe::NotASocket("a device or other special file"))
        }
    }
    #[cfg(windows)]
    {
        let _ = path;
        Ok(())
    }
}

/// The socket directory of the default socket must be the user's own (or
/// the opted-in uid's), a real directory, and closed to writes by others.
/// A missing directory is fine: then no daemon runs, and the connection
/// attempt says so.
#[cfg(unix)]
pub(crate) fn check_default_dir(socket: &Path, trust: Trust) -> Result<(), Untrusted> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    let own = keyhaven_proto::paths::current_uid();
    let shown = dir.display();
    let nothing_sent = format!("nothing was sent to {}", socket.display());
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(dir)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(Untrusted(format!(
            "the socket directory {shown} is a symbolic link (to {target}, link owned by uid {}), \
             not a directory of yours; {nothing_sent}. Remove the link and start keyhavend",
            meta.uid()
        )));
    }
    if !meta.is_dir() {
        return Err(Untrusted(format!(
            "the socket directory {shown} (owned by uid {}) is not a directory; {nothing_sent}",
            meta.uid()
        )));
    }
    let owner = meta.uid();
    if owner != own && trust.allow_uid != Some(owner) {
        return Err(Untrusted(format!(
            "the socket directory {shown} is owned by uid {owner}, not by you (uid {own}): \
             another user may have created it first to receive your tokens; {nothing_sent}. \
             Remove it (as uid {owner} or root) and start keyhavend, or set XDG_RUNTIME_DIR. \
             Only if a daemon of uid {owner} is meant to serve you, allow it with \
             --allow-daemon-uid {owner} or {}={owner}",
            crate::ENV_ALLOW_DAEMON_UID
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted(format!(
            "the socket directory {shown} (owned by uid {owner}) is writable by {} (mode \
             {mode:04o}), so another user could have put the socket there; {nothing_sent}. \
             If it is yours, run `chmod 700 {shown}`",
            if mode & 0o020 != 0 && mode & 0o002 != 0 {
                "group and others"
            } else if mode & 0o020 != 0 {
                "its group"
            } else {
                "others"
            }
        )));
    }
    Ok(())
}

/// Windows has no socket directory: the pipe's owner is checked on connect.
#[cfg(windows)]
pub(crate) fn check_default_dir(socket: &Path, trust: Trust) -> Result<(), Untrusted> {
    let _ = (socket, trust);
    Ok(())
}

/// The uid serving the socket must be this user's or the opted-in one.
#[cfg(unix)]
pub(crate) fn check_peer(socket: &Path, peer: Peer, trust: Trust) -> Result<(), Untrusted> {
    let own = keyhaven_proto::paths::current_uid();
    let Some(uid) = peer.uid else {
        return Err(Untrusted(format!(
            "cannot tell which user serves {}; nothing was sent to it",
            socket.display()
        )));
    };
    if uid == own || trust.allow_uid == Some(uid) {
        return Ok(());
    }
    Err(Untrusted(format!(
        "{} is served by uid {uid} ({}), not by you (uid {own}); nothing was sent to it. \
         Another user's daemon would receive your tokens and could answer with tokens of \
         its choosing. Only if the daemon of uid {uid} is meant to serve you, allow it with \
         --allow-daemon-uid {uid} or {}={uid}",
        socket.display(),
        peer.describe(),
        crate::ENV_ALLOW_DAEMON_UID
    )))
}

/// A connected stream to the daemon.
#[cfg(unix)]
pub(crate) type Stream = TokioIo<tokio::net::UnixStream>;

/// A connected stream to the daemon.
#[cfg(windows)]
pub(crate) type Stream = TokioIo<
    interprocess::os::windows::named_pipe::tokio::DuplexPipeStream<
        interprocess::os::windows::named_pipe::pipe_mode::Bytes,
    >,
>;

/// Opens a connection to the daemon at `path` and checks, before anything
/// is written, that the server is this user's.
#[cfg(unix)]
pub(crate) async fn connect(path: &Path, trust: Trust) -> Result<(Stream, Peer), ConnectError> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: Some(cred.uid()),
        pid: cred.pid(),
    };
    check_peer(path, peer, trust).map_err(ConnectError::Untrusted)?;
    Ok((TokioIo::new(stream), peer))
}

/// Opens a connection to the daemon's pipe at `path` and checks, before
/// anything is written, that the pipe is owned by this user.
#[cfg(windows)]
pub(crate) async fn connect(path: &Path, trust: Trust) -> Result<(Stream, Peer), ConnectError> {
    use interprocess::os::windows::named_pipe::pipe_mode::Bytes;
    use interprocess::os::windows::named_pipe::tokio::DuplexPipeStream;
    use keyhaven_proto::pipe::{current_user_sid, pipe_owner_sid};
    use std::os::windows::io::AsHandle;

    // The opt-in names a Unix uid; Windows accounts are told apart by SID.
    let _ = trust;
    let stream = DuplexPipeStream::<Bytes>::connect_by_path(path).await?;
    let pid = stream
        .server_process_id()
        .ok()
        .and_then(|p| i32::try_from(p).ok());
    let peer = Peer { uid: None, pid };
    let owner = pipe_owner_sid(stream.as_handle())?;
    let own = current_user_sid()?;
    if owner != own {
        return Err(ConnectError::Untrusted(Untrusted(format!(
            "{} is owned by {owner}, not by you ({own}): another user created it first; \
             nothing was sent to it ({})",
            path.display(),
            peer.describe()
        ))));
    }
    Ok((TokioIo::new(stream), peer))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn default_directories_must_be_private_real_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keyhaven");
        let socket = dir.join("keyhaven.sock");
        // Missing: nothing to refuse; the connection says "not running".
        assert_eq!(check_default_dir(&socket, Trust::default()), Ok(()));
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        assert_eq!(check_default_dir(&socket, Trust::default()), Ok(()));
        chmod(&dir, 0o755);
        assert_eq!(check_default_dir(&socket, Trust::default()), Ok(()));
        for (mode, who) in [
            (0o770, "its group"),
            (0o703, "others"),
            (0o777, "group and others"),
            (0o1777, "group and others"),
        ] {
            chmod(&dir, mode);
            let err = check_default_dir(&socket, Trust::default()).unwrap_err();
            assert!(err.0.contains(&format!("is writable by {who}")), "{err}");
            assert!(err.0.contains(&format!("mode {mode:04o}")), "{err}");
        }
        chmod(&dir, 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = check_default_dir(&link.join("keyhaven.sock"), Trust::default()).unwrap_err();
        assert!(err.0.contains("is a symbolic link"), "{err}");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = check_default_dir(&file.join("keyhaven.sock"), Trust::default()).unwrap_err();
        assert!(err.0.contains("is not a directory"), "{err}");
    }

    #[test]
    fn only_the_own_or_the_opted_in_uid_may_serve() {
        let own = keyhaven_proto::paths::current_uid();
        let other = own.wrapping_add(1);
        let path = Path::new("/x/keyhaven.sock");
        let peer = |uid| Peer {
            uid: Some(uid),
            pid: Some(42),
        };
        assert_eq!(check_peer(path, peer(own), Trust::default()), Ok(()));
        let err = check_peer(path, peer(other), Trust::default()).unwrap_err();
        for needle in [
            "/x/keyhaven.sock is served by uid".to_owned(),
            format!("uid {other}"),
            "pid 42".into(),
            format!("--allow-daemon-uid {other}"),
            format!("KEYHAVEN_ALLOW_DAEMON_UID={other}"),
        ] {
            assert!(err.0.contains(&needle), "{needle:?} not in {err}");
        }
        let allow = Trust {
            allow_uid: Some(other),
        };
        assert_eq!(check_peer(path, peer(other), allow), Ok(()));
        assert!(check_peer(path, peer(other.wrapping_add(1)), allow).is_err());
        assert!(check_peer(path, Peer::default(), Trust::default()).is_err());
    }

    #[test]
    fn files_and_directories_at_the_socket_path_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            probe(&file),
            Err(Probe::NotASocket("a regular file"))
        ));
        assert!(matches!(
            probe(tmp.path()),
            Err(Probe::NotASocket("a directory"))
        ));
        assert!(matches!(
            probe(&tmp.path().join("missing")),
            Err(Probe::Missing(_))
        ));
        let socket = tmp.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(probe(&socket).is_ok());
    }
}
