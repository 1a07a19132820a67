//! `keyhaven.v1.Daemon`: Status, and the admin calls (RotateKey, MoveKey,
//! Backup, Export, Restore).

use std::sync::Arc;

use keyhaven_proto::PROTOCOL;
use keyhaven_proto::pb::{self, daemon_server::Daemon};
use keyhaven_proto::time::from_unix_ms;
use tonic::{Request, Response, Status};

use crate::keys::custody::KeyTier;
use crate::rpc::shared::{Shared, context};
use crate::rpc::status::ServiceError;
use crate::store::audit::Operation;

/// `keyhaven.v1.Daemon`.
#[derive(Debug, Clone)]
pub struct DaemonService {
    shared: Arc<Shared>,
}

impl DaemonService {
    /// Serves `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl Daemon for DaemonService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let vault = &self.shared.vault;
        let count = vault
            .database()
            .count()
            .await
            .map_err(|e| Status::from(ServiceError::from(e)))?;
        let key = vault.state();
        let tier = key.tier;
        let key_source = tier
            .map(|t| {
                key.reports
                    .iter()
                    .find(|r| r.tier == t)
                    .map(|r| r.detail.clone())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL,
            pid: std::process::id(),
            store_path: vault.database().path().display().to_string(),
            key_tier: tier.map(|t| t.as_str().to_owned()).unwrap_or_default(),
            key_source,
            credential_count: count,
            uptime_seconds: self.shared.started.elapsed().as_secs(),
            key_problem: key.problem.unwrap_or_default(),
            key_tiers: key
                .reports
                .iter()
                .map(|r| pb::KeyTierState {
                    tier: r.tier.as_str().to_owned(),
                    state: r.state.as_str().to_owned(),
                    detail: r.detail.clone(),
                })
                .collect(),
            key_id: key.key_id.unwrap_or_default(),
            policy: self.shared.policy.describe(),
            last_backup_at: self.shared.backups.last().map(|(at, _)| from_unix_ms(at)),
            last_backup: self
                .shared
                .backups
                .last()
                .map(|(_, w)| w)
                .unwrap_or_default(),
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let (peer, _) = context(&request, None);
        let result = match self.shared.admin(&peer.identity) {
            Err(e) => Err(e),
            Ok(()) => self
                .shared
                .vault
                .rotate()
                .await
                .map(|r| pb::RotateKeyResponse {
                    old_key_id: r.old_key_id,
                    new_key_id: r.new_key_id,
                    resealed: r.resealed,
                    tier: r.tier.as_str().to_owned(),
                })
                .map_err(ServiceError::from),
        };
        self.shared
            .finish(Operation::RotateKey, &peer, None, result)
            .await
    }

    async fn move_key(
        &self,
        request: Request<pb::MoveKeyRequest>,
    ) -> Result<Response<pb::MoveKeyResponse>, Status> {
        let (peer, _) = context(&request, None);
        let to = request.get_ref().to.clone();
        let result = match (self.shared.admin(&peer.identity), KeyTier::parse(&to)) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(ServiceError::Invalid(format!(
                "to = {to:?}: use \"keyring\" or \"file\""
            ))),
            (Ok(()), Some(target)) => self
                .shared
                .vault
                .move_to(target, self.shared.allow_key_downgrade)
                .await
                .map(|(from, key_id)| pb::MoveKeyResponse {
                    from: from.as_str().to_owned(),
                    to: target.as_str().to_owned(),
                    key_id,
                })
                .map_err(ServiceError::from),
        };
        self.shared
            .finish(Operation::MoveKey, &peer, None, result)
            .await
    }

    type BackupStream = crate::rpc::backup::MessageStream<pb::BackupChunk>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let (peer, _) = context(&request, None);
        let result = match self.shared.admin(&peer.identity) {
            Err(e) => Err(e),
            Ok(()) => crate::rpc::backup::backup(&self.shared).await,
        };
        self.shared
            .finish(Operation::Backup, &peer, None, result)
            .await
    }

    type ExportStream = crate::rpc::backup::MessageStream<pb::ExportedCredential>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let (peer, _) = context(&request, None);
        let result = match self.shared.admin(&peer.identity) {
            Err(e) => Err(e),
            Ok(()) => {
                crate::rpc::backup::export(&self.shared, &peer.identity, request.into_inner()).await
            }
        };
        self.shared
            .finish(Operation::Export, &peer, None, result)
            .await
    }

    type RestoreStream = crate::rpc::backup::MessageStream<pb::RestoreOutcome>;

    async fn restore(
        &self,
        request: Request<tonic::Streaming<pb::RestoreChunk>>,
    ) -> Result<Response<Self::RestoreStream>, Status> {
        let (peer, _) = context(&request, None);
        let result = match self.shared.admin(&peer.identity) {
            Err(e) => Err(e),
            Ok(()) => match self.shared.audited() {
                Err(e) => Err(e),
                Ok(()) => {
                    crate::rpc::backup::restore(&self.shared, &peer.identity, request.into_inner())
                        .await
                }
            },
        };
        self.shared
            .finish(Operation::Restore, &peer, None, result)
            .await
    }
}
