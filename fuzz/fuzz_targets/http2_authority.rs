//! The HTTP/2 read-side rewriter every connection passes through: arbitrary
//! bytes fed in arbitrary chunks never panic, and output stays bounded by
//! what went in plus the rewrites.
#![no_main]

use keyhaven_daemon::net::authority::AuthorityFixer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fixer = AuthorityFixer::new();
    let mut fed = 0usize;
    let mut out = 0usize;
    let mut rest = data;
    while !rest.is_empty() {
        let n = (usize::from(rest[0]) % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        fed += chunk.len();
        if fixer.feed(chunk).is_err() {
            return;
        }
        out += fixer.take_output(usize::MAX).len();
        rest = tail;
    }
    fixer.finish();
    out += fixer.take_output(usize::MAX).len();
    assert!(out <= fed * 4 + 1024, "output {out} for input {fed}");
});
