"""edgerep on a Ray cluster: build, benchmark and gate on the target devices themselves.

Each device joins a Ray cluster as a node advertising the custom resource
``edgerep-target:<PROFILE>`` = 1 (``edgerep fleet join``); ``edgerep fleet deploy`` ships a
bundle's ONNX files (never a checkpoint) through Ray's object store, builds and measures every
target's engines on each node that advertises it, and merges one report and one gate on the CI
side. Modules: ``cluster`` (connect, start nodes, status), ``fit`` (does this device fit a
profile), ``payload`` (what travels), ``node`` (what runs on a device), ``counts`` (mergeable
counts), ``scoring`` (per task: what a node sends per shard, how the lead scores the shards), ``deploy`` (the
orchestration), ``gate`` (the merged gate), ``report`` (tables).
"""
from __future__ import annotations

RESOURCE_PREFIX = "edgerep-target:"


def resource_name(target: str) -> str:
    """The Ray custom resource a node of ``target`` advertises: ``edgerep-target:<target>``."""
    return f"{RESOURCE_PREFIX}{target}"


def targets_of(resources: dict) -> list[str]:
    """The edgerep targets a node's Ray resources advertise, sorted."""
    return sorted(k[len(RESOURCE_PREFIX):] for k in resources if k.startswith(RESOURCE_PREFIX))
