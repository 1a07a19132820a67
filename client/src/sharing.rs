//! Sharing one login: [`Client::watch`], [`Client::logout`] and
//! [`Client::audit`], with their types.

use std::time::{SystemTime, UNIX_EPOCH};

use keyhaven_proto::pb::{self, audit_client::AuditClient};
use keyhaven_proto::time::{from_unix_ms, to_unix_ms};

use crate::{
    Client, CredentialKey, Error, ErrorKind, ListFilter, Metadata, Result, metadata_from_pb,
    ms_to_system, system_to_ms,
};

/// What a [`WatchEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A credential was created.
    Stored,
    /// A credential was replaced.
    Updated,
    /// A credential was deleted (Delete or Logout).
    Deleted,
    /// A credential expired and was removed.
    Expired,
    /// Part of the initial snapshot.
    Snapshot,
    /// The snapshot is complete; live events follow.
    Synced,
    /// This watcher missed [`WatchEvent::missed`] events; re-sync.
    Lagged,
    /// A kind this client does not know.
    Unknown,
}

impl EventKind {
    /// The name used in the CLI's output: `STORED`, `UPDATED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "STORED",
            Self::Updated => "UPDATED",
            Self::Deleted => "DELETED",
            Self::Expired => "EXPIRED",
            Self::Snapshot => "SNAPSHOT",
            Self::Synced => "SYNCED",
            Self::Lagged => "LAGGED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// Which program acted, as the daemon saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// Uid.
    pub uid: u32,
    /// Pid at connect time.
    pub pid: i32,
    /// Executable path, when known (identifies; a program of the same user
    /// can fake it).
    pub executable: Option<String>,
    /// Flatpak app id or `snap.<name>`, when sandboxed (reliable).
    pub app_id: Option<String>,
}

/// One change seen by [`Client::watch`]. Never carries a secret.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventKind,
    /// The credential after the change; for deletions, its last state with
    /// the deletion's revision. `None` for `Synced` and `Lagged`.
    pub metadata: Option<Metadata>,
    /// When it happened.
    pub time: SystemTime,
    /// Who did it; `None` for expiry and snapshot events.
    pub actor: Option<Caller>,
    /// For `Lagged`: how many events were dropped.
    pub missed: u64,
}

/// The stream returned by [`Client::watch`]; also a `Stream`.
#[derive(Debug)]
pub struct Watch {
    inner: tonic::Streaming<pb::WatchEvent>,
    /// The first message, read early to bound it with a deadline.
    first: Option<Result<Option<pb::WatchEvent>, tonic::Status>>,
}

impl Watch {
    /// The next event; `None` when the daemon ended the stream.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        let message = match self.first.take() {
            Some(first) => first,
            None => self.inner.message().await,
        };
        match message {
            Ok(Some(event)) => Some(event_from_pb(event)),
            Ok(None) => None,
            Err(status) => Some(Err(Error::from(status))),
        }
    }
}

impl tokio_stream::Stream for Watch {
    type Item = Result<WatchEvent>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(
                first
                    .transpose()
                    .map(|r| r.map_err(Error::from).and_then(event_from_pb)),
            );
        }
        std::pin::Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Error::from).and_then(event_from_pb)))
    }
}

/// What [`Client::audit`] selects.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this credential.
    pub key: Option<CredentialKey>,
    /// Only callers whose executable or app id contains this.
    pub program: Option<String>,
    /// Only at or after.
    pub since: Option<SystemTime>,
    /// Only before.
    pub until: Option<SystemTime>,
    /// At most this many (0: 100).
    pub limit: usize,
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Increasing id.
    pub id: u64,
    /// When.
    pub time: SystemTime,
    /// Who.
    pub caller: Caller,
    /// `retrieve`, `store`, `delete`, `logout`, `list`, `watch`, `connect`.
    pub operation: String,
    /// Which credential, when the operation had one.
    pub key: Option<CredentialKey>,
    /// `OK` or the gRPC code name of the refusal.
    pub outcome: String,
    /// Why, for refusals.
    pub detail: String,
}

