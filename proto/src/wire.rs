//! A message field that may be held already encoded: what the hand-written
//! `RetrieveRequest` and `RetrieveResponse` share. Either way it goes on
//! the wire as the field the .proto declares.

use prost::bytes::{BufMut, Bytes};
use prost::encoding::{self, WireType};

/// Writes field `tag` from its encoding when there is one, else from the
/// message; writes nothing when there is neither.
pub(crate) fn encode_message<M: prost::Message>(
    tag: u32,
    encoded: Option<&Bytes>,
    message: Option<&M>,
    buf: &mut impl BufMut,
) {
    match (encoded, message) {
        (Some(raw), _) => {
            encoding::encode_key(tag, WireType::LengthDelimited, buf);
            encoding::encode_varint(raw.len() as u64, buf);
            buf.put_slice(raw);
        }
        (None, Some(message)) => encoding::message::encode(tag, message, buf),
        (None, None) => {}
    }
}

/// The length [`encode_message`] writes.
pub(crate) fn message_len<M: prost::Message>(
    tag: u32,
    encoded: Option<&Bytes>,
    message: Option<&M>,
) -> usize {
    match (encoded, message) {
        (Some(raw), _) => {
            encoding::key_len(tag) + encoding::encoded_len_varint(raw.len() as u64) + raw.len()
        }
        (None, Some(message)) => encoding::message::encoded_len(tag, message),
        (None, None) => 0,
    }
}
