"""keyhaven: the Python client for keyhavend, the per-user credential daemon.

Apps store a login once and other apps of the same user find and reuse it:

    import keyhaven

    with keyhaven.connect() as client:
        key = keyhaven.Key("jellyfin", server_id, user_id)
        client.store(key, token, attributes={"server_name": "Living room"})
        token = client.get(key).secret

`connect()` checks, before sending a byte, that the daemon behind the socket
is the user's own, then that it speaks protocol 1. Every error is a
`KeyhavenError` whose class says what happened.

Layout (each module imports only those above it):

- `_errors`: the exception classes and the one status-code mapping.
- `_types`: Key, Metadata, Credential, WatchEvent, ... and their wire
  conversions.
- `_trust`: which socket, and the checks of the daemon before connecting.
- `_client`: Client, connect() and Watch.
- `v1`: the code grpcio-tools generates from keyhaven.proto (committed;
  clients/python/generate.py redoes it).
"""

from keyhaven._client import (
    CALL_TIMEOUT,
    CONNECT_TIMEOUT,
    PROTOCOL,
    WATCH_START_TIMEOUT,
    Client,
    Watch,
    connect,
)
from keyhaven._errors import (
    ConfigurationError,
    Conflict,
    DataLoss,
    ExitCode,
    InvalidArgument,
    KeyhavenError,
    NotFound,
    PermissionDenied,
    ProtocolMismatch,
    ResourceExhausted,
    Unavailable,
    UntrustedDaemon,
)
from keyhaven._trust import ENV_ALLOW_DAEMON_UID, ENV_SOCKET, default_socket
from keyhaven._types import (
    Actor,
    Credential,
    DaemonStatus,
    EventKind,
    Key,
    Metadata,
    StoreResult,
    WatchEvent,
)

__version__ = "0.1.0"

#: Attribute names every app reads the same way (docs/integrating.md):
#: where the server is, its name and the user's name for people, the device
#: id the token was issued to (Jellyfin ties a session to it: reuse it with
#: the token), and the app that logged in.
WELL_KNOWN_ATTRIBUTES = ("server_url", "server_name", "user_name", "device_id", "client_name")

__all__ = [
    "CALL_TIMEOUT",
    "CONNECT_TIMEOUT",
    "ENV_ALLOW_DAEMON_UID",
    "ENV_SOCKET",
    "PROTOCOL",
    "WATCH_START_TIMEOUT",
    "WELL_KNOWN_ATTRIBUTES",
    "Actor",
    "Client",
    "ConfigurationError",
    "Conflict",
    "Credential",
    "DaemonStatus",
    "DataLoss",
    "EventKind",
    "ExitCode",
    "InvalidArgument",
    "Key",
    "KeyhavenError",
    "Metadata",
    "NotFound",
    "PermissionDenied",
    "ProtocolMismatch",
    "ResourceExhausted",
    "StoreResult",
    "Unavailable",
    "UntrustedDaemon",
    "Watch",
    "WatchEvent",
    "connect",
    "default_socket",
]
