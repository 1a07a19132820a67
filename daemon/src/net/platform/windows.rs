//! Windows: a named pipe instead of a Unix socket.
//!
//! - The pipe (`\\.\pipe\keyhaven-<user>` by default) is created with the
//!   security descriptor `O:<user SID>D:P(A;;GA;;;<user SID>)(A;;GA;;;SY)`:
//!   owned by the daemon's user (which is what clients check: the default
//!   owner can be Administrators for an elevated process, or the primary
//!   group under Wine), with a protected DACL that admits that user and
//!   SYSTEM and nobody else. Without it, the default DACL would let
//!   Everyone read.
//! - Remote clients are refused (`PIPE_REJECT_REMOTE_CLIENTS`, interprocess's
//!   default).
//! - The first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`: if
//!   the name is already served (a live daemon, or anyone else), the daemon
//!   refuses to start instead of sharing the name.
//! - Every client's process token user SID is compared with the daemon's
//!   before a byte is read; a mismatch is refused like a foreign uid on Unix.
//! - No service manager hands over pipes: `take_inherited_socket` finds none.
//! - Stopping: besides Ctrl-C, Ctrl-Break and console close (which a daemon
//!   started without a console never receives), the daemon waits on the
//!   named stop event of its pipe (`keyhaven_proto::pipe::StopEvent`);
//!   `keyhavend --stop` signals it ([`stop_running`]).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use interprocess::os::windows::named_pipe::PipeListenerOptions;
use interprocess::os::windows::named_pipe::pipe_mode::Bytes;
use interprocess::os::windows::named_pipe::tokio::{DuplexPipeStream, PipeListener};
use interprocess::os::windows::security_descriptor::SecurityDescriptor;
use keyhaven_proto::pipe::{
    Sid, StopEvent, StopOutcome, current_user_sid, request_stop, user_sid_of_process,
};

use crate::error::StartError;

/// The listening pipe served by [`crate::server::serve`].
pub type Listener = PipeListener<Bytes, Bytes>;
/// One accepted pipe connection.
pub type Conn = DuplexPipeStream<Bytes>;

/// Windows has no uids; the daemon's user is 0 here, and a client of
/// another user gets [`FOREIGN_UID`], which no allow-list names.
const OWN_UID: u32 = 0;
/// The uid reported for a client whose SID is not the daemon's.
pub const FOREIGN_UID: u32 = u32::MAX;

/// Who is on the other end.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    /// [`own_uid`] when the client's token user SID is the daemon's,
    /// otherwise [`FOREIGN_UID`].
    pub uid: u32,
    /// The client's process id.
    pub pid: i32,
}

/// Never constructed: no service manager passes pipes in.
#[derive(Debug)]
pub enum InheritedSocket {}

/// The pipe this daemon created.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<Listener>,
    path: PathBuf,
}

impl BoundSocket {
    /// The pipe path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Always `None` on Windows.
    pub fn inherited_from(&self) -> Option<&'static str> {
        None
    }

    /// Takes the listener out for serving.
    pub fn take_listener(&mut self) -> Option<Listener> {
        self.listener.take()
    }
}

fn own_sid() -> io::Result<&'static Sid> {
    static OWN: OnceLock<Sid> = OnceLock::new();
    if let Some(sid) = OWN.get() {
        return Ok(sid);
    }
    let sid = current_user_sid()?;
    Ok(OWN.get_or_init(|| sid))
}

/// Creates the named pipe at `path` (`inherited` is always `None`).
pub fn bind_or_adopt(
    path: &Path,
    inherited: Option<InheritedSocket>,
) -> Result<BoundSocket, StartError> {
    if let Some(never) = inherited {
        match never {}
    }
    let io_err = |what, source| StartError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let sid = own_sid().map_err(|e| io_err("read this user's SID for", e))?;
    // The owner explicitly: clients trust the pipe only when they own it.
    let sddl = format!("O:{sid}D:P(A;;GA;;;{sid})(A;;GA;;;SY)");
    let wide = widestring::U16CString::from_str(&sddl)
        .map_err(|e| io_err("encode the security descriptor of", io::Error::other(e)))?;
    let descriptor = SecurityDescriptor::deserialize(&wide)
        .map_err(|e| io_err("build the security descriptor of", e))?;
    let listener = PipeListenerOptions::new()
        .path(path)
        .security_descriptor(Some(descriptor))
        .accept_remote(false)
        .create_tokio_duplex::<Bytes>()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                // FILE_FLAG_FIRST_PIPE_INSTANCE: the name is taken.
                StartError::SocketInUse {
                    path: path.to_path_buf(),
                }
            } else {
                io_err("create the named pipe", e)
            }
        })?;
    tracing::debug!(pipe = %path.display(), %sid, "named pipe created for this user and SYSTEM only");
    match StopEvent::create(path) {
        Ok(event) => {
            let _ = STOP_EVENT.set(event);
        }
        Err(e) => tracing::warn!(error = %e,
            "could not create the stop event: `keyhavend --stop` will not reach this daemon"),
    }
    Ok(BoundSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
    })
}

