//! From a keyring entry's `(service, user)` to the four-field keyhaven key,
//! and back. The rule: a name another app already files its tokens under
//! lands on the key that app's tokens have in keyhaven, and every other
//! name lands on a key of its own that reads back as exactly that name.
//!
//! 1. **Legacy layouts first**, through `keyhaven_proto::legacy::classify`,
//!    the function the daemon's read-through and `keyhaven import` use:
//!    Reel's `reel.{source_id}` / `gnome-reel.{source_id}` and JellyTau's
//!    `jellytau::{server_id}::{user_id}::access_token` (as the user of
//!    service `jellytau`, or as the service). Several names can reach one
//!    key there (`reel.` and `gnome-reel.`, user `token` and
//!    `access_token`), as they do for the read-through.
//! 2. **Everything else**, including a name of a legacy shape that those
//!    rules refuse (`reel.plex` without an account, an ambiguous JellyTau
//!    name), is [`GENERIC_PROVIDER`]`::{service}::{user}::`[`GENERIC_TOKEN_TYPE`],
//!    the service and user escaped (below). The provider contains `_`, which
//!    no legacy name can produce (Reel's provider ends at the first `_`;
//!    JellyTau's is `jellyfin`), so the two groups never share a key, and
//!    the generic group is one-to-one.
//!
//! # Escaping
//!
//! `server_id` and `user_id` refuse control characters, U+2028/U+2029 and
//! the Unicode bidirectional controls (see `keyhaven_proto::key`). Those
//! characters, and `%` itself, are written as `%XX` per UTF-8 byte
//! (upper-case hex); everything else, `:` and `::` included, is kept as it
//! is. Only that form decodes: a field with a lower-case, needless or broken
//! escape is no entry's.
//!
//! # Limits
//!
//! The escaped service and user may each be at most
//! [`Limits::ID_BYTES`] (256) bytes of UTF-8; a longer one is refused with
//! `Error::TooLong`, never cut.

use keyhaven::{CredentialKey, Limits};
use keyhaven_proto::key::is_bidi_control;
use keyhaven_proto::legacy::{KeyringName, Location, classify, keyring_locations};
use keyring_core::Error;

/// The provider of every entry that is not another app's legacy layout.
pub const GENERIC_PROVIDER: &str = "keyring_core";

/// The token type of every entry that is not another app's legacy layout.
pub const GENERIC_TOKEN_TYPE: &str = "secret";

/// Which rule placed an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Reel's layout (`reel.{source_id}`, `gnome-reel.{source_id}`).
    Reel,
    /// JellyTau's layout (`jellytau::{server_id}::{user_id}::access_token`).
    JellyTau,
    /// The generic mapping.
    Generic,
}

/// The keyhaven key for the entry `(service, user)`, and which rule chose
/// it.
///
/// Errors: [`Error::TooLong`] naming `service` or `user` when its escaped
/// form is over [`Limits::ID_BYTES`].
pub fn key_for(service: &str, user: &str) -> Result<(CredentialKey, Rule), Error> {
    let name = KeyringName {
        service: service.to_owned(),
        user: user.to_owned(),
    };
    if let Some((layout, Ok(key))) = classify(&name) {
        let rule = match layout {
            keyhaven_proto::legacy::Layout::Reel => Rule::Reel,
            keyhaven_proto::legacy::Layout::JellyTau => Rule::JellyTau,
        };
        return Ok((key, rule));
    }
    let server_id = escape(service);
    let user_id = escape(user);
    for (field, value) in [("service", &server_id), ("user", &user_id)] {
        if value.len() > Limits::ID_BYTES {
            return Err(Error::TooLong(field.to_owned(), id_limit()));
        }
    }
    let key = CredentialKey::new(GENERIC_PROVIDER, &server_id, &user_id, GENERIC_TOKEN_TYPE)
        // Escaping leaves nothing the key rules refuse, and the lengths were
        // checked: this is a bug if it happens.
        .map_err(|e| Error::Invalid("service and user".to_owned(), e.to_string()))?;
    Ok((key, Rule::Generic))
}

