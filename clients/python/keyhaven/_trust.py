"""Which socket, and whether the daemon behind it is the user's own.

The rule (docs/protocol.md, "Verifying the daemon before sending a byte"):
nothing is sent until every check has passed.

1. The path: an explicit argument > $KEYHAVEN_SOCKET >
   $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock > ${TMPDIR:-/tmp}/keyhaven-$UID/
   keyhaven.sock, as proto/src/paths.rs decides it for the Rust client.
2. For a default path (the last two), its directory: not a symlink, owned by
   the user, not writable by group or others. Another local user can create
   ${TMPDIR:-/tmp}/keyhaven-$UID first; a token sent there is theirs. A path
   the user named is their choice, and this step is skipped.
3. The socket: a socket, owned by the user.
4. The process listening: connect, and before writing a byte ask the kernel
   its uid (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS and FreeBSD).
   grpcio cannot hand over the connection it makes, so this runs on a
   connection of its own, closed without writing; for a default path the
   directory checked in step 2 makes sure nobody swaps the socket before
   grpcio connects.

KEYHAVEN_ALLOW_DAEMON_UID=<uid> trusts one more uid in steps 2 to 4; it
never makes a symlinked or group/other-writable directory acceptable.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys

from keyhaven._errors import ConfigurationError, Unavailable, UntrustedDaemon

#: Names a socket to use instead of the default one.
ENV_SOCKET = "KEYHAVEN_SOCKET"
#: Names a uid whose daemon the user trusts besides their own.
ENV_ALLOW_DAEMON_UID = "KEYHAVEN_ALLOW_DAEMON_UID"
#: The socket file name inside the socket directory.
SOCKET_NAME = "keyhaven.sock"


def choose_socket(explicit: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """(path, named): the socket by the rule above, and whether the user
    named it (argument or KEYHAVEN_SOCKET) rather than it being a default
    one whose directory must be checked."""
    if explicit is not None and os.fspath(explicit):
        return os.fspath(explicit), True
    env = os.environ.get(ENV_SOCKET, "")
    if env:
        return env, True
    return default_socket(), False


def default_socket() -> str:
    """The socket when none is named: the XDG runtime directory's when
    XDG_RUNTIME_DIR is absolute, else ${TMPDIR:-/tmp}/keyhaven-$UID's."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, "keyhaven", SOCKET_NAME)
    tmp = os.environ.get("TMPDIR", "")
    if not os.path.isabs(tmp):
        tmp = "/tmp"
    return os.path.join(tmp, "keyhaven-%d" % os.getuid(), SOCKET_NAME)


def trusted_uids() -> set[int]:
    """The user's own uid, plus the one KEYHAVEN_ALLOW_DAEMON_UID names."""
    uids = {os.getuid()}
    value = os.environ.get(ENV_ALLOW_DAEMON_UID, "")
    if value:
        if not value.isdigit() or not value.isascii():
            raise ConfigurationError(
                "%s must be a numeric uid, not %r" % (ENV_ALLOW_DAEMON_UID, value),
                ENV_ALLOW_DAEMON_UID,
            )
        uids.add(int(value))
    return uids


def verify_daemon(path: str, named: bool, timeout: float) -> None:
    """Raises UntrustedDaemon unless the daemon behind `path` is the user's
    own (or runs as the uid KEYHAVEN_ALLOW_DAEMON_UID names), and
    Unavailable when nothing serves there. Sends nothing."""
    uids = trusted_uids()
    _check_files(path, named, uids)
    _check_peer(path, uids, timeout)


