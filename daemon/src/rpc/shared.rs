//! What every RPC shares: the daemon's state ([`Shared`]), the caller's
//! context, the policy checks, and [`Shared::finish`], through which every
//! outcome is audited, logged (never a secret) and turned into a status.

use std::sync::Arc;
use std::time::Instant;

use keyhaven_proto::pb;
use keyhaven_proto::{CanonicalKey, KeyRef};
use tonic::{Request, Response, Status};

use crate::identity::Identity;
use crate::keys::vault::Vault;
use crate::net::listener::Peer;
use crate::rpc::legacy::ReadThrough;
use crate::rpc::policy::{Access, PolicyHandle};
use crate::rpc::status::ServiceError;
use crate::store::audit::{AuditLog, Operation};

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
    pub backups: crate::rpc::snapshots::Backups,
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
    pub fn new() -> Result<Self, crate::store::crypto::CryptoError> {
        Ok(Self {
            key: crate::store::crypto::DataKey::random_bytes()?,
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

pub(crate) fn peer<T>(req: &Request<T>) -> Peer {
    req.extensions().get::<Peer>().cloned().unwrap_or_default()
}

/// A key for a log line, written only when the line is: formatting a key
/// costs more than a Retrieve's read.
struct OptionalKey<'a>(Option<KeyRef<'a>>);

impl std::fmt::Display for OptionalKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(key) => key.fmt(f),
            None => Ok(()),
        }
    }
}

/// The journal's line for a request's outcome. Every request, read or
/// write, is in the audit log with its caller; the journal gets refusals
/// and failures. A line per successful write (an app refreshing its token,
/// an import) is at debug: at load it cost more than the write's share of
/// the commit.
fn log_outcome(op: Operation, who: &Identity, key: Option<KeyRef<'_>>, refused: Option<&Status>) {
    let write = op.is_write();
    // Formatted only if a line is written: most outcomes log nothing.
    let key = OptionalKey(key);
    match refused {
        None if write => {
            tracing::debug!(op = op.as_str(), %key, caller = %who.describe(), "done")
        }
        None => tracing::debug!(op = op.as_str(), %key, uid = who.uid, pid = who.pid, "ok"),
        Some(status) if write && status.code() == tonic::Code::FailedPrecondition => {
            tracing::info!(op = op.as_str(), %key, caller = %who.describe(), message = status.message(), "declined")
        }
        Some(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition
            ) =>
        {
            tracing::debug!(op = op.as_str(), %key, uid = who.uid, pid = who.pid,
                code = ?status.code(), message = status.message(), "declined")
        }
        Some(status) => tracing::info!(op = op.as_str(), %key, uid = who.uid, pid = who.pid,
            code = ?status.code(), message = status.message(), "refused"),
    }
}

/// The caller and (when valid) the key of a request.
pub(crate) fn context<T>(
    request: &Request<T>,
    key: Option<&pb::CredentialKey>,
) -> (Peer, Option<CanonicalKey>) {
    let key = key.and_then(|k| CanonicalKey::from_pb(Some(k)).ok());
    (peer(request), key)
}

impl Shared {
    /// Turns a handler's result into the gRPC answer, logs it (key and
    /// caller, never the secret) and records it in the audit log, which
    /// takes the key.
    pub(crate) async fn finish<T>(
        &self,
        op: Operation,
        peer: &Peer,
        key: Option<CanonicalKey>,
        result: Result<T, ServiceError>,
    ) -> Result<Response<T>, Status> {
        let result = result.map(Response::new).map_err(Status::from);
        log_outcome(
            op,
            &peer.identity,
            key.as_ref().map(CanonicalKey::view),
            result.as_ref().err(),
        );
        let recorded = self
            .audit
            .request(peer.conn, &peer.identity, op, key, result.as_ref().err())
            .await;
        Self::served(op, peer, recorded, result)
    }

    /// [`Self::finish`] for a Retrieve, whose key is borrowed from the
    /// request: a successful read is counted in the audit log without a
    /// copy of the key (`shared`, the read cache's, when the read found
    /// one).
    pub(crate) async fn finish_read<T>(
        &self,
        peer: &Peer,
        key: Option<KeyRef<'_>>,
        shared: Option<&Arc<CanonicalKey>>,
        result: Result<T, ServiceError>,
    ) -> Result<Response<T>, Status> {
        let op = Operation::Retrieve;
        let result = result.map(Response::new).map_err(Status::from);
        log_outcome(op, &peer.identity, key, result.as_ref().err());
        let recorded = match (&result, key) {
            (Ok(_), Some(key)) => {
                self.audit
                    .read(peer.conn, &peer.identity, key, shared)
                    .await
            }
            // Boxed: the future of a successful read stays small.
            (result, key) => {
                let key = key.map(KeyRef::to_owned);
                let status = result.as_ref().err();
                Box::pin(
                    self.audit
                        .request(peer.conn, &peer.identity, op, key, status),
                )
                .await
            }
        };
        Self::served(op, peer, recorded, result)
    }

    /// [`Self::finish_read`] for a read that succeeded, if the audit log
    /// counts it without waiting; `None` (and nothing logged or recorded)
    /// if it would have to wait.
    pub(crate) fn finish_read_now<T>(
        &self,
        peer: &Peer,
        key: KeyRef<'_>,
        shared: &Arc<CanonicalKey>,
        answer: impl FnOnce() -> T,
    ) -> Option<Result<Response<T>, Status>> {
        let op = Operation::Retrieve;
        let recorded = self
            .audit
            .try_read(peer.conn, &peer.identity, key, Some(shared))?;
        log_outcome(op, &peer.identity, Some(key), None);
        Some(Self::served(
            op,
            peer,
            recorded,
            Ok(Response::new(answer())),
        ))
    }

    /// The answer to a request whose outcome the audit log took, or
    /// refused to take.
    fn served<T>(
        op: Operation,
        peer: &Peer,
        recorded: Result<(), crate::store::audit::AuditUnavailable>,
        result: Result<Response<T>, Status>,
    ) -> Result<Response<T>, Status> {
        let write = op.is_write();
        match recorded {
            // Nothing is served unrecorded. (A write that got this far is
            // committed; its caller must hear that it happened.)
            Err(e) if !write => {
                tracing::info!(
                    op = op.as_str(),
                    uid = peer.identity.uid,
                    pid = peer.identity.pid,
                    "refused: the audit log cannot be written"
                );
                Err(Status::unavailable(e.to_string()))
            }
            _ => result,
        }
    }

    /// Admin access (RotateKey, MoveKey, Audit.Query) under the policy.
    pub(crate) fn admin(&self, who: &Identity) -> Result<(), ServiceError> {
        self.allow(who, Access::Admin, "", "")
    }

    /// Refuses work while the audit log cannot be written.
    pub(crate) fn audited(&self) -> Result<(), ServiceError> {
        if self.audit.is_failing() {
            return Err(ServiceError::Unavailable(
                crate::store::audit::AuditUnavailable.to_string(),
            ));
        }
        Ok(())
    }

    /// Applies the per-app policy.
    pub(crate) fn allow(
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
