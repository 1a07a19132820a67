#!/usr/bin/env python3
"""A keyhaven client in Python: store, get and watch credentials.

A short command-line use of the keyhaven package (clients/python). Run from
a checkout, it uses the package there and needs only grpcio and protobuf;
copied elsewhere, it needs the package installed (`pip install
./clients/python`).

    printf 'tok-123' | python3 keyhaven_client.py store jellyfin srv-1 user-1
    python3 keyhaven_client.py get jellyfin srv-1 user-1
    python3 keyhaven_client.py watch --snapshot --count 10

The socket is --socket, else $KEYHAVEN_SOCKET, else
$XDG_RUNTIME_DIR/keyhaven/keyhaven.sock, else
${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock: the same rule as the Rust client.
Before sending a byte the package checks that the daemon is the user's own
(owner and mode of the socket and its directory, and the uid of the process
listening); KEYHAVEN_ALLOW_DAEMON_UID=<uid> trusts another uid on purpose.

Exit codes match the keyhaven CLI: 0 success, 1 other error, 2 bad command
line, 3 not found, 4 permission denied, 5 daemon unavailable, 6 invalid
input, 7 conflict (compare-and-swap), 8 protocol mismatch, 9 untrusted
daemon (the socket, its directory or its server belongs to another user).
"""

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

EXIT_FAILURE = 1
EXIT_UNAVAILABLE = 5
EXIT_INVALID_INPUT = 6


class Failure(Exception):
    """An error of this script's own, with the exit code to leave with."""

    def __init__(self, message, code=EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = code


def import_keyhaven():
    """The keyhaven package beside this script when it runs from a checkout
    (so the two always match), else the installed one."""
    checkout = REPO_ROOT / "clients" / "python"
    if (checkout / "keyhaven" / "__init__.py").is_file():
        sys.path.insert(0, str(checkout))
    try:
        import keyhaven
    except Exception as e:  # ImportError, or the generated code's version checks
        raise Failure(
            "this client needs the keyhaven package, or grpcio and protobuf for the one "
            "in clients/python (pip install ./clients/python installs all three): %s" % e
        ) from e
    return keyhaven


def timestamp(when):
    """An RFC 3339 UTC time, to the second, or None."""
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_json(event):
    """One watch event as a dict; secrets are never part of an event."""
    out = {"kind": event.kind.name}
    m = event.metadata
    if m is not None:
        out.update(
            {
                "key": str(m.key),
                "provider": m.key.provider,
                "server_id": m.key.server_id,
                "user_id": m.key.user_id,
                "token_type": m.key.token_type,
                "revision": m.revision,
                "label": m.label,
                "expires_at": timestamp(m.expires_at),
            }
        )
    out["time"] = timestamp(event.time)
    a = event.actor
    out["actor"] = None if a is None else {
        "uid": a.uid,
        "pid": a.pid,
        "executable": a.executable,
        "app_id": a.app_id,
    }
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


def cmd_store(keyhaven, client, args):
    key = keyhaven.Key(args.provider, args.server_id, args.user_id, args.token_type)
    result = client.store(
        key, read_secret(), label=args.label, expected_revision=args.if_revision
    )
    verb = "stored" if result.created else "updated"
    print("%s %s (revision %d)" % (verb, result.metadata.key, result.metadata.revision))


def cmd_get(keyhaven, client, args):
    key = keyhaven.Key(args.provider, args.server_id, args.user_id, args.token_type)
    secret = client.get(key).secret
    out = sys.stdout.buffer
    out.write(secret)
    if not args.no_newline:
        out.write(b"\n")
    out.flush()


def cmd_watch(keyhaven, client, args):
    seen = 0
    # watch() returns once the daemon has registered the watcher: from here
    # on no change is missed. Say so on stderr for scripts.
    with client.watch(snapshot=args.snapshot) as events:
        print("watching for changes", file=sys.stderr, flush=True)
        for event in events:
            print(json.dumps(event_json(event), sort_keys=True, separators=(",", ":")), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                return
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
        default=None,
        help="ignored, kept so that existing command lines work: the keyhaven package "
        "carries the generated code",
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
        keyhaven = import_keyhaven()
        command = {"store": cmd_store, "get": cmd_get, "watch": cmd_watch}[args.command]
        try:
            with keyhaven.Client(args.socket) as client:
                command(keyhaven, client, args)
        except keyhaven.KeyhavenError as e:
            raise Failure(str(e), e.exit_code) from e
    except Failure as e:
        print("keyhaven_client.py: %s" % e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
