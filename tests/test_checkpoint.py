"""Checkpoints: edgerep format, plain and official-layout state_dicts, .pt2, and one-line errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgerep.blocks.testing import randomize_
from edgerep.checkpoint import (
    MAGIC,
    CheckpointMeta,
    default_meta,
    load_checkpoint,
    save_checkpoint,
)
from edgerep.errors import CheckpointError
from edgerep.fold.model import fold_model
from edgerep.models import create_model
from edgerep.models.repvgg import DIGITS_DEPTHS, DIGITS_WIDTHS, SMALL_STRIDES



X = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(7))


# ---- a RepVGG written the way the official code (DingXiaoH/RepVGG, repvgg.py) names it -----------
def official_conv_bn(cin, cout, k, stride, padding, groups=1):
    result = nn.Sequential()
    result.add_module("conv", nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False))
    result.add_module("bn", nn.BatchNorm2d(cout))
    return result


class OfficialRepVGGBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=1, deploy=False):
        super().__init__()
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()
        if deploy:
            self.rbr_reparam = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)
        else:
            self.rbr_identity = nn.BatchNorm2d(cin) if cout == cin and stride == 1 else None
            self.rbr_dense = official_conv_bn(cin, cout, 3, stride, 1, groups)
            self.rbr_1x1 = official_conv_bn(cin, cout, 1, stride, 0, groups)

    def forward(self, x):
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.se(self.rbr_reparam(x)))
        id_out = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.nonlinearity(self.se(self.rbr_dense(x) + self.rbr_1x1(x) + id_out))

    # the official get_equivalent_kernel_bias, independent of edgerep's kernel algebra
    def _fuse_bn_tensor(self, branch):
        if isinstance(branch, nn.Sequential):
            kernel, bn = branch.conv.weight, branch.bn
        else:
            cin = branch.num_features
            kernel = torch.zeros(cin, cin, 3, 3)
            for i in range(cin):
                kernel[i, i, 1, 1] = 1
            bn = branch
        std = (bn.running_var + bn.eps).sqrt()
        t = (bn.weight / std).reshape(-1, 1, 1, 1)
        return kernel * t, bn.bias - bn.running_mean * bn.weight / std

    @torch.no_grad()
    def switch_to_deploy(self):
        k3, b3 = self._fuse_bn_tensor(self.rbr_dense)
        k1, b1 = self._fuse_bn_tensor(self.rbr_1x1)
        kid, bid = self._fuse_bn_tensor(self.rbr_identity) if self.rbr_identity is not None else (0, 0)
        conv = self.rbr_dense.conv
        self.rbr_reparam = nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1, bias=True)
        self.rbr_reparam.weight.copy_(k3 + F.pad(k1, [1, 1, 1, 1]) + kid)
        self.rbr_reparam.bias.copy_(b3 + b1 + bid)
        for name in ("rbr_dense", "rbr_1x1", "rbr_identity"):
            delattr(self, name)


class OfficialRepVGG(nn.Module):
    def __init__(self, widths, num_blocks, strides, in_channels=1, num_classes=10):
        super().__init__()
        self.in_planes = widths[0]
        self.stage0 = OfficialRepVGGBlock(in_channels, widths[0], strides[0])
        for i in range(4):
            stage = []
            for j in range(num_blocks[i]):
                stage.append(OfficialRepVGGBlock(self.in_planes, widths[i + 1], strides[i + 1] if j == 0 else 1))
                self.in_planes = widths[i + 1]
            setattr(self, f"stage{i + 1}", nn.Sequential(*stage))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[4], num_classes)

    def forward(self, x):
        out = self.stage4(self.stage3(self.stage2(self.stage1(self.stage0(x)))))
        return self.linear(self.gap(out).view(out.size(0), -1))


def _official_digits_net() -> OfficialRepVGG:
    return randomize_(OfficialRepVGG(DIGITS_WIDTHS, DIGITS_DEPTHS, SMALL_STRIDES), seed=5)


# ---- edgerep format -----------------------------------------------------------------------------
def test_edgerep_checkpoint_round_trip_keeps_meta_and_weights(tmp_path):
    model = randomize_(create_model("repvgg_digits"), seed=2)
    meta = CheckpointMeta("repvgg_digits", {"num_classes": 10}, (1, 16, 16), (0.3,), (0.32,),
                          class_names=list("0123456789"), dataset="digits", extra={"note": "x"})
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    raw = torch.load(path, weights_only=True)  # loadable by the safe loader, no pickled classes
    assert raw[MAGIC] == 1
    loaded = load_checkpoint(path)
    assert loaded.meta == CheckpointMeta.from_dict(meta.to_dict())
    assert loaded.meta.class_names == list("0123456789") and loaded.meta.dataset == "digits"
    assert loaded.source_format == "edgerep" and not loaded.model.training
    with torch.no_grad():
        assert torch.equal(loaded.model(X), model(X))


def test_save_refuses_bad_meta_and_leaves_no_file(tmp_path):
    meta = CheckpointMeta("repvgg_digits", input_shape=(1, 16))
    with pytest.raises(CheckpointError, match="input_shape"):
        save_checkpoint(tmp_path / "m.pt", create_model("repvgg_digits"), meta)
    assert list(tmp_path.iterdir()) == []


def test_meta_from_dict_names_the_bad_field():
    with pytest.raises(CheckpointError, match="meta.std"):
        CheckpointMeta.from_dict({"arch": "a", "input_shape": [1, 8, 8], "mean": [0.0], "std": [0.0]})
    with pytest.raises(CheckpointError, match="format_version"):
        CheckpointMeta.from_dict({"arch": "a", "format_version": 99})


# ---- plain and official layouts ---------------------------------------------------------------------
def test_official_repvgg_layout_loads_and_matches_the_module_that_wrote_it(tmp_path):
    official = _official_digits_net()
    assert any(k.endswith("rbr_dense.conv.weight") for k in official.state_dict())
    torch.save(official.state_dict(), tmp_path / "official.pth")
    loaded = load_checkpoint(tmp_path / "official.pth", arch="repvgg_digits")
    assert loaded.source_format == "official:repvgg"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(X), official(X), rtol=0, atol=0)


def test_official_deploy_layout_rbr_reparam_loads_folded(tmp_path):
    official = _official_digits_net()
    with torch.no_grad():
        ref = official(X)
    for m in official.modules():
        if isinstance(m, OfficialRepVGGBlock):
            m.switch_to_deploy()
    assert any("rbr_reparam" in k for k in official.state_dict())
    torch.save({"state_dict": {"module." + k: v for k, v in official.state_dict().items()}}, tmp_path / "d.pth")
    loaded = load_checkpoint(tmp_path / "d.pth", arch="repvgg_digits")
    assert loaded.meta.folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(X), ref, rtol=1e-4, atol=1e-4)


def test_plain_state_dict_with_arch_and_inferred_classes(tmp_path):
    model = randomize_(create_model("repvgg_digits", num_classes=4), seed=1)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    loaded = load_checkpoint(tmp_path / "sd.pt", arch="repvgg_digits")
    assert loaded.meta.arch_kwargs["num_classes"] == 4 and loaded.source_format == "state_dict"
    with torch.no_grad():
        assert torch.equal(loaded.model(X), model(X))


def test_arch_as_module_factory(tmp_path):
    model = randomize_(create_model("acnet_digits"), seed=1)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    loaded = load_checkpoint(tmp_path / "sd.pt", arch="edgerep.models.small:acnet_digits", input_shape=(1, 16, 16))
    with torch.no_grad():
        assert torch.equal(loaded.model(X), model(X))
    with pytest.raises(CheckpointError, match="cannot import"):
        load_checkpoint(tmp_path / "sd.pt", arch="edgerep.nonexistent:f")


def test_folded_edgerep_checkpoint_reads_back(tmp_path):
    model = randomize_(create_model("dbb_digits"), seed=4)
    folded = fold_model(model, generic=False)
    meta = default_meta("dbb_digits")
    meta.folded = True
    save_checkpoint(tmp_path / "f.pt", folded, meta)
    back = load_checkpoint(tmp_path / "f.pt")
    with torch.no_grad():
        assert torch.equal(back.model(X), folded(X))
        torch.testing.assert_close(back.model(X), model(X), rtol=1e-4, atol=1e-4)


def test_torch_export_program(tmp_path):
    model = randomize_(create_model("repvgg_digits"), seed=1)
    ep = torch.export.export(model, (X,))
    torch.export.save(ep, tmp_path / "m.pt2")
    loaded = load_checkpoint(tmp_path / "m.pt2")
    assert loaded.source_format == "torch.export" and loaded.meta.input_shape == (1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(X), model(X))


# ---- bad inputs: one line, naming the file and the likely cause ---------------------------------------
def _one_line_error(fn, *a, **kw) -> str:
    with pytest.raises(CheckpointError) as err:
        fn(*a, **kw)
    line = err.value.one_line()
    assert "\n" not in line
    return line


def test_wrong_arch_names_keys_and_cause(tmp_path):
    torch.save(create_model("repvgg_digits").state_dict(), tmp_path / "sd.pt")
    line = _one_line_error(load_checkpoint, tmp_path / "sd.pt", arch="acnet_digits")
    assert str(tmp_path / "sd.pt") in line and "missing keys" in line and "unexpected keys" in line
    assert "stage0.square_conv.weight" in line and "likely cause" in line


def test_wrong_variant_reports_shape_mismatch(tmp_path):
    torch.save(create_model("repvgg_a0", width_scale=0.125).state_dict(), tmp_path / "a0.pt")
    line = _one_line_error(load_checkpoint, tmp_path / "a0.pt", arch="repvgg_a1", arch_kwargs={"width_scale": 0.125})
    assert "shape mismatches" in line and "wrong variant" in line


def test_wrong_depth_reports_missing_keys(tmp_path):
    torch.save(create_model("repvgg_a0", width_scale=0.125).state_dict(), tmp_path / "a0.pt")
    line = _one_line_error(load_checkpoint, tmp_path / "a0.pt", arch="repvgg_b0", arch_kwargs={"width_scale": 0.125})
    assert "missing keys" in line and "stage1.2" in line


def test_plain_state_dict_without_arch_asks_for_it(tmp_path):
    torch.save(create_model("repvgg_digits").state_dict(), tmp_path / "sd.pt")
    assert "--arch" in _one_line_error(load_checkpoint, tmp_path / "sd.pt")


def test_pickled_module_needs_trust(tmp_path):
    model = randomize_(create_model("repvgg_digits"), seed=1)
    torch.save(model, tmp_path / "whole.pt")
    line = _one_line_error(load_checkpoint, tmp_path / "whole.pt")
    assert "--trust-checkpoint" in line and "run code" in line
    loaded = load_checkpoint(tmp_path / "whole.pt", trust=True, arch="repvgg_digits")
    assert loaded.source_format == "pickled-module"
    with torch.no_grad():
        assert torch.equal(loaded.model(X), model(X))


def test_truncated_and_foreign_files(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", create_model("repvgg_digits"), default_meta("repvgg_digits"))
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "truncated" in _one_line_error(load_checkpoint, tmp_path / "cut.pt")
    (tmp_path / "notes.pt").write_text("these are not weights\n")
    assert "not a PyTorch checkpoint" in _one_line_error(load_checkpoint, tmp_path / "notes.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "dict.pt")
    assert "not a checkpoint" in _one_line_error(load_checkpoint, tmp_path / "dict.pt", arch="repvgg_digits")
    assert "no such checkpoint" in _one_line_error(load_checkpoint, tmp_path / "missing.pt")
    (tmp_path / "bad.pt2").write_bytes(b"nope")
    assert "torch.export" in _one_line_error(load_checkpoint, tmp_path / "bad.pt2")


def test_edgerep_checkpoint_with_contradicting_arch(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", create_model("repvgg_digits"), default_meta("repvgg_digits"))
    assert "drop --arch" in _one_line_error(load_checkpoint, tmp_path / "ok.pt", arch="acnet_digits")


@pytest.mark.parametrize("arch,marker,layout", [
    ("mobileone_digits", "reparam_conv", "mobileone"),  # apple/ml-mobileone deploy blocks
    ("acnet_digits", "fused_conv", "acnet"),  # DingXiaoH/ACNet deploy ACBlock
    ("dbb_digits", "dbb_reparam", "dbb"),  # DingXiaoH/DiverseBranchBlock deploy DBB
])
def test_official_train_and_deploy_layouts_of_other_families(tmp_path, arch, marker, layout):
    model = randomize_(create_model(arch), seed=6)
    torch.save(model.state_dict(), tmp_path / "train.pth")
    train = load_checkpoint(tmp_path / "train.pth", arch=arch)
    assert train.source_format == f"official:{layout}"
    folded = fold_model(model, generic=False)
    # the official deploy form names each block's single conv `marker` where edgerep says `conv`
    deploy_sd = {".".join(marker if p == "conv" else p for p in k.split(".")): v
                 for k, v in folded.state_dict().items()}
    torch.save(deploy_sd, tmp_path / "deploy.pth")
    deploy = load_checkpoint(tmp_path / "deploy.pth", arch=arch)
    assert deploy.meta.folded
    with torch.no_grad():
        assert torch.equal(train.model(X), model(X))
        torch.testing.assert_close(deploy.model(X), model(X), rtol=1e-4, atol=1e-4)
