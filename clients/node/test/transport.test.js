// The gRPC transport (lib/grpc.js) against an HTTP/2 server of the test's
// own that can answer anything: what a request looks like on the wire;
// responses split at every byte or packed together; statuses in trailers
// and trailers-only answers, percent-decoded, mapped to the typed errors;
// HTTP errors, resets, malformed and oversized answers; a daemon that dies
// mid-call or mid-watch (UnavailableError, never an unhandled error); the
// next call reconnecting, with the checks and the handshake again; a slow
// watcher holding the daemon back; an idle client not keeping Node alive.
'use strict';

const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const http2 = require('node:http2');
const path = require('node:path');
const { afterEach, describe, test } = require('node:test');

const keyhaven = require('..');
const { Deframer, MAX_MESSAGE_BYTES, STATUS, decodeGrpcMessage, grpcTimeout } = require('../lib/grpc');
const { SCHEMA, decode, encode } = require('../lib/proto');
const { tempTree } = require('../test-support/daemon');

const {
  Client,
  ConflictError,
  InvalidArgumentError,
  KeyhavenError,
  NotFoundError,
  PermissionDeniedError,
  ProtocolMismatchError,
  UnavailableError,
} = keyhaven;

const cleanups = [];

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
});

/** A gRPC message framed: flag, 4-byte length, bytes. */
function frame(bytes, flag = 0) {
  const out = Buffer.alloc(5 + bytes.length);
  out[0] = flag;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

function message(type, value) {
  return frame(encode(type, value));
}

/**
 * Answers a call: response headers, `messages` (Buffers, written one write
 * each), then the status in trailers; or with `trailersOnly` the status in
 * the headers alone.
 */
function reply(stream, { messages = [], status = STATUS.OK, details, trailersOnly = false, headers = {} } = {}) {
  const grpcStatus = { 'grpc-status': String(status), ...(details === undefined ? {} : { 'grpc-message': details }) };
  if (trailersOnly) {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...grpcStatus, ...headers }, { endStream: true });
    return;
  }
  stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...headers }, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers(grpcStatus));
  for (const m of messages) stream.write(m);
  stream.end();
}

const STATUS_REPLY = { version: 'fake', protocol: 1, pid: process.pid };

/**
 * An HTTP/2 server on a fresh socket. `handlers[method](stream, request)`
 * answers a call once its request has arrived (Status answers protocol 1
 * unless given); an unknown method gets UNIMPLEMENTED. Records every
 * request {method, headers, body, message} and counts sessions.
 */
