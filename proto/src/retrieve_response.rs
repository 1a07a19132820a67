//! `keyhaven.v1.RetrieveResponse`, written by hand instead of generated, so
//! that the daemon can send a credential's metadata as bytes it encoded
//! once, when the credential was first read, rather than build and encode
//! the same message again for every read of it.
//!
//! On the wire nothing changes: [`RetrieveResponse::encoded_metadata`] is
//! written as field 1 exactly where `metadata` would be, and a peer decodes
//! it into `metadata` (the tests below check both against the message as
//! prost generates it). Clients never see `encoded_metadata` set.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

use crate::pb::CredentialMetadata;

/// A credential's metadata and its secret.
#[derive(Clone, PartialEq, Default)]
pub struct RetrieveResponse {
    /// The credential's metadata (field 1), decoded.
    pub metadata: Option<CredentialMetadata>,
    /// The secret (field 2).
    pub secret: Vec<u8>,
    /// Field 1 already encoded: a `CredentialMetadata` message, sent in
    /// place of `metadata` when set. Only the daemon sets it; decoding
    /// never does.
    pub encoded_metadata: Option<Bytes>,
}

const METADATA: u32 = 1;
const SECRET: u32 = 2;

impl prost::Message for RetrieveResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        crate::wire::encode_message(
            METADATA,
            self.encoded_metadata.as_ref(),
            self.metadata.as_ref(),
            buf,
        );
        if !self.secret.is_empty() {
            encoding::bytes::encode(SECRET, &self.secret, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            METADATA => encoding::message::merge(
                wire_type,
                self.metadata.get_or_insert_with(Default::default),
                buf,
                ctx,
            )
            .map_err(|mut e| {
                e.push("RetrieveResponse", "metadata");
                e
            }),
            SECRET => {
                encoding::bytes::merge(wire_type, &mut self.secret, buf, ctx).map_err(|mut e| {
                    e.push("RetrieveResponse", "secret");
                    e
                })
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let metadata = crate::wire::message_len(
            METADATA,
            self.encoded_metadata.as_ref(),
            self.metadata.as_ref(),
        );
        let secret = if self.secret.is_empty() {
            0
        } else {
            encoding::bytes::encoded_len(SECRET, &self.secret)
        };
        metadata + secret
    }

    fn clear(&mut self) {
        self.metadata = None;
        self.secret.clear();
        self.encoded_metadata = None;
    }
}

impl std::fmt::Debug for RetrieveResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrieveResponse")
            .field("metadata", &self.metadata)
            .field("secret", &crate::secret::REDACTED)
            .field(
                "encoded_metadata",
                &self.encoded_metadata.as_ref().map(Bytes::len),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb::CredentialKey;

    /// The message as prost generates it from the .proto.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, optional, tag = "1")]
        metadata: Option<CredentialMetadata>,
        #[prost(bytes = "vec", tag = "2")]
        secret: Vec<u8>,
        #[prost(string, tag = "9")]
        later_field: String,
    }

    fn metadata() -> CredentialMetadata {
        CredentialMetadata {
            key: Some(CredentialKey {
                provider: "jellyfin".into(),
                server_id: "srv-1".into(),
                user_id: "alice".into(),
                token_type: "access_token".into(),
            }),
            revision: 42,
            created_at: Some(crate::time::from_unix_ms(1_700_000_000_123)),
            updated_at: Some(crate::time::from_unix_ms(1_700_000_100_456)),
            expires_at: Some(crate::time::from_unix_ms(1_800_000_000_000)),
            label: Some("Living room".into()),
            attributes: [("device_id", "abc"), ("server_url", "https://x")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn it_encodes_like_the_generated_message_with_or_without_preencoded_metadata() {
        for (metadata, secret) in [
            (Some(metadata()), b"tok-123".to_vec()),
            (Some(CredentialMetadata::default()), Vec::new()),
            (None, b"x".to_vec()),
            (None, Vec::new()),
        ] {
            let generated = Generated {
                metadata: metadata.clone(),
                secret: secret.clone(),
                later_field: String::new(),
            }
            .encode_to_vec();
            let decoded = RetrieveResponse {
                metadata: metadata.clone(),
                secret: secret.clone(),
                encoded_metadata: None,
            };
            assert_eq!(decoded.encode_to_vec(), generated);
            assert_eq!(decoded.encoded_len(), generated.len());
            let preencoded = RetrieveResponse {
                metadata: None,
                secret: secret.clone(),
                encoded_metadata: metadata.as_ref().map(|m| m.encode_to_vec().into()),
            };
            assert_eq!(preencoded.encode_to_vec(), generated);
            assert_eq!(preencoded.encoded_len(), generated.len());
            // And a peer reads it back as the metadata it stands for.
            assert_eq!(RetrieveResponse::decode(&generated[..]).unwrap(), decoded);
        }
    }

    #[test]
    fn it_decodes_what_the_generated_message_encodes_and_skips_unknown_fields() {
        let sent = Generated {
            metadata: Some(metadata()),
            secret: b"tok".to_vec(),
            later_field: "from a newer daemon".into(),
        };
        let got = RetrieveResponse::decode(&sent.encode_to_vec()[..]).unwrap();
        assert_eq!(got.metadata, sent.metadata);
        assert_eq!(got.secret, sent.secret);
        assert_eq!(got.encoded_metadata, None);
        let truncated = &sent.encode_to_vec()[..10];
        let err = RetrieveResponse::decode(truncated).unwrap_err();
        assert!(
            err.to_string().contains("RetrieveResponse.metadata"),
            "{err}"
        );
    }
}
