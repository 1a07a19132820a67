// Store, get, delete, list and logout against a real keyhavend: bytes that
// are not UTF-8, attributes (stored, returned, filtered; kept, replaced,
// cleared), every page of a long list, the typed errors, and secrets kept
// out of everything printable.
'use strict';

const assert = require('node:assert/strict');
const { after, before, describe, test } = require('node:test');
const util = require('node:util');

const keyhaven = require('..');
const { startDaemon } = require('../test-support/daemon');

const {
  Client,
  ConflictError,
  Credential,
  InvalidArgumentError,
  KeyhavenError,
  NotFoundError,
} = keyhaven;

let daemon;
let client;

before(async () => {
  daemon = await startDaemon();
  client = await keyhaven.connect({ env: daemon.env });
});

after(async () => {
  if (client) client.close();
  if (daemon) await daemon.stop();
});

describe('connect', () => {
  test('finds the default socket under XDG_RUNTIME_DIR and shakes hands', () => {
    assert.equal(client.socket, daemon.socket);
    assert.equal(client.daemon.protocol, keyhaven.PROTOCOL);
    assert.equal(client.daemon.pid, daemon.pid);
    assert.equal(client.daemon.keyProblem, '');
  });

  test('an explicit socket wins over the environment', async () => {
    const c = new Client({ socket: daemon.socket, env: { KEYHAVEN_SOCKET: '/nonexistent/x.sock' } });
    assert.equal((await c.status()).pid, daemon.pid);
    c.close();
  });

  test('a closed client refuses further calls', async () => {
    const c = await keyhaven.connect({ env: daemon.env });
    c.close();
    await assert.rejects(c.get({ provider: 'p' }), (e) => e instanceof KeyhavenError && /closed/.test(e.message));
  });
});

describe('store, get, delete', () => {
  const key = { provider: 'jellyfin', serverId: 'srv-bytes', userId: 'user-1' };
  const secret = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a, 0xc3, 0x28, 0x00]);

  test('round-trips bytes that are not UTF-8', async () => {
    const stored = await client.store(key, secret, { label: 'Living room' });
    assert.equal(stored.created, true);
    assert.deepEqual(stored.metadata.key, { ...key, tokenType: 'access_token' });
    assert.equal(stored.metadata.label, 'Living room');
    assert.ok(stored.metadata.revision > 0);

    const cred = await client.get(key);
    assert.ok(cred instanceof Credential);
    assert.ok(Buffer.isBuffer(cred.secret));
    assert.deepEqual(cred.secret, secret);
    assert.equal(cred.metadata.revision, stored.metadata.revision);
    assert.ok(cred.metadata.createdAt instanceof Date);
    assert.equal(cred.metadata.expiresAt, null);

    const again = await client.store(key, 'replaced', { expectedRevision: stored.metadata.revision });
    assert.equal(again.created, false);
    assert.equal(again.metadata.label, null, 'a store without a label clears it');
    assert.equal((await client.get(key)).secret.toString(), 'replaced');

    const deleted = await client.delete(key, { expectedRevision: again.metadata.revision });
    assert.deepEqual(deleted.key, again.metadata.key);
    await assert.rejects(client.get(key), NotFoundError);
  });

  test('an expiry and a Uint8Array secret', async () => {
    const k = { provider: 'emby', serverId: 's', userId: 'u' };
    const expiresAt = new Date(Date.now() + 3600_000);
    const stored = await client.store(k, new Uint8Array([1, 2, 3]), { expiresAt });
    assert.equal(Math.floor(stored.metadata.expiresAt.getTime() / 1000), Math.floor(expiresAt.getTime() / 1000));
    assert.deepEqual((await client.get(k)).secret, Buffer.from([1, 2, 3]));
    await client.delete(k);
  });

  test('the secret stays out of inspect, console output, JSON and String()', async () => {
    const k = { provider: 'plex', serverId: '', userId: 'acct' };
    const canary = 'canary-secret-0451';
    await client.store(k, canary);
    const cred = await client.get(k);
    assert.equal(cred.secret.toString(), canary);
    for (const shown of [
      util.inspect(cred),
      util.inspect(cred, { depth: null }),
      util.inspect({ nested: [cred] }, { depth: 5 }),
      util.format('%o %O %j %s', cred, cred, cred, cred),
      JSON.stringify(cred),
      JSON.stringify({ cred }),
      String(cred),
      `${cred}`,
      Object.keys(cred).join(','),
    ]) {
      assert.ok(!shown.includes(canary), shown);
      assert.ok(!shown.includes(Buffer.from(canary).toString('hex')), shown);
    }
    assert.match(util.inspect(cred), /\[REDACTED\]/);
    assert.equal(JSON.parse(JSON.stringify(cred)).secret, '[REDACTED]');
    const { secret } = cred;
    assert.equal(secret.toString(), canary, 'destructuring still gives the bytes');
    await client.delete(k);
  });
});

