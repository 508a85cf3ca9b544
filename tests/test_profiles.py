"""Target profiles: the shipped TOML files load, and every mistake names the file and field."""
from __future__ import annotations

from pathlib import Path

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
