"""Fixtures: a real keyhavend in a private tree, and sockets that misbehave.

The daemon binary is $KEYHAVEND (CI: target/debug/keyhavend). Each test
that asks for `daemon` gets its own: a fresh temporary HOME, data directory,
key file and socket, no session bus (so no keyring), and nothing of the
caller's KEYHAVEN_* settings. It is ready when it logs "keyhavend is
serving", and is stopped with SIGTERM after the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyhaven

#: How long keyhavend may take to start or stop.
DAEMON_TIMEOUT = 30.0
#: Another local user, for the trust tests (needs root).
OTHER_UID = 12345


def pytest_configure(config: pytest.Config) -> None:
    binary = os.environ.get("KEYHAVEND", "")
    if not binary:
        raise pytest.UsageError(
            "KEYHAVEND is not set: these tests run against a real keyhavend. Build it "
            "(cargo build -p keyhaven-daemon) and run e.g. "
            "KEYHAVEND=target/debug/keyhavend python -m pytest clients/python/tests"
        )
    if not os.access(binary, os.X_OK):
        raise pytest.UsageError("KEYHAVEND=%s is not an executable file" % binary)


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of the caller's keyhaven settings reaches the client under
    test; tests that need one set it."""
    for var in ("KEYHAVEN_SOCKET", "KEYHAVEN_ALLOW_DAEMON_UID", "XDG_RUNTIME_DIR", "TMPDIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tree() -> Iterator[Path]:
    """A private (0700) directory, short enough for socket paths (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="kh-py-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Daemon:
    """A keyhavend process serving `socket`, which is the default socket
    when XDG_RUNTIME_DIR is `runtime_dir`."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.runtime_dir = root / "run"
        self.socket = self.runtime_dir / "keyhaven" / "keyhaven.sock"
        for d in (self.home, self.runtime_dir):
            d.mkdir(mode=0o700)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
        }
        self._lines: list[str] = []
        self.process = subprocess.Popen(
            [
                os.environ["KEYHAVEND"],
                "--socket",
                str(self.socket),
                "--data-dir",
                str(root / "data"),
                "--key-file",
                str(root / "keyhaven.key"),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Set when the daemon says it serves, or when its stderr closes.
        decided = threading.Event()
        self._serving = False

        def read_log() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self._lines.append(line)
                if "keyhavend is serving" in line:
                    self._serving = True
                    decided.set()
            decided.set()

        self._reader = threading.Thread(target=read_log, daemon=True)
        self._reader.start()
        decided.wait(DAEMON_TIMEOUT)
        if not self._serving:
            self.stop()
            pytest.fail(
                "keyhavend did not start within %g s (exit status %s):\n%s"
                % (DAEMON_TIMEOUT, self.process.returncode, self.log())
            )

    def log(self) -> str:
        return "".join(self._lines)

    def client(self, **options: float) -> keyhaven.Client:
        """A client of this daemon, by its socket path."""
        return keyhaven.Client(self.socket, **options)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(DAEMON_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(DAEMON_TIMEOUT)


@pytest.fixture
def daemon(tree: Path) -> Iterator[Daemon]:
    """A running keyhavend of its own for this test."""
    d = Daemon(tree)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[keyhaven.Client]:
    with daemon.client() as c:
        yield c


class Listener:
    """A Unix socket somebody planted: it listens but never accepts, so a
    connection waits in its backlog. `connections()` says how many were
    made (and closes them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)

    def connections(self) -> int:
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener_at() -> Iterator[type[Listener]]:
    """Makes Listeners and closes them after the test."""
    made: list[Listener] = []

    class Tracked(Listener):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            made.append(self)

    yield Tracked
    for listener in made:
        listener.close()


@pytest.fixture
def other_uid() -> int:
    """The uid of another local user to plant sockets as; skips the test,
    saying why on stdout too, unless running as root."""
    if os.geteuid() != 0:
        reason = "needs root to make a socket owned by, or served by, another uid (%d)" % OTHER_UID
        print("SKIPPED: %s" % reason)
        pytest.skip(reason)
    return OTHER_UID
