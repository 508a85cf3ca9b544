"""Does this device fit a target profile? What `edgerep fleet join` checks before it advertises one.

A device joins the fleet to be measured *as the target*, so a stand-in does not count: a TensorRT
profile needs TensorRT and a GPU here (a fallback to onnxruntime-cpu is for local trials, not for
a fleet node), a DLA engine needs the DLA core, a CPU profile needs its architecture and INT8 ISA.
Every fact comes from `edgerep doctor`.
"""
from __future__ import annotations

from typing import Any

# what a profile's `hardware` line names -> (machine architectures, CPU flags the INT8 path needs)
_X86 = ("x86_64", "amd64")
_ARM = ("aarch64", "arm64")


def fit_problems(profile: Any, doctor: dict | None = None) -> list[str]:
    """What this machine lacks to run ``profile`` itself (empty: it fits). ``doctor``: ``doctor.collect()``."""
    from edgerep.commands.doctor import collect
    from edgerep.engines.factory import unavailable_engines

    facts = doctor if doctor is not None else collect()
    cpu = facts.get("cpu") or {}
    arch = str(cpu.get("arch", "")).lower()
    hw = f"{profile.name} {profile.hardware}".lower()
    problems: list[str] = []
    if "jetson" in hw:
        if arch not in _ARM:
            problems.append(f"a Jetson (aarch64) board, this machine is {arch or 'unknown'}")
        elif not facts.get("jetson"):
            problems.append("a Jetson board (/etc/nv_tegra_release is absent)")
    elif "x86" in hw:
        if arch not in _X86:
            problems.append(f"an x86-64 CPU, this machine is {arch or 'unknown'}")
        elif not cpu.get("avx2"):
            problems.append("the AVX2 instruction set (the CPU INT8 path of onnxruntime needs at least AVX2)")
    missing: dict[str, list[str]] = {}  # why -> engines (a stand-in the profile allows does not count here)
    for spec, why in unavailable_engines(profile):
        missing.setdefault(why.split("; ")[0], []).append(spec.key)
    problems += [f"{', '.join(keys)}: {why}" for why, keys in missing.items()]
    return problems
