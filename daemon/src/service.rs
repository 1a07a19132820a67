//! The gRPC services: identity and policy, request validation, the store,
//! then the audit record and log line. Errors become statuses through
//! `From<ServiceError> for Status` (see `error.rs`).

use std::sync::Arc;
use std::time::Instant;

use keyhaven_proto::key::check_label;
use keyhaven_proto::pb::{
    self, audit_server::Audit, credentials_server::Credentials, daemon_server::Daemon,
};
use keyhaven_proto::time::{from_unix_ms, to_unix_ms};
use keyhaven_proto::{Attributes, CanonicalKey, PROTOCOL, Secret};
use tonic::{Request, Response, Status};

use crate::audit::{self, AuditLog, Operation};
use crate::custody::KeyTier;
use crate::error::ServiceError;
use crate::identity::Identity;
use crate::legacy::ReadThrough;
use crate::listener::Peer;
use crate::policy::{Access, PolicyHandle};
use crate::store::{AttributeChange, ListFilter, Metadata, Put, StoreError};
use crate::vault::Vault;
use crate::watch;

/// Default `List` and audit page size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest `List` and audit page size.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// A List page stops before its credentials' encoding passes this size,
/// well under a client's usual 4 MiB decoding limit.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// State shared by every request.
#[derive(Debug)]
pub struct Shared {
    /// The database, its key custody and (once unlocked) the store.
    pub vault: Vault,
    /// Largest secret accepted.
    pub max_secret_bytes: usize,
    /// grpc.health.v1 status, SERVING only while the store is open.
    pub health: tonic_health::server::HealthReporter,
    /// When the daemon started.
    pub started: Instant,
    /// The audit log.
    pub audit: AuditLog,
    /// The per-app policy.
    pub policy: Arc<PolicyHandle>,
    /// Becomes true when shutdown starts; ends Watch streams.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Legacy keyring read-through on a `Retrieve` miss.
    pub legacy: ReadThrough,
    /// MoveKey may move the key to a weaker tier (`allow_key_downgrade`).
    pub allow_key_downgrade: bool,
    /// Signs and checks `List` and `Audit.Query` page tokens.
    pub pages: PageTokens,
    /// Snapshots: the last one taken, automatic snapshot settings.
    pub backups: crate::backup::Backups,
}

/// Page tokens the daemon can recognise as its own: the position, then an
/// HMAC-SHA256 of it under a key drawn at start-up. A token this daemon did
/// not issue (forged, edited, or from before a restart) is refused
/// INVALID_ARGUMENT instead of silently starting a page somewhere else.
pub struct PageTokens {
    key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens([REDACTED])")
    }
}

const TOKEN_MAC_HEX: usize = 32;

impl PageTokens {
    /// Draws a fresh key.
    pub fn new() -> Result<Self, crate::crypto::CryptoError> {
        Ok(Self {
            key: crate::crypto::DataKey::random_bytes()?,
        })
    }

    fn mac(&self, kind: &str, payload: &str) -> String {
        use hmac::{KeyInit, Mac};
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key[..]) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes a key of any length"),
        };
        mac.update(kind.as_bytes());
        mac.update(&[0u8]);
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..TOKEN_MAC_HEX / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A token for `payload` (a position) of page kind `kind`.
    pub fn issue(&self, kind: &str, payload: &str) -> String {
        format!("{}.{payload}", self.mac(kind, payload))
    }

    /// The position in `token`, if this daemon issued it for `kind`.
    pub fn check<'t>(&self, kind: &str, token: &'t str) -> Result<&'t str, ServiceError> {
        let refused = || ServiceError::Invalid("page_token is not one this daemon issued".into());
        let (mac, payload) = token.split_once('.').ok_or_else(refused)?;
        let expected = self.mac(kind, payload);
        // Constant time: the comparison does not tell how much matched.
        let same = mac.len() == expected.len()
            && mac
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same { Ok(payload) } else { Err(refused()) }
    }
}

/// `keyhaven.v1.Credentials`.
#[derive(Debug, Clone)]
pub struct CredentialsService {
    shared: Arc<Shared>,
}

/// `keyhaven.v1.Daemon`.
#[derive(Debug, Clone)]
pub struct DaemonService {
    shared: Arc<Shared>,
}

/// `keyhaven.v1.Audit`.
#[derive(Debug, Clone)]
pub struct AuditService {
    shared: Arc<Shared>,
}

