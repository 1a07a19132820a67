"""The values apps handle, and their conversions to and from the wire types.

The rule: nothing outside this module touches a field of a generated message
by name except the request builders in _client.py. A secret lives only in
`Credential.secret`, which never shows in a repr.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from google.protobuf import timestamp_pb2

from keyhaven._errors import InvalidArgument

if TYPE_CHECKING:
    from keyhaven.v1 import keyhaven_pb2 as pb

#: The token type of a key that names none.
DEFAULT_TOKEN_TYPE = "access_token"


def _escape(field_text: str) -> str:
    return field_text.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True)
class Key:
    """The address of one credential. Apps that agree on these four fields
    share a login.

    `provider` and `token_type` are 1 to 64 ASCII letters, digits, '.', '_'
    or '-'; `server_id` and `user_id` at most 256 bytes of UTF-8 without
    control characters, and may be empty (`server_id` is empty for
    account-wide tokens). The daemon checks the rules.
    """

    provider: str
    server_id: str
    user_id: str
    token_type: str = DEFAULT_TOKEN_TYPE

    def __str__(self) -> str:
        """The text form `provider::server_id::user_id::token_type`, with
        '%' and ':' inside a field written %25 and %3A."""
        return "::".join(
            _escape(f) for f in (self.provider, self.server_id, self.user_id, self.token_type)
        )

    def to_wire(self) -> pb.CredentialKey:
        from keyhaven.v1 import keyhaven_pb2

        return keyhaven_pb2.CredentialKey(
            provider=self.provider,
            server_id=self.server_id,
            user_id=self.user_id,
            token_type=self.token_type,
        )

    @classmethod
    def from_wire(cls, key: pb.CredentialKey) -> Key:
        return cls(key.provider, key.server_id, key.user_id, key.token_type or DEFAULT_TOKEN_TYPE)


@dataclass(frozen=True)
class Metadata:
    """Everything about a stored credential except its secret.

    `revision` is positive and changes on every write (compare-and-swap
    uses it). Times are timezone-aware UTC datetimes; `expires_at` is None
    when the credential never expires. `attributes` are the non-secret
    names and values that say what the credential is for (see
    WELL_KNOWN_ATTRIBUTES).
    """

    key: Key
    revision: int
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    expires_at: datetime.datetime | None = None
    label: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, m: pb.CredentialMetadata) -> Metadata:
        return cls(
            key=Key.from_wire(m.key),
            revision=m.revision,
            created_at=_time(m, "created_at"),
            updated_at=_time(m, "updated_at"),
            expires_at=_time(m, "expires_at"),
            label=m.label if m.HasField("label") else None,
            attributes=dict(sorted(m.attributes.items())),
        )


@dataclass(frozen=True, repr=False)
class Credential:
    """A credential read with `Client.get`: its metadata and its secret.

    The secret never appears in repr() or str(); use `secret` itself, and
    drop it when done.
    """

    metadata: Metadata
    secret: bytes

    def __repr__(self) -> str:
        return "Credential(metadata=%r, secret=[REDACTED])" % (self.metadata,)

    __str__ = __repr__


@dataclass(frozen=True)
class StoreResult:
    """What `Client.store` wrote: the new metadata, and whether the key was
    new (`created`) rather than replaced."""

    metadata: Metadata
    created: bool


@dataclass(frozen=True)
class Actor:
    """The program that made a change, as the daemon saw it when it
    connected. `executable` identifies, it does not authenticate
    (docs/protocol.md); `app_id` is the Flatpak or Snap id, empty outside a
    sandbox."""

    uid: int
    pid: int
    executable: str
    app_id: str


class EventKind(enum.Enum):
    """What a `WatchEvent` reports."""

    #: A kind this client does not know (sent by a newer daemon).
    UNSPECIFIED = 0
    #: A credential was created.
    STORED = 1
    #: A credential's secret or metadata was replaced.
    UPDATED = 2
    #: A credential was deleted (delete or logout).
    DELETED = 3
    #: A credential passed its expiry and the daemon removed it.
    EXPIRED = 4
    #: Part of the initial state (`snapshot=True`).
    SNAPSHOT = 5
    #: The snapshot is complete; live events follow.
    SYNCED = 6
    #: This watcher fell behind and missed `missed` events: re-sync.
    LAGGED = 7


@dataclass(frozen=True)
class WatchEvent:
    """One change. Never carries a secret: `Client.get` the credential to
    read the new one.

    `metadata` is None for SYNCED and LAGGED; for DELETED and EXPIRED it is
    the last metadata with `revision` set to the removal's. `actor` is None
    for EXPIRED, SNAPSHOT, SYNCED and LAGGED.
    """

    kind: EventKind
    metadata: Metadata | None
    time: datetime.datetime | None
    actor: Actor | None
    missed: int = 0

    @classmethod
    def from_wire(cls, e: pb.WatchEvent) -> WatchEvent:
        try:
            kind = EventKind(e.kind)
        except ValueError:
            kind = EventKind.UNSPECIFIED
        actor = None
        if e.HasField("actor"):
            a = e.actor
            actor = Actor(uid=a.uid, pid=a.pid, executable=a.executable, app_id=a.app_id)
        return cls(
            kind=kind,
            metadata=Metadata.from_wire(e.metadata) if e.HasField("metadata") else None,
            time=_time(e, "time"),
            actor=actor,
            missed=e.missed,
        )


@dataclass(frozen=True)
class DaemonStatus:
    """What `Client.status` reports about the daemon (StatusResponse).

    `key_problem` is empty when the store is open; otherwise it says which
    key is missing, and every credential call fails with `Unavailable`.
    """

    version: str
    protocol: int
    pid: int
    store_path: str
    key_tier: str
    key_source: str
    credential_count: int
    uptime_seconds: int
    key_problem: str

    @classmethod
    def from_wire(cls, s: pb.StatusResponse) -> DaemonStatus:
        return cls(
            version=s.version,
            protocol=s.protocol,
            pid=s.pid,
            store_path=s.store_path,
            key_tier=s.key_tier,
            key_source=s.key_source,
            credential_count=s.credential_count,
            uptime_seconds=s.uptime_seconds,
            key_problem=s.key_problem,
        )


def _time(message: object, name: str) -> datetime.datetime | None:
    """A Timestamp field as an aware UTC datetime, or None when absent."""
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    when: datetime.datetime = ts.ToDatetime(tzinfo=datetime.timezone.utc)
    return when


def timestamp(when: datetime.datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp; a naive one is refused, since it
    does not say which time it is."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidArgument(
            "expires_at must be a timezone-aware datetime, e.g. with tzinfo=timezone.utc"
        )
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when.astimezone(datetime.timezone.utc))
    return ts
