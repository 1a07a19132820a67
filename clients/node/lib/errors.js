// Errors: one class per outcome a program acts on. Decide on the class (or
// `.code`), never on the message, which is for people and may change.
//
// Every error carries `.exitCode`, the exit code the `keyhaven` CLI uses for
// the same outcome (proto/src/exit.rs), so command-line tools built on this
// package exit as the CLI does. No message ever holds a secret: the daemon's
// messages name fields, never values of secrets, and this package builds its
// own from keys, paths and uids only.
'use strict';

const { STATUS, statusName } = require('./grpc');

/** The `keyhaven` CLI's exit codes (proto/src/exit.rs). */
const EXIT = Object.freeze({
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  PERMISSION_DENIED: 4,
  UNAVAILABLE: 5,
  INVALID_INPUT: 6,
  CONFLICT: 7,
  PROTOCOL_MISMATCH: 8,
  UNTRUSTED_DAEMON: 9,
});

/**
 * The base of every error this package throws. `code` is one of
 * 'NOT_FOUND', 'PERMISSION_DENIED', 'CONFLICT', 'INVALID_ARGUMENT',
 * 'RESOURCE_EXHAUSTED', 'UNAVAILABLE', 'PROTOCOL_MISMATCH', 'DATA_LOSS',
 * 'UNTRUSTED_DAEMON' or 'FAILURE'. For an error the daemon answered,
 * `grpcCode` and `grpcStatus` are its gRPC status (number and name) and
 * `details` its message.
 */
class KeyhavenError extends Error {
  constructor(message, { code = 'FAILURE', exitCode = EXIT.FAILURE, grpcCode, details, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.grpcCode = grpcCode;
    this.grpcStatus = grpcCode === undefined ? undefined : statusName(grpcCode);
    this.details = details;
  }
}

/** No such credential, or it has expired. */
class NotFoundError extends KeyhavenError {
  constructor(message, fields = {}) {
    super(message, { ...fields, code: 'NOT_FOUND', exitCode: EXIT.NOT_FOUND });
  }
}

/** The daemon's per-app policy refused this program. */
class PermissionDeniedError extends KeyhavenError {
  constructor(message, fields = {}) {
    super(message, { ...fields, code: 'PERMISSION_DENIED', exitCode: EXIT.PERMISSION_DENIED });
  }
}

/** A compare-and-swap write lost: the stored revision differs. */
class ConflictError extends KeyhavenError {
  constructor(message, fields = {}) {
    super(message, { ...fields, code: 'CONFLICT', exitCode: EXIT.CONFLICT });
  }
}

/** A key field, the label, an attribute, the secret or an option breaks its rules. */
class InvalidArgumentError extends KeyhavenError {
  constructor(message, fields = {}) {
    super(message, { ...fields, code: 'INVALID_ARGUMENT', exitCode: EXIT.INVALID_INPUT });
  }
}

/**
 * The daemon is not running, did not answer in time, its store is not open,
 * or it is shutting down (a Watch ends with this then: watch again).
 */
class UnavailableError extends KeyhavenError {
  constructor(message, fields = {}) {
    super(message, { ...fields, code: 'UNAVAILABLE', exitCode: EXIT.UNAVAILABLE });
  }
}

/**
 * The daemon speaks another protocol number, or does not serve a call
 * (it is older than this package).
 */
class ProtocolMismatchError extends KeyhavenError {
  constructor(message, fields = {}) {
    super(message, { ...fields, code: 'PROTOCOL_MISMATCH', exitCode: EXIT.PROTOCOL_MISMATCH });
  }
}

/**
 * The socket, or its directory, is not the user's (or is open to others):
 * nothing was sent. `path` is what was checked, `ownerUid` its owner.
 */
class UntrustedDaemonError extends KeyhavenError {
  constructor(message, path, ownerUid) {
    super(message, { code: 'UNTRUSTED_DAEMON', exitCode: EXIT.UNTRUSTED_DAEMON });
    this.path = path;
    this.ownerUid = ownerUid;
  }
}

// The daemon's message as it wrote it: lib/grpc.js has percent-decoded
// grpc-message already (the daemon's own escapes in keys, %3A and %25,
// arrive as it wrote them).
function daemonText(details) {
  return typeof details === 'string' ? details : '';
}

/**
 * The error for a failed call `method` ('store', 'get', ...): the class by
 * the gRPC status code (as the Rust client's `ErrorKind`), the message
 * `method: STATUS: details`.
 */
function fromGrpc(method, error) {
  const s = STATUS;
  const code = typeof error.code === 'number' ? error.code : s.UNKNOWN;
  const text = daemonText(error.details);
  let details = text || 'no details';
  if (code === s.UNIMPLEMENTED) {
    details = 'the daemon does not serve this call; it is older than this client, update keyhavend';
  }
  const fields = { grpcCode: code, details: text, cause: error };
  const message = `${method}: ${statusName(code)}: ${details}`;
  switch (code) {
    case s.NOT_FOUND:
      return new NotFoundError(message, fields);
    case s.PERMISSION_DENIED:
    case s.UNAUTHENTICATED:
      return new PermissionDeniedError(message, fields);
    case s.FAILED_PRECONDITION:
    case s.ABORTED:
    case s.ALREADY_EXISTS:
      return new ConflictError(message, fields);
    case s.INVALID_ARGUMENT:
    case s.OUT_OF_RANGE:
      return new InvalidArgumentError(message, fields);
    case s.RESOURCE_EXHAUSTED:
      return new KeyhavenError(message, { ...fields, code: 'RESOURCE_EXHAUSTED', exitCode: EXIT.INVALID_INPUT });
    case s.UNAVAILABLE:
    case s.DEADLINE_EXCEEDED:
    case s.CANCELLED:
      return new UnavailableError(message, fields);
    case s.UNIMPLEMENTED:
      return new ProtocolMismatchError(message, fields);
    case s.DATA_LOSS:
      return new KeyhavenError(message, { ...fields, code: 'DATA_LOSS' });
    default:
      return new KeyhavenError(message, fields);
  }
}

module.exports = {
  EXIT,
  KeyhavenError,
  NotFoundError,
  PermissionDeniedError,
  ConflictError,
  InvalidArgumentError,
  UnavailableError,
  ProtocolMismatchError,
  UntrustedDaemonError,
  fromGrpc,
  statusName,
};
