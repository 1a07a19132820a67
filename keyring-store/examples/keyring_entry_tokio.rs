//! The same app inside `#[tokio::main]` (a multi-thread runtime): the
//! synchronous keyring calls are made straight from the async `main`, where
//! a store that blocks on a runtime of its own would panic.
//!
//! ```text
//! cargo run -p keyhaven-keyring-store --example keyring_entry_tokio
//! ```

use std::process::ExitCode;

#[path = "common/walkthrough.rs"]
mod walkthrough;

#[tokio::main]
async fn main() -> ExitCode {
    match keyhaven_keyring_store::Store::new() {
        Ok(store) => keyring_core::set_default_store(store),
        Err(e) => {
            eprintln!("cannot use keyhaven: {e}");
            return ExitCode::FAILURE;
        }
    }
    assert_eq!(
        tokio::runtime::Handle::current().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::MultiThread
    );
    walkthrough::main()
}
