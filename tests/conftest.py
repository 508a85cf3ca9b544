"""Shared test settings: deterministic seeds, few threads (CI has 2 cores), hypothesis profile."""
from __future__ import annotations

import os

import edgerep  # noqa: F401  (first: its thread settings must be in place before torch loads OpenMP)
import pytest
import torch
from hypothesis import HealthCheck, settings


settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, and one intra-op thread for every test (set again each time, since a deploy with
    --threads changes it): the test models are tiny, so threads only add sync cost; benchmarks,
    not tests, measure multi-threaded speed."""
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory):
    """One deploy of the shipped digits demo (check included), shared by the report, diff and browser tests."""
    from pathlib import Path

    from edgerep.cli import main

    demo = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
    out = tmp_path_factory.mktemp("demo") / "bundle"
    rc = main(["deploy", str(demo), "--out", str(out), "--bench-seconds", "0.2", "--calib-samples", "128",
               "--max-drop", "0.5", "--cache-dir", str(out.parent / "cache")])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def demo_detector_bundle(tmp_path_factory):
    """One deploy of the shipped demo detector on 100 scenes test images (``tests.detect_helpers``), shared, read
    only, by the demo-detector and fleet tests (each module deployed it alone: ~25 s apiece)."""
    from tests.detect_helpers import deploy_demo_detector

    return deploy_demo_detector(tmp_path_factory.mktemp("demo-det"), 100)
