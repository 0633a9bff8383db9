"""The protos with their comments, for the generators that read them (API docs, tool schemas):
a FileDescriptorSet compiled with source info by the pinned grpcio-tools protoc."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PACKAGE = Path("aether") / "memory" / "v1"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO)) for p in (PROTO / PACKAGE).glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(
            [
                "protoc",
                f"-I{PROTO}",
                f"-I{ROOT / 'third_party' / 'proto'}",
                f"-I{include}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *protos,
            ]
        )
        if code != 0:
            sys.exit(f"protoc failed ({code})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Each element's leading comment, on one line, by its source path."""
    found = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            found[tuple(location.path)] = " ".join(line.strip() for line in text.splitlines())
    return found


def comments_by_name(files: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comments by full name: messages, their fields, enums, services and methods
    (`aether.memory.v1.Memory.content`, `aether.memory.v1.MemoryService.StoreMemory`)."""
    named: dict[str, str] = {}
    for file in files.file:
        found = comments(file)
        package = file.package
        for i, m in enumerate(file.message_type):
            _message(m, (4, i), package, found, named)
        for i, e in enumerate(file.enum_type):
            named[f"{package}.{e.name}"] = found.get((5, i), "")
        for i, s in enumerate(file.service):
            named[f"{package}.{s.name}"] = found.get((6, i), "")
            for j, method in enumerate(s.method):
                named[f"{package}.{s.name}.{method.name}"] = found.get((6, i, 2, j), "")
    return named


def _message(
    m: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    scope: str,
    found: dict[tuple[int, ...], str],
    named: dict[str, str],
) -> None:
    name = f"{scope}.{m.name}"
    named[name] = found.get(path, "")
    for i, f in enumerate(m.field):
        named[f"{name}.{f.name}"] = found.get((*path, 2, i), "")
    for i, nested in enumerate(m.nested_type):
        _message(nested, (*path, 3, i), name, found, named)