/// Waits for the next client.
pub async fn accept(listener: &Listener) -> io::Result<Conn> {
    listener.accept().await
}

/// The client's pid and whether its token user SID is the daemon's.
pub fn peer_cred(conn: &Conn) -> io::Result<PeerCred> {
    let pid = conn.client_process_id()?;
    let sid = user_sid_of_process(pid)?;
    let uid = if &sid == own_sid()? {
        OWN_UID
    } else {
        tracing::debug!(pid, client_sid = %sid, "pipe client runs as another user");
        FOREIGN_UID
    };
    Ok(PeerCred {
        uid,
        pid: i32::try_from(pid).unwrap_or(0),
    })
}

/// The daemon's own "uid" (see [`PeerCred`]).
pub fn own_uid() -> u32 {
    OWN_UID
}

/// No service manager passes a pipe in.
pub fn take_inherited_socket() -> Result<Option<InheritedSocket>, StartError> {
    Ok(None)
}

/// No readiness protocol on Windows.
pub fn notify_ready() {}

/// Linux unmaps an idle daemon's code pages; Windows trims a working set
/// on its own.
pub fn release_code_pages() -> usize {
    0
}

/// No readiness protocol on Windows.
pub fn notify_stopping() {}

/// The stop event of the pipe this process serves, held until the process
/// exits (its disappearance tells `keyhavend --stop` the daemon is gone).
static STOP_EVENT: OnceLock<StopEvent> = OnceLock::new();

/// Completes on Ctrl-C, Ctrl-Break, console close, system shutdown, or the
/// pipe's stop event (`keyhavend --stop`).
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
    let mut c = ctrl_c()?;
    let mut brk = ctrl_break()?;
    let mut close = ctrl_close()?;
    let mut shutdown = ctrl_shutdown()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(event) = STOP_EVENT.get() {
        // A plain thread: the wait blocks until the event is set, and a
        // thread still waiting when the process exits costs nothing.
        std::thread::Builder::new()
            .name("stop-event".into())
            .spawn(move || match event.wait() {
                Ok(()) => {
                    let _ = stop_tx.send(());
                }
                Err(e) => tracing::warn!(error = %e, "waiting on the stop event failed"),
            })?;
    }
    Ok(async move {
        let stop = async {
            match stop_rx.await {
                Ok(()) => {}
                // No stop event: only the console events remain.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = c.recv() => tracing::info!("received Ctrl-C"),
            _ = brk.recv() => tracing::info!("received Ctrl-Break"),
            _ = close.recv() => tracing::info!("console closed"),
            _ = shutdown.recv() => tracing::info!("system shutdown"),
            () = stop => tracing::info!("asked to stop (keyhavend --stop)"),
        }
    })
}

/// `keyhavend --stop`: asks the daemon serving `pipe` to stop cleanly and
/// waits for it to exit. Exit code 0 when it stopped or none was running.
pub fn stop_running(pipe: &Path) -> std::process::ExitCode {
    match request_stop(pipe, std::time::Duration::from_secs(20)) {
        Ok(StopOutcome::Stopped) => {
            println!("keyhavend on {} stopped", pipe.display());
            std::process::ExitCode::SUCCESS
        }
        Ok(StopOutcome::NotRunning) => {
            println!("no keyhavend is running on {}", pipe.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "keyhavend: could not stop the daemon on {}: {e}",
                pipe.display()
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// No SIGHUP on Windows; the policy is still re-read when the file changes.
pub fn on_hangup(_reload: impl Fn() + Send + 'static) -> io::Result<()> {
    Ok(())
}

/// Nothing to do: Windows does not let other users read this process's
/// memory, and writes no core files.
pub fn harden_process() {}
