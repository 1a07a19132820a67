//! Interoperability with gRPC clients that put the socket path in
//! `:authority`.
//!
//! gRPC's C core (Python `grpcio`, Ruby, PHP, C++), grpc-java and some
//! versions of other stacks send the percent-encoded socket path as the
//! HTTP/2 `:authority` of requests on a Unix socket. The `h2` crate under
//! tonic rejects such a value as malformed and resets the stream, so those
//! clients could not talk to keyhavend at all.
//!
//! [`AuthorityFixer`] sits on the read side of each connection, after the
//! peer check. It parses HTTP/2 frames, decodes every header block with an
//! HPACK decoder that mirrors the client's encoder, and forwards blocks
//! untouched while their `:authority` is valid. The first time one is not,
//! that block and every later one on the connection is re-encoded with
//! `:authority: localhost`, as self-contained literals that never touch the
//! server's dynamic table (so the server's decoder stays consistent whatever
//! it saw before). Anything it cannot parse is passed through unchanged for
//! `h2` to judge, unless a rewrite already happened, in which case the
//! connection is closed.
//!
//! A gRPC channel sends one `:authority` on every request, so once a block
//! arrives with a valid one the connection needs no fixing and the fixer
//! forwards everything from then on without parsing: decoding every header
//! block (HPACK with Huffman strings) cost more than the rest of a Retrieve.
//! A later invalid `:authority` on such a connection reaches h2, which
//! resets that stream, as it would without the fixer.

use std::io;

use loona_hpack::Decoder;
use tonic::codegen::http::uri::Authority;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE the server advertises (the HTTP/2 default).
const MAX_FRAME: usize = 16_384;
/// Largest header block held while waiting for its CONTINUATION frames.
const MAX_BLOCK: usize = 64 * 1024;
/// The server's SETTINGS_HEADER_TABLE_SIZE (the HTTP/2 default).
const TABLE_SIZE: usize = 4096;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// What replaces an invalid `:authority`.
pub const REPLACEMENT: &[u8] = b"localhost";

enum Mode {
    /// Waiting for the 24-byte client preface.
    Preface,
    /// Parsing frames.
    Frames,
    /// Forwarding bytes unchanged (unparseable input; h2 will judge it).
    Transparent,
}

/// A header block being collected across HEADERS + CONTINUATION frames.
struct Pending {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    raw: Vec<u8>,
}

/// Rewrites invalid `:authority` values in a client-to-server HTTP/2 byte
/// stream. Feed it what the socket delivered; take what h2 should read.
pub struct AuthorityFixer {
    mode: Mode,
    input: Vec<u8>,
    output: Vec<u8>,
    decoder: Decoder<'static>,
    pending: Option<Pending>,
    rewriting: bool,
}

impl std::fmt::Debug for AuthorityFixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFixer")
            .field("rewriting", &self.rewriting)
            .finish_non_exhaustive()
    }
}

