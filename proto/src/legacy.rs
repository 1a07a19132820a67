//! Where media apps kept their tokens before keyhaven, and how those names
//! map onto the four-field key. Both directions live here so the daemon's
//! read-through and the CLI's `import` agree on them:
//!
//! - forward ([`source_key`], [`jellytau_key`], [`classify`]): a legacy
//!   name found in a keyring or a database becomes a [`CanonicalKey`];
//! - backward ([`keyring_locations`]): a key that was asked for and not
//!   found becomes the keyring entries that could hold it.
//!
//! # Layouts
//!
//! | legacy name | key (provider, server_id, user_id, token_type) |
//! |---|---|
//! | keyring service `reel.{source_id}`, user `token` | provider and account from `source_id`: `plex_123` → `plex`, `""`, `123`, `access_token` |
//! | keyring service `reel.{source_id}`, user `api_key` | same, token type `api_key` |
//! | keyring service `gnome-reel.{source_id}` (older Reel) | as `reel.` |
//! | Reel database `auth_tokens(source_id, token_type)` | as the keyring, `token` → `access_token` |
//! | keyring entry named `jellytau::{server_id}::{user_id}::access_token` | `jellyfin`, `{server_id}`, `{user_id}`, `access_token` |
//!
//! Reel calls `keyring::Entry::new(format!("reel.{source_id}"), "token")`
//! (and `"api_key"`), so the Secret Service item carries the attributes
//! `service = reel.plex_123` and `username = token`. Reel builds source ids
//! as `format!("{source_type}_{user_id}")`: the provider is the part before
//! the first `_`, the account is the rest, `_` included.
//!
//! JellyTau's storage key is one string. Which keyring field holds it could
//! not be confirmed from its source, so both plausible placements are
//! recognised: service `jellytau` with the key as the user, and the key as
//! the service (any user). Ids are taken verbatim, so the layout is
//! ambiguous for ids that contain `::` or have a `:` next to the separator:
//! `jellytau::a::b::c::access_token` could be server `a::b` and user `c` or
//! server `a` and user `b::c`, and `jellytau::a:::b::access_token` could be
//! server `a:` or user `:b`. The mapping is used only where it round-trips:
//! a name that more than one key could have produced maps to no key
//! ([`LegacyError::Ambiguous`]), and a key whose name would read back as
//! another key (or as none) has no JellyTau location. So neither the
//! read-through nor `import` can hand one account's token to another.

use crate::key::{CanonicalKey, DEFAULT_TOKEN_TYPE, KeyError};

/// The provider JellyTau's tokens are stored under.
pub const JELLYTAU_PROVIDER: &str = "jellyfin";
/// The first field of a JellyTau storage key, and the keyring service
/// JellyTau's entries may be filed under.
pub const JELLYTAU_PREFIX: &str = "jellytau";
/// Keyring service prefixes of Reel, newest first.
pub const REEL_SERVICE_PREFIXES: [&str; 2] = ["reel.", "gnome-reel."];
/// The Reel token-type name that means an access token.
pub const REEL_TOKEN: &str = "token";

/// Why a legacy name does not map to a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// The name does not have the layout's shape.
    #[error("{0}")]
    Shape(String),
    /// The name has the layout's shape, but more than one key could have
    /// produced it, so it maps to none: it is left alone.
    #[error("{0}")]
    Ambiguous(String),
    /// The parts break a key rule.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Which app's layout a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Reel's keyring entries.
    Reel,
    /// JellyTau's keyring entries.
    JellyTau,
}

impl Layout {
    /// Lower-case name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reel => "reel",
            Self::JellyTau => "jellytau",
        }
    }
}

/// One keyring entry, by its service and user names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyringName {
    /// The `service` attribute.
    pub service: String,
    /// The `username` attribute.
    pub user: String,
}

impl KeyringName {
    fn new(service: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            user: user.into(),
        }
    }
}

impl std::fmt::Display for KeyringName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service {:?} user {:?}", self.service, self.user)
    }
}

/// Where a key could be, in the order to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Exactly this entry.
    Exact(KeyringName),
    /// Any entry filed under this service (its user is not known).
    AnyUserOf(String),
}

/// The key for a Reel `source_id` and token type (`token`, `api_key`, ...).
pub fn source_key(source_id: &str, token_type: &str) -> Result<CanonicalKey, LegacyError> {
    let Some((provider, account)) = source_id.split_once('_') else {
        return Err(shape(format!(
            "source id {source_id:?} is not PROVIDER_ACCOUNT (e.g. plex_123): it has no '_'"
        )));
    };
    if provider.is_empty() || account.is_empty() {
        return Err(shape(format!(
            "source id {source_id:?} is not PROVIDER_ACCOUNT (e.g. plex_123): the {} is empty",
            if provider.is_empty() {
                "provider"
            } else {
                "account"
            }
        )));
    }
    let token_type = match token_type {
        REEL_TOKEN => DEFAULT_TOKEN_TYPE,
        "" => {
            return Err(shape(format!(
                "token type for source {source_id:?} is empty (use \"token\" or \"api_key\")"
            )));
        }
        other => other,
    };
    Ok(CanonicalKey::new(provider, "", account, token_type)?)
}

