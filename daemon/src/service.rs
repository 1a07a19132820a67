//! The gRPC services: request validation, then the store. Errors become
//! statuses through `From<ServiceError> for Status` (see `error.rs`).

use std::sync::Arc;
use std::time::Instant;

use keyhaven_proto::key::check_label;
use keyhaven_proto::pb::{self, credentials_server::Credentials, daemon_server::Daemon};
use keyhaven_proto::time::{from_unix_ms, to_unix_ms};
use keyhaven_proto::{CanonicalKey, PROTOCOL, Secret};
use tonic::{Request, Response, Status};

use crate::custody::KeyTier;
use crate::error::ServiceError;
use crate::listener::Peer;
use crate::store::{ListFilter, Metadata, Put, Store};

/// Default `List` page size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest `List` page size.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// State shared by every request.
#[derive(Debug)]
pub struct Shared {
    /// The store.
    pub store: Store,
    /// Largest secret accepted.
    pub max_secret_bytes: usize,
    /// Where the key came from.
    pub key_tier: KeyTier,
    /// Human description of the key source.
    pub key_source: String,
    /// When the daemon started.
    pub started: Instant,
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

fn to_pb(meta: Metadata) -> pb::CredentialMetadata {
    pb::CredentialMetadata {
        key: Some(meta.key.to_pb()),
        revision: meta.revision,
        created_at: Some(from_unix_ms(meta.created_at)),
        updated_at: Some(from_unix_ms(meta.updated_at)),
        expires_at: meta.expires_at.map(from_unix_ms),
        label: meta.label,
    }
}

fn peer<T>(req: &Request<T>) -> Peer {
    req.extensions().get::<Peer>().cloned().unwrap_or_default()
}

/// Logs the outcome of one request: key and caller, never the secret.
fn log_outcome<T>(
    op: &'static str,
    peer: &Peer,
    key: Option<&CanonicalKey>,
    result: &Result<T, Status>,
) {
    let key = key.map(ToString::to_string).unwrap_or_default();
    match result {
        Ok(_) => tracing::debug!(op, %key, uid = peer.uid, pid = peer.pid, "ok"),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition
            ) =>
        {
            tracing::debug!(op, %key, uid = peer.uid, pid = peer.pid, code = ?status.code(), message = status.message(), "declined")
        }
        Err(status) => tracing::info!(
            op, %key, uid = peer.uid, pid = peer.pid,
            code = ?status.code(), message = status.message(), "refused"
        ),
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
        })
    }
}

#[tonic::async_trait]
impl Credentials for CredentialsService {
    async fn store(
        &self,
        request: Request<pb::StoreRequest>,
    ) -> Result<Response<pb::StoreResponse>, Status> {
        let (peer, key) = context(&request, request.get_ref().key.as_ref());
        let result = self.store_one(request.into_inner()).await;
        finish("store", &peer, key.as_ref(), result)
    }

    async fn retrieve(
        &self,
        request: Request<pb::RetrieveRequest>,
    ) -> Result<Response<pb::RetrieveResponse>, Status> {
        let (peer, key) = context(&request, request.get_ref().key.as_ref());
        let result = self.retrieve_one(request.into_inner()).await;
        finish("retrieve", &peer, key.as_ref(), result)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (peer, key) = context(&request, request.get_ref().key.as_ref());
        let result = self.delete_one(request.into_inner()).await;
        finish("delete", &peer, key.as_ref(), result)
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let (peer, _) = context(&request, None);
        let result = self.list_page(request.into_inner()).await;
        finish("list", &peer, None, result)
    }
}

/// The caller and (when valid) the key of a request, for the log line.
fn context<T>(
    request: &Request<T>,
    key: Option<&pb::CredentialKey>,
) -> (Peer, Option<CanonicalKey>) {
    let key = key.and_then(|k| CanonicalKey::from_pb(Some(k)).ok());
    (peer(request), key)
}

/// Turns a handler's result into the gRPC answer and logs the outcome.
fn finish<T>(
    op: &'static str,
    peer: &Peer,
    key: Option<&CanonicalKey>,
    result: Result<T, ServiceError>,
) -> Result<Response<T>, Status> {
    let result = result.map(Response::new).map_err(Status::from);
    log_outcome(op, peer, key, &result);
    result
}

impl CredentialsService {
    async fn store_one(&self, req: pb::StoreRequest) -> Result<pb::StoreResponse, ServiceError> {
        let put = self.validate_put(req)?;
        let (meta, created) = self.shared.store.put(put).await?;
        Ok(pb::StoreResponse {
            metadata: Some(to_pb(meta)),
            created,
        })
    }

    async fn retrieve_one(
        &self,
        req: pb::RetrieveRequest,
    ) -> Result<pb::RetrieveResponse, ServiceError> {
        let key = CanonicalKey::from_pb(req.key.as_ref())?;
        let (meta, secret) = self.shared.store.get(&key).await?;
        Ok(pb::RetrieveResponse {
            metadata: Some(to_pb(meta)),
            secret: secret.into_vec(),
        })
    }

    async fn delete_one(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, ServiceError> {
        let key = CanonicalKey::from_pb(req.key.as_ref())?;
        if req.expected_revision == Some(0) {
            return Err(ServiceError::Invalid(
                "expected_revision 0 (must not exist) makes no sense for delete".into(),
            ));
        }
        let meta = self
            .shared
            .store
            .delete(&key, req.expected_revision)
            .await?;
        Ok(pb::DeleteResponse {
            metadata: Some(to_pb(meta)),
        })
    }
}

impl CredentialsService {
    async fn list_page(&self, req: pb::ListRequest) -> Result<pb::ListResponse, ServiceError> {
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(ServiceError::Invalid(format!(
                    "page_size is {n}; the limit is {MAX_PAGE_SIZE}"
                )));
            }
            n => n,
        };
        // Validate the filter fields with the key rules, using placeholders
        // for the fields not given.
        let filter_field =
            |value: String, match_empty: bool| (!value.is_empty() || match_empty).then_some(value);
        let provider = filter_field(req.provider, false);
        let server_id = filter_field(req.server_id, req.match_empty_server_id);
        let user_id = filter_field(req.user_id, req.match_empty_user_id);
        CanonicalKey::new(
            provider.as_deref().unwrap_or("x"),
            server_id.as_deref().unwrap_or(""),
            user_id.as_deref().unwrap_or(""),
            "",
        )?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(CanonicalKey::parse(&req.page_token).map_err(|_| {
                ServiceError::Invalid("page_token is not one this daemon issued".into())
            })?)
        };
        let filter = ListFilter {
            provider,
            server_id,
            user_id,
            after,
            limit: page_size + 1,
        };
        let mut rows = self.shared.store.list(&filter).await?;
        let next_page_token = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last().map(|m| m.key.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListResponse {
            credentials: rows.into_iter().map(to_pb).collect(),
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
        let count = self
            .shared
            .store
            .count()
            .await
            .map_err(|e| Status::from(ServiceError::from(e)))?;
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL,
            pid: std::process::id(),
            store_path: self.shared.store.path().display().to_string(),
            key_tier: self.shared.key_tier.as_str().to_owned(),
            key_source: self.shared.key_source.clone(),
            credential_count: count,
            uptime_seconds: self.shared.started.elapsed().as_secs(),
        }))
    }
}
