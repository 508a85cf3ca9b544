"""Calibration recipes: a small TOML naming the calibration data, split, sample count and method, and
optionally a ``[preprocessing]`` table (mean, std, scale, resize, channel_order) with the
same meaning as the flags of the same names.

Recipes live in the repository's ``calibration/`` folder (found by name) or anywhere (by path).
Flags given on the command line win over the recipe.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgerep.errors import EdgerepError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METHODS = ("auto", "minmax", "percentile", "entropy", "mse")
RECIPE_DIR = Path(__file__).resolve().parents[1] / "calibration"


@dataclass(frozen=True)
class CalibrationRecipe:
    data: str
    split: str = "calib"
    samples: int = 256
    method: str = "auto"
    source: str = ""
    preprocessing: dict = field(default_factory=dict)


def load_recipe(name_or_path: str | Path) -> CalibrationRecipe:
    """A recipe by path, or by name from ``calibration/<name>.toml``."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = RECIPE_DIR / f"{name_or_path}.toml"
    try:
        doc = tomllib.loads(p.read_text())
        table = doc.get("calibration")
    except FileNotFoundError:
        known = ", ".join(sorted(q.stem for q in RECIPE_DIR.glob("*.toml"))) if RECIPE_DIR.is_dir() else "none"
        raise EdgerepError(f"{p}: calibration recipe not found", hint=f"recipes here: {known}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgerepError(f"{p}: not valid TOML ({e})") from None
    if not isinstance(table, dict):
        raise EdgerepError(f"{p}: no [calibration] table")
    unknown = sorted(set(table) - {"data", "split", "samples", "method"})
    if unknown:
        raise EdgerepError(f"{p}: unknown calibration setting(s) {', '.join(unknown)}")
    if not isinstance(table.get("data"), str):
        raise EdgerepError(f"{p}: calibration.data must name a data set (string)")
    samples = table.get("samples", 256)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples <= 0:
        raise EdgerepError(f"{p}: calibration.samples must be a positive integer, got {samples!r}")
    method = table.get("method", "auto")
    if method not in METHODS:
        raise EdgerepError(f"{p}: calibration.method {method!r} is not one of {', '.join(METHODS)}")
    return CalibrationRecipe(data=table["data"], split=str(table.get("split", "calib")), samples=samples,
                             method=method, source=str(p), preprocessing=_preprocessing(doc.get("preprocessing"), p))


PREPROCESSING_KEYS = ("mean", "std", "scale", "resize", "channel_order")


def _preprocessing(table, p: Path) -> dict:
    """The recipe's ``[preprocessing]`` table, checked (mean/std: a number or a list of numbers)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise EdgerepError(f"{p}: [preprocessing] must be a table")
    unknown = sorted(set(table) - set(PREPROCESSING_KEYS))
    if unknown:
        raise EdgerepError(f"{p}: unknown preprocessing setting(s) {', '.join(unknown)}",
                           hint=f"known: {', '.join(PREPROCESSING_KEYS)}")
    out = dict(table)
    for k in ("mean", "std"):
        if k in out:
            v = out[k] if isinstance(out[k], list) else [out[k]]
            if not v or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v):
                raise EdgerepError(f"{p}: preprocessing.{k} must be a number or a list of numbers")
            out[k] = [float(a) for a in v]
    if "scale" in out and (not isinstance(out["scale"], (int, float)) or out["scale"] <= 0):
        raise EdgerepError(f"{p}: preprocessing.scale must be a positive number")
    return out
