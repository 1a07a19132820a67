//! The two backup file formats, spelled once for both ends: the CLI writes
//! them, the daemon reads what a restore sends it (and writes its automatic
//! snapshots). Both are described for people in `docs/backup.md`.
//!
//! - A **snapshot** file: the line `keyhaven-snapshot`, one line of JSON
//!   ([`Manifest`]), then exactly `size` bytes of a SQLite database whose
//!   SHA-256 is `sha256`. The database holds only sealed rows: it opens
//!   only with the same data key. The manifest is readable without it.
//! - An **export** file: an `age` file (scrypt recipient, i.e. a
//!   passphrase) whose plaintext is one JSON document ([`ExportDocument`]).
//!
//! A file is told apart by its first bytes ([`detect`]), so a restore never
//! guesses from the name.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::{CanonicalKey, Secret, pb};

/// The first line of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8] = b"keyhaven-snapshot\n";
/// What an age file (binary, not armored) starts with.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/";
/// What an ASCII-armored age file starts with.
pub const AGE_ARMOR_MAGIC: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
/// The snapshot format this version writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// `format` of a snapshot manifest.
pub const SNAPSHOT_FORMAT: &str = "keyhaven-snapshot";
/// `format` of an export document.
pub const EXPORT_FORMAT: &str = "keyhaven-export";
/// The export document version this version writes and reads.
pub const EXPORT_VERSION: u32 = 1;
/// Longest manifest line accepted.
const MAX_MANIFEST: usize = 4096;

/// A file that cannot be a complete, untouched backup of this format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

fn bad(message: impl Into<String>) -> FormatError {
    FormatError(message.into())
}

/// What kind of file a restore was given, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A snapshot (`keyhaven backup`).
    Snapshot,
    /// An age file (`keyhaven export`).
    Export,
    /// An ASCII-armored age file (`age -a`), which keyhaven does not write.
    ArmoredExport,
    /// Neither.
    Unknown,
}

/// Tells the kind of a file from its first bytes.
pub fn detect(start: &[u8]) -> FileKind {
    if start.starts_with(SNAPSHOT_MAGIC) {
        FileKind::Snapshot
    } else if start.starts_with(AGE_MAGIC) {
        FileKind::Export
    } else if start.starts_with(AGE_ARMOR_MAGIC) {
        FileKind::ArmoredExport
    } else {
        FileKind::Unknown
    }
}

