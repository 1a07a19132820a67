//! A read cache of sealed credentials, so a Retrieve of a credential read
//! before costs no SQLite query. It holds what the database holds: the
//! metadata and the ciphertext, never a plaintext secret; every Retrieve
//! still opens the ciphertext with the data key.
//!
//! Coherence: only the writer thread changes the store, and it invalidates
//! the keys a transaction changed after the commit and before it answers
//! the writer or publishes an event, so a read that starts after a write
//! was acknowledged never sees the old value. A reader that missed reads
//! the database, then inserts only if no invalidation happened since its
//! miss (a generation counter): a value read before a commit can never be
//! inserted after that commit's invalidation.
//!
//! Bounded: at [`MAX_ENTRIES`] the cache is emptied and fills again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyhaven_proto::{CanonicalKey, KeyRef};

use crate::store::crypto::Sealed;
use crate::store::model::Metadata;

/// Most credentials cached.
pub const MAX_ENTRIES: usize = 4096;

/// A credential as stored.
#[derive(Debug, Clone)]
pub struct Cached {
    /// Its metadata.
    pub meta: Metadata,
    /// Its sealed secret.
    pub sealed: Sealed,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// Its key, shared with the audit records of its reads.
    pub key: Arc<CanonicalKey>,
    /// The metadata in its wire encoding (a `CredentialMetadata` message),
    /// made by the RPC layer the first time a Retrieve serves this entry:
    /// later reads send these bytes instead of encoding it again. It lives
    /// and dies with the entry, so it is as coherent as the metadata.
    pub encoded_metadata: std::sync::OnceLock<prost::bytes::Bytes>,
}

/// The cache. See the module doc.
#[derive(Debug, Default)]
pub struct ReadCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    /// foldhash, seeded per map: SipHash cost more than the lookup.
    entries: HashMap<CanonicalKey, Arc<Cached>, foldhash::fast::RandomState>,
}

/// A key the cache is searched by: an owned [`CanonicalKey`] or a borrowed
/// [`KeyRef`], which needs no copy of the key's strings. Both hash and
/// compare by their four fields, through `keyhaven_proto::key::hash_fields`
/// as `CanonicalKey` itself does, so either finds the other's entry.
trait Lookup {
    fn fields(&self) -> [&str; 4];
}

impl Lookup for CanonicalKey {
    fn fields(&self) -> [&str; 4] {
        self.view().fields()
    }
}

impl Lookup for KeyRef<'_> {
    fn fields(&self) -> [&str; 4] {
        KeyRef::fields(*self)
    }
}

impl std::hash::Hash for dyn Lookup + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        keyhaven_proto::key::hash_fields(self.fields(), state);
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for dyn Lookup + '_ {}

impl<'a> std::borrow::Borrow<dyn Lookup + 'a> for CanonicalKey {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

/// What a miss must hand back to [`ReadCache::insert`].
#[derive(Debug, Clone, Copy)]
pub struct Miss(u64);

impl ReadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached credential, or the miss to insert with after reading.
    pub fn get(&self, key: KeyRef<'_>) -> Result<Arc<Cached>, Miss> {
        let inner = self.lock();
        match inner.entries.get(&key as &dyn Lookup) {
            Some(cached) => Ok(cached.clone()),
            None => Err(Miss(inner.generation)),
        }
    }

    /// Caches what a read after `miss` found, unless a write changed the
    /// store since.
    pub fn insert(&self, key: CanonicalKey, value: Arc<Cached>, miss: Miss) {
        let mut inner = self.lock();
        if inner.generation != miss.0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(key, value);
    }

    /// Forgets `keys` (written or removed). The writer thread calls this
    /// after the commit, before anyone hears of it.
    pub fn invalidate<'k>(&self, keys: impl IntoIterator<Item = &'k CanonicalKey>) {
        let mut inner = self.lock();
        inner.generation += 1;
        for key in keys {
            inner.entries.remove(key);
        }
    }

    /// Forgets everything (every row changed: a rotation, a new key).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(revision: u64) -> Cached {
        Cached {
            meta: Metadata {
                key: key(),
                revision,
                created_at: 0,
                updated_at: 0,
                expires_at: None,
                label: None,
                attributes: Default::default(),
            },
            sealed: Sealed {
                nonce: vec![0; 12],
                ciphertext: vec![1; 20],
            },
            key_id: "k".into(),
            key: Arc::new(key()),
            encoded_metadata: Default::default(),
        }
    }

    fn key() -> CanonicalKey {
        CanonicalKey::new("jellyfin", "s", "u", "").unwrap()
    }

    #[test]
    fn a_value_read_before_a_write_is_never_cached_after_it() {
        let cache = ReadCache::default();
        let miss = cache.get(key().view()).unwrap_err();
        // The reader read revision 1; meanwhile the writer committed
        // revision 2 and invalidated.
        cache.invalidate([&key()]);
        cache.insert(key(), Arc::new(cached(1)), miss);
        assert!(
            cache.get(key().view()).is_err(),
            "the stale read was not cached"
        );
        // A read after the invalidation is cached.
        let miss = cache.get(key().view()).unwrap_err();
        cache.insert(key(), Arc::new(cached(2)), miss);
        assert_eq!(cache.get(key().view()).unwrap().meta.revision, 2);
        cache.invalidate([&key()]);
        assert!(cache.get(key().view()).is_err());
    }

    #[test]
    fn it_stays_bounded() {
        let cache = ReadCache::default();
        for i in 0..MAX_ENTRIES + 10 {
            let k = CanonicalKey::new("p", "s", &format!("u{i}"), "").unwrap();
            let miss = cache.get(k.view()).unwrap_err();
            cache.insert(k, Arc::new(cached(1)), miss);
        }
        assert!(cache.lock().entries.len() <= MAX_ENTRIES);
    }
}
