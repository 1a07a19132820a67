// The gRPC client subset this package needs, on Node's own http2 module:
// unary calls and server-streaming calls over one HTTP/2 connection to the
// daemon's Unix socket (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
//
// A request is HEADERS (POST /keyhaven.v1.<Service>/<Method>,
// content-type application/grpc, te: trailers, grpc-timeout) and one
// length-prefixed message: a flag byte (0: not compressed), a 4-byte
// big-endian length, the protobuf bytes. A response is HEADERS, any number
// of length-prefixed messages across DATA frames, and trailers carrying
// grpc-status and grpc-message (percent-encoded); a call that fails at once
// may send only one HEADERS frame holding the status ("trailers-only").
//
// Every failure ends as a CallError {code, details} with a gRPC status code:
// the daemon's own, or one this file chooses (as grpc-js does) when the
// connection drops (UNAVAILABLE), a deadline passes (DEADLINE_EXCEEDED), a
// message is too large (RESOURCE_EXHAUSTED) or the answer is malformed
// (INTERNAL). Nothing here throws out of an event handler.
'use strict';

const http2 = require('http2');
const net = require('net');

const { version: VERSION } = require('../package.json');

/** gRPC status codes. */
const STATUS = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
});

/** The largest response message accepted (as grpc-js's default). */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

const {
  NGHTTP2_CANCEL,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_INADEQUATE_SECURITY,
  NGHTTP2_REFUSED_STREAM,
} = http2.constants;

// setTimeout fires at once for delays past 2^31 - 1 ms; longer deadlines
// are waited for in steps.
const MAX_TIMER_MS = 2 ** 31 - 1;

function statusName(code) {
  return Object.keys(STATUS).find((k) => STATUS[k] === code) || String(code);
}

/**
 * A call that ended without OK: its gRPC status code and message.
 * `unprocessed` is true when the daemon certainly did not see the request
 * (it was never sent, or refused: REFUSED_STREAM, or above the last stream
 * of a GOAWAY), so that making it again on a new connection is safe.
 */
class CallError extends Error {
  constructor(code, details, { unprocessed = false } = {}) {
    super(`${statusName(code)}: ${details}`);
    this.name = 'CallError';
    this.code = code;
    this.details = details;
    this.unprocessed = unprocessed;
  }
}

/**
 * grpc-message as the daemon wrote it: percent-decoded (%XX is a byte of
 * UTF-8). A '%' not followed by two hex digits is kept as it is.
 */