impl Default for AuthorityFixer {
    fn default() -> Self {
        Self::new()
    }
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl AuthorityFixer {
    /// A fixer for a new connection.
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            decoder,
            pending: None,
            rewriting: false,
        }
    }

    /// True once a block has been rewritten on this connection.
    pub fn rewrote(&self) -> bool {
        self.rewriting
    }

    /// Bytes ready for the HTTP/2 server, removed from the fixer.
    pub fn take_output(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.output.len());
        self.output.drain(..n).collect()
    }

    /// True once the fixer forwards everything unchanged: the caller may
    /// hand the server what it reads directly, as long as
    /// [`AuthorityFixer::has_output`] is false.
    pub fn is_transparent(&self) -> bool {
        matches!(self.mode, Mode::Transparent)
    }

    /// True when there are bytes for the server.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// The client closed its side: whatever is held goes to the server
    /// as it came, for h2 to judge.
    pub fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            self.output.extend_from_slice(&p.raw);
        }
        self.output.append(&mut self.input);
    }

    /// Processes bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        if let Mode::Transparent = self.mode {
            self.output.extend_from_slice(data);
            return Ok(());
        }
        self.input.extend_from_slice(data);
        loop {
            match self.mode {
                Mode::Transparent => {
                    self.output.append(&mut self.input);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.give_up()?;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = usize::from(self.input[0]) << 16
                        | usize::from(self.input[1]) << 8
                        | usize::from(self.input[2]);
                    if len > MAX_FRAME {
                        self.give_up()?;
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
                    self.frame(frame)?;
                }
            }
        }
    }

    /// Stops parsing: forwards everything held unchanged from now on. Only
    /// possible while nothing was rewritten; otherwise the connection ends.
    fn give_up(&mut self) -> io::Result<()> {
        if self.rewriting {
            return Err(protocol_error(
                "malformed HTTP/2 after an :authority rewrite",
            ));
        }
        if let Some(p) = self.pending.take() {
            self.output.extend_from_slice(&p.raw);
        }
        self.mode = Mode::Transparent;
        Ok(())
    }

    fn frame(&mut self, frame: Vec<u8>) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.pending.as_mut()) {
            (TYPE_HEADERS, None) => {
                let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
                    return self.pass_on_error(frame);
                };
                let pending = Pending {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    block: fragment.to_vec(),
                    raw: frame.clone(),
                };
                self.pending = Some(pending);
                if flags & FLAG_END_HEADERS != 0 {
                    self.complete_block()?;
                }
                Ok(())
            }
            (TYPE_CONTINUATION, Some(p)) if p.stream_id == stream_id => {
                p.block.extend_from_slice(payload);
                p.raw.extend_from_slice(&frame);
                if p.raw.len() > MAX_BLOCK {
                    return self.give_up();
                }
                if flags & FLAG_END_HEADERS != 0 {
                    self.complete_block()?;
                }
                Ok(())
            }
            (_, Some(_)) => {
                // Anything but CONTINUATION inside a header block is a
                // protocol error; let h2 say so.
                self.pass_on_error(frame)
            }
            (_, None) => {
                self.output.extend_from_slice(&frame);
                Ok(())
            }
        }
    }

    fn pass_on_error(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.give_up()?;
        self.output.extend_from_slice(&frame);
        Ok(())
    }

    fn complete_block(&mut self) -> io::Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let headers = match self.decoder.decode(&p.block) {
            Ok(h) => h,
            Err(_) => {
                self.pending = Some(p);
                return self.give_up();
            }
        };
        let authority = headers
            .iter()
            .find(|(n, _)| n.as_slice() == b":authority")
            .map(|(_, v)| Authority::try_from(v.as_slice()).is_ok());
        let bad_authority = authority == Some(false);
        if bad_authority && !self.rewriting {
            tracing::debug!(
                stream = p.stream_id,
                "client sent an invalid :authority (a socket path); rewriting it to localhost"
            );
            self.rewriting = true;
        }
        if !self.rewriting {
            self.output.extend_from_slice(&p.raw);
            if authority == Some(true) {
                self.mode = Mode::Transparent;
            }
            return Ok(());
        }
        let mut block = Vec::with_capacity(p.block.len() + 64);
        for (name, value) in &headers {
            let value = if name.as_slice() == b":authority"
                && Authority::try_from(value.as_slice()).is_err()
            {
                REPLACEMENT
            } else {
                value.as_slice()
            };
            encode_literal(&mut block, name, value);
        }
        self.emit_headers(&p, &block);
        Ok(())
    }

    fn emit_headers(&mut self, p: &Pending, block: &[u8]) {
        let mut first_payload = Vec::new();
        let mut flags = 0;
        if p.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if let Some(prio) = p.priority {
            flags |= FLAG_PRIORITY;
            first_payload.extend_from_slice(&prio);
        }
        let room = MAX_FRAME - first_payload.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first_payload.extend_from_slice(head);
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        self.push_frame(TYPE_HEADERS, flags, p.stream_id, &first_payload);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            self.push_frame(TYPE_CONTINUATION, flags, p.stream_id, chunk);
            rest = tail;
        }
    }

    fn push_frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len();
        // len <= MAX_FRAME < 2^24, so the three bytes hold it.
        self.output.extend_from_slice(&[
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
        ]);
        self.output.extend_from_slice(&stream_id.to_be_bytes());
        self.output.extend_from_slice(payload);
    }
}

/// Splits a HEADERS payload into its priority fields and header block
/// fragment, dropping padding. `None` when the lengths do not add up.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&p, tail) = rest.split_first()?;
        pad = usize::from(p);
        rest = tail;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if rest.len() < 5 {
            return None;
        }
        let mut prio = [0u8; 5];
        prio.copy_from_slice(&rest[..5]);
        priority = Some(prio);
        rest = &rest[5..];
    }
    if pad > rest.len() {
        return None;
    }
    Some((priority, &rest[..rest.len() - pad]))
}

