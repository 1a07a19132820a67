#!/usr/bin/env node
// A keyhaven client in Node.js: store, get and watch credentials.
//
// It talks to keyhavend over its Unix socket with @grpc/grpc-js. The
// keyhaven.v1 contract is loaded at start-up from the repository's
// proto/keyhaven/v1/keyhaven.proto with @grpc/proto-loader (which bundles
// google/protobuf/timestamp.proto), so there is no generated code.
//
//     npm ci
//     printf 'tok-123' | node keyhaven_client.js store jellyfin srv-1 user-1
//     node keyhaven_client.js get jellyfin srv-1 user-1
//     node keyhaven_client.js watch --snapshot --count 10
//
// The socket is --socket, else $KEYHAVEN_SOCKET, else
// $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock, else
// ${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock: the same rule as the Rust
// client.
//
// Before connecting, the client checks that the socket is the user's own
// (see verifyDaemon): the default socket's directory must be owned by the
// user, not be a symlink and not be writable by group or others, and the
// socket must be owned by the user. Another local user can create
// ${TMPDIR:-/tmp}/keyhaven-$UID first and listen there; a token sent to that
// socket would be theirs. Node's net module cannot read the server's peer
// credentials (SO_PEERCRED), so unlike the Rust and Python clients this one
// checks owners and modes only. To trust a daemon of another uid on purpose,
// set KEYHAVEN_ALLOW_DAEMON_UID=<uid>.
//
// Exit codes match the keyhaven CLI: 0 success, 1 other error, 2 bad command
// line, 3 not found, 4 permission denied, 5 daemon unavailable, 6 invalid
// input, 7 conflict (compare-and-swap), 8 protocol mismatch, 9 untrusted
// daemon (the socket or its directory belongs to another user).
'use strict';

const fs = require('fs');
const path = require('path');

// The wire protocol this client speaks (StatusResponse.protocol).
const PROTOCOL = 1;

const EXIT = {
  FAILURE: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  PERMISSION_DENIED: 4,
  UNAVAILABLE: 5,
  INVALID_INPUT: 6,
  CONFLICT: 7,
  PROTOCOL_MISMATCH: 8,
  UNTRUSTED_DAEMON: 9,
};

// Names a uid whose daemon the user trusts besides their own.
const ENV_ALLOW_DAEMON_UID = 'KEYHAVEN_ALLOW_DAEMON_UID';

// Milliseconds allowed for the handshake and for each unary call.
const CONNECT_TIMEOUT_MS = 5000;
const CALL_TIMEOUT_MS = 30000;

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

// An error to report on stderr, with the exit code to leave with.
class Failure extends Error {
  constructor(message, exitCode = EXIT.FAILURE) {
    super(message);
    this.exitCode = exitCode;
  }
}

// The socket or its directory is not the user's; nothing has been sent.
// `code` is 'UNTRUSTED_DAEMON', `path` what was checked and `ownerUid` the
// uid found on it.
class UntrustedDaemonError extends Failure {
  constructor(message, socketPath, ownerUid) {
    super(message, EXIT.UNTRUSTED_DAEMON);
    this.name = 'UntrustedDaemonError';
    this.code = 'UNTRUSTED_DAEMON';
    this.path = socketPath;
    this.ownerUid = ownerUid;
  }
}

function usageError(message) {
  return new Failure(`${message}\n${USAGE}`, EXIT.USAGE);
}

// The socket by the same rule as proto/src/paths.rs, and whether the user
// named it (--socket or KEYHAVEN_SOCKET): the directory of a named socket is
// the user's choice and is not checked.
function chooseSocket(flag) {
  if (flag) return { socketPath: flag, explicit: true };
  const env = process.env.KEYHAVEN_SOCKET;
  if (env) return { socketPath: env, explicit: true };
  const runtime = process.env.XDG_RUNTIME_DIR || '';
  if (path.isAbsolute(runtime)) {
    return { socketPath: path.join(runtime, 'keyhaven', 'keyhaven.sock'), explicit: false };
  }
  const tmp = path.isAbsolute(process.env.TMPDIR || '') ? process.env.TMPDIR : '/tmp';
  return { socketPath: path.join(tmp, `keyhaven-${process.getuid()}`, 'keyhaven.sock'), explicit: false };
}

