"""``package.module:function`` specs (``--metric``, ``--postprocess``): the callable, or an error naming the flag."""
import pytest

from edgerep.bench.accuracy import load_user_metric
from edgerep.errors import EdgerepError
from edgerep.plugins import load_function
from edgerep.tasks.detect import load_postprocess


def test_a_function_is_returned():
    assert load_function("os.path:join", "--metric")("a", "b") == "a/b"


@pytest.mark.parametrize("spec, says", [
    ("os.path.join", "is not of the form package.module:function"),
    ("edgerep_no_such_module:f", "cannot be imported"),
    ("os.path:no_such_function", "cannot be imported"),
    ("os:sep", "is not callable"),
])
def test_bad_specs_name_the_flag_and_the_fault(spec, says):
    with pytest.raises(EdgerepError) as e:
        load_function(spec, "--flag")
    assert str(e.value).startswith(f"--flag {spec!r}") and says in str(e.value)


def test_metric_and_postprocess_loaders_name_their_own_flag():
    with pytest.raises(EdgerepError, match="^--metric 'x'"):
        load_user_metric("x")
    with pytest.raises(EdgerepError, match="^--postprocess 'x'"):
        load_postprocess("x")
    assert load_postprocess("os.path:join") is load_user_metric("os.path:join")
