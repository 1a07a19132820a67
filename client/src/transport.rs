//! The byte stream to the daemon: a Unix socket, or on Windows the named
//! pipe `\\.\pipe\keyhaven-<user>`.
//!
//! On Windows the client also checks who serves the pipe: the server
//! process must run as the same user (token user SID), so that a pipe
//! another user created first under the expected name never receives a
//! request, let alone a token.

use std::io;
use std::path::Path;

use hyper_util::rt::TokioIo;

/// Fails with `NotFound` when nothing exists at `path`. Named pipes cannot
/// be looked at without connecting, so on Windows this always succeeds and
/// [`connect`] reports a missing pipe.
pub(crate) fn probe(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::symlink_metadata(path).map(|_| ())
    }
    #[cfg(windows)]
    {
        let _ = path;
        Ok(())
    }
}

/// Opens a connection to the daemon at `path`.
#[cfg(unix)]
pub(crate) async fn connect(path: &Path) -> io::Result<TokioIo<tokio::net::UnixStream>> {
    tokio::net::UnixStream::connect(path)
        .await
        .map(TokioIo::new)
}

/// Opens a connection to the daemon's pipe at `path` and checks that the
/// server runs as this user.
#[cfg(windows)]
pub(crate) async fn connect(
    path: &Path,
) -> io::Result<
    TokioIo<
        interprocess::os::windows::named_pipe::tokio::DuplexPipeStream<
            interprocess::os::windows::named_pipe::pipe_mode::Bytes,
        >,
    >,
> {
    use interprocess::os::windows::named_pipe::pipe_mode::Bytes;
    use interprocess::os::windows::named_pipe::tokio::DuplexPipeStream;
    use keyhaven_proto::pipe::{current_user_sid, user_sid_of_process};

    let stream = DuplexPipeStream::<Bytes>::connect_by_path(path).await?;
    let pid = stream.server_process_id()?;
    let server = user_sid_of_process(pid)?;
    let own = current_user_sid()?;
    if server != own {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is served by process {pid} of another user ({server}); \
                 not sending it anything",
                path.display()
            ),
        ));
    }
    Ok(TokioIo::new(stream))
}
