"""Target profiles: one TOML file per edge target says which engines to build and how.

Profiles live in the repository's ``engines/`` folder (``engines/<name>.toml``); more folders
can be added with ``EDGEREP_PROFILE_PATH`` (``os.pathsep``-separated). A profile is plain data:
the factory (``edgerep.engines.factory``) turns it into engines, and falls back to onnxruntime
on the CPU where the target wants TensorRT or a GPU that this machine lacks.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerep.errors import EdgerepError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
FALLBACKS = ("onnxruntime-cpu", "none")
# which QDQ file (policy of the INT8 pipeline) an INT8 engine of each backend reads by default
DEFAULT_POLICY = {"tensorrt": "tensorrt", "onnxruntime": "cpu", "torch": "cpu"}
# what each backend can run, by device kind; anything else is a mistake in the profile
SUPPORTED = {
    ("torch", "cpu"): ("fp32", "fp16"),
    ("torch", "cuda"): ("fp32", "fp16"),
    ("onnxruntime", "cpu"): ("fp32", "int8"),
    ("onnxruntime", "cuda"): ("fp32", "fp16", "int8"),
    ("tensorrt", "cuda"): ("fp32", "fp16", "int8"),
    ("tensorrt", "dla"): ("fp16", "int8"),  # DLA has no FP32 path
}
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|dla:\d+)$")
_PROFILE_KEYS = {"name", "description", "hardware", "batch_sizes", "workspace_mb", "dla_core", "opt_level",
                 "threads", "fallback", "engines", "notes"}
_SPEC_KEYS = {"backend", "precision", "device", "policy"}


class ProfileError(EdgerepError):
    """A target profile is missing, unreadable or has a bad field."""


@dataclass(frozen=True)
class EngineSpec:
    """One engine a target asks for: backend + precision + device (+ INT8 policy file)."""

    backend: str  # "torch" | "onnxruntime" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    device: str = "cpu"  # "cpu" | "cuda:0" | "dla:0"
    policy: str | None = None  # which QDQ file an int8 engine reads ("tensorrt" | "cpu"); None otherwise

    @property
    def device_kind(self) -> str:
        """``cpu``, ``cuda`` or ``dla``."""
        return self.device.split(":")[0]

    @property
    def key(self) -> str:
        """A short stable id, e.g. ``tensorrt-int8-dla0``; used for artifact names and reports."""
        return f"{self.backend}-{self.precision}-{self.device.replace(':', '')}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TargetProfile:
    """What to build for one target (a Jetson module, a desktop GPU, an x86 CPU)."""

    name: str
    description: str
    engines: list[EngineSpec]
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    workspace_mb: int = 1024
    dla_core: int | None = None  # DLA core used by "dla:N" engines; None: the target has no DLA
    opt_level: int = 3  # TensorRT builder optimization level 0..5 (3 is TensorRT's default)
    threads: int | None = None  # onnxruntime intra-op threads; None: onnxruntime decides
    fallback: str = "onnxruntime-cpu"  # what replaces TensorRT / GPU engines where they are absent
    hardware: str = ""
    notes: list[str] = field(default_factory=list)
    source: Path | None = None

    @property
    def max_batch(self) -> int:
        return max(self.batch_sizes)

    @property
    def quant_targets(self) -> tuple[str, ...]:
        """The QDQ policies this target's INT8 engines read (plus "cpu" for an onnxruntime-cpu stand-in)."""
        pols = {e.policy for e in self.engines if e.precision == "int8" and e.policy}
        if self.fallback == "onnxruntime-cpu" and any(e.precision == "int8" and e.backend == "tensorrt"
                                                      for e in self.engines):
            pols.add("cpu")
        return tuple(sorted(pols))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["engines"] = [e.to_dict() for e in self.engines]
        d["source"] = str(self.source) if self.source else None
        return d


