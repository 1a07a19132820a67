//! `keyhaven.v1.Credentials`: Store, Retrieve, Delete, List, Watch and
//! Logout. Each handler is thin: the caller's context, a `*_one` function
//! returning `Result<_, ServiceError>` (validation, the policy, the store),
//! then [`Shared::finish`], which audits and logs the outcome and turns it
//! into a status.

use std::sync::Arc;

use keyhaven_proto::key::check_label;
use keyhaven_proto::pb::{self, credentials_server::Credentials};
use keyhaven_proto::time::to_unix_ms;
use keyhaven_proto::{Attributes, CanonicalKey, KeyRef, Secret};
use tonic::{Request, Response, Status};

use crate::identity::Identity;
use crate::net::listener::Peer;
use crate::rpc::convert::{MAX_PAGE_BYTES, check_attributes, page_size, parse_filter, to_pb};
use crate::rpc::policy::Access;
use crate::rpc::shared::{Shared, context, peer};
use crate::rpc::status::ServiceError;
use crate::rpc::watch;
use crate::store::audit::Operation;
use crate::store::cache::Cached;
use crate::store::{AttributeChange, Put, StoreError};

/// `keyhaven.v1.Credentials`.
#[derive(Debug, Clone)]
pub struct CredentialsService {
    shared: Arc<Shared>,
}

impl CredentialsService {
    /// Serves `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
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
            .finish(Operation::Store, &peer, key, result)
            .await
    }

    async fn retrieve(
        &self,
        request: Request<pb::RetrieveRequest>,
    ) -> Result<Response<pb::RetrieveResponse>, Status> {
        // The key is checked once, here, where it lies in the request's
        // bytes: the read and the audit record both borrow it.
        let peer = peer(&request);
        let request = request.into_inner();
        let key = request.key_ref();
        if let Ok(key) = key
            && let Some(answer) = self.retrieve_now(&peer, key)
        {
            return answer;
        }
        // Boxed: the future allocated for every Retrieve stays small.
        Box::pin(async {
            let (result, shared) = match &key {
                Ok(key) => match self.retrieve_one(&peer.identity, *key).await {
                    Ok((answer, shared)) => (Ok(answer), shared),
                    Err(e) => (Err(e), None),
                },
                Err(e) => (Err(ServiceError::Key(e.clone())), None),
            };
            self.shared
                .finish_read(&peer, key.ok(), shared.as_ref(), result)
                .await
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (peer, key) = context(&request, request.get_ref().key.as_ref());
        let result = self.delete_one(&peer.identity, request.into_inner()).await;
        self.shared
            .finish(Operation::Delete, &peer, key, result)
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

    /// A Retrieve that the read cache answers and the audit log counts
    /// without waiting, answered here, synchronously. `None` for any
    /// other (a refusal, a cache miss, an audit queue without room): the
    /// general path then does it all, with nothing done twice that shows.
    fn retrieve_now(
        &self,
        peer: &Peer,
        key: KeyRef<'_>,
    ) -> Option<Result<Response<pb::RetrieveResponse>, Status>> {
        self.shared
            .allow(
                &peer.identity,
                Access::Read,
                key.provider(),
                key.server_id(),
            )
            .ok()?;
        let (cached, secret) = self.shared.vault.store().ok()?.get_now(key)?.ok()?;
        self.shared
            .finish_read_now(peer, key, &cached.key, || read_response(&cached, secret))
    }

    /// A read by the general path: the answer, and the read cache's copy
    /// of the key when the read went through the cache (for the audit
    /// record to share).
    async fn retrieve_one(
        &self,
        who: &Identity,
        key: KeyRef<'_>,
    ) -> Result<(pb::RetrieveResponse, Option<Arc<CanonicalKey>>), ServiceError> {
        self.shared
            .allow(who, Access::Read, key.provider(), key.server_id())?;
        let store = self.shared.vault.store()?;
        let (cached, secret) = match store.get_cached(key).await {
            Err(miss @ StoreError::NotFound { expired: false, .. }) => {
                let key = key.to_owned();
                let legacy = self
                    .shared
                    .legacy
                    .on_miss(&store, &key, &self.shared.audit, miss);
                // Boxed: the future of a read the store answers stays small.
                let (meta, secret) = Box::pin(legacy).await?;
                let answer = pb::RetrieveResponse {
                    metadata: Some(to_pb(meta)),
                    secret: secret.into_vec(),
                    encoded_metadata: None,
                };
                return Ok((answer, None));
            }
            other => other?,
        };
        Ok((read_response(&cached, secret), Some(cached.key.clone())))
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
                .outcome(who, Operation::Logout, Some(meta.key.clone()), None)
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

/// Largest metadata encoding kept in the read cache (a login's usually
/// takes 100 to 300 bytes): 4,096 entries then hold at most 16 MiB of
/// encodings, however large the attributes that a program stores.
const KEPT_METADATA_BYTES: usize = 4096;

/// The answer to a Retrieve of a stored credential. Its metadata is encoded
/// once per cached credential; every later read sends the same bytes.
fn read_response(cached: &Cached, secret: Secret) -> pb::RetrieveResponse {
    let metadata = match cached.encoded_metadata.get() {
        Some(kept) => kept.clone(),
        None => {
            let encoded: prost::bytes::Bytes =
                prost::Message::encode_to_vec(&to_pb(cached.meta.clone())).into();
            if encoded.len() <= KEPT_METADATA_BYTES {
                // Another read may have kept the same bytes first.
                let _ = cached.encoded_metadata.set(encoded.clone());
            }
            encoded
        }
    };
    pb::RetrieveResponse {
        metadata: None,
        secret: secret.into_vec(),
        encoded_metadata: Some(metadata),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::store::Metadata;
    use crate::store::crypto::Sealed;

    fn cached(attribute_bytes: usize) -> Cached {
        let key = CanonicalKey::new("jellyfin", "srv", "alice", "").unwrap();
        let attributes: Attributes = (0..4)
            .map(|i| (format!("a{i}"), "v".repeat(attribute_bytes / 4)))
            .collect();
        Cached {
            meta: Metadata {
                key: key.clone(),
                revision: 7,
                created_at: 1_700_000_000_000,
                updated_at: 1_700_000_000_500,
                expires_at: None,
                label: Some("tv".into()),
                attributes,
            },
            sealed: Sealed {
                nonce: vec![0; 12],
                ciphertext: vec![0; 32],
            },
            key_id: "k".into(),
            key: Arc::new(key),
            encoded_metadata: Default::default(),
        }
    }

    /// What a client decodes from the answer.
    fn decoded(cached: &Cached) -> pb::RetrieveResponse {
        let sent = read_response(cached, Secret::from("tok"));
        pb::RetrieveResponse::decode(sent.encode_to_vec().as_slice()).unwrap()
    }

    #[test]
    fn metadata_is_encoded_once_and_kept_only_when_small() {
        let small = cached(100);
        let first = decoded(&small);
        assert!(small.encoded_metadata.get().is_some(), "a login's is kept");
        assert_eq!(decoded(&small), first, "and sent again as it was");
        assert_eq!(first.metadata, Some(to_pb(small.meta.clone())));
        assert_eq!(first.secret, b"tok");

        let large = cached(2 * KEPT_METADATA_BYTES);
        let first = decoded(&large);
        assert!(
            large.encoded_metadata.get().is_none(),
            "a large one is encoded for each read, not kept"
        );
        assert_eq!(decoded(&large), first);
        assert_eq!(first.metadata, Some(to_pb(large.meta.clone())));
    }
}