impl Client {
    /// A live feed of changes matching `filter`. With `snapshot`, the feed
    /// starts with one [`EventKind::Snapshot`] per matching credential and
    /// an [`EventKind::Synced`], so nothing is missed between listing and
    /// watching.
    pub async fn watch(&self, filter: &ListFilter, snapshot: bool) -> Result<Watch> {
        let request = pb::WatchRequest {
            provider: filter.provider.clone().unwrap_or_default(),
            server_id: filter.server_id.clone().unwrap_or_default(),
            user_id: filter.user_id.clone().unwrap_or_default(),
            match_empty_server_id: filter.server_id.is_some(),
            match_empty_user_id: filter.user_id.is_some(),
            snapshot,
            attributes: filter.attributes.clone(),
        };
        let mut inner = self
            .credentials()
            .watch(self.request(request))
            .await?
            .into_inner();
        // A snapshot's first event is due at once: a daemon that accepted
        // the call and sends nothing is as hung as one that does not answer.
        // Without a snapshot, the first event waits for the first change.
        let first = if snapshot {
            match tokio::time::timeout(self.timeout(), inner.message()).await {
                Ok(first) => Some(first),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "keyhavend accepted the watch but sent no snapshot within {}s",
                            self.timeout().as_secs_f32()
                        ),
                    ));
                }
            }
        } else {
            None
        };
        Ok(Watch { inner, first })
    }

    /// Logs out of a server: deletes every credential of `provider` and
    /// `server_id` (and `user_id`, when given) in one transaction. Returns
    /// what was deleted; nothing to delete is not an error.
    pub async fn logout(
        &self,
        provider: &str,
        server_id: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<Metadata>> {
        let request = pb::LogoutRequest {
            provider: provider.to_owned(),
            server_id: server_id.to_owned(),
            user_id: user_id.map(str::to_owned),
        };
        let response = self
            .credentials()
            .logout(self.request(request))
            .await?
            .into_inner();
        response
            .deleted
            .into_iter()
            .map(|m| metadata_from_pb(Some(m)))
            .collect()
    }

    /// Audit entries matching `query`, newest first, at most `query.limit`.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut client = AuditClient::new(self.channel.clone());
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let mut out = Vec::new();
        let mut page_token = String::new();
        while out.len() < limit {
            let want = u32::try_from((limit - out.len()).min(1000)).unwrap_or(1000);
            let request = pb::AuditQuery {
                key: query.key.as_ref().map(CredentialKey::to_pb),
                program: query.program.clone().unwrap_or_default(),
                since: query.since.map(|t| from_unix_ms(system_to_ms(t))),
                until: query.until.map(|t| from_unix_ms(system_to_ms(t))),
                page_size: want,
                page_token,
            };
            let page = client.query(self.request(request)).await?.into_inner();
            for e in page.entries {
                out.push(entry_from_pb(e)?);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(out)
    }
}

fn entry_from_pb(e: pb::AuditEntry) -> Result<AuditEntry> {
    let key = e
        .key
        .map(|k| CredentialKey::from_pb_stored(Some(&k)))
        .transpose()
        .map_err(|_| Error::new(ErrorKind::Other, "the daemon sent an invalid key"))?;
    Ok(AuditEntry {
        id: e.id,
        time: time_from_pb(e.time)?.unwrap_or(UNIX_EPOCH),
        caller: caller_from_pb(e.caller),
        operation: e.operation,
        key,
        outcome: e.outcome,
        detail: e.detail,
    })
}

fn caller_from_pb(c: Option<pb::CallerIdentity>) -> Caller {
    let c = c.unwrap_or_default();
    let some = |s: String| (!s.is_empty()).then_some(s);
    Caller {
        uid: c.uid,
        pid: c.pid,
        executable: some(c.executable),
        app_id: some(c.app_id),
    }
}

fn time_from_pb(ts: Option<prost_types::Timestamp>) -> Result<Option<SystemTime>> {
    ts.map(|ts| {
        to_unix_ms(&ts)
            .map(ms_to_system)
            .ok_or_else(|| Error::new(ErrorKind::Other, "the daemon sent an invalid timestamp"))
    })
    .transpose()
}

fn event_from_pb(e: pb::WatchEvent) -> Result<WatchEvent> {
    let kind = match e.kind() {
        pb::EventKind::Stored => EventKind::Stored,
        pb::EventKind::Updated => EventKind::Updated,
        pb::EventKind::Deleted => EventKind::Deleted,
        pb::EventKind::Expired => EventKind::Expired,
        pb::EventKind::Snapshot => EventKind::Snapshot,
        pb::EventKind::Synced => EventKind::Synced,
        pb::EventKind::Lagged => EventKind::Lagged,
        pb::EventKind::Unspecified => EventKind::Unknown,
    };
    Ok(WatchEvent {
        kind,
        metadata: e.metadata.map(|m| metadata_from_pb(Some(m))).transpose()?,
        time: time_from_pb(e.time)?.unwrap_or(UNIX_EPOCH),
        actor: e.actor.map(|a| caller_from_pb(Some(a))),
        missed: e.missed,
    })
}
