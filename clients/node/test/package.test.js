// The package as others get it: its copy of keyhaven.proto equals the
// repository's, its types compile against an app-like usage file, and
// `npm install` of this directory into an empty one gives a package that
// talks to a real keyhavend (as a link, and as a copy with its own
// dependencies, which is what a tarball gives).
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { after, before, test } = require('node:test');

const { startDaemon, tempTree } = require('../test-support/daemon');

const PACKAGE = path.join(__dirname, '..');

function run(command, args, options = {}) {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options });
  } catch (e) {
    assert.fail(`${command} ${args.join(' ')} failed (${e.status}):\n${e.stdout}\n${e.stderr}`);
  }
}

let daemon;

before(async () => {
  daemon = await startDaemon();
});

after(async () => {
  if (daemon) await daemon.stop();
});

test('the shipped keyhaven.proto is the repository\'s (npm run check-proto)', () => {
  const out = run(process.execPath, [path.join(PACKAGE, 'scripts', 'check-proto.js')]);
  assert.match(out, /matches/);
});

test('index.d.ts type-checks an app-like usage file (tsc --strict)', (t) => {
  const tsc = path.join(PACKAGE, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!fs.existsSync(tsc)) {
    const why = 'typescript is not installed: run npm ci in clients/node (it is a devDependency)';
    process.stderr.write(`\n*** SKIPPED ${t.name}: ${why} ***\n`);
    if (process.env.CI) assert.fail(why);
    t.skip(why);
    return;
  }
  run(process.execPath, [
    tsc,
    '--noEmit',
    '--strict',
    '--target',
    'es2022',
    '--module',
    'commonjs',
    '--moduleResolution',
    'node',
    '--types',
    'node',
    path.join(__dirname, 'usage.ts'),
  ]);
});

// An app in an empty directory: store and read back through the installed
// package, with no path into this repository.
const APP = `
const keyhaven = require('keyhaven');
(async () => {
  const client = await keyhaven.connect();
  const key = { provider: 'jellyfin', serverId: process.argv[2], userId: 'u' };
  await client.store(key, Buffer.from([0xff, 0x00, 0x01]), { attributes: { [keyhaven.Attribute.SERVER_NAME]: 'Home' } });
  const [found] = await client.list({ attributes: { server_name: 'Home' }, serverId: process.argv[2] });
  const { secret } = await client.get(found.key);
  client.close();
  console.log(require.resolve('keyhaven'), secret.toString('hex'));
})().catch((e) => { console.error(e); process.exit(1); });
`;

for (const [how, flags] of [
  ['as a link', []],
  ['as a copy with its own dependencies (--install-links)', ['--install-links']],
]) {
  test(`npm install of clients/node into an empty directory works ${how}`, () => {
    const t = tempTree('keyhaven-node-install-');
    try {
      const app = path.join(t.root, 'app');
      fs.mkdirSync(app);
      run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...flags, PACKAGE], { cwd: app });
      const installed = path.join(app, 'node_modules', 'keyhaven');
      const linked = fs.lstatSync(installed).isSymbolicLink();
      assert.equal(linked, flags.length === 0);
      if (!linked) {
        for (const f of ['index.js', 'index.d.ts', 'lib/client.js', 'proto/keyhaven/v1/keyhaven.proto', 'README.md']) {
          assert.ok(fs.existsSync(path.join(installed, f)), `the package ships ${f}`);
        }
        for (const f of ['test', 'test-support', 'scripts', 'node_modules']) {
          assert.ok(!fs.existsSync(path.join(installed, f)), `the package does not ship ${f}`);
        }
        assert.ok(fs.existsSync(path.join(app, 'node_modules', '@grpc', 'grpc-js', 'package.json')));
      }
      fs.writeFileSync(path.join(app, 'app.js'), APP);
      const out = run(process.execPath, ['app.js', `srv-${flags.length}`], {
        cwd: app,
        env: { PATH: process.env.PATH, HOME: t.root, ...daemon.env },
      });
      const [resolved, hex] = out.trim().split(' ');
      assert.equal(hex, 'ff0001');
      assert.equal(resolved.startsWith(app), !linked, resolved);
    } finally {
      t.cleanup();
    }
  });
}
