"""Calibration recipes: shipped ones load, bad ones are one-line errors, flags win over recipes."""
from __future__ import annotations

import pytest

from edgerep.errors import EdgerepError
from edgerep.pipeline import DeployOptions, _resolve_calibration
from edgerep.recipes import RECIPE_DIR, load_recipe


def test_every_shipped_recipe_loads():
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
    assert "digits" in names
    for n in names:
        assert load_recipe(n).samples > 0


def test_digits_recipe_drives_calibration_and_flags_win():
    class Meta:
        dataset = "digits"

    opts = DeployOptions(checkpoint="x.pt", calib_recipe="digits")
    assert _resolve_calibration(opts, Meta())[:4] == ("digits", "calib", 179, "auto")
    opts = DeployOptions(checkpoint="x.pt", calib_recipe="digits", calib_samples=64, calib_method="entropy")
    assert _resolve_calibration(opts, Meta())[:4] == ("digits", "calib", 64, "entropy")
    assert _resolve_calibration(DeployOptions(checkpoint="x.pt"), Meta())[:4] == ("digits", "calib", 256, "auto")


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
