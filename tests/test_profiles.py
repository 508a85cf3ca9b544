"""Target profiles: the shipped TOML files load, and every mistake names the file and field."""
from __future__ import annotations


import pytest

from edgerep.engines.profiles import (EngineSpec, ProfileError, TargetProfile, list_profiles, load_profile,
                                      parse_profile)
from edgerep.errors import EdgerepError

SHIPPED = {"jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "x86-cpu", "dgpu"}


def test_shipped_profiles_all_load_and_are_listed():
    names = {p.name for p in list_profiles()}
    assert SHIPPED <= names
    for name in SHIPPED:
        p = load_profile(name)
        assert isinstance(p, TargetProfile) and p.name == name and p.source.name == f"{name}.toml"
        assert p.engines and all(isinstance(e, EngineSpec) for e in p.engines)
        assert p.batch_sizes == sorted(p.batch_sizes) and p.batch_sizes[0] >= 1
        assert p.description


def test_shipped_profiles_match_their_hardware():
    agx, nano, x86, dgpu = (load_profile(n) for n in ("jetson-agx-orin", "jetson-orin-nano", "x86-cpu", "dgpu"))
    assert agx.dla_core == 0 and any(e.device == "dla:0" for e in agx.engines)
    assert nano.dla_core is None and not any(e.device_kind == "dla" for e in nano.engines)
    assert {e.backend for e in x86.engines} <= {"onnxruntime", "torch"} and x86.fallback == "none"
    assert any(e.backend == "tensorrt" and e.precision == "int8" for e in dgpu.engines)
    # int8 engines read the QDQ file of their backend's policy
    assert all(e.policy == "tensorrt" for e in dgpu.engines if e.backend == "tensorrt" and e.precision == "int8")
    assert all(e.policy is None for e in dgpu.engines if e.precision != "int8")
    assert dgpu.quant_targets == ("cpu", "tensorrt") and x86.quant_targets == ("cpu",)
    assert load_profile("x86-cpu").to_dict()["engines"][1] == {"backend": "onnxruntime", "precision": "int8",
                                                             "device": "cpu", "policy": "cpu"}


def test_load_by_path_and_env_folder(tmp_path, monkeypatch):
    f = tmp_path / "mine.toml"
    f.write_text('description = "x"\nbatch_sizes = [4, 1, 4]\n[[engines]]\nbackend = "torch"\n')
    p = load_profile(f)
    assert p.name == "mine" and p.batch_sizes == [1, 4] and p.engines == [EngineSpec("torch", "fp32", "cpu")]
    monkeypatch.setenv("EDGEREP_PROFILE_PATH", str(tmp_path))
    assert load_profile("mine").source == f
    assert "mine" in {q.name for q in list_profiles()}


def test_unknown_profile_lists_known_names():
    with pytest.raises(ProfileError) as e:
        load_profile("jetson-orin-nanoo")
    assert isinstance(e.value, EdgerepError)
    assert "jetson-orin-nanoo" in str(e.value) and "jetson-orin-nano" in e.value.one_line()
    with pytest.raises(ProfileError, match="not found"):
        load_profile("/nonexistent/dir/x.toml")
    with pytest.raises(ProfileError, match="not found"):
        load_profile("nothing-like-it.toml")
    assert load_profile("dgpu.toml").name == "dgpu"  # a shipped profile by its file name


@pytest.mark.parametrize("toml, field", [
    ('[[engines]]\nbackend = "tensorflow"\n', "engines[0].backend"),
    ('[[engines]]\nbackend = "torch"\nprecision = "int4"\n', "engines[0].precision"),
    ('[[engines]]\nbackend = "torch"\nprecision = "int8"\n', "engines[0].precision"),
    ('[[engines]]\nbackend = "onnxruntime"\nprecision = "fp16"\n', "engines[0].precision"),
    ('[[engines]]\nbackend = "tensorrt"\ndevice = "cpu"\n', "engines[0].device"),
    ('[[engines]]\nbackend = "tensorrt"\nprecision = "fp16"\ndevice = "dla:0"\n', "engines[0].device"),
    ('dla_core = 1\n[[engines]]\nbackend = "tensorrt"\nprecision = "fp16"\ndevice = "dla:0"\n', "engines[0].device"),
    ('dla_core = 0\n[[engines]]\nbackend = "tensorrt"\nprecision = "fp32"\ndevice = "dla:0"\n',
     "engines[0].precision"),
    ('[[engines]]\nbackend = "torch"\ndevice = "gpu"\n', "engines[0].device"),
    ('[[engines]]\nbackend = "torch"\npolicy = "cpu"\n', "engines[0].policy"),
    ('[[engines]]\nbackend = "torch"\nspeed = 3\n', "engines[0].speed"),
    ('batch_sizes = []\n[[engines]]\nbackend = "torch"\n', "batch_sizes"),
    ('batch_sizes = [0]\n[[engines]]\nbackend = "torch"\n', "batch_sizes"),
    ('opt_level = 6\n[[engines]]\nbackend = "torch"\n', "opt_level"),
    ('workspace_mb = "1G"\n[[engines]]\nbackend = "torch"\n', "workspace_mb"),
    ('fallback = "cloud"\n[[engines]]\nbackend = "torch"\n', "fallback"),
    ('engine = []\n', "engine"),
    ('name = "x"\n', "engines"),
    ('[[engines]]\nbackend = "torch"\n[[engines]]\nbackend = "torch"\n', "engines"),
])
def test_bad_fields_name_the_file_and_field(tmp_path, toml, field):
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ProfileError) as e:
        load_profile(f)
    line = e.value.one_line()
    assert str(f) in line and f"'{field}'" in line and "\n" not in line


