//! The store's vocabulary: a credential's metadata, a write, a filter.

use keyhaven_proto::{Attributes, CanonicalKey, Secret};

/// Everything about a credential except its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Its key.
    pub key: CanonicalKey,
    /// Store-wide unique, increasing revision.
    pub revision: u64,
    /// Unix ms of the first write.
    pub created_at: i64,
    /// Unix ms of the latest write.
    pub updated_at: i64,
    /// Unix ms after which it is no longer served.
    pub expires_at: Option<i64>,
    /// A label for people.
    pub label: Option<String>,
    /// Non-secret attributes (server, user name, device id...).
    pub attributes: Attributes,
}

/// What a write does to the stored attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeChange {
    /// Keep them (a new credential has none).
    Keep,
    /// Replace them with these (empty: remove them all).
    Replace(Attributes),
}

/// A write.
#[derive(Debug)]
pub struct Put {
    /// Where.
    pub key: CanonicalKey,
    /// What.
    pub secret: Secret,
    /// Replaces the label.
    pub label: Option<String>,
    /// Replaces the expiry.
    pub expires_at: Option<i64>,
    /// Compare-and-swap: `Some(0)` must not exist, `Some(n)` must be at `n`.
    pub expected_revision: Option<u64>,
    /// Keeps or replaces the attributes.
    pub attributes: AttributeChange,
}

/// What [`Store::list`] selects.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    /// Exact provider.
    pub provider: Option<String>,
    /// Exact server id (may be empty).
    pub server_id: Option<String>,
    /// Exact user id (may be empty).
    pub user_id: Option<String>,
    /// Only credentials carrying all of these attributes, exactly.
    pub attributes: Attributes,
    /// Only keys strictly after this one (pagination).
    pub after: Option<CanonicalKey>,
    /// At most this many.
    pub limit: u32,
}

impl ListFilter {
    /// Whether `meta` is selected (the pagination bound aside).
    pub fn matches(&self, meta: &Metadata) -> bool {
        let field = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        field(&self.provider, meta.key.provider())
            && field(&self.server_id, meta.key.server_id())
            && field(&self.user_id, meta.key.user_id())
            && self.matches_attributes(meta)
    }

    /// Whether `meta` carries every attribute of the filter.
    pub(crate) fn matches_attributes(&self, meta: &Metadata) -> bool {
        self.attributes
            .iter()
            .all(|(name, value)| meta.attributes.get(name) == Some(value))
    }
}
