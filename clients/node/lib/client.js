// The client: one HTTP/2 connection to keyhavend (lib/grpc.js), opened
// only after the daemon has been checked (lib/trust.js) and then shaken
// hands with (Daemon.Status, protocol 1). Every method returns a Promise;
// Watch is an async iterable. When the connection drops (the daemon
// restarted), the next call checks the socket, connects and shakes hands
// again.
//
// Deadlines: the handshake is bounded by `connectTimeoutMs` (5 s), each
// unary call by `timeoutMs` (30 s), and a Watch by `timeoutMs` until the
// daemon answers it (it registers the watcher first, so from then on no
// change is missed), or with a snapshot until its first event; the stream
// itself then runs until cancelled. Each method takes `{timeoutMs}` to
// override its own deadline.
'use strict';

const path = require('path');

const {
  KeyhavenError,
  InvalidArgumentError,
  ProtocolMismatchError,
  UnavailableError,
  fromGrpc,
  statusName,
} = require('./errors');
const { CallError, Connection, STATUS, after } = require('./grpc');
const { ProtoError, SCHEMA, decode, encode, methodPath } = require('./proto');
const { checkContract } = require('./schema');
const { resolveSocket, trustedUids, verifyDaemon } = require('./trust');
const {
  Credential,
  attributesToWire,
  eventFromWire,
  keyToWire,
  metadataFromWire,
  revisionToWire,
  statusFromWire,
  timestampToWire,
} = require('./convert');

/** The wire protocol this package speaks (StatusResponse.protocol). */
const PROTOCOL = 1;

const CONNECT_TIMEOUT_MS = 5000;
const CALL_TIMEOUT_MS = 30000;
/** Credentials asked for per List page (the daemon allows up to 1000). */
const LIST_PAGE_SIZE = 500;
/** Events a Watch holds for its loop before it stops reading, and resumes at. */
const WATCH_HIGH_WATER = 256;
const WATCH_LOW_WATER = 64;

const checked = new Map();

// With the `protoDir` option: checks that the keyhaven.proto there agrees
// with the messages lib/proto.js encodes (every field it uses has the same
// number and type), once per directory.
function checkProtoDir(protoDir) {
  if (!checked.has(protoDir)) {
    const file = path.join(protoDir, 'keyhaven', 'v1', 'keyhaven.proto');
    try {
      checkContract(file);
    } catch (e) {
      throw new KeyhavenError(`cannot load keyhaven/v1/keyhaven.proto from ${protoDir}: ${e.message}`, { cause: e });
    }
    checked.set(protoDir, true);
  }
}

// The request of `method` encoded for the wire (with room for the gRPC
// frame header). A value the codec refuses is the caller's: InvalidArgumentError.
function encodeRequest(name, method, request) {
  try {
    return encode(SCHEMA.methods[method].request, request, 5);
  } catch (e) {
    if (e instanceof ProtoError) throw new InvalidArgumentError(`${name}: ${e.message}`);
    throw e;
  }
}

// A unary call: resolves to the decoded response; rejects with a CallError.
async function call(connection, method, body, timeoutMs) {
  const reply = await connection.unary(methodPath(method), body, timeoutMs);
  try {
    return decode(SCHEMA.methods[method].response, reply);
  } catch (e) {
    reply.fill(0);
    if (e instanceof ProtoError) throw new CallError(STATUS.INTERNAL, `cannot decode the daemon's answer: ${e.message}`);
    throw e;
  }
}

function milliseconds(value, what, fallback) {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new InvalidArgumentError(`${what} must be a positive number of milliseconds`);
  }
  return value;
}

function options(value, what) {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new InvalidArgumentError(`${what} must be an object`);
  return value;
}

// List and Watch filters: an absent field matches anything; serverId or
// userId '' matches only empty ids (as the Rust client's ListFilter).
function filterToWire(filter) {
  const f = {};
  for (const [field, wire] of [
    ['provider', 'provider'],
    ['serverId', 'server_id'],
    ['userId', 'user_id'],
  ]) {
    const value = filter[field];
    if (value === undefined || value === null) continue;
    if (typeof value !== 'string') throw new InvalidArgumentError(`${field} must be a string`);
    f[wire] = value;
  }
  f.match_empty_server_id = f.server_id !== undefined;
  f.match_empty_user_id = f.user_id !== undefined;
  if (filter.attributes !== undefined && filter.attributes !== null) {
    f.attributes = attributesToWire(filter.attributes, 'attributes filter');
  }
  return f;
}

