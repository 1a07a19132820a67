//! The credential key: `provider`, `server_id`, `user_id`, `token_type`.
//!
//! Both ends validate with the same rules; the daemon's check is the one that
//! counts. The text form `provider::server_id::user_id::token_type` writes
//! `%` as `%25` and `:` as `%3A` inside a field, so it round-trips for any
//! valid key, including ids that contain `::`.
//!
//! No field and no label may hold a control character (C0, DEL, C1, line
//! and paragraph separators) or a Unicode bidirectional control (U+061C,
//! U+200E, U+200F, U+202A..U+202E, U+2066..U+2069): printed to a terminal,
//! these reorder or hide what is around them, so that `list` could show one
//! key while another is meant.

use std::fmt;

use crate::pb;

/// The token type used when none is given.
pub const DEFAULT_TOKEN_TYPE: &str = "access_token";

/// Length limits, in bytes of UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    /// `provider` and `token_type`.
    pub const NAME_BYTES: usize = 64;
    /// `server_id` and `user_id`.
    pub const ID_BYTES: usize = 256;
    /// A credential's label.
    pub const LABEL_BYTES: usize = 256;
}

/// Why a key (or label) is not acceptable. Each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The request carried no key at all.
    #[error("key is required")]
    MissingKey,
    /// A required field is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The field, e.g. `key.provider`.
        field: &'static str,
    },
    /// A field is longer than its limit.
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A field holds NUL or another control character.
    #[error("{field} contains a control character (U+{code:04X}) at byte {at}")]
    ControlChar {
        /// The field.
        field: &'static str,
        /// The code point.
        code: u32,
        /// Its byte offset.
        at: usize,
    },
    /// A field holds a Unicode bidirectional control, which can make
    /// printed text read differently from what it is.
    #[error("{field} contains a bidirectional control character (U+{code:04X}) at byte {at}")]
    BidiControl {
        /// The field.
        field: &'static str,
        /// The code point.
        code: u32,
        /// Its byte offset.
        at: usize,
    },
    /// A name field holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "{field} may only contain ASCII letters, digits, '.', '_' and '-' (found {found:?} at byte {at})"
    )]
    BadNameChar {
        /// The field.
        field: &'static str,
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// The text form does not have four `::`-separated fields.
    #[error("a key is written provider::server_id::user_id::token_type ({0})")]
    Malformed(&'static str),
}

/// A validated credential key. Construct it with [`CanonicalKey::new`],
/// [`CanonicalKey::from_pb`] or [`CanonicalKey::parse`]; an empty token type
/// becomes [`DEFAULT_TOKEN_TYPE`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CanonicalKey {
    provider: String,
    server_id: String,
    user_id: String,
    token_type: String,
}

/// A key checked by the same rules as a [`CanonicalKey`], borrowing its four
/// fields, e.g. from the bytes of a request: a key that is only looked up
/// needs no copy of its strings. [`KeyRef::to_owned`] makes the
/// `CanonicalKey`; [`CanonicalKey::view`] goes the other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    provider: &'a str,
    server_id: &'a str,
    user_id: &'a str,
    token_type: &'a str,
}

impl<'a> KeyRef<'a> {
    /// Validates the four fields like [`CanonicalKey::new`]; an empty
    /// `token_type` is the default.
    pub fn new(
        provider: &'a str,
        server_id: &'a str,
        user_id: &'a str,
        token_type: &'a str,
    ) -> Result<Self, KeyError> {
        let token_type = if token_type.is_empty() {
            DEFAULT_TOKEN_TYPE
        } else {
            token_type
        };
        check_fields(provider, server_id, user_id, token_type, Bidi::Refuse)?;
        Ok(Self {
            provider,
            server_id,
            user_id,
            token_type,
        })
    }

    /// The owned key.
    pub fn to_owned(self) -> CanonicalKey {
        CanonicalKey {
            provider: self.provider.to_owned(),
            server_id: self.server_id.to_owned(),
            user_id: self.user_id.to_owned(),
            token_type: self.token_type.to_owned(),
        }
    }

    /// The four fields in order: provider, server id, user id, token type.
    pub fn fields(self) -> [&'a str; 4] {
        [self.provider, self.server_id, self.user_id, self.token_type]
    }

