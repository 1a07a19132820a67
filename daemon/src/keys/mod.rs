//! The key layer: where the data key lives ([`custody`]: systemd
//! credential, OS keyring through [`keyring`], key file) and the
//! [`vault`] that finds it at start-up, waits for it while the store is
//! locked, attaches it to the store, rotates it and moves it between tiers.

pub mod custody;
pub mod keyring;
pub(crate) mod vault;
