"""CPU instruction-set facts that decide which INT8 kernels onnxruntime runs fast and exactly.

Read from /proc/cpuinfo (Linux x86 ``flags`` / ARM ``Features``) so that ``edgerep doctor`` and
the CPU quantization policy agree on one answer. No third-party probe, no subprocess.
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class CpuFeatures:
    """The INT8-relevant ISA of this CPU.

    ``int8_dot`` names the best 8-bit dot-product path: ``"amx"``, ``"avx512_vnni"``,
    ``"avx_vnni"``, ``"arm_i8mm"``, ``"arm_dotprod"``, ``"avx2"`` (u8s8 ``vpmaddubsw``, which
    saturates at int16), ``"neon"`` or ``"none"``.
    """

    arch: str
    model_name: str
    cores: int
    avx2: bool = False
    avx512f: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    amx_int8: bool = False
    neon: bool = False
    arm_dotprod: bool = False
    arm_i8mm: bool = False
    flags: tuple[str, ...] = field(default=(), repr=False)

    @property
    def int8_dot(self) -> str:
        if self.amx_int8:
            return "amx"
        if self.avx512_vnni:
            return "avx512_vnni"
        if self.avx_vnni:
            return "avx_vnni"
        if self.arm_i8mm:
            return "arm_i8mm"
        if self.arm_dotprod:
            return "arm_dotprod"
        if self.avx2:
            return "avx2"
        if self.neon:
            return "neon"
        return "none"

    @property
    def u8s8_saturates(self) -> bool:
        """True where onnxruntime's x86 u8s8 kernels use ``vpmaddubsw`` (int16 pair sums can saturate)."""
        return self.int8_dot in ("avx2", "none") and self.arch in ("x86_64", "amd64", "i686")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("flags")
        d["int8_dot"] = self.int8_dot
        d["u8s8_saturates"] = self.u8s8_saturates
        return d


def parse_cpuinfo(text: str, machine: str | None = None) -> CpuFeatures:
    """Parse the text of /proc/cpuinfo (first processor's flags; they are the same on all cores)."""
    flags: set[str] = set()
    model = ""
    cores = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "processor":
            cores += 1
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    machine = (machine or platform.machine() or "").lower()
    is_arm = machine in ("aarch64", "arm64") or machine.startswith("arm") or "asimd" in flags
    arch = ("aarch64" if is_arm else machine) or "unknown"
    return CpuFeatures(
        arch=arch,
        model_name=model or platform.processor() or "unknown",
        cores=cores,
        avx2="avx2" in flags,
        avx512f="avx512f" in flags,
        avx512_vnni="avx512_vnni" in flags or "avx512vnni" in flags,
        avx_vnni="avx_vnni" in flags or "avxvnni" in flags,
        amx_int8="amx_int8" in flags,
        neon=is_arm and ("asimd" in flags or "neon" in flags),
        arm_dotprod=is_arm and "asimddp" in flags,
        arm_i8mm=is_arm and "i8mm" in flags,
        flags=tuple(sorted(flags)),
    )


_CACHED: CpuFeatures | None = None


def detect_cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's CPU features (cached); an unreadable cpuinfo gives an all-False answer."""
    global _CACHED
    if _CACHED is not None and str(cpuinfo) == "/proc/cpuinfo":
        return _CACHED
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    feats = parse_cpuinfo(text)
    if str(cpuinfo) == "/proc/cpuinfo":
        _CACHED = feats
    return feats