/// The entry name that maps to `key`, if any: the generic one decoded, or
/// the first legacy name (`reel.`, service `jellytau`) that maps back to
/// it. `None` for keys no entry name reaches, such as `plex::srv::u::...`
/// written with the CLI, or a generic-looking key whose fields are not in
/// the escaped form.
pub fn name_for(key: &CredentialKey) -> Option<(String, String)> {
    let candidate = if key.provider() == GENERIC_PROVIDER {
        if key.token_type() != GENERIC_TOKEN_TYPE {
            return None;
        }
        (unescape(key.server_id())?, unescape(key.user_id())?)
    } else {
        keyring_locations(key).into_iter().find_map(|l| match l {
            Location::Exact(name) => Some((name.service, name.user)),
            Location::AnyUserOf(_) => None,
        })?
    };
    // Only a name that maps forward to this very key is its name.
    match key_for(&candidate.0, &candidate.1) {
        Ok((k, _)) if &k == key => Some(candidate),
        _ => None,
    }
}

fn id_limit() -> u32 {
    u32::try_from(Limits::ID_BYTES).unwrap_or(u32::MAX)
}

/// Characters written `%XX`: the escape itself and what an id refuses.
fn needs_escape(c: char) -> bool {
    c == '%' || c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(c)
}

/// The escaped form of a service or user name.
pub fn escape(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if needs_escape(c) {
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The name an escaped field stands for; `None` unless `field` is exactly
/// what [`escape`] writes for it.
pub fn unescape(field: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(field.len());
    let mut rest = field.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2)?;
            let upper = |d: u8| d.is_ascii_digit() || (b'A'..=b'F').contains(&d);
            if !hex.iter().all(|&d| upper(d)) {
                return None;
            }
            let text = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(text, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let text = String::from_utf8(bytes).ok()?;
    (escape(&text) == field).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(key: &CredentialKey) -> (&str, &str, &str, &str) {
        (
            key.provider(),
            key.server_id(),
            key.user_id(),
            key.token_type(),
        )
    }

    fn key(service: &str, user: &str) -> CredentialKey {
        key_for(service, user).unwrap().0
    }

    #[test]
    fn legacy_names_land_where_the_read_through_and_import_put_them() {
        let cases = [
            (
                "reel.plex_123",
                "token",
                ("plex", "", "123", "access_token"),
                Rule::Reel,
            ),
            (
                "gnome-reel.plex_123",
                "token",
                ("plex", "", "123", "access_token"),
                Rule::Reel,
            ),
            (
                "reel.jellyfin_abc",
                "api_key",
                ("jellyfin", "", "abc", "api_key"),
                Rule::Reel,
            ),
            (
                "jellytau",
                "jellytau::4fd1c2e7::e2f5a0b1::access_token",
                ("jellyfin", "4fd1c2e7", "e2f5a0b1", "access_token"),
                Rule::JellyTau,
            ),
            (
                "jellytau::4fd1c2e7::e2f5a0b1::access_token",
                "anyone",
                ("jellyfin", "4fd1c2e7", "e2f5a0b1", "access_token"),
                Rule::JellyTau,
            ),
        ];
        for (service, user, want, want_rule) in cases {
            let (k, rule) = key_for(service, user).unwrap();
            assert_eq!((fields(&k), rule), (want, want_rule), "{service} {user}");
            // The very functions the daemon and the CLI use agree.
            let name = KeyringName {
                service: service.into(),
                user: user.into(),
            };
            let (_, theirs) = classify(&name).unwrap();
            assert_eq!(theirs.unwrap(), k);
        }
    }

    #[test]
    fn legacy_keys_name_their_first_legacy_entry() {
        assert_eq!(
            name_for(&key("gnome-reel.plex_123", "token")),
            Some(("reel.plex_123".into(), "token".into()))
        );
        let jt = "jellytau::s1::u1::access_token";
        assert_eq!(
            name_for(&key(jt, "whoever")),
            Some(("jellytau".into(), jt.into()))
        );
        // A key that no entry name reaches.
        let cli = CredentialKey::new("plex", "srv", "u", "").unwrap();
        assert_eq!(name_for(&cli), None);
    }

    #[test]
    fn other_names_are_generic_and_readable() {
        assert_eq!(
            fields(&key("my-app", "alice@example.com")),
            ("keyring_core", "my-app", "alice@example.com", "secret")
        );
        assert_eq!(
            fields(&key("a:b::c", "100%")),
            ("keyring_core", "a:b::c", "100%25", "secret")
        );
        assert_eq!(
            fields(&key("tab\there", "rtl\u{202E}x")),
            ("keyring_core", "tab%09here", "rtl%E2%80%AEx", "secret")
        );
        assert_eq!(key_for("", "").unwrap().1, Rule::Generic);
    }

    #[test]
    fn legacy_shapes_the_legacy_rules_refuse_fall_back_to_generic() {
        for (service, user) in [
            ("reel.plex", "token"),                          // no account
            ("reel.plex_1", ""),                             // no token type
            ("reel.plex_1", "bad type"),                     // not a token-type name
            ("jellytau", "jellytau::a::b::c::access_token"), // ambiguous
            ("jellytau::a:::b::access_token", "x"),          // ambiguous
        ] {
            let (k, rule) = key_for(service, user).unwrap();
            assert_eq!(rule, Rule::Generic, "{service} {user}");
            assert_eq!(k.provider(), GENERIC_PROVIDER);
            assert_eq!(name_for(&k), Some((service.into(), user.into())));
        }
    }

    /// Awkward names: empty, colons, percent signs, escapes that look
    /// decoded, unicode, every refused character class, and the limit.
    fn awkward() -> Vec<String> {
        let mut names: Vec<String> = [
            "",
            ":",
            "::",
            ":::",
            "a::b",
            "%",
            "%%",
            "%25",
            "%3A",
            "%zz",
            "%0",
            "100% sure",
            "ünïcödé 服务器 🔑",
            "\0",
            "nul\0byte",
            "line\nbreak\r\n",
            "\u{7f}\u{85}\u{9f}",
            "\u{2028}\u{2029}",
            "\u{061C}\u{200E}\u{200F}\u{202A}\u{202E}\u{2066}\u{2069}",
            "jellytau",
            "jellytau::",
            "reel.",
            "reel.plex",
            "token",
            " leading and trailing ",
        ]
        .map(String::from)
        .to_vec();
        names.push("x".repeat(Limits::ID_BYTES));
        names.push("é".repeat(Limits::ID_BYTES / 2));
        // Exactly at the limit once escaped: 85 escapes of 3 bytes + 1.
        names.push(format!("{}a", "%".repeat(85)));
        names
    }

    #[test]
    fn every_generic_name_round_trips_over_awkward_inputs() {
        let names = awkward();
        let mut seen = std::collections::HashMap::new();
        for service in &names {
            for user in &names {
                let (k, rule) =
                    key_for(service, user).unwrap_or_else(|e| panic!("{service:?} {user:?}: {e}"));
                if rule != Rule::Generic {
                    continue;
                }
                assert_eq!(
                    name_for(&k),
                    Some((service.clone(), user.clone())),
                    "{service:?} {user:?} -> {k}"
                );
                // The key's text form (what `keyhaven get` takes) parses
                // back to it.
                assert_eq!(CredentialKey::parse(&k.to_string()).unwrap(), k);
                // One-to-one.
                if let Some(other) = seen.insert(k.clone(), (service.clone(), user.clone())) {
                    panic!("{other:?} and {:?} share {k}", (service, user));
                }
            }
        }
    }

    #[test]
    fn names_over_the_limit_are_refused_naming_the_field() {
        let long = "x".repeat(Limits::ID_BYTES + 1);
        let escaped_long = format!("{}ab", "%".repeat(85));
        for (service, user, field) in [
            (long.as_str(), "u", "service"),
            ("s", long.as_str(), "user"),
            (escaped_long.as_str(), "u", "service"),
            ("s", "\u{1}".repeat(86).as_str(), "user"),
        ] {
            match key_for(service, user) {
                Err(Error::TooLong(f, 256)) => assert_eq!(f, field),
                other => panic!("{service:?} {user:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_the_canonical_escaped_form_decodes() {
        for bad in ["%", "%2", "%zz", "%3a", "%41", "%C3", "%FF", "tab\t"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
        assert_eq!(unescape("%25%3A"), None, "':' needs no escape");
        assert_eq!(unescape("%253A").as_deref(), Some("%3A"));
        assert_eq!(unescape("%C3%A9"), None, "'é' needs no escape");
        assert_eq!(unescape("%E2%80%AE").as_deref(), Some("\u{202E}"));
        // A generic-provider key that is not in the escaped form, or that
        // decodes to a legacy name, is no entry's.
        let odd = CredentialKey::new(GENERIC_PROVIDER, "%41", "u", GENERIC_TOKEN_TYPE).unwrap();
        assert_eq!(name_for(&odd), None);
        let legacy =
            CredentialKey::new(GENERIC_PROVIDER, "reel.plex_1", "token", GENERIC_TOKEN_TYPE)
                .unwrap();
        assert_eq!(name_for(&legacy), None);
        let other_type = CredentialKey::new(GENERIC_PROVIDER, "s", "u", "api_key").unwrap();
        assert_eq!(name_for(&other_type), None);
    }
}
