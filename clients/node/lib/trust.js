// Which socket, and whether the daemon behind it is the user's own: decided
// before a byte is sent (docs/protocol.md, "Verifying the daemon before
// sending a byte").
//
// The socket is chosen by the rule of proto/src/paths.rs: an explicit path,
// else $KEYHAVEN_SOCKET, else $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock (only
// when XDG_RUNTIME_DIR is absolute), else
// ${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock (TMPDIR only when absolute).
//
// The fallback directory lives where every local user can write. Another
// user can create it first and listen there; a token sent to that socket
// would be theirs. So the default socket's directory must be the user's,
// not a symlink, and not writable by group or others, and the socket must
// be the user's. A path the user named is their choice: only the socket's
// owner is checked. Node's `net` module cannot read the server's peer
// credentials (SO_PEERCRED / getpeereid), so unlike the Rust and Python
// clients this package checks owners and modes only: for a default path
// the directory check is what protects it; for a named path, a server of
// another uid behind a socket file the user owns is not detected.
'use strict';

const fs = require('fs');
const path = require('path');

const { InvalidArgumentError, UnavailableError, UntrustedDaemonError } = require('./errors');

/** Names one other uid whose daemon the user trusts, on purpose. */
const ENV_ALLOW_DAEMON_UID = 'KEYHAVEN_ALLOW_DAEMON_UID';
const SOCKET_NAME = 'keyhaven.sock';
const MAX_UID = 0xffffffff;

/**
 * The socket to use and whether the user named it (`socket`, or
 * KEYHAVEN_SOCKET). The path is made absolute against the working directory.
 */
function resolveSocket({ socket, env = process.env } = {}) {
  if (socket !== undefined && socket !== null && typeof socket !== 'string') {
    throw new InvalidArgumentError('socket must be a path (a string)');
  }
  if (socket) return { path: path.resolve(socket), explicit: true };
  if (env.KEYHAVEN_SOCKET) return { path: path.resolve(env.KEYHAVEN_SOCKET), explicit: true };
  const runtime = env.XDG_RUNTIME_DIR || '';
  if (path.isAbsolute(runtime)) {
    return { path: path.join(runtime, 'keyhaven', SOCKET_NAME), explicit: false };
  }
  const tmp = path.isAbsolute(env.TMPDIR || '') ? env.TMPDIR : '/tmp';
  return { path: path.join(tmp, `keyhaven-${process.getuid()}`, SOCKET_NAME), explicit: false };
}

/**
 * The uid KEYHAVEN_ALLOW_DAEMON_UID names, or null when it is unset or
 * empty. A value that is not a uid is an error, not ignored.
 */
function allowedDaemonUid(env = process.env) {
  const value = env[ENV_ALLOW_DAEMON_UID] || '';
  if (!value) return null;
  if (!/^[0-9]+$/.test(value) || Number(value) > MAX_UID) {
    throw new InvalidArgumentError(`${ENV_ALLOW_DAEMON_UID} must be a numeric uid, not ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** The user's own uid, the one the environment names, and `extra` if given. */
function trustedUids(env, extra) {
  const uids = new Set([process.getuid()]);
  const fromEnv = allowedDaemonUid(env);
  if (fromEnv !== null) uids.add(fromEnv);
  if (extra !== undefined && extra !== null) {
    if (!Number.isInteger(extra) || extra < 0 || extra > MAX_UID) {
      throw new InvalidArgumentError('allowDaemonUid must be a uid (a whole number)');
    }
    uids.add(extra);
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
  return new UnavailableError(`keyhavend is not running (${detail})`);
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

/**
 * Throws UntrustedDaemonError unless the socket (and, unless `explicit`, its
 * directory) belongs to one of `uids`; UnavailableError when there is no
 * socket. Runs before connecting, so a planted server never sees a byte.
 */
function verifyDaemon(socketPath, explicit, uids) {
  if (!explicit) {
    const dir = path.dirname(socketPath);
    const st = statOrNull(fs.lstatSync, dir);
    if (st === null) throw notRunning(socketPath);
    if (st.isSymbolicLink()) {
      throw untrusted(
        dir,
        st.uid,
        `the socket directory ${dir} (owner uid ${st.uid}) is a symlink, which keyhavend never creates: another user may have planted it`,
        false,
      );
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

module.exports = { ENV_ALLOW_DAEMON_UID, resolveSocket, allowedDaemonUid, trustedUids, verifyDaemon };
