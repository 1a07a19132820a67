//! Backups through the daemon, all needing the policy's admin access:
//! [`Client::backup`] streams a sealed snapshot, [`Client::export`] reads
//! every matching credential with its secret, [`Client::restore`] sends a
//! snapshot or a decrypted export for the daemon to apply with
//! compare-and-swap. The file formats are in [`keyhaven_proto::backup`]
//! (re-exported here as [`format`]); the CLI writes and reads the files.

use keyhaven_proto::pb::{self, daemon_client::DaemonClient};
use tonic::transport::Channel;

pub use keyhaven_proto::backup as format;
pub use keyhaven_proto::backup::Manifest;

use crate::{Client, Credential, CredentialKey, Error, ErrorKind, ListFilter, Result, Secret};

/// Bytes per message of a restore.
const CHUNK: usize = 32 * 1024;

/// A snapshot arriving from the daemon: its manifest, then its bytes.
#[derive(Debug)]
pub struct SnapshotStream {
    manifest: Manifest,
    inner: tonic::Streaming<pb::BackupChunk>,
}

impl SnapshotStream {
    /// What the snapshot holds.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The next piece of the SQLite bytes; `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        match self.inner.message().await? {
            None => Ok(None),
            Some(pb::BackupChunk {
                part: Some(pb::backup_chunk::Part::Data(data)),
            }) => Ok(Some(data)),
            Some(_) => Err(Error::new(
                ErrorKind::Other,
                "the daemon sent a second manifest in a snapshot",
            )),
        }
    }
}

/// What a restore is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreKind {
    /// A snapshot's SQLite bytes (with its manifest).
    Snapshot,
    /// The JSON document of a decrypted export.
    Export,
}

/// How a restore treats what is already stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Decide every outcome, write nothing.
    pub dry_run: bool,
    /// Replace credentials whose stored revision is newer than the file's.
    pub overwrite: bool,
}

/// What happened to one credential of a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreResult {
    /// It was absent; created.
    Restored,
    /// The store already held the same secret, label and expiry.
    Unchanged,
    /// The stored revision is newer (or equal); kept.
    Skipped,
    /// The stored revision was older (or `overwrite`); replaced.
    Replaced,
    /// Not written (see the detail).
    Failed,
}

impl RestoreResult {
    /// The word the CLI prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restored => "restored",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Replaced => "replaced",
            Self::Failed => "failed",
        }
    }
}

/// One credential's outcome.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// The credential.
    pub key: CredentialKey,
    /// What happened.
    pub result: RestoreResult,
    /// Its revision in the file.
    pub file_revision: u64,
    /// The revision stored before (0: absent).
    pub stored_revision: u64,
    /// The revision after the write (0: not written, or a dry run).
    pub new_revision: u64,
    /// Why, for failures and expired credentials.
    pub detail: String,
}

impl Client {
    fn admin_client(&self) -> DaemonClient<Channel> {
        DaemonClient::new(self.channel.clone())
            .max_decoding_message_size(2 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024)
    }

    /// Starts a snapshot of the store (admin access): the manifest first.
    pub async fn backup(&self) -> Result<SnapshotStream> {
        let mut inner = self
            .admin_client()
            .backup(self.admin_request(pb::BackupRequest {}))
            .await?
            .into_inner();
        let manifest = match inner.message().await? {
            Some(pb::BackupChunk {
                part: Some(pb::backup_chunk::Part::Manifest(m)),
            }) => Manifest::from_pb(&m)
                .map_err(|e| Error::new(ErrorKind::Other, format!("the daemon's manifest: {e}")))?,
            _ => {
                return Err(Error::new(
                    ErrorKind::Other,
                    "the daemon's snapshot did not start with its manifest",
                ));
            }
        };
        Ok(SnapshotStream { manifest, inner })
    }

    /// Every credential matching `filter`, with its secret (admin access).
    pub async fn export(&self, filter: &ListFilter) -> Result<Vec<Credential>> {
        let request = pb::ExportRequest {
            provider: filter.provider.clone().unwrap_or_default(),
            server_id: filter.server_id.clone().unwrap_or_default(),
            user_id: filter.user_id.clone().unwrap_or_default(),
            match_empty_server_id: filter.server_id.is_some(),
            match_empty_user_id: filter.user_id.is_some(),
            attributes: filter.attributes.clone(),
        };
        let mut stream = self
            .admin_client()
            .export(self.admin_request(request))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(mut item) = stream.message().await? {
            let secret = Secret::new(std::mem::take(&mut item.secret));
            out.push(Credential {
                metadata: crate::metadata_from_pb(item.metadata)?,
                secret,
            });
        }
        Ok(out)
    }

    /// Sends `bytes` (a snapshot's SQLite bytes with its `manifest`, or an
    /// export's JSON document) for the daemon to check whole and apply.
    pub async fn restore(
        &self,
        kind: RestoreKind,
        manifest: Option<&Manifest>,
        bytes: &[u8],
        options: RestoreOptions,
    ) -> Result<Vec<RestoreOutcome>> {
        let first = pb::RestoreChunk {
            part: Some(pb::restore_chunk::Part::Options(pb::RestoreOptions {
                kind: match kind {
                    RestoreKind::Snapshot => pb::RestoreKind::Snapshot,
                    RestoreKind::Export => pb::RestoreKind::Export,
                } as i32,
                manifest: manifest.map(Manifest::to_pb),
                dry_run: options.dry_run,
                overwrite: options.overwrite,
                size: bytes.len() as u64,
            })),
        };
        let mut messages = vec![first];
        messages.extend(bytes.chunks(CHUNK).map(|c| pb::RestoreChunk {
            part: Some(pb::restore_chunk::Part::Data(c.to_vec())),
        }));
        let mut stream = self
            .admin_client()
            .restore(self.admin_request(tokio_stream::iter(messages)))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(o) = stream.message().await? {
            let key = CredentialKey::from_pb(o.key.as_ref())
                .map_err(|_| Error::new(ErrorKind::Other, "the daemon sent an invalid key"))?;
            let result = match pb::RestoreResult::try_from(o.result) {
                Ok(pb::RestoreResult::Restored) => RestoreResult::Restored,
                Ok(pb::RestoreResult::Unchanged) => RestoreResult::Unchanged,
                Ok(pb::RestoreResult::Skipped) => RestoreResult::Skipped,
                Ok(pb::RestoreResult::Replaced) => RestoreResult::Replaced,
                _ => RestoreResult::Failed,
            };
            out.push(RestoreOutcome {
                key,
                result,
                file_revision: o.file_revision,
                stored_revision: o.stored_revision,
                new_revision: o.new_revision,
                detail: o.detail,
            });
        }
        Ok(out)
    }
}