/**
 * A connection to keyhavend. `new Client(options)` only decides the socket;
 * the first call (or `connect()`) checks the daemon and shakes hands.
 */
class Client {
  #explicit;
  #trusted;
  #protoDir;
  #connectTimeoutMs;
  #timeoutMs;
  #opening = null;
  #connection = null;
  #watches = new Set();
  #closed = false;

  constructor(opts = {}) {
    const o = options(opts, 'the client options');
    const env = o.env || process.env;
    const { path: socket, explicit } = resolveSocket({ socket: o.socket, env });
    /** The socket this client talks to (absolute). */
    this.socket = socket;
    /** What the daemon said in the handshake; null before it. */
    this.daemon = null;
    this.#explicit = explicit;
    this.#trusted = trustedUids(env, o.allowDaemonUid);
    this.#protoDir = o.protoDir ? path.resolve(o.protoDir) : null;
    this.#connectTimeoutMs = milliseconds(o.connectTimeoutMs, 'connectTimeoutMs', CONNECT_TIMEOUT_MS);
    this.#timeoutMs = milliseconds(o.timeoutMs, 'timeoutMs', CALL_TIMEOUT_MS);
  }

  /**
   * Checks the socket (and, for a default path, its directory), connects and
   * checks the daemon's protocol number. Nothing is sent when a check fails.
   * Called by every method; call it first to learn early that the daemon is
   * missing or untrusted. Resolves to the client.
   */
  connect() {
    return this.#connected().then(() => this);
  }

