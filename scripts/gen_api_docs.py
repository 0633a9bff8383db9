"""Render docs/api.md, the API reference, from the comments in proto/ (the single source).

`--check` fails when docs/api.md differs from what the protos say (run by `make lint`).
"""

from __future__ import annotations

import argparse
import sys

from google.protobuf import descriptor_pb2
from proto_source import ROOT, descriptor_set
from proto_source import comments as _comments

OUT = ROOT / "docs" / "api.md"
SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
}


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    name = SCALARS.get(field.type) or field.type_name.rsplit(".", 1)[-1]
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {name}"
    return name


def render(files: descriptor_pb2.FileDescriptorSet) -> str:
    out = [
        "# API reference",
        "",
        "Generated from the comments in `proto/aether/memory/v1` by `scripts/gen_api_docs.py`;",
        "edit the protos, not this file. Package `aether.memory.v1`.",
        "",
    ]
    ours = [f for f in files.file if f.name.startswith("aether/")]
    for file in ours:
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            out += [f"## {service.name}", "", comments.get((6, s_index), ""), ""]
            for m_index, method in enumerate(service.method):
                arrow_in = "stream " if method.client_streaming else ""
                arrow_out = "stream " if method.server_streaming else ""
                signature = (
                    f"`{method.name}({arrow_in}{method.input_type.rsplit('.', 1)[-1]}) → "
                    f"{arrow_out}{method.output_type.rsplit('.', 1)[-1]}`"
                )
                out += [f"- {signature}: {comments.get((6, s_index, 2, m_index), '')}"]
            out.append("")
    out += ["## Messages and enums", ""]
    for file in ours:
        comments = _comments(file)
        out += [f"### {file.name}", ""]
        for e_index, enum in enumerate(file.enum_type):
            out += [f"#### enum {enum.name}", "", comments.get((5, e_index), ""), ""]
            for v_index, value in enumerate(enum.value):
                text = comments.get((5, e_index, 2, v_index), "")
                out.append(f"- `{value.name}` = {value.number}: {text}")
            out.append("")
        for m_index, message in enumerate(file.message_type):
            out += [f"#### {message.name}", "", comments.get((4, m_index), ""), ""]
            if message.field:
                out += ["| field | type | meaning |", "|---|---|---|"]
                for f_index, field in enumerate(message.field):
                    text = comments.get((4, m_index, 2, f_index), "").replace("|", "\\|")
                    out.append(f"| `{field.name}` | `{_type(field)}` | {text} |")
                out.append("")
    return "\n".join(line for line in out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render(descriptor_set())
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit("gen_api_docs: docs/api.md is stale; run python scripts/gen_api_docs.py")
        return
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