/// What a snapshot holds, readable without the data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// [`SNAPSHOT_FORMAT_VERSION`].
    pub format_version: u32,
    /// The store's random id.
    pub store_id: String,
    /// The id of the data key the rows are sealed with (not secret).
    pub key_id: String,
    /// Credentials in the snapshot.
    pub credential_count: u64,
    /// The store's revision counter at the snapshot.
    pub highest_revision: u64,
    /// When it was taken, for people (UTC, RFC 3339).
    pub taken_at: String,
    /// When it was taken, Unix milliseconds (authoritative).
    pub taken_at_unix_ms: i64,
    /// Length of the SQLite bytes.
    pub size: u64,
    /// SHA-256 of the SQLite bytes, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// The wire form.
    pub fn to_pb(&self) -> pb::BackupManifest {
        pb::BackupManifest {
            format_version: self.format_version,
            store_id: self.store_id.clone(),
            key_id: self.key_id.clone(),
            credential_count: self.credential_count,
            highest_revision: self.highest_revision,
            taken_at: Some(crate::time::from_unix_ms(self.taken_at_unix_ms)),
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }

    /// From the wire form.
    pub fn from_pb(m: &pb::BackupManifest) -> Result<Self, FormatError> {
        let ms = m
            .taken_at
            .as_ref()
            .and_then(crate::time::to_unix_ms)
            .ok_or_else(|| bad("the manifest has no valid taken_at"))?;
        let manifest = Self {
            format: SNAPSHOT_FORMAT.to_owned(),
            format_version: m.format_version,
            store_id: m.store_id.clone(),
            key_id: m.key_id.clone(),
            credential_count: m.credential_count,
            highest_revision: m.highest_revision,
            taken_at: rfc3339(ms),
            taken_at_unix_ms: ms,
            size: m.size,
            sha256: m.sha256.clone(),
        };
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), FormatError> {
        if self.format != SNAPSHOT_FORMAT {
            return Err(bad(format!(
                "the manifest's format is {:?}, not {SNAPSHOT_FORMAT:?}",
                self.format
            )));
        }
        if self.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(bad(format!(
                "snapshot format version {} is not one this keyhaven reads \
                 ({SNAPSHOT_FORMAT_VERSION}); use the keyhaven version that wrote it",
                self.format_version
            )));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the manifest's sha256 is not 64 hex digits"));
        }
        // These reach terminals (`keyhaven backup --manifest`): ids are hex
        // and the time is the one the Unix time says, nothing else.
        let id_ok = |id: &str| {
            id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !id_ok(&self.store_id) || !id_ok(&self.key_id) {
            return Err(bad("the manifest's store_id or key_id is not an id"));
        }
        if self.taken_at != rfc3339(self.taken_at_unix_ms) {
            return Err(bad(
                "the manifest's taken_at does not match taken_at_unix_ms",
            ));
        }
        Ok(())
    }

    /// The file header: the magic line and the manifest line.
    pub fn header(&self) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        // A struct of strings and numbers always serializes.
        out.extend_from_slice(serde_json::to_string(self).unwrap_or_default().as_bytes());
        out.push(b'\n');
        out
    }

    /// Reads the header at the start of `file`: the manifest and where the
    /// SQLite bytes begin. Checks nothing after the header.
    pub fn parse_header(file: &[u8]) -> Result<(Self, usize), FormatError> {
        if detect(file) != FileKind::Snapshot {
            return Err(bad(
                "not a keyhaven snapshot (its first line is not keyhaven-snapshot)",
            ));
        }
        let rest = &file[SNAPSHOT_MAGIC.len()..];
        let end = rest
            .iter()
            .take(MAX_MANIFEST)
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("the snapshot's manifest line is missing or truncated"))?;
        let manifest: Self = serde_json::from_slice(&rest[..end])
            .map_err(|e| bad(format!("the snapshot's manifest is not valid: {e}")))?;
        manifest.check()?;
        Ok((manifest, SNAPSHOT_MAGIC.len() + end + 1))
    }

    /// Checks a whole snapshot file: its header, that exactly `size` bytes
    /// follow, and their SHA-256. Returns the manifest and the SQLite bytes.
    pub fn verify_file(file: &[u8]) -> Result<(Self, &[u8]), FormatError> {
        let (manifest, start) = Self::parse_header(file)?;
        let data = &file[start..];
        let have = data.len() as u64;
        if have < manifest.size {
            return Err(bad(format!(
                "the snapshot is truncated: {have} of {} bytes",
                manifest.size
            )));
        }
        if have > manifest.size {
            return Err(bad(format!(
                "the snapshot has {} bytes more than its manifest says",
                have - manifest.size
            )));
        }
        manifest.verify_bytes(data)?;
        Ok((manifest, data))
    }

    /// Checks `data` against `size` and `sha256`.
    pub fn verify_bytes(&self, data: &[u8]) -> Result<(), FormatError> {
        if data.len() as u64 != self.size {
            return Err(bad(format!(
                "the snapshot is {} bytes, its manifest says {}",
                data.len(),
                self.size
            )));
        }
        if sha256_hex(data) != self.sha256 {
            return Err(bad(
                "the snapshot's bytes do not match its SHA-256: the file was damaged or changed",
            ));
        }
        Ok(())
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Incremental SHA-256, lowercase hex at the end.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(sha256)")
    }
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON document inside an export file.
#[derive(Serialize, Deserialize)]
pub struct ExportDocument {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// [`EXPORT_VERSION`].
    pub version: u32,
    /// When it was written (UTC, RFC 3339).
    pub exported_at: String,
    /// The credentials, in key order.
    pub credentials: Vec<ExportEntry>,
}

