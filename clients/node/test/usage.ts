// Compiled (never run) by test/types.test.js with `tsc --noEmit --strict`:
// the public API as an app would use it, and a few misuses that must not
// type-check.
import * as keyhaven from '..';
import {
  Attribute,
  Client,
  ConflictError,
  Credential,
  KeyhavenError,
  Metadata,
  NotFoundError,
  UntrustedDaemonError,
  WatchEvent,
  connect,
} from '..';

async function findJellyfinLogins(): Promise<void> {
  const client: Client = await connect({ timeoutMs: 10_000, connectTimeoutMs: 2_000 });
  const logins: Metadata[] = await client.list({ provider: 'jellyfin', pageSize: 100 });
  for (const m of logins) {
    const name: string | undefined = m.attributes[Attribute.SERVER_NAME];
    const user: string = m.attributes.user_name ?? m.key.userId;
    console.log(name, user, m.revision + 1, m.expiresAt?.toISOString(), m.label ?? '');
    const cred: Credential = await client.get(m.key, { timeoutMs: 1000 });
    const token: string = cred.secret.toString('utf8');
    const deviceId = cred.metadata.attributes[Attribute.DEVICE_ID];
    console.log(token.length, deviceId);
  }
  const stored = await client.store({ provider: 'jellyfin', serverId: 's', userId: 'u' }, Buffer.from('t'), {
    label: 'Living room',
    expiresAt: new Date(),
    expectedRevision: 0,
    attributes: { server_url: 'https://jf.example', [Attribute.DEVICE_ID]: 'dev-1' },
  });
  const created: boolean = stored.created;
  await client.store({ provider: 'plex' }, 'token', { attributes: {}, expectedRevision: 7n });
  const gone: Metadata = await client.delete({ provider: 'plex' }, { expectedRevision: stored.metadata.revision });
  const out: Metadata[] = await client.logout('jellyfin', 's', undefined, { timeoutMs: 5 });
  await client.logout('jellyfin', 's', 'u');

  const controller = new AbortController();
  const watch = await client.watch({ snapshot: true, provider: 'jellyfin', attributes: { device_id: 'x' }, signal: controller.signal });
  for await (const event of watch) {
    const e: WatchEvent = event;
    if (e.kind === 'LAGGED') console.log(e.missed);
    if (e.metadata) console.log(e.metadata.attributes, e.actor?.appId);
    break;
  }
  watch.cancel();
  const status = await client.status();
  console.log(status.protocol, client.daemon?.version, client.socket, created, gone.key.tokenType, out.length);
  client.close();
}

function handle(e: unknown): number {
  if (e instanceof UntrustedDaemonError) return e.ownerUid + e.path.length + e.exitCode;
  if (e instanceof NotFoundError || e instanceof ConflictError) return e.exitCode;
  if (e instanceof KeyhavenError) {
    const code: keyhaven.ErrorCode = e.code;
    return code === 'DATA_LOSS' ? keyhaven.EXIT.FAILURE : e.exitCode;
  }
  return keyhaven.EXIT.FAILURE;
}

const key = keyhaven.parseKey('jellyfin::a%3A%3Ab::user');
const text: string = keyhaven.formatKey(key);
const uid: number | null = keyhaven.allowedDaemonUid(process.env);
const where: { path: string; explicit: boolean } = keyhaven.resolveSocket({ socket: '/x' });
const client = new keyhaven.Client({ socket: where.path, allowDaemonUid: uid ?? undefined, env: {} });

async function misuse(): Promise<void> {
  // @ts-expect-error the secret is bytes or a string
  await client.store({ provider: 'p' }, 42);
  // @ts-expect-error attribute values are strings
  await client.store({ provider: 'p' }, 's', { attributes: { n: 1 } });
  // @ts-expect-error a key needs a provider
  await client.get({ serverId: 's' });
  // @ts-expect-error the secret cannot be replaced
  (await client.get({ provider: 'p' })).secret = Buffer.alloc(0);
  // @ts-expect-error no such option
  await connect({ socketPath: '/x' });
}

void [findJellyfinLogins, handle, misuse, text, keyhaven.PROTOCOL === 1];
