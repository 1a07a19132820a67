//! Exit codes of the `keyhaven` CLI, so scripts can tell outcomes apart.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | other error (I/O, internal) |
//! | 2 | bad command line (from the argument parser) |
//! | 3 | not found (no such credential, or it expired) |
//! | 4 | permission denied |
//! | 5 | daemon unavailable (not running, store not open) |
//! | 6 | invalid input (a field or the secret breaks a limit) |
//! | 7 | conflict (compare-and-swap revision mismatch) |
//! | 8 | protocol mismatch (daemon and CLI versions differ) |
//! | 9 | untrusted daemon: the socket is served by another user, or its directory is not private |
//! | 20 | restore: done, but some credentials were skipped (a newer revision is stored) |
//! | 21 | restore: failed (a refused file, or a credential not written) |

/// Success.
pub const OK: u8 = 0;
/// Any error not covered below.
pub const FAILURE: u8 = 1;
/// The command line could not be parsed.
pub const USAGE: u8 = 2;
/// The credential does not exist or has expired.
pub const NOT_FOUND: u8 = 3;
/// The daemon refused the caller, or a file could not be opened.
pub const PERMISSION_DENIED: u8 = 4;
/// The daemon is not running or cannot serve.
pub const UNAVAILABLE: u8 = 5;
/// A field or the secret breaks a limit.
pub const INVALID_INPUT: u8 = 6;
/// A compare-and-swap write lost: the stored revision differs.
pub const CONFLICT: u8 = 7;
/// The daemon speaks another protocol version.
pub const PROTOCOL_MISMATCH: u8 = 8;
/// The socket is served by another user (or its directory is not the
/// user's own and private), so nothing was sent to it.
pub const UNTRUSTED_DAEMON: u8 = 9;
/// `keyhaven restore` finished, but kept some stored credentials whose
/// revision is newer than the file's (rerun with `--overwrite` to replace).
pub const RESTORE_SKIPPED: u8 = 20;
/// `keyhaven restore` refused the file (wrong passphrase or key,
/// truncated, damaged) or could not write some credential.
pub const RESTORE_FAILED: u8 = 21;
