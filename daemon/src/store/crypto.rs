//! Sealing secrets with AES-256-GCM.
//!
//! Every write draws a fresh random 96-bit nonce. The associated data binds
//! the ciphertext to the key id and the credential's canonical key, so a
//! sealed value copied onto another row, or opened with another data key,
//! fails authentication instead of decrypting.

use std::fmt;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use keyhaven_proto::{CanonicalKey, KeyRef, Secret};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Nonce length in bytes (96 bits, the GCM standard).
pub const NONCE_LEN: usize = 12;
/// Data key length in bytes.
pub const KEY_LEN: usize = 32;

const AAD_SECRET: &[u8] = b"keyhaven.v1/secret\0";
const AAD_CHECK: &[u8] = b"keyhaven.v1/key-check\0";
const CHECK_PLAINTEXT: &[u8] = b"keyhaven data key check value v1";

/// A sealing or opening failure. Carries no key or plaintext material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: wrong key, tampered data, or data bound to
    /// another credential.
    #[error("authentication failed (wrong key, tampered data, or data sealed for another key)")]
    Open,
    /// The stored nonce has the wrong length.
    #[error("stored nonce is {0} bytes, expected {NONCE_LEN}")]
    BadNonce(usize),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Encryption failed.
    #[error("encryption failed")]
    Seal,
}

/// The 256-bit data key, wiped on drop, never printed.
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("bytes", &keyhaven_proto::secret::REDACTED)
            .finish()
    }
}

/// A sealed secret: nonce and ciphertext (with the GCM tag appended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// 12 random bytes.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl DataKey {
    /// Wraps existing key bytes. They are copied into a buffer that is wiped
    /// on drop; the caller keeps (and wipes) its own.
    pub fn from_bytes(raw: &[u8; KEY_LEN]) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(raw);
        let id = key_id(&bytes);
        // From a slice: no unwiped `Key` temporary on this stack.
        let cipher = match Aes256Gcm::new_from_slice(&bytes[..]) {
            Ok(cipher) => cipher,
            Err(_) => unreachable!("KEY_LEN is AES-256's key length"),
        };
        Self { bytes, id, cipher }
    }

    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Key::<Aes256Gcm>::try_generate().map_err(|_| CryptoError::Random)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        key.zeroize();
        Ok(Self::from_bytes(&bytes))
    }

    /// 32 random bytes from the operating system's CSPRNG, for other
    /// secrets of the daemon's own (the page-token key).
    pub fn random_bytes() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let mut key = Key::<Aes256Gcm>::try_generate().map_err(|_| CryptoError::Random)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        key.zeroize();
        Ok(bytes)
    }

    /// The key bytes, for writing them to their custody tier.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// A public identifier of this key: the first 16 hex digits of
    /// SHA-256("keyhaven key id v1" || key). Reveals nothing useful about the
    /// key and lets the store record which key sealed which row.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `secret` for `key`.
    pub fn seal(&self, key: &CanonicalKey, secret: &[u8]) -> Result<Sealed, CryptoError> {
        self.seal_with_aad(&self.secret_aad(key.view()), secret)
    }

    /// Opens a secret sealed for `key` by this data key.
    pub fn open(&self, key: KeyRef<'_>, sealed: &Sealed) -> Result<Secret, CryptoError> {
        self.open_with_aad(&self.secret_aad(key), sealed)
    }

    /// A check value proving later that a key is the one that sealed a store.
    pub fn seal_check(&self) -> Result<Sealed, CryptoError> {
        self.seal_with_aad(&self.check_aad(), CHECK_PLAINTEXT)
    }

    /// True when `sealed` is this key's check value.
    pub fn verify_check(&self, sealed: &Sealed) -> bool {
        self.open_with_aad(&self.check_aad(), sealed)
            .is_ok_and(|p| p.expose() == CHECK_PLAINTEXT)
    }

    fn secret_aad(&self, key: KeyRef<'_>) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_SECRET.len() + self.id.len() + 1 + key.binding_len());
        aad.extend_from_slice(AAD_SECRET);
        aad.extend_from_slice(self.id.as_bytes());
        aad.push(0);
        key.write_binding(&mut aad);
        aad
    }

    fn check_aad(&self) -> Vec<u8> {
        let mut aad = AAD_CHECK.to_vec();
        aad.extend_from_slice(self.id.as_bytes());
        aad
    }

    fn seal_with_aad(&self, aad: &[u8], msg: &[u8]) -> Result<Sealed, CryptoError> {
        let nonce = Nonce::try_generate().map_err(|_| CryptoError::Random)?;
        let ciphertext = self
            .cipher
            .encrypt(&nonce, Payload { msg, aad })
            .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    fn open_with_aad(&self, aad: &[u8], sealed: &Sealed) -> Result<Secret, CryptoError> {
        let nonce = Nonce::try_from(sealed.nonce.as_slice())
            .map_err(|_| CryptoError::BadNonce(sealed.nonce.len()))?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map(Secret::new)
            .map_err(|_| CryptoError::Open)
    }
}

fn key_id(bytes: &[u8; KEY_LEN]) -> String {
    let mut h = Sha256::new();
    h.update(b"keyhaven key id v1\0");
    h.update(bytes);
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(p: &str, s: &str) -> CanonicalKey {
        CanonicalKey::new(p, s, "u", "").unwrap()
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let dk = DataKey::generate().unwrap();
        let a = dk.seal(&k("jellyfin", "s"), b"tok-1").unwrap();
        let b = dk.seal(&k("jellyfin", "s"), b"tok-1").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(
            dk.open(k("jellyfin", "s").view(), &a).unwrap().expose(),
            b"tok-1"
        );
        assert!(!a.ciphertext.windows(5).any(|w| w == b"tok-1"));
    }

    #[test]
    fn sealed_value_is_bound_to_its_key_and_data_key() {
        let dk = DataKey::generate().unwrap();
        let sealed = dk.seal(&k("jellyfin", "s"), b"tok").unwrap();
        assert_eq!(
            dk.open(k("jellyfin", "t").view(), &sealed),
            Err(CryptoError::Open)
        );
        let other = DataKey::generate().unwrap();
        assert_eq!(
            other.open(k("jellyfin", "s").view(), &sealed),
            Err(CryptoError::Open)
        );
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(
            dk.open(k("jellyfin", "s").view(), &flipped),
            Err(CryptoError::Open)
        );
        let short = Sealed {
            nonce: vec![0; 5],
            ciphertext: sealed.ciphertext,
        };
        assert_eq!(
            dk.open(k("jellyfin", "s").view(), &short),
            Err(CryptoError::BadNonce(5))
        );
    }

    #[test]
    fn check_value_identifies_the_key() {
        let dk = DataKey::generate().unwrap();
        let check = dk.seal_check().unwrap();
        assert!(dk.verify_check(&check));
        assert!(!DataKey::generate().unwrap().verify_check(&check));
        let same = DataKey::from_bytes(dk.expose_bytes());
        assert_eq!(same.id(), dk.id());
        assert_eq!(dk.id().len(), 16);
        assert!(!format!("{dk:?}").contains(&format!("{:?}", dk.expose_bytes())));
    }
}
