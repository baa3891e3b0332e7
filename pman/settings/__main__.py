"""``python -m pman.settings reference [--output FILE] [--check]``: the
configuration reference, written from the declarations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pman.settings.reference import REFERENCE_PATH, reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pman.settings", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_ref = sub.add_parser("reference", help="the configuration reference (Markdown)")
    p_ref.add_argument("--output", "-o", type=Path, help=f"write it there (e.g. {REFERENCE_PATH})")
    p_ref.add_argument(
        "--check", action="store_true", help="exit 1 when --output differs from the declarations"
    )
    args = parser.parse_args(argv)
    text = reference()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} differs from the declarations: regenerate it", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
