//! `keyhaven.v1.RetrieveRequest`, written by hand instead of generated, so
//! that the daemon reads the key of a Retrieve where it lies in the
//! request's bytes instead of copying its four strings out first.
//!
//! The wire form is the .proto's: field 1, a `CredentialKey` message. A
//! client sets [`RetrieveRequest::key`]; decoding keeps field 1 as received,
//! in [`RetrieveRequest::received_key`] (a slice of the request's buffer,
//! not a copy), and [`RetrieveRequest::key_ref`] checks and reads it.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

use crate::key::{KeyError, KeyRef};
use crate::pb::CredentialKey;

/// Which credential to read.
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct RetrieveRequest {
    /// The key to send (field 1).
    pub key: Option<CredentialKey>,
    /// Field 1 as received: an encoded `CredentialKey`. Set by decoding,
    /// read through [`RetrieveRequest::key_ref`]; a client leaves it `None`.
    pub received_key: Option<Bytes>,
}

const KEY: u32 = 1;

impl RetrieveRequest {
    /// A request for `key`.
    pub fn new(key: CredentialKey) -> Self {
        Self {
            key: Some(key),
            received_key: None,
        }
    }

    /// The key, checked by the rules of [`KeyRef::new`]: the received one
    /// if the request was decoded, else [`RetrieveRequest::key`].
    pub fn key_ref(&self) -> Result<KeyRef<'_>, KeyError> {
        match (&self.received_key, &self.key) {
            (Some(raw), _) => {
                let [p, s, u, t] = key_fields(raw)?;
                KeyRef::new(p, s, u, t)
            }
            (None, Some(k)) => KeyRef::new(&k.provider, &k.server_id, &k.user_id, &k.token_type),
            (None, None) => Err(KeyError::MissingKey),
        }
    }
}

/// The four string fields of an encoded `CredentialKey` (absent ones
/// empty; for a repeated field the last wins, as in any protobuf decoder;
/// unknown fields are skipped).
fn key_fields(raw: &[u8]) -> Result<[&str; 4], KeyError> {
    const NOT_A_KEY: KeyError = KeyError::Malformed("the key is not a valid CredentialKey message");
    const NOT_UTF8: KeyError = KeyError::Malformed("a key field is not UTF-8");
    // A key of ASCII fields shorter than 128 bytes, which is almost every
    // key, is ASCII throughout: checked as text once, its fields are then
    // slices of that text.
    let text = if raw.is_ascii() {
        std::str::from_utf8(raw).ok()
    } else {
        None
    };
    let mut fields = [""; 4];
    let mut rest = raw;
    while !rest.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut rest).map_err(|_| NOT_A_KEY)?;
        match tag {
            1..=4 => {
                if wire_type != WireType::LengthDelimited {
                    return Err(NOT_A_KEY);
                }
                let len = encoding::decode_varint(&mut rest).map_err(|_| NOT_A_KEY)?;
                let len = usize::try_from(len).map_err(|_| NOT_A_KEY)?;
                if len > rest.len() {
                    return Err(NOT_A_KEY);
                }
                let start = raw.len() - rest.len();
                let value = match text {
                    Some(text) => text.get(start..start + len).ok_or(NOT_UTF8)?,
                    None => std::str::from_utf8(&rest[..len]).map_err(|_| NOT_UTF8)?,
                };
                fields[tag as usize - 1] = value;
                rest = &rest[len..];
            }
            _ => encoding::skip_field(wire_type, tag, &mut rest, DecodeContext::default())
                .map_err(|_| NOT_A_KEY)?,
        }
    }
    Ok(fields)
}

