// The package as others get it: its copy of keyhaven.proto equals the
// repository's, its types compile against an app-like usage file, it has
// no runtime dependencies (and requires nothing but Node's own modules),
// and `npm install` of clients/node from a fresh clone into an empty
// directory gives a package that talks to a real keyhavend: as the link
// npm makes by default (nothing installed in the clone: no `npm ci` there),
// and as a copy (--install-links, which is what a tarball gives).
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const { builtinModules } = require('node:module');
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

test('no runtime dependencies: package.json lists none, and the code requires only Node\'s modules', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE, 'package.json'), 'utf8'));
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies', 'bundleDependencies', 'bundledDependencies']) {
    assert.equal(pkg[field], undefined, `package.json has no ${field}`);
  }
  assert.equal(pkg.scripts.install, undefined);
  assert.equal(pkg.scripts.postinstall, undefined);
  const builtins = new Set(builtinModules);
  const files = ['index.js', ...fs.readdirSync(path.join(PACKAGE, 'lib')).map((f) => path.join('lib', f))];
  for (const file of files) {
    // Comments out (index.js shows `require('keyhaven')` in one).
    const source = fs
      .readFileSync(path.join(PACKAGE, file), 'utf8')
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .replace(/^\s*\/\/.*$/gm, '');
    for (const [, name] of source.matchAll(/require\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const local = name.startsWith('./') || name.startsWith('../');
      const builtin = builtins.has(name.replace(/^node:/, ''));
      assert.ok(local || builtin, `${file} requires ${name}, which is not part of Node`);
      if (local) assert.ok(!path.resolve(PACKAGE, path.dirname(file), name).includes(`${path.sep}node_modules`), `${file}: ${name}`);
    }
  }
});

// The repository as a fresh clone has it, in `dir`: `git clone` of this
// checkout at its HEAD, with clients/node as it is in the working tree
// (tracked files only: what a commit of it would give), so that uncommitted
// changes are what is tested. Returns the clone's clients/node; null (the
// test skipped) when this is not a git checkout.
function freshClone(t, dir) {
  let root;
  try {
    root = execFileSync('git', ['-C', PACKAGE, 'rev-parse', '--show-toplevel'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (e) {
    const why = `not a git checkout, or no git (${e.message.split('\n')[0]})`;
    process.stderr.write(`\n*** SKIPPED ${t.name}: ${why} ***\n`);
    if (process.env.CI) assert.fail(why);
    t.skip(why);
    return null;
  }
  const head = run('git', ['-C', root, 'rev-parse', 'HEAD']).trim();
  // --shared: the clone reads this repository's objects, so even a
  // detached HEAD (as in CI) can be checked out.
  run('git', ['clone', '--quiet', '--shared', '--no-checkout', root, dir]);
  run('git', ['-C', dir, 'checkout', '--quiet', '--detach', head]);
  const rel = path.relative(root, PACKAGE);
  const tracked = run('git', ['-C', root, 'ls-files', '-z', '--', rel]).split('\0').filter(Boolean);
  const inClone = run('git', ['-C', dir, 'ls-files', '-z', '--', rel]).split('\0').filter(Boolean);
  for (const f of inClone) fs.rmSync(path.join(dir, f), { force: true });
  for (const f of tracked) {
    if (!fs.existsSync(path.join(root, f))) continue; // deleted in the working tree
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.copyFileSync(path.join(root, f), path.join(dir, f));
  }
  const pkg = path.join(dir, rel);
  assert.ok(!fs.existsSync(path.join(pkg, 'node_modules')), 'a fresh clone has no node_modules');
  return pkg;
}

// An app in an empty directory: store with attributes, find it by an
// attribute and read it back through the installed package, with no path
// into this repository.
const APP = `
const keyhaven = require('keyhaven');
(async () => {
  const client = await keyhaven.connect();
  const key = { provider: 'jellyfin', serverId: process.argv[2], userId: 'u' };
  await client.store(key, Buffer.from([0xff, 0x00, 0x01]), { attributes: { [keyhaven.Attribute.SERVER_NAME]: 'Home' } });
  const [found] = await client.list({ attributes: { server_name: 'Home' }, serverId: process.argv[2] });
  const { secret } = await client.get(found.key);
  client.close();
  // Whether the bytes came back, not the bytes: a secret is never printed.
  console.log(require.resolve('keyhaven'), secret.equals(Buffer.from([0xff, 0x00, 0x01])) ? 'same-bytes' : 'other-bytes');
})().catch((e) => { console.error(e); process.exit(1); });
`;

for (const [how, flags] of [
  ['as a link (plain npm install)', []],
  ['as a copy (--install-links)', ['--install-links']],
]) {
  test(`a fresh clone: npm install <clone>/clients/node into an empty directory works ${how}`, (ctx) => {
    const t = tempTree('keyhaven-node-install-');
    try {
      const clone = freshClone(ctx, path.join(t.root, 'clone'));
      if (!clone) return;
      const app = path.join(t.root, 'app');
      fs.mkdirSync(app);
      run('npm', ['init', '-y'], { cwd: app });
      run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...flags, clone], { cwd: app });
      assert.deepEqual(fs.readdirSync(path.join(app, 'node_modules')).filter((f) => !f.startsWith('.')), ['keyhaven'], 'nothing else is installed');
      const installed = path.join(app, 'node_modules', 'keyhaven');
      const linked = fs.lstatSync(installed).isSymbolicLink();
      assert.equal(linked, flags.length === 0);
      if (!linked) {
        for (const f of ['index.js', 'index.d.ts', 'lib/client.js', 'lib/grpc.js', 'lib/proto.js', 'lib/schema.js', 'proto/keyhaven/v1/keyhaven.proto', 'README.md']) {
          assert.ok(fs.existsSync(path.join(installed, f)), `the package ships ${f}`);
        }
        for (const f of ['test', 'test-support', 'scripts', 'node_modules']) {
          assert.ok(!fs.existsSync(path.join(installed, f)), `the package does not ship ${f}`);
        }
      } else {
        assert.equal(fs.realpathSync(installed), fs.realpathSync(clone));
      }
      assert.ok(!fs.existsSync(path.join(clone, 'node_modules')), 'nothing was installed in the clone');
      fs.writeFileSync(path.join(app, 'app.js'), APP);
      const out = run(process.execPath, ['app.js', `srv-${flags.length}`], {
        cwd: app,
        env: { PATH: process.env.PATH, HOME: t.root, ...daemon.env },
      });
      const [resolved, readBack] = out.trim().split(' ');
      assert.equal(readBack, 'same-bytes');
      assert.ok(resolved.startsWith(linked ? fs.realpathSync(clone) : app), resolved);
    } finally {
      t.cleanup();
    }
  });
}