impl CredentialsService {
    /// Serves `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl DaemonService {
    /// Serves `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl AuditService {
    /// Serves `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Wire form of metadata.
pub fn to_pb(meta: Metadata) -> pb::CredentialMetadata {
    pb::CredentialMetadata {
        key: Some(meta.key.to_pb()),
        revision: meta.revision,
        created_at: Some(from_unix_ms(meta.created_at)),
        updated_at: Some(from_unix_ms(meta.updated_at)),
        expires_at: meta.expires_at.map(from_unix_ms),
        label: meta.label,
        attributes: meta.attributes,
    }
}

/// Wire form of a caller.
pub fn identity_to_pb(id: &Identity) -> pb::CallerIdentity {
    pb::CallerIdentity {
        uid: id.uid,
        pid: id.pid,
        executable: id.executable.as_deref().unwrap_or("").to_owned(),
        app_id: id.app_id.as_deref().unwrap_or("").to_owned(),
    }
}

fn peer<T>(req: &Request<T>) -> Peer {
    req.extensions().get::<Peer>().cloned().unwrap_or_default()
}

/// The caller and (when valid) the key of a request.
fn context<T>(
    request: &Request<T>,
    key: Option<&pb::CredentialKey>,
) -> (Peer, Option<CanonicalKey>) {
    let key = key.and_then(|k| CanonicalKey::from_pb(Some(k)).ok());
    (peer(request), key)
}

impl Shared {
    /// Turns a handler's result into the gRPC answer, records it in the
    /// audit log and logs it (key and caller, never the secret).
    async fn finish<T>(
        &self,
        op: Operation,
        peer: &Peer,
        key: Option<&CanonicalKey>,
        result: Result<T, ServiceError>,
    ) -> Result<Response<T>, Status> {
        let mut result = result.map(Response::new).map_err(Status::from);
        let write = op.is_write();
        if let Err(e) = self
            .audit
            .outcome(&peer.identity, op, key, result.as_ref().err())
            .await
            && !write
        {
            // Nothing is served unrecorded. (A write that got this far is
            // committed; its caller must hear that it happened.)
            result = Err(Status::unavailable(e.to_string()));
        }
        let who = &peer.identity;
        let key = key.map(ToString::to_string).unwrap_or_default();
        // Every request, read or write, is in the audit log with its
        // caller; the journal gets refusals and failures. A line per
        // successful write (an app refreshing its token, an import) is at
        // debug: at load it cost more than the write's share of the commit.
        match &result {
            Ok(_) if write => {
                tracing::debug!(op = op.as_str(), %key, caller = %who.describe(), "done")
            }
            Ok(_) => tracing::debug!(op = op.as_str(), %key, uid = who.uid, pid = who.pid, "ok"),
            Err(status) if write && status.code() == tonic::Code::FailedPrecondition => {
                tracing::info!(op = op.as_str(), %key, caller = %who.describe(), message = status.message(), "declined")
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                tracing::debug!(op = op.as_str(), %key, uid = who.uid, pid = who.pid,
                    code = ?status.code(), message = status.message(), "declined")
            }
            Err(status) => tracing::info!(op = op.as_str(), %key, uid = who.uid, pid = who.pid,
                code = ?status.code(), message = status.message(), "refused"),
        }
        result
    }

    /// Admin access (RotateKey, MoveKey, Audit.Query) under the policy.
    fn admin(&self, who: &Identity) -> Result<(), ServiceError> {
        self.allow(who, Access::Admin, "", "")
    }

    /// Refuses work while the audit log cannot be written.
    fn audited(&self) -> Result<(), ServiceError> {
        if self.audit.is_failing() {
            return Err(ServiceError::Unavailable(
                crate::audit::AuditUnavailable.to_string(),
            ));
        }
        Ok(())
    }

