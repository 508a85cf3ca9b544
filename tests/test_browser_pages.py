"""The demo bundle's report.html, check.html and a diff page, opened in headless Chromium: no console
error, every image loaded, every link resolves, nothing fetched from the network. Screenshots are kept
in test-artifacts/ (or $EDGEREP_TEST_ARTIFACTS) for people to look at."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from browser import Browser, skip_reason
from edgerep.cli import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    out = Path(os.environ.get("EDGEREP_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _diff_page(bundle: Path, tmp: Path) -> Path:
    """A diff page between the demo bundle and a copy whose INT8 engine lost 2 images and got slower."""
    new = tmp / "new"
    shutil.copytree(bundle, new)
    r = json.loads((new / "report.json").read_text())
    e = next(x for x in r["engines"] if x["precision"] == "int8")
    e["accuracy"]["value"] -= 200.0 / e["accuracy"]["samples"]
    e["accuracy"]["correct"] -= 2
    e["latency"]["p50_ms"] *= 3
    r["check"]["layers"][0]["verdict"] = "bad"
    (new / "report.json").write_text(json.dumps(r))
    m = json.loads((new / "manifest.json").read_text())
    m["settings"]["max_drop"] = 0.1
    (new / "manifest.json").write_text(json.dumps(m))
    page = tmp / "pages" / "diff.html"
    main(["diff", str(bundle), str(new), "--html", str(page), "--markdown", str(tmp / "diff.md")])
    return page


def test_pages_render_in_chromium(demo_bundle, tmp_path, browser, artifacts, capsys):
    pages = {"report": demo_bundle / "report.html", "check": demo_bundle / "check" / "check.html",
             "diff": _diff_page(demo_bundle, tmp_path)}
    seen = {}
    for name, path in pages.items():
        shot = artifacts / f"{name}.png"
        res = browser.check(path, shot)
        assert res.problems == [], f"{name}: {res.problems}"
        assert res.images >= 1 and res.links >= 1, name
        assert shot.stat().st_size > 10_000
        seen[name] = res
    assert "edgerep deploy report" in seen["report"].text and "PASSED" in seen["report"].text
    acc = json.loads((demo_bundle / "report.json").read_text())["baseline"]["accuracy"]
    assert f"{acc['value']:.2f}% ({round(acc['value'] * acc['samples'] / 100)} of {acc['samples']})" \
        in seen["report"].text
    assert "this check uses only" in seen["check"].text
    assert "2 images fewer" in seen["diff"].text
    with capsys.disabled():
        print(f"\nscreenshots: {', '.join(str(artifacts / f'{n}.png') for n in pages)}")


def test_the_browser_check_catches_broken_pages(tmp_path, browser):
    """A page with a missing image, a dead link, a dead anchor and a script error: every one is reported."""
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><img src="missing.png" alt="gone"><a href="nowhere.html">x</a>'
                    '<a href="#nothing">y</a><script>undefinedFunction()</script></body></html>')
    res = browser.check(page)
    assert res.broken_images == ["gone"]
    assert res.broken_links == ["nowhere.html", "#nothing"]
    assert any("undefinedFunction" in m for m in res.console_errors)
