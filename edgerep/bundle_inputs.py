"""A bundle finds the unfolded checkpoint it was deployed from wherever it is read: moved, copied,
or read from another folder than the one deploy ran in.

The manifest keeps the path as given (``inputs.checkpoint``), its absolute form, the path relative
to the bundle, and the checkpoint's sha256; a file is the checkpoint only when its hash matches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgerep.errors import EdgerepError
from edgerep.hashing import sha256_file


def checkpoint_inputs(checkpoint: str | Path, bundle: str | Path) -> dict[str, str]:
    """Manifest fields that locate ``checkpoint`` again from the bundle at ``bundle`` (its final path)."""
    ck = Path(checkpoint).resolve()
    fields = {"checkpoint_resolved": str(ck)}
    try:
        fields["checkpoint_from_bundle"] = Path(os.path.relpath(ck, Path(bundle).resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        pass
    return fields


@dataclass(frozen=True)
class CheckpointLookup:
    """The unfolded checkpoint of a bundle (``path``), or None, and in words how it was found or why not."""

    path: Path | None
    note: str
    hint: str = ""  # what to do when it was not found


def _candidates(bundle: Path, inputs: dict) -> list[Path]:
    named = inputs.get("checkpoint")
    cands: list[Path] = []
    if inputs.get("checkpoint_from_bundle"):
        cands.append(bundle / inputs["checkpoint_from_bundle"])  # moved together with the bundle
    if inputs.get("checkpoint_resolved"):
        cands.append(Path(inputs["checkpoint_resolved"]))  # the bundle moved, the checkpoint did not
    if named:
        cands.append(Path(named))  # as given to deploy (relative to where it ran: bundles before this field)
        if not Path(named).is_absolute():
            cands.append(bundle.parent / named)
    out: list[Path] = []
    for c in cands:
        if c not in out:
            out.append(c)
    return out


def find_checkpoint(bundle: str | Path, manifest: dict, given: str | Path | None = None) -> CheckpointLookup:
    """The bundle's unfolded checkpoint: ``given`` (must match the manifest's sha256, else EdgerepError),
    else the first place the manifest names whose file has that hash."""
    bundle = Path(bundle)
    inputs = manifest.get("inputs") or {}
    want = inputs.get("checkpoint_sha256")
    if given is not None:
        given = Path(given)
        if not given.is_file():
            raise EdgerepError(f"--checkpoint {given}: no such checkpoint file")
        if want and sha256_file(given) != want:
            raise EdgerepError(f"--checkpoint {given}: not the checkpoint {bundle} was deployed from "
                               f"(sha256 {sha256_file(given)[:12]}..., manifest.json says {want[:12]}...)",
                               hint="name the checkpoint the bundle was deployed from")
        return CheckpointLookup(given, f"unfolded checkpoint {given} (given, sha256 matches)")
    looked, differs = [], []
    for cand in _candidates(bundle, inputs):
        if not cand.is_file():
            looked.append(str(cand))
            continue
        if want and sha256_file(cand) != want:
            differs.append(str(cand))
            continue
        return CheckpointLookup(cand, f"unfolded checkpoint {cand}" + (" (sha256 matches)" if want else ""))
    why = "; ".join(filter(None, [f"not found at {', '.join(looked)}" if looked else "",
                                  f"a different file (sha256) at {', '.join(differs)}" if differs else ""]))
    named = inputs.get("checkpoint") or "(none named in manifest.json)"
    return CheckpointLookup(None, f"the unfolded checkpoint {named} is not reachable from {bundle}: "
                                  f"{why or 'manifest.json names none'}",
                            hint="pass --checkpoint PATH (the checkpoint deploy read) to time the unfolded baseline")


__all__ = ["checkpoint_inputs", "find_checkpoint", "CheckpointLookup"]
