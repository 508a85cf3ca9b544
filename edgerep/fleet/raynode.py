"""`python -m edgerep.fleet.raynode start ...`: Ray's own `ray start`, keeping a loopback address loopback.

Ray replaces a node or head address of ``127.0.0.1`` / ``localhost`` with the machine's outward
address (``ray._private.services.resolve_ip_for_localhost``), so a one-machine trial asked to stay
on loopback would listen on the network instead. This launcher runs the unchanged ``ray`` CLI
with that one substitution turned off for loopback literals; everything else is Ray's.
"""
from __future__ import annotations

import sys


def loopback_asked(args: list[str]) -> bool:
    """True when ``ray start`` is told a loopback node or head address (``--node-ip-address`` / ``--address``)."""
    from edgerep.fleet.cluster import LOOPBACK

    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag in ("--node-ip-address", "--address"):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            host = value.rpartition(":")[0] if flag == "--address" else value
            if host.strip("[]") in LOOPBACK:
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Run Ray's CLI with ``argv`` (e.g. ``["start", "--head", ...]``); returns its exit code (2 when a
    loopback node cannot be kept on loopback)."""
    from edgerep.errors import EdgerepError
    from edgerep.fleet.cluster import keep_loopback

    args = list(sys.argv[1:] if argv is None else argv)
    if loopback_asked(args):
        try:
            keep_loopback()
        except EdgerepError as e:
            print(f"edgerep fleet: error: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
            return 2
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *args]
    try:
        ray_main()
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
