//! What differs between operating systems, behind one small interface so
//! that the service code has no `cfg` of its own.
//!
//! | concern | Linux | macOS | Windows |
//! |---|---|---|---|
//! | inherited listener | systemd `LISTEN_FDS` (listenfd) | launchd `launch_activate_socket` (raunch) | none |
//! | readiness | `READY=1` / `STOPPING=1` (sd-notify) | none | none |
//!
//! [`take_inherited_socket`] must run before any thread is started: the
//! systemd variables it reads are removed from the environment so that
//! child processes do not inherit them.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
