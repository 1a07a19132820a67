//! Fault injection for crash tests: when `KEYHAVEN_FAULT` names a point,
//! the daemon kills itself with SIGKILL exactly there, as a power cut or
//! the OOM killer would. The crash-safety tests use it to stop a rotation
//! or a key move between two of its steps, and a legacy migration after
//! its write.
//!
//! The hook exists only in builds with the `fault-injection` feature, which
//! the test crate turns on: a release build (the packaged `keyhavend`) has no
//! code that reads `KEYHAVEN_FAULT`, so nothing in a user's environment can
//! make the daemon kill itself. `.ci/run` checks the release binary for the
//! variable's name.

/// Dies with SIGKILL if `KEYHAVEN_FAULT` equals `name`.
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    if std::env::var_os("KEYHAVEN_FAULT").is_some_and(|v| v == name) {
        tracing::warn!(point = name, "KEYHAVEN_FAULT: killing the daemon here");
        #[cfg(unix)]
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // Elsewhere: end at once, without unwinding or cleanup, as a kill would.
        std::process::abort();
    }
}

/// Does nothing: this build has no fault injection.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
