"""QuantizeOptions: a value that cannot work is refused when the options are made, naming its field; the
quantize command reports it as the flag the user typed, before any model is loaded."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgerep.cli import main
from edgerep.quant.cpu_features import parse_cpuinfo
from edgerep.quant.options import (CalibrationOptions, JudgeOptions, QuantizeOptionError, QuantizeOptions,
                                   TargetOptions)

DEMO = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
AVX2 = "processor : 0\nmodel name : Some AVX2 CPU\nflags : fpu sse avx avx2 fma\n"
VNNI = "processor : 0\nmodel name : AMD EPYC\nflags : fpu avx avx2 avx512f avx512_vnni\n"

BAD = [
    (lambda: TargetOptions(targets=("cpu", "gpu")), "target.targets", "unknown gpu (expected cpu, tensorrt)"),
    (lambda: TargetOptions(targets=()), "target.targets", "none named"),
    (lambda: TargetOptions(targets="cpu"), "target.targets", "expected a tuple of names, got the string 'cpu'"),
    (lambda: TargetOptions(cpu_policies="u8s8"), "target.cpu_policies", "expected a tuple of names"),
    (lambda: CalibrationOptions(method="best"), "calibration.method", "'best': expected auto or one of"),
    (lambda: CalibrationOptions(samples=0), "calibration.samples", "expected a positive integer, got 0"),
    (lambda: CalibrationOptions(samples=2.5), "calibration.samples", "expected a positive integer, got 2.5"),
    (lambda: JudgeOptions(max_drop=-0.1), "judge.max_drop", "expected a finite number >= 0, got -0.1"),
    (lambda: JudgeOptions(max_drop=math.nan), "judge.max_drop", "got nan"),
    (lambda: JudgeOptions(max_drop=math.inf), "judge.max_drop", "got inf"),
    (lambda: JudgeOptions(samples=-5), "judge.samples", "expected a positive integer, got -5"),
    (lambda: QuantizeOptions(batch_size=0), "batch_size", "expected a positive integer, got 0"),
    (lambda: QuantizeOptions(batch_size=None), "batch_size", "got None"),
]


@pytest.mark.parametrize("make,field,words", BAD, ids=[f"{f}:{w[:20]}" for _, f, w in BAD])
def test_an_option_that_cannot_work_is_refused_naming_its_field(make, field, words):
    with pytest.raises(QuantizeOptionError) as e:
        make()
    assert e.value.field == field and str(e.value).startswith(f"{field}: ") and words in str(e.value)


def test_workable_options_are_kept_as_given():
    t = TargetOptions(targets=["tensorrt"], cpu_policies=["u8s8"])
    assert t.targets == ("tensorrt",) and t.cpu_policies == ("u8s8",)  # lists become tuples (frozen, hashable)
    assert JudgeOptions(max_drop=None).budget == 0.5 and not JudgeOptions(max_drop=None).keeps_layers_in_float
    assert JudgeOptions(max_drop=0).budget == 0.0 and JudgeOptions(max_drop=0).keeps_layers_in_float
    assert CalibrationOptions(samples=None).samples is None and JudgeOptions(samples=None, threads=0).threads == 0
    default = QuantizeOptions()
    assert default.target.targets == ("cpu", "tensorrt") and default.calibration.method == "auto"
    assert default.judge.max_drop == 0.5 and default.batch_size == 64


def test_a_pinned_cpu_policy_must_be_one_this_cpu_offers():
    avx2, vnni = parse_cpuinfo(AVX2, "x86_64"), parse_cpuinfo(VNNI, "x86_64")
    TargetOptions(cpu_policies=("u8s8-x64prec",)).check_cpu(avx2)
    TargetOptions().check_cpu(vnni)  # None: every policy the CPU offers
    for pinned in [("u8s8-x64prec",), ()]:  # AVX2-only policy on a VNNI CPU; an empty pin
        with pytest.raises(QuantizeOptionError, match=r"cpu policy .*this CPU \(avx512_vnni\) offers u8s8, s8s8, "
                                                      r"u8s8-w7") as e:
            TargetOptions(cpu_policies=pinned).check_cpu(vnni)
        assert e.value.field == "target.cpu_policies"


@pytest.mark.parametrize("flags,flag", [
    (["--targets", "cpu,gpu"], "--targets"),
    (["--targets", ","], "--targets"),
    (["--cpu-policy", "fp4"], "--cpu-policy"),
    (["--max-drop", "nan"], "--max-drop"),
    (["--eval-samples", "0"], "--eval-samples"),
])
def test_quantize_command_names_the_flag_before_any_work(tmp_path, capsys, flags, flag):
    out = tmp_path / "q"
    rc = main(["quantize", str(DEMO), "--data", "digits", "-o", str(out), *flags])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.strip().startswith(f"edgerep quantize: error: {flag}: "), captured.err
    assert "folded" not in captured.out and not out.exists()  # refused before the checkpoint was loaded
