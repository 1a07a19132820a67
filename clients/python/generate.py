#!/usr/bin/env python3
"""Regenerates the committed gRPC code of the keyhaven package.

The package ships the output of grpcio-tools for
proto/keyhaven/v1/keyhaven.proto in keyhaven/v1/ (keyhaven_pb2.py, its type
stubs keyhaven_pb2.pyi, and keyhaven_pb2_grpc.py), so that installing it needs
no code generator. Run this after the .proto changes:

    python3 clients/python/generate.py          # rewrite the files
    python3 clients/python/generate.py --check  # fail if they are stale (CI)

The output names the versions that made it (the protobuf gencode version and
GRPC_GENERATED_VERSION), so it is reproducible only with one grpcio-tools
version: GRPCIO_TOOLS below. The check also fails when pyproject.toml lets
pip install a grpcio or protobuf older than the generated code accepts.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
import sys
import tempfile
from pathlib import Path

# The grpcio-tools release the committed files come from. Changing it means
# regenerating and raising the minimum versions in pyproject.toml.
GRPCIO_TOOLS = "1.85.1"

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO_ROOT = REPO / "proto"
PROTO = "keyhaven/v1/keyhaven.proto"
# protoc writes keyhaven/v1/<name> for keyhaven/v1/keyhaven.proto; the
# package is named keyhaven, so the generated imports
# (`from keyhaven.v1 import keyhaven_pb2`) work unchanged inside it.
OUT_DIR = HERE / "keyhaven" / "v1"
GENERATED = ("keyhaven_pb2.py", "keyhaven_pb2.pyi", "keyhaven_pb2_grpc.py")


def fail(message: str) -> None:
    print("generate.py: %s" % message, file=sys.stderr)
    sys.exit(1)


def generate(into: Path) -> None:
    """Runs protoc (from grpcio-tools) for the .proto into `into`."""
    try:
        found = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found != GRPCIO_TOOLS:
        fail(
            "needs grpcio-tools %s (found %s): the generated files name the version "
            "that made them. Install it with: %s -m pip install grpcio-tools==%s"
            % (GRPCIO_TOOLS, found or "none", sys.executable, GRPCIO_TOOLS)
        )
    from grpc_tools import protoc

    # google/protobuf/timestamp.proto ships inside grpc_tools.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            "-I%s" % PROTO_ROOT,
            "-I%s" % well_known,
            "--python_out=%s" % into,
            "--pyi_out=%s" % into,
            "--grpc_python_out=%s" % into,
            str(PROTO_ROOT / PROTO),
        ]
    )
    if status != 0:
        fail("protoc failed on %s (status %d)" % (PROTO, status))


def pins_problems(generated: Path) -> list[str]:
    """What is wrong with pyproject.toml's grpcio and protobuf minimums,
    compared with the versions the generated code checks for at import."""
    pb2 = (generated / "keyhaven_pb2.py").read_text()
    grpc = (generated / "keyhaven_pb2_grpc.py").read_text()
    protobuf_version = re.search(r"^# Protobuf Python Version: (\S+)$", pb2, re.M)
    grpc_version = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", grpc, re.M)
    if not protobuf_version or not grpc_version:
        return ["cannot find the versions in the generated code (did grpcio-tools change?)"]
    pyproject = (HERE / "pyproject.toml").read_text()
    problems = []
    for name, version in (("grpcio", grpc_version[1]), ("protobuf", protobuf_version[1])):
        if not re.search(r'"%s>=%s[,"]' % (name, re.escape(version)), pyproject):
            problems.append(
                "pyproject.toml must require %s>=%s (the generated code refuses older)"
                % (name, version)
            )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if the committed files differ from a fresh generation",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keyhaven-generate-") as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "keyhaven" / "v1"
        stale = []
        for name in GENERATED:
            new = (fresh / name).read_text()
            path = OUT_DIR / name
            old = path.read_text() if path.exists() else ""
            if new == old:
                continue
            stale.append(name)
            if args.check:
                diff = difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    "committed/%s" % name,
                    "generated/%s" % name,
                    n=1,
                )
                sys.stderr.writelines(list(diff)[:40])
            else:
                path.write_text(new)
                print("wrote %s" % path.relative_to(REPO))
        problems = pins_problems(fresh)
    for problem in problems:
        print("generate.py: %s" % problem, file=sys.stderr)
    if args.check and stale:
        print(
            "generate.py: stale generated code in %s: %s; run python3 %s"
            % (OUT_DIR.relative_to(REPO), ", ".join(stale), Path(__file__).relative_to(REPO)),
            file=sys.stderr,
        )
        return 1
    if problems:
        return 1
    if args.check:
        print("generated code is up to date (%s, grpcio-tools %s)" % (PROTO, GRPCIO_TOOLS))
    elif not stale:
        print("nothing to do: the generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