describe('typed errors', () => {
  const key = { provider: 'jellyfin', serverId: 'srv-err', userId: 'u' };

  test('NotFoundError for a missing credential', async () => {
    await assert.rejects(client.get({ provider: 'jellyfin', serverId: 'none', userId: 'nobody' }), (e) => {
      assert.ok(e instanceof NotFoundError && e instanceof KeyhavenError);
      assert.equal(e.code, 'NOT_FOUND');
      assert.equal(e.exitCode, keyhaven.EXIT.NOT_FOUND);
      assert.equal(e.grpcStatus, 'NOT_FOUND');
      assert.match(e.message, /^get: NOT_FOUND: /);
      return true;
    });
    await assert.rejects(client.delete({ provider: 'jellyfin', serverId: 'none' }), NotFoundError);
  });

  test('ConflictError when the revision moved, or the credential exists', async () => {
    const canary = 'conflict-canary-77';
    const first = await client.store(key, canary, { expectedRevision: 0 });
    await assert.rejects(client.store(key, canary, { expectedRevision: 0 }), (e) => {
      assert.ok(e instanceof ConflictError);
      assert.equal(e.exitCode, keyhaven.EXIT.CONFLICT);
      assert.equal(e.grpcStatus, 'FAILED_PRECONDITION');
      assert.ok(!e.message.includes(canary) && !util.inspect(e).includes(canary), 'no secret in the error');
      return true;
    });
    await assert.rejects(client.store(key, 'x', { expectedRevision: first.metadata.revision + 1000 }), ConflictError);
    await assert.rejects(client.delete(key, { expectedRevision: first.metadata.revision + 1000 }), ConflictError);
    await client.delete(key, { expectedRevision: BigInt(first.metadata.revision) });
  });

  test('InvalidArgumentError for a bad attribute name, key or secret', async () => {
    await assert.rejects(client.store(key, 's', { attributes: { 'bad name': 'v' } }), (e) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.equal(e.exitCode, keyhaven.EXIT.INVALID_INPUT);
      assert.equal(e.grpcStatus, 'INVALID_ARGUMENT');
      assert.match(e.message, /attribute name #1/, 'the daemon\'s text, "#" decoded');
      return true;
    });
    await assert.rejects(client.store(key, 's', { attributes: { server_name: 'a\u202eb' } }), InvalidArgumentError);
    await assert.rejects(client.store({ provider: 'has space' }, 's'), InvalidArgumentError);
    await assert.rejects(client.store(key, ''), InvalidArgumentError, 'an empty secret');
    await assert.rejects(client.list({ attributes: { 'no/slash': 'v' } }), InvalidArgumentError);
    // Shapes this package checks before sending.
    await assert.rejects(client.store(key, 42), InvalidArgumentError);
    await assert.rejects(client.store(key, 's', { attributes: { n: 1 } }), InvalidArgumentError);
    await assert.rejects(client.store(key, 's', { expectedRevision: -1 }), InvalidArgumentError);
    await assert.rejects(client.get({ serverId: 's' }), InvalidArgumentError);
    await assert.rejects(client.get('jellyfin::s::u'), InvalidArgumentError);
    await assert.rejects(client.get(key, { timeoutMs: -5 }), InvalidArgumentError);
    assert.throws(() => new Client({ timeoutMs: 0 }), InvalidArgumentError);
  });
});

