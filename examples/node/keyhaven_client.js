#!/usr/bin/env node
// A keyhaven client in Node.js: store, get and watch credentials from the
// command line, with the keyhaven package (clients/node).
//
//     npm ci     # links ../../clients/node (the package has no dependencies)
//     printf 'tok-123' | node keyhaven_client.js store jellyfin srv-1 user-1
//     node keyhaven_client.js get jellyfin srv-1 user-1
//     node keyhaven_client.js watch --snapshot --count 10
//
// The package finds the socket as the Rust client does, and checks before
// connecting that the socket (and the default socket's directory) is the
// user's own: see clients/node/README.md. Node cannot read the server's peer
// credentials, so it checks owners and modes only. To trust a daemon of
// another uid on purpose, set KEYHAVEN_ALLOW_DAEMON_UID=<uid>.
//
// Exit codes match the keyhaven CLI: 0 success, 1 other error, 2 bad command
// line, 3 not found, 4 permission denied, 5 daemon unavailable, 6 invalid
// input, 7 conflict (compare-and-swap), 8 protocol mismatch, 9 untrusted
// daemon (the socket or its directory belongs to another user).
'use strict';

const fs = require('fs');
const path = require('path');

const PROG = 'keyhaven_client.js';
const USAGE = `usage: ${PROG} [--socket PATH] [--proto-dir DIR] COMMAND ...

commands:
  store PROVIDER SERVER_ID USER_ID [TOKEN_TYPE] [--label TEXT] [--if-revision N]
        store the secret read from stdin (one trailing newline is dropped)
  get PROVIDER SERVER_ID USER_ID [TOKEN_TYPE] [-n]
        print the secret (-n: without a newline)
  watch [--snapshot] [--count N]
        print one JSON line per change; exit after N events

Write an empty SERVER_ID or USER_ID as ''. TOKEN_TYPE defaults to access_token.`;

// The keyhaven CLI's exit codes, for failures found before the package is
// loaded (the package's errors carry their own `exitCode`).
const EXIT = { FAILURE: 1, USAGE: 2, UNAVAILABLE: 5, INVALID_INPUT: 6 };

// An error to report on stderr, with the exit code to leave with.
class Failure extends Error {
  constructor(message, exitCode = EXIT.FAILURE) {
    super(message);
    this.exitCode = exitCode;
  }
}

function usageError(message) {
  return new Failure(`${message}\n${USAGE}`, EXIT.USAGE);
}

function parseArgs(argv) {
  const opts = {
    socket: null,
    protoDir: process.env.KEYHAVEN_PROTO_DIR || null,
    command: null,
    positional: [],
    label: null,
    ifRevision: null,
    noNewline: false,
    snapshot: false,
    count: null,
  };
  const takesValue = new Set(['--socket', '--proto-dir', '--label', '--if-revision', '--count']);
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value = null;
    if (arg.startsWith('--') && arg.includes('=')) {
      value = arg.slice(arg.indexOf('=') + 1);
      arg = arg.slice(0, arg.indexOf('='));
    }
    if (takesValue.has(arg) && value === null) {
      if (i + 1 >= argv.length) throw usageError(`${arg} needs a value`);
      value = argv[++i];
    }
    const number = () => {
      if (!/^[0-9]+$/.test(value)) throw usageError(`${arg} takes a whole number, not ${JSON.stringify(value)}`);
      return value;
    };
    switch (arg) {
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
        break;
      case '--socket': opts.socket = value; break;
      case '--proto-dir': opts.protoDir = value; break;
      case '--label': opts.label = value; break;
      case '--if-revision': opts.ifRevision = number(); break;
      case '--count': opts.count = Number(number()); break;
      case '-n':
      case '--no-newline': opts.noNewline = true; break;
      case '--snapshot': opts.snapshot = true; break;
      case '--':
        opts.positional.push(...argv.slice(i + 1));
        i = argv.length;
        break;
      default:
        if (arg.startsWith('-') && arg !== '-') throw usageError(`unknown option ${arg}`);
        if (opts.command === null) opts.command = arg;
        else opts.positional.push(arg);
    }
  }
  const allowed = {
    store: ['--label', '--if-revision'],
    get: ['-n'],
    watch: ['--snapshot', '--count'],
  };
  if (opts.command === null) throw usageError('a command is required');
  if (!(opts.command in allowed)) throw usageError(`unknown command ${opts.command}`);
  const misplaced = [
    ['--label', opts.label !== null],
    ['--if-revision', opts.ifRevision !== null],
    ['-n', opts.noNewline],
    ['--snapshot', opts.snapshot],
    ['--count', opts.count !== null],
  ].find(([flag, given]) => given && !allowed[opts.command].includes(flag));
  if (misplaced) throw usageError(`${misplaced[0]} does not apply to ${opts.command}`);
  if (opts.command === 'watch') {
    if (opts.positional.length) throw usageError('watch takes no positional arguments');
    if (opts.count !== null && opts.count < 1) throw usageError('--count must be at least 1');
  } else if (opts.positional.length < 3 || opts.positional.length > 4) {
    throw usageError(`${opts.command} needs PROVIDER SERVER_ID USER_ID [TOKEN_TYPE]`);
  }
  return opts;
}