async function fakeDaemon(handlers = {}) {
  const t = tempTree();
  const socket = path.join(t.root, 'keyhaven.sock');
  const server = http2.createServer();
  const requests = [];
  const sessions = new Set();
  let sessionCount = 0;
  server.on('session', (s) => {
    sessionCount += 1;
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
    s.on('error', () => {});
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      const method = String(headers[':path']).split('/').pop();
      const spec = SCHEMA.methods[method];
      const request = { method, headers, body, message: spec ? decode(spec.request, body.subarray(5)) : null, stream };
      requests.push(request);
      const handler = handlers[method] || (method === 'Status' ? (s) => reply(s, { messages: [message('StatusResponse', STATUS_REPLY)] }) : null);
      if (handler) handler(stream, request);
      else reply(stream, { status: STATUS.UNIMPLEMENTED, trailersOnly: true });
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, resolve);
  });
  const daemon = {
    socket,
    requests,
    sessions,
    sessionCount: () => sessionCount,
    calls: (method) => requests.filter((r) => r.method === method),
    dropConnections() {
      for (const s of sessions) s.destroy();
    },
    async close() {
      daemon.dropConnections();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
  cleanups.push(async () => {
    await daemon.close();
    t.cleanup();
  });
  return daemon;
}

function client(daemon, options = {}) {
  const c = new Client({ socket: daemon.socket, ...options });
  cleanups.push(async () => c.close());
  return c;
}

const KEY = { provider: 'jellyfin', serverId: 's', userId: 'u' };
const METADATA = {
  key: { provider: 'jellyfin', server_id: 's', user_id: 'u', token_type: 'access_token' },
  revision: 3n,
  created_at: { seconds: 1700000000n, nanos: 0 },
  updated_at: { seconds: 1700000000n, nanos: 0 },
  attributes: { server_name: 'Home' },
};

describe('units', () => {
  test('grpc-message is percent-decoded as UTF-8; a stray % is kept', () => {
    assert.equal(decodeGrpcMessage('attribute name %231 is bad'), 'attribute name #1 is bad');
    assert.equal(decodeGrpcMessage('no credential a%253Ab %E2%9C%93 100%25 %zz %'), 'no credential a%3Ab ✓ 100% %zz %');
    assert.equal(decodeGrpcMessage(undefined), '');
    assert.equal(decodeGrpcMessage('plain'), 'plain');
  });

  test('grpc-timeout: at most 8 digits and a unit', () => {
    assert.equal(grpcTimeout(250), '250m');
    assert.equal(grpcTimeout(0.2), '1m');
    assert.equal(grpcTimeout(30000), '30000m');
    assert.equal(grpcTimeout(99999999), '99999999m');
    assert.equal(grpcTimeout(100000000), '100000S');
    assert.equal(grpcTimeout(1e12), '16666667M');
    assert.equal(grpcTimeout(1e15), '99999999H');
  });

  test('the deframer: messages split at every byte or packed together, empty ones, and wiping', () => {
    const a = encode('CredentialKey', { provider: 'jellyfin', server_id: 'x'.repeat(300) });
    const stream = Buffer.concat([frame(a), frame(Buffer.alloc(0)), frame(Buffer.from([8, 1]))]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const d = new Deframer();
      const first = Buffer.from(stream.subarray(0, cut));
      const second = Buffer.from(stream.subarray(cut));
      const got = [...d.push(first), ...d.push(second)];
      assert.deepEqual(got.map((m) => m.toString('hex')), [a.toString('hex'), '', '0801'], `cut at ${cut}`);
      assert.equal(d.partial(), false);
      assert.ok(first.every((b) => b === 0) && second.every((b) => b === 0), 'what was read is wiped');
    }
    const d = new Deframer();
    for (const byte of stream.subarray(0, 7)) d.push(Buffer.from([byte]));
    assert.equal(d.partial(), true);
  });

  test('the deframer refuses oversized and compressed messages', () => {
    const header = Buffer.alloc(5);
    header.writeUInt32BE(MAX_MESSAGE_BYTES + 1, 1);
    assert.throws(() => new Deframer().push(header), (e) => e.code === STATUS.RESOURCE_EXHAUSTED && /4194305 bytes/.test(e.details));
    assert.throws(() => new Deframer().push(frame(Buffer.from([1]), 1)), (e) => e.code === STATUS.INTERNAL && /compressed/.test(e.details));
    assert.throws(() => new Deframer().push(frame(Buffer.from([1]), 7)), (e) => e.code === STATUS.INTERNAL && /flag byte 7/.test(e.details));
    header.writeUInt32BE(MAX_MESSAGE_BYTES, 1);
    assert.deepEqual(new Deframer().push(header), [], 'exactly the limit is accepted');
  });
});

describe('on the wire', () => {
  test('a request: POST /keyhaven.v1.<Service>/<Method>, gRPC headers, a deadline, one length-prefixed message', async () => {
    const daemon = await fakeDaemon({
      Retrieve: (s) => reply(s, { messages: [message('RetrieveResponse', { metadata: METADATA, secret: Buffer.from('tok') })] }),
    });
    const c = client(daemon, { connectTimeoutMs: 4000 });
    const cred = await c.get(KEY, { timeoutMs: 1234 });
    assert.equal(cred.secret.toString(), 'tok');
    assert.deepEqual(cred.metadata.attributes, { server_name: 'Home' });
    assert.equal(cred.metadata.revision, 3);
    const [status, retrieve] = daemon.requests;
    assert.equal(status.headers[':path'], '/keyhaven.v1.Daemon/Status');
    assert.match(status.headers['grpc-timeout'], /^(4000|3\d{3})m$/);
    const h = retrieve.headers;
    assert.equal(h[':method'], 'POST');
    assert.equal(h[':path'], '/keyhaven.v1.Credentials/Retrieve');
    assert.equal(h['content-type'], 'application/grpc');
    assert.equal(h.te, 'trailers');
    assert.equal(h['grpc-timeout'], '1234m');
    assert.match(h['user-agent'], /^keyhaven-node\//);
    assert.equal(retrieve.body[0], 0, 'not compressed');
    assert.equal(retrieve.body.readUInt32BE(1), retrieve.body.length - 5);
    assert.deepEqual(retrieve.message.key, { provider: 'jellyfin', server_id: 's', user_id: 'u', token_type: 'access_token' });
    assert.equal(daemon.sessionCount(), 1, 'one connection for both calls');
  });

  test('a response written one byte at a time, and a newer daemon\'s unknown fields', async () => {
    const newer = Buffer.concat([
      encode('RetrieveResponse', { metadata: METADATA, secret: Buffer.from('tok-2') }),
      Buffer.from([0xa0, 0x06, 0x05, 0xaa, 0x06, 0x02, 0x68, 0x69, 0xad, 0x06, 1, 2, 3, 4]), // fields 100, 101, 101 (fixed32)
    ]);
    const daemon = await fakeDaemon({
      Retrieve: (s) => reply(s, { messages: [...frame(newer)].map((b) => Buffer.from([b])) }),
    });
    const cred = await client(daemon).get(KEY);
    assert.equal(cred.secret.toString(), 'tok-2');
  });

  test('watch: events packed into one DATA frame and split across several, in order', async () => {
    const events = [1, 2, 3, 4, 5].map((n) =>
      message('WatchEvent', { kind: 'EVENT_KIND_STORED', metadata: { ...METADATA, revision: BigInt(n) } }),
    );
    const daemon = await fakeDaemon({
      Watch: (s) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' });
        const all = Buffer.concat(events);
        s.write(all.subarray(0, events[0].length * 3 + 2)); // three and a bit
        setTimeout(() => s.write(all.subarray(events[0].length * 3 + 2)), 20);
      },
    });
    const watch = await client(daemon).watch({ snapshot: true });
    const seen = [];
    for await (const event of watch) {
      seen.push(event.metadata.revision);
      if (seen.length === 5) break;
    }
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  });
});

describe('statuses', () => {
  const table = [
    [STATUS.NOT_FOUND, NotFoundError, 'NOT_FOUND', 3],
    [STATUS.PERMISSION_DENIED, PermissionDeniedError, 'PERMISSION_DENIED', 4],
    [STATUS.UNAUTHENTICATED, PermissionDeniedError, 'PERMISSION_DENIED', 4],
    [STATUS.FAILED_PRECONDITION, ConflictError, 'CONFLICT', 7],
    [STATUS.ABORTED, ConflictError, 'CONFLICT', 7],
    [STATUS.ALREADY_EXISTS, ConflictError, 'CONFLICT', 7],
    [STATUS.INVALID_ARGUMENT, InvalidArgumentError, 'INVALID_ARGUMENT', 6],
    [STATUS.OUT_OF_RANGE, InvalidArgumentError, 'INVALID_ARGUMENT', 6],
    [STATUS.RESOURCE_EXHAUSTED, KeyhavenError, 'RESOURCE_EXHAUSTED', 6],
    [STATUS.UNAVAILABLE, UnavailableError, 'UNAVAILABLE', 5],
    [STATUS.DEADLINE_EXCEEDED, UnavailableError, 'UNAVAILABLE', 5],
    [STATUS.CANCELLED, UnavailableError, 'UNAVAILABLE', 5],
    [STATUS.UNIMPLEMENTED, ProtocolMismatchError, 'PROTOCOL_MISMATCH', 8],
    [STATUS.DATA_LOSS, KeyhavenError, 'DATA_LOSS', 1],
    [STATUS.INTERNAL, KeyhavenError, 'FAILURE', 1],
    [STATUS.UNKNOWN, KeyhavenError, 'FAILURE', 1],
  ];

  test('every status, in trailers and trailers-only, maps to its class; grpc-message is percent-decoded', async () => {
    let next = 0;
    const daemon = await fakeDaemon({
      Retrieve: (s) => {
        const [code] = table[Math.floor(next / 2)];
        reply(s, { status: code, details: 'attribute name %231: %E2%9C%93 a%253Ab', trailersOnly: next % 2 === 1 });
        next += 1;
      },
    });
    const c = client(daemon);
    for (const [code, Class, errorCode, exitCode] of table) {
      for (const how of ['trailers', 'trailers-only']) {
        await assert.rejects(c.get(KEY), (e) => {
          assert.ok(e instanceof Class, `${code} (${how}): ${e}`);
          assert.equal(e.code, errorCode);
          assert.equal(e.exitCode, exitCode);
          assert.equal(e.grpcCode, code);
          if (code !== STATUS.UNIMPLEMENTED) {
            assert.equal(e.details, 'attribute name #1: ✓ a%3Ab');
            assert.equal(e.message, `get: ${e.grpcStatus}: attribute name #1: ✓ a%3Ab`);
          }
          return true;
        });
      }
    }
  });

  test('a watch refused at once (trailers-only) rejects watch() itself', async () => {
    const daemon = await fakeDaemon({
      Watch: (s) => reply(s, { status: STATUS.INVALID_ARGUMENT, details: 'bad provider', trailersOnly: true }),
    });
    await assert.rejects(client(daemon).watch({ snapshot: true }), (e) => e instanceof InvalidArgumentError && /watch: INVALID_ARGUMENT: bad provider/.test(e.message));
  });
});

describe('malformed answers', () => {
  const cases = [
    ['HTTP 404', (s) => s.respond({ ':status': 404 }, { endStream: true }), ProtocolMismatchError, /UNIMPLEMENTED/],
    ['HTTP 503', (s) => s.respond({ ':status': 503 }, { endStream: true }), UnavailableError, /HTTP status 503/],
    ['another content-type', (s) => reply(s, { headers: { 'content-type': 'text/html' } }), KeyhavenError, /INTERNAL: .*content-type text\/html/],
    ['OK without a message', (s) => reply(s, {}), KeyhavenError, /INTERNAL: the daemon ended the call without a response/],
    ['two messages', (s) => reply(s, { messages: [message('RetrieveResponse', {}), message('RetrieveResponse', {})] }), KeyhavenError, /more than one response/],
    ['no grpc-status', (s) => { s.respond({ ':status': 200, 'content-type': 'application/grpc' }); s.end(message('RetrieveResponse', {})); }, KeyhavenError, /INTERNAL: the call ended without a gRPC status/],
    ['a compressed message', (s) => reply(s, { messages: [frame(Buffer.from([1]), 1)] }), KeyhavenError, /INTERNAL: the daemon sent a compressed message/],
    ['bytes that are not the message', (s) => reply(s, { messages: [frame(Buffer.from([0x0a, 0x09]))] }), KeyhavenError, /INTERNAL: cannot decode the daemon's answer: truncated input/],
    ['the body ends inside a message', (s) => reply(s, { messages: [frame(Buffer.from([8, 1])).subarray(0, 6)] }), KeyhavenError, /INTERNAL: the response ended inside a message/],
    ['RST_STREAM REFUSED_STREAM', (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM), UnavailableError, /UNAVAILABLE: keyhavend refused the call/],
    ['RST_STREAM INTERNAL_ERROR', (s) => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR), KeyhavenError, /INTERNAL: keyhavend reset the call \(HTTP\/2 error 2\)/],
    ['RST_STREAM ENHANCE_YOUR_CALM', (s) => s.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM), KeyhavenError, /RESOURCE_EXHAUSTED/],
  ];
  for (const [name, handler, Class, pattern] of cases) {
    test(`${name}: ${Class.name}`, async () => {
      const daemon = await fakeDaemon({ Retrieve: handler });
      await assert.rejects(client(daemon).get(KEY), (e) => {
        assert.ok(e instanceof Class, `${e}`);
        assert.match(e.message, pattern);
        return true;
      });
    });
  }

  test('a message over 4 MiB is refused as soon as its header says so, and the stream is reset', async () => {
    let reset = null;
    const daemon = await fakeDaemon({
      Retrieve: (s) => {
        s.on('close', () => {
          reset = s.rstCode;
        });
        s.respond({ ':status': 200, 'content-type': 'application/grpc' });
        const header = Buffer.alloc(5);
        header.writeUInt32BE(MAX_MESSAGE_BYTES + 1, 1);
        s.write(header); // and nothing more
      },
    });
    await assert.rejects(client(daemon).get(KEY), (e) => e.code === 'RESOURCE_EXHAUSTED' && /4194305 bytes/.test(e.message));
    for (let i = 0; i < 50 && reset === null; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(reset, http2.constants.NGHTTP2_CANCEL);
  });

  test('a message of exactly 4 MiB is read', async () => {
    const overhead = encode('RetrieveResponse', { secret: Buffer.alloc(MAX_MESSAGE_BYTES) }).length - MAX_MESSAGE_BYTES;
    const secret = Buffer.alloc(MAX_MESSAGE_BYTES - overhead, 0x61);
    const body = encode('RetrieveResponse', { secret });
    assert.equal(body.length, MAX_MESSAGE_BYTES);
    const daemon = await fakeDaemon({ Retrieve: (s) => reply(s, { messages: [frame(body)] }) });
    assert.equal((await client(daemon).get(KEY)).secret.length, secret.length);
  });
});

describe('deadlines, dropped connections, reconnecting', () => {
  test('a deadline resets the stream (CANCEL) and rejects with UnavailableError', async () => {
    let reset = null;
    const daemon = await fakeDaemon({
      Retrieve: (s) => s.on('close', () => {
        reset = s.rstCode;
      }),
    });
    const c = client(daemon);
    await assert.rejects(c.get(KEY, { timeoutMs: 100 }), (e) => e instanceof UnavailableError && /^get: DEADLINE_EXCEEDED: keyhavend did not answer within 100 ms/.test(e.message));
    for (let i = 0; i < 50 && reset === null; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(reset, http2.constants.NGHTTP2_CANCEL);
    assert.equal((await c.status()).version, 'fake', 'the connection is still good');
  });

  test('the daemon dying mid-call: UnavailableError', async () => {
    const daemon = await fakeDaemon({ Retrieve: () => daemon.dropConnections() });
    await assert.rejects(client(daemon).get(KEY), (e) => e instanceof UnavailableError && /^get: UNAVAILABLE: .*keyhavend/.test(e.message));
  });

  test('the daemon going away (GOAWAY, then closing) mid-call: UnavailableError', async () => {
    const daemon = await fakeDaemon({
      Retrieve: (s) => {
        s.session.goaway(http2.constants.NGHTTP2_INTERNAL_ERROR);
        setTimeout(() => daemon.dropConnections(), 20);
      },
    });
    await assert.rejects(client(daemon).get(KEY), UnavailableError);
  });

  test('the daemon dying mid-watch: the events sent, then UnavailableError', async () => {
    const daemon = await fakeDaemon({
      Watch: (s) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' });
        s.write(message('WatchEvent', { kind: 'EVENT_KIND_SYNCED' }));
        setTimeout(() => daemon.dropConnections(), 50);
      },
    });
    const watch = await client(daemon).watch({ snapshot: true });
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const event of watch) seen.push(event.kind);
      })(),
      (e) => e instanceof UnavailableError && e.exitCode === 5,
    );
    assert.deepEqual(seen, ['SYNCED']);
  });

  test('after the connection drops, the next call checks the socket, connects and shakes hands again', async () => {
    const daemon = await fakeDaemon({
      Retrieve: (s) => reply(s, { messages: [message('RetrieveResponse', { secret: Buffer.from('t') })] }),
    });
    const c = client(daemon);
    await c.get(KEY);
    daemon.dropConnections();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await c.get(KEY)).secret.toString(), 't');
    assert.equal(daemon.sessionCount(), 2);
    assert.equal(daemon.calls('Status').length, 2, 'a second handshake');

    // The socket replaced by a file while disconnected: not a daemon.
    daemon.dropConnections();
    await new Promise((r) => setTimeout(r, 50));
    fs.rmSync(daemon.socket);
    fs.writeFileSync(daemon.socket, '');
    await assert.rejects(c.get(KEY), (e) => e instanceof UnavailableError && /is a regular file, not a socket/.test(e.message));
  });

  test('no daemon behind a socket file (it crashed): UnavailableError, and nothing unhandled', async () => {
    const t = tempTree();
    cleanups.push(async () => t.cleanup());
    const socket = path.join(t.root, 'keyhaven.sock');
    // A listener killed outright leaves its socket file behind.
    await new Promise((resolve) =>
      execFile(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`], () => resolve()),
    );
    assert.ok(fs.statSync(socket).isSocket());
    const c = new Client({ socket });
    await assert.rejects(c.connect(), (e) => {
      assert.ok(e instanceof UnavailableError, `${e}`);
      assert.match(e.message, /^cannot talk to keyhavend at .*: UNAVAILABLE: .*ECONNREFUSED/);
      return true;
    });
    await assert.rejects(c.get(KEY), UnavailableError, 'and again on the next call');
    c.close();
  });
});

describe('watch flow control', () => {
  test('a watcher that does not read holds the daemon back; nothing is lost once it reads', async () => {
    const total = 3000;
    let server = null;
    const daemon = await fakeDaemon({
      Watch: (s) => {
        server = s;
        s.respond({ ':status': 200, 'content-type': 'application/grpc' });
        for (let i = 1; i <= total; i++) {
          s.write(message('WatchEvent', { kind: 'EVENT_KIND_STORED', metadata: { ...METADATA, revision: BigInt(i), attributes: { pad: 'x'.repeat(200) } } }));
        }
      },
    });
    const watch = await client(daemon).watch();
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(server.writableLength > 0, 'the daemon still holds events it could not send');
    let n = 0;
    for await (const event of watch) {
      n += 1;
      assert.equal(event.metadata.revision, n);
      if (n === total) break;
    }
    assert.equal(n, total);
  });
});

describe('the process', () => {
  test('an idle client does not keep Node running; an open watch does until cancelled', async () => {
    const daemon = await fakeDaemon({
      Watch: (s) => s.respond({ ':status': 200, 'content-type': 'application/grpc' }),
    });
    const run = (script) =>
      new Promise((resolve) => {
        const child = execFile(process.execPath, ['-e', script, path.join(__dirname, '..'), daemon.socket], { timeout: 10000 }, (error, stdout, stderr) =>
          resolve({ error, stdout, stderr }),
        );
        child.stdin && child.stdin.end();
      });
    // Never closed: exits anyway once its calls are done.
    let out = await run(`
      const keyhaven = require(process.argv[1]);
      keyhaven.connect({ socket: process.argv[2] }).then((c) => c.status()).then((s) => console.log('done', s.version));
    `);
    assert.equal(out.error, null, out.stderr);
    assert.equal(out.stdout.trim(), 'done fake');
    out = await run(`
      const keyhaven = require(process.argv[1]);
      (async () => {
        const c = await keyhaven.connect({ socket: process.argv[2] });
        const w = await c.watch();
        setTimeout(() => { console.log('still watching'); w.cancel(); }, 300);
        for await (const e of w) console.log(e);
        console.log('ended');
      })();
    `);
    assert.equal(out.error, null, out.stderr);
    assert.equal(out.stdout, 'still watching\nended\n');
  });
});

describe('protoDir', () => {
  function protoCopy(edit = (text) => text) {
    const t = tempTree();
    cleanups.push(async () => t.cleanup());
    const dir = path.join(t.root, 'keyhaven', 'v1');
    fs.mkdirSync(dir, { recursive: true });
    const text = fs.readFileSync(path.join(__dirname, '..', 'proto', 'keyhaven', 'v1', 'keyhaven.proto'), 'utf8');
    fs.writeFileSync(path.join(dir, 'keyhaven.proto'), edit(text));
    return t.root;
  }

  test('a copy of the contract that agrees with the codec (a newer one may add fields) is accepted', async () => {
    const daemon = await fakeDaemon();
    const newer = protoCopy((text) => text.replace('  uint64 missed = 5;\n', '  uint64 missed = 5;\n  string note = 6;\n'));
    for (const protoDir of [path.join(__dirname, '..', 'proto'), newer]) {
      assert.equal((await client(daemon, { protoDir }).status()).version, 'fake');
    }
  });

  test('a copy that disagrees, or none, is refused before connecting', async () => {
    const daemon = await fakeDaemon();
    const renumbered = protoCopy((text) => text.replace('  uint64 revision = 2;', '  uint64 revision = 9;'));
    await assert.rejects(client(daemon, { protoDir: renumbered }).connect(), (e) => {
      assert.ok(e instanceof KeyhavenError, `${e}`);
      assert.match(e.message, /^cannot load keyhaven\/v1\/keyhaven\.proto from .*: .* does not match this client's messages: keyhaven\.v1\.CredentialMetadata\.revision: the codec has uint64 = 2, the \.proto uint64 = 9/);
      return true;
    });
    await assert.rejects(client(daemon, { protoDir: '/nonexistent' }).connect(), /cannot load keyhaven\/v1\/keyhaven\.proto from \/nonexistent: ENOENT/);
    assert.equal(daemon.sessionCount(), 0, 'nothing was sent');
  });
});

describe('a call the daemon never saw is made once more', () => {
  test('refused (REFUSED_STREAM) once: made again on a new connection; refused twice: UnavailableError', async () => {
    let refuse = 1;
    const daemon = await fakeDaemon({
      Retrieve: (s) => {
        if (refuse-- > 0) s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        else reply(s, { messages: [message('RetrieveResponse', { secret: Buffer.from('second') })] });
      },
      Watch: (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM),
    });
    const c = client(daemon);
    assert.equal((await c.get(KEY)).secret.toString(), 'second');
    assert.equal(daemon.calls('Retrieve').length, 2);
    refuse = 5;
    await assert.rejects(c.get(KEY), (e) => e instanceof UnavailableError && /refused/.test(e.message));
    assert.equal(daemon.calls('Retrieve').length, 4, 'once more, not more');
    await assert.rejects(c.watch(), UnavailableError);
    assert.equal(daemon.calls('Watch').length, 2);
  });

  test('GOAWAY below the call\'s stream (the daemon dropping an idle connection as the call starts): made again', async () => {
    let first = true;
    const daemon = await fakeDaemon({
      Retrieve: (s) => {
        if (first) {
          first = false;
          const session = s.session;
          session.goaway(http2.constants.NGHTTP2_NO_ERROR, s.id - 2);
          setTimeout(() => session.destroy(), 50);
        } else {
          reply(s, { messages: [message('RetrieveResponse', { secret: Buffer.from('again') })] });
        }
      },
    });
    const c = client(daemon);
    assert.equal((await c.get(KEY)).secret.toString(), 'again');
    assert.equal(daemon.sessionCount(), 2);
    assert.equal(daemon.calls('Status').length, 2, 'the new connection shook hands');
  });

  test('a call the daemon answered with an error, or a dropped connection mid-call, is not made again', async () => {
    const daemon = await fakeDaemon({
      Store: (s) => reply(s, { status: STATUS.UNAVAILABLE, details: 'store locked', trailersOnly: true }),
      Delete: (s, r) => {
        r.stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
        setTimeout(() => daemon.dropConnections(), 20);
      },
    });
    const c = client(daemon);
    await assert.rejects(c.store(KEY, 's'), /store locked/);
    assert.equal(daemon.calls('Store').length, 1);
    await assert.rejects(c.delete(KEY), UnavailableError);
    assert.equal(daemon.calls('Delete').length, 1, 'the daemon may have deleted it: not sent twice');
  });
});
