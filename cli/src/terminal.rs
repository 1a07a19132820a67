//! What the CLI writes for people: text that came from the daemon or another
//! program (executable paths, labels, keys, details, error messages) is made
//! inert before it reaches a terminal, and a closed stdout ends the command
//! quietly.
//!
//! Inert means that every control character (C0, DEL, C1), which is how
//! escape sequences (`ESC [ ...`, OSC `ESC ] ... BEL`) start, and every
//! Unicode bidirectional control (U+061C, U+200E, U+200F, U+202A..U+202E,
//! U+2066..U+2069), plus the line and paragraph separators, is written as
//! a visible escape: `\x1b`, `\u{202e}`. Everything else, including
//! right-to-left text itself, is written as it is. JSON output is not
//! touched: it stays exact JSON (serde_json already escapes control
//! characters inside strings).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use keyhaven_proto::key::is_bidi_control;

/// `text` with every character that could steer a terminal escaped.
pub fn inert(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Standard output for one command.
pub struct Out {
    inner: io::StdoutLock<'static>,
}

impl Out {
    /// Locks stdout for the command.
    pub fn stdout() -> Self {
        Self {
            inner: io::stdout().lock(),
        }
    }

    /// One line for people, made inert, written at once.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        let text = inert(text);
        self.inner.write_all(text.as_bytes())?;
        self.inner.write_all(b"\n")?;
        self.inner.flush()
    }

    /// One line of JSON (or another exact format), written as it is.
    pub fn exact_line(&mut self, text: &str) -> io::Result<()> {
        self.inner.write_all(text.as_bytes())?;
        self.inner.write_all(b"\n")?;
        self.inner.flush()
    }

    /// Bytes written as they are (a secret, a completion script).
    pub fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.inner.flush()
    }
}

/// `keyhaven: <text>` on stderr, made inert. A closed stderr is ignored:
/// there is nobody left to tell.
pub fn report(text: &str) {
    let _ = writeln!(io::stderr().lock(), "keyhaven: {}", inert(text));
}

/// A note for people on stderr (no prefix), made inert.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{}", inert(text));
}

/// `writeln!` for people: formats, makes the text inert, writes it.
macro_rules! outln {
    ($out:expr) => {
        $out.line("")
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(&format!($($arg)*))
    };
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bidi_controls_become_visible_and_the_rest_stays() {
        let cases = [
            ("/usr/bin/jellyfin", "/usr/bin/jellyfin"),
            ("/tmp/\u{1b}[31mred", "/tmp/\\x1b[31mred"),
            ("/tmp/\u{1b}]0;pwned\u{7}x", "/tmp/\\x1b]0;pwned\\x07x"),
            ("a\u{9b}31mb", "a\\u{9b}31mb"),
            ("tab\there\r\n", "tab\\x09here\\x0d\\x0a"),
            ("del\u{7f}", "del\\x7f"),
            ("evil\u{202e}gpj.exe", "evil\\u{202e}gpj.exe"),
            (
                "\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}",
                "\\u{2066}\\u{2069}\\u{200e}\\u{200f}\\u{61c}",
            ),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("שלום ünï 服务器", "שלום ünï 服务器"),
        ];
        for (raw, want) in cases {
            assert_eq!(inert(raw), want, "{raw:?}");
        }
        assert!(matches!(inert("plain"), Cow::Borrowed(_)));
    }
}