// The package, once loaded; its errors carry the exit code to leave with.
let keyhaven = null;

function loadPackage() {
  try {
    keyhaven = require('keyhaven');
  } catch (e) {
    throw new Failure(`this client needs the keyhaven package (run npm ci in ${__dirname}): ${e.message}`);
  }
}

// An RFC 3339 UTC time to the second, or null.
function timestamp(date) {
  if (!date) return null;
  return new Date(Math.floor(date.getTime() / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// One watch event as a JSON object with sorted keys (like the Python
// client's output); secrets are never part of an event.
function eventJson(event) {
  const out = { kind: event.kind };
  const m = event.metadata;
  if (m) {
    Object.assign(out, {
      key: keyhaven.formatKey(m.key),
      provider: m.key.provider,
      server_id: m.key.serverId,
      user_id: m.key.userId,
      token_type: m.key.tokenType,
      revision: m.revision,
      label: m.label,
      expires_at: timestamp(m.expiresAt),
    });
  }
  out.time = timestamp(event.time);
  const a = event.actor;
  out.actor = a ? { app_id: a.appId, executable: a.executable, pid: a.pid, uid: a.uid } : null;
  if (event.kind === 'LAGGED') out.missed = event.missed;
  return Object.fromEntries(Object.entries(out).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
}

function readSecret() {
  let data = fs.readFileSync(0);
  if (data.length >= 2 && data[data.length - 2] === 0x0d && data[data.length - 1] === 0x0a) {
    data = data.subarray(0, data.length - 2);
  } else if (data.length >= 1 && data[data.length - 1] === 0x0a) {
    data = data.subarray(0, data.length - 1);
  }
  if (data.length === 0) throw new Failure('the secret is empty (pipe it on stdin)', EXIT.INVALID_INPUT);
  return data;
}

function makeKey([provider, serverId, userId, tokenType = 'access_token']) {
  return { provider, serverId, userId, tokenType };
}

async function cmdStore(client, opts) {
  const options = {};
  if (opts.label !== null) options.label = opts.label;
  if (opts.ifRevision !== null) options.expectedRevision = BigInt(opts.ifRevision);
  const { metadata, created } = await client.store(makeKey(opts.positional), readSecret(), options);
  process.stdout.write(`${created ? 'stored' : 'updated'} ${keyhaven.formatKey(metadata.key)} (revision ${metadata.revision})\n`);
}

async function cmdGet(client, opts) {
  const { secret } = await client.get(makeKey(opts.positional));
  process.stdout.write(opts.noNewline ? secret : Buffer.concat([secret, Buffer.from('\n')]));
}

async function cmdWatch(client, opts) {
  // Resolves once the daemon has registered the watcher: from here on no
  // change is missed. Say so on stderr for scripts.
  const watch = await client.watch({ snapshot: opts.snapshot });
  process.stderr.write('watching for changes\n');
  let seen = 0;
  for await (const event of watch) {
    process.stdout.write(JSON.stringify(eventJson(event)) + '\n');
    seen += 1;
    if (opts.count !== null && seen >= opts.count) return;
  }
  if (opts.count !== null) {
    throw new Failure(`watch: the daemon ended the stream after ${seen} of ${opts.count} events`, EXIT.UNAVAILABLE);
  }
}

async function main(argv) {
  const opts = parseArgs(argv);
  loadPackage();
  let protoDir;
  if (opts.protoDir) {
    const file = path.join(opts.protoDir, 'keyhaven', 'v1', 'keyhaven.proto');
    if (!fs.existsSync(file)) {
      throw new Failure(`no keyhaven.proto at ${file}; pass --proto-dir (the directory holding keyhaven/v1/)`);
    }
    protoDir = opts.protoDir;
  }
  let client;
  try {
    // A KEYHAVEN_ALLOW_DAEMON_UID that is not a uid is a usage error here.
    keyhaven.allowedDaemonUid();
    client = new keyhaven.Client({ socket: opts.socket || undefined, protoDir });
  } catch (e) {
    if (e instanceof keyhaven.KeyhavenError) throw new Failure(e.message, EXIT.USAGE);
    throw e;
  }
  try {
    const run = { store: cmdStore, get: cmdGet, watch: cmdWatch }[opts.command];
    await run(client, opts);
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  () => {
    process.exitCode = 0;
  },
  (e) => {
    if (e instanceof Failure || (keyhaven && e instanceof keyhaven.KeyhavenError)) {
      process.stderr.write(`${PROG}: ${e.message}\n`);
      process.exitCode = e.exitCode;
    } else {
      process.stderr.write(`${PROG}: ${e && e.stack ? e.stack : e}\n`);
      process.exitCode = EXIT.FAILURE;
    }
  },
);
