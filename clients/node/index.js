// keyhaven: a client for keyhavend, the per-user credential daemon.
//
//     const keyhaven = require('keyhaven');
//     const client = await keyhaven.connect();
//     const { secret } = await client.get({ provider: 'jellyfin', serverId, userId });
//
// Layout:
//   lib/trust.js    which socket, and the owner/mode checks made before a byte is sent
//   lib/client.js   Client (the handshake, deadlines, every call) and Watch
//   lib/convert.js  wire messages <-> plain objects; Credential (secret redacted)
//   lib/errors.js   KeyhavenError and its subclasses, by gRPC status; exit codes
//   proto/          the copy of keyhaven.proto this package speaks
//                   (scripts/check-proto.js keeps it equal to the repository's)
// index.d.ts has the types; README.md the guide.
'use strict';

const errors = require('./lib/errors');
const { Client, Watch, connect, PROTOCOL } = require('./lib/client');
const { Credential, formatKey, parseKey } = require('./lib/convert');
const { ENV_ALLOW_DAEMON_UID, allowedDaemonUid, resolveSocket } = require('./lib/trust');

/** Attribute names every app understands (proto/src/attributes.rs). */
const Attribute = Object.freeze({
  SERVER_URL: 'server_url',
  SERVER_NAME: 'server_name',
  USER_NAME: 'user_name',
  DEVICE_ID: 'device_id',
  CLIENT_NAME: 'client_name',
});

module.exports = {
  connect,
  Client,
  Watch,
  Credential,
  KeyhavenError: errors.KeyhavenError,
  NotFoundError: errors.NotFoundError,
  PermissionDeniedError: errors.PermissionDeniedError,
  ConflictError: errors.ConflictError,
  InvalidArgumentError: errors.InvalidArgumentError,
  UnavailableError: errors.UnavailableError,
  ProtocolMismatchError: errors.ProtocolMismatchError,
  UntrustedDaemonError: errors.UntrustedDaemonError,
  EXIT: errors.EXIT,
  PROTOCOL,
  Attribute,
  ENV_ALLOW_DAEMON_UID,
  allowedDaemonUid,
  resolveSocket,
  formatKey,
  parseKey,
};
