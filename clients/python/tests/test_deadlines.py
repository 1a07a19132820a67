"""Deadlines and the handshake, against servers that misbehave: one that
never answers at all, and a gRPC server of our own that answers Status but
then hangs, or speaks another protocol, or lacks a service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import keyhaven
from keyhaven import ExitCode, Key
from keyhaven.v1 import keyhaven_pb2 as pb
from keyhaven.v1 import keyhaven_pb2_grpc as rpc

#: The short deadline these tests set, and how far past it a call may end.
SHORT = 0.5
SLACK = 3.0


def test_a_server_that_never_answers_times_out(tree: Path, listener_at) -> None:
    silent = listener_at(tree / "silent.sock")
    started = time.monotonic()
    with pytest.raises(keyhaven.Unavailable) as e:
        keyhaven.connect(silent.path, connect_timeout=SHORT)
    assert time.monotonic() - started < SHORT + SLACK
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert e.value.exit_code == ExitCode.UNAVAILABLE
    assert "cannot talk to keyhavend at %s" % silent.path in str(e.value)


class FakeDaemon(rpc.DaemonServicer):
    def __init__(self, protocol: int) -> None:
        self.protocol = protocol

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        return pb.StatusResponse(version="9.9.9", protocol=self.protocol, pid=1)


class HangingCredentials(rpc.CredentialsServicer):
    """Answers nothing until `release` is set (at the end of the test)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def Retrieve(self, request: pb.RetrieveRequest, context: grpc.ServicerContext) -> pb.RetrieveResponse:
        self.release.wait(60)
        return pb.RetrieveResponse()

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchEvent]:
        # Not even the response headers: they go out with the first event.
        self.release.wait(60)
        return iter(())


@pytest.fixture
def fake(tree: Path) -> Iterator:
    """Starts a gRPC server on a socket of ours with the given servicers."""
    servers: list[grpc.Server] = []
    releases: list[threading.Event] = []

    def start(daemon: rpc.DaemonServicer, credentials: HangingCredentials | None = None) -> Path:
        path = tree / ("fake-%d.sock" % len(servers))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        rpc.add_DaemonServicer_to_server(daemon, server)
        if credentials is not None:
            rpc.add_CredentialsServicer_to_server(credentials, server)
            releases.append(credentials.release)
        server.add_insecure_port("unix:%s" % path)
        server.start()
        servers.append(server)
        return path

    yield start
    for release in releases:
        release.set()
    for server in servers:
        server.stop(None)


def test_each_call_has_a_deadline(fake) -> None:
    path = fake(FakeDaemon(1), HangingCredentials())
    key = Key("jellyfin", "s", "u")
    with keyhaven.connect(path, timeout=SHORT) as client:
        assert client.daemon_status.version == "9.9.9"
        started = time.monotonic()
        with pytest.raises(keyhaven.Unavailable) as e:
            client.get(key)
        assert time.monotonic() - started < SHORT + SLACK
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert str(e.value).startswith("get: DEADLINE_EXCEEDED: ")

    # Per call, over the client's default.
    with keyhaven.connect(path) as client:
        started = time.monotonic()
        with pytest.raises(keyhaven.Unavailable):
            client.get(key, timeout=SHORT)
        assert time.monotonic() - started < SHORT + SLACK


def test_a_watch_must_be_accepted_in_time(fake) -> None:
    path = fake(FakeDaemon(1), HangingCredentials())
    with keyhaven.connect(path, watch_start_timeout=SHORT) as client:
        started = time.monotonic()
        with pytest.raises(keyhaven.Unavailable, match="did not accept the watch"):
            client.watch()
        assert time.monotonic() - started < SHORT + SLACK
        with pytest.raises(keyhaven.Unavailable):
            client.watch(snapshot=True, start_timeout=0.2)


def test_another_protocol_is_refused(fake) -> None:
    path = fake(FakeDaemon(2))
    with pytest.raises(keyhaven.ProtocolMismatch) as e:
        keyhaven.connect(path)
    assert e.value.exit_code == ExitCode.PROTOCOL_MISMATCH == 8
    assert "speaks protocol 2" in str(e.value)


def test_a_daemon_without_a_call_is_too_old(fake) -> None:
    path = fake(FakeDaemon(1))  # no Credentials service at all
    with keyhaven.connect(path) as client:
        with pytest.raises(keyhaven.ProtocolMismatch, match="older than this client"):
            client.get(Key("jellyfin", "s", "u"))
        with pytest.raises(keyhaven.ProtocolMismatch):
            client.watch()
