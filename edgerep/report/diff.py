"""What changed between two edgerep reports: accuracy, drop and latency per engine (with the noise
taken into account), INT8 verdicts per layer, layers kept in float, file hashes, settings, versions.

Latency: a p50 change counts as real only when it is larger than the noise band of the pair, the
larger of ``noise_floor_pct`` (default 5%) and each run's own spread, ``(p90 - p50) / p50`` (or its
coefficient of variation when a run has no p90). In words: the new median must fall outside where
the slower half of the other run's samples lay. A pair in which either run marked itself ``noisy``
is "too noisy" to judge: it cannot fail a latency limit (``edgerep.bench.noise.latency_change``,
shared with the gate).
Views: ``edgerep.report.diff_md`` (Markdown) and ``edgerep.report.diff_page`` (HTML).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerep.bench.noise import NOISE_FLOOR_PCT, TOO_NOISY_PCT, latency_change  # noqa: F401 (names kept here)
from edgerep.errors import EdgerepError
from edgerep.report import fmt
from edgerep.report.models.results import drop_of, top1_of
from edgerep.report.rows import engine_entries, engine_key, split_entries

#: a noise band wider than this gets a note: changes below it cannot be seen
NOISY_BAND_PCT = 25.0
#: settings that differ on every run and say nothing about the result
IGNORED_SETTINGS = {"out", "force", "cache_dir", "checkpoint"}


@dataclass
class Side:
    """One report with what lies beside it: the manifest and the bundle's file hashes."""
    report: dict
    manifest: dict = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    label: str = ""
    html: Path | None = None


@dataclass
class EngineDiff:
    """One engine in both reports (or in one: ``presence`` says which)."""
    key: str
    label: str
    presence: str  # both | added | removed
    top1_base: float | None = None
    top1_new: float | None = None
    samples_base: int | None = None
    samples_new: int | None = None
    drop_base: float | None = None
    drop_new: float | None = None
    p50_base: float | None = None
    p50_new: float | None = None
    latency_pct: float | None = None
    noise_pct: float | None = None
    latency: str = "n/a"  # within noise | slower | faster | too noisy | n/a
    noisy: str = ""
    scenario: str = ""
    map_base: float | None = None  # a detector's mAP@[.5:.95] (points), with its counts
    map_new: float | None = None
    map50_base: float | None = None
    map50_new: float | None = None
    instances_base: int | None = None
    instances_new: int | None = None

    @property
    def map_delta(self) -> float | None:
        """New minus base mAP@[.5:.95], in points (detectors)."""
        if self.map_base is None or self.map_new is None:
            return None
        return self.map_new - self.map_base

    @property
    def top1_delta(self) -> float | None:
        """New minus base top-1, in points."""
        if self.top1_base is None or self.top1_new is None:
            return None
        return self.top1_new - self.top1_base

    @property
    def images_delta(self) -> int | None:
        """How many more (or fewer) test images the new run gets right; None when the test sets differ."""
        if self.samples_base != self.samples_new:
            return None
        a, b = fmt.correct_of(self.top1_base, self.samples_base), fmt.correct_of(self.top1_new, self.samples_new)
        return None if a is None or b is None else b - a


@dataclass
class DiffCheck:
    """One threshold applied to the diff (gate-like)."""
    name: str
    engine: str
    value: float | None
    threshold: float
    passed: bool
    message: str
    unjudged: bool = False  # a latency pair too noisy to judge: passed, but not a verdict