    /// `provider`.
    pub fn provider(self) -> &'a str {
        self.provider
    }
    /// `server_id`; may be empty.
    pub fn server_id(self) -> &'a str {
        self.server_id
    }
    /// `user_id`; may be empty.
    pub fn user_id(self) -> &'a str {
        self.user_id
    }
    /// `token_type`, never empty.
    pub fn token_type(self) -> &'a str {
        self.token_type
    }

    /// The length of [`CanonicalKey::binding_bytes`].
    pub fn binding_len(self) -> usize {
        16 + self.fields().iter().map(|f| f.len()).sum::<usize>()
    }

    /// Appends [`CanonicalKey::binding_bytes`] to `out`.
    pub fn write_binding(self, out: &mut Vec<u8>) {
        for field in self.fields() {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
    }
}

impl PartialEq<CanonicalKey> for KeyRef<'_> {
    fn eq(&self, other: &CanonicalKey) -> bool {
        *self == other.view()
    }
}

/// Hashes the four fields in order, each as a `str`: a [`CanonicalKey`]
/// and any other form of the same key that hashes through this function
/// hash alike, so one can be looked up by the other.
pub fn hash_fields<H: std::hash::Hasher>(fields: [&str; 4], state: &mut H) {
    use std::hash::Hash;
    for field in fields {
        field.hash(state);
    }
}

impl std::hash::Hash for CanonicalKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_fields(self.view().fields(), state);
    }
}

impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_fields(self.fields(), state);
    }
}

impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}::{}::{}::{}",
            escape(self.provider),
            escape(self.server_id),
            escape(self.user_id),
            escape(self.token_type)
        )
    }
}

impl CanonicalKey {
    /// Validates the four fields. `token_type` may be empty (the default).
    pub fn new(
        provider: &str,
        server_id: &str,
        user_id: &str,
        token_type: &str,
    ) -> Result<Self, KeyError> {
        Self::checked(provider, server_id, user_id, token_type, Bidi::Refuse)
    }

    fn checked(
        provider: &str,
        server_id: &str,
        user_id: &str,
        token_type: &str,
        bidi: Bidi,
    ) -> Result<Self, KeyError> {
        let token_type = if token_type.is_empty() {
            DEFAULT_TOKEN_TYPE
        } else {
            token_type
        };
        check_fields(provider, server_id, user_id, token_type, bidi)?;
        Ok(Self {
            provider: provider.to_owned(),
            server_id: server_id.to_owned(),
            user_id: user_id.to_owned(),
            token_type: token_type.to_owned(),
        })
    }

    /// Validates a wire key; `None` (no key in the request) is an error.
    pub fn from_pb(key: Option<&pb::CredentialKey>) -> Result<Self, KeyError> {
        let key = key.ok_or(KeyError::MissingKey)?;
        Self::new(&key.provider, &key.server_id, &key.user_id, &key.token_type)
    }

    /// A key that was already accepted once: a row of a store, or a key the
    /// daemon sends back. The same rules as [`CanonicalKey::new`], except
    /// that bidirectional controls, which older versions accepted, are let
    /// through, so such a key can still be listed, read and deleted. Print
    /// it only escaped.
    pub fn from_stored(
        provider: &str,
        server_id: &str,
        user_id: &str,
        token_type: &str,
    ) -> Result<Self, KeyError> {
        Self::checked(provider, server_id, user_id, token_type, Bidi::Allow)
    }

    /// [`CanonicalKey::from_stored`] for a wire key.
    pub fn from_pb_stored(key: Option<&pb::CredentialKey>) -> Result<Self, KeyError> {
        let key = key.ok_or(KeyError::MissingKey)?;
        Self::from_stored(&key.provider, &key.server_id, &key.user_id, &key.token_type)
    }

    /// The wire form.
    pub fn to_pb(&self) -> pb::CredentialKey {
        pb::CredentialKey {
            provider: self.provider.clone(),
            server_id: self.server_id.clone(),
            user_id: self.user_id.clone(),
            token_type: self.token_type.clone(),
        }
    }