function decodeGrpcMessage(value) {
  if (typeof value !== 'string' || !value.includes('%')) return value || '';
  const bytes = [];
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(value.slice(i + 1, i + 3))) {
      bytes.push(parseInt(value.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80) {
      bytes.push(c);
    } else {
      // Not valid in a header, but keep it rather than lose it.
      bytes.push(...Buffer.from(value[i], 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** grpc-timeout for a deadline `ms` from now: at most 8 digits and a unit. */
function grpcTimeout(ms) {
  const n = Math.max(1, Math.ceil(ms));
  for (const [unit, per] of [
    ['m', 1],
    ['S', 1000],
    ['M', 60000],
    ['H', 3600000],
  ]) {
    const v = Math.ceil(n / per);
    if (v < 1e8) return `${v}${unit}`;
  }
  return '99999999H';
}

/** Calls `fn` after `ms` milliseconds, however long; returns a cancel function. */
function after(ms, fn) {
  let timer;
  const due = Date.now() + ms;
  const arm = () => {
    const left = due - Date.now();
    timer = left > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
  };
  arm();
  return () => clearTimeout(timer);
}

/** A message framed for the wire: `body` must start with 5 spare bytes. */
function frame(body) {
  const length = body.length - 5;
  body[0] = 0;
  body.writeUInt32BE(length, 1);
  return body;
}

/**
 * Splits the response body, as it arrives in chunks, into messages. Each
 * message is copied out whole into a buffer of its own, and the chunk
 * bytes it was copied from are overwritten with zeros (a message may hold a
 * secret).
 */
class Deframer {
  constructor(maxBytes = MAX_MESSAGE_BYTES) {
    this.maxBytes = maxBytes;
    this.chunks = [];
    this.buffered = 0;
    this.need = -1; // the length of the message being read; -1: reading a header
  }

  // Copies the first `n` buffered bytes into `out` (or drops them when out
  // is null), wiping and releasing what was read.
  take(n, out) {
    let at = 0;
    while (at < n) {
      const chunk = this.chunks[0];
      const k = Math.min(chunk.length, n - at);
      if (out) out.set(chunk.subarray(0, k), at);
      chunk.fill(0, 0, k);
      at += k;
      if (k === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(k);
    }
    this.buffered -= n;
  }

  /** Adds a chunk; returns the messages it completes. Throws CallError. */
  push(chunk) {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const messages = [];
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 5) return messages;
        const header = Buffer.alloc(5);
        this.take(5, header);
        const flag = header[0];
        const length = header.readUInt32BE(1);
        if (flag !== 0) {
          throw new CallError(
            STATUS.INTERNAL,
            flag === 1
              ? 'the daemon sent a compressed message, which this client did not ask for'
              : `a response message with the flag byte ${flag}`,
          );
        }
        if (length > this.maxBytes) {
          throw new CallError(
            STATUS.RESOURCE_EXHAUSTED,
            `the daemon sent a message of ${length} bytes; this client accepts at most ${this.maxBytes}`,
          );
        }
        this.need = length;
      }
      if (this.buffered < this.need) return messages;
      const message = Buffer.alloc(this.need);
      this.take(this.need, message);
      this.need = -1;
      messages.push(message);
    }
  }

  /** True when the body ended inside a message. */
  partial() {
    return this.need >= 0 || this.buffered > 0;
  }

  wipe() {
    for (const chunk of this.chunks) chunk.fill(0);
    this.chunks = [];
    this.buffered = 0;
  }
}

// The status of an HTTP response that is not gRPC (as grpc-js maps it).
function httpStatus(code) {
  const mapped = { 400: STATUS.INTERNAL, 401: STATUS.UNAUTHENTICATED, 403: STATUS.PERMISSION_DENIED, 404: STATUS.UNIMPLEMENTED };
  const grpc = mapped[code] || ([429, 502, 503, 504].includes(code) ? STATUS.UNAVAILABLE : STATUS.UNKNOWN);
  return new CallError(grpc, `the daemon answered with HTTP status ${code}, not a gRPC response`);
}

// The status in response headers or trailers, or null when there is none.
function statusOf(headers) {
  const raw = headers['grpc-status'];
  if (raw === undefined) return null;
  const code = /^[0-9]+$/.test(String(raw)) ? Number(raw) : STATUS.UNKNOWN;
  const details = decodeGrpcMessage(headers['grpc-message']);
  return code === STATUS.OK ? { code, details } : new CallError(code, details || statusName(code));
}

/**
 * One call on a Connection. `handlers`: onHeaders() when the response
 * headers come (not for a trailers-only answer), onMessage(buffer) per
 * message, onEnd(error | null) once, last: null when the daemon ended the
 * call with OK, else a CallError. Nothing is called after onEnd.
 */
class Call {
  #connection;
  #stream = null;
  #handlers;
  #body;
  #deframer = new Deframer();
  #status = null; // what the daemon said: {code: OK} or a CallError
  #ended = false;
  #cancelTimer = null;
  #http = 0;
  #responded = false;
  #streamError = null;

  constructor(connection, path, body, { timeoutMs, handlers }) {
    this.#connection = connection;
    this.#handlers = handlers;
    this.#body = frame(body);
    const headers = {
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'user-agent': `keyhaven-node/${VERSION}`,
    };
    if (timeoutMs !== undefined) {
      headers['grpc-timeout'] = grpcTimeout(timeoutMs);
      this.#cancelTimer = after(timeoutMs, () =>
        this.fail(new CallError(STATUS.DEADLINE_EXCEEDED, `keyhavend did not answer within ${timeoutMs} ms`)),
      );
    }
    connection.callStarted();
    const stream = connection.request(headers);
    if (stream instanceof CallError) {
      this.#body.fill(0); // never sent
      // Reported asynchronously, as every other outcome.
      process.nextTick(() => this.#end(stream));
      return;
    }
    this.#stream = stream;
    stream.on('response', (h) => this.#onResponse(h));
    stream.on('trailers', (h) => this.#onTrailers(h));
    stream.on('data', (chunk) => this.#onData(chunk));
    // Stream errors are followed by 'close', where the outcome is decided.
    stream.on('error', (e) => {
      this.#streamError = e;
    });
    stream.on('close', () => this.#onClose());
    stream.end(this.#body);
  }

  /** Ends the call now with `error` (a CallError) and resets the stream. */
  fail(error) {
    if (this.#ended) return;
    this.#end(error);
    if (this.#stream && !this.#stream.closed && !this.#stream.destroyed) this.#stream.close(NGHTTP2_CANCEL);
  }

  /** Cancels the call: it ends with CANCELLED. */
  cancel(details = 'cancelled by the client') {
    this.fail(new CallError(STATUS.CANCELLED, details));
  }

  pause() {
    if (this.#stream) this.#stream.pause();
  }

  resume() {
    if (this.#stream) this.#stream.resume();
  }

  #onResponse(headers) {
    if (this.#ended) return;
    this.#responded = true;
    this.#http = Number(headers[':status']);
    if (this.#http !== 200) {
      this.fail(httpStatus(this.#http));
      return;
    }
    const type = headers['content-type'];
    if (type !== undefined && !String(type).startsWith('application/grpc')) {
      this.fail(new CallError(STATUS.INTERNAL, `the daemon answered with content-type ${type}, not application/grpc`));
      return;
    }
    const status = statusOf(headers);
    if (status) this.#status = status; // trailers-only: the stream ends next
    else if (this.#handlers.onHeaders) this.#handlers.onHeaders();
  }

  #onTrailers(trailers) {
    if (this.#ended) return;
    this.#status =
      statusOf(trailers) || new CallError(STATUS.INTERNAL, 'the daemon ended the call without a grpc-status');
  }

  #onData(chunk) {
    if (this.#ended) {
      chunk.fill(0);
      return;
    }
    let messages;
    try {
      messages = this.#deframer.push(chunk);
    } catch (e) {
      this.fail(e);
      return;
    }
    for (const message of messages) {
      if (this.#ended) return;
      this.#handlers.onMessage(message);
    }
  }

  #onClose() {
    this.#body.fill(0);
    this.#deframer.wipe();
    if (this.#ended) return;
    const stream = this.#stream;
    let outcome = this.#status;
    if (outcome && outcome.code === STATUS.OK && this.#deframer.partial()) {
      outcome = new CallError(STATUS.INTERNAL, 'the response ended inside a message');
    }
    if (!outcome) {
      const unprocessed =
        !this.#responded &&
        (stream.id === undefined ||
          stream.rstCode === NGHTTP2_REFUSED_STREAM ||
          this.#connection.abovelastStream(stream.id));
      const dropped = this.#connection.dropped();
      // Node reports a connection that failed as a cancelled stream, the
      // cause (ECONNREFUSED, ...) attached.
      const cause = this.#streamError && this.#streamError.cause;
      if (dropped) outcome = new CallError(STATUS.UNAVAILABLE, cause ? `${dropped}: ${cause.message}` : dropped);
      else if (stream.rstCode === NGHTTP2_REFUSED_STREAM) outcome = new CallError(STATUS.UNAVAILABLE, 'keyhavend refused the call');
      else if (stream.rstCode === NGHTTP2_CANCEL) outcome = new CallError(STATUS.CANCELLED, 'the call was cancelled');
      else if (stream.rstCode === NGHTTP2_ENHANCE_YOUR_CALM) outcome = new CallError(STATUS.RESOURCE_EXHAUSTED, 'keyhavend says too many requests');
      else if (stream.rstCode === NGHTTP2_INADEQUATE_SECURITY) outcome = new CallError(STATUS.PERMISSION_DENIED, 'keyhavend refused the connection as not secure');
      else if (stream.rstCode) outcome = new CallError(STATUS.INTERNAL, `keyhavend reset the call (HTTP/2 error ${stream.rstCode})`);
      else outcome = new CallError(STATUS.INTERNAL, 'the call ended without a gRPC status');
      outcome.unprocessed = unprocessed;
    }
    this.#end(outcome.code === STATUS.OK ? null : outcome);
  }

  #end(error) {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#cancelTimer) this.#cancelTimer();
    this.#connection.callEnded();
    this.#handlers.onEnd(error);
  }
}

/**
 * The HTTP/2 connection to one daemon socket. Made at once; requests made
 * while it connects wait for it. Once it has failed, closed or received
 * GOAWAY it takes no new call (`usable` is false) and `onDead` has been
 * called. It keeps the process alive only while a call is open.
 */
class Connection {
  #session;
  #calls = 0;
  #dead = null;
  #onDead;
  #lastStream = null; // the last stream id a GOAWAY said the daemon processed

  constructor(socketPath, onDead = () => {}) {
    this.socketPath = socketPath;
    this.#onDead = onDead;
    const session = http2.connect('http://localhost', {
      createConnection: () => net.connect(socketPath),
      settings: { enablePush: false },
    });
    this.#session = session;
    session.on('error', (e) => this.#die(`the connection to keyhavend at ${socketPath} failed: ${e.message}`));
    session.on('goaway', (code, lastStreamID) => {
      this.#lastStream = lastStreamID;
      this.#die(`keyhavend at ${socketPath} closed the connection${code ? ` (HTTP/2 error ${code})` : ''}`);
    });
    session.on('close', () => this.#die(`the connection to keyhavend at ${socketPath} closed`));
    session.on('frameError', () => {});
    session.unref();
  }

  get usable() {
    return this.#dead === null && !this.#session.closed && !this.#session.destroyed;
  }

  /** Why the connection is gone, or null while it is up. */
  dropped() {
    if (this.#dead) return this.#dead;
    if (this.#session.destroyed || this.#session.closed) return `the connection to keyhavend at ${this.socketPath} closed`;
    return null;
  }

  #die(why) {
    if (this.#dead) return;
    this.#dead = why;
    this.#onDead(this);
  }

  /** True when a GOAWAY said the stream `id` was not processed. */
  abovelastStream(id) {
    return this.#lastStream !== null && id > this.#lastStream;
  }

  callStarted() {
    if (this.#calls++ === 0 && !this.#session.destroyed) this.#session.ref();
  }

  callEnded() {
    if (--this.#calls === 0 && !this.#session.destroyed) this.#session.unref();
  }

  /** A new stream, or a CallError when the connection takes no more calls. */
  request(headers) {
    const dropped = this.dropped();
    if (dropped) return new CallError(STATUS.UNAVAILABLE, dropped, { unprocessed: true });
    try {
      return this.#session.request(headers, { endStream: false });
    } catch (e) {
      return new CallError(STATUS.UNAVAILABLE, `cannot start a call to keyhavend at ${this.socketPath}: ${e.message}`, {
        unprocessed: true,
      });
    }
  }

  /**
   * A unary call: resolves to the response message (a Buffer), rejects with
   * a CallError. `body` is the request, encoded with 5 spare bytes first.
   */
  unary(path, body, timeoutMs) {
    return new Promise((resolve, reject) => {
      let reply = null;
      let count = 0;
      const call = new Call(this, path, body, {
        timeoutMs,
        handlers: {
          onMessage: (message) => {
            count += 1;
            if (count > 1) call.fail(new CallError(STATUS.INTERNAL, 'the daemon sent more than one response to a unary call'));
            else reply = message;
          },
          onEnd: (error) => {
            if (error) reject(error);
            else if (count === 0) reject(new CallError(STATUS.INTERNAL, 'the daemon ended the call without a response'));
            else resolve(reply);
          },
        },
      });
    });
  }

  /** A server-streaming call (no deadline): returns the Call. */
  serverStream(path, body, handlers) {
    return new Call(this, path, body, { handlers });
  }

  /** Lets open calls finish, takes no new ones, then closes. */
  close() {
    this.#die('the client closed the connection');
    if (!this.#session.closed && !this.#session.destroyed) this.#session.close();
  }
}

module.exports = {
  STATUS,
  MAX_MESSAGE_BYTES,
  after,
  CallError,
  Connection,
  Deframer,
  decodeGrpcMessage,
  grpcTimeout,
  statusName,
};
