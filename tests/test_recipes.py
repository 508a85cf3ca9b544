"""Calibration recipes: shipped ones load, bad ones are one-line errors, flags win over recipes."""
from __future__ import annotations

import pytest

from edgerep.errors import EdgerepError
from edgerep.pipeline import DeployOptions, resolve_calibration
from edgerep.recipes import RECIPE_DIR, load_recipe


def test_every_shipped_recipe_loads():
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
    assert "digits" in names
    for n in names:
        assert load_recipe(n).samples > 0


def test_digits_recipe_drives_calibration_and_flags_win():
    class Meta:
        dataset = "digits"

    def plan(**kw):
        p = resolve_calibration(DeployOptions(checkpoint="x.pt", **kw), Meta())
        return p.spec, p.split, p.samples, p.method

    # the recipe's data is the deploy's data set: it only picks the split (the roles share one source)
    assert plan(calib_recipe="digits") == (None, "calib", 179, "auto")
    assert plan(calib_recipe="digits", calib_samples=64, calib_method="entropy") == (None, "calib", 64, "entropy")
    assert plan() == (None, "calib", 256, "auto")
    # other data: the recipe's data becomes the calibration set
    assert plan(calib_recipe="digits", data="x.npz") == ("digits", "calib", 179, "auto")
    assert plan(calib_recipe="digits", calib_data="c.npz")[:2] == ("c.npz", "calib")


def test_recipe_preprocessing_table(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[calibration]\ndata = 'digits'\n[preprocessing]\nmean = 0\nstd = [1.0]\nscale = 0.5\n")
    assert load_recipe(p).preprocessing == {"mean": [0.0], "std": [1.0], "scale": 0.5}
    p.write_text("[calibration]\ndata = 'digits'\n[preprocessing]\nmeen = 0\n")
    with pytest.raises(EdgerepError, match="meen"):
        load_recipe(p)


@pytest.mark.parametrize("body,match", [
    ("[calibration]\nsplit = 'calib'\n", "calibration.data"),
    ("[calibration]\ndata = 'digits'\nsamples = 0\n", "positive integer"),
    ("[calibration]\ndata = 'digits'\nmethod = 'magic'\n", "magic"),
    ("[calibration]\ndata = 'digits'\nsample = 3\n", "unknown"),
    ("[calib\n", "TOML"),
    ("x = 1\n", "no \\[calibration\\]"),
])
def test_bad_recipes(tmp_path, body, match):
    p = tmp_path / "r.toml"
    p.write_text(body)
    with pytest.raises(EdgerepError, match=match):
        load_recipe(p)


def test_missing_recipe_lists_known():
    with pytest.raises(EdgerepError) as e:
        load_recipe("nope")
    assert "digits" in e.value.one_line()