    /// Applies the per-app policy.
    fn allow(
        &self,
        who: &Identity,
        access: Access,
        provider: &str,
        server: &str,
    ) -> Result<(), ServiceError> {
        self.policy
            .get()
            .check(who, access, provider, server)
            .map_err(ServiceError::Denied)
    }
}

/// Checks ListRequest/WatchRequest-style filters; `None` fields match all.
pub fn parse_filter(
    provider: String,
    server_id: String,
    user_id: String,
    match_empty_server_id: bool,
    match_empty_user_id: bool,
    attributes: Attributes,
) -> Result<ListFilter, ServiceError> {
    let field =
        |value: String, match_empty: bool| (!value.is_empty() || match_empty).then_some(value);
    let provider = field(provider, false);
    let server_id = field(server_id, match_empty_server_id);
    let user_id = field(user_id, match_empty_user_id);
    // The key rules, with placeholders for the fields not given.
    CanonicalKey::new(
        provider.as_deref().unwrap_or("x"),
        server_id.as_deref().unwrap_or(""),
        user_id.as_deref().unwrap_or(""),
        "",
    )?;
    check_attributes(&attributes)?;
    Ok(ListFilter {
        provider,
        server_id,
        user_id,
        attributes,
        after: None,
        limit: 0,
    })
}

/// Checks attributes given in a request.
fn check_attributes(attributes: &Attributes) -> Result<(), ServiceError> {
    keyhaven_proto::attributes::check(attributes).map_err(|e| ServiceError::Invalid(e.to_string()))
}

fn page_size(requested: u32) -> Result<u32, ServiceError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(ServiceError::Invalid(format!(
            "page_size is {n}; the limit is {MAX_PAGE_SIZE}"
        ))),
        n => Ok(n),
    }
}

#[tonic::async_trait]
impl Credentials for CredentialsService {
    async fn store(
        &self,
        request: Request<pb::StoreRequest>,
    ) -> Result<Response<pb::StoreResponse>, Status> {
        let (peer, key) = context(&request, request.get_ref().key.as_ref());
        let result = self.store_one(&peer.identity, request.into_inner()).await;
        self.shared
            .finish(Operation::Store, &peer, key.as_ref(), result)
            .await
    }

    async fn retrieve(
        &self,
        request: Request<pb::RetrieveRequest>,
    ) -> Result<Response<pb::RetrieveResponse>, Status> {
        let (peer, key) = context(&request, request.get_ref().key.as_ref());
        let result = self
            .retrieve_one(&peer.identity, request.into_inner())
            .await;
        self.shared
            .finish(Operation::Retrieve, &peer, key.as_ref(), result)
            .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (peer, key) = context(&request, request.get_ref().key.as_ref());
        let result = self.delete_one(&peer.identity, request.into_inner()).await;
        self.shared
            .finish(Operation::Delete, &peer, key.as_ref(), result)
            .await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let (peer, _) = context(&request, None);
        let result = self.list_page(request.into_inner()).await;
        self.shared
            .finish(Operation::List, &peer, None, result)
            .await
    }

    type WatchStream = watch::EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (peer, _) = context(&request, None);
        let result = watch::start(&self.shared, request.into_inner()).await;
        self.shared
            .finish(Operation::Watch, &peer, None, result)
            .await
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let (peer, _) = context(&request, None);
        let result = self.logout_all(&peer.identity, request.into_inner()).await;
        self.shared
            .finish(Operation::Logout, &peer, None, result)
            .await
    }
}

impl CredentialsService {
    fn validate_put(&self, req: pb::StoreRequest) -> Result<Put, ServiceError> {
        let key = CanonicalKey::from_pb(req.key.as_ref())?;
        let secret = Secret::new(req.secret);
        if secret.is_empty() {
            return Err(ServiceError::Invalid("secret must not be empty".into()));
        }
        if secret.len() > self.shared.max_secret_bytes {
            return Err(ServiceError::Invalid(format!(
                "secret is {} bytes; the limit (max_secret_bytes) is {}",
                secret.len(),
                self.shared.max_secret_bytes
            )));
        }
        if let Some(label) = &req.label {
            check_label(label)?;
        }
        check_attributes(&req.attributes)?;
        let attributes = match (req.clear_attributes, req.attributes.is_empty()) {
            (false, true) => AttributeChange::Keep,
            (false, false) => AttributeChange::Replace(req.attributes),
            (true, true) => AttributeChange::Replace(Attributes::new()),
            (true, false) => {
                return Err(ServiceError::Invalid(
                    "clear_attributes is set but attributes are given: send one or the other"
                        .into(),
                ));
            }
        };
        let expires_at = match &req.expires_at {
            None => None,
            Some(ts) => Some(to_unix_ms(ts).ok_or_else(|| {
                ServiceError::Invalid("expires_at is not a valid timestamp".into())
            })?),
        };
        Ok(Put {
            key,
            secret,
            label: req.label,
            expires_at,
            expected_revision: req.expected_revision,
            attributes,
        })
    }

