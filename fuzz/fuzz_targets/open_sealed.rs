//! Opening a sealed row with arbitrary nonce and ciphertext bytes (a
//! tampered database): always an error, never a panic, never plaintext.
#![no_main]

use keyhaven_daemon::store::crypto::{DataKey, Sealed};
use keyhaven_proto::CanonicalKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = DataKey::from_bytes(&[7u8; 32]);
    let Ok(cred) = CanonicalKey::new("jellyfin", "srv", "user", "") else {
        return;
    };
    let split = data.first().map_or(0, |b| usize::from(*b) % 32).min(data.len());
    let rest = data.get(1..).unwrap_or_default();
    let split = split.min(rest.len());
    let sealed = Sealed {
        nonce: rest[..split].to_vec(),
        ciphertext: rest[split..].to_vec(),
    };
    assert!(key.open(cred.view(), &sealed).is_err(), "forged ciphertext opened");
});
