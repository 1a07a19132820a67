#!/usr/bin/env python3
"""A keyhaven client in Python: store, get and watch credentials.

It talks to keyhavend over its Unix socket with grpcio. The Python code for
the keyhaven.v1 contract is generated at start-up from the repository's
proto/keyhaven/v1/keyhaven.proto into a temporary directory, so there is
nothing to regenerate when the contract grows.

    pip install grpcio grpcio-tools

    printf 'tok-123' | python3 keyhaven_client.py store jellyfin srv-1 user-1
    python3 keyhaven_client.py get jellyfin srv-1 user-1
    python3 keyhaven_client.py watch --snapshot --count 10

The socket is --socket, else $KEYHAVEN_SOCKET, else
$XDG_RUNTIME_DIR/keyhaven/keyhaven.sock, else
${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock: the same rule as the Rust client.

Before sending a byte the client checks that the daemon is the user's own
(see verify_daemon): the default socket's directory must be owned by the user,
not be a symlink and not be writable by group or others; the socket must be
owned by the user; and the process listening on it must run as the user
(SO_PEERCRED). Another local user can create ${TMPDIR:-/tmp}/keyhaven-$UID
first and listen there; a token sent to that socket would be theirs. To
trust a daemon of another uid on purpose, set KEYHAVEN_ALLOW_DAEMON_UID=<uid>.

Exit codes match the keyhaven CLI: 0 success, 1 other error, 2 bad command
line, 3 not found, 4 permission denied, 5 daemon unavailable, 6 invalid
input, 7 conflict (compare-and-swap), 8 protocol mismatch, 9 untrusted
daemon (the socket, its directory or its server belongs to another user).
"""

import argparse
import datetime
import importlib
import json
import os
import socket
import stat
import struct
import sys
import tempfile
from pathlib import Path

# The wire protocol this client speaks (StatusResponse.protocol).
PROTOCOL = 1

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_PERMISSION_DENIED = 4
EXIT_UNAVAILABLE = 5
EXIT_INVALID_INPUT = 6
EXIT_CONFLICT = 7
EXIT_PROTOCOL_MISMATCH = 8
EXIT_UNTRUSTED_DAEMON = 9

# Names a uid whose daemon the user trusts besides their own.
ENV_ALLOW_DAEMON_UID = "KEYHAVEN_ALLOW_DAEMON_UID"

# Seconds allowed for the handshake and for each unary call.
CONNECT_TIMEOUT = 5
CALL_TIMEOUT = 30

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class Failure(Exception):
    """An error to report on stderr, with the exit code to leave with."""

    def __init__(self, message, code=EXIT_FAILURE):
        super().__init__(message)
        self.code = code


class UntrustedDaemonError(Failure):
    """The socket, its directory or the process serving it is not the user's.

    Nothing has been sent: the client refuses before writing a byte.
    `path` is what was checked and `owner_uid` the uid found on it.
    """

    def __init__(self, message, path, owner_uid):
        super().__init__(message, EXIT_UNTRUSTED_DAEMON)
        self.path = path
        self.owner_uid = owner_uid


def choose_socket(flag):
    """(path, explicit): the socket by the same rule as proto/src/paths.rs.

    `explicit` is true when the user named the socket (--socket or
    KEYHAVEN_SOCKET); its directory is then the user's choice and is not
    checked.
    """
    if flag:
        return flag, True
    env = os.environ.get("KEYHAVEN_SOCKET")
    if env:
        return env, True
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, "keyhaven", "keyhaven.sock"), False
    tmp = os.environ.get("TMPDIR", "")
    if not os.path.isabs(tmp):
        tmp = "/tmp"
    return os.path.join(tmp, "keyhaven-%d" % os.getuid(), "keyhaven.sock"), False


def trusted_uids():
    """The user's own uid, plus the one KEYHAVEN_ALLOW_DAEMON_UID names."""
    uids = {os.getuid()}
    value = os.environ.get(ENV_ALLOW_DAEMON_UID, "")
    if value:
        if not value.isdigit() or not value.isascii():
            raise Failure(
                "%s must be a numeric uid, not %r" % (ENV_ALLOW_DAEMON_UID, value), EXIT_USAGE
            )
        uids.add(int(value))
    return uids


def untrusted(path, owner, problem, overridable):
    """The refusal: what was found at `path` (owned by or running as uid
    `owner`), that nothing was sent, and what the user can do."""
    if overridable:
        advice = "If you trust the daemon of uid %d, set %s=%d." % (
            owner, ENV_ALLOW_DAEMON_UID, owner)
    else:
        advice = "Remove it and restart keyhavend (%s does not override this)." % (
            ENV_ALLOW_DAEMON_UID)
    return UntrustedDaemonError(
        "UNTRUSTED_DAEMON: refusing to talk to keyhavend: %s to receive your tokens. "
        "Nothing was sent. %s"
        % (problem, advice),
        path,
        owner,
    )


