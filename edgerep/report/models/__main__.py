"""``python -m edgerep.report.models --write docs/schema``: regenerate the published JSON Schemas."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgerep.report.models import write_schemas


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgerep.report.models", description=__doc__)
    p.add_argument("--write", type=Path, required=True, metavar="DIR", help="folder to write *.schema.json into")
    args = p.parse_args(argv)
    for path in write_schemas(args.write):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
