"""Errors: one class per outcome a program acts on, never a message to match.

Every error raised by this package is a `KeyhavenError`. The daemon's gRPC
status code decides the class (`error_for_status` is the one mapping), and
each class carries the exit code the `keyhaven` CLI uses for that outcome
(proto/src/exit.rs), so a command-line tool can `sys.exit(e.exit_code)`.
Messages are for people; they never hold a secret.
"""

from __future__ import annotations

import enum
from typing import ClassVar

import grpc


class ExitCode(enum.IntEnum):
    """The exit codes of the `keyhaven` CLI (proto/src/exit.rs)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 3
    PERMISSION_DENIED = 4
    UNAVAILABLE = 5
    INVALID_INPUT = 6
    CONFLICT = 7
    PROTOCOL_MISMATCH = 8
    UNTRUSTED_DAEMON = 9


class KeyhavenError(Exception):
    """Base class of every error this package raises.

    `code` is the gRPC status code when the daemon or the gRPC layer gave
    one, else None. `exit_code` is what the `keyhaven` CLI exits with.
    """

    exit_code: ClassVar[ExitCode] = ExitCode.FAILURE

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotFound(KeyhavenError):
    """No credential under that key, or it has expired."""

    exit_code = ExitCode.NOT_FOUND


class PermissionDenied(KeyhavenError):
    """The daemon's per-app policy refuses this program."""

    exit_code = ExitCode.PERMISSION_DENIED


class Unavailable(KeyhavenError):
    """The daemon is not running, cannot be reached, did not answer within
    the deadline, is shutting down, or its store is locked."""

    exit_code = ExitCode.UNAVAILABLE


class InvalidArgument(KeyhavenError, ValueError):
    """A key field, label, attribute or the secret breaks its rules; the
    message names the field. Also a ValueError."""

    exit_code = ExitCode.INVALID_INPUT


class ResourceExhausted(KeyhavenError):
    """The request is over the daemon's size limit, or every connection of
    the daemon is busy."""

    exit_code = ExitCode.INVALID_INPUT


class Conflict(KeyhavenError):
    """A compare-and-swap lost: the stored revision is not the expected one
    (another app wrote first). Read again and use what is stored."""

    exit_code = ExitCode.CONFLICT


class ProtocolMismatch(KeyhavenError):
    """The daemon speaks another protocol version, or is too old to serve
    this call (UNIMPLEMENTED)."""

    exit_code = ExitCode.PROTOCOL_MISMATCH


class DataLoss(KeyhavenError):
    """The stored ciphertext of this credential does not open (damaged or
    tampered with); other credentials are unaffected."""


class ConfigurationError(KeyhavenError):
    """A setting in the environment is malformed, e.g.
    KEYHAVEN_ALLOW_DAEMON_UID that is not a number. `variable` names it."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


class UntrustedDaemon(KeyhavenError):
    """The socket, its directory or the process serving it belongs to
    another user. Nothing was sent: the check runs before the first byte.

    `path` is what was checked, `owner_uid` the uid found on it (its owner,
    or the uid the serving process runs as).
    """

    exit_code = ExitCode.UNTRUSTED_DAEMON

    def __init__(self, message: str, path: str, owner_uid: int) -> None:
        super().__init__(message)
        self.path = path
        self.owner_uid = owner_uid


_BY_CODE: dict[grpc.StatusCode, type[KeyhavenError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNIMPLEMENTED: ProtocolMismatch,
}


def error_for_status(
    code: grpc.StatusCode, details: str | None, what: str
) -> KeyhavenError:
    """The error for a call `what` ("store", "get", ...) that ended with
    `code`: "what: CODE: details"."""
    detail = details or "no details"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        detail = "the daemon does not serve this call; it is older than this client, update keyhavend"
    cls = _BY_CODE.get(code, KeyhavenError)
    return cls("%s: %s: %s" % (what, code.name, detail), code=code)


def error_for_rpc(error: grpc.RpcError, what: str) -> KeyhavenError:
    """`error_for_status` for a grpc.RpcError raised by a call."""
    # Every RpcError grpcio raises for a call is also a grpc.Call.
    return error_for_status(error.code(), error.details(), what)