impl prost::Message for RetrieveRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        crate::wire::encode_message(KEY, self.received_key.as_ref(), self.key.as_ref(), buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != KEY {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        // Into `Bytes`: a slice of the buffer, not a copy, when the buffer
        // is `Bytes` or `BytesMut`, as tonic's is.
        let mut raw = Bytes::new();
        encoding::bytes::merge(wire_type, &mut raw, buf, ctx).map_err(|mut e| {
            e.push("RetrieveRequest", "key");
            e
        })?;
        // A message field sent twice is the merge of both, which is what
        // decoding their concatenation gives.
        self.received_key = Some(match self.received_key.take() {
            Some(first) => [first, raw].concat().into(),
            None => raw,
        });
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        crate::wire::message_len(KEY, self.received_key.as_ref(), self.key.as_ref())
    }

    fn clear(&mut self) {
        self.key = None;
        self.received_key = None;
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The message as prost generates it from the .proto.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, optional, tag = "1")]
        key: Option<CredentialKey>,
        #[prost(string, tag = "7")]
        later_field: String,
    }

    fn wire_key(p: &str, s: &str, u: &str, t: &str) -> CredentialKey {
        CredentialKey {
            provider: p.into(),
            server_id: s.into(),
            user_id: u.into(),
            token_type: t.into(),
        }
    }

    #[test]
    fn it_encodes_like_the_generated_message_and_reads_back_the_same_key() {
        for key in [
            Some(wire_key("jellyfin", "srv-1", "alice", "access_token")),
            Some(wire_key("plex", "", "", "")),
            Some(wire_key("emby", "serveur-é", "José", "")),
            Some(wire_key("jellyfin", &"s".repeat(200), "u", "")),
            Some(CredentialKey::default()),
            None,
        ] {
            let generated = Generated {
                key: key.clone(),
                later_field: String::new(),
            }
            .encode_to_vec();
            let sent = RetrieveRequest {
                key: key.clone(),
                received_key: None,
            };
            assert_eq!(sent.encode_to_vec(), generated);
            assert_eq!(sent.encoded_len(), generated.len());
            let received = RetrieveRequest::decode(Bytes::from(generated.clone())).unwrap();
            assert_eq!(received.key, None, "decoding keeps the bytes");
            assert_eq!(
                received.encode_to_vec(),
                generated,
                "and sends them on as they came"
            );
            assert_eq!(received.key_ref(), sent.key_ref());
        }
        let read = RetrieveRequest::new(wire_key("jellyfin", "srv-1", "alice", ""));
        let received = RetrieveRequest::decode(Bytes::from(read.encode_to_vec())).unwrap();
        let key = received.key_ref().unwrap();
        assert_eq!(
            key.fields(),
            ["jellyfin", "srv-1", "alice", crate::key::DEFAULT_TOKEN_TYPE]
        );
        assert_eq!(
            RetrieveRequest::default().key_ref(),
            Err(KeyError::MissingKey)
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_a_repeated_key_is_merged() {
        let sent = Generated {
            key: Some(wire_key("jellyfin", "srv", "bob", "")),
            later_field: "from a newer client".into(),
        };
        let received = RetrieveRequest::decode(&sent.encode_to_vec()[..]).unwrap();
        assert_eq!(
            received.key_ref().unwrap().to_owned(),
            crate::CanonicalKey::new("jellyfin", "srv", "bob", "").unwrap()
        );
        // Field 1 twice: the second's user id wins, the first's server id
        // stays, as a generated decoder merges them.
        let mut twice = Generated {
            key: Some(wire_key("jellyfin", "srv", "bob", "")),
            later_field: String::new(),
        }
        .encode_to_vec();
        twice.extend(
            Generated {
                key: Some(wire_key("", "", "carol", "")),
                later_field: String::new(),
            }
            .encode_to_vec(),
        );
        let generated = Generated::decode(&twice[..]).unwrap();
        let received = RetrieveRequest::decode(&twice[..]).unwrap();
        let key = generated.key.unwrap();
        assert_eq!(
            received.key_ref().unwrap().fields(),
            [
                key.provider.as_str(),
                &key.server_id,
                &key.user_id,
                crate::key::DEFAULT_TOKEN_TYPE
            ]
        );
    }

    #[test]
    fn a_malformed_or_non_utf8_key_is_refused_as_a_key_error() {
        // A key whose user id is not UTF-8.
        let mut bad = vec![0x0a, 0x0c];
        bad.extend([0x0a, 0x04]);
        bad.extend(b"plex");
        bad.extend([0x1a, 0x02, 0xff, 0xfe]);
        bad.extend([0x12, 0x00]);
        let received = RetrieveRequest::decode(&bad[..]).unwrap();
        assert_eq!(
            received.key_ref(),
            Err(KeyError::Malformed("a key field is not UTF-8"))
        );
        // A key message cut short inside a field.
        let cut = [0x0a, 0x03, 0x0a, 0x05, b'p'];
        let received = RetrieveRequest::decode(&cut[..]).unwrap();
        assert!(matches!(received.key_ref(), Err(KeyError::Malformed(_))));
        // A key field sent as a number.
        let number = [0x0a, 0x02, 0x08, 0x01];
        let received = RetrieveRequest::decode(&number[..]).unwrap();
        assert!(matches!(received.key_ref(), Err(KeyError::Malformed(_))));
        // The request itself cut short is a decode error, as before.
        assert!(RetrieveRequest::decode(&[0x0a, 0x09, 0x0a][..]).is_err());
        // And a key that decodes is checked by the key rules.
        let control = RetrieveRequest::new(wire_key("jelly\nfin", "", "", ""));
        let received = RetrieveRequest::decode(&control.encode_to_vec()[..]).unwrap();
        assert!(matches!(
            received.key_ref(),
            Err(KeyError::ControlChar { .. })
        ));
    }
}