// The user's own uid, plus the one KEYHAVEN_ALLOW_DAEMON_UID names.
function trustedUids() {
  const uids = new Set([process.getuid()]);
  const value = process.env[ENV_ALLOW_DAEMON_UID] || '';
  if (value) {
    if (!/^[0-9]+$/.test(value)) {
      throw new Failure(`${ENV_ALLOW_DAEMON_UID} must be a numeric uid, not ${JSON.stringify(value)}`, EXIT.USAGE);
    }
    uids.add(Number(value));
  }
  return uids;
}

// The refusal: what was found at `checked` (owned by uid `owner`), that
// nothing was sent, and what the user can do.
function untrusted(checked, owner, problem, overridable) {
  const advice = overridable
    ? `If you trust the daemon of uid ${owner}, set ${ENV_ALLOW_DAEMON_UID}=${owner}.`
    : `Remove it and restart keyhavend (${ENV_ALLOW_DAEMON_UID} does not override this).`;
  return new UntrustedDaemonError(
    `UNTRUSTED_DAEMON: refusing to talk to keyhavend: ${problem} to receive your tokens. Nothing was sent. ${advice}`,
    checked,
    owner,
  );
}

function notYours(what, owner) {
  return `${what} is owned by uid ${owner}, not by you (uid ${process.getuid()}): another user may have created it`;
}

function notRunning(socketPath, found = null) {
  const detail = found === null ? `no socket at ${socketPath}` : `${socketPath} is ${found}, not a socket`;
  return new Failure(`keyhavend is not running (${detail})`, EXIT.UNAVAILABLE);
}

function fileKind(st) {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isFIFO()) return 'a FIFO';
  return 'a special file';
}

// fs.lstatSync / fs.statSync, with "not there" as null.
function statOrNull(stat, p) {
  try {
    return stat(p);
  } catch (e) {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return null;
    throw e;
  }
}

// Throws UntrustedDaemonError unless the socket (and, for the default path,
// its directory) belongs to the user or to the uid KEYHAVEN_ALLOW_DAEMON_UID
// names. Runs before connecting, so a planted server never sees a byte.
// Node's net module cannot read the server's peer credentials (SO_PEERCRED /
// getpeereid), so this is the whole check here: owners and modes.
function verifyDaemon(socketPath, explicit) {
  const uids = trustedUids();
  if (!explicit) {
    const dir = path.dirname(socketPath);
    const st = statOrNull(fs.lstatSync, dir);
    if (st === null) throw notRunning(socketPath);
    if (st.isSymbolicLink()) {
      throw untrusted(dir, st.uid, `the socket directory ${dir} (owner uid ${st.uid}) is a symlink, which keyhavend never creates: another user may have planted it`, false);
    }
    if (!st.isDirectory()) throw notRunning(socketPath, `inside ${fileKind(st)}`);
    if (!uids.has(st.uid)) {
      throw untrusted(dir, st.uid, notYours(`the socket directory ${dir}`, st.uid), true);
    }
    if (st.mode & 0o022) {
      const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
      throw untrusted(
        dir,
        st.uid,
        `the socket directory ${dir} (owner uid ${st.uid}) is writable by group or others (mode ${mode}): another user could replace the socket`,
        false,
      );
    }
  }
  // A path the user chose may be a symlink to the socket; the default one
  // lives in the directory checked above and is taken as it is.
  const st = statOrNull(explicit ? fs.statSync : fs.lstatSync, socketPath);
  if (st === null) throw notRunning(socketPath);
  if (!st.isSocket()) throw notRunning(socketPath, fileKind(st));
  if (!uids.has(st.uid)) {
    throw untrusted(socketPath, st.uid, notYours(`the socket ${socketPath}`, st.uid), true);
  }
}