/// The key for a JellyTau storage key
/// `jellytau::{server_id}::{user_id}::access_token`; [`LegacyError::Ambiguous`]
/// when the name could stand for more than one key.
pub fn jellytau_key(key: &str) -> Result<CanonicalKey, LegacyError> {
    let what = "a JellyTau key is jellytau::{server_id}::{user_id}::access_token";
    let parts: Vec<&str> = key.split("::").collect();
    if parts.len() > 4
        && parts.first() == Some(&JELLYTAU_PREFIX)
        && parts.last() == Some(&DEFAULT_TOKEN_TYPE)
    {
        return Err(LegacyError::Ambiguous(format!(
            "{what}; {key:?} has {} '::'-separated parts, not 4, so which part is the server \
             id and which the user id cannot be told: left alone",
            parts.len()
        )));
    }
    let [prefix, server_id, user_id, token_type] = parts.as_slice() else {
        return Err(shape(format!(
            "{what}; {key:?} has {} '::'-separated parts, not 4",
            parts.len()
        )));
    };
    if *prefix != JELLYTAU_PREFIX {
        return Err(shape(format!("{what}; {key:?} starts with {prefix:?}")));
    }
    if *token_type != DEFAULT_TOKEN_TYPE {
        return Err(shape(format!("{what}; {key:?} ends with {token_type:?}")));
    }
    if server_id.is_empty() || user_id.is_empty() {
        return Err(shape(format!(
            "{what}; in {key:?} the {} is empty",
            if server_id.is_empty() {
                "server id"
            } else {
                "user id"
            }
        )));
    }
    // `a:` + `::` + `b` and `a` + `::` + `:b` are the same text.
    if server_id.ends_with(':') || user_id.starts_with(':') {
        return Err(LegacyError::Ambiguous(format!(
            "{what}; in {key:?} a ':' touches the '::' between the server id and the user id, \
             so where one ends and the other begins cannot be told: left alone"
        )));
    }
    Ok(CanonicalKey::new(
        JELLYTAU_PROVIDER,
        server_id,
        user_id,
        token_type,
    )?)
}

/// The JellyTau storage key for a server and user, when it reads back as
/// exactly that server and user; `None` when it would not (an id containing
/// `::`, or a `:` next to the separator), because another key could then
/// claim the same entry.
pub fn jellytau_name(server_id: &str, user_id: &str) -> Option<String> {
    let name = format!("{JELLYTAU_PREFIX}::{server_id}::{user_id}::{DEFAULT_TOKEN_TYPE}");
    let back = jellytau_key(&name).ok()?;
    (back.server_id() == server_id && back.user_id() == user_id).then_some(name)
}

/// The JellyTau storage key `key` would be filed under, or why it has none.
pub fn jellytau_name_of(key: &CanonicalKey) -> Result<String, LegacyError> {
    if key.provider() != JELLYTAU_PROVIDER || key.token_type() != DEFAULT_TOKEN_TYPE {
        return Err(shape(format!(
            "JellyTau keeps only {JELLYTAU_PROVIDER} access tokens, not {key}"
        )));
    }
    if key.server_id().is_empty() || key.user_id().is_empty() {
        return Err(shape(format!(
            "JellyTau's keys have a server id and a user id; {key} lacks one"
        )));
    }
    jellytau_name(key.server_id(), key.user_id()).ok_or_else(|| {
        LegacyError::Ambiguous(format!(
            "server id {:?} and user id {:?} do not map to one JellyTau entry and back \
             (an id contains '::' or a ':' at the separator), so {key} is not looked up \
             in JellyTau's entries: another account's entry could answer",
            key.server_id(),
            key.user_id()
        ))
    })
}

/// Which layout a keyring entry belongs to and the key it maps to; `None`
/// for entries of no known layout (keyhaven's own, other apps').
pub fn classify(name: &KeyringName) -> Option<(Layout, Result<CanonicalKey, LegacyError>)> {
    for prefix in REEL_SERVICE_PREFIXES {
        if let Some(source) = name.service.strip_prefix(prefix) {
            return Some((Layout::Reel, source_key(source, &name.user)));
        }
    }
    let jellytau_start = format!("{JELLYTAU_PREFIX}::");
    if name.service == JELLYTAU_PREFIX && name.user.starts_with(&jellytau_start) {
        return Some((Layout::JellyTau, jellytau_key(&name.user)));
    }
    if name.service.starts_with(&jellytau_start) {
        return Some((Layout::JellyTau, jellytau_key(&name.service)));
    }
    None
}

