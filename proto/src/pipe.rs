//! Windows: who is at the other end of the named pipe.
//!
//! The daemon refuses a client whose process runs as another user
//! (`GetNamedPipeClientProcessId` -> `OpenProcess` -> `OpenProcessToken` ->
//! `GetTokenInformation(TokenUser)`). The client refuses a pipe whose
//! object is owned by another user ([`pipe_owner_sid`]: `GetSecurityInfo`
//! with `OWNER_SECURITY_INFORMATION` on the connected handle), so that a pipe
//! another user created first under the same name gets no token. The owner
//! is the creator's, set by the kernel; a server PID, by contrast, names a
//! process whose token says nothing about who created the pipe.
//! `ImpersonateNamedPipeClient` is not used: it acts per thread and on the
//! last message read, which does not fit an async HTTP/2 server.
//!
//! Stopping: a daemon started without a console (by `keyhaven --autostart`
//! or a logon task) receives no Ctrl-C or console-close event. It therefore
//! also waits on a named event, [`stop_event_name`] of its pipe, created in
//! the session namespace with the default security of the daemon's token
//! (its user, SYSTEM and administrators may signal it); `keyhavend --stop`
//! signals it with [`request_stop`] and waits for the daemon to exit.
#![allow(unsafe_code)] // Win32 calls; each block says why it is sound.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_FILE_NOT_FOUND, HANDLE, LocalFree, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetSecurityInfo, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, IsValidSid, OWNER_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR, PSID, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, EVENT_MODIFY_STATE, GetCurrentProcess, INFINITE, OpenEventW, OpenProcess,
    OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION, SYNCHRONIZATION_SYNCHRONIZE, SetEvent,
    WaitForSingleObject,
};

/// A security identifier, copied out of a token.
#[derive(Clone, PartialEq, Eq)]
pub struct Sid(Vec<u8>);

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({self})")
    }
}

impl fmt::Display for Sid {
    /// The string form, `S-1-5-21-...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wide: *mut u16 = std::ptr::null_mut();
        // SAFETY: self.0 holds a complete SID copied from a token; on success
        // the API allocates a NUL-terminated string that is freed below.
        let ok = unsafe { ConvertSidToStringSidW(self.0.as_ptr().cast_mut().cast(), &mut wide) };
        if ok == 0 || wide.is_null() {
            return f.write_str("S-?");
        }
        // SAFETY: `wide` is NUL-terminated (see above) and read up to the NUL.
        let text = unsafe {
            let mut len = 0;
            while *wide.add(len) != 0 {
                len += 1;
            }
            String::from_utf16_lossy(std::slice::from_raw_parts(wide, len))
        };
        // SAFETY: allocated by ConvertSidToStringSidW with LocalAlloc.
        unsafe { LocalFree(wide.cast()) };
        f.write_str(&text)
    }
}

/// Closes a handle on drop.
struct Owned(HANDLE);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by this module and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// The user SID of this process.
pub fn current_user_sid() -> io::Result<Sid> {
    // SAFETY: the pseudo handle of the current process needs no closing.
    token_user_of(unsafe { GetCurrentProcess() })
}

/// The user SID of process `pid` (needs only limited query rights, which a
/// user has on their own processes).
pub fn user_sid_of_process(pid: u32) -> io::Result<Sid> {
    // SAFETY: plain call; a null result is an error.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    let process = Owned(process);
    token_user_of(process.0)
}

/// The owner SID of the kernel object behind `handle`: for a named pipe,
/// the user who created it (its first instance).
pub fn pipe_owner_sid(handle: std::os::windows::io::BorrowedHandle<'_>) -> io::Result<Sid> {
    use std::os::windows::io::AsRawHandle;
    let mut owner: PSID = std::ptr::null_mut();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `handle` is a live handle borrowed for this call; on success
    // `owner` points into `descriptor`, which the API allocates and which is
    // freed below after the SID is copied out.
    let status = unsafe {
        GetSecurityInfo(
            handle.as_raw_handle(),
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut descriptor,
        )
    };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    // SAFETY: on success `owner` is null or points to a SID inside
    // `descriptor`, still allocated here.
    let sid = unsafe {
        if owner.is_null() || IsValidSid(owner) == 0 {
            None
        } else {
            let len = GetLengthSid(owner) as usize;
            Some(std::slice::from_raw_parts(owner.cast::<u8>(), len).to_vec())
        }
    };
    if !descriptor.is_null() {
        // SAFETY: allocated by GetSecurityInfo with LocalAlloc, freed once.
        unsafe { LocalFree(descriptor) };
    }
    sid.map(Sid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the pipe has no owner in its security descriptor",
        )
    })
}

