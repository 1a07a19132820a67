// Watch against a real keyhavend: the snapshot, live events carrying
// attributes, filters, the three ways to end a watch, and the error a
// watcher gets when the daemon shuts down.
'use strict';

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');

const keyhaven = require('..');
const { startDaemon } = require('../test-support/daemon');

const { UnavailableError, Watch } = keyhaven;

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

// The next `n` events of an iterator.
async function take(iterator, n) {
  const out = [];
  while (out.length < n) {
    const { value, done } = await iterator.next();
    if (done) break;
    out.push(value);
  }
  return out;
}

test('snapshot, then SYNCED, then a live event carrying attributes and no secret', async () => {
  const key = { provider: 'jellyfin', serverId: 'srv-w', userId: 'ann' };
  await client.store(key, 'first-secret', { attributes: { server_name: 'Home' } });
  const watch = await client.watch({ snapshot: true, provider: 'jellyfin' });
  assert.ok(watch instanceof Watch);
  const events = watch[Symbol.asyncIterator]();
  const [snapshot, synced] = await take(events, 2);
  assert.equal(snapshot.kind, 'SNAPSHOT');
  assert.deepEqual(snapshot.metadata.key, { ...key, tokenType: 'access_token' });
  assert.deepEqual(snapshot.metadata.attributes, { server_name: 'Home' });
  assert.equal(snapshot.actor, null);
  assert.equal(synced.kind, 'SYNCED');
  assert.equal(synced.metadata, null);

  const secret = 'live-secret-9931';
  const stored = await client.store(key, secret, { attributes: { server_name: 'Home', device_id: 'dev-7' } });
  const [updated] = await take(events, 1);
  assert.equal(updated.kind, 'UPDATED');
  assert.equal(updated.metadata.revision, stored.metadata.revision);
  assert.deepEqual(updated.metadata.attributes, { device_id: 'dev-7', server_name: 'Home' });
  assert.equal(updated.actor.uid, process.getuid());
  assert.equal(updated.actor.pid, process.pid);
  assert.ok(updated.time instanceof Date);
  assert.ok(!JSON.stringify(updated).includes(secret));

  await client.delete(key);
  const [deleted] = await take(events, 1);
  assert.equal(deleted.kind, 'DELETED');
  watch.cancel();
  assert.deepEqual(await events.next(), { value: undefined, done: true }, 'cancel() ends the loop');
});

test('an attribute filter selects the events; break ends the watch', async () => {
  const watch = await client.watch({ attributes: { device_id: 'dev-watched' } });
  await client.store({ provider: 'emby', serverId: 's', userId: 'other' }, 't', { attributes: { device_id: 'dev-other' } });
  await client.store({ provider: 'emby', serverId: 's', userId: 'mine' }, 't', { attributes: { device_id: 'dev-watched' } });
  let seen = null;
  for await (const event of watch) {
    seen = event;
    break;
  }
  assert.equal(seen.kind, 'STORED');
  assert.equal(seen.metadata.key.userId, 'mine');
  assert.throws(() => watch[Symbol.asyncIterator](), /only once/);
});

test('an AbortSignal ends a watch; an aborted one never starts', async () => {
  const controller = new AbortController();
  const watch = await client.watch({ signal: controller.signal });
  const loop = (async () => {
    const got = [];
    for await (const event of watch) got.push(event);
    return got;
  })();
  controller.abort();
  assert.deepEqual(await loop, []);
  await assert.rejects(client.watch({ signal: AbortSignal.abort() }), { name: 'AbortError' });
});

test('a bad filter is refused by watch() itself', async () => {
  await assert.rejects(client.watch({ provider: 'not a provider' }), keyhaven.InvalidArgumentError);
  await assert.rejects(client.watch({ attributes: { 'bad name': 'v' } }), keyhaven.InvalidArgumentError);
});

test('the daemon shutting down ends the loop with UnavailableError', async () => {
  const own = await startDaemon();
  const c = await keyhaven.connect({ env: own.env });
  try {
    const watch = await c.watch({ snapshot: true });
    const events = watch[Symbol.asyncIterator]();
    assert.equal((await events.next()).value.kind, 'SYNCED');
    // Settled while the daemon stops: caught at once, checked after.
    const next = events.next().then((r) => r, (e) => e);
    await own.stop();
    const e = await next;
    assert.ok(e instanceof UnavailableError, `${e}`);
    assert.equal(e.exitCode, keyhaven.EXIT.UNAVAILABLE);
  } finally {
    c.close();
    await own.stop();
  }
});
