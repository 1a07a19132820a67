// keyhaven: a client for keyhavend, the per-user credential daemon.
//
//     const keyhaven = require('keyhaven');
//     const client = await keyhaven.connect();
//     const { secret } = await client.get({ provider: 'jellyfin', serverId, userId });
//
// Layout (no dependencies: only Node's own modules):
//   lib/trust.js    which socket, and the owner/mode checks made before a byte is sent
//   lib/client.js   Client (the handshake, deadlines, every call) and Watch
//   lib/grpc.js     gRPC over node:http2 on the Unix socket: unary and server-streaming calls
//   lib/proto.js    the protobuf schema and codec of the messages this package uses
//   lib/schema.js   a small .proto reader, to check the codec against a copy of the contract
//   lib/convert.js  wire messages <-> plain objects; Credential (secret redacted)
//   lib/errors.js   KeyhavenError and its subclasses, by gRPC status; exit codes
//   proto/          the copy of keyhaven.proto this package speaks (test/proto.test.js
//                   checks lib/proto.js against it; scripts/check-proto.js keeps it
//                   equal to the repository's)
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