impl fmt::Debug for ExportDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportDocument")
            .field("version", &self.version)
            .field("credentials", &self.credentials.len())
            .finish()
    }
}

impl ExportDocument {
    /// A new document holding `credentials`.
    pub fn new(credentials: Vec<ExportEntry>, now_ms: i64) -> Self {
        Self {
            format: EXPORT_FORMAT.to_owned(),
            version: EXPORT_VERSION,
            exported_at: rfc3339(now_ms),
            credentials,
        }
    }

    /// Parses and checks a document: format, version, every key and secret.
    pub fn parse(json: &[u8]) -> Result<Self, FormatError> {
        let doc: Self = serde_json::from_slice(json)
            .map_err(|e| bad(format!("the export's contents are not valid JSON: {e}")))?;
        if doc.format != EXPORT_FORMAT {
            return Err(bad(format!(
                "the export's format is {:?}, not {EXPORT_FORMAT:?}",
                doc.format
            )));
        }
        if doc.version != EXPORT_VERSION {
            return Err(bad(format!(
                "export version {} is not one this keyhaven reads ({EXPORT_VERSION})",
                doc.version
            )));
        }
        for (i, entry) in doc.credentials.iter().enumerate() {
            entry
                .key()
                .map_err(|e| bad(format!("credential {} of the export: {e}", i + 1)))?;
            entry
                .secret()
                .map_err(|e| bad(format!("credential {} of the export: {e}", i + 1)))?;
        }
        Ok(doc)
    }

    /// The JSON text (it holds every secret: keep it in memory only).
    pub fn to_json(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

/// One credential of an export, with its metadata.
#[derive(Serialize, Deserialize)]
pub struct ExportEntry {
    /// The key's four fields.
    pub provider: String,
    /// Server id (may be empty).
    pub server_id: String,
    /// User id (may be empty).
    pub user_id: String,
    /// Token type.
    pub token_type: String,
    /// The secret, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The secret in standard base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_base64: Option<String>,
    /// The label, if any.
    #[serde(default)]
    pub label: Option<String>,
    /// The non-secret attributes (absent from files written before they
    /// existed, and when there are none).
    #[serde(default, skip_serializing_if = "crate::Attributes::is_empty")]
    pub attributes: crate::Attributes,
    /// Expiry, Unix milliseconds (authoritative), if any.
    #[serde(default)]
    pub expires_at_unix_ms: Option<i64>,
    /// Expiry for people (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The revision in the store it came from.
    pub revision: u64,
    /// First written, Unix milliseconds.
    #[serde(default)]
    pub created_at_unix_ms: i64,
    /// Last written, Unix milliseconds.
    #[serde(default)]
    pub updated_at_unix_ms: i64,
}

impl fmt::Debug for ExportEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportEntry")
            .field("provider", &self.provider)
            .field("server_id", &self.server_id)
            .field("user_id", &self.user_id)
            .field("token_type", &self.token_type)
            .field("secret", &crate::secret::REDACTED)
            .field("attributes", &self.attributes)
            .field("revision", &self.revision)
            .finish()
    }
}

impl Drop for ExportEntry {
    fn drop(&mut self) {
        if let Some(s) = &mut self.secret {
            s.zeroize();
        }
        if let Some(s) = &mut self.secret_base64 {
            s.zeroize();
        }
    }
}