@dataclass
class ReportDiff:
    """Everything that differs between two reports."""
    base_label: str
    new_label: str
    model: str
    engines: list[EngineDiff]
    layers: list[dict[str, Any]]  # name, plain (base, new), fixed (base, new)
    float_layers: list[dict[str, Any]]  # node, change (+/-), why
    files: list[dict[str, Any]]  # name, base, new (short hashes or None)
    settings: list[dict[str, Any]]  # key, base, new
    gate_base: bool | None = None
    gate_new: bool | None = None
    checks: list[DiffCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    noise_floor_pct: float = NOISE_FLOOR_PCT

    @property
    def passed(self) -> bool:
        """True when every threshold check passed (and when none was given)."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[DiffCheck]:
        """The threshold checks that failed."""
        return [c for c in self.checks if not c.passed]

    def changed(self) -> int:
        """How many things changed: engines whose accuracy, drop or latency moved, plus every other item."""
        moved = 0
        for e in self.engines:
            if e.presence != "both" or e.latency in ("slower", "faster") or (e.top1_delta or 0.0) != 0.0 \
                    or (e.drop_base != e.drop_new):
                moved += 1
        return moved + len(self.layers) + len(self.float_layers) + len(self.files) + len(self.settings)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``schema`` edgerep.diff/1)."""
        d = asdict(self)
        for e, src in zip(d["engines"], self.engines):
            e["top1_delta"], e["images_delta"], e["map_delta"] = src.top1_delta, src.images_delta, src.map_delta
        d.update(schema="edgerep.diff/1", passed=self.passed, changed=self.changed())
        return d


# ---- loading --------------------------------------------------------------------------------------

def load_side(path: str | Path) -> Side:
    """A report.json (or a bundle directory), its manifest.json and the hashes of its files when present."""
    from edgerep.bench.gate import load_report

    p = Path(path)
    report = load_report(p)
    folder = p if p.is_dir() else p.parent
    manifest: dict = {}
    mpath = folder / "manifest.json"
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError as e:
            raise EdgerepError(f"{mpath}: not JSON ({e})") from None
    hashes = dict(manifest.get("sha256") or {})
    from edgerep.hashing import sha256_file

    for rel in (manifest.get("files") or {}).values():
        f = folder / rel
        if rel not in hashes and f.is_file() and not str(rel).startswith("report.") and f.suffix != ".png":
            hashes[rel] = sha256_file(f)
    html = folder / "report.html"
    return Side(report=report, manifest=manifest, hashes=hashes, label=str(path),
                html=html if html.is_file() else None)


# ---- comparing ------------------------------------------------------------------------------------

def _latency(d: EngineDiff, lb: dict, ln: dict, floor: float) -> None:
    b, n = lb.get("p50_ms"), ln.get("p50_ms")
    d.p50_base, d.p50_new = b, n
    d.scenario = str(ln.get("scenario") or lb.get("scenario") or "")
    noisy = [f"{who}: {lat.get('noise_reason') or 'marked noisy'}" for who, lat in (("base", lb), ("new", ln))
             if lat.get("noisy")]
    d.noisy = "; ".join(noisy)
    if not (isinstance(b, (int, float)) and isinstance(n, (int, float)) and b > 0):
        return
    if lb.get("scenario") and ln.get("scenario") and lb["scenario"] != ln["scenario"]:
        d.latency = "n/a"
        d.noisy = (d.noisy + "; " if d.noisy else "") + f"scenarios differ ({lb['scenario']} vs {ln['scenario']})"
        return
    ch = latency_change(lb, ln, floor)  # a pair with a noisy run is "too noisy": it cannot fail a limit
    d.latency, d.latency_pct, d.noise_pct = ch.verdict, ch.pct, ch.band_pct


def _key(e: dict, is_base: bool) -> str:
    """``engine_key``; the baseline by its engine (``torch-cpu``), whether the report named it
    ``torch-cpu`` (older) or ``torch-cpu-unfolded`` (one vocabulary): the two still match."""
    if not is_base:
        return engine_key(e)
    from edgerep.engines.base import UNFOLDED_SUFFIX

    name = str(e.get("name"))
    return engine_key({**e, "name": name[:-len(UNFOLDED_SUFFIX)] if name.endswith(UNFOLDED_SUFFIX) else name})


def _engines(base: dict, new: dict, floor: float) -> list[EngineDiff]:
    b = {(_key(e, isb), isb): (lab, e) for lab, e, isb in engine_entries(base)}
    n = {(_key(e, isb), isb): (lab, e) for lab, e, isb in engine_entries(new)}
    out = []
    for k in list(b) + [k for k in n if k not in b]:
        key, is_base = k
        lab = (n.get(k) or b.get(k))[0]
        eb, en = (b.get(k) or (None, {}))[1], (n.get(k) or (None, {}))[1]
        d = EngineDiff(key=key + (" unfolded" if is_base else ""), label=lab,
                       presence="both" if k in b and k in n else ("added" if k in n else "removed"))
        ab, an = eb.get("accuracy") or {}, en.get("accuracy") or {}
        d.top1_base, d.top1_new = top1_of(ab), top1_of(an)
        d.samples_base, d.samples_new = ab.get("samples"), an.get("samples")
        for side, acc in (("base", ab), ("new", an)):
            if acc.get("metric") == "map":
                setattr(d, f"map_{side}", acc.get("value"))
                setattr(d, f"map50_{side}", acc.get("map50"))
                setattr(d, f"instances_{side}", acc.get("instances"))
        d.drop_base, d.drop_new = drop_of(eb), drop_of(en)
        _latency(d, eb.get("latency") or {}, en.get("latency") or {}, floor)
        out.append(d)
    return out


def _layers(base: dict, new: dict) -> list[dict]:
    lb = {l.get("name"): l for l in (base.get("check") or {}).get("layers") or []}
    ln = {l.get("name"): l for l in (new.get("check") or {}).get("layers") or []}
    out = []
    for name in list(lb) + [x for x in ln if x not in lb]:
        a, b = lb.get(name) or {}, ln.get(name) or {}
        pa, pb = a.get("verdict"), b.get("verdict")
        fa, fb = a.get("verdict_with_fixes"), b.get("verdict_with_fixes")
        if (pa, fa) != (pb, fb):
            out.append({"name": name, "plain": [pa, pb], "fixed": [fa, fb],
                        "why": "; ".join(b.get("reasons") or a.get("reasons") or [])})
    return out


def _float_layers(base: dict, new: dict) -> list[dict]:
    def nodes(r):
        return {str(e.get("node")) + f" ({e.get('target')})": e for e in
                (r.get("quantization") or {}).get("excluded_nodes") or []}

    def label(k: str, e: dict) -> str:  # the layer as the user knows it (provenance), then the ONNX node
        return f"{e['layer']}: {k}" if e.get("layer") else k

    nb, nn = nodes(base), nodes(new)
    out = [{"node": label(k, nn[k]), "change": "now kept in float", "why": nn[k].get("why", "")}
           for k in nn if k not in nb]
    out += [{"node": label(k, nb[k]), "change": "back in INT8", "why": nb[k].get("why", "")} for k in nb if k not in nn]
    return out


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and all(not isinstance(x, (dict, list)) for x in d):
        return {prefix: ", ".join(str(x) for x in d)}
    if isinstance(d, list):
        return {prefix: json.dumps(d, sort_keys=True, default=str)}
    return {prefix: d}


def _facts(side: Side) -> dict[str, Any]:
    """The settings, versions and inputs worth comparing, flattened to dotted keys."""
    r, m = side.report, side.manifest
    q = r.get("quantization") or {}
    host = r.get("host") or {}
    cpu = host.get("cpu_features") or {}
    facts = {
        "settings": {k: v for k, v in (m.get("settings") or {}).items() if k not in IGNORED_SETTINGS},
        "versions": m.get("versions") or {},
        "inputs": {k: v for k, v in (m.get("inputs") or {}).items()
                   if k not in ("checkpoint", "checkpoint_resolved", "checkpoint_from_bundle")},  # where, not what
        "model": {"sha256": (r.get("model") or {}).get("sha256"), "arch": (r.get("model") or {}).get("arch")},
        "target": (r.get("target") or {}).get("name"),
        "quantization": {"cpu policy": (q.get("cpu_policy") or {}).get("name"),
                         "calibration method": (q.get("calibration") or {}).get("method"),
                         "calibration key": (q.get("calibration") or {}).get("key"),
                         "max drop": q.get("max_drop"),
                         "policies accepted": ", ".join(_policy(c) for c in q.get("candidates") or []
                                                        if c.get("accepted")) or None},
        "host": {"cpu": cpu.get("model_name"), "INT8 dot product": cpu.get("int8_dot"),
                 "cores": host.get("cpu_count")},
        "preprocessing": {k: v for k, v in (r.get("preprocessing") or {}).items()},
        "splits": {k: {"count": v.get("count"), "fingerprint": v.get("fingerprint")}
                   for k, v in split_entries(r)},
    }
    if "max_drop" in facts["settings"]:  # said once
        facts["quantization"].pop("max drop")
    return {k: v for k, v in _flat(facts).items() if v not in (None, "", {})}


def _policy(c: dict) -> str:
    p = c.get("policy")
    return str(p.get("name") if isinstance(p, dict) else p)


def _settings(base: Side, new: Side) -> list[dict]:
    fb, fn = _facts(base), _facts(new)
    return [{"key": k, "base": fb.get(k), "new": fn.get(k)} for k in list(fb) + [k for k in fn if k not in fb]
            if fb.get(k) != fn.get(k)]


def _files(base: Side, new: Side) -> list[dict]:
    if not base.hashes or not new.hashes:  # one side kept no hashes (an older bundle): nothing to compare
        return []
    out = []
    for name in list(base.hashes) + [k for k in new.hashes if k not in base.hashes]:
        a, b = base.hashes.get(name), new.hashes.get(name)
        if a != b and not name.endswith((".html", ".md", ".png")):  # pages carry timings: not a change
            out.append({"name": name, "base": a[:12] if a else None, "new": b[:12] if b else None})
    return out


def diff_reports(base: Side, new: Side, *, noise_floor_pct: float = NOISE_FLOOR_PCT) -> ReportDiff:
    """Compare two reports (with their manifests and file hashes)."""
    rb, rn = base.report, new.report
    d = ReportDiff(base_label=base.label or "base", new_label=new.label or "new",
                   model=str((rn.get("model") or {}).get("name") or (rb.get("model") or {}).get("name") or "?"),
                   engines=_engines(rb, rn, noise_floor_pct), layers=_layers(rb, rn),
                   float_layers=_float_layers(rb, rn), files=_files(base, new), settings=_settings(base, new),
                   gate_base=(rb.get("gate") or {}).get("passed"), gate_new=(rn.get("gate") or {}).get("passed"),
                   noise_floor_pct=noise_floor_pct)
    if (rb.get("model") or {}).get("name") != (rn.get("model") or {}).get("name"):
        d.notes.append("the two reports are of different models")
    ns = {e.samples_base for e in d.engines} | {e.samples_new for e in d.engines}
    ns.discard(None)
    if len(ns) > 1:
        d.notes.append(f"the test sets differ in size ({', '.join(str(n) for n in sorted(ns))} images): "
                       "accuracy changes mix the model and the data")
    for side, who in ((base, "base"), (new, "new")):
        if not side.hashes:
            d.notes.append(f"the {who} report has no file hashes beside it (no manifest.json with sha256, no bundle "
                           "files): files not compared")
    bands = [e.noise_pct for e in d.engines if e.noise_pct is not None]
    if bands and max(bands) > NOISY_BAND_PCT:
        worst = max(d.engines, key=lambda e: e.noise_pct or 0.0)
        d.notes.append(f"latency runs were noisy (noise band up to ±{max(bands):.0f}%, {worst.key}): smaller "
                       "changes cannot be seen; rerun on a quiet machine or with a longer --bench-seconds")
    small = min(ns) if ns else None
    if small and small < fmt.SMALL_SAMPLE:
        d.notes.append(fmt.small_sample_note(small, "accuracy"))
    return d


def apply_thresholds(d: ReportDiff, *, max_accuracy_regression: float | None = None,
                     max_latency_regression_pct: float | None = None) -> ReportDiff:
    """Gate-like checks on every engine in both reports; fills ``d.checks`` and returns ``d``.

    A latency regression fails only when it is over the limit *and* beyond the noise band.
    """
    for e in d.engines:
        if e.presence != "both":
            continue
        if max_accuracy_regression is not None and e.top1_delta is not None:
            loss = -e.top1_delta
            d.checks.append(DiffCheck(
                "max_accuracy_regression", e.key, loss, max_accuracy_regression, loss <= max_accuracy_regression,
                f"{e.key}: top-1 {fmt.pct(e.top1_base)} → {fmt.pct(e.top1_new)} "
                f"({fmt.points(e.top1_delta)} points, limit -{max_accuracy_regression:g})"))
        if max_accuracy_regression is not None and e.map_delta is not None:
            loss = -e.map_delta
            d.checks.append(DiffCheck(
                "max_accuracy_regression", e.key, loss, max_accuracy_regression, loss <= max_accuracy_regression,
                f"{e.key}: mAP@[.5:.95] {fmt.points(e.map_base, False)} → {fmt.points(e.map_new, False)} "
                f"({fmt.points(e.map_delta)} points on {e.samples_new} images, {e.instances_new} instances; "
                f"limit -{max_accuracy_regression:g})"))
        if max_latency_regression_pct is not None and e.latency_pct is not None:
            over = e.latency_pct > max_latency_regression_pct
            ok = not (over and e.latency == "slower")
            why = "" if not over else (" and beyond noise" if not ok else
                                       f" but too noisy to judge ({e.noisy or 'noise band too wide'})"
                                       if e.latency == "too noisy" else f" but {e.latency}")
            d.checks.append(DiffCheck(
                "max_latency_regression_pct", e.key, e.latency_pct, max_latency_regression_pct, ok,
                f"{e.key}: p50 {fmt.ms(e.p50_base)} → {fmt.ms(e.p50_new)} ms ({e.latency_pct:+.1f}%, limit "
                f"+{max_latency_regression_pct:g}%, noise band ±{e.noise_pct:.0f}%){why}",
                unjudged=e.latency == "too noisy"))
    return d
