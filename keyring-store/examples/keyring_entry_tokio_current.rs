//! The same app inside `#[tokio::main(flavor = "current_thread")]`: the
//! keyring calls block the runtime's only thread, and still finish, as the
//! store's work runs on a thread of its own.
//!
//! ```text
//! cargo run -p keyhaven-keyring-store --example keyring_entry_tokio_current
//! ```

use std::process::ExitCode;

#[path = "common/walkthrough.rs"]
mod walkthrough;

#[tokio::main(flavor = "current_thread")]
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
        tokio::runtime::RuntimeFlavor::CurrentThread
    );
    walkthrough::main()
}