    async fn store_one(
        &self,
        who: &Identity,
        req: pb::StoreRequest,
    ) -> Result<pb::StoreResponse, ServiceError> {
        self.shared.audited()?;
        let put = self.validate_put(req)?;
        self.shared
            .allow(who, Access::Write, put.key.provider(), put.key.server_id())?;
        let (meta, created) = self.shared.vault.store()?.put(put, who).await?;
        Ok(pb::StoreResponse {
            metadata: Some(to_pb(meta)),
            created,
        })
    }

    async fn retrieve_one(
        &self,
        who: &Identity,
        req: pb::RetrieveRequest,
    ) -> Result<pb::RetrieveResponse, ServiceError> {
        let key = CanonicalKey::from_pb(req.key.as_ref())?;
        self.shared
            .allow(who, Access::Read, key.provider(), key.server_id())?;
        let store = self.shared.vault.store()?;
        let (meta, secret) = match store.get(&key).await {
            Err(miss @ StoreError::NotFound { expired: false, .. }) => {
                self.shared
                    .legacy
                    .on_miss(&store, &key, &self.shared.audit, miss)
                    .await?
            }
            other => other?,
        };
        Ok(pb::RetrieveResponse {
            metadata: Some(to_pb(meta)),
            secret: secret.into_vec(),
        })
    }

    async fn delete_one(
        &self,
        who: &Identity,
        req: pb::DeleteRequest,
    ) -> Result<pb::DeleteResponse, ServiceError> {
        let key = CanonicalKey::from_pb(req.key.as_ref())?;
        if req.expected_revision == Some(0) {
            return Err(ServiceError::Invalid(
                "expected_revision 0 (must not exist) makes no sense for delete".into(),
            ));
        }
        self.shared
            .allow(who, Access::Write, key.provider(), key.server_id())?;
        self.shared.audited()?;
        let meta = self
            .shared
            .vault
            .store()?
            .delete(&key, req.expected_revision, who)
            .await?;
        Ok(pb::DeleteResponse {
            metadata: Some(to_pb(meta)),
        })
    }

    async fn logout_all(
        &self,
        who: &Identity,
        req: pb::LogoutRequest,
    ) -> Result<pb::LogoutResponse, ServiceError> {
        // Validate with the key rules; the token type is a placeholder.
        CanonicalKey::new(
            &req.provider,
            &req.server_id,
            req.user_id.as_deref().unwrap_or(""),
            "",
        )?;
        self.shared
            .allow(who, Access::Write, &req.provider, &req.server_id)?;
        self.shared.audited()?;
        let removed = self
            .shared
            .vault
            .store()?
            .logout(&req.provider, &req.server_id, req.user_id.as_deref(), who)
            .await?;
        tracing::info!(
            provider = %req.provider, server_id = %req.server_id,
            user_id = req.user_id.as_deref().unwrap_or("*"), removed = removed.len(),
            uid = who.uid, pid = who.pid, "logout"
        );
        // One audit entry per credential the logout removed, so a key's
        // history shows how it went away.
        for meta in &removed {
            let _ = self
                .shared
                .audit
                .outcome(who, Operation::Logout, Some(&meta.key), None)
                .await;
        }
        Ok(pb::LogoutResponse {
            deleted: removed.into_iter().map(to_pb).collect(),
        })
    }