impl ExportEntry {
    /// An entry for a credential read from the daemon (times in Unix ms).
    pub fn new(
        key: &CanonicalKey,
        secret: &Secret,
        revision: u64,
        label: Option<String>,
        expires_at_ms: Option<i64>,
        created_at_ms: i64,
        updated_at_ms: i64,
    ) -> Self {
        use base64::Engine;
        let bytes = secret.expose();
        let (text, b64) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        Self {
            provider: key.provider().to_owned(),
            server_id: key.server_id().to_owned(),
            user_id: key.user_id().to_owned(),
            token_type: key.token_type().to_owned(),
            secret: text,
            secret_base64: b64,
            label,
            attributes: crate::Attributes::new(),
            expires_at_unix_ms: expires_at_ms,
            expires_at: expires_at_ms.map(rfc3339),
            revision,
            created_at_unix_ms: created_at_ms,
            updated_at_unix_ms: updated_at_ms,
        }
    }

    /// The credential's key.
    pub fn key(&self) -> Result<CanonicalKey, crate::KeyError> {
        CanonicalKey::new(
            &self.provider,
            &self.server_id,
            &self.user_id,
            &self.token_type,
        )
    }

    /// The secret bytes.
    pub fn secret(&self) -> Result<Secret, FormatError> {
        use base64::Engine;
        match (&self.secret, &self.secret_base64) {
            (Some(s), None) if !s.is_empty() => Ok(Secret::new(s.as_bytes().to_vec())),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(Secret::new)
                .map_err(|_| bad("secret_base64 is not valid base64")),
            (Some(_), Some(_)) => Err(bad("it has both secret and secret_base64")),
            _ => Err(bad("it has no secret")),
        }
    }
}

pub use crate::time::rfc3339;

impl fmt::Debug for pb::ExportedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedCredential")
            .field("metadata", &self.metadata)
            .field("secret", &crate::secret::REDACTED)
            .finish()
    }
}

impl fmt::Debug for pb::RestoreChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The data of an export restore is plaintext secrets.
        let part = match &self.part {
            Some(pb::restore_chunk::Part::Options(o)) => format!("{o:?}"),
            Some(pb::restore_chunk::Part::Data(d)) => format!("{} bytes [REDACTED]", d.len()),
            None => "none".to_owned(),
        };
        f.debug_struct("RestoreChunk").field("part", &part).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(data: &[u8]) -> Manifest {
        Manifest {
            format: SNAPSHOT_FORMAT.into(),
            format_version: 1,
            store_id: "s".into(),
            key_id: "k".into(),
            credential_count: 1,
            highest_revision: 7,
            taken_at: rfc3339(0),
            taken_at_unix_ms: 0,
            size: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }

    #[test]
    fn a_snapshot_file_round_trips_and_damage_is_named() {
        let data = b"SQLite format 3\0 and more".to_vec();
        let mut file = manifest(&data).header();
        file.extend_from_slice(&data);
        assert_eq!(detect(&file), FileKind::Snapshot);
        let (m, bytes) = Manifest::verify_file(&file).unwrap();
        assert_eq!(bytes, &data[..]);
        assert_eq!(m.highest_revision, 7);
        let truncated = &file[..file.len() - 3];
        assert!(
            Manifest::verify_file(truncated)
                .unwrap_err()
                .0
                .contains("truncated")
        );
        let mut flipped = file.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            Manifest::verify_file(&flipped)
                .unwrap_err()
                .0
                .contains("SHA-256")
        );
    }

    #[test]
    fn a_manifest_with_terminal_escapes_is_refused() {
        let data = b"x".to_vec();
        let mut m = manifest(&data);
        m.key_id = "\u{1b}]0;owned\u{7}".into();
        let mut file = m.header();
        file.extend_from_slice(&data);
        assert!(
            Manifest::parse_header(&file)
                .unwrap_err()
                .0
                .contains("key_id")
        );
        let mut m = manifest(&data);
        m.taken_at = "\u{1b}[2J".into();
        let mut file = m.header();
        file.extend_from_slice(&data);
        assert!(
            Manifest::parse_header(&file)
                .unwrap_err()
                .0
                .contains("taken_at")
        );
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
