// Deadlines and the handshake, against servers that misbehave on purpose:
// one that accepts and never answers, and a gRPC server of the test's own
// that answers Status but hangs on credential calls, never answers a
// Watch, speaks another protocol number, or serves no Credentials at all.
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const { afterEach, test } = require('node:test');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const keyhaven = require('..');
const { silentServer, tempTree } = require('../test-support/daemon');

const { Client, ProtocolMismatchError, UnavailableError } = keyhaven;

const cleanups = [];

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
});

function socketPath() {
  const t = tempTree();
  cleanups.push(async () => t.cleanup());
  return path.join(t.root, 'keyhaven.sock');
}

const v1 = grpc.loadPackageDefinition(
  protoLoader.loadSync('keyhaven/v1/keyhaven.proto', {
    includeDirs: [path.join(__dirname, '..', 'proto')],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  }),
).keyhaven.v1;

// A gRPC server on a fresh socket: Daemon.Status answers `protocol`;
// Credentials is served only when `credentials` is true, and then every
// call hangs (a Watch sends its headers only when asked for a snapshot).
async function fakeDaemon({ protocol = 1, credentials = true } = {}) {
  const socket = socketPath();
  const server = new grpc.Server();
  const hanging = [];
  server.addService(v1.Daemon.service, {
    Status: (_call, callback) => callback(null, { version: 'fake', protocol, pid: process.pid }),
  });
  if (credentials) {
    const hang = (call) => hanging.push(call);
    server.addService(v1.Credentials.service, {
      Store: hang,
      Retrieve: hang,
      Delete: hang,
      List: hang,
      // With a snapshot: headers, then nothing.
      Watch: (call) => {
        if (call.request.snapshot) call.sendMetadata(new grpc.Metadata());
        hang(call);
      },
      Logout: hang,
    });
  }
  await new Promise((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
  );
  cleanups.push(() => new Promise((resolve) => server.tryShutdown(() => resolve())).then(() => server.forceShutdown()));
  return socket;
}

async function within(ms, promise) {
  const started = Date.now();
  const outcome = await promise.then(
    (value) => ({ value }),
    (error) => ({ error }),
  );
  const took = Date.now() - started;
  assert.ok(took < ms, `took ${took} ms, more than ${ms}`);
  return outcome;
}

test('a server that accepts and never answers: UnavailableError at the handshake deadline', async () => {
  const socket = socketPath();
  const server = await silentServer(socket);
  cleanups.push(() => server.close());
  const client = new Client({ socket, connectTimeoutMs: 250 });
  const { error } = await within(3000, client.get({ provider: 'jellyfin' }));
  assert.ok(error instanceof UnavailableError, `${error}`);
  assert.equal(error.exitCode, keyhaven.EXIT.UNAVAILABLE);
  assert.match(error.message, new RegExp(`cannot talk to keyhavend at ${socket}: DEADLINE_EXCEEDED`));
  assert.equal(server.received().connections, 1, 'it did connect (the path was named and is ours)');
  client.close();
});

test('a unary call past its deadline: UnavailableError (client default, then per call)', async () => {
  const socket = await fakeDaemon();
  const client = await keyhaven.connect({ socket, timeoutMs: 200 });
  assert.equal(client.daemon.version, 'fake');
  let { error } = await within(3000, client.get({ provider: 'jellyfin' }));
  assert.ok(error instanceof UnavailableError, `${error}`);
  assert.equal(error.grpcStatus, 'DEADLINE_EXCEEDED');
  assert.match(error.message, /^get: DEADLINE_EXCEEDED: /);
  ({ error } = await within(3000, client.store({ provider: 'p' }, 's', { timeoutMs: 100 })));
  assert.ok(error instanceof UnavailableError);
  ({ error } = await within(3000, client.list({ timeoutMs: 100 })));
  assert.ok(error instanceof UnavailableError);
  client.close();
});

test('a Watch the daemon never answers, or a snapshot it never sends: UnavailableError at the deadline', async () => {
  const socket = await fakeDaemon();
  const client = await keyhaven.connect({ socket });
  let { error } = await within(3000, client.watch({ timeoutMs: 200 }));
  assert.ok(error instanceof UnavailableError, `${error}`);
  assert.match(error.message, /did not answer the watch within 200 ms/);
  ({ error } = await within(3000, client.watch({ snapshot: true, timeoutMs: 200 })));
  assert.ok(error instanceof UnavailableError, `${error}`);
  assert.match(error.message, /accepted the watch but sent no snapshot within 200 ms/);
  client.close();
});

test('another protocol number: ProtocolMismatchError, and nothing else is sent', async () => {
  const socket = await fakeDaemon({ protocol: 2 });
  await assert.rejects(keyhaven.connect({ socket }), (e) => {
    assert.ok(e instanceof ProtocolMismatchError);
    assert.equal(e.exitCode, keyhaven.EXIT.PROTOCOL_MISMATCH);
    assert.match(e.message, /speaks protocol 2, but this client speaks protocol 1/);
    return true;
  });
});

test('a call the daemon does not serve: ProtocolMismatchError (the daemon is older)', async () => {
  const socket = await fakeDaemon({ credentials: false });
  const client = await keyhaven.connect({ socket });
  await assert.rejects(client.get({ provider: 'p' }), (e) => {
    assert.ok(e instanceof ProtocolMismatchError);
    assert.equal(e.grpcStatus, 'UNIMPLEMENTED');
    assert.match(e.message, /older than this client/);
    return true;
  });
  client.close();
});
