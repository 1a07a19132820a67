// The checks made before a byte is sent: a default socket directory that is
// open to others or a symlink, a socket (or directory) of another uid, and
// KEYHAVEN_ALLOW_DAEMON_UID to trust one on purpose. Each planted socket is
// a listener that never answers; the test proves it received nothing.
//
// Node cannot read the server's uid (no SO_PEERCRED in its net module), so
// a server of another uid behind a socket file the user owns is not
// detected here; see README.md.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { afterEach, test } = require('node:test');

const keyhaven = require('..');
const { silentServer, tempTree } = require('../test-support/daemon');

const { Client, InvalidArgumentError, UnavailableError, UntrustedDaemonError } = keyhaven;

const OTHER_UID = 12345;
const cleanups = [];

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
});

function tree() {
  const t = tempTree();
  cleanups.push(async () => t.cleanup());
  return t.root;
}

// A listener at `dir/keyhaven.sock`, `dir` made with `mode`.
async function plant(dir, mode) {
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, mode);
  const server = await silentServer(path.join(dir, 'keyhaven.sock'));
  cleanups.push(() => server.close());
  return { server, socket: path.join(dir, 'keyhaven.sock') };
}

function rootOrSkip(t) {
  if (process.getuid() === 0) return true;
  const why = 'needs root to chown a socket to another uid';
  process.stderr.write(`\n*** SKIPPED ${t.name}: ${why} ***\n`);
  t.skip(why);
  return false;
}

function assertUntrusted(e, checked, uid, overridable = true) {
  assert.ok(e instanceof UntrustedDaemonError, `${e}`);
  assert.equal(e.code, 'UNTRUSTED_DAEMON');
  assert.equal(e.exitCode, keyhaven.EXIT.UNTRUSTED_DAEMON);
  assert.equal(e.path, checked);
  assert.equal(e.ownerUid, uid);
  assert.ok(e.message.includes(checked), e.message);
  assert.ok(e.message.includes(`uid ${uid}`), e.message);
  assert.ok(e.message.includes('Nothing was sent'), e.message);
  if (overridable) assert.ok(e.message.includes(`KEYHAVEN_ALLOW_DAEMON_UID=${uid}`), e.message);
  return true;
}

test('a default socket directory others can write to is refused before any byte', async () => {
  const run = path.join(tree(), 'run');
  fs.mkdirSync(run, { mode: 0o700 });
  const dir = path.join(run, 'keyhaven');
  const { server } = await plant(dir, 0o777);
  const client = new Client({ env: { XDG_RUNTIME_DIR: run } });
  await assert.rejects(client.connect(), (e) => assertUntrusted(e, dir, process.getuid(), false) && /mode 0777/.test(e.message));
  // Trusting a uid does not make an open directory acceptable.
  const allowed = new Client({ env: { XDG_RUNTIME_DIR: run, KEYHAVEN_ALLOW_DAEMON_UID: String(process.getuid()) } });
  await assert.rejects(allowed.get({ provider: 'p' }), UntrustedDaemonError);
  assert.ok(await server.nothingReceived(), `received ${JSON.stringify(server.received())}`);
});

test('a symlinked socket directory is refused (the fallback path under TMPDIR)', async () => {
  const root = tree();
  const tmp = path.join(root, 'tmp');
  fs.mkdirSync(tmp);
  const { server } = await plant(path.join(root, 'elsewhere'), 0o700);
  const link = path.join(tmp, `keyhaven-${process.getuid()}`);
  fs.symlinkSync(path.join(root, 'elsewhere'), link);
  const client = new Client({ env: { TMPDIR: tmp } });
  assert.equal(client.socket, path.join(link, 'keyhaven.sock'));
  await assert.rejects(client.connect(), (e) => assertUntrusted(e, link, process.getuid(), false) && /symlink/.test(e.message));
  assert.ok(await server.nothingReceived());
});

