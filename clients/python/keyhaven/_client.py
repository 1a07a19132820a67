"""The client: connect (verify, then handshake), then one method per RPC.

Connecting follows docs/protocol.md: decide the socket, check that the
daemon is the user's own before sending a byte (_trust.py), open a gRPC
channel, and call Daemon.Status to check the protocol number. Every call
has a deadline: `connect_timeout` for the checks and the handshake,
`timeout` for each unary call, `watch_start_timeout` for the daemon to
accept a Watch. Each method takes `timeout=` (or `start_timeout=`) to
override it once.
"""

from __future__ import annotations

import builtins
import datetime
import os
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Callable, TypeVar

import grpc

from keyhaven._errors import (
    ProtocolMismatch,
    Unavailable,
    error_for_rpc,
)
from keyhaven._trust import choose_socket, verify_daemon
from keyhaven._types import (
    Credential,
    DaemonStatus,
    Key,
    Metadata,
    StoreResult,
    WatchEvent,
    timestamp,
)
from keyhaven.v1 import keyhaven_pb2 as pb
from keyhaven.v1 import keyhaven_pb2_grpc as rpc

#: The wire protocol this client speaks (StatusResponse.protocol).
PROTOCOL = 1
#: Seconds for the pre-flight checks and the Status handshake.
CONNECT_TIMEOUT = 5.0
#: Seconds for each unary call.
CALL_TIMEOUT = 30.0
#: Seconds for the daemon to accept a Watch (send its response headers,
#: which it does once the watcher is registered).
WATCH_START_TIMEOUT = 30.0

# A List page is at most 1000 credentials of at most 32 attributes of 1 KiB
# each: more than grpcio's default 4 MiB.
_MAX_RECEIVE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    # A local socket: never through an HTTP proxy from the environment.
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES),
]

_Reply = TypeVar("_Reply")