/// Every keyring entry a legacy app could have filed `key` under, in the
/// order to look. Empty when no layout can hold this key.
pub fn keyring_locations(key: &CanonicalKey) -> Vec<Location> {
    let mut out = Vec::new();
    if let Ok(name) = jellytau_name_of(key) {
        out.push(Location::Exact(KeyringName::new(
            JELLYTAU_PREFIX,
            name.clone(),
        )));
        out.push(Location::AnyUserOf(name));
    }
    if key.server_id().is_empty() && !key.user_id().is_empty() {
        let source = format!("{}_{}", key.provider(), key.user_id());
        let user = if key.token_type() == DEFAULT_TOKEN_TYPE {
            REEL_TOKEN
        } else {
            key.token_type()
        };
        // Only names that map back to this very key.
        if source_key(&source, user).as_ref() == Ok(key) {
            for prefix in REEL_SERVICE_PREFIXES {
                out.push(Location::Exact(KeyringName::new(
                    format!("{prefix}{source}"),
                    user,
                )));
            }
        }
    }
    out
}

fn shape(message: String) -> LegacyError {
    LegacyError::Shape(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(key: &CanonicalKey) -> (&str, &str, &str, &str) {
        (
            key.provider(),
            key.server_id(),
            key.user_id(),
            key.token_type(),
        )
    }

    fn name(service: &str, user: &str) -> KeyringName {
        KeyringName::new(service, user)
    }

    #[test]
    fn reel_entries_map_both_ways() {
        let cases = [
            (
                "reel.plex_123",
                "token",
                ("plex", "", "123", "access_token"),
            ),
            (
                "gnome-reel.jellyfin_abc",
                "api_key",
                ("jellyfin", "", "abc", "api_key"),
            ),
            // The account keeps every `_` after the first.
            (
                "reel.emby_x_y",
                "token",
                ("emby", "", "x_y", "access_token"),
            ),
            // Unicode and `::` in the account are taken verbatim.
            (
                "reel.plex_jürgen::1",
                "token",
                ("plex", "", "jürgen::1", "access_token"),
            ),
        ];
        for (service, user, want) in cases {
            let (layout, key) = classify(&name(service, user)).unwrap();
            assert_eq!(layout, Layout::Reel);
            let key = key.unwrap();
            assert_eq!(fields(&key), want, "{service} {user}");
            let back = keyring_locations(&key);
            assert!(
                back.contains(&Location::Exact(name(service, user))),
                "{service} {user}: {back:?}"
            );
        }
    }

    #[test]
    fn jellytau_entries_map_both_ways_in_either_placement() {
        let full = "jellytau::4fd1c2e7::e2f5a0b1::access_token";
        for entry in [name("jellytau", full), name(full, "")] {
            let (layout, key) = classify(&entry).unwrap();
            assert_eq!(layout, Layout::JellyTau);
            let key = key.unwrap();
            assert_eq!(
                fields(&key),
                ("jellyfin", "4fd1c2e7", "e2f5a0b1", "access_token")
            );
            let back = keyring_locations(&key);
            assert_eq!(
                back,
                vec![
                    Location::Exact(name("jellytau", full)),
                    Location::AnyUserOf(full.into())
                ]
            );
        }
        // Unicode and `_` are fine.
        let (_, key) = classify(&name("jellytau", "jellytau::sérv_1::ü_2::access_token")).unwrap();
        assert_eq!(key.unwrap().user_id(), "ü_2");
    }

    #[test]
    fn ids_with_double_colons_map_to_no_entry_in_either_direction() {
        // Two accounts, one legacy name: neither may claim it.
        let name_both = "jellytau::a::b::u::access_token";
        for (server, user) in [("a::b", "u"), ("a", "b::u")] {
            let key = CanonicalKey::new("jellyfin", server, user, "access_token").unwrap();
            assert_eq!(keyring_locations(&key), vec![], "{key}");
            let err = jellytau_name_of(&key).unwrap_err();
            assert!(matches!(err, LegacyError::Ambiguous(_)), "{err}");
            assert!(
                err.to_string().contains("do not map to one JellyTau entry"),
                "{err}"
            );
        }
        let (_, err) = classify(&name("jellytau", name_both)).unwrap();
        let err = err.unwrap_err();
        assert!(matches!(err, LegacyError::Ambiguous(_)), "{err}");
        assert!(
            err.to_string().contains("has 5 '::'-separated parts"),
            "{err}"
        );
        // A ':' at the separator: `a:` + `b` and `a` + `:b` write the same name.
        for (server, user) in [("a:", "b"), ("a", ":b")] {
            let key = CanonicalKey::new("jellyfin", server, user, "access_token").unwrap();
            assert_eq!(keyring_locations(&key), vec![], "{key}");
        }
        let err = jellytau_key("jellytau::a:::b::access_token").unwrap_err();
        assert!(matches!(err, LegacyError::Ambiguous(_)), "{err}");
        assert!(err.to_string().contains("a ':' touches the '::'"), "{err}");
        // Single colons elsewhere are unambiguous and kept.
        let key = jellytau_key("jellytau:::s:1::u:2:::access_token");
        assert!(
            key.is_err(),
            "a user id ending in ':' cannot be told from the suffix"
        );
        let key = jellytau_key("jellytau:::s:1::u:2::access_token").unwrap();
        assert_eq!((key.server_id(), key.user_id()), (":s:1", "u:2"));
        assert_eq!(
            keyring_locations(&key)[0],
            Location::Exact(name("jellytau", "jellytau:::s:1::u:2::access_token"))
        );
    }

    /// Every id of up to four characters from `a`, `:` and `é`: the
    /// tricky ones are all in there (`::`, `a:`, `:a`, `:::`, ...).
    fn tricky_ids() -> Vec<String> {
        let mut ids = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for id in &frontier {
                for c in ['a', ':', 'é'] {
                    next.push(format!("{id}{c}"));
                }
            }
            ids.extend(next.iter().cloned());
            frontier = next;
        }
        ids
    }

    #[test]
    fn the_jellytau_mapping_round_trips_or_refuses_over_tricky_ids() {
        let ids = tricky_ids();
        let mut names: std::collections::HashMap<String, Vec<(String, String)>> =
            std::collections::HashMap::new();
        for server in &ids {
            for user in &ids {
                let raw = format!("jellytau::{server}::{user}::access_token");
                names
                    .entry(raw)
                    .or_default()
                    .push((server.clone(), user.clone()));
                let Ok(key) = CanonicalKey::new("jellyfin", server, user, "") else {
                    continue;
                };
                // Backward, then forward: the same key, or no entry at all.
                match jellytau_name_of(&key) {
                    Ok(n) => {
                        assert_eq!(jellytau_key(&n).as_ref(), Ok(&key), "{n}");
                        for placement in [name("jellytau", &n), name(&n, "x")] {
                            let (_, back) = classify(&placement).unwrap();
                            assert_eq!(back.as_ref(), Ok(&key), "{placement}");
                        }
                    }
                    Err(_) => assert!(
                        !keyring_locations(&key)
                            .iter()
                            .any(|l| matches!(l, Location::Exact(n) if n.service == "jellytau")),
                        "{key}"
                    ),
                }
            }
        }
        // Forward: a name that several (server, user) pairs write maps to
        // no key (it is refused as ambiguous or malformed); one that a single
        // pair writes maps to that pair or is refused, never to another.
        let mut mapped = 0;
        for (n, writers) in &names {
            if let Ok(key) = jellytau_key(n) {
                mapped += 1;
                assert_eq!(writers.len(), 1, "{n} is written by {writers:?}");
                let (server, user) = &writers[0];
                assert_eq!((key.server_id(), key.user_id()), (&**server, &**user));
            }
        }
        assert!(mapped > 1000, "only {mapped} names mapped");
    }

    #[test]
    fn keys_no_layout_can_hold_have_no_locations() {
        let cases = [
            // Empty user: neither app writes one.
            ("plex", "", "", "access_token"),
            // A server id: Reel's keys have none; JellyTau's need a user.
            ("plex", "srv", "", "access_token"),
            // JellyTau keeps access tokens only, and Reel needs an empty server.
            ("jellyfin", "srv", "u", "refresh_token"),
        ];
        for (p, s, u, t) in cases {
            let key = CanonicalKey::new(p, s, u, t).unwrap();
            assert_eq!(keyring_locations(&key), vec![], "{key}");
        }
        // Providers with '_' cannot come from a Reel source id (the first
        // '_' ends the provider), so they are not looked up there.
        let key = CanonicalKey::new("my_app", "", "1", "access_token").unwrap();
        assert_eq!(keyring_locations(&key), vec![]);
    }

    #[test]
    fn other_entries_are_not_legacy() {
        for (service, user) in [
            ("keyhaven", "data-key"),
            ("reelx.plex_1", "token"),
            ("jellytau", "something"),
        ] {
            assert!(classify(&name(service, user)).is_none(), "{service}");
        }
        // Known layout, bad name: reported, not skipped.
        let (_, key) = classify(&name("reel.plex", "token")).unwrap();
        assert!(key.unwrap_err().to_string().contains("has no '_'"));
        let (_, key) = classify(&name("reel.plex_", "token")).unwrap();
        assert!(key.unwrap_err().to_string().contains("account is empty"));
    }
}
