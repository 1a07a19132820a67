//! `keyhaven.v1.Audit`: reading the audit log (admin access).

use std::sync::Arc;

use keyhaven_proto::CanonicalKey;
use keyhaven_proto::pb::{self, audit_server::Audit};
use keyhaven_proto::time::{from_unix_ms, to_unix_ms};
use tonic::{Request, Response, Status};

use crate::rpc::convert::page_size;
use crate::rpc::shared::{Shared, context};
use crate::rpc::status::ServiceError;
use crate::store::audit::{self, Operation};

/// `keyhaven.v1.Audit`.
#[derive(Debug, Clone)]
pub struct AuditService {
    shared: Arc<Shared>,
}

impl AuditService {
    /// Serves `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
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