class Client:
    """A connection to the user's keyhavend.

    Creating one connects: it picks the socket (`socket`, else
    $KEYHAVEN_SOCKET, else $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock, else
    ${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock), refuses a daemon that is
    not the user's (`UntrustedDaemon`) before sending anything, and checks
    the daemon's protocol number (`ProtocolMismatch`). Share one client per
    process; it is safe to use from several threads. Close it, or use it as
    a context manager.

    Raises `Unavailable` when no daemon answers within `connect_timeout`.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float = CALL_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        watch_start_timeout: float = WATCH_START_TIMEOUT,
    ) -> None:
        path, named = choose_socket(socket)
        #: The socket this client talks to, as an absolute path.
        self.socket_path: str = os.path.abspath(path)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.watch_start_timeout = watch_start_timeout
        verify_daemon(self.socket_path, named, connect_timeout)
        self._channel = grpc.insecure_channel("unix://" + self.socket_path, options=_CHANNEL_OPTIONS)
        # The generated stubs carry no annotations.
        self._credentials: Any = rpc.CredentialsStub(self._channel)  # type: ignore[no-untyped-call]
        self._daemon: Any = rpc.DaemonStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            #: The daemon's Status as of the handshake.
            self.daemon_status: DaemonStatus = self._handshake()
        except BaseException:
            self._channel.close()
            raise

    def _handshake(self) -> DaemonStatus:
        try:
            reply = self._daemon.Status(pb.StatusRequest(), timeout=self.connect_timeout)
        except grpc.RpcError as e:
            raise Unavailable(
                "cannot talk to keyhavend at %s: %s: %s"
                % (self.socket_path, e.code().name, e.details()),
                code=e.code(),
            ) from e
        status = DaemonStatus.from_wire(reply)
        if status.protocol != PROTOCOL:
            raise ProtocolMismatch(
                "keyhavend %s at %s speaks protocol %d, but this client speaks protocol %d; "
                "restart the daemon after an upgrade, or update the client"
                % (status.version, self.socket_path, status.protocol, PROTOCOL)
            )
        return status

    @property
    def channel(self) -> grpc.Channel:
        """The verified gRPC channel, for calls this class does not wrap
        (the stubs are in keyhaven.v1.keyhaven_pb2_grpc)."""
        return self._channel

    def close(self) -> None:
        """Closes the channel; open watches end."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Client(socket=%r)" % self.socket_path

    def _unary(
        self,
        method: Callable[..., _Reply],
        request: Any,
        timeout: float | None,
        what: str,
    ) -> _Reply:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise error_for_rpc(e, what) from e

    def status(self, *, timeout: float | None = None) -> DaemonStatus:
        """The daemon's version, pid, store path, key tier and whether the
        store is open (`key_problem` empty)."""
        reply = self._unary(self._daemon.Status, pb.StatusRequest(), timeout, "status")
        return DaemonStatus.from_wire(reply)

    def store(
        self,
        key: Key,
        secret: bytes,
        *,
        label: str | None = None,
        expires_at: datetime.datetime | None = None,
        expected_revision: int | None = None,
        attributes: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> StoreResult:
        """Creates or replaces the credential under `key`.

        A store replaces the label and the expiry: None clears them, so pass
        them again to keep them. `attributes`: None keeps the stored ones (a
        new credential has none), an empty mapping removes them all, a
        non-empty one replaces them. `expected_revision` makes the write a
        compare-and-swap: 0 only creates, N > 0 only replaces revision N;
        otherwise `Conflict` and nothing changes. `expires_at` must be
        timezone-aware.

        Raises `InvalidArgument` when a field, an attribute or the secret
        breaks its rules (the daemon checks them), `Conflict`,
        `PermissionDenied`, `Unavailable`.
        """
        if not isinstance(secret, (bytes, bytearray, memoryview)):
            raise TypeError(
                "secret must be bytes (encode a str first), not %s" % type(secret).__name__
            )
        request = pb.StoreRequest(key=key.to_wire(), secret=bytes(secret))
        if label is not None:
            request.label = label
        if expires_at is not None:
            request.expires_at.CopyFrom(timestamp(expires_at))
        if expected_revision is not None:
            request.expected_revision = expected_revision
        if attributes is not None:
            if attributes:
                request.attributes.update(attributes)
            else:
                request.clear_attributes = True
        reply = self._unary(self._credentials.Store, request, timeout, "store")
        return StoreResult(Metadata.from_wire(reply.metadata), reply.created)

    def get(self, key: Key, *, timeout: float | None = None) -> Credential:
        """The credential under `key`, with its secret. Raises `NotFound`
        when there is none or it has expired."""
        request = pb.RetrieveRequest(key=key.to_wire())
        reply = self._unary(self._credentials.Retrieve, request, timeout, "get")
        return Credential(Metadata.from_wire(reply.metadata), reply.secret)

    def delete(
        self,
        key: Key,
        *,
        expected_revision: int | None = None,
        timeout: float | None = None,
    ) -> Metadata:
        """Removes the credential under `key`; returns its last metadata.
        With `expected_revision`, only if that revision is still stored
        (else `Conflict`). Raises `NotFound` when there is none."""
        request = pb.DeleteRequest(key=key.to_wire())
        if expected_revision is not None:
            request.expected_revision = expected_revision
        reply = self._unary(self._credentials.Delete, request, timeout, "delete")
        return Metadata.from_wire(reply.metadata)

    def list(
        self,
        provider: str | None = None,
        server_id: str | None = None,
        user_id: str | None = None,
        *,
        attributes: Mapping[str, str] | None = None,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> builtins.list[Metadata]:
        """The metadata (never secrets) of every matching credential, in
        key order, following the daemon's pages to the end.

        None matches anything; for `server_id` and `user_id`, "" matches
        only credentials whose id is empty. `attributes` matches credentials
        carrying every one of these names with exactly this value.
        `page_size` (at most 1000; the daemon's default is 100) and
        `timeout` apply to each page.
        """
        request = pb.ListRequest(**_filters(provider, server_id, user_id, attributes))
        if page_size is not None:
            request.page_size = page_size
        found: builtins.list[Metadata] = []
        while True:
            reply = self._unary(self._credentials.List, request, timeout, "list")
            found.extend(Metadata.from_wire(m) for m in reply.credentials)
            if not reply.next_page_token:
                return found
            request.page_token = reply.next_page_token

    def watch(
        self,
        provider: str | None = None,
        server_id: str | None = None,
        user_id: str | None = None,
        *,
        attributes: Mapping[str, str] | None = None,
        snapshot: bool = False,
        start_timeout: float | None = None,
    ) -> Watch:
        """Changes to matching credentials as they happen (filters as in
        `list`), as an iterator of `WatchEvent`s.

        Returns once the daemon has registered the watcher, so no change
        made after this returns is missed. With `snapshot=True` the events
        begin with one SNAPSHOT per matching credential and a SYNCED, and
        nothing falls between them and the live events. On LAGGED, watch
        again with `snapshot=True`. The stream has no deadline; the daemon
        must accept it within `start_timeout` (else `Unavailable`). End it
        with `Watch.cancel()` or a `with` block.
        """
        request = pb.WatchRequest(
            snapshot=snapshot, **_filters(provider, server_id, user_id, attributes)
        )
        call = self._credentials.Watch(request)
        return Watch(call, self.watch_start_timeout if start_timeout is None else start_timeout)

    def logout(
        self,
        provider: str,
        server_id: str,
        user_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> builtins.list[Metadata]:
        """Deletes every credential of `provider` on `server_id` ("" for
        account-wide ones), only `user_id`'s when given, in one transaction.
        Returns what was deleted; deleting nothing is not an error."""
        request = pb.LogoutRequest(provider=provider, server_id=server_id)
        if user_id is not None:
            request.user_id = user_id
        reply = self._unary(self._credentials.Logout, request, timeout, "logout")
        return [Metadata.from_wire(m) for m in reply.deleted]


def connect(
    socket: str | os.PathLike[str] | None = None,
    *,
    timeout: float = CALL_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    watch_start_timeout: float = WATCH_START_TIMEOUT,
) -> Client:
    """Connects to the user's keyhavend: `Client(...)`, read aloud."""
    return Client(
        socket,
        timeout=timeout,
        connect_timeout=connect_timeout,
        watch_start_timeout=watch_start_timeout,
    )


def _filters(
    provider: str | None,
    server_id: str | None,
    user_id: str | None,
    attributes: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The filter fields shared by ListRequest and WatchRequest: None
    matches anything, "" an empty id."""
    fields: dict[str, Any] = {}
    if provider:
        fields["provider"] = provider
    if server_id is not None:
        fields["server_id"] = server_id
        fields["match_empty_server_id"] = server_id == ""
    if user_id is not None:
        fields["user_id"] = user_id
        fields["match_empty_user_id"] = user_id == ""
    if attributes:
        fields["attributes"] = dict(attributes)
    return fields


class Watch(Iterator[WatchEvent]):
    """An open Watch: iterate for events; `cancel()` (or leaving a `with`
    block) ends it, after which iteration stops quietly. Errors from the
    daemon (e.g. `Unavailable` when it shuts down) are raised from the
    iteration."""

    def __init__(self, call: Any, start_timeout: float) -> None:
        self._call = call
        self._cancelled = False
        _await_headers(call, start_timeout)
        if call.done() and call.code() != grpc.StatusCode.OK:
            # Refused at once (a bad filter, an old daemon): say so now.
            raise error_for_rpc(call, "watch")

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        try:
            event = next(self._call)
        except grpc.RpcError as e:
            if self._cancelled:
                raise StopIteration from None
            raise error_for_rpc(e, "watch") from e
        return WatchEvent.from_wire(event)

    def cancel(self) -> None:
        """Ends the watch; safe to call from another thread."""
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def _await_headers(call: Any, timeout: float) -> None:
    """Waits for the response headers of a streaming call (or its end),
    cancelling it and raising Unavailable after `timeout` seconds. The whole
    stream cannot have a deadline: a watch lasts as long as the app wants."""
    lock = threading.Lock()
    state = {"started": False, "expired": False}

    def expire() -> None:
        with lock:
            if state["started"]:
                return
            state["expired"] = True
        call.cancel()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        call.initial_metadata()
    finally:
        with lock:
            state["started"] = True
            expired = state["expired"]
        timer.cancel()
    if expired:
        raise Unavailable(
            "watch: DEADLINE_EXCEEDED: the daemon did not accept the watch within %g s" % timeout,
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
        )
