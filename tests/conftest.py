"""Shared test settings: deterministic seeds, few threads (CI has 2 cores), hypothesis profile."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# One intra-op thread: the test models are tiny (threads only add sync cost) and results stay
# deterministic; benchmarks, not tests, measure multi-threaded speed.
torch.set_num_threads(1)

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