def _untrusted(path: str, owner: int, problem: str, overridable: bool) -> UntrustedDaemon:
    """The refusal: what was found at `path` (owned by or running as uid
    `owner`), that nothing was sent, and what the user can do."""
    if overridable:
        advice = "If you trust the daemon of uid %d, set %s=%d." % (
            owner,
            ENV_ALLOW_DAEMON_UID,
            owner,
        )
    else:
        advice = "Remove it and restart keyhavend (%s does not override this)." % (
            ENV_ALLOW_DAEMON_UID
        )
    return UntrustedDaemon(
        "UNTRUSTED_DAEMON: refusing to talk to keyhavend: %s to receive your tokens. "
        "Nothing was sent. %s" % (problem, advice),
        path,
        owner,
    )


def _not_yours(what: str, owner: int) -> str:
    return "%s is owned by uid %d, not by you (uid %d): another user may have created it" % (
        what,
        owner,
        os.getuid(),
    )


def _not_running(path: str, found: str | None = None) -> Unavailable:
    if found is None:
        detail = "no socket at %s" % path
    else:
        detail = "%s is %s, not a socket" % (path, found)
    return Unavailable("keyhavend is not running (%s)" % detail)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
    ):
        if test(mode):
            return name
    return "a special file"


def _check_files(path: str, named: bool, uids: set[int]) -> None:
    """Owner and mode of the socket and (default path only) its directory."""
    if not named:
        directory = os.path.dirname(path)
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            raise _not_running(path) from None
        if stat.S_ISLNK(st.st_mode):
            raise _untrusted(
                directory,
                st.st_uid,
                "the socket directory %s (owner uid %d) is a symlink, which keyhavend never "
                "creates: another user may have planted it" % (directory, st.st_uid),
                overridable=False,
            )
        if not stat.S_ISDIR(st.st_mode):
            raise _not_running(path, "inside %s" % _file_kind(st.st_mode))
        if st.st_uid not in uids:
            raise _untrusted(
                directory,
                st.st_uid,
                _not_yours("the socket directory %s" % directory, st.st_uid),
                overridable=True,
            )
        if st.st_mode & 0o022:
            raise _untrusted(
                directory,
                st.st_uid,
                "the socket directory %s (owner uid %d) is writable by group or others "
                "(mode %04o): another user could replace the socket"
                % (directory, st.st_uid, stat.S_IMODE(st.st_mode)),
                overridable=False,
            )
    try:
        # A path the user chose may be a symlink to the socket; the default
        # one lives in the directory checked above and is taken as it is.
        st = os.stat(path) if named else os.lstat(path)
    except FileNotFoundError:
        raise _not_running(path) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise _not_running(path, _file_kind(st.st_mode))
    if st.st_uid not in uids:
        raise _untrusted(
            path,
            st.st_uid,
            _not_yours("the socket %s" % path, st.st_uid),
            overridable=True,
        )


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process serving a connected AF_UNIX socket, or None
    where this platform offers Python no way to ask."""
    if sys.platform.startswith("linux"):
        # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        layout = "=iII"
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(layout))
        _pid, uid, _gid = struct.unpack(layout, raw)
        return int(uid)
    if sys.platform == "darwin" or sys.platform.startswith("freebsd"):
        # What getpeereid(3) reads there: LOCAL_PEERCRED (1) at level
        # SOL_LOCAL (0), a struct xucred { u_int cr_version; uid_t cr_uid;
        # ... } with cr_version 0. (Not exercised by this repository's
        # tests, which run on Linux.)
        raw = sock.getsockopt(0, 1, 76)
        version, uid = struct.unpack_from("II", raw)
        return int(uid) if version == 0 else None
    return None


def _check_peer(path: str, uids: set[int], timeout: float) -> None:
    """Connects without sending anything and checks who is listening."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise Unavailable(
                "cannot connect to keyhavend at %s: %s" % (path, e.strerror or e)
            ) from None
        uid = peer_uid(sock)
    finally:
        sock.close()
    if uid is not None and uid not in uids:
        raise _untrusted(
            path,
            uid,
            "the process serving %s runs as uid %d, not as you (uid %d): another user may be "
            "listening there" % (path, uid, os.getuid()),
            overridable=True,
        )