def not_yours(what, owner):
    return "%s is owned by uid %d, not by you (uid %d): another user may have created it" % (
        what, owner, os.getuid())


def not_running(socket_path, found=None):
    if found is None:
        detail = "no socket at %s" % socket_path
    else:
        detail = "%s is %s, not a socket" % (socket_path, found)
    return Failure("keyhavend is not running (%s)" % detail, EXIT_UNAVAILABLE)


def file_kind(mode):
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
    ):
        if test(mode):
            return name
    return "a special file"


def check_socket_files(socket_path, explicit, uids):
    """Owner and mode of the socket and (default path only) its directory.

    Runs before connecting, so a planted server never sees a byte.
    """
    if not explicit:
        directory = os.path.dirname(socket_path)
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            raise not_running(socket_path)
        if stat.S_ISLNK(st.st_mode):
            raise untrusted(
                directory, st.st_uid,
                "the socket directory %s (owner uid %d) is a symlink, which keyhavend never "
                "creates: another user may have planted it" % (directory, st.st_uid),
                overridable=False,
            )
        if not stat.S_ISDIR(st.st_mode):
            raise not_running(socket_path, "inside %s" % file_kind(st.st_mode))
        if st.st_uid not in uids:
            raise untrusted(
                directory, st.st_uid,
                not_yours("the socket directory %s" % directory, st.st_uid),
                overridable=True,
            )
        if st.st_mode & 0o022:
            raise untrusted(
                directory, st.st_uid,
                "the socket directory %s (owner uid %d) is writable by group or others "
                "(mode %04o): another user could replace the socket"
                % (directory, st.st_uid, stat.S_IMODE(st.st_mode)),
                overridable=False,
            )
    try:
        # A path the user chose may be a symlink to the socket; the default
        # one lives in the directory checked above and is taken as it is.
        st = os.stat(socket_path) if explicit else os.lstat(socket_path)
    except FileNotFoundError:
        raise not_running(socket_path)
    if not stat.S_ISSOCK(st.st_mode):
        raise not_running(socket_path, file_kind(st.st_mode))
    if st.st_uid not in uids:
        raise untrusted(
            socket_path, st.st_uid,
            not_yours("the socket %s" % socket_path, st.st_uid),
            overridable=True,
        )


def peer_uid(sock):
    """The uid of the process serving a connected AF_UNIX socket, or None
    where this platform offers Python no way to ask."""
    if sys.platform.startswith("linux"):
        # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        layout = "=iII"
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(layout))
        _pid, uid, _gid = struct.unpack(layout, raw)
        return uid
    if sys.platform == "darwin" or sys.platform.startswith("freebsd"):
        # What getpeereid(3) reads there: LOCAL_PEERCRED (1) at level
        # SOL_LOCAL (0), a struct xucred { u_int cr_version; uid_t cr_uid;
        # ... } with cr_version 0. (Not exercised by this repository's tests,
        # which run on Linux.)
        raw = sock.getsockopt(0, 1, 76)
        version, uid = struct.unpack_from("II", raw)
        return uid if version == 0 else None
    return None


def check_peer(socket_path, uids):
    """Connects without sending anything and checks who is listening.

    grpcio cannot report the peer's credentials, so this pre-flight runs on
    its own connection. For a default path, the directory checked before
    (the user's, closed to others) makes sure the socket grpcio then opens is
    still the same server's; a path the user named is theirs to keep safe.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(socket_path)
        except OSError as e:
            raise Failure(
                "cannot connect to keyhavend at %s: %s" % (socket_path, e.strerror or e),
                EXIT_UNAVAILABLE,
            )
        uid = peer_uid(sock)
    finally:
        sock.close()
    if uid is not None and uid not in uids:
        raise untrusted(
            socket_path, uid,
            "the process serving %s runs as uid %d, not as you (uid %d): another user may be "
            "listening there" % (socket_path, uid, os.getuid()),
            overridable=True,
        )


def verify_daemon(socket_path, explicit):
    """Raises UntrustedDaemonError unless the daemon behind `socket_path` is
    the user's own (or the uid KEYHAVEN_ALLOW_DAEMON_UID names)."""
    uids = trusted_uids()
    check_socket_files(socket_path, explicit, uids)
    check_peer(socket_path, uids)