test('a socket of another uid is refused; KEYHAVEN_ALLOW_DAEMON_UID trusts it on purpose', async (t) => {
  if (!rootOrSkip(t)) return;
  const run = path.join(tree(), 'run');
  fs.mkdirSync(run, { mode: 0o700 });
  const { server, socket } = await plant(path.join(run, 'keyhaven'), 0o700);
  fs.chownSync(socket, OTHER_UID, OTHER_UID);
  const secret = 'canary-for-the-planted-socket';

  // The default path, and the same socket named explicitly.
  for (const options of [{ env: { XDG_RUNTIME_DIR: run } }, { socket, env: {} }, { env: { KEYHAVEN_SOCKET: socket } }]) {
    const client = new Client(options);
    await assert.rejects(client.store({ provider: 'jellyfin' }, secret), (e) => {
      assertUntrusted(e, socket, OTHER_UID);
      assert.ok(!e.message.includes(secret));
      return true;
    });
  }
  assert.ok(await server.nothingReceived(), `received ${JSON.stringify(server.received())}`);

  // Trusted on purpose (option or variable): the client connects and speaks
  // HTTP/2; this listener never answers, so the handshake's deadline ends it.
  for (const options of [{ allowDaemonUid: OTHER_UID }, { env: { XDG_RUNTIME_DIR: run, KEYHAVEN_ALLOW_DAEMON_UID: String(OTHER_UID) } }]) {
    const client = new Client({ env: { XDG_RUNTIME_DIR: run }, connectTimeoutMs: 300, ...options });
    await assert.rejects(client.connect(), (e) => e instanceof UnavailableError && /cannot talk to keyhavend/.test(e.message));
    client.close();
  }
  const { connections, bytes } = server.received();
  assert.ok(connections >= 1 && bytes > 0, `connected and spoke: ${connections} connections, ${bytes} bytes`);
});

test('a default socket directory of another uid is refused', async (t) => {
  if (!rootOrSkip(t)) return;
  const tmp = path.join(tree(), 'tmp');
  fs.mkdirSync(tmp);
  const dir = path.join(tmp, `keyhaven-${process.getuid()}`);
  const { server, socket } = await plant(dir, 0o700);
  fs.chownSync(socket, OTHER_UID, OTHER_UID);
  fs.chownSync(dir, OTHER_UID, OTHER_UID);
  await assert.rejects(new Client({ env: { TMPDIR: tmp } }).connect(), (e) => assertUntrusted(e, dir, OTHER_UID));
  assert.ok(await server.nothingReceived());
});

test('KEYHAVEN_ALLOW_DAEMON_UID must be a uid', async () => {
  assert.throws(() => new Client({ env: { KEYHAVEN_ALLOW_DAEMON_UID: 'nobody' } }), (e) => {
    assert.ok(e instanceof InvalidArgumentError);
    assert.match(e.message, /KEYHAVEN_ALLOW_DAEMON_UID/);
    return true;
  });
  await assert.rejects(keyhaven.connect({ env: { KEYHAVEN_ALLOW_DAEMON_UID: '-1' } }), InvalidArgumentError);
  assert.equal(keyhaven.allowedDaemonUid({ KEYHAVEN_ALLOW_DAEMON_UID: '65534' }), 65534);
  assert.equal(keyhaven.allowedDaemonUid({ KEYHAVEN_ALLOW_DAEMON_UID: '' }), null);
  assert.throws(() => new Client({ allowDaemonUid: 'root' }), InvalidArgumentError);
});

test('no socket, or not a socket, is "not running"', async () => {
  const root = tree();
  const missing = new Client({ socket: path.join(root, 'none.sock') });
  await assert.rejects(missing.connect(), (e) => e instanceof UnavailableError && /keyhavend is not running \(no socket at /.test(e.message));
  const file = path.join(root, 'file.sock');
  fs.writeFileSync(file, '');
  await assert.rejects(new Client({ socket: file }).connect(), (e) => e instanceof UnavailableError && /is a regular file, not a socket/.test(e.message));
  const noDir = new Client({ env: { XDG_RUNTIME_DIR: path.join(root, 'absent') } });
  await assert.rejects(noDir.connect(), UnavailableError);
});

test('the socket is chosen as the Rust client chooses it', () => {
  const uid = process.getuid();
  const pick = (socket, env) => keyhaven.resolveSocket({ socket, env });
  assert.deepEqual(pick('/x/flag.sock', { KEYHAVEN_SOCKET: '/x/env.sock' }), { path: '/x/flag.sock', explicit: true });
  assert.deepEqual(pick(undefined, { KEYHAVEN_SOCKET: '/x/env.sock', XDG_RUNTIME_DIR: '/run/u' }), { path: '/x/env.sock', explicit: true });
  assert.deepEqual(pick(undefined, { KEYHAVEN_SOCKET: '', XDG_RUNTIME_DIR: '/run/u' }), { path: '/run/u/keyhaven/keyhaven.sock', explicit: false });
  assert.deepEqual(pick(undefined, { XDG_RUNTIME_DIR: 'relative', TMPDIR: '/var/tmp' }), { path: `/var/tmp/keyhaven-${uid}/keyhaven.sock`, explicit: false });
  assert.deepEqual(pick(undefined, { TMPDIR: 'relative' }), { path: `/tmp/keyhaven-${uid}/keyhaven.sock`, explicit: false });
  assert.equal(pick('rel.sock', {}).path, path.resolve('rel.sock'));
});
