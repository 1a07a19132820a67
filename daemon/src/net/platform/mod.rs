//! What differs between operating systems, behind one small interface so
//! that the service code has no `cfg` of its own.
//!
//! | concern | Linux | macOS | Windows |
//! |---|---|---|---|
//! | endpoint | Unix socket in a 0700 directory, mode 0600 | same | named pipe `\\.\pipe\keyhaven-<user>`, DACL: the user and SYSTEM |
//! | peer check | `SO_PEERCRED` uid | `getpeereid` uid | client process token's user SID |
//! | inherited listener | systemd `LISTEN_FDS` (listenfd) | launchd `launch_activate_socket` (raunch) | none |
//! | readiness | `READY=1` / `STOPPING=1` (sd-notify) | none | none |
//! | stop | SIGTERM, SIGINT | same | Ctrl-C, Ctrl-Break, console close, the pipe's named stop event (`keyhavend --stop`) |
//!
//! Each module offers the same items: `Listener`, `Conn`, `BoundSocket`,
//! `bind_or_adopt`, `accept`, `peer_cred`, `own_uid`, `InheritedSocket`,
//! `take_inherited_socket`, `notify_ready`, `notify_stopping`,
//! `shutdown_signal`, `on_hangup`, `harden_process`, `release_code_pages`.
//!
//! [`take_inherited_socket`] must run before any thread is started: the
//! systemd variables it reads are removed from the environment so that
//! child processes do not inherit them.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