    async fn list_page(&self, req: pb::ListRequest) -> Result<pb::ListResponse, ServiceError> {
        let page_size = page_size(req.page_size)?;
        let mut filter = parse_filter(
            req.provider,
            req.server_id,
            req.user_id,
            req.match_empty_server_id,
            req.match_empty_user_id,
            req.attributes,
        )?;
        if !req.page_token.is_empty() {
            let after = self.shared.pages.check("list", &req.page_token)?;
            filter.after = Some(CanonicalKey::parse(after).map_err(|_| {
                ServiceError::Invalid("page_token is not one this daemon issued".into())
            })?);
        }
        filter.limit = page_size + 1;
        let rows = self.shared.vault.store()?.list(&filter).await?;
        // A page ends after page_size credentials or before MAX_PAGE_BYTES,
        // whichever comes first (a credential may carry 32 KiB of
        // attributes); the token resumes after its last credential.
        let mut credentials = Vec::with_capacity(rows.len().min(page_size as usize));
        let mut bytes = 0;
        let mut resume_after = None;
        for (i, meta) in rows.into_iter().enumerate() {
            let pb = to_pb(meta);
            bytes += prost::Message::encoded_len(&pb);
            if i == page_size as usize || (bytes > MAX_PAGE_BYTES && i > 0) {
                resume_after = credentials.last().map(|m: &pb::CredentialMetadata| {
                    CanonicalKey::from_pb_stored(m.key.as_ref()).map(|k| k.to_string())
                });
                break;
            }
            credentials.push(pb);
        }
        let next_page_token = match resume_after {
            Some(key) => self.shared.pages.issue("list", &key?),
            None => String::new(),
        };
        Ok(pb::ListResponse {
            credentials,
            next_page_token,
        })
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

    type BackupStream = crate::backup::MessageStream<pb::BackupChunk>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let (peer, _) = context(&request, None);
        let result = match self.shared.admin(&peer.identity) {
            Err(e) => Err(e),
            Ok(()) => crate::backup::backup(&self.shared).await,
        };
        self.shared
            .finish(Operation::Backup, &peer, None, result)
            .await
    }

    type ExportStream = crate::backup::MessageStream<pb::ExportedCredential>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let (peer, _) = context(&request, None);
        let result = match self.shared.admin(&peer.identity) {
            Err(e) => Err(e),
            Ok(()) => {
                crate::backup::export(&self.shared, &peer.identity, request.into_inner()).await
            }
        };
        self.shared
            .finish(Operation::Export, &peer, None, result)
            .await
    }

    type RestoreStream = crate::backup::MessageStream<pb::RestoreOutcome>;

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
                    crate::backup::restore(&self.shared, &peer.identity, request.into_inner()).await
                }
            },
        };
        self.shared
            .finish(Operation::Restore, &peer, None, result)
            .await
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query(
        &self,
        request: Request<pb::AuditQuery>,
    ) -> Result<Response<pb::AuditPage>, Status> {
        let (peer, _) = context(&request, None);
        let result = match self.shared.admin(&peer.identity) {
            Err(e) => Err(e),
            Ok(()) => self.page(request.into_inner()).await,
        };
        self.shared
            .finish(Operation::AuditQuery, &peer, None, result)
            .await
    }
}

impl AuditService {
    async fn page(&self, q: pb::AuditQuery) -> Result<pb::AuditPage, ServiceError> {
        let page_size = page_size(q.page_size)?;
        let key = q
            .key
            .as_ref()
            .map(|k| CanonicalKey::from_pb(Some(k)))
            .transpose()?;
        let time = |ts: &Option<prost_types::Timestamp>, field: &str| {
            ts.as_ref()
                .map(|t| {
                    to_unix_ms(t).ok_or_else(|| {
                        ServiceError::Invalid(format!("{field} is not a valid timestamp"))
                    })
                })
                .transpose()
        };
        let before_id = if q.page_token.is_empty() {
            None
        } else {
            let position = self.shared.pages.check("audit", &q.page_token)?;
            Some(position.parse::<i64>().map_err(|_| {
                ServiceError::Invalid("page_token is not one this daemon issued".into())
            })?)
        };
        let filter = audit::Filter {
            key,
            program: (!q.program.is_empty()).then_some(q.program),
            since: time(&q.since, "since")?,
            until: time(&q.until, "until")?,
            before_id,
            limit: page_size + 1,
        };
        // Everything recorded before this query is visible to it.
        self.shared.audit.flush().await;
        let mut entries = self.shared.audit.query(&filter).await?;
        let next_page_token = if entries.len() > page_size as usize {
            entries.truncate(page_size as usize);
            entries
                .last()
                .map(|e| self.shared.pages.issue("audit", &e.id.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::AuditPage {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    id: u64::try_from(e.id).unwrap_or(0),
                    time: Some(from_unix_ms(e.at)),
                    caller: Some(pb::CallerIdentity {
                        uid: e.uid,
                        pid: e.pid,
                        executable: e.executable,
                        app_id: e.app_id,
                    }),
                    operation: e.operation,
                    key: e.key.map(|k| k.to_pb()),
                    outcome: e.outcome,
                    detail: e.detail,
                })
                .collect(),
            next_page_token,
        })
    }
}
