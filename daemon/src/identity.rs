//! Who is calling: uid and pid from the kernel (`SO_PEERCRED`), and on Linux
//! the executable path and a sandbox app id, read once when the connection
//! is accepted and bound to it.
//!
//! | field | source | trust |
//! |---|---|---|
//! | uid | `SO_PEERCRED` | authoritative: the kernel's record of the connecting process |
//! | pid | `SO_PEERCRED` | the pid at connect time |
//! | executable | `/proc/<pid>/exe` | identifies, does not authenticate: a program of the same user can run a trusted binary with `LD_PRELOAD` or ptrace it |
//! | app_id | Flatpak `/proc/<pid>/root/.flatpak-info`, Snap AppArmor label | reliable: written by the sandbox, not the app |
//!
//! Pid reuse: the identity is read through the pid only while a pidfd for
//! it is held, and is dropped unless that process is still alive after the
//! reads and runs as the peer's uid. A client that exits in the instant
//! between connecting and being accepted gets no executable or app id
//! rather than someone else's.

use std::sync::Arc;

/// The caller of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Effective uid at connect time.
    pub uid: u32,
    /// Pid at connect time; 0 when unknown or for the daemon itself.
    pub pid: i32,
    /// Executable path, when it could be read.
    pub executable: Option<Arc<str>>,
    /// Flatpak app id or `snap.<name>`, when sandboxed.
    pub app_id: Option<Arc<str>>,
}

impl Identity {
    /// Reads what the platform offers about `pid` (running as `uid`).
    pub fn of_process(uid: u32, pid: i32) -> Self {
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut id = Self {
            uid,
            pid,
            executable: None,
            app_id: None,
        };
        #[cfg(target_os = "linux")]
        linux::fill(&mut id);
        id
    }

    /// A short description for logs and refusal messages.
    pub fn describe(&self) -> String {
        match (&self.app_id, &self.executable) {
            (Some(app), _) => format!("app {app} (pid {})", self.pid),
            (None, Some(exe)) => format!("{exe} (pid {})", self.pid),
            (None, None) => format!("uid {} pid {}", self.uid, self.pid),
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::Arc;

    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::process::{Pid, PidfdFlags, pidfd_open};

    use super::Identity;

    pub(super) fn fill(id: &mut Identity) {
        let Some(pid) = Pid::from_raw(id.pid) else {
            return;
        };
        let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else {
            return;
        };
        let proc_dir = format!("/proc/{}", id.pid);
        let exe = std::fs::read_link(format!("{proc_dir}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let app = flatpak_app(&proc_dir).or_else(|| snap_name(&proc_dir));
        let uid_matches = status_uid(&proc_dir) == Some(id.uid);
        // A pidfd becomes readable when its process exits. Still unreadable
        // after the reads: the /proc entries we read were that process's.
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        let alive = matches!(poll(&mut fds, Some(&Timespec::default())), Ok(0));
        if alive && uid_matches {
            id.executable = exe.map(Arc::from);
            id.app_id = app.map(Arc::from);
        }
    }

    fn status_uid(proc_dir: &str) -> Option<u32> {
        let status = std::fs::read_to_string(format!("{proc_dir}/status")).ok()?;
        // "Uid:\treal\teffective\tsaved\tfs"
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(2)?.parse().ok()
    }

    /// `[Application] name=...` from the Flatpak metadata, which lives in
    /// the sandbox's root and cannot be written by the app.
    fn flatpak_app(proc_dir: &str) -> Option<String> {
        let info = std::fs::read_to_string(format!("{proc_dir}/root/.flatpak-info")).ok()?;
        let mut in_application = false;
        for line in info.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_application = line == "[Application]";
            } else if in_application && let Some(name) = line.strip_prefix("name=") {
                return Some(name.trim().to_owned());
            }
        }
        None
    }

    /// Snap confinement shows as the AppArmor label `snap.<name>.<app>`.
    fn snap_name(proc_dir: &str) -> Option<String> {
        let label = std::fs::read_to_string(format!("{proc_dir}/attr/current")).ok()?;
        let label = label
            .trim()
            .trim_end_matches(" (enforce)")
            .trim_end_matches(" (complain)");
        let rest = label.strip_prefix("snap.")?;
        let name = rest.split('.').next()?;
        (!name.is_empty()).then(|| format!("snap.{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_identified() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let uid = keyhaven_proto::paths::current_uid();
        let id = Identity::of_process(uid, pid);
        if cfg!(target_os = "linux") {
            let exe = std::env::current_exe().unwrap();
            assert_eq!(id.executable.as_deref(), exe.to_str());
            assert!(id.describe().contains(exe.to_str().unwrap()));
        }
        assert_eq!(id.app_id, None);
    }

    #[test]
    fn a_wrong_uid_yields_no_identity() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let id = Identity::of_process(keyhaven_proto::paths::current_uid() + 1, pid);
        assert_eq!(id.executable, None);
    }

    #[test]
    fn an_exited_process_yields_no_identity() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        let id = Identity::of_process(keyhaven_proto::paths::current_uid(), pid);
        assert_eq!(id.executable, None);
    }
}