function parseArgs(argv) {
  const opts = {
    socket: null,
    protoDir: process.env.KEYHAVEN_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto'),
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

function loadContract(protoDir) {
  let grpc;
  let protoLoader;
  try {
    grpc = require('@grpc/grpc-js');
    protoLoader = require('@grpc/proto-loader');
  } catch (e) {
    throw new Failure(`this client needs @grpc/grpc-js and @grpc/proto-loader (run npm ci in ${__dirname}): ${e.message}`);
  }
  const file = path.join(protoDir, 'keyhaven', 'v1', 'keyhaven.proto');
  if (!fs.existsSync(file)) {
    throw new Failure(`no keyhaven.proto at ${file}; pass --proto-dir (the directory holding keyhaven/v1/)`);
  }
  const definition = protoLoader.loadSync('keyhaven/v1/keyhaven.proto', {
    includeDirs: [protoDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return { grpc, v1: grpc.loadPackageDefinition(definition).keyhaven.v1 };
}

function codeName(grpc, code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

function codeToExit(grpc, code) {
  const s = grpc.status;
  switch (code) {
    case s.NOT_FOUND: return EXIT.NOT_FOUND;
    case s.PERMISSION_DENIED:
    case s.UNAUTHENTICATED: return EXIT.PERMISSION_DENIED;
    case s.FAILED_PRECONDITION:
    case s.ABORTED: return EXIT.CONFLICT;
    case s.INVALID_ARGUMENT:
    case s.OUT_OF_RANGE:
    case s.RESOURCE_EXHAUSTED: return EXIT.INVALID_INPUT;
    case s.UNAVAILABLE:
    case s.DEADLINE_EXCEEDED: return EXIT.UNAVAILABLE;
    case s.UNIMPLEMENTED: return EXIT.PROTOCOL_MISMATCH;
    default: return EXIT.FAILURE;
  }
}

function rpcFailure(grpc, error, what) {
  let detail = error.details || 'no details';
  if (error.code === grpc.status.UNIMPLEMENTED) {
    detail = 'the daemon does not serve this call; it is older than this client, update keyhavend';
  }
  return new Failure(`${what}: ${codeName(grpc, error.code)}: ${detail}`, codeToExit(grpc, error.code));
}

function deadline(ms) {
  return new Date(Date.now() + ms);
}

// Promise wrapper for a unary call.
function unary(client, method, request, ms) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline(ms) }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// Checks that the socket is the user's, opens the clients and checks the
// daemon's protocol number.
async function connect(grpc, v1, socketPath, explicit) {
  socketPath = path.resolve(socketPath);
  verifyDaemon(socketPath, explicit);
  const target = `unix://${socketPath}`;
  const credentials = grpc.credentials.createInsecure();
  const daemon = new v1.Daemon(target, credentials);
  let status;
  try {
    status = await unary(daemon, 'Status', {}, CONNECT_TIMEOUT_MS);
  } catch (e) {
    daemon.close();
    throw new Failure(`cannot talk to keyhavend at ${socketPath}: ${codeName(grpc, e.code)}: ${e.details}`, EXIT.UNAVAILABLE);
  }
  daemon.close();
  if (status.protocol !== PROTOCOL) {
    throw new Failure(
      `keyhavend ${status.version} at ${socketPath} speaks protocol ${status.protocol}, but this client ` +
        `speaks protocol ${PROTOCOL}; restart the daemon after an upgrade, or update the client`,
      EXIT.PROTOCOL_MISMATCH,
    );
  }
  return new v1.Credentials(target, credentials);
}

function escapeField(field) {
  return field.replace(/%/g, '%25').replace(/:/g, '%3A');
}

// The text form provider::server_id::user_id::token_type.
function keyText(key) {
  return [key.provider, key.server_id, key.user_id, key.token_type].map(escapeField).join('::');
}

// An RFC 3339 UTC time for a Timestamp, or null when absent.
function timestamp(ts) {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// uint64 fields arrive as strings (longs: String); print them as numbers,
// which is exact up to 2^53.
function uint(value) {
  return Number(value || 0);
}

// One watch event as a plain object; secrets are never part of an event.
function eventJson(event) {
  const kind = String(event.kind).replace(/^EVENT_KIND_/, '');
  const out = { kind };
  const m = event.metadata;
  if (m) {
    Object.assign(out, {
      key: keyText(m.key),
      provider: m.key.provider,
      server_id: m.key.server_id,
      user_id: m.key.user_id,
      token_type: m.key.token_type,
      revision: uint(m.revision),
      // proto3 `optional`: present only when the synthetic oneof says so.
      label: m._label === 'label' ? m.label : null,
      expires_at: timestamp(m.expires_at),
    });
  }
  out.time = timestamp(event.time);
  const a = event.actor;
  out.actor = a ? { app_id: a.app_id, executable: a.executable, pid: a.pid, uid: a.uid } : null;
  if (kind === 'LAGGED') out.missed = uint(event.missed);
  // Keys sorted (actor's above too), like the Python client's output.
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

function makeKey(positional) {
  const [provider, server_id, user_id, token_type = 'access_token'] = positional;
  return { provider, server_id, user_id, token_type };
}

async function cmdStore(grpc, client, opts) {
  const request = { key: makeKey(opts.positional), secret: readSecret() };
  if (opts.label !== null) request.label = opts.label;
  if (opts.ifRevision !== null) request.expected_revision = opts.ifRevision;
  let reply;
  try {
    reply = await unary(client, 'Store', request, CALL_TIMEOUT_MS);
  } catch (e) {
    throw rpcFailure(grpc, e, 'store');
  }
  const verb = reply.created ? 'stored' : 'updated';
  process.stdout.write(`${verb} ${keyText(reply.metadata.key)} (revision ${reply.metadata.revision})\n`);
}

async function cmdGet(grpc, client, opts) {
  let reply;
  try {
    reply = await unary(client, 'Retrieve', { key: makeKey(opts.positional) }, CALL_TIMEOUT_MS);
  } catch (e) {
    throw rpcFailure(grpc, e, 'get');
  }
  process.stdout.write(opts.noNewline ? reply.secret : Buffer.concat([reply.secret, Buffer.from('\n')]));
}

function cmdWatch(grpc, client, opts) {
  return new Promise((resolve, reject) => {
    const call = client.Watch({ snapshot: opts.snapshot });
    let seen = 0;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      if (err) reject(err);
      else resolve();
    };
    // Headers arrive once the daemon has registered the watcher: from here
    // on no change is missed. Say so on stderr for scripts.
    call.on('metadata', () => process.stderr.write('watching for changes\n'));
    call.on('data', (event) => {
      if (done) return;
      process.stdout.write(JSON.stringify(eventJson(event)) + '\n');
      seen += 1;
      if (opts.count !== null && seen >= opts.count) {
        finish();
        call.cancel();
      }
    });
    call.on('error', (e) => {
      if (done && e.code === grpc.status.CANCELLED) return;
      finish(rpcFailure(grpc, e, 'watch'));
    });
    call.on('end', () => {
      if (opts.count !== null && seen < opts.count) {
        finish(new Failure(`watch: the daemon ended the stream after ${seen} of ${opts.count} events`, EXIT.UNAVAILABLE));
      } else {
        finish();
      }
    });
  });
}

async function main(argv) {
  const opts = parseArgs(argv);
  const { grpc, v1 } = loadContract(opts.protoDir);
  const { socketPath, explicit } = chooseSocket(opts.socket);
  const client = await connect(grpc, v1, socketPath, explicit);
  try {
    const run = { store: cmdStore, get: cmdGet, watch: cmdWatch }[opts.command];
    await run(grpc, client, opts);
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  () => {
    process.exitCode = 0;
  },
  (e) => {
    if (e instanceof Failure) {
      process.stderr.write(`${PROG}: ${e.message}\n`);
      process.exitCode = e.exitCode;
    } else {
      process.stderr.write(`${PROG}: ${e && e.stack ? e.stack : e}\n`);
      process.exitCode = EXIT.FAILURE;
    }
  },
);