/// HPACK "literal header field never indexed, new name" (RFC 7541 6.2.3):
/// self-contained, leaves every dynamic table alone.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x10);
    encode_string(out, name);
    encode_string(out, value);
}

/// A string literal without Huffman coding (RFC 7541 5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (RFC 7541 5.1).
fn encode_int(out: &mut Vec<u8>, mut value: usize, prefix_bits: u32, first_byte_flags: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first_byte_flags | value as u8);
        return;
    }
    out.push(first_byte_flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = AuthorityFixer::new();
        f.push_frame(kind, flags, stream, payload);
        f.output
    }

    fn headers_block(enc: &mut Vec<u8>, headers: &[(&[u8], &[u8])], index: bool) {
        for (n, v) in headers {
            // Literal with incremental indexing (0x40) or without (0x00).
            enc.push(if index { 0x40 } else { 0x00 });
            encode_string(enc, n);
            encode_string(enc, v);
        }
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        let mut block = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                let (_, frag) = if kind == TYPE_HEADERS {
                    split_headers_payload(flags, payload).unwrap()
                } else {
                    (None, payload)
                };
                block.extend_from_slice(frag);
                if flags & FLAG_END_HEADERS != 0 {
                    out.push(dec.decode(&block).unwrap());
                    block.clear();
                }
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        out
    }

    #[test]
    fn valid_authorities_pass_through_byte_for_byte() {
        let mut input = PREFACE.to_vec();
        let mut block = Vec::new();
        headers_block(
            &mut block,
            &[(b":authority", b"localhost"), (b":path", b"/x")],
            true,
        );
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"data"));
        let mut f = AuthorityFixer::new();
        // Fed in awkward pieces.
        for chunk in input.chunks(7) {
            f.feed(chunk).unwrap();
        }
        assert_eq!(f.take_output(usize::MAX), input);
        assert!(!f.rewrote());
    }

    #[test]
    fn a_connection_with_a_valid_authority_is_not_parsed_any_more() {
        let mut input = PREFACE.to_vec();
        let mut good = Vec::new();
        headers_block(&mut good, &[(b":authority", b"localhost")], false);
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &good));
        // A later block with a socket path goes to h2 as it came.
        let mut bad = Vec::new();
        headers_block(&mut bad, &[(b":authority", b"tmp%2Fk.sock")], false);
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &bad));
        let mut f = AuthorityFixer::new();
        f.feed(&input).unwrap();
        assert_eq!(f.take_output(usize::MAX), input);
        assert!(!f.rewrote());
    }

    #[test]
    fn socket_path_authority_is_rewritten_and_later_blocks_stay_consistent() {
        let mut input = PREFACE.to_vec();
        let mut b1 = Vec::new();
        headers_block(
            &mut b1,
            &[
                (b":authority", b"tmp%2Fk%2Fkeyhaven.sock"),
                (b":path", b"/a"),
                (b"x-app", b"one"),
            ],
            true,
        );
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &b1,
        ));
        // The second request refers to dynamic-table entries the first one
        // added (indices 62.. are the dynamic table, newest first).
        let b2 = [0x80 | 64, 0x80 | 63, 0x80 | 62];
        let (a, b) = b2.split_at(1);
        input.extend(frame(TYPE_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 3, &{
            let mut p = vec![2u8, 0, 0, 0, 0, 16];
            p.extend_from_slice(a);
            p.extend_from_slice(&[0, 0]);
            p
        }));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, b));
        let mut f = AuthorityFixer::new();
        f.feed(&input).unwrap();
        assert!(f.rewrote());
        let blocks = decode_all(&f.take_output(usize::MAX));
        let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b":authority".to_vec(), b"localhost".to_vec()),
            (b":path".to_vec(), b"/a".to_vec()),
            (b"x-app".to_vec(), b"one".to_vec()),
        ];
        assert_eq!(blocks, vec![want.clone(), want]);
    }

    #[test]
    fn garbage_is_passed_through_for_h2_to_reject() {
        let mut f = AuthorityFixer::new();
        f.feed(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(f.take_output(usize::MAX), b"GET / HTTP/1.1\r\n\r\n");
        let mut f = AuthorityFixer::new();
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&[0xff, 0xff, 0xff, 1, 4, 0, 0, 0, 1]);
        f.feed(&input).unwrap();
        assert_eq!(f.take_output(usize::MAX), input);
    }

    #[test]
    fn integers_use_the_continuation_encoding() {
        let mut out = Vec::new();
        encode_int(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]);
    }
}
