//! An app that used keyring-rs 4, switched to keyhaven with one line:
//! plain `main`, no async runtime of its own.
//!
//! ```text
//! cargo run -p keyhaven-keyring-store --example keyring_entry
//! echo -n s3cret | cargo run -p keyhaven-keyring-store --example keyring_entry -- set my-app alice
//! ```

use std::process::ExitCode;

#[path = "common/walkthrough.rs"]
mod walkthrough;

fn main() -> ExitCode {
    // The one line: every `keyring_core::Entry` now lives in keyhaven.
    match keyhaven_keyring_store::Store::new() {
        Ok(store) => keyring_core::set_default_store(store),
        Err(e) => {
            eprintln!("cannot use keyhaven: {e}");
            return ExitCode::FAILURE;
        }
    }
    walkthrough::main()
}
