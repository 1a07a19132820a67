//! Between the wire and the store: metadata and callers in their wire form,
//! request filters checked and turned into a [`ListFilter`], page sizes.

use keyhaven_proto::pb::{self};
use keyhaven_proto::time::from_unix_ms;
use keyhaven_proto::{Attributes, CanonicalKey};

use crate::identity::Identity;
use crate::rpc::status::ServiceError;
use crate::store::{ListFilter, Metadata};

/// Default `List` and audit page size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest `List` and audit page size.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// A List page stops before its credentials' encoding passes this size,
/// well under a client's usual 4 MiB decoding limit.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Wire form of metadata.
pub fn to_pb(meta: Metadata) -> pb::CredentialMetadata {
    pb::CredentialMetadata {
        key: Some(meta.key.into_pb()),
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
pub(crate) fn check_attributes(attributes: &Attributes) -> Result<(), ServiceError> {
    keyhaven_proto::attributes::check(attributes).map_err(|e| ServiceError::Invalid(e.to_string()))
}

pub(crate) fn page_size(requested: u32) -> Result<u32, ServiceError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(ServiceError::Invalid(format!(
            "page_size is {n}; the limit is {MAX_PAGE_SIZE}"
        ))),
        n => Ok(n),
    }
}