  // The open connection, opened (checked, connected, shaken hands with)
  // when there is none or the last one dropped.
  #connected() {
    if (this.#closed) return Promise.reject(new KeyhavenError('the client is closed'));
    if (!this.#opening) {
      this.#opening = this.#open().catch((e) => {
        this.#opening = null;
        throw e;
      });
    }
    return this.#opening;
  }

  async #open() {
    verifyDaemon(this.socket, this.#explicit, this.#trusted);
    if (this.#protoDir) checkProtoDir(this.#protoDir);
    // Only now, the socket checked, is a byte sent.
    const connection = new Connection(this.socket, (dead) => {
      if (this.#connection === dead) {
        this.#connection = null;
        this.#opening = null;
      }
    });
    let status;
    try {
      status = await call(connection, 'Status', encode('StatusRequest', {}, 5), this.#connectTimeoutMs);
    } catch (e) {
      connection.close();
      throw new UnavailableError(
        `cannot talk to keyhavend at ${this.socket}: ${statusName(e.code)}: ${e.details}`,
        { grpcCode: e.code, details: e.details, cause: e },
      );
    }
    if (status.protocol !== PROTOCOL) {
      connection.close();
      throw new ProtocolMismatchError(
        `keyhavend ${status.version} at ${this.socket} speaks protocol ${status.protocol}, but this client ` +
          `speaks protocol ${PROTOCOL}; restart the daemon after an upgrade, or update the client`,
      );
    }
    if (this.#closed || !connection.usable) {
      connection.close();
      if (this.#closed) throw new KeyhavenError('the client is closed');
      throw new UnavailableError(`cannot talk to keyhavend at ${this.socket}: ${connection.dropped()}`);
    }
    this.daemon = statusFromWire(status);
    this.#connection = connection;
    return connection;
  }

  async #unary(name, method, request, opts) {
    const timeoutMs = milliseconds(opts.timeoutMs, 'timeoutMs', this.#timeoutMs);
    // Encoded (and so checked) before connecting; encoded again for a
    // second attempt, as a call wipes its request when it ends.
    let body = encodeRequest(name, method, request);
    let due = null; // the deadline runs from the first call, after the handshake
    for (let attempt = 1; ; attempt++) {
      const connection = await this.#connected();
      if (due === null) due = Date.now() + timeoutMs;
      if (attempt > 1) body = encodeRequest(name, method, request);
      try {
        return await call(connection, method, body, attempt === 1 ? timeoutMs : Math.max(1, due - Date.now()));
      } catch (e) {
        // The connection went away before the daemon saw the call (it closes
        // the longest-idle connection when it has too many): once more, on a
        // new connection, within the same deadline.
        if (!(attempt === 1 && e.unprocessed && !this.#closed && due > Date.now())) throw fromGrpc(name, e);
      }
    }
  }

  /**
   * Creates or replaces a credential. `secret` is a Buffer, Uint8Array or
   * string (UTF-8). Options: `label` (absent clears it), `expiresAt` (Date
   * or ms; absent: never), `expectedRevision` (0: only if absent; n: only if
   * still at revision n; else ConflictError), `attributes` (absent keeps
   * the stored ones, `{}` removes them, an object replaces them).
   * Resolves to {metadata, created}.
   */
  async store(key, secret, opts) {
    const o = options(opts, 'the store options');
    let bytes;
    if (typeof secret === 'string') bytes = Buffer.from(secret, 'utf8');
    else if (secret instanceof Uint8Array) bytes = Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength);
    else throw new InvalidArgumentError('the secret must be a Buffer, a Uint8Array or a string');
    const request = { key: keyToWire(key), secret: bytes };
    if (o.label !== undefined && o.label !== null) {
      if (typeof o.label !== 'string') throw new InvalidArgumentError('label must be a string');
      request.label = o.label;
    }
    if (o.expiresAt !== undefined && o.expiresAt !== null) request.expires_at = timestampToWire(o.expiresAt, 'expiresAt');
    if (o.expectedRevision !== undefined && o.expectedRevision !== null) {
      request.expected_revision = revisionToWire(o.expectedRevision, 'expectedRevision');
    }
    if (o.attributes !== undefined && o.attributes !== null) {
      request.attributes = attributesToWire(o.attributes);
      request.clear_attributes = Object.keys(request.attributes).length === 0;
    }
    const reply = await this.#unary('store', 'Store', request, o);
    return { metadata: metadataFromWire(reply.metadata), created: Boolean(reply.created) };
  }

  /** Reads a credential: resolves to a Credential {metadata, secret: Buffer}. */
  async get(key, opts) {
    const o = options(opts, 'the get options');
    const reply = await this.#unary('get', 'Retrieve', { key: keyToWire(key) }, o);
    // A copy, and the decoded bytes wiped: they are a view into the
    // response message, which would otherwise keep the token until
    // collected (lib/grpc.js wipes the buffers it received it in).
    const secret = Buffer.from(reply.secret);
    reply.secret.fill(0);
    return new Credential(metadataFromWire(reply.metadata), secret);
  }

  /**
   * Removes a credential; `expectedRevision` makes it conditional. Resolves
   * to its last metadata.
   */
  async delete(key, opts) {
    const o = options(opts, 'the delete options');
    const request = { key: keyToWire(key) };
    if (o.expectedRevision !== undefined && o.expectedRevision !== null) {
      request.expected_revision = revisionToWire(o.expectedRevision, 'expectedRevision');
    }
    const reply = await this.#unary('delete', 'Delete', request, o);
    return metadataFromWire(reply.metadata);
  }

  /**
   * The metadata of every credential matching the filter, in key order,
   * across all pages. Filter: `provider`, `serverId`, `userId` (absent
   * matches anything, '' only empty ids) and `attributes` (each must match
   * exactly). `pageSize` (default 500, at most 1000) is per request.
   */
  async list(filter) {
    const o = options(filter, 'the list filter');
    const base = filterToWire(o);
    const pageSize = o.pageSize === undefined ? LIST_PAGE_SIZE : o.pageSize;
    if (!Number.isInteger(pageSize) || pageSize < 1) throw new InvalidArgumentError('pageSize must be a whole number of at least 1');
    const out = [];
    let pageToken = '';
    for (;;) {
      const page = await this.#unary('list', 'List', { ...base, page_size: pageSize, page_token: pageToken }, o);
      for (const m of page.credentials) out.push(metadataFromWire(m));
      if (!page.next_page_token) return out;
      pageToken = page.next_page_token;
    }
  }

  /**
   * Watches changes matching the filter (as in list()). With `snapshot`,
   * the current state comes first (SNAPSHOT events, then SYNCED). Resolves
   * once the daemon has registered the watcher, to a Watch: iterate it with
   * `for await`, end it with `cancel()`, `break`, or the `signal` option (an
   * AbortSignal).
   */
  async watch(filter) {
    const o = options(filter, 'the watch options');
    const timeoutMs = milliseconds(o.timeoutMs, 'timeoutMs', this.#timeoutMs);
    const request = { ...filterToWire(o), snapshot: Boolean(o.snapshot) };
    const signal = o.signal;
    if (signal !== undefined && signal !== null) {
      if (typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
        throw new InvalidArgumentError('signal must be an AbortSignal');
      }
      signal.throwIfAborted();
    }
    let body = encodeRequest('watch', 'Watch', request);
    let due = null;
    for (let attempt = 1; ; attempt++) {
      const connection = await this.#connected();
      if (due === null) due = Date.now() + timeoutMs;
      if (attempt > 1) body = encodeRequest('watch', 'Watch', request);
      const watch = new Watch(connection, body, () => this.#watches.delete(watch));
      this.#watches.add(watch);
      try {
        await watch.answered(attempt === 1 ? timeoutMs : Math.max(1, due - Date.now()), signal, request.snapshot);
        return watch;
      } catch (e) {
        watch.cancel();
        // As in #unary: once more when the daemon never saw the call.
        const again = attempt === 1 && e.cause && e.cause.unprocessed && !this.#closed && due > Date.now();
        if (!again || (signal && signal.aborted)) throw e;
      }
    }
  }

  /**
   * Logs out of a server: deletes every credential of `provider` and
   * `serverId` (and `userId`, when given) in one transaction. Resolves to
   * what was deleted; nothing to delete is not an error.
   */
  async logout(provider, serverId = '', userId, opts) {
    const o = options(opts, 'the logout options');
    if (typeof provider !== 'string') throw new InvalidArgumentError('provider must be a string');
    if (typeof serverId !== 'string') throw new InvalidArgumentError('serverId must be a string');
    const request = { provider, server_id: serverId };
    if (userId !== undefined && userId !== null) {
      if (typeof userId !== 'string') throw new InvalidArgumentError('userId must be a string');
      request.user_id = userId;
    }
    const reply = await this.#unary('logout', 'Logout', request, o);
    return reply.deleted.map(metadataFromWire);
  }

  /** What the daemon says about itself now (Daemon.Status). */
  async status(opts) {
    const o = options(opts, 'the status options');
    return statusFromWire(await this.#unary('status', 'Status', {}, o));
  }

  /** Ends every open Watch and closes the connection. */
  close() {
    this.#closed = true;
    for (const watch of this.#watches) watch.cancel();
    if (this.#connection) this.#connection.close();
    this.#connection = null;
  }
}

/** Connects as `options` say: resolves to a Client that has shaken hands. */
function connect(opts) {
  return new Promise((resolve) => resolve(new Client(opts))).then((client) => client.connect());
}

/**
 * An open Watch: an async iterable of events {kind, metadata, time, actor,
 * missed}, never a secret. Only one loop may iterate it. The loop ends when
 * the watch is cancelled; it throws UnavailableError when the daemon ends
 * the stream (it is shutting down: watch again with `snapshot`).
 *
 * Events wait in a queue until the loop takes them; when it holds
 * WATCH_HIGH_WATER of them, reading from the daemon pauses (HTTP/2 flow
 * control then holds the daemon back, which tells a watcher that falls too
 * far behind with a LAGGED event) and resumes once the loop has caught up.
 */
class Watch {
  #call;
  #onClose;
  #queue = [];
  #paused = false;
  #ended = false; // the call is over (its outcome in #error)
  #error = null;
  #cancelled = false;
  #iterating = false;
  #finished = false;
  #wake = null; // resolves the loop's wait for an event or the end
  #answer = null; // {onHeaders, onMessage, onEnd} while watch() waits for the daemon
  #headers = false;

  constructor(connection, body, onClose) {
    this.#onClose = onClose;
    this.#call = connection.serverStream(methodPath('Watch'), body, {
      onHeaders: () => {
        this.#headers = true;
        if (this.#answer) this.#answer.onHeaders();
      },
      onMessage: (message) => this.#onMessage(message),
      onEnd: (error) => {
        this.#ended = true;
        // An error is kept from the start: one that comes before the loop
        // begins must not be lost.
        if (error && !this.#cancelled) this.#error = fromGrpc('watch', error);
        if (this.#answer) this.#answer.onEnd();
        this.#done();
        this.#wakeUp();
      },
    });
  }

  #onMessage(message) {
    let event;
    try {
      event = eventFromWire(decode('WatchEvent', message));
    } catch (e) {
      if (!(e instanceof ProtoError)) throw e;
      this.#call.fail(new CallError(STATUS.INTERNAL, `cannot decode the daemon's event: ${e.message}`));
      return;
    }
    this.#queue.push(event);
    if (this.#queue.length >= WATCH_HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.#call.pause();
    }
    if (this.#answer) this.#answer.onMessage();
    this.#wakeUp();
  }

  #wakeUp() {
    const wake = this.#wake;
    this.#wake = null;
    if (wake) wake();
  }

  // Resolves when the daemon answers: its response headers, or with a
  // snapshot its first event, which is due at once (a daemon that accepted
  // the call and sends nothing is as hung as one that does not answer;
  // without a snapshot the first event waits for the first change). Rejects
  // with the daemon's error, with UnavailableError after `timeoutMs`, or
  // with the signal's reason.
  answered(timeoutMs, signal, snapshot) {
    return new Promise((resolve, reject) => {
      let cancelTimer = () => {};
      const settle = (fn, value) => {
        cancelTimer();
        this.#answer = null;
        fn(value);
      };
      // Before the answer, an abort rejects; after it, it ends the loop.
      const onAbort = () => {
        this.cancel();
        settle(reject, signal.reason);
      };
      if (this.#queue.length || (!snapshot && this.#headers)) {
        resolve();
      } else if (this.#ended) {
        reject(this.#error || new UnavailableError('watch: the daemon ended the stream before answering'));
        return;
      } else {
        this.#answer = {
          onHeaders: () => {
            if (!snapshot) settle(resolve);
          },
          onMessage: () => settle(resolve),
          onEnd: () => settle(reject, this.#error || new UnavailableError('watch: the daemon ended the stream before answering')),
        };
        const late = snapshot ? 'accepted the watch but sent no snapshot' : 'did not answer the watch';
        cancelTimer = after(timeoutMs, () =>
          settle(
            reject,
            new UnavailableError(`watch: DEADLINE_EXCEEDED: keyhavend ${late} within ${timeoutMs} ms`, {
              grpcCode: STATUS.DEADLINE_EXCEEDED,
            }),
          ),
        );
      }
      if (signal) {
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  /** Ends the watch: the loop over it finishes without an error. */
  cancel() {
    if (this.#cancelled) return;
    this.#cancelled = true;
    this.#queue = [];
    this.#call.cancel('the watch was cancelled');
    this.#done();
    this.#wakeUp();
  }

  #done() {
    if (this.#finished) return;
    this.#finished = true;
    this.#onClose();
  }

  async *#events() {
    try {
      for (;;) {
        if (this.#cancelled) return;
        if (this.#queue.length) {
          const event = this.#queue.shift();
          if (this.#paused && this.#queue.length <= WATCH_LOW_WATER) {
            this.#paused = false;
            this.#call.resume();
          }
          yield event;
          continue;
        }
        if (this.#ended) {
          if (this.#error && !this.#cancelled) throw this.#error;
          return;
        }
        await new Promise((resolve) => {
          this.#wake = resolve;
        });
      }
    } finally {
      this.cancel();
    }
  }

  [Symbol.asyncIterator]() {
    if (this.#iterating) throw new KeyhavenError('a Watch can be iterated only once');
    this.#iterating = true;
    return this.#events();
  }
}

module.exports = { Client, Watch, connect, PROTOCOL };
