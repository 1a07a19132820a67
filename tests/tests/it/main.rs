//! keyhaven's end-to-end tests: one test binary, a module per area (as
//! nextest and most large workspaces do), so the whole stack is linked once
//! instead of once per file.
//!
//! Run one area with `cargo test -p keyhaven-tests --test it <module>::`,
//! e.g. `--test it durability::`. The harness (starting daemons, the CLI in
//! a private HOME, a real gnome-keyring, skipping loudly) is the
//! `keyhaven-tests` library in `tests/src/lib.rs`.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod activation;
mod admin_audit;
mod attributes;
mod autostart;
mod backup;
mod bounds;
mod cli;
mod client_trust;
mod compat;
mod custody;
mod durability;
mod faults_table;
mod group_commit;
mod hostile;
mod import;
mod key_crash;
mod keyring_store;
mod layers;
mod legacy;
mod legacy_secret_service;
mod load;
mod other_languages;
mod packaging;
mod proto_compat;
mod secret_service;
mod service;
mod sharing;
mod standard_services;
mod store;
mod terminal;