fn token_user_of(process: HANDLE) -> io::Result<Sid> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a valid process handle; `token` receives a handle.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = Owned(token);
    let mut needed = 0u32;
    // SAFETY: a size query with no buffer; it fails with
    // ERROR_INSUFFICIENT_BUFFER and sets `needed`.
    unsafe { GetTokenInformation(token.0, TokenUser, std::ptr::null_mut(), 0, &mut needed) };
    if needed == 0 {
        return Err(io::Error::last_os_error());
    }
    // u64 elements: TOKEN_USER holds a pointer and must be aligned for it.
    let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
    // SAFETY: `buf` has at least `needed` bytes, suitably aligned.
    let ok = unsafe {
        GetTokenInformation(
            token.0,
            TokenUser,
            buf.as_mut_ptr().cast(),
            needed,
            &mut needed,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID
    // pointer points into the same buffer; the SID is copied out before the
    // buffer is dropped.
    let sid = unsafe {
        let user = &*buf.as_ptr().cast::<TOKEN_USER>();
        let sid = user.User.Sid;
        let len = GetLengthSid(sid) as usize;
        std::slice::from_raw_parts(sid.cast::<u8>(), len).to_vec()
    };
    Ok(Sid(sid))
}

/// The session-local name of the event that stops the daemon serving
/// `pipe`: `Local\keyhaven-stop-<pipe name>`, the pipe's name after
/// `\\.\pipe\` with any further backslash (not allowed in an event name)
/// replaced by `_`.
pub fn stop_event_name(pipe: &Path) -> String {
    let full = pipe.to_string_lossy();
    let name = full
        .get(..9)
        .filter(|p| p.eq_ignore_ascii_case(r"\\.\pipe\"))
        .map_or(&*full, |_| &full[9..]);
    format!(r"Local\keyhaven-stop-{}", name.replace('\\', "_"))
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The daemon's end of the stop event.
pub struct StopEvent(Owned);

// SAFETY: an event handle is a kernel object reference; waiting on it and
// closing it are safe from any thread.
unsafe impl Send for StopEvent {}
// SAFETY: as above; `wait` takes `&self` and the kernel serialises waits.
unsafe impl Sync for StopEvent {}

impl fmt::Debug for StopEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StopEvent")
    }
}

impl StopEvent {
    /// Creates the stop event of `pipe` (auto-reset, not signalled).
    pub fn create(pipe: &Path) -> io::Result<Self> {
        let name = wide(&stop_event_name(pipe));
        // SAFETY: `name` is NUL-terminated and outlives the call; null
        // security attributes mean the token's default security.
        let handle = unsafe { CreateEventW(std::ptr::null(), 0, 0, name.as_ptr()) };
        if handle.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(Owned(handle)))
    }

    /// Blocks until the event is signalled.
    pub fn wait(&self) -> io::Result<()> {
        // SAFETY: the handle is open for the life of `self`.
        match unsafe { WaitForSingleObject(self.0.0, INFINITE) } {
            WAIT_OBJECT_0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// What [`request_stop`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The daemon was asked to stop and has exited.
    Stopped,
    /// No daemon serves this pipe (no stop event exists).
    NotRunning,
}

fn open_event(name: &[u16], access: u32) -> io::Result<Option<Owned>> {
    // SAFETY: `name` is NUL-terminated; a null result is an error.
    let handle = unsafe { OpenEventW(access, 0, name.as_ptr()) };
    if handle.is_null() {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(ERROR_FILE_NOT_FOUND as i32) {
            return Ok(None);
        }
        return Err(err);
    }
    Ok(Some(Owned(handle)))
}

/// Asks the daemon serving `pipe` to stop, as Ctrl-C would (in-flight
/// requests finish), and waits up to `timeout` for it to exit: the event
/// disappears once the daemon's process, its last holder, is gone.
pub fn request_stop(pipe: &Path, timeout: Duration) -> io::Result<StopOutcome> {
    let name = wide(&stop_event_name(pipe));
    let Some(event) = open_event(&name, EVENT_MODIFY_STATE)? else {
        return Ok(StopOutcome::NotRunning);
    };
    // SAFETY: `event` is open with EVENT_MODIFY_STATE.
    if unsafe { SetEvent(event.0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    drop(event);
    let deadline = Instant::now() + timeout;
    loop {
        match open_event(&name, SYNCHRONIZATION_SYNCHRONIZE)? {
            None => return Ok(StopOutcome::Stopped),
            Some(still) => drop(still),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("keyhavend did not exit within {timeout:?} of being asked to stop"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
