"""Calibration recipes: a small TOML naming the calibration data, split, sample count and method.

Recipes live in the repository's ``calibration/`` folder (found by name) or anywhere (by path).
Flags given on the command line win over the recipe.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
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


def load_recipe(name_or_path: str | Path) -> CalibrationRecipe:
    """A recipe by path, or by name from ``calibration/<name>.toml``."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = RECIPE_DIR / f"{name_or_path}.toml"
    try:
        table = tomllib.loads(p.read_text()).get("calibration")
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
                             method=method, source=str(p))
