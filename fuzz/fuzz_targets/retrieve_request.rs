//! Decoding a RetrieveRequest off the wire and reading its key where it
//! lies, as the daemon does: never panics, and a key it accepts is the one
//! a generated decoder would have found.
#![no_main]

use keyhaven_proto::{CanonicalKey, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::RetrieveRequest::decode(data) else {
        return;
    };
    let Ok(key) = req.key_ref() else {
        return;
    };
    // The same bytes decoded into the generated CredentialKey.
    let raw = req.received_key.as_deref().unwrap_or_default();
    let wire = pb::CredentialKey::decode(raw).expect("a key read in place also decodes");
    let owned = CanonicalKey::from_pb(Some(&wire)).expect("and passes the same rules");
    assert_eq!(key, owned);
});
