//! Test helper for the Windows run under Wine (`.ci/wine/run.sh`): writes a
//! legacy app's keyring entry the way JellyTau and Reel wrote theirs, with
//! keyring-rs' `set_password` on the Windows Credential Manager (so the
//! token is stored as UTF-16LE under the target name `{user}.{service}`).
//!
//!     seed_legacy SERVICE USER < token
//!
//! The token is read from stdin (one trailing newline dropped), never from
//! the command line. Windows only; elsewhere it says so and exits 2.

#[cfg(windows)]
fn main() -> std::process::ExitCode {
    use std::io::Read;

    use keyring_core::api::CredentialStoreApi;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [service, user] = args.as_slice() else {
        eprintln!("usage: seed_legacy SERVICE USER < token");
        return std::process::ExitCode::from(2);
    };
    let mut token = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut token) {
        eprintln!("seed_legacy: cannot read the token: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let token = token.strip_suffix('\n').unwrap_or(&token);
    let token = token.strip_suffix('\r').unwrap_or(token);
    let result = windows_native_keyring_store::Store::new()
        .and_then(|store| store.build(service, user, None))
        .and_then(|entry| entry.set_password(token));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed_legacy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(windows))]
fn main() -> std::process::ExitCode {
    eprintln!("seed_legacy writes Windows Credential Manager entries; it runs on Windows only");
    std::process::ExitCode::from(2)
}