def test_invalid_toml_names_the_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("name = \n")
    with pytest.raises(ProfileError, match="broken.toml: not valid TOML"):
        load_profile(f)


def test_spec_key_and_cuda_alias():
    p = parse_profile({"name": "t", "engines": [{"backend": "tensorrt", "precision": "int8", "device": "cuda"}]})
    assert p.engines[0].device == "cuda:0" and p.engines[0].key == "tensorrt-int8-cuda0"
    assert p.engines[0].policy == "tensorrt"


# ------------------------------------------------------------------ `edgerep build --target` (profiles -> engines)
@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """A repvgg_digits checkpoint, its folded FP32 ONNX and a QDQ INT8 copy (onnxruntime's static quantizer)."""
    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgerep.checkpoint import CheckpointMeta, save_checkpoint
    from edgerep.fold.model import fold_model
    from edgerep.models import create_model
    from edgerep.quant.export import export_onnx

    d = tmp_path_factory.mktemp("build")
    torch.manual_seed(0)
    net = create_model("repvgg_digits").eval()
    save_checkpoint(d / "digits.pt", net, CheckpointMeta(arch="repvgg_digits", input_shape=(1, 16, 16),
                                                                    mean=(0.5,), std=(0.5,)))
    export_onnx(fold_model(net), d / "digits.fp32.onnx", (1, 1, 16, 16))

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"input": rng.standard_normal((1, 1, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(d / "digits.fp32.onnx"), str(d / "digits.int8.cpu.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return d


def test_build_command_x86_cpu(digits_files, tmp_path, capsys):
    import json

    from edgerep.cli import main

    d = digits_files
    out = tmp_path / "out"
    rc = main(["build", str(d / "digits.fp32.onnx"), "--target", "x86-cpu", "--checkpoint", str(d / "digits.pt"),
               "--out", str(out), "--json"])  # the INT8 sibling digits.int8.cpu.onnx is found by name
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert json.loads((out / "build.json").read_text()) == res
    rows = {f"{r['spec']['backend']}-{r['spec']['precision']}": r for r in res["engines"]}
    assert set(rows) == {"onnxruntime-fp32", "onnxruntime-int8", "torch-fp32"}
    assert all(r["status"] == "built" and r["check"]["ran"] for r in rows.values())
    assert rows["onnxruntime-int8"]["artifact"].endswith("digits.int8.cpu.onnx")
    assert rows["onnxruntime-fp32"]["check"]["max_abs_diff_vs_ort_fp32"] == 0.0
    assert rows["torch-fp32"]["check"]["max_abs_diff_vs_ort_fp32"] < 1e-4  # folded checkpoint == its ONNX
    assert 0 < rows["onnxruntime-int8"]["check"]["max_abs_diff_vs_ort_fp32"] < 1.0


def test_build_command_table_and_errors(digits_files, tmp_path, capsys, monkeypatch):
    from edgerep.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    d = digits_files
    assert main(["build", str(d / "digits.fp32.onnx"), "--target", "jetson-orin-nano", "--out", str(tmp_path),
                 "--int8", f"tensorrt={d / 'digits.int8.cpu.onnx'}"]) == 0
    out = capsys.readouterr().out
    assert "edgerep build: jetson-orin-nano" in out and "why:" in out and "build.json" in out
    assert main(["build", "--list"]) == 0 and "jetson-agx-orin" in capsys.readouterr().out
    assert main(["build", str(d / "digits.fp32.onnx"), "--target", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown target profile 'nope'" in err
    assert main(["build", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: ONNX file not found" in capsys.readouterr().err
    assert main(["build", str(d / "digits.fp32.onnx"), "--int8", str(tmp_path / "no.onnx")]) == 2
    assert "--int8 file not found" in capsys.readouterr().err
    assert main(["build", str(d / "digits.int8.cpu.onnx")]) == 2
    assert "is a QDQ (INT8) file; MODEL is the FP32 ONNX" in capsys.readouterr().err
