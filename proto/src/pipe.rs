//! Windows: whose process is at the other end of the named pipe.
//!
//! Both ends compare token user SIDs: the daemon refuses a client whose
//! process runs as another user (`GetNamedPipeClientProcessId` ->
//! `OpenProcess` -> `OpenProcessToken` -> `GetTokenInformation(TokenUser)`),
//! and the client refuses a server that is not its own user's, so that a pipe
//! another user created first under the same name gets no token.
//! `ImpersonateNamedPipeClient` is not used: it acts per thread and on the
//! last message read, which does not fit an async HTTP/2 server.
#![allow(unsafe_code)] // Win32 calls; each block says why it is sound.

use std::fmt;
use std::io;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, LocalFree};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
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
