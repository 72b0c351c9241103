"""Models stage: shapes, figures from docs/paper.md, checkpoint loading (our format and the authors' layout)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skipnet.common import UserError
from skipnet.models import (
    count_macs,
    count_params,
    create_model,
    list_models,
    load_checkpoint,
    save_weights,
)

DESIGN_NAMES = [
    "skipnet_xs",
    "skipnet_s",
    "skipnet_m",
    "skipnet_l",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "resnet18",
    "shufflenet_v2_x0_5",
    "densenet121",
]


def test_registry_has_every_design_name():
    assert list_models() == DESIGN_NAMES


# docs/paper.md: parameters and conv+linear MACs at 224x224, 1000 classes.
@pytest.mark.parametrize(
    "name,params,macs_m",
    [
        ("skipnet_xs", None, 76.6),
        ("skipnet_s", None, 170.7),
        ("skipnet_m", 5_532_352, 236.6),
        ("skipnet_l", None, 389.3),
        ("mobilenet_v3_large", 5_483_032, 216.6),
    ],
)
def test_params_and_macs_match_paper(name, params, macs_m):
    m = create_model(name, 1000)
    if params is not None:
        assert count_params(m) == params
    assert round(count_macs(m, 224) / 1e6, 1) == macs_m


@pytest.mark.parametrize(
    "name,size",
    [(n, s) for n in ("skipnet_xs", "skipnet_m", "skipnet_l", "mobilenet_v3_large") for s in (32, 64, 96)]
    + [("skipnet_xs", 224), ("skipnet_s", 160)],
)
def test_shapes_at_several_sizes(name, size):
    m = create_model(name, 7).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        f = m.forward_features(x)
        out = m(x)
    assert f.shape[0] == 2 and f.shape[2:] == (size // 32, size // 32)
    assert out.shape == (2, 7)
    assert torch.equal(m.forward_head(f), out)


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2_x0_5", "densenet121", "mobilenet_v3_small"])
def test_baselines_features_and_head_compose(name):
    m = create_model(name, 5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m.forward_head(m.forward_features(x)), m.net(x), atol=1e-5)
        assert m.get_submodule(m.feature_layer) is not None


def test_feature_levels_and_pruning():
    # timm's feature API on the project's model: the five levels of feature_info, and pruning to one.
    m = create_model("skipnet_xs", 10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, levels = m.forward_intermediates(x)
        torch.testing.assert_close(final, m.forward_features(x))
        want = [(i["num_chs"], 64 // i["reduction"], 64 // i["reduction"]) for i in m.feature_info]
        assert [tuple(t.shape[1:]) for t in levels] == want
        assert [i["reduction"] for i in m.feature_info] == [2, 8, 16, 16, 32]
        m.prune_intermediate_layers([2], prune_norm=True)
        assert len(m.blocks) == 2 and isinstance(m.conv, nn.Identity)
        torch.testing.assert_close(m.forward_features(x), levels[2])
        torch.testing.assert_close(m(x), levels[2])  # no head left: forward gives the features


def test_width_scales_skip_blocks():
    # The reference hard-codes the skip blocks' 16 input channels; at width 0.5 the base block has 8.
    m = create_model("skipnet_xs", 10)
    assert m.skip1.core_block[0].in_channels == m.base_block.conv[7].out_channels == 8
    assert m.skip1.core_block[6].out_channels == m.blocks[0][-1].conv[7].out_channels
    assert m.skip2.core_block[6].out_channels == m.blocks[1][-1].conv[7].out_channels


def test_unknown_model_is_user_error():
    with pytest.raises(UserError, match="unknown model 'skipnet_xxl'"):
        create_model("skipnet_xxl")


# ---- checkpoints -----------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    a = create_model("skipnet_xs", 10).eval()
    save_weights(a, tmp_path / "w.safetensors", {"model": "skipnet_xs"})
    b = create_model("skipnet_xs", 10, weights=tmp_path / "w.safetensors").eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    assert not list(tmp_path.glob(".*tmp"))


def test_mismatched_checkpoints_are_user_errors(tmp_path):
    save_weights(create_model("skipnet_xs", 10), tmp_path / "xs.safetensors", {"model": "skipnet_xs"})
    with pytest.raises(UserError, match="holds a skipnet_xs model, not skipnet_s"):
        create_model("skipnet_s", 10, weights=tmp_path / "xs.safetensors")
    with pytest.raises(UserError, match="pass num_classes=10"):
        create_model("skipnet_xs", 100, weights=tmp_path / "xs.safetensors")
    torch.save(create_model("resnet18", 10).state_dict(), tmp_path / "r.pth")
    with pytest.raises(UserError, match="does not fit skipnet_xs"):
        create_model("skipnet_xs", 10, weights=tmp_path / "r.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="not a valid safetensors file"):
        create_model("skipnet_xs", 10, weights=tmp_path / "bad.safetensors")
    data = (tmp_path / "r.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        create_model("resnet18", 10, weights=tmp_path / "trunc.pth")
    with pytest.raises(UserError, match="does not exist"):
        create_model("skipnet_xs", 10, weights=tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    state = create_model("skipnet_xs", 10).state_dict()
    torch.save({"state_dict": state, "payload": evil}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="refusing to load"):
        create_model("skipnet_xs", 10, weights=tmp_path / "evil.pth")
    assert not marker.exists()


def test_torchvision_state_dict_loads_into_baseline(tmp_path):
    import torchvision

    tv = torchvision.models.mobilenet_v3_large(num_classes=10).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    m = create_model("mobilenet_v3_large", 10, weights=tmp_path / "tv.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(m(x), tv(x))


# An independent rendering of the authors' reference network (module tree, key names and the
# adaptive pooling they use), written from docs/paper.md, to check that their checkpoint layout loads
# and gives the same outputs as our SkipNet-M.


def _div8(v):
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


class _HSwish(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3) / 6


class _SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, _div8(c // 4)), nn.ReLU(), nn.Linear(_div8(c // 4), c), nn.Hardsigmoid())

    def forward(self, x):
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class _IR(nn.Module):
    def __init__(self, i, h, o, k, s, se, hs):
        super().__init__()
        act = _HSwish if hs else nn.ReLU
        self.res = s == 1 and i == o
        self.conv = nn.Sequential(
            nn.Conv2d(i, h, 1, bias=False),
            nn.BatchNorm2d(h),
            act(),
            nn.Conv2d(h, h, k, s, k // 2, groups=h, bias=False),
            nn.BatchNorm2d(h),
            act(),
            _SE(h) if se else nn.Identity(),
            nn.Conv2d(h, o, 1, bias=False),
            nn.BatchNorm2d(o),
        )

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class _Skip(nn.Module):
    def __init__(self, h, o, k, size):
        super().__init__()
        self.size = size
        self.core_block = nn.Sequential(
            nn.Conv2d(16, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(),
            nn.Conv2d(h, h, k, 1, k // 2, groups=h, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(),
            nn.Conv2d(h, o, 1, bias=False),
            nn.BatchNorm2d(o),
        )

    def forward(self, x):
        return self.core_block(F.adaptive_avg_pool2d(x, self.size))


class _ReferenceSkipblockNetM(nn.Module):
    ROWS = [
        [(3, 4, 24, 0, 0, 2), (3, 3, 24, 0, 0, 1), (5, 3, 40, 1, 0, 2), (5, 3, 40, 1, 0, 1), (5, 6, 40, 1, 1, 1)],
        [(3, 6, 80, 0, 1, 2), (3, 2.5, 80, 0, 1, 1), (3, 2.3, 80, 0, 1, 1), (3, 2.3, 80, 0, 1, 1)],
        [(3, 6, 112, 1, 1, 1), (3, 6, 112, 1, 1, 1)],
        [(5, 6, 160, 1, 1, 2), (5, 6, 160, 1, 1, 1), (5, 6, 160, 1, 1, 1)],
    ]

    def __init__(self, classes=1000):
        super().__init__()
        self.first_layer = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), _HSwish())
        self.base_block = _IR(16, 16, 16, 3, 1, False, True)
        stages, c = [], 16
        for rows in self.ROWS:
            layers = []
            for k, e, o, se, hs, s in rows:
                layers.append(_IR(c, _div8(c * e), o, k, s, se, hs))
                c = o
            stages.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*stages)
        self.skip1 = _Skip(96, 40, 5, 28)
        self.skip2 = _Skip(40, 80, 3, 14)
        self.conv = nn.Sequential(nn.Conv2d(160, 960, 1, bias=False), nn.BatchNorm2d(960), _HSwish())
        self.classifier = nn.Sequential(nn.Linear(960, 1280), _HSwish(), nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = self.base_block(self.first_layer(x))
        x = self.blocks[1](self.blocks[0](x) + self.skip1(x)) + self.skip2(x)
        x = self.conv(self.blocks[3](self.blocks[2](x)))
        return self.classifier(x.mean((2, 3)))


def test_authors_checkpoint_layout_gives_reference_outputs(tmp_path):
    torch.manual_seed(0)
    ref = _ReferenceSkipblockNetM()
    # Non-trivial BN statistics so that a mis-mapped key would show.
    for mod in ref.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
    ref.eval()
    # The authors trained with DataParallel: keys carry "module.".
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, tmp_path / "skipblocknet-m.pth")
    ours = create_model("skipnet_m", weights=tmp_path / "skipblocknet-m.pth").eval()
    assert count_params(ours) == count_params(ref) == 5_532_352
    x = torch.rand(2, 3, 224, 224) * 4 - 2
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_load_checkpoint_from_run_dir(tmp_path):
    import json

    m = create_model("skipnet_xs", 3).eval()
    save_weights(m, tmp_path / "model.safetensors", {"model": "skipnet_xs"})
    pre = {"img_size": 32, "resize": 32, "crop": 32, "grayscale_to_rgb": False, "mean": [0.5] * 3, "std": [0.25] * 3}
    (tmp_path / "config.json").write_text(
        json.dumps(
            {  # what the contract requires of a run's config.json
                "model": "skipnet_xs",
                "num_classes": 3,
                "class_names": ["a", "b", "c"],
                "img_size": 32,
                "mean": pre["mean"],
                "std": pre["std"],
                "preprocess": pre,
                "dataset": "imagefolder",
            }
        )
    )
    loaded, cfg = load_checkpoint(tmp_path)
    assert cfg["num_classes"] == 3 and not loaded.training
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), m(x))
    assert create_model("skipnet_xs", weights=tmp_path).num_classes == 3


def test_models_cli_lists_figures():
    r = subprocess.run(
        [sys.executable, "-m", "skipnet.models", "--models", "skipnet_m,mobilenet_v3_large"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "5,532,352" in r.stdout and "236.6" in r.stdout and "216.6" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "skipnet.models", "--models", "nope"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_mobilenet_v3_batchnorm_momentum_matches_skipnet():
    # torchvision's TF-style 0.01 leaves eval-mode statistics at chance level after a short training.
    for name in ("mobilenet_v3_small", "mobilenet_v3_large", "skipnet_s"):
        bns = [m for m in create_model(name, 10).modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(m.momentum == 0.1 for m in bns), name
