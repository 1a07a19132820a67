"""Which socket the client picks, and its refusal of a daemon that is not
the user's, before a single byte is sent (docs/protocol.md)."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyhaven
from keyhaven import ExitCode


def test_socket_precedence(monkeypatch: pytest.MonkeyPatch, tree: Path) -> None:
    uid = os.getuid()
    assert keyhaven.default_socket() == "/tmp/keyhaven-%d/keyhaven.sock" % uid
    monkeypatch.setenv("TMPDIR", "relative/tmp")
    assert keyhaven.default_socket() == "/tmp/keyhaven-%d/keyhaven.sock" % uid
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    assert keyhaven.default_socket() == "/var/tmp/keyhaven-%d/keyhaven.sock" % uid
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/run")
    assert keyhaven.default_socket() == "/var/tmp/keyhaven-%d/keyhaven.sock" % uid
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert keyhaven.default_socket() == "/run/user/1000/keyhaven/keyhaven.sock"

    # KEYHAVEN_SOCKET beats the default, the argument beats both; neither
    # exists here, so the client says the daemon is not running there.
    monkeypatch.setenv("KEYHAVEN_SOCKET", str(tree / "env.sock"))
    with pytest.raises(keyhaven.Unavailable, match="env.sock"):
        keyhaven.connect()
    with pytest.raises(keyhaven.Unavailable, match="arg.sock") as e:
        keyhaven.connect(tree / "arg.sock")
    assert "keyhavend is not running" in str(e.value)
    assert e.value.exit_code == ExitCode.UNAVAILABLE


def test_connects_to_the_default_socket(monkeypatch: pytest.MonkeyPatch, daemon) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(daemon.runtime_dir))
    with keyhaven.connect() as client:
        assert client.socket_path == str(daemon.socket)
        client.store(keyhaven.Key("jellyfin", "s", "u"), b"t")
    monkeypatch.setenv("KEYHAVEN_SOCKET", str(daemon.socket))
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    with keyhaven.connect() as client:
        assert client.get(keyhaven.Key("jellyfin", "s", "u")).secret == b"t"


def assert_untrusted(error: keyhaven.UntrustedDaemon, path: Path, uid: int) -> None:
    assert error.path == str(path)
    assert error.owner_uid == uid
    assert error.exit_code == ExitCode.UNTRUSTED_DAEMON == 9
    text = str(error)
    assert "UNTRUSTED_DAEMON" in text and "Nothing was sent" in text
    assert str(path) in text and "uid %d" % uid in text
    assert "KEYHAVEN_ALLOW_DAEMON_UID" in text


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o703])
def test_refuses_a_socket_directory_others_can_write(
    monkeypatch: pytest.MonkeyPatch, tree: Path, listener_at, mode: int
) -> None:
    directory = tree / "keyhaven"
    directory.mkdir()
    planted = listener_at(directory / "keyhaven.sock")
    directory.chmod(mode)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tree))
    with pytest.raises(keyhaven.UntrustedDaemon) as e:
        keyhaven.connect()
    assert_untrusted(e.value, directory, os.getuid())
    assert "mode %04o" % mode in str(e.value)
    assert planted.connections() == 0, "refused before connecting"

    # Trusting a uid does not make such a directory acceptable.
    monkeypatch.setenv("KEYHAVEN_ALLOW_DAEMON_UID", str(os.getuid()))
    with pytest.raises(keyhaven.UntrustedDaemon):
        keyhaven.connect()
    assert planted.connections() == 0


def test_refuses_a_symlinked_socket_directory(
    monkeypatch: pytest.MonkeyPatch, tree: Path, listener_at
) -> None:
    target = tree / "elsewhere"
    target.mkdir(mode=0o700)
    planted = listener_at(target / "keyhaven.sock")
    monkeypatch.setenv("TMPDIR", str(tree))
    link = tree / ("keyhaven-%d" % os.getuid())
    link.symlink_to(target)
    with pytest.raises(keyhaven.UntrustedDaemon, match="symlink") as e:
        keyhaven.connect()
    assert e.value.path == str(link)
    assert planted.connections() == 0


def test_refuses_a_socket_owned_by_another_user(
    monkeypatch: pytest.MonkeyPatch, tree: Path, listener_at, other_uid: int
) -> None:
    directory = tree / ("keyhaven-%d" % os.getuid())
    directory.mkdir(mode=0o700)
    planted = listener_at(directory / "keyhaven.sock")
    os.chown(planted.path, other_uid, other_uid)
    monkeypatch.setenv("TMPDIR", str(tree))
    with pytest.raises(keyhaven.UntrustedDaemon) as e:
        keyhaven.connect(connect_timeout=1)
    assert_untrusted(e.value, planted.path, other_uid)
    assert "KEYHAVEN_ALLOW_DAEMON_UID=%d" % other_uid in str(e.value)
    assert planted.connections() == 0

    # A named socket is checked the same way.
    with pytest.raises(keyhaven.UntrustedDaemon):
        keyhaven.connect(planted.path, connect_timeout=1)
    assert planted.connections() == 0

    # The directory too, when another user made it.
    os.chown(directory, other_uid, other_uid)
    with pytest.raises(keyhaven.UntrustedDaemon) as e:
        keyhaven.connect(connect_timeout=1)
    assert_untrusted(e.value, directory, other_uid)
    assert planted.connections() == 0

    # Trusted on purpose: the checks pass and the client connects; this
    # listener never answers, so the handshake runs out of time.
    monkeypatch.setenv("KEYHAVEN_ALLOW_DAEMON_UID", str(other_uid))
    with pytest.raises(keyhaven.Unavailable):
        keyhaven.connect(connect_timeout=0.5)
    assert planted.connections() >= 1

    # A value that is not a uid is an error of its own, not ignored.
    monkeypatch.setenv("KEYHAVEN_ALLOW_DAEMON_UID", "nobody")
    with pytest.raises(keyhaven.ConfigurationError) as c:
        keyhaven.connect(connect_timeout=1)
    assert c.value.variable == "KEYHAVEN_ALLOW_DAEMON_UID"
    assert c.value.exit_code == ExitCode.USAGE
    assert planted.connections() == 0


@pytest.fixture
def served_as(tree: Path) -> Iterator:
    """Starts a listener whose process runs as another uid: the socket is
    bound here (so the file is ours), then a forked child switches uid and
    calls listen(), which is what SO_PEERCRED reports."""
    children: list[tuple[int, int]] = []

    def start(uid: int) -> Path:
        path = tree / "served.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        ready_r, ready_w = os.pipe()
        stop_r, stop_w = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() with threads; the child runs
            # only the system calls below.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                # Only the parent holds the write end: its close is the stop.
                os.close(stop_w)
                os.close(ready_r)
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                sock.listen(8)
                os.write(ready_w, b"r")
                os.read(stop_r, 1)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(stop_r)
        sock.close()
        ready = os.read(ready_r, 1)
        os.close(ready_r)
        children.append((pid, stop_w))
        assert ready == b"r", "the child could not listen as uid %d" % uid
        return path

    yield start
    for pid, stop_w in children:
        os.close(stop_w)
        os.waitpid(pid, 0)


def test_refuses_a_server_running_as_another_user(
    monkeypatch: pytest.MonkeyPatch, served_as, other_uid: int
) -> None:
    path = served_as(other_uid)
    assert os.stat(path).st_uid == os.getuid(), "the file checks pass"
    with pytest.raises(keyhaven.UntrustedDaemon) as e:
        keyhaven.connect(path, connect_timeout=1)
    assert_untrusted(e.value, path, other_uid)
    assert "runs as uid %d" % other_uid in str(e.value)

    monkeypatch.setenv("KEYHAVEN_ALLOW_DAEMON_UID", str(other_uid))
    with pytest.raises(keyhaven.Unavailable):
        keyhaven.connect(path, connect_timeout=0.5)


def test_a_file_that_is_not_a_socket_is_not_a_daemon(tree: Path) -> None:
    path = tree / "plain"
    path.write_text("")
    with pytest.raises(keyhaven.Unavailable, match="a regular file, not a socket"):
        keyhaven.connect(path)