    /// The wire form, without copying the strings.
    pub fn into_pb(self) -> pb::CredentialKey {
        pb::CredentialKey {
            provider: self.provider,
            server_id: self.server_id,
            user_id: self.user_id,
            token_type: self.token_type,
        }
    }

    /// Parses the text form `provider::server_id::user_id::token_type`; the
    /// last field may be left out (`provider::server_id::user_id`).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let parts: Vec<&str> = text.split("::").collect();
        let (p, s, u, t) = match parts.as_slice() {
            [p, s, u] => (*p, *s, *u, ""),
            [p, s, u, t] => (*p, *s, *u, *t),
            _ => return Err(KeyError::Malformed("expected 3 or 4 fields")),
        };
        let decode = |f: &str| unescape(f).ok_or(KeyError::Malformed("bad %-escape"));
        Self::new(&decode(p)?, &decode(s)?, &decode(u)?, &decode(t)?)
    }

    /// The key, borrowed.
    pub fn view(&self) -> KeyRef<'_> {
        KeyRef {
            provider: &self.provider,
            server_id: &self.server_id,
            user_id: &self.user_id,
            token_type: &self.token_type,
        }
    }

    /// `provider`, e.g. `jellyfin`.
    pub fn provider(&self) -> &str {
        &self.provider
    }
    /// `server_id`; may be empty.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }
    /// `user_id`; may be empty.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
    /// `token_type`, never empty.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// An unambiguous byte encoding (each field length-prefixed), used as
    /// associated data when sealing so a sealed secret is bound to its key.
    pub fn binding_bytes(&self) -> Vec<u8> {
        let key = self.view();
        let mut out = Vec::with_capacity(key.binding_len());
        key.write_binding(&mut out);
        out
    }
}

impl fmt::Display for CanonicalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

/// Checks a credential label: at most [`Limits::LABEL_BYTES`], no control
/// characters.
pub fn check_label(label: &str) -> Result<(), KeyError> {
    check_text("label", label, Limits::LABEL_BYTES)
}

/// Whether a check lets bidirectional controls through (only for what was
/// stored before they were refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bidi {
    Refuse,
    Allow,
}

/// The four fields' rules (the token type already defaulted).
fn check_fields(
    provider: &str,
    server_id: &str,
    user_id: &str,
    token_type: &str,
    bidi: Bidi,
) -> Result<(), KeyError> {
    check_name("key.provider", provider)?;
    check_text_with("key.server_id", server_id, Limits::ID_BYTES, bidi)?;
    check_text_with("key.user_id", user_id, Limits::ID_BYTES, bidi)?;
    check_name("key.token_type", token_type)
}

pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), KeyError> {
    if value.is_empty() {
        return Err(KeyError::Empty { field });
    }
    check_len(field, value, Limits::NAME_BYTES)?;
    // Bytes suffice: every byte of a non-ASCII character fails the test,
    // and the first one starts that character. A name that passes has no
    // control character; one that fails is told about its first control
    // character, if it has one, before its first other bad character.
    match value
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        Some(at) => {
            check_controls(field, value, Bidi::Refuse)?;
            Err(KeyError::BadNameChar {
                field,
                found: value[at..].chars().next().unwrap_or('\u{fffd}'),
                at,
            })
        }
        None => Ok(()),
    }
}

fn check_text_with(
    field: &'static str,
    value: &str,
    max: usize,
    bidi: Bidi,
) -> Result<(), KeyError> {
    check_len(field, value, max)?;
    check_controls(field, value, bidi)
}