def profile_dirs() -> list[Path]:
    """Folders searched for ``<name>.toml``: ``EDGEREP_PROFILE_PATH`` entries, then the repo's ``engines/``."""
    dirs = [Path(p) for p in os.environ.get("EDGEREP_PROFILE_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "engines")
    return dirs


def list_profiles() -> list[TargetProfile]:
    """Every profile found, first folder wins on a name clash, sorted by name."""
    seen: dict[str, TargetProfile] = {}
    for d in profile_dirs():
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.toml")):
            if f.stem not in seen:
                seen[f.stem] = _load_file(f)
    return [seen[k] for k in sorted(seen)]


def load_profile(name_or_path: str | os.PathLike[str]) -> TargetProfile:
    """A profile by name (``jetson-orin-nano``) or by path to a TOML file; ``ProfileError`` if absent or bad."""
    text = str(name_or_path)
    p = Path(text)
    if p.is_file():
        return _load_file(p)
    if os.sep in text or (p.suffix == ".toml" and not any((d / p.name).is_file() for d in profile_dirs())):
        raise ProfileError(f"{p}: profile file not found")
    text = p.stem if p.suffix == ".toml" else text  # "dgpu.toml" also names the shipped profile
    for d in profile_dirs():
        f = d / f"{text}.toml"
        if f.is_file():
            return _load_file(f)
    names = sorted({f.stem for d in profile_dirs() if d.is_dir() for f in d.glob("*.toml")})
    raise ProfileError(f"unknown target profile {text!r}",
                       hint="known: " + (", ".join(names) if names else "none") + "; or give a path to a .toml file")


def _load_file(path: Path) -> TargetProfile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: cannot read profile: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from None
    return parse_profile(data, source=path)


def parse_profile(data: dict[str, Any], *, source: Path | None = None,
                  default_name: str | None = None) -> TargetProfile:
    """Validate a profile's TOML table; every mistake names the file and the field."""
    where = str(source) if source else "<profile>"

    def bad(fieldname: str, msg: str) -> ProfileError:
        return ProfileError(f"{where}: field '{fieldname}' {msg}")

    unknown = sorted(set(data) - _PROFILE_KEYS)
    if unknown:
        raise bad(unknown[0], f"is not a profile field (known: {', '.join(sorted(_PROFILE_KEYS))})")
    name = data.get("name", default_name or (source.stem if source else None))
    if not isinstance(name, str) or not name:
        raise bad("name", "must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise bad("description", "must be a string")

    batch = data.get("batch_sizes", [1])
    if (not isinstance(batch, list) or not batch
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch)):
        raise bad("batch_sizes", f"must be a non-empty list of integers >= 1, got {batch!r}")
    workspace = _int(data, "workspace_mb", 1024, bad, lo=1)
    opt_level = _int(data, "opt_level", 3, bad, lo=0, hi=5)
    threads = data.get("threads")
    if threads is not None:
        threads = _int(data, "threads", None, bad, lo=1)
    dla_core = data.get("dla_core")
    if dla_core is not None:
        dla_core = _int(data, "dla_core", None, bad, lo=0)
    fallback = data.get("fallback", "onnxruntime-cpu")
    if fallback not in FALLBACKS:
        raise bad("fallback", f"must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    notes = data.get("notes", [])
    if isinstance(notes, str):
        notes = [notes]
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise bad("notes", "must be a string or a list of strings")

    raw = data.get("engines")
    if not isinstance(raw, list) or not raw:
        raise bad("engines", "must list at least one engine ([[engines]] tables with backend, precision, device)")
    specs = [_parse_spec(e, i, dla_core, bad) for i, e in enumerate(raw)]
    dup = {s for s in specs if specs.count(s) > 1}
    if dup:
        raise bad("engines", f"lists {sorted(dup, key=str)[0].key} twice")
    return TargetProfile(name=name, description=description, engines=specs, batch_sizes=sorted(set(batch)),
                         workspace_mb=workspace, dla_core=dla_core, opt_level=opt_level, threads=threads,
                         fallback=fallback, hardware=str(data.get("hardware", "")), notes=list(notes),
                         source=source)


def _int(data: dict, key: str, default: int | None, bad, lo: int | None = None, hi: int | None = None):
    v = data.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise bad(key, f"must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise bad(key, f"must be {rng}, got {v}")
    return v


def _parse_spec(e: Any, i: int, dla_core: int | None, bad) -> EngineSpec:
    fld = f"engines[{i}]"
    if not isinstance(e, dict):
        raise bad(fld, "must be a table with backend, precision, device")
    unknown = sorted(set(e) - _SPEC_KEYS)
    if unknown:
        raise bad(f"{fld}.{unknown[0]}", f"is not an engine field (known: {', '.join(sorted(_SPEC_KEYS))})")
    backend = e.get("backend")
    if backend not in BACKENDS:
        raise bad(f"{fld}.backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    precision = e.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise bad(f"{fld}.precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = e.get("device", "cpu" if backend != "tensorrt" else "cuda:0")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise bad(f"{fld}.device", f"must be 'cpu', 'cuda', 'cuda:N' or 'dla:N', got {device!r}")
    if device == "cuda":
        device = "cuda:0"
    kind = device.split(":")[0]
    allowed = SUPPORTED.get((backend, kind))
    if allowed is None:
        raise bad(f"{fld}.device", f"{backend} does not run on {kind}")
    if precision not in allowed:
        raise bad(f"{fld}.precision", f"{backend} on {kind} runs {', '.join(allowed)}, not {precision}")
    if kind == "dla":
        if dla_core is None:
            raise bad(f"{fld}.device", f"is {device} but the profile sets no dla_core (this target has no DLA?)")
        if int(device.split(":")[1]) != dla_core:
            raise bad(f"{fld}.device", f"is {device} but the profile's dla_core is {dla_core}")
    policy = e.get("policy")
    if precision == "int8":
        policy = policy or DEFAULT_POLICY[backend]
        if not isinstance(policy, str):
            raise bad(f"{fld}.policy", "must be a string naming a QDQ policy ('tensorrt' or 'cpu')")
    elif policy is not None:
        raise bad(f"{fld}.policy", f"only applies to int8 engines, this one is {precision}")
    return EngineSpec(backend=backend, precision=precision, device=device, policy=policy)
