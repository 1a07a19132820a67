//! [`Secret`]: token bytes that are wiped from memory when dropped and never
//! printed.

use std::fmt;

use zeroize::Zeroizing;

/// What `Debug` and `Display` print in place of a secret.
pub const REDACTED: Redacted = Redacted;

/// Prints `[REDACTED]`; used in hand-written `Debug` impls.
#[derive(Clone, Copy)]
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A token or password. The bytes are zeroized on drop, `Debug` and `Display`
/// print `[REDACTED]`, and the only way to see them is [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`; they are wiped when the secret is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text, if it is valid UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the secret has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves the bytes out into a plain `Vec` (for handing to the wire
    /// encoder). The caller becomes responsible for them.
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self::new(text.as_bytes().to_vec())
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self::new(text.into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED:?}, {} bytes)", self.0.len())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&REDACTED, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_bytes() {
        let s = Secret::from("hunter2-canary");
        assert_eq!(s.expose(), b"hunter2-canary");
        for text in [format!("{s:?}"), format!("{s}"), format!("{s:#?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("[REDACTED]"), "{text}");
        }
    }

    #[test]
    fn into_vec_moves_the_bytes_out() {
        let s = Secret::from("abc");
        assert_eq!(s.into_vec(), b"abc");
    }
}
