"""CPU ISA detection from /proc/cpuinfo text, and the CPU policy candidates each ISA gets."""
from __future__ import annotations

from edgerep.quant.cpu_features import detect_cpu_features, parse_cpuinfo
from edgerep.quant.policy import TENSORRT, cpu_candidates

AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx avx2 fma\nprocessor\t: 1\n"
VNNI = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512bw avx512_vnni\n"
AVXVNNI = "processor\t: 0\nmodel name\t: Intel Core\nflags\t\t: avx2 avx_vnni\n"
AMX = "processor\t: 0\nmodel name\t: Xeon SPR\nflags\t\t: avx2 avx512f avx512_vnni amx_tile amx_int8\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\nCPU part\t: 0xd0c\n"


def test_parse_x86_isas():
    a = parse_cpuinfo(AVX2, "x86_64")
    assert a.avx2 and not a.avx512_vnni and a.int8_dot == "avx2" and a.u8s8_saturates
    assert a.cores == 2 and a.model_name == "AMD EPYC"
    v = parse_cpuinfo(VNNI, "x86_64")
    assert v.avx512_vnni and v.int8_dot == "avx512_vnni" and not v.u8s8_saturates
    assert parse_cpuinfo(AVXVNNI, "x86_64").int8_dot == "avx_vnni"
    assert parse_cpuinfo(AMX, "x86_64").int8_dot == "amx"


def test_parse_arm_dotprod():
    f = parse_cpuinfo(ARM, "aarch64")
    assert f.arch == "aarch64" and f.neon and f.arm_dotprod and f.int8_dot == "arm_dotprod"
    assert not f.u8s8_saturates and not f.avx2


def test_candidates_follow_the_isa():
    avx2 = [p.name for p in cpu_candidates(parse_cpuinfo(AVX2, "x86_64"))]
    assert avx2[0] == "u8s8-w7"  # 7-bit weights first where int16 pair sums saturate
    assert "u8s8-x64prec" in avx2
    x64 = next(p for p in cpu_candidates(parse_cpuinfo(AVX2, "x86_64")) if p.name == "u8s8-x64prec")
    assert x64.session_config == {"session.x64quantprecision": "1"} and not x64.qdq.reduce_range
    vnni = cpu_candidates(parse_cpuinfo(VNNI, "x86_64"))
    assert not vnni[0].qdq.reduce_range and "saturation" in vnni[0].expectation
    arm = cpu_candidates(parse_cpuinfo(ARM, "aarch64"))
    assert arm[0].qdq.activation == "s8" and not arm[0].qdq.reduce_range


def test_tensorrt_policy_is_symmetric_int8():
    assert TENSORRT.activation == "s8" and TENSORRT.weight == "s8" and TENSORRT.symmetric_activations
    assert TENSORRT.per_channel and not TENSORRT.reduce_range and not TENSORRT.quantize_bias and TENSORRT.qdq_on_add


def test_detect_on_this_machine(tmp_path):
    here = detect_cpu_features()
    assert here.arch and here.int8_dot in ("amx", "avx512_vnni", "avx_vnni", "arm_i8mm", "arm_dotprod", "avx2",
                                           "neon", "none")
    missing = detect_cpu_features(tmp_path / "nope")
    assert missing.int8_dot == "none" and missing.cores == 0
