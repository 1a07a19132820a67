//! Decoding a StoreRequest off the wire and validating its key and label,
//! as the daemon does first: never panics, and the redacted Debug output
//! never shows the secret.
#![no_main]

use keyhaven_proto::{CanonicalKey, key::check_label, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::StoreRequest::decode(data) else {
        return;
    };
    let _ = CanonicalKey::from_pb(req.key.as_ref());
    if let Some(label) = &req.label {
        let _ = check_label(label);
    }
    if req.secret.len() >= 8 {
        let shown = format!("{req:?}");
        let needle = String::from_utf8_lossy(&req.secret).into_owned();
        if !needle.contains('\u{fffd}') && needle.chars().all(|c| c.is_ascii_alphanumeric()) {
            assert!(!shown.contains(&needle), "Debug shows the secret");
        }
    }
});
