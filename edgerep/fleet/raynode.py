"""`python -m edgerep.fleet.raynode start ...`: Ray's own `ray start`, keeping a loopback address loopback.

Ray replaces a node or head address of ``127.0.0.1`` / ``localhost`` with the machine's outward
address (``ray._private.services.resolve_ip_for_localhost``), so a one-machine trial asked to stay
on loopback would listen on the network instead. This launcher runs the unchanged ``ray`` CLI
with that one substitution turned off for loopback literals; everything else is Ray's.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run Ray's CLI with ``argv`` (e.g. ``["start", "--head", ...]``); returns its exit code."""
    from edgerep.fleet.cluster import keep_loopback

    keep_loopback()
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *(sys.argv[1:] if argv is None else argv)]
    try:
        ray_main()
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
