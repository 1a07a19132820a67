//! A credential's attributes: non-secret names and values that say what it
//! is for (which server, which user, which device id), so another app can
//! find the user's existing login and reuse it.
//!
//! Rules, checked by both ends (the daemon's check is the one that counts):
//! at most [`MAX_ATTRIBUTES`] per credential; a name is 1 to 64 ASCII
//! letters, digits, `.`, `_` or `-` (the rule of a provider); a value is at
//! most [`MAX_VALUE_BYTES`] of UTF-8 without control or bidirectional
//! control characters, and may be empty.
//!
//! Attributes are stored unsealed, like a Secret Service item's
//! attributes: they are what a search matches on (SECURITY.md).

use std::collections::BTreeMap;

use crate::key::{self, KeyError, Limits};

/// A credential's attributes, in name order.
pub type Attributes = BTreeMap<String, String>;

/// At most this many attributes per credential.
pub const MAX_ATTRIBUTES: usize = 32;
/// A value's limit in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 1024;
/// A name's limit in bytes.
pub const MAX_NAME_BYTES: usize = Limits::NAME_BYTES;

/// Where the server is: `https://jellyfin.example.org`.
pub const SERVER_URL: &str = "server_url";
/// The server's name for people: `Living-room Jellyfin`.
pub const SERVER_NAME: &str = "server_name";
/// The account's name on the server (the key's `user_id` is its id).
pub const USER_NAME: &str = "user_name";
/// The device id the token was issued to. Jellyfin ties a session to it: an
/// app reusing the token sends this id, and an app that logs in again under
/// the same id revokes the other app's token.
pub const DEVICE_ID: &str = "device_id";
/// The app that logged in: `JellyTau`.
pub const CLIENT_NAME: &str = "client_name";

/// The well-known names, documented in `docs/integrating.md`.
pub const WELL_KNOWN: [&str; 5] = [SERVER_URL, SERVER_NAME, USER_NAME, DEVICE_ID, CLIENT_NAME];

/// Why a set of attributes is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// More than [`MAX_ATTRIBUTES`].
    #[error("{count} attributes given; the limit is {MAX_ATTRIBUTES}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A name breaks the name rule. The name itself is not repeated: it may
    /// hold characters a terminal would act on.
    #[error("attribute name #{position} (in name order): {reason}")]
    Name {
        /// 1-based position in name order.
        position: usize,
        /// The rule broken.
        reason: KeyError,
    },
    /// A value breaks the value rule.
    #[error("attribute {name}: {reason}")]
    Value {
        /// The (valid) name.
        name: String,
        /// The rule broken.
        reason: KeyError,
    },
}

/// Checks `attributes` against the rules above.
pub fn check(attributes: &Attributes) -> Result<(), AttributeError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(AttributeError::TooMany {
            count: attributes.len(),
        });
    }
    for (i, (name, value)) in attributes.iter().enumerate() {
        check_name(name).map_err(|reason| AttributeError::Name {
            position: i + 1,
            reason,
        })?;
        key::check_text("value", value, MAX_VALUE_BYTES).map_err(|reason| {
            AttributeError::Value {
                name: name.clone(),
                reason,
            }
        })?;
    }
    Ok(())
}

/// Checks one attribute name.
pub fn check_name(name: &str) -> Result<(), KeyError> {
    key::check_name("name", name)
}

/// Parses the text form `name=value` (the value may contain `=` and may be
/// empty), as `keyhaven store --attr` takes it.
pub fn parse_pair(text: &str) -> Result<(String, String), KeyError> {
    let (name, value) = text
        .split_once('=')
        .ok_or(KeyError::Malformed("an attribute is written name=value"))?;
    check_name(name)?;
    key::check_text("value", value, MAX_VALUE_BYTES)?;
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn accepts_the_limits_inclusive() {
        let mut a: Attributes = (0..MAX_ATTRIBUTES)
            .map(|i| (format!("n{i}"), "v".repeat(MAX_VALUE_BYTES)))
            .collect();
        a.insert("x".repeat(MAX_NAME_BYTES), String::new());
        a.remove("n0");
        assert_eq!(check(&a), Ok(()));
        assert_eq!(
            check(&attrs(&[(SERVER_URL, "https://h.example:8096/jf?a=b")])),
            Ok(())
        );
    }

    #[test]
    fn refuses_what_breaks_a_rule() {
        let too_many: Attributes = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("n{i}"), String::new()))
            .collect();
        let cases = [
            (too_many, "33 attributes given; the limit is 32"),
            (
                attrs(&[("", "v")]),
                "attribute name #1 (in name order): name must not be empty",
            ),
            (
                attrs(&[("a", ""), ("b c", "v")]),
                "attribute name #2 (in name order): name may only contain",
            ),
            (
                attrs(&[("\u{202e}x", "v")]),
                "attribute name #1 (in name order): name contains a bidirectional control",
            ),
            (
                attrs(&[("x".repeat(65).as_str(), "v")]),
                "attribute name #1 (in name order): name is 65 bytes",
            ),
            (
                attrs(&[("server_name", "a\nb")]),
                "attribute server_name: value contains a control character (U+000A)",
            ),
            (
                attrs(&[("server_name", "a\u{202e}b")]),
                "attribute server_name: value contains a bidirectional control",
            ),
            (
                attrs(&[("v", &"x".repeat(MAX_VALUE_BYTES + 1))]),
                "attribute v: value is 1025 bytes; the limit is 1024",
            ),
        ];
        for (a, want) in cases {
            let err = check(&a).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn parses_name_value_pairs() {
        assert_eq!(
            parse_pair("server_url=https://h/?a=b").unwrap(),
            ("server_url".to_owned(), "https://h/?a=b".to_owned())
        );
        assert_eq!(parse_pair("device_id=").unwrap().1, "");
        assert!(parse_pair("no-equals").is_err());
        assert!(parse_pair("bad name=v").is_err());
        assert!(parse_pair("n=a\u{1b}[2J").is_err());
    }
}