def load_modules(proto_root):
    """Generates and imports keyhaven_pb2 and keyhaven_pb2_grpc."""
    try:
        import grpc  # noqa: F401
        from grpc_tools import protoc
    except ImportError as e:
        raise Failure(
            "this client needs grpcio and grpcio-tools (pip install grpcio grpcio-tools): %s" % e
        )
    source = Path(proto_root) / "keyhaven" / "v1" / "keyhaven.proto"
    if not source.is_file():
        raise Failure(
            "no keyhaven.proto at %s; pass --proto-dir (the directory holding keyhaven/v1/)" % source
        )
    # google/protobuf/timestamp.proto ships inside grpc_tools.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="keyhaven-py-") as out:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                "-I%s" % proto_root,
                "-I%s" % well_known,
                "--python_out=%s" % out,
                "--grpc_python_out=%s" % out,
                str(source),
            ]
        )
        if status != 0:
            raise Failure("protoc could not compile %s (status %d)" % (source, status))
        sys.path.insert(0, out)
        try:
            pb = importlib.import_module("keyhaven.v1.keyhaven_pb2")
            rpc = importlib.import_module("keyhaven.v1.keyhaven_pb2_grpc")
        finally:
            sys.path.remove(out)
    return pb, rpc


def code_to_exit(code):
    import grpc

    return {
        grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED: EXIT_PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED: EXIT_PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION: EXIT_CONFLICT,
        grpc.StatusCode.ABORTED: EXIT_CONFLICT,
        grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID_INPUT,
        grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID_INPUT,
        grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_INVALID_INPUT,
        grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
        grpc.StatusCode.UNIMPLEMENTED: EXIT_PROTOCOL_MISMATCH,
    }.get(code, EXIT_FAILURE)


def rpc_failure(error, what):
    """A Failure for a grpc.RpcError raised by `what`."""
    code = error.code()
    detail = error.details() or "no details"
    if code.name == "UNIMPLEMENTED":
        detail = "the daemon does not serve this call; it is older than this client, update keyhavend"
    return Failure("%s: %s: %s" % (what, code.name, detail), code_to_exit(code))


def connect(socket_path, explicit, pb, rpc):
    """Checks that the daemon is the user's, opens a channel and checks the
    daemon's protocol number."""
    import grpc

    socket_path = os.path.abspath(socket_path)
    verify_daemon(socket_path, explicit)
    channel = grpc.insecure_channel("unix://" + socket_path)
    try:
        status = rpc.DaemonStub(channel).Status(pb.StatusRequest(), timeout=CONNECT_TIMEOUT)
    except grpc.RpcError as e:
        channel.close()
        raise Failure(
            "cannot talk to keyhavend at %s: %s: %s" % (socket_path, e.code().name, e.details()),
            EXIT_UNAVAILABLE,
        )
    if status.protocol != PROTOCOL:
        channel.close()
        raise Failure(
            "keyhavend %s at %s speaks protocol %d, but this client speaks protocol %d; "
            "restart the daemon after an upgrade, or update the client"
            % (status.version, socket_path, status.protocol, PROTOCOL),
            EXIT_PROTOCOL_MISMATCH,
        )
    return channel


def escape(field):
    return field.replace("%", "%25").replace(":", "%3A")


def key_text(key):
    """The text form provider::server_id::user_id::token_type."""
    return "::".join(
        escape(f) for f in (key.provider, key.server_id, key.user_id, key.token_type)
    )