describe('attributes', () => {
  const key = { provider: 'jellyfin', serverId: 'srv-attr', userId: 'user-a' };
  const first = { server_url: 'https://jf.example:8096/?a=b', server_name: 'Living room', device_id: 'dev-1' };

  test('stored and returned as a plain object, names in order', async () => {
    const stored = await client.store(key, 'tok', { attributes: first });
    assert.deepEqual(Object.keys(stored.metadata.attributes), ['device_id', 'server_name', 'server_url']);
    assert.deepEqual(stored.metadata.attributes, first);
    assert.equal(Object.getPrototypeOf(stored.metadata.attributes), Object.prototype);
    assert.deepEqual((await client.get(key)).metadata.attributes, first);
  });

  test('absent keeps, an object replaces, {} clears', async () => {
    let m = (await client.store(key, 'tok-2')).metadata;
    assert.deepEqual(m.attributes, first, 'absent: kept');
    m = (await client.store(key, 'tok-3', { attributes: { user_name: 'Ann' } })).metadata;
    assert.deepEqual(m.attributes, { user_name: 'Ann' }, 'replaced, not merged');
    m = (await client.store(key, 'tok-4', { attributes: null })).metadata;
    assert.deepEqual(m.attributes, { user_name: 'Ann' }, 'null: kept');
    m = (await client.store(key, 'tok-5', { attributes: {} })).metadata;
    assert.deepEqual(m.attributes, {}, '{}: cleared');
    assert.deepEqual((await client.get(key)).metadata.attributes, {});
    await client.delete(key);
  });

  test('list filters by exact attribute values', async () => {
    const a = { provider: 'jellyfin', serverId: 'srv-f1', userId: 'ann' };
    const b = { provider: 'jellyfin', serverId: 'srv-f2', userId: 'bob' };
    await client.store(a, 'ta', { attributes: { server_name: 'Home', user_name: 'Ann' } });
    await client.store(b, 'tb', { attributes: { server_name: 'Home', user_name: 'Bob' } });
    const home = await client.list({ attributes: { server_name: 'Home' } });
    assert.deepEqual(home.map((m) => m.key.userId), ['ann', 'bob']);
    const ann = await client.list({ provider: 'jellyfin', attributes: { server_name: 'Home', user_name: 'Ann' } });
    assert.deepEqual(ann.map((m) => m.key.serverId), ['srv-f1']);
    assert.deepEqual(await client.list({ attributes: { server_name: 'home' } }), [], 'exact, case included');
    await client.logout('jellyfin', 'srv-f1');
    await client.logout('jellyfin', 'srv-f2');
  });
});

describe('list', () => {
  const provider = 'paged';
  const count = 1103;

  before(async () => {
    // In batches: one channel carries many calls at once.
    for (let start = 0; start < count; start += 100) {
      const batch = [];
      for (let i = start; i < Math.min(count, start + 100); i++) {
        const userId = `user-${String(i).padStart(5, '0')}`;
        batch.push(client.store({ provider, serverId: 'srv', userId }, `tok-${i}`, { attributes: { n: String(i % 3) } }));
      }
      await Promise.all(batch);
    }
  });

  test('follows every page (default page size 500)', async () => {
    const all = await client.list({ provider });
    assert.equal(all.length, count);
    const users = all.map((m) => m.key.userId);
    assert.deepEqual(users, [...users].sort(), 'in key order');
    assert.equal(new Set(users).size, count, 'no duplicates across pages');
  });

  test('with the page size the caller asks for, and an attribute filter', async () => {
    const all = await client.list({ provider, pageSize: 7 });
    assert.equal(all.length, count);
    const thirds = await client.list({ provider, pageSize: 50, attributes: { n: '1' } });
    assert.equal(thirds.length, Math.floor(count / 3) + (count % 3 > 1 ? 1 : 0));
    await assert.rejects(client.list({ provider, pageSize: 1001 }), InvalidArgumentError);
  });

  test('empty serverId or userId selects only empty ids', async () => {
    await client.store({ provider: 'plex', serverId: '', userId: 'acct-1' }, 't');
    await client.store({ provider: 'plex', serverId: 'srv-x', userId: 'acct-1' }, 't');
    const accountWide = await client.list({ provider: 'plex', serverId: '' });
    assert.deepEqual(accountWide.map((m) => m.key.serverId), ['']);
    const any = await client.list({ provider: 'plex', userId: 'acct-1' });
    assert.deepEqual(any.map((m) => m.key.serverId), ['', 'srv-x']);
  });

  test('logout deletes a server\'s credentials at once, or one user\'s', async () => {
    const gone = await client.logout(provider, 'srv', 'user-00000');
    assert.deepEqual(gone.map((m) => m.key.userId), ['user-00000']);
    const rest = await client.logout(provider, 'srv');
    assert.equal(rest.length, count - 1);
    assert.deepEqual(await client.list({ provider }), []);
    assert.deepEqual(await client.logout(provider, 'srv'), [], 'nothing to delete is not an error');
    await assert.rejects(client.logout('bad provider!', 'srv'), InvalidArgumentError);
  });
});

describe('key text form', () => {
  test('formatKey and parseKey round-trip ids holding "::" and "%"', () => {
    const key = { provider: 'jellyfin', serverId: 'a::b%3A', userId: 'u%', tokenType: 'access_token' };
    const text = keyhaven.formatKey(key);
    assert.equal(text, 'jellyfin::a%3A%3Ab%253A::u%25::access_token');
    assert.deepEqual(keyhaven.parseKey(text), key);
    assert.deepEqual(keyhaven.parseKey('plex::::acct'), { provider: 'plex', serverId: '', userId: 'acct', tokenType: 'access_token' });
    assert.throws(() => keyhaven.parseKey('only::two'), InvalidArgumentError);
  });
});