/// Checks free text: at most `max` bytes, no control or bidi characters.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), KeyError> {
    check_text_with(field, value, max, Bidi::Refuse)
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), KeyError> {
    if value.len() > max {
        return Err(KeyError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn check_controls(field: &'static str, value: &str, bidi: Bidi) -> Result<(), KeyError> {
    // Printable ASCII, what almost every key is, has none of them.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    // Cc covers NUL, C0, DEL and C1; line and paragraph separators would break
    // line-oriented output too.
    for (at, c) in value.char_indices() {
        let code = u32::from(c);
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            return Err(KeyError::ControlChar { field, code, at });
        }
        if bidi == Bidi::Refuse && is_bidi_control(c) {
            return Err(KeyError::BidiControl { field, code, at });
        }
    }
    Ok(())
}

/// The Unicode bidirectional formatting characters: ALM (U+061C), LRM and
/// RLM (U+200E, U+200F), the embeddings and overrides U+202A..U+202E and
/// the isolates U+2066..U+2069.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

fn escape(field: &str) -> String {
    field.replace('%', "%25").replace(':', "%3A")
}

fn unescape(field: &str) -> Option<String> {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 3)?;
        match code {
            "25" => out.push('%'),
            "3A" | "3a" => out.push(':'),
            _ => return None,
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, s: &str, u: &str, t: &str) -> CanonicalKey {
        CanonicalKey::new(p, s, u, t).unwrap()
    }

    #[test]
    fn a_bad_name_is_told_its_first_control_character_before_other_bad_ones() {
        let err = |provider: &str| CanonicalKey::new(provider, "", "", "").unwrap_err();
        assert!(matches!(
            err("jelly fin\n"),
            KeyError::ControlChar {
                field: "key.provider",
                code: 10,
                at: 9
            }
        ));
        assert!(matches!(
            err("a\u{202E}b"),
            KeyError::BidiControl {
                field: "key.provider",
                code: 0x202E,
                at: 1
            }
        ));
        assert!(matches!(
            err("jelly fin"),
            KeyError::BadNameChar {
                field: "key.provider",
                found: ' ',
                at: 5
            }
        ));
        assert!(matches!(
            err("jellyfin/é"),
            KeyError::BadNameChar {
                field: "key.provider",
                found: '/',
                at: 8
            }
        ));
        let token = CanonicalKey::new("p", "", "", "x\u{7f}").unwrap_err();
        assert!(matches!(
            token,
            KeyError::ControlChar {
                field: "key.token_type",
                code: 0x7f,
                at: 1
            }
        ));
    }

    #[test]
    fn a_borrowed_key_is_judged_exactly_like_an_owned_one() {
        let long = "x".repeat(Limits::ID_BYTES + 1);
        let cases = [
            ("jellyfin", "srv-1", "user-1", ""),
            ("jellyfin", "srv-1", "user-1", "refresh_token"),
            ("emby", "ünïcödé 服务器", "", "x"),
            ("", "s", "u", ""),
            ("bad name", "s", "u", ""),
            ("jellyfin", "tab\there", "u", ""),
            ("jellyfin", "s", "del\u{7f}", ""),
            ("jellyfin", "s", "rlo\u{202e}", ""),
            ("jellyfin", "s", "c1\u{85}", ""),
            ("jellyfin", "ls\u{2028}", "u", ""),
            ("jellyfin", long.as_str(), "u", ""),
            ("jellyfin", "s", "u", "bad/type"),
        ];
        for (p, s, u, t) in cases {
            let owned = CanonicalKey::new(p, s, u, t);
            let borrowed = KeyRef::new(p, s, u, t);
            assert_eq!(
                format!("{:?}", borrowed.clone().map(KeyRef::to_owned)),
                format!("{owned:?}"),
                "{p:?} {s:?} {u:?} {t:?}"
            );
            if let (Ok(owned), Ok(borrowed)) = (owned, borrowed) {
                assert_eq!(borrowed, owned);
                assert_eq!(owned.view().to_string(), owned.to_string());
                let hash = |k: &dyn Fn(&mut std::hash::DefaultHasher)| {
                    let mut h = std::hash::DefaultHasher::new();
                    k(&mut h);
                    std::hash::Hasher::finish(&h)
                };
                assert_eq!(
                    hash(&|h| std::hash::Hash::hash(&owned, h)),
                    hash(&|h| std::hash::Hash::hash(&borrowed, h)),
                    "a key hashes alike owned or borrowed"
                );
            }
        }
        assert_eq!(
            key("plex", "", "", "").into_pb(),
            key("plex", "", "", "").to_pb()
        );
    }

    #[test]
    fn empty_token_type_defaults_to_access_token() {
        assert_eq!(key("jellyfin", "s", "u", "").token_type(), "access_token");
    }

    #[test]
    fn text_form_round_trips_odd_ids() {
        let cases = [
            key("jellyfin", "srv-1", "user-1", ""),
            key("plex", "", "", "api_key"),
            key("jellyfin", "a::b", "c:d%3A", "refresh_token"),
            key("emby", "ünïcödé 服务器", "%%", "x"),
            key("jellyfin", "", "user::", ""),
        ];
        for k in cases {
            let text = k.to_string();
            assert_eq!(CanonicalKey::parse(&text).unwrap(), k, "{text}");
        }
        assert_eq!(
            key("jellyfin", "srv-1", "user-1", "").to_string(),
            "jellyfin::srv-1::user-1::access_token"
        );
    }

    #[test]
    fn parse_rejects_malformed_text() {
        for bad in ["jellyfin", "a::b", "a::b::c::d::e", "a::%zz::c", "a::%2::c"] {
            assert!(CanonicalKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_violation_names_its_field() {
        let long_id = "x".repeat(Limits::ID_BYTES + 1);
        let long_name = "x".repeat(Limits::NAME_BYTES + 1);
        let cases: [(&str, &str, &str, &str, &str); 8] = [
            ("", "s", "u", "", "key.provider must not be empty"),
            (&long_name, "s", "u", "", "key.provider is 65 bytes"),
            ("jelly fin", "s", "u", "", "key.provider may only contain"),
            ("jellyfin", &long_id, "u", "", "key.server_id is 257 bytes"),
            (
                "jellyfin",
                "s\0x",
                "u",
                "",
                "key.server_id contains a control character (U+0000)",
            ),
            (
                "jellyfin",
                "s",
                "u\n",
                "",
                "key.user_id contains a control character (U+000A)",
            ),
            (
                "jellyfin",
                "s",
                "u\u{85}",
                "",
                "key.user_id contains a control character (U+0085)",
            ),
            (
                "jellyfin",
                "s",
                "u",
                "tok/en",
                "key.token_type may only contain",
            ),
        ];
        for (p, s, u, t, want) in cases {
            let err = CanonicalKey::new(p, s, u, t).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let id = "é".repeat(Limits::ID_BYTES / 2);
        let name = "n".repeat(Limits::NAME_BYTES);
        assert!(CanonicalKey::new(&name, &id, &id, &name).is_ok());
    }

    #[test]
    fn binding_bytes_differ_when_fields_shift() {
        let a = key("p", "ab", "c", "t").binding_bytes();
        let b = key("p", "a", "bc", "t").binding_bytes();
        assert_ne!(a, b);
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label("Living room").is_ok());
        assert!(check_label("bad\u{7}").is_err());
        assert!(check_label(&"l".repeat(Limits::LABEL_BYTES + 1)).is_err());
    }

    #[test]
    fn bidi_controls_are_refused_in_ids_and_labels_naming_field_and_code_point() {
        for c in [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let id = format!("srv{c}1");
            let err = CanonicalKey::new("jellyfin", &id, "u", "").unwrap_err();
            let want = format!(
                "key.server_id contains a bidirectional control character (U+{:04X}) at byte 3",
                u32::from(c)
            );
            assert_eq!(err.to_string(), want);
            let err = CanonicalKey::new("jellyfin", "s", &id, "").unwrap_err();
            assert!(
                err.to_string().starts_with("key.user_id contains a bidi"),
                "{err}"
            );
            let err = check_label(&id).unwrap_err();
            assert!(
                err.to_string().starts_with("label contains a bidi"),
                "{err}"
            );
        }
        // Right-to-left text itself is fine; only the invisible controls are not.
        assert!(CanonicalKey::new("jellyfin", "خادم", "משתמש", "").is_ok());
        assert!(check_label("Salon \u{200B} TV").is_ok());
        // Keys stored before the rule stay readable, and nothing else is let in.
        let old = CanonicalKey::from_stored("jellyfin", "a\u{202E}b", "u", "").unwrap();
        assert_eq!(old.server_id(), "a\u{202E}b");
        assert!(CanonicalKey::from_stored("jellyfin", "a\u{202E}\u{7}", "u", "").is_err());
        assert!(CanonicalKey::from_stored("jelly\u{202E}fin", "a", "u", "").is_err());
    }
}