def timestamp(message, field):
    """An RFC 3339 UTC time for a Timestamp field, or None when absent."""
    if not message.HasField(field):
        return None
    ts = getattr(message, field)
    when = datetime.datetime.fromtimestamp(ts.seconds, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_json(pb, event):
    """One watch event as a dict; secrets are never part of an event."""
    kind = pb.EventKind.Name(event.kind)
    out = {"kind": kind[len("EVENT_KIND_"):] if kind.startswith("EVENT_KIND_") else kind}
    if event.HasField("metadata"):
        m = event.metadata
        out.update(
            {
                "key": key_text(m.key),
                "provider": m.key.provider,
                "server_id": m.key.server_id,
                "user_id": m.key.user_id,
                "token_type": m.key.token_type,
                "revision": m.revision,
                "label": m.label if m.HasField("label") else None,
                "expires_at": timestamp(m, "expires_at"),
            }
        )
    out["time"] = timestamp(event, "time")
    if event.HasField("actor"):
        a = event.actor
        out["actor"] = {
            "uid": a.uid,
            "pid": a.pid,
            "executable": a.executable,
            "app_id": a.app_id,
        }
    else:
        out["actor"] = None
    if out["kind"] == "LAGGED":
        out["missed"] = event.missed
    return out


def read_secret():
    data = sys.stdin.buffer.read()
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise Failure("the secret is empty (pipe it on stdin)", EXIT_INVALID_INPUT)
    return data


def make_key(pb, args):
    return pb.CredentialKey(
        provider=args.provider,
        server_id=args.server_id,
        user_id=args.user_id,
        token_type=args.token_type,
    )


def cmd_store(pb, rpc, channel, args):
    import grpc

    request = pb.StoreRequest(key=make_key(pb, args), secret=read_secret())
    if args.label is not None:
        request.label = args.label
    if args.if_revision is not None:
        request.expected_revision = args.if_revision
    try:
        reply = rpc.CredentialsStub(channel).Store(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        raise rpc_failure(e, "store")
    verb = "stored" if reply.created else "updated"
    print("%s %s (revision %d)" % (verb, key_text(reply.metadata.key), reply.metadata.revision))


def cmd_get(pb, rpc, channel, args):
    import grpc

    request = pb.RetrieveRequest(key=make_key(pb, args))
    try:
        reply = rpc.CredentialsStub(channel).Retrieve(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        raise rpc_failure(e, "get")
    out = sys.stdout.buffer
    out.write(reply.secret)
    if not args.no_newline:
        out.write(b"\n")
    out.flush()


def cmd_watch(pb, rpc, channel, args):
    import grpc

    request = pb.WatchRequest(snapshot=args.snapshot)
    call = rpc.CredentialsStub(channel).Watch(request)
    seen = 0
    try:
        # Headers arrive once the daemon has registered the watcher: from
        # here on no change is missed. Say so on stderr for scripts.
        call.initial_metadata()
        if not call.done():
            print("watching for changes", file=sys.stderr, flush=True)
        for event in call:
            print(json.dumps(event_json(pb, event), sort_keys=True, separators=(",", ":")), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                call.cancel()
                return
    except grpc.RpcError as e:
        if call.code() == grpc.StatusCode.CANCELLED and args.count is not None and seen >= args.count:
            return
        raise rpc_failure(e, "watch")
    if args.count is not None:
        raise Failure(
            "watch: the daemon ended the stream after %d of %d events" % (seen, args.count),
            EXIT_UNAVAILABLE,
        )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="keyhaven_client.py",
        description="Store, read and watch keyhaven credentials from Python.",
    )
    parser.add_argument(
        "--socket",
        default=None,
        help="the daemon's socket (default: $KEYHAVEN_SOCKET, else "
        "$XDG_RUNTIME_DIR/keyhaven/keyhaven.sock)",
    )
    parser.add_argument(
        "--proto-dir",
        default=os.environ.get("KEYHAVEN_PROTO_DIR") or str(REPO_ROOT / "proto"),
        help="directory holding keyhaven/v1/keyhaven.proto (default: the repository's proto/)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def key_args(p):
        p.add_argument("provider", metavar="PROVIDER")
        p.add_argument("server_id", metavar="SERVER_ID", help="'' for account-wide tokens")
        p.add_argument("user_id", metavar="USER_ID", help="may be ''")
        p.add_argument(
            "token_type", metavar="TOKEN_TYPE", nargs="?", default="access_token"
        )

    store = commands.add_parser("store", help="store the secret read from stdin")
    key_args(store)
    store.add_argument("--label", help="a label for people")
    store.add_argument(
        "--if-revision",
        type=int,
        metavar="N",
        help="compare-and-swap: write only if the stored revision is N (0: only if absent)",
    )
    get = commands.add_parser("get", help="print a credential's secret")
    key_args(get)
    get.add_argument("-n", "--no-newline", action="store_true", help="no newline after the secret")
    watch = commands.add_parser("watch", help="print one JSON line per change")
    watch.add_argument(
        "--snapshot", action="store_true", help="first describe every credential, then SYNCED"
    )
    watch.add_argument("--count", type=int, metavar="N", help="exit after N events")
    args = parser.parse_args(argv)
    if args.command == "watch" and args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        pb, rpc = load_modules(args.proto_dir)
        socket_path, explicit = choose_socket(args.socket)
        channel = connect(socket_path, explicit, pb, rpc)
        try:
            {"store": cmd_store, "get": cmd_get, "watch": cmd_watch}[args.command](
                pb, rpc, channel, args
            )
        finally:
            channel.close()
    except Failure as e:
        print("keyhaven_client.py: %s" % e, file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
