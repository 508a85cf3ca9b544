#!/usr/bin/env python3
"""Write docs/STAGES.md from deploy's stage declarations (``edgerep.pipeline.stages_markdown``).

    python scripts/stages_doc.py          # rewrite the page
    python scripts/stages_doc.py --check  # exit 1 when the page and the declarations disagree
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgerep.pipeline import stages_markdown  # noqa: E402

PAGE = ROOT / "docs" / "STAGES.md"


def main(argv: list[str]) -> int:
    page = stages_markdown()
    if "--check" in argv:
        ok = PAGE.is_file() and PAGE.read_text() == page
        print(f"{PAGE.relative_to(ROOT)}: {'up to date' if ok else 'STALE: run python scripts/stages_doc.py'}")
        return 0 if ok else 1
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
