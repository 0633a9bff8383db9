"""Generate the Python stubs (messages, gRPC, mypy stubs) from proto/ into the client package.

The output replaces `clients/python/src/aether/memory/v1` wholesale; never edit it by hand.
`--check` regenerates into a temporary directory and fails when the checked-in tree differs.
Pinned tool versions make the output byte-identical on every machine.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
THIRD_PARTY = ROOT / "third_party" / "proto"
TARGET = ROOT / "clients" / "python" / "src"
PACKAGE = Path("aether") / "memory" / "v1"
PINNED = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}


def _check_versions() -> None:
    for name, wanted in PINNED.items():
        found = importlib.metadata.version(name)
        if found != wanted:
            sys.exit(f"gen_protos: {name} {found} is installed, the pinned version is {wanted}")


def generate(out: Path) -> None:
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO)) for p in (PROTO / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside this Python
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO}",
        f"-I{THIRD_PARTY}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("gen_protos: protoc failed")
    for directory in (out / "aether", out / "aether" / "memory", out / PACKAGE):
        (directory / "__init__.py").write_text("", encoding="utf-8")
    (out / PACKAGE / "py.typed").write_text("", encoding="utf-8")


def _differences(left: Path, right: Path) -> list[str]:
    compared = filecmp.dircmp(left, right)
    found = [f"only in one tree: {name}" for name in compared.left_only + compared.right_only]
    found += [f"differs: {name}" for name in compared.diff_files]
    for sub in compared.common_dirs:
        found += _differences(left / sub, right / sub)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the tree is out of date")
    args = parser.parse_args()
    _check_versions()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        current = TARGET / "aether"
        if args.check:
            if not current.is_dir():
                print("gen_protos: no generated tree; run scripts/generate.sh", file=sys.stderr)
                return 1
            diffs = _differences(out / "aether", current)
            for line in diffs:
                print(f"gen_protos: {line}", file=sys.stderr)
            return 1 if diffs else 0
        shutil.rmtree(current, ignore_errors=True)
        shutil.copytree(out / "aether", current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
