//! Reading one line from the terminal with echo turned off, for the
//! secret prompt of `keyhaven store`: termios on Unix, the console mode on
//! Windows. Echo is restored even when reading fails.

use keyhaven::Secret;

/// Reads one line from stdin (a terminal) without echoing it.
#[cfg(unix)]
pub fn read_line_no_echo() -> std::io::Result<Secret> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    read?;
    restored?;
    Ok(Secret::from(line))
}

/// Reads one line from the console without echoing it.
#[cfg(windows)]
#[allow(unsafe_code)] // console mode calls on this process's stdin handle
pub fn read_line_no_echo() -> std::io::Result<Secret> {
    use windows_sys::Win32::System::Console::{
        ENABLE_ECHO_INPUT, GetConsoleMode, GetStdHandle, STD_INPUT_HANDLE, SetConsoleMode,
    };
    // SAFETY: GetStdHandle has no preconditions; the handle is not closed.
    let handle = unsafe { GetStdHandle(STD_INPUT_HANDLE) };
    let mut saved = 0;
    // SAFETY: `handle` is this process's stdin; `saved` receives the mode.
    if unsafe { GetConsoleMode(handle, &mut saved) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; only the echo bit changes.
    if unsafe { SetConsoleMode(handle, saved & !ENABLE_ECHO_INPUT) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    // SAFETY: restores the mode read above.
    let restored = unsafe { SetConsoleMode(handle, saved) };
    read?;
    if restored == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Secret::from(line))
}
