"""The unfolded reference's outputs are computed once per checkpoint and input batch (issue 23)."""
from __future__ import annotations

import numpy as np

from edgerep.reference_cache import CachedReference


def test_second_run_reads_the_cache_and_keys_on_input_and_checkpoint(tmp_path):
    calls = []

    def model(x):
        calls.append(len(x))
        return x.reshape(len(x), -1).sum(1, keepdims=True) * 2.0

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3, 2, 2)).astype(np.float32), rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    first = CachedReference(model, "sha-1", tmp_path)
    out_a = first(a)
    assert (first.hits, first.misses) == (0, 1)
    again = CachedReference(model, "sha-1", tmp_path)  # a second deploy
    np.testing.assert_array_equal(again(a), out_a)
    assert (again.hits, again.misses) == (1, 0) and calls == [4]
    np.testing.assert_array_equal(again(b), model(b))  # other inputs: computed, not someone else's outputs
    other = CachedReference(model, "sha-2", tmp_path)  # another checkpoint never reads these
    other(a)
    assert (other.hits, other.misses) == (0, 1)
    (tmp_path / next(p.name for p in tmp_path.iterdir())).write_bytes(b"torn")  # a damaged file is recomputed
    assert all(np.isfinite(CachedReference(model, "sha-1", tmp_path)(x)).all() for x in (a, b))
