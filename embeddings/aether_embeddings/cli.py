"""`aether-embed`: embed lines from stdin as JSON arrays, or export a model pack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bundled import BUNDLED, MODEL_NAME, ensure_default_pack
from .export import export_pack
from .pack import ModelPack, PackError
from .presets import PRESETS
from .runtime import Embedder, EmptyTextError, Mode


def _embed(args: argparse.Namespace) -> int:
    if args.pack:
        pack = ModelPack.open(args.pack)
    else:
        pack = ensure_default_pack(args.variant, model=args.model)
    embedder = Embedder(pack)
    mode: Mode = "query" if args.query else "document"
    lines = [line.rstrip("\n") for line in sys.stdin]
    for start in range(0, len(lines), args.batch):
        chunk = lines[start : start + args.batch]
        try:
            vectors = embedder.embed(chunk, mode)
        except EmptyTextError as exc:
            print(f"aether-embed: line {start + exc.index + 1} is empty", file=sys.stderr)
            return 2
        for vector in vectors:
            sys.stdout.write(json.dumps([round(float(x), 7) for x in vector]) + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.default:
        pack = ensure_default_pack(args.variant, optimize=args.optimize, model=args.model)
    else:
        if not (args.snapshot and args.out and args.preset):
            print(
                "aether-embed export: --snapshot, --out and --preset are required (or --default)",
                file=sys.stderr,
            )
            return 2
        pack = export_pack(
            Path(args.snapshot),
            Path(args.out),
            model_name=args.preset,
            preset=PRESETS[args.preset],
            variant=args.variant,
            optimize=args.optimize,
        )
    print(pack.root)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-embed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    embed = sub.add_parser("embed", help="one JSON array of floats per stdin line")
    embed.add_argument("--pack", help="pack directory (default: the bundled --model's pack)")
    embed.add_argument("--model", choices=sorted(BUNDLED), default=MODEL_NAME)
    embed.add_argument("--variant", choices=["fp32", "int8"], default="fp32")
    embed.add_argument("--query", action="store_true", help="embed as queries (adds prefixes)")
    embed.add_argument("--batch", type=int, default=32)
    export = sub.add_parser("export", help="build a pack from a BERT or MPNet snapshot directory")
    export.add_argument("--default", action="store_true", help="build a bundled --model's pack")
    export.add_argument("--model", choices=sorted(BUNDLED), default=MODEL_NAME)
    export.add_argument(
        "--snapshot", help="directory with config.json, model.safetensors, tokenizer.json"
    )
    export.add_argument("--out", help="pack directory to write")
    export.add_argument("--preset", choices=sorted(PRESETS))
    export.add_argument("--variant", choices=["fp32", "int8"], default="fp32")
    export.add_argument(
        "--optimize",
        action="store_true",
        help="save onnxruntime's extended graph optimizations into the pack",
    )
    args = parser.parse_args(argv)
    try:
        return _embed(args) if args.command == "embed" else _export(args)
    except PackError as exc:
        print(f"aether-embed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
