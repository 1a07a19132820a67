//! The credential key's text form and field rules: parsing never panics,
//! and whatever parses prints back to text that parses to the same key.
#![no_main]

use keyhaven_proto::CanonicalKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = CanonicalKey::parse(text) {
        let again = CanonicalKey::parse(&key.to_string()).expect("printed keys parse");
        assert_eq!(again, key);
        assert!(!key.provider().is_empty() && !key.token_type().is_empty());
    }
    // The four fields given directly, split on NUL.
    let parts: Vec<&str> = text.splitn(4, '\0').collect();
    if let [p, s, u, t] = parts.as_slice()
        && let Ok(key) = CanonicalKey::new(p, s, u, t)
    {
        assert_eq!(CanonicalKey::parse(&key.to_string()).expect("round trip"), key);
    }
});
